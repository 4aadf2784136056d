//! Which failures count against a server, and retries across any number of servers.
//!
//! - A route that answers with an invalid response is something any client can ask for at
//!   will: by default it gets the client a 502 and is logged and counted
//!   (`ringlb_upstream_invalid_responses_total`), but it does not mark the server down; with
//!   `invalid_header` in `next_upstream` it does (nginx counts `invalid_header` only when listed
//!   in `proxy_next_upstream`).
//! - With 1,000 servers in one upstream, a request is retried past every dead one to the one
//!   that answers (the tried set covers every server, not the first 128).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;
use support::*;

/// A keep-alive server that answers `/bad` with an ambiguously framed response
/// (Content-Length and Transfer-Encoding) and anything else with a valid 200.
fn broken_route_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            thread::spawn(move || serve(s));
        }
    });
    addr
}

fn serve(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        let response: &[u8] = if head.starts_with("GET /bad ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        };
        if s.write_all(response).is_err() {
            return;
        }
    }
}

fn two_servers(upstream_extra: &str) -> Ringlb {
    let servers = [broken_route_server(), broken_route_server()];
    let lines: Vec<String> = servers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("addr = \"{a}\"\nname = \"s{i}\""))
        .collect();
    Ringlb::start(&config(
        &lines,
        &format!("max_fails = 1\nfail_timeout = \"60s\"\n{upstream_extra}"),
        "",
    ))
}

fn metric_sum(text: &str, family: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(family))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_broken_route_does_not_take_servers_out_by_default() {
    let lb = two_servers("");
    for _ in 0..6 {
        assert_eq!(lb.get("/bad").status, 502, "an invalid response is a 502");
    }
    // Everyone else is still served: no server was marked down.
    for _ in 0..6 {
        let r = lb.get("/");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let metrics = lb.admin_get("/metrics").text();
    assert_eq!(
        metric_sum(&metrics, "ringlb_upstream_invalid_responses_total{"),
        6,
        "{metrics}"
    );
    let log = lb
        .proc
        .wait_line(Duration::from_secs(5), |l| l.contains("invalid response"))
        .expect("the invalid response is logged");
    assert!(log.contains("upstream app"), "{log}");
}

#[test]
fn invalid_header_in_next_upstream_counts_them() {
    let lb = two_servers("next_upstream = [\"error\", \"timeout\", \"invalid_header\"]");
    // Round robin: one invalid response from each server marks both down (max_fails = 1).
    for _ in 0..2 {
        assert_eq!(lb.get("/bad").status, 502);
    }
    assert_eq!(lb.get("/").status, 503, "both servers are down");
}

#[test]
fn a_thousand_servers_are_all_tried() {
    // 999 servers refuse connections; the last one answers. Hashing on the URI puts each
    // request first on some dead server; every retry must move on to one not yet tried.
    let live = Backend::start("live", &[]);
    let mut lines: Vec<String> = (0..999)
        .map(|i| {
            format!(
                "addr = \"127.0.{}.{}:1\"\nname = \"dead{i}\"",
                i / 250 + 1,
                i % 250 + 1
            )
        })
        .collect();
    lines.push(format!("addr = \"{}\"\nname = \"live\"", live.addr));
    let lb = Ringlb::start(&config(
        &lines,
        "balance = \"hash\"\nkey = \"$request_uri\"\nmax_fails = 0",
        "",
    ));
    for i in 0..8 {
        let r = lb.get(&format!("/item/{i}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
}
