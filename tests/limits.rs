//! Limits and queueing: max_conns across cores, the bounded queue, listener max_connections.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// A backend that answers each request after `delay` and records its peak concurrency.
struct Gauge {
    addr: SocketAddr,
    peak: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

fn gauge_backend(delay: Duration) -> Gauge {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (n, p, s) = (now.clone(), peak.clone(), served.clone());
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let (n, p, s) = (n.clone(), p.clone(), s.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&tmp[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(cur, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    n.fetch_sub(1, Ordering::SeqCst);
                    s.fetch_add(1, Ordering::SeqCst);
                    if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Gauge { addr, peak, served }
}

/// `n` concurrent clients each sending one GET; their (status, Retry-After) in order.
fn burst(lb: &Ringlb, n: usize) -> Vec<(u16, Option<String>)> {
    let addr = lb.addr();
    let threads: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i as u64 * 5));
                let mut c = Client::connect(addr);
                c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                let r = c.response();
                (r.status, r.header("retry-after").map(str::to_string))
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn max_conns_is_never_exceeded_and_queued_requests_succeed() {
    let g = gauge_backend(Duration::from_millis(100));
    let lb = Ringlb::start(
        &config(
            &[format!("{}\nmax_conns = 2", server(g.addr))],
            "queue = { size = 100, timeout = \"10s\" }",
            "",
        )
        .replace("workers = 1", "workers = 2"),
    );
    let results = burst(&lb, 12);
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    assert_eq!(g.served.load(Ordering::SeqCst), 12);
    assert_eq!(g.peak.load(Ordering::SeqCst), 2);
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let g = gauge_backend(Duration::from_millis(400));
    let lb = Ringlb::start(&config(
        &[format!("{}\nmax_conns = 1", server(g.addr))],
        "queue = { size = 2, timeout = \"10s\" }",
        "",
    ));
    let results = burst(&lb, 6);
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s == 503).collect();
    // One in flight plus two queued are served; the rest are refused at once.
    assert_eq!(ok, 3, "{results:?}");
    assert_eq!(refused.len(), 3, "{results:?}");
    assert!(refused.iter().all(|(_, ra)| ra.as_deref() == Some("1")));
    assert_eq!(g.peak.load(Ordering::SeqCst), 1);
}

#[test]
fn a_queue_timeout_answers_503() {
    let g = gauge_backend(Duration::from_millis(1500));
    let lb = Ringlb::start(&config(
        &[format!("{}\nmax_conns = 1", server(g.addr))],
        "queue = { size = 10, timeout = \"200ms\" }",
        "",
    ));
    let addr = lb.addr();
    let first = std::thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        c.response().status
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let second = lb.get("/");
    assert_eq!(second.status, 503);
    assert!(started.elapsed() < Duration::from_millis(1200));
    assert_eq!(first.join().unwrap(), 200);
}

#[test]
fn without_a_queue_a_busy_upstream_is_503() {
    let g = gauge_backend(Duration::from_millis(500));
    let lb = Ringlb::start(&config(
        &[format!("{}\nmax_conns = 1", server(g.addr))],
        "",
        "",
    ));
    let results = burst(&lb, 3);
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 503).count(),
        2,
        "{results:?}"
    );
}

#[test]
fn listener_max_connections_closes_the_excess() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", "").replacen(
        "listen = \"127.0.0.1:0\"\n[[routes]]",
        "listen = \"127.0.0.1:0\"\nmax_connections = 2\n[[routes]]",
        1,
    ));
    let mut a = Client::connect(lb.addr());
    let mut b2 = Client::connect(lb.addr());
    for c in [&mut a, &mut b2] {
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(c.response().status, 200);
    }
    let mut third = Client::connect(lb.addr());
    assert!(
        third.closed_within(Duration::from_secs(2)),
        "third connection was kept"
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(100));
    let mut fourth = Client::connect(lb.addr());
    fourth.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(fourth.response().status, 200);
}
