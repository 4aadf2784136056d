//! `loadgen serve` end to end: the binary on 127.0.0.1:0, spoken to over raw TCP.

mod support;

use std::time::{Duration, Instant};

use support::{get, request, Backend, Reader};

fn stats(b: &Backend) -> serde_json::Value {
    serde_json::from_slice(&get(b.addr(), "/stats").body).unwrap()
}

#[test]
fn keep_alive_pipelining_answers_in_order() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--name", "a"]);
    let mut r = Reader::new(b.connect());
    // The slow request comes first: later answers must wait for it.
    let mut batch = String::from("GET /delay/100 HTTP/1.1\r\nHost: t\r\n\r\n");
    for i in 1..20 {
        batch.push_str(&format!("GET /size/{i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    r.send(batch.as_bytes());
    let first = r.response(false);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-backend"), Some("a"));
    assert_eq!(first.text(), "a\n");
    for i in 1..20 {
        let resp = r.response(false);
        assert_eq!(resp.body, vec![b'x'; i], "response {i} out of order");
    }
    // Still open: one more request on the same connection.
    r.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.response(false).text(), "a\n");
    let s = stats(&b);
    assert_eq!(s["connections"], 2, "{s}");
    assert_eq!(s["requests"], 22, "{s}");
}

#[test]
fn post_body_is_echoed_for_content_length_and_chunked() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let resp = request(
        b.addr(),
        "POST /any HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world",
    );
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello world"));

    // Chunked, split across writes mid-chunk, then a pipelined PUT.
    let mut r = Reader::new(b.connect());
    r.send(b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
    std::thread::sleep(Duration::from_millis(50));
    r.send(b"lo\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n");
    r.send(b"PUT /q HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
    let resp = r.response(false);
    assert_eq!(resp.text(), "hello world");
    assert_eq!(resp.header("content-length"), Some("11"));
    assert_eq!(r.response(false).text(), "abc");

    // A large body arriving in pieces.
    let big = vec![b'z'; 300_000];
    let mut r = Reader::new(b.connect());
    r.send(format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes());
    r.send(&big);
    assert_eq!(r.response(false).body, big);
}

#[test]
fn echo_returns_the_raw_request_head() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let head = "GET /echo?q=1 HTTP/1.1\r\nHost: example\r\nX-Odd-Case: VaLue  \r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let resp = request(b.addr(), head);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), head);
}

#[test]
fn health_switches_at_run_time_for_all_cores() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--cores", "2"]);
    let h = get(b.addr(), "/health");
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let set = request(
        b.addr(),
        "POST /control/health/503 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(set.status, 200);
    // Several connections, so both cores answer at least once (SO_REUSEPORT spreads them).
    for _ in 0..8 {
        assert_eq!(get(b.addr(), "/health").status, 503);
    }
    request(b.addr(), "POST /control/health/200 HTTP/1.1\r\n\r\n");
    assert_eq!(get(b.addr(), "/health").status, 200);
    assert_eq!(get(b.addr(), "/control/health/503").status, 405);
}

#[test]
fn stats_count_requests_and_connections() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--cores", "2"]);
    let mut readers: Vec<Reader> = (0..3).map(|_| Reader::new(b.connect())).collect();
    for r in &mut readers {
        for _ in 0..10 {
            r.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            assert_eq!(r.response(false).status, 200);
        }
    }
    let s = stats(&b);
    assert_eq!(s["requests"], 31, "{s}");
    assert_eq!(s["connections"], 4, "{s}");
    assert_eq!(s["active_connections"], 4, "{s}");
    drop(readers);
    std::thread::sleep(Duration::from_millis(200));
    let s = stats(&b);
    assert_eq!(s["active_connections"], 1, "{s}");
}

#[test]
fn delays_per_path_and_per_instance() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let t = Instant::now();
    assert_eq!(get(b.addr(), "/delay/200").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert_eq!(get(b.addr(), "/delay/nope").status, 400);

    let b = Backend::start(&[
        "--listen",
        "127.0.0.1:0",
        "--delay",
        "100ms",
        "--delay-random",
        "0ms..50ms",
    ]);
    let t = Instant::now();
    assert_eq!(get(b.addr(), "/").status, 200);
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(100) && e < Duration::from_secs(2),
        "{e:?}"
    );
}

#[test]
fn head_status_and_size_paths() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let mut r = Reader::new(b.connect());
    r.send(b"HEAD /size/100 HTTP/1.1\r\n\r\nGET /status/204 HTTP/1.1\r\n\r\nGET /status/503 HTTP/1.1\r\n\r\nGET /size/0 HTTP/1.1\r\n\r\n");
    let head = r.response(true);
    assert_eq!(head.header("content-length"), Some("100"));
    let no_content = r.response(false);
    assert_eq!(no_content.status, 204);
    assert_eq!(no_content.header("content-length"), None);
    assert_eq!(r.response(false).status, 503);
    assert_eq!(r.response(false).body.len(), 0);
    let big = get(b.addr(), "/size/1000000");
    assert_eq!(big.body.len(), 1_000_000);
}

#[test]
fn invalid_request_gets_400_and_close() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let mut r = Reader::new(b.connect());
    r.send(b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n");
    let resp = r.response(false);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(r.at_eof());
}

#[test]
fn instances_are_named_and_ports_are_shared_by_cores() {
    let b = Backend::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
        "--name",
        "web",
        "--cores",
        "2",
    ]);
    assert_eq!(b.instances[0].1, "web-0");
    assert_eq!(b.instances[1].1, "web-1");
    for _ in 0..6 {
        assert_eq!(
            get(b.instances[1].0, "/").header("x-backend"),
            Some("web-1")
        );
    }
    let unnamed = Backend::start(&["--listen", "127.0.0.1:0"]);
    assert_eq!(unnamed.instances[0].1, unnamed.instances[0].0.to_string());
}

#[test]
fn websocket_upgrade_then_raw_echo() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let mut r = Reader::new(b.connect());
    r.send(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly");
    let resp = r.response(true);
    assert_eq!(resp.status, 101);
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    r.send(b" bytes");
    let got = r.take(11);
    assert_eq!(got, b"early bytes");
}

#[test]
fn chunked_body_size_status_and_close_options() {
    let b = Backend::start(&[
        "--listen",
        "127.0.0.1:0",
        "--chunked",
        "--body-size",
        "10",
        "--status",
        "202",
        "--close",
    ]);
    let mut r = Reader::new(b.connect());
    r.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let resp = r.response(false);
    assert_eq!(resp.status, 202);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.body, b"xxxxxxxxxx");
    assert!(r.at_eof());
}

#[test]
fn fail_ratio_and_stall_once() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--fail-ratio", "1"]);
    assert_eq!(get(b.addr(), "/").status, 500);
    assert_eq!(get(b.addr(), "/health").status, 200);

    let b = Backend::start(&[
        "--listen",
        "127.0.0.1:0",
        "--stall-once-after",
        "3",
        "--stall",
        "300ms",
    ]);
    let mut slow = Vec::new();
    for _ in 0..6 {
        let t = Instant::now();
        get(b.addr(), "/");
        slow.push(t.elapsed() >= Duration::from_millis(250));
    }
    assert_eq!(slow, [false, false, true, false, false, false]);
}

#[test]
fn http_1_0_and_expect_continue() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let mut r = Reader::new(b.connect());
    r.send(b"GET / HTTP/1.0\r\n\r\n");
    let resp = r.response(false);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(r.at_eof());

    let mut r = Reader::new(b.connect());
    r.send(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(r.response(false).status, 100);
    r.send(b"ok");
    assert_eq!(r.response(false).text(), "ok");
}

#[test]
fn sigterm_exits_zero() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    assert!(b.terminate().success());
}

#[test]
fn bad_arguments_exit_2() {
    let out = std::process::Command::new(support::BIN)
        .args(["serve", "--listen", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
