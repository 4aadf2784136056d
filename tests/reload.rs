//! Configuration reload (SIGHUP and the admin API) without dropping connections.

mod support;

use std::collections::HashMap;
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

/// Rewrites ringlb's config file, keeping its listener and admin addresses (port 0 in the
/// file, as at start).
fn rewrite(lb: &Ringlb, text: &str) {
    std::fs::write(&lb.config_path, support::with_test_engine(text)).unwrap();
}

/// GETs in a loop from `clients` threads until `stop`; a keep-alive connection closed by the
/// server before any response byte is reopened and the request resent (as HTTP clients do);
/// anything else is a failure. Returns (responses by backend, failures).
fn load(
    lb: &Ringlb,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<(HashMap<String, u32>, u32)>> {
    let addr = lb.addr();
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen: HashMap<String, u32> = HashMap::new();
                let mut failures = 0;
                let mut c = Client::connect(addr);
                let mut fresh = true;
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                    match c.try_response(false) {
                        Some(r) if r.status == 200 => {
                            *seen
                                .entry(r.header("x-backend").unwrap().to_string())
                                .or_default() += 1;
                            fresh = r.header("connection") == Some("close");
                            if fresh {
                                c = Client::connect(addr);
                            }
                        }
                        Some(_) => failures += 1,
                        None if !fresh => {
                            c = Client::connect(addr);
                            fresh = true;
                        }
                        None => {
                            failures += 1;
                            c = Client::connect(addr);
                        }
                    }
                }
                (seen, failures)
            })
        })
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
    let threads = load(&lb, 4, stop.clone());
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
    let mut total: HashMap<String, u32> = HashMap::new();
    let mut failures = 0;
    for t in threads {
        let (seen, f) = t.join().unwrap();
        failures += f;
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
    }
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
    let r = lb.admin_post("/api/reload", "");
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
    // A listener change needs a restart, and says so.
    rewrite(
        &lb,
        &text.replace("backlog", "x").replacen(
            "name = \"http\"\n",
            "name = \"http\"\nbacklog = 77\n",
            1,
        ),
    );
    let r = lb.admin_post("/api/reload", "");
    assert_eq!(r.status, 422);
    assert!(r.text().contains("needs a restart"), "{}", r.text());
    // The valid file again: accepted.
    rewrite(&lb, &text);
    let r = lb.admin_post("/api/reload", "");
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
        lb.admin_post("/api/upstreams/app/servers/a", "{\"state\":\"drain\"}")
            .status,
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
    assert_eq!(lb.admin_post("/api/reload", "").status, 200);
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
    assert_eq!(lb.admin_post("/api/reload", "").status, 200);
    assert_eq!(slow.join().unwrap().as_deref(), Some("b"));
    for _ in 0..3 {
        idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(idle.response().header("x-backend"), Some("b"));
    }
}
