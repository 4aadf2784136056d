//! WebSocket / Upgrade tunnels through ringlb.

mod support;

use std::io::{Read, Write};
use std::time::Duration;
use support::*;

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn echo_round(c: &mut Client, msg: &[u8]) {
    c.stream.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.stream.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn websocket_echo_through_the_tunnel() {
    let b = Backend::start("ws", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    c.send(UPGRADE);
    let r = c.response();
    assert_eq!(r.status, 101);
    assert_eq!(
        r.header("upgrade").map(str::to_ascii_lowercase).as_deref(),
        Some("websocket")
    );
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("upgrade")
    );
    assert_eq!(
        r.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    for i in 0..50 {
        echo_round(&mut c, format!("message {i}").as_bytes());
    }
    // A large message crosses several reads both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        let big = big.clone();
        std::thread::spawn(move || s.write_all(&big).unwrap())
    };
    let mut got = vec![0u8; big.len()];
    c.stream.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == big);
}

#[test]
fn an_idle_tunnel_is_closed_after_the_tunnel_timeout() {
    let b = Backend::start("ws", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[timeouts]\ntunnel = \"300ms\"\n",
    ));
    let mut c = Client::connect(lb.addr());
    c.send(UPGRADE);
    assert_eq!(c.response().status, 101);
    echo_round(&mut c, b"ping");
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn a_refused_upgrade_continues_as_http() {
    let b = Backend::start("ws", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    // /size/3 answers 200 even to an Upgrade request.
    c.send(b"GET /size/3 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 3));
    c.send(b"GET /size/4 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().body.len(), 4);
}

#[test]
fn tunnels_count_as_active_for_least_conn() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[server(a.addr), server(b.addr)],
        "balance = \"least_conn\"",
        "",
    ));
    // Three open tunnels: least_conn spreads them, then sends plain requests to the
    // server holding fewer.
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(lb.addr());
        c.send(UPGRADE);
        let r = c.response();
        assert_eq!(r.status, 101);
        tunnels.push((c, r.header("x-backend").unwrap().to_string()));
    }
    let on_a = tunnels.iter().filter(|(_, n)| n == "a").count();
    assert!(on_a == 1 || on_a == 2, "tunnels spread: {on_a} on a");
    let fewer = if on_a == 1 { "a" } else { "b" };
    for _ in 0..5 {
        assert_eq!(lb.get("/").header("x-backend"), Some(fewer));
    }
}
