//! One vocabulary for server states: the admin API's `state`, the metric
//! `ringlb_upstream_server_state{state}` and the log line about the change say the same word
//! (`up`, `down`, `draining`, `maint`) for the same server at the same time.

mod support;

use std::net::TcpListener;
use std::time::Duration;
use support::*;

/// The server's `state` in `GET /api/upstreams/app/servers/{server}`.
fn api_state(rl: &Ringlb, server: &str) -> String {
    let r = rl.admin_get(&format!("/api/upstreams/app/servers/{server}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["state"].as_str().expect("state").to_string()
}

/// The `state` label whose `ringlb_upstream_server_state` series is 1 for `server`; every
/// other state's series must be 0.
fn metric_state(rl: &Ringlb, server: &str) -> String {
    let text = rl.admin_get("/metrics").text();
    let prefix = format!("ringlb_upstream_server_state{{upstream=\"app\",server=\"{server}\",");
    let ones: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|rest| rest.ends_with("} 1"))
        .filter_map(|rest| {
            Some(
                rest.strip_prefix("state=\"")?
                    .split('"')
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(ones.len(), 1, "{server}: {ones:?}\n{text}");
    ones[0].clone()
}

/// The next log line about `server` changing state: its status word after "is ", and its
/// `state=` field.
fn logged_state(rl: &Ringlb, server: &str) -> (String, String) {
    let line = rl
        .proc
        .wait_line(Duration::from_secs(5), |l| {
            l.contains(&format!("server {server} (")) && l.contains("state=")
        })
        .expect("a state line");
    let word = line
        .split(" of upstream app is ")
        .nth(1)
        .and_then(|r| r.split([',', ':', ' ']).next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    let field = line
        .split(" state=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (word, field)
}

fn assert_same_word(rl: &Ringlb, server: &str, word: &str) {
    assert_eq!(api_state(rl, server), word, "admin API");
    assert_eq!(metric_state(rl, server), word, "metric");
    let (message, field) = logged_state(rl, server);
    assert_eq!((message.as_str(), field.as_str()), (word, word), "log line");
}

#[test]
fn a_drained_server_is_draining_in_the_api_the_metrics_and_the_log() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let servers = [
        format!("addr = \"{}\"\nname = \"a\"", a.addr),
        format!("addr = \"{}\"\nname = \"b\"", b.addr),
    ];
    let rl = Ringlb::start(&config(&servers, "", ""));
    assert_eq!(
        (api_state(&rl, "b"), metric_state(&rl, "b")),
        ("up".into(), "up".into())
    );

    for (command, word) in [("drain", "draining"), ("maint", "maint"), ("ready", "up")] {
        let body = format!("{{\"state\":\"{command}\"}}");
        let r = rl.admin_post("/api/upstreams/app/servers/b", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.text().contains(&format!("\"state\":\"{word}\"")),
            "{}",
            r.text()
        );
        assert_same_word(&rl, "b", word);
    }
    assert_eq!(api_state(&rl, "a"), "up");
}

#[test]
fn a_server_marked_down_is_down_in_the_api_the_metrics_and_the_log() {
    // A port nobody listens on: the one request fails and marks the server down (max_fails).
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let servers = [format!("addr = \"{refused}\"\nname = \"gone\"")];
    let rl = Ringlb::start(&config(
        &servers,
        "max_fails = 1\nfail_timeout = \"30s\"\ntries = 1",
        "",
    ));
    assert_eq!(rl.get("/").status, 502);
    assert_same_word(&rl, "gone", "down");
}
