//! Per-request cost of metrics and the access log.
//!
//! - `counter/*`: one increment of a core-owned counter: relaxed load + store (what
//!   `metrics::Core` does: one writer per core) against `fetch_add` (a locked instruction).
//! - `request/counters`: `Core::request` for one finished request (class, 5xx code, two
//!   histograms, bytes).
//! - `request/exchange`: what the proxy adds per request with the access log off: `begin`,
//!   `attempt`, `status`, `finish`, `Core::request`.
//! - `request/log_*`: the same plus the access log line, written to /dev/null every 64 KiB.
//!
//! `cargo bench --bench metrics`.

use criterion::{criterion_group, criterion_main, Criterion};
use ringlb::accesslog::Exchange;
use ringlb::config::{Config, ListenerId, ServerId, UpstreamId};
use ringlb::context::{Current, Shared, Worker};
use ringlb::http1::{self, RequestHead};
use ringlb::metrics::{Core, Layout, Request, Target};
use ringlb::state::Life;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

const BASE: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:1"
[[routes]]
listener = "http"
upstream = "app"
[upstreams.app]
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
[[upstreams.app.servers]]
addr = "127.0.0.1:9002"
[[upstreams.app.servers]]
addr = "127.0.0.1:9003"
"#;

const REQUEST: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: */*\r\nReferer: https://example.com/\r\n\
Cookie: session=abcdef0123456789\r\n\r\n";

fn counter(c: &mut Criterion) {
    let a = AtomicU64::new(0);
    c.bench_function("counter/load_store", |b| {
        b.iter(|| {
            let a = black_box(&a);
            a.store(a.load(Relaxed).wrapping_add(1), Relaxed)
        })
    });
    c.bench_function("counter/fetch_add", |b| {
        b.iter(|| black_box(&a).fetch_add(1, Relaxed))
    });
}

fn worker(extra: &str) -> Worker {
    let config = Config::parse(&format!("{BASE}{extra}")).expect("config");
    let life = Arc::new(Life::new(1, std::sync::mpsc::channel().0));
    // No sockets: nothing accepts here.
    let listening = config
        .listeners
        .iter()
        .map(|_| Arc::new(ringlb::context::Sockets::new(Vec::new())))
        .collect();
    let shared = Arc::new(Shared::new(config, 1, life, listening).expect("shared"));
    let current = Arc::new(Current::new(shared.clone()));
    Worker::new(0, shared, current)
}

fn request(c: &mut Criterion) {
    let config = Config::parse(BASE).unwrap();
    let core = Core::new(Layout::new(&config), true);
    let mut n = 0u64;
    c.bench_function("request/counters", |b| {
        b.iter(|| {
            n += 1;
            core.request(black_box(&Request {
                listener: ListenerId(0),
                upstream: Some(UpstreamId(0)),
                target: Target::Server(ServerId((n % 3) as u32)),
                status: if n % 50 == 0 { 502 } else { 200 },
                attempts: 1,
                duration_ns: 300_000 + (n % 7) * 100_000,
                upstream_ns: Some(250_000),
                received: 180,
                sent: 1200,
            }))
        })
    });

    let mut head = RequestHead::new();
    http1::parse_request(REQUEST, &http1::Limits::default(), &mut head).unwrap();
    for (name, extra) in [
        ("request/exchange", ""),
        (
            "request/log_common",
            "[access_log]\nformat = \"common\"\npath = \"/dev/null\"\n",
        ),
        (
            "request/log_json",
            "[access_log]\nformat = \"json\"\npath = \"/dev/null\"\n",
        ),
    ] {
        let w = worker(extra);
        let peer = "10.1.2.3:40000".parse().unwrap();
        let mut x = Exchange::new(&w.access_log, &w.metrics, ListenerId(0), peer);
        let id_header = w.shared.config.access_log.request_id_header.clone();
        let mut total = 0u64;
        c.bench_function(name, |b| {
            b.iter(|| {
                x.begin(&w.access_log, &id_header, REQUEST, &head);
                x.routed(UpstreamId(0));
                x.attempt(UpstreamId(0), ServerId(1));
                x.upstream_time(250_000);
                x.status(200);
                total += 1380;
                let r = x.finish(total / 1380 * 180, total);
                w.metrics.request(&r);
                w.access_log.write(&x, &w.shared.config, &w.shared.metrics);
            })
        });
    }
}

criterion_group!(benches, counter, request);
criterion_main!(benches);
