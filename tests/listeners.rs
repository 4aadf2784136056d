//! Listeners added, removed, renamed and moved by a reload: the others keep their sockets and
//! serve throughout; a new one serves once the reload is done; a removed one stops accepting
//! while its connections finish the request in flight; a reload whose new listener cannot
//! bind changes nothing.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// `listeners` (name, listen) each with a route to one upstream over `b`.
fn with_listeners(b: &Backend, listeners: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    for (name, listen) in listeners {
        s.push_str(&format!(
            "[[listeners]]\nname = \"{name}\"\nlisten = \"{listen}\"\n\
             [[routes]]\nlistener = \"{name}\"\nupstream = \"app\"\n"
        ));
    }
    s.push_str(&format!(
        "[upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{}\"\nname = \"{}\"\n",
        b.addr, b.name
    ));
    s
}

/// Whether connecting to `addr` is refused within `limit` (the cores stop accepting on a
/// removed listener as they move to the new generation).
fn refused_within(addr: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn get(addr: SocketAddr) -> Response {
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    c.response()
}

#[test]
fn a_reload_adds_and_removes_listeners_while_the_others_serve() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&with_listeners(
        &b,
        &[("kept", "127.0.0.1:0"), ("gone", "127.0.0.1:0")],
    ));
    let (kept, gone) = (lb.listeners[0], lb.listeners[1]);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(kept, 4, 2, stop.clone());

    // On the listener to remove: a keep-alive connection with a request in flight across the
    // reload, and an idle one.
    let mut busy = Client::connect(gone);
    busy.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(busy.response().status, 200);
    busy.send(b"GET /delay/800 HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut idle = Client::connect(gone);
    idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(idle.response().status, 200);
    std::thread::sleep(Duration::from_millis(300));

    rewrite(
        &lb,
        &with_listeners(&b, &[("kept", "127.0.0.1:0"), ("added", "127.0.0.1:0")]),
    );
    let added = sighup_reload(&lb, "added").expect("the new listener");
    assert_eq!(get(added).status, 200);
    // The removed listener: the request in flight is answered, with `Connection: close`, and
    // the connection ends; the idle one is closed; new connections are refused.
    let r = busy.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(busy.closed_within(Duration::from_secs(2)));
    assert!(idle.closed_within(Duration::from_secs(2)));
    assert!(refused_within(gone, Duration::from_secs(2)));

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (total, failures) = load_results(threads);
    assert_eq!(failures, 0, "{total:?}");
    assert!(total.get("b").is_some_and(|&n| n > 20), "{total:?}");
}

/// A free loopback address (bound and released).
fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

#[test]
fn a_renamed_listener_keeps_its_socket_and_a_moved_one_gets_a_new_one() {
    let b = Backend::start("b", &[]);
    let first = free_addr();
    let lb = Ringlb::start(&with_listeners(&b, &[("http", &first)]));
    let before = lb.addr();
    let mut c = Client::connect(before);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);

    // Same address, new name and backlog: the same socket, the connection carries on.
    let renamed = |listen: &str| {
        with_listeners(&b, &[("web", listen)])
            .replace("name = \"web\"\n", "name = \"web\"\nbacklog = 77\n")
    };
    rewrite(&lb, &renamed(&first));
    assert_eq!(sighup_reload(&lb, "web"), None);
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, None));
    assert_eq!(get(before).status, 200);

    // Another address: a new socket; the old one closes, and its idle connection with it.
    let second = free_addr();
    rewrite(&lb, &renamed(&second));
    let moved = sighup_reload(&lb, "web").expect("the moved listener");
    assert_eq!(moved.to_string(), second);
    assert_eq!(get(moved).status, 200);
    assert!(c.closed_within(Duration::from_secs(2)));
    assert!(refused_within(before, Duration::from_secs(2)));
}

#[test]
fn a_reload_whose_new_listener_cannot_bind_changes_nothing() {
    let b = Backend::start("b", &[]);
    let text = with_listeners(&b, &[("a", "127.0.0.1:0"), ("b", "127.0.0.1:0")]);
    let lb = Ringlb::start(&text);
    // Taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    rewrite(
        &lb,
        &with_listeners(&b, &[("a", "127.0.0.1:0"), ("c", &addr.to_string())]),
    );
    let r = post(&lb, "/api/reload", "");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains(&format!("cannot listen on {addr} (c)")),
        "{}",
        r.text()
    );
    // Both listeners serve, the one the refused file removes included.
    assert_eq!(get(lb.listeners[0]).status, 200);
    assert_eq!(get(lb.listeners[1]).status, 200);
    // The same change once the address is free: applied.
    drop(taken);
    let r = post(&lb, "/api/reload", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(addr).status, 200);
    assert!(refused_within(lb.listeners[1], Duration::from_secs(2)));
}
