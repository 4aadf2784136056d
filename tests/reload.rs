//! Configuration reload (SIGHUP and the admin API) without dropping connections.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn servers_of(backends: &[&Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| format!("{}\nname = \"{}\"", server(b.addr), b.name))
        .collect()
}

#[test]
fn sighup_adding_a_server_under_load_fails_nothing() {
    let b: Vec<Backend> = ["r1", "r2", "r3", "r4"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let three = config(&servers_of(&[&b[0], &b[1], &b[2]]), "", "");
    let lb = Ringlb::start(&three);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(lb.addr(), 4, 0, stop.clone());
    std::thread::sleep(Duration::from_millis(400));
    rewrite(
        &lb,
        &config(&servers_of(&[&b[0], &b[1], &b[2], &b[3]]), "", ""),
    );
    lb.proc.signal(libc::SIGHUP);
    lb.proc
        .wait_line(Duration::from_secs(5), |l| l.contains("reloaded"))
        .expect("reload logged");
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let (total, failures) = load_results(threads);
    assert_eq!(failures, 0, "{total:?}");
    assert!(total.get("r4").is_some_and(|&n| n > 20), "{total:?}");
}

#[test]
fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let b = Backend::start("keep", &[]);
    let text = config(&servers_of(&[&b]), "", "");
    let lb = Ringlb::start(&text);
    rewrite(
        &lb,
        &text.replace("[upstreams.app]", "[upstreams.app]\nbalance = \"fastest\""),
    );
    let r = post(&lb, "/api/reload", "");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("upstreams.app.balance"), "{}", r.text());
    assert_eq!(lb.get("/").header("x-backend"), Some("keep"));
    // SIGHUP: the same refusal, logged.
    lb.proc.signal(libc::SIGHUP);
    assert!(lb
        .proc
        .wait_line(Duration::from_secs(5), |l| l.contains("refused")
            && l.contains("balance"))
        .is_some());
    assert_eq!(lb.get("/").status, 200);
    // A worker count change needs a restart, and says so.
    rewrite(&lb, &text.replace("workers = 1", "workers = 2"));
    let r = post(&lb, "/api/reload", "");
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains(
            "runtime.workers, runtime.cpus or runtime.io_memory changed: this needs a restart"
        ),
        "{}",
        r.text()
    );
    // The valid file again: accepted.
    rewrite(&lb, &text);
    let r = post(&lb, "/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"generation\":1"), "{}", r.text());
}

#[test]
fn a_server_that_stays_keeps_its_state_and_sticky_cookies_survive() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let sticky = "sticky = { cookie = \"srv\" }";
    let text = config(&servers_of(&[&a, &b]), sticky, "");
    let lb = Ringlb::start(&text);
    // Drain a through the API, pin a client to b.
    assert_eq!(
        post(&lb, "/api/upstreams/app/servers/a", "{\"state\":\"drain\"}").status,
        200
    );
    let first = lb.get("/");
    assert_eq!(first.header("x-backend"), Some("b"));
    let cookie = first
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Reload with a third server added.
    let c = Backend::start("c", &[]);
    rewrite(&lb, &config(&servers_of(&[&a, &b, &c]), sticky, ""));
    assert_eq!(post(&lb, "/api/reload", "").status, 200);
    let state = lb.admin_get("/api/upstreams/app/servers/a");
    assert!(
        state.text().contains("\"state\":\"draining\""),
        "{}",
        state.text()
    );
    for _ in 0..10 {
        let mut cl = Client::connect(lb.addr());
        cl.send(format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: {cookie}\r\n\r\n").as_bytes());
        assert_eq!(cl.response().header("x-backend"), Some("b"));
    }
}

#[test]
fn in_flight_requests_finish_and_open_connections_continue_on_the_new_config() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let text = config(&servers_of(&[&a]), "", "");
    let lb = Ringlb::start(&text);
    let addr = lb.addr();
    let slow = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /delay/700 HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.header("connection")), (200, None));
        // The same connection, after the reload: served by the new configuration.
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        c.response().header("x-backend").map(str::to_string)
    });
    // An idle keep-alive connection opened before the reload.
    let mut idle = Client::connect(addr);
    idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(idle.response().header("x-backend"), Some("a"));
    std::thread::sleep(Duration::from_millis(200));
    // Only b now.
    rewrite(&lb, &config(&servers_of(&[&b]), "", ""));
    assert_eq!(post(&lb, "/api/reload", "").status, 200);
    assert_eq!(slow.join().unwrap().as_deref(), Some("b"));
    for _ in 0..3 {
        idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(idle.response().header("x-backend"), Some("b"));
    }
}
