//! PROXY protocol: accepted on listeners (v1 and v2) and sent to servers.

mod support;

use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn pp_listener(servers: &[String], upstream: &str) -> Ringlb {
    Ringlb::start(&config(servers, upstream, "").replacen(
        "listen = \"127.0.0.1:0\"\n[[routes]]",
        "listen = \"127.0.0.1:0\"\nproxy_protocol = true\n[[routes]]",
        1,
    ))
}

#[test]
fn v1_header_gives_the_client_address() {
    let rec = Recorder::start(OK);
    let lb = pp_listener(&[server(rec.addr)], "");
    let mut c = Client::connect(lb.addr());
    c.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // Keep-alive: the header came once, the second request still has the client address.
    c.send(b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    for _ in 0..2 {
        let got = rec.next(Duration::from_secs(5)).unwrap();
        let lines = header_lines(&got);
        assert!(
            lines.iter().any(|l| l == "X-Forwarded-For: 203.0.113.9"),
            "{lines:?}"
        );
    }
}

#[test]
fn v2_header_gives_the_client_address() {
    let rec = Recorder::start(OK);
    let lb = pp_listener(&[server(rec.addr)], "");
    let src: std::net::SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
    let dst: std::net::SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let mut header = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (src, dst),
    )
    .build()
    .unwrap();
    header.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut c = Client::connect(lb.addr());
    c.send(&header);
    assert_eq!(c.response().status, 200);
    let got = rec.next(Duration::from_secs(5)).unwrap();
    assert!(header_lines(&got)
        .iter()
        .any(|l| l == "X-Forwarded-For: 2001:db8::7"));
}

#[test]
fn a_missing_header_closes_the_connection() {
    let rec = Recorder::start(OK);
    let lb = pp_listener(&[server(rec.addr)], "");
    let raw = exchange_raw(lb.addr(), b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    assert!(rec.none_within(Duration::from_millis(200)));
}

/// A backend that reads a PROXY header and one request per connection, records the
/// header's source address, answers and closes.
fn pp_backend() -> (
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<(u8, String)>,
) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let (version, len, source) = loop {
                match c.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
                match ppp::HeaderResult::parse(&buf) {
                    ppp::HeaderResult::V1(Ok(h)) => {
                        break (1, h.header.len(), h.addresses.to_string());
                    }
                    ppp::HeaderResult::V2(Ok(h)) => {
                        break (2, h.len(), format!("{:?}", h.addresses))
                    }
                    _ => continue,
                }
            };
            buf.drain(..len);
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            let _ = tx.send((version, source));
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (addr, rx)
}

#[test]
fn servers_receive_a_header_per_connection() {
    for (version, n) in [("v1", 1u8), ("v2", 2u8)] {
        let (addr, rx) = pp_backend();
        let lb = Ringlb::start(&config(
            &[server(addr)],
            &format!("send_proxy_protocol = \"{version}\""),
            "",
        ));
        for _ in 0..2 {
            assert_eq!(lb.get("/").status, 200);
            let (got, source) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(got, n, "{version}");
            assert!(source.contains("127.0.0.1"), "{version}: {source}");
        }
    }
}

#[test]
fn header_connections_are_not_pooled() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "send_proxy_protocol = \"v1\"",
        "",
    ));
    for _ in 0..3 {
        assert_eq!(lb.get("/").status, 200);
        let got = rec.next(Duration::from_secs(5)).unwrap();
        assert!(got.starts_with(b"PROXY TCP4 127.0.0.1 127.0.0.1 "));
    }
    // One connection per client connection: a client's header is never reused for another.
    assert_eq!(
        rec.connections.load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}
