//! End-to-end HTTP/1.1 proxying: what the backend receives, byte for byte, and what the
//! client gets back, through the real binary on loopback.

mod support;

use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const WAIT: Duration = Duration::from_secs(5);

fn recorder_proxy(response: &'static [u8]) -> (Recorder, Ringlb) {
    let rec = Recorder::start(response);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        "[proxy]\nvia = \"lb-test\"\n",
    ));
    (rec, lb)
}

#[test]
fn request_head_is_rewritten_exactly() {
    let (rec, lb) = recorder_proxy(OK);
    let mut c = Client::connect(lb.addr());
    c.send(
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\
          Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-T\r\n\
          X-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
    );
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let got = rec.next(WAIT).expect("backend got the request");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "GET /a/b?c=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\
         X-Forwarded-For: 10.1.1.1, 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\
         Via: 1.1 lb-test\r\n\r\n"
    );
}

#[test]
fn response_hop_by_hop_headers_are_removed() {
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\n\
        Keep-Alive: timeout=9\r\nX-App: yes\r\nContent-Length: 2\r\n\r\nok";
    let (_rec, lb) = recorder_proxy(RESP);
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("x-app"), Some("yes"));
    assert_eq!(r.header("x-secret"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("connection"), None);
    assert_eq!(r.text(), "ok");
}

#[test]
fn keep_alive_on_both_sides_reuses_upstream_connections() {
    let b = Backend::start("ka", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    for i in 0..200 {
        c.send(format!("GET /n{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("ka"));
    }
    // A few more clients, each with its own connection.
    for _ in 0..5 {
        let r = lb.get("/");
        assert_eq!(r.status, 200);
    }
    let (requests, connections) = b.stats();
    assert_eq!(requests, 205);
    assert!(
        connections <= 3,
        "backend saw {connections} connections for 205 requests"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Backend::start("pipe", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    let mut batch = Vec::new();
    for i in 0..20 {
        // Alternate slow and fast requests: order must still hold.
        let path = if i % 3 == 0 {
            "/delay/20".to_string()
        } else {
            format!("/size/{i}")
        };
        batch.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    }
    c.send(&batch);
    for i in 0..20 {
        let r = c.response();
        assert_eq!(r.status, 200, "response {i}");
        if i % 3 != 0 {
            assert_eq!(r.body.len(), i, "response {i} out of order");
        }
    }
}

#[test]
fn content_length_and_chunked_request_bodies_reach_the_backend() {
    let (rec, lb) = recorder_proxy(OK);
    let mut c = Client::connect(lb.addr());
    c.send(b"POST /cl HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).unwrap();
    assert!(got.ends_with(b"Content-Length: 11\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nVia: 1.1 lb-test\r\n\r\nhello world"), "{}", String::from_utf8_lossy(&got));

    // Chunked, sent in pieces: passed through unchanged.
    c.send(b"POST /ch HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).unwrap();
    assert!(
        got.ends_with(b"\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn echoed_bodies_round_trip_and_large_bodies_stream() {
    let b = Backend::start("echo", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    // 8 MiB body, larger than any buffer: streamed both ways.
    let body: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut req = format!(
        "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let writer = {
        let mut s = c.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            s.write_all(&req).unwrap();
        })
    };
    let r = c.response();
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed body differs");
}

#[test]
fn chunked_and_close_delimited_responses() {
    let b = Backend::start("chunky", &["--chunked"]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET /size/10000 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 10000);
    // Still usable afterwards.
    c.send(b"GET /size/5 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().body.len(), 5);

    const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
    let (_rec, lb2) = recorder_proxy(CLOSE);
    let mut c = Client::connect(lb2.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let raw = c.read_to_close();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nuntil the end"), "{text}");
}

#[test]
fn head_204_304_have_no_body() {
    let b = Backend::start("nobody", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    c.send(b"HEAD /size/100 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response_to_head();
    assert_eq!((r.status, r.header("content-length")), (200, Some("100")));
    for code in [204, 304] {
        c.send(format!("GET /status/{code} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, code);
    }
    // The connection is still in sync: no stray body bytes were sent.
    c.send(b"GET /size/3 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body.len()), (200, 3));
}

#[test]
fn expect_100_continue() {
    let b = Backend::start("cont", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let mut c = Client::connect(lb.addr());
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    // The interim response comes before we send the body.
    let mut buf = [0u8; 25];
    use std::io::Read;
    c.stream.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send(b"hello");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

#[test]
fn http10_clients() {
    let b = Backend::start("old", &["--chunked"]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    // HTTP/1.0 without keep-alive: answered, then closed; a chunked response is decoded.
    let raw = exchange_raw(lb.addr(), b"GET /size/7 HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nxxxxxxx"), "{text}");

    // HTTP/1.0 keep-alive with a Content-Length response stays open.
    let b2 = Backend::start("old2", &[]);
    let lb2 = Ringlb::start(&config(&[server(b2.addr)], "", ""));
    let mut c = Client::connect(lb2.addr());
    for _ in 0..3 {
        c.send(b"GET /size/4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.response();
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.body, b"xxxx");
    }
}

#[test]
fn host_is_kept_and_added_for_http10() {
    let (rec, lb) = recorder_proxy(OK);
    let raw = exchange_raw(lb.addr(), b"GET /x HTTP/1.0\r\n\r\n");
    assert!(raw.starts_with(b"HTTP/1.1 200 OK"));
    let got = rec.next(WAIT).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("GET /x HTTP/1.1\r\n"), "{text}");
    assert!(
        header_lines(&got).iter().any(|l| l == "Host: app"),
        "{text}"
    );
}
