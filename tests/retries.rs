//! Retries (nginx `proxy_next_upstream`) and passive health (`max_fails`/`fail_timeout`).

mod support;

use std::collections::HashMap;
use support::*;

fn statuses(lb: &Ringlb, n: usize, method: &str) -> HashMap<u16, u32> {
    let mut c = Client::connect(lb.addr());
    let mut counts = HashMap::new();
    for _ in 0..n {
        c.send(format!("{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").as_bytes());
        let r = c.response();
        *counts.entry(r.status).or_default() += 1;
    }
    counts
}

#[test]
fn a_503_is_retried_on_another_server_when_configured() {
    let sick = Backend::start("sick", &["--status", "503"]);
    let well = Backend::start("well", &[]);
    let servers = [server(sick.addr), server(well.addr)];
    let lb = Ringlb::start(&config(
        &servers,
        "next_upstream = [\"error\", \"timeout\", \"http_503\"]\nmax_fails = 0",
        "",
    ));
    assert_eq!(statuses(&lb, 20, "GET"), HashMap::from([(200, 20)]));
    // Not for POST unless non_idempotent is listed.
    let posts = statuses(&lb, 20, "POST");
    assert!(posts.get(&503).is_some_and(|&n| n > 0), "{posts:?}");
}

#[test]
fn without_http_503_the_backend_answer_passes_through() {
    let sick = Backend::start("sick", &["--status", "503"]);
    let well = Backend::start("well", &[]);
    let lb = Ringlb::start(&config(&[server(sick.addr), server(well.addr)], "", ""));
    let counts = statuses(&lb, 20, "GET");
    assert_eq!(counts.get(&503), Some(&10), "{counts:?}");
}

#[test]
fn a_503_counts_as_a_passive_failure_when_listed() {
    let sick = Backend::start("sick", &["--status", "503"]);
    let well = Backend::start("well", &[]);
    let lb = Ringlb::start(&config(
        &[server(sick.addr), server(well.addr)],
        "next_upstream = [\"error\", \"timeout\", \"http_503\"]\nmax_fails = 1\nfail_timeout = \"30s\"",
        "",
    ));
    let _ = statuses(&lb, 4, "GET");
    // The sick server is out: it sees no more requests.
    let (before, _) = sick.stats();
    assert_eq!(statuses(&lb, 20, "GET"), HashMap::from([(200, 20)]));
    let (after, _) = sick.stats();
    assert_eq!(before, after);
}

#[test]
fn tries_limits_the_servers_tried() {
    let dead: Vec<std::net::SocketAddr> = (0..3)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        })
        .collect();
    let well = Backend::start("well", &[]);
    let mut servers: Vec<String> = dead.iter().map(|a| server(*a)).collect();
    servers.push(server(well.addr));
    // With tries = 1 the first pick (a dead server) decides.
    let lb = Ringlb::start(&config(&servers, "tries = 1\nmax_fails = 0", ""));
    assert_eq!(lb.get("/").status, 502);
    // With all tries, the request finds the live server.
    let lb = Ringlb::start(&config(&servers, "max_fails = 0", ""));
    for _ in 0..8 {
        assert_eq!(lb.get("/").status, 200);
    }
}
