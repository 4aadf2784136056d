//! The admin listener's JSON runtime API, end to end: shapes, errors, the bearer token, and
//! changes (drain, maint, weight) that take effect on the traffic.

mod support;

use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "s3cret-token-0123456789";

fn named(b: &Backend) -> String {
    format!("addr = \"{}\"\nname = \"{}\"", b.addr, b.name)
}

fn start(backends: &[&Backend], token: bool) -> Ringlb {
    let servers: Vec<String> = backends.iter().map(|b| named(b)).collect();
    let mut cfg = config(&servers, "", "");
    if token {
        cfg = cfg.replace(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        );
        assert!(cfg.contains(TOKEN));
    }
    Ringlb::start(&cfg)
}

/// One admin request; `body` is sent with Content-Length.
fn admin(
    rl: &Ringlb,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost:9901\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    let mut c = Client::connect(rl.admin);
    c.send(req.as_bytes());
    if method == "HEAD" {
        c.response_to_head()
    } else {
        c.response()
    }
}

fn json(r: &Response) -> Value {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn set(rl: &Ringlb, server: &str, body: &str) -> Value {
    let r = admin(
        rl,
        "POST",
        &format!("/api/upstreams/app/servers/{server}"),
        Some(body),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
}

fn get_server(rl: &Ringlb, server: &str) -> Value {
    let r = admin(
        rl,
        "GET",
        &format!("/api/upstreams/app/servers/{server}"),
        None,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
}

/// Which backends answered `n` sequential GETs of `path`; panics on any failure.
fn spread(addr: SocketAddr, n: usize, path: &str) -> HashMap<String, u64> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let mut c = Client::connect(addr);
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let r = c.response();
        assert_eq!(r.status, 200, "{}", r.text());
        *seen
            .entry(r.header("x-backend").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    seen
}

#[test]
fn upstreams_json_has_every_server_with_state_and_health() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let servers = [
        format!("{}\nweight = 3\nmax_conns = 7", named(&a)),
        format!("{}\nbackup = true\ndrain = true", named(&b)),
    ];
    let rl = Ringlb::start(&config(&servers, "balance = \"least_conn\"", ""));

    let r = admin(&rl, "GET", "/api/upstreams", None, None);
    assert_eq!(r.status, 200);
    let v = json(&r);
    let ups = v["upstreams"].as_array().expect("upstreams array");
    assert_eq!(ups.len(), 1);
    assert_eq!(ups[0]["name"], "app");
    assert_eq!(ups[0]["balance"], "least_conn");
    let s = &ups[0]["servers"];
    assert_eq!(s.as_array().map(Vec::len), Some(2));
    let a_json = &s[0];
    assert_eq!(a_json["name"], "a");
    assert_eq!(a_json["addr"], a.addr.to_string());
    assert_eq!(a_json["state"], "up");
    assert_eq!(a_json["health"], "up");
    assert_eq!(a_json["active"], 0);
    assert_eq!(a_json["weight"], 3);
    assert_eq!(a_json["fails"], 0);
    assert_eq!(a_json["backup"], false);
    assert_eq!(a_json["max_conns"], 7);
    // No health_check configured: never checked.
    assert!(a_json["last_check"].is_null());
    assert_eq!(s[1]["state"], "draining");
    assert_eq!(s[1]["backup"], true);
    assert!(s[1]["max_conns"].is_null());

    let one = json(&admin(&rl, "GET", "/api/upstreams/app", None, None));
    assert_eq!(one, ups[0]);
    assert_eq!(get_server(&rl, "b"), s[1]);

    // HEAD: same head, no body.
    let h = admin(&rl, "HEAD", "/api/upstreams", None, None);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
}

#[test]
fn last_check_reports_the_active_check() {
    let a = Backend::start("a", &[]);
    let servers = [named(&a)];
    let extra = "health_check = { interval = \"100ms\", timeout = \"100ms\", rise = 2, fall = 2 }";
    let rl = Ringlb::start(&config(&servers, extra, ""));
    a.request("POST", "/control/health/503");
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = get_server(&rl, "a");
        if v["health"] == "down" || Instant::now() > deadline {
            break v;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["health"], "down", "{v}");
    let lc = &v["last_check"];
    assert_eq!(lc["status"], 503, "{v}");
    assert_eq!(lc["ok"], false);
    assert!(lc["at_ms_ago"].as_u64().is_some_and(|ms| ms < 5_000), "{v}");
    assert!(lc["duration_us"].as_u64().is_some(), "{v}");
}

#[test]
fn api_errors_are_json_with_the_right_status() {
    let a = Backend::start("a", &[]);
    let rl = start(&[&a], false);
    let err = |r: &Response, status: u16, needle: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = json(r);
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    };
    let path = "/api/upstreams/app/servers/a";
    err(
        &admin(&rl, "GET", "/api/upstreams/nope", None, None),
        404,
        "nope",
    );
    err(
        &admin(&rl, "GET", "/api/upstreams/app/servers/zz", None, None),
        404,
        "zz",
    );
    err(
        &admin(
            &rl,
            "POST",
            "/api/upstreams/app/servers/zz",
            Some(r#"{"state":"drain"}"#),
            None,
        ),
        404,
        "zz",
    );
    err(
        &admin(&rl, "GET", "/api/whatever", None, None),
        404,
        "route",
    );
    for (body, needle) in [
        ("{\"state\":", "invalid JSON"),
        (r#"{"state":"down"}"#, "state must be"),
        (r#"{"weight":0}"#, "weight must be 1..=1000"),
        (r#"{"weight":1001}"#, "weight must be 1..=1000"),
        (r#"{"weight":"2"}"#, "invalid JSON"),
        (r#"{"drain":true}"#, "unknown field"),
        ("{}", "\"state\" and/or \"weight\""),
    ] {
        err(&admin(&rl, "POST", path, Some(body), None), 400, needle);
    }
    // Nothing above changed the server.
    let v = get_server(&rl, "a");
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_u64()),
        (Some("up"), Some(1))
    );

    let r = admin(&rl, "OPTIONS", path, None, None);
    err(&r, 405, "method");
    assert_eq!(
        r.header("allow"),
        Some("GET, HEAD, POST, PUT, PATCH, DELETE")
    );
    let r = admin(&rl, "GET", "/api/upstreams/app/servers", None, None);
    err(&r, 405, "method");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = admin(&rl, "POST", "/api/upstreams", Some("{}"), None);
    err(&r, 405, "method");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = admin(&rl, "POST", "/ready", Some("{}"), None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));

    // Over 64 KiB: refused from the head alone, and the answer still arrives whole when the
    // client sends the body anyway.
    let big = format!("{{\"state\":\"drain\",\"x\":\"{}\"}}", "y".repeat(70_000));
    err(&admin(&rl, "POST", path, Some(&big), None), 413, "64 KiB");
    let mut c = Client::connect(rl.admin);
    c.send(
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 70000\r\n\r\n").as_bytes(),
    );
    err(&c.response(), 413, "64 KiB");
    assert_eq!(get_server(&rl, "a")["state"], "up");

    // Unknown paths outside /api are plain 404s; /metrics is served.
    assert_eq!(admin(&rl, "GET", "/nope", None, None).status, 404);
    assert_eq!(admin(&rl, "GET", "/metrics", None, None).status, 200);
}

#[test]
fn bodies_by_chunks_or_after_100_continue_are_read() {
    let a = Backend::start("a", &[]);
    let rl = start(&[&a], false);
    let path = "/api/upstreams/app/servers/a";

    let mut c = Client::connect(rl.admin);
    c.send(
        format!(
            "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\n{{\"sta\r\nc\r\nte\":\"maint\"}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["state"], "maint");

    let body = r#"{"state":"ready","weight":9}"#;
    let mut c = Client::connect(rl.admin);
    c.send(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: [::1]\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // The 100 arrives before any body byte is sent; Client skips it and waits for the final.
    thread::sleep(Duration::from_millis(100));
    let mut peek = [0u8; 25];
    c.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    std::io::Read::read_exact(&mut c.stream, &mut peek).expect("100 Continue");
    assert_eq!(&peek, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(body.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(
        (v["state"].as_str(), v["weight"].as_u64()),
        (Some("up"), Some(9))
    );
}

#[test]
fn token_guards_the_api_but_not_the_probes() {
    let a = Backend::start("a", &[]);
    let rl = start(&[&a], true);

    let r = admin(&rl, "GET", "/api/upstreams", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"ringlb\"")
    );
    let r = admin(
        &rl,
        "GET",
        "/api/upstreams",
        None,
        Some("s3cret-token-0123456780"),
    );
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.contains("invalid_token")));
    let r = admin(
        &rl,
        "GET",
        "/api/upstreams",
        None,
        Some(&TOKEN[..TOKEN.len() - 1]),
    );
    assert_eq!(r.status, 401);
    let mut c = Client::connect(rl.admin);
    c.send(
        format!("GET /api/upstreams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(c.response().status, 401);
    // An unauthenticated change is refused before its body is read, and changes nothing.
    let r = admin(
        &rl,
        "POST",
        "/api/upstreams/app/servers/a",
        Some(r#"{"state":"maint"}"#),
        None,
    );
    assert_eq!(r.status, 401);
    // Unknown routes reveal nothing without the token either.
    assert_eq!(
        admin(&rl, "GET", "/api/upstreams/nope", None, None).status,
        401
    );
    assert_eq!(admin(&rl, "GET", "/metrics", None, None).status, 401);

    let r = admin(
        &rl,
        "GET",
        "/api/upstreams/app/servers/a",
        None,
        Some(TOKEN),
    );
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["state"], "up");
    assert_eq!(admin(&rl, "GET", "/live", None, None).status, 200);
    assert_eq!(admin(&rl, "GET", "/ready", None, None).status, 200);
    assert_eq!(spread(rl.addr(), 2, "/")["a"], 2);
}

#[test]
fn drain_finishes_in_flight_requests_and_takes_no_new_ones() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let rl = start(&[&a, &b], false);
    let addr = rl.addr();
    // Four slow requests: round robin sends two to each server.
    let slow: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || spread(addr, 1, "/delay/1000")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_server(&rl, "b")["active"] != 2 {
        assert!(
            Instant::now() < deadline,
            "b never had 2 requests in flight"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let v = set(&rl, "b", r#"{"state":"drain"}"#);
    assert_eq!(v["state"], "draining");
    assert_eq!(v["active"], 2);
    rl.proc
        .wait_line(Duration::from_secs(5), |l| {
            l.contains("server b (") && l.contains("of upstream app is draining")
        })
        .expect("the change is logged");
    assert_eq!(spread(addr, 6, "/").get("a"), Some(&6));

    let mut finished: HashMap<String, u64> = HashMap::new();
    for t in slow {
        for (k, n) in t.join().expect("slow request") {
            *finished.entry(k).or_default() += n;
        }
    }
    // The two requests b had in flight completed with 200 (spread asserts the status).
    assert_eq!(finished.get("b"), Some(&2), "{finished:?}");
    assert_eq!(get_server(&rl, "b")["active"], 0);

    let v = set(&rl, "b", r#"{"state":"ready"}"#);
    assert_eq!(v["state"], "up");
    assert!(spread(addr, 6, "/").get("b").copied().unwrap_or(0) >= 2);
}

#[test]
fn maint_takes_a_server_out_and_ready_brings_it_back() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let servers = [named(&a), named(&b)];
    let cfg = config(&servers, "", "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\nready_requires = [\"app\"]\n",
    );
    let rl = Ringlb::start(&cfg);
    assert_eq!(spread(rl.addr(), 4, "/").get("b"), Some(&2));

    assert_eq!(set(&rl, "b", r#"{"state":"maint"}"#)["state"], "maint");
    assert_eq!(spread(rl.addr(), 6, "/").get("a"), Some(&6));
    // Only a is usable, so the route is still ready; with a in maintenance too, it is not.
    assert_eq!(rl.admin_get("/ready").status, 200);
    set(&rl, "a", r#"{"state":"maint"}"#);
    assert_eq!(rl.admin_get("/ready").status, 503);
    assert!(rl.get("/").status >= 500);

    set(&rl, "a", r#"{"state":"ready"}"#);
    set(&rl, "b", r#"{"state":"ready"}"#);
    assert_eq!(rl.admin_get("/ready").status, 200);
    let seen = spread(rl.addr(), 6, "/");
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&3), Some(&3)),
        "{seen:?}"
    );
}

#[test]
fn weight_change_shifts_the_distribution() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let rl = start(&[&a, &b], false);
    let seen = spread(rl.addr(), 10, "/");
    assert_eq!(
        (seen.get("a"), seen.get("b")),
        (Some(&5), Some(&5)),
        "{seen:?}"
    );

    let v = set(&rl, "b", r#"{"weight":4}"#);
    assert_eq!(v["weight"], 4);
    rl.proc
        .wait_line(Duration::from_secs(5), |l| {
            l.contains("admin: server b of upstream app weight set to 4 (was 1)")
        })
        .expect("the change is logged");
    let seen = spread(rl.addr(), 50, "/");
    let (na, nb) = (seen["a"], seen["b"]);
    // Smooth weighted round robin at 1:4 gives 10 and 40, give or take the cycle in progress.
    assert!((8..=12).contains(&na) && na + nb == 50, "{seen:?}");
}
