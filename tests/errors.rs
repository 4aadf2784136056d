//! Refused requests and upstream failures: each gets the right status, and an ambiguous
//! request never reaches a backend.

mod support;

use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Each case: the request bytes and the status ringlb must answer with (then close).
const REFUSED: &[(&str, &[u8], u16)] = &[
    (
        "CL and TE together",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "differing Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    ),
    (
        "Content-Length list that differs",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd",
        400,
    ),
    (
        "signed Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
        400,
    ),
    (
        "hex Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc",
        400,
    ),
    (
        "overflowing Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        400,
    ),
    (
        "TE not ending in chunked",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    (
        "TE identity",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
        400,
    ),
    (
        "TE chunked twice",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "xchunked",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "space before colon",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "obs-fold",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n",
        400,
    ),
    ("missing Host on 1.1", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
    (
        "two Host headers",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
    ),
    (
        "TE on HTTP/1.0",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("NUL in a header value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
    ("bad version", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
];

#[test]
fn ambiguous_framing_is_refused_and_never_forwarded() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(&[server(rec.addr)], "", ""));
    for (name, req, want) in REFUSED {
        let raw = exchange_raw(lb.addr(), req);
        assert!(!raw.is_empty(), "{name}: no response");
        assert_eq!(
            status_of(&raw),
            *want,
            "{name}: {}",
            String::from_utf8_lossy(&raw)
        );
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Connection: close\r\n"), "{name}: {text}");
    }
    assert!(
        rec.none_within(Duration::from_millis(300)),
        "a refused request reached the backend"
    );
    // The proxy still serves normal requests.
    assert_eq!(lb.get("/").status, 200);
    assert!(rec.next(Duration::from_secs(5)).is_some());
}

#[test]
fn oversized_heads_get_414_and_431() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(&[server(rec.addr)], "", ""));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
    assert_eq!(
        status_of(&exchange_raw(lb.addr(), long_uri.as_bytes())),
        414
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17000)
    );
    assert_eq!(
        status_of(&exchange_raw(lb.addr(), big_header.as_bytes())),
        431
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&exchange_raw(lb.addr(), many.as_bytes())), 431);
    assert!(rec.none_within(Duration::from_millis(200)));
}

#[test]
fn no_route_is_404() {
    let rec = Recorder::start(OK);
    let text = "[runtime]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
        [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
        [[routes]]\nlistener = \"http\"\nhost = \"only.example\"\nupstream = \"app\"\n\
        [upstreams.app]\n[[upstreams.app.servers]]\n"
        .to_string()
        + &server(rec.addr);
    let lb = Ringlb::start(&text);
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(c.response().status, 404);
    // Without a body the connection stays usable.
    c.send(b"GET / HTTP/1.1\r\nHost: only.example:8080\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn unreachable_backend_is_502_then_503_while_marked_down() {
    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lb = Ringlb::start(&config(&[server(dead)], "", ""));
    let first = lb.get("/");
    assert_eq!(first.status, 502);
    // max_fails = 1 (nginx default) took the only server out: no usable server.
    assert_eq!(lb.get("/").status, 503);
    // /ready reports the process (no admin.ready_requires): an empty upstream does not take
    // the node out of its pool.
    assert_eq!(lb.admin_get("/ready").status, 200);
}

#[test]
fn connect_failure_is_retried_on_another_server() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let b = Backend::start("alive", &[]);
    let lb = Ringlb::start(&config(&[server(dead), server(b.addr)], "", ""));
    for _ in 0..10 {
        let r = lb.get("/");
        assert_eq!((r.status, r.header("x-backend")), (200, Some("alive")));
    }
}

#[test]
fn slow_backend_is_504() {
    let b = Backend::start("slow", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[timeouts]\nupstream_read = \"200ms\"\n",
    ));
    let r = lb.get("/delay/2000");
    assert_eq!(r.status, 504);
}

#[test]
fn slowloris_head_times_out_with_408() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        "[timeouts]\nclient_header = \"300ms\"\n",
    ));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHo");
    let raw = c.read_to_close();
    assert_eq!(status_of(&raw), 408);
    assert!(rec.none_within(Duration::from_millis(100)));
}

#[test]
fn garbage_response_is_502_and_connection_not_reused() {
    const GARBAGE: &[u8] = b"SPDY/9 what\r\n\r\n";
    let rec = Recorder::start(GARBAGE);
    let lb = Ringlb::start(&config(&[server(rec.addr)], "", ""));
    assert_eq!(lb.get("/").status, 502);
}
