//! Per-core counters: one flat array of `u64` counters per core, indexed by dense ids.
//!
//! Runs on the owning core; takes no lock. Each core's array is written by that core only, so
//! an increment is a relaxed load and a relaxed store (two plain `mov`s on x86-64), not a
//! locked read-modify-write: with one writer nothing is lost, and a scrape on another core
//! reads each counter whole (an aligned 64-bit load). A scrape sums the cores.
//!
//! The arrays are made of 128-byte aligned lines, so no two cores' counters share a cache line
//! (or the adjacent-line prefetch pair). Only a scrape reads another core's lines: one miss per
//! line per scrape, never per request.
//!
//! The layout ([`Layout`]) is computed once from the config: every label combination has a
//! slot, so the request path does index arithmetic only: no map, no string.

use super::histogram::{self, SLOTS, SUM};
use crate::config::{Config, ListenerId, ServerId, UpstreamId};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters per line: 128 bytes.
const PER_LINE: usize = 16;

#[repr(align(128))]
struct Line([AtomicU64; PER_LINE]);

/// Status classes 1xx..5xx.
pub const CLASSES: usize = 5;
/// 5xx codes with their own slot: 500..=511, then one for any other 5xx.
pub const CODES: usize = 13;

/// Per listener: connections opened, closed; bytes received, sent; TLS handshakes ok, failed.
const L_OPENED: usize = 0;
const L_CLOSED: usize = 1;
const L_RECEIVED: usize = 2;
const L_SENT: usize = 3;
const L_TLS_OK: usize = 4;
/// One counter per [`TlsFailure`].
const L_TLS_FAILED: usize = 5;
/// One counter per [`Refusal`].
const L_REFUSED: usize = L_TLS_FAILED + TLS_FAILURES;
const L_FIELDS: usize = L_REFUSED + REFUSALS;

/// Why a connection was closed at accept, before anything was read from it (the `reason`
/// label, `names::REFUSAL_REASONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `max_connections`.
    MaxConnections,
    /// The client address holds `max_connections_per_ip` on this core.
    PerIp,
    /// A PROXY listener's peer is not in `proxy_protocol_from`.
    ProxyFrom,
}
pub const REFUSALS: usize = 3;
pub const ALL_REFUSALS: [Refusal; REFUSALS] =
    [Refusal::MaxConnections, Refusal::PerIp, Refusal::ProxyFrom];

/// Why a connection to a TLS listener did not complete a handshake (the `reason` label,
/// `names::TLS_FAILURE_REASONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    PlainHttp,
    NotTls,
    Timeout,
    Closed,
    Error,
}
pub const TLS_FAILURES: usize = 5;
pub const ALL_TLS_FAILURES: [TlsFailure; TLS_FAILURES] = [
    TlsFailure::PlainHttp,
    TlsFailure::NotTls,
    TlsFailure::Timeout,
    TlsFailure::Closed,
    TlsFailure::Error,
];
/// Per server: connections opened, reused.
const S_OPENED: usize = 0;
const S_REUSED: usize = 1;
const S_FIELDS: usize = 2;
/// Per upstream: retries, queue entered, queue left, queue timeouts.
const U_RETRIES: usize = 0;
const U_QUEUED: usize = 1;
const U_DEQUEUED: usize = 2;
const U_QUEUE_TIMEOUTS: usize = 3;
const U_FIELDS: usize = 4;

/// Who answered a request, as far as the request-count labels go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Refused before routing, or no route matched.
    None,
    /// Routed, but no server was tried (none usable).
    Upstream(UpstreamId),
    /// The last server tried.
    Server(ServerId),
}

/// Offsets of each counter family in a core's array. Copied into every core (a few words).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub listeners: usize,
    pub upstreams: usize,
    pub servers: usize,
    /// `1 + upstreams + servers`: [`Target`] as an index.
    pub targets: usize,
    requests: usize,
    codes: usize,
    request_hist: usize,
    upstream_hist: usize,
    server_hist: usize,
    listener: usize,
    server: usize,
    upstream: usize,
    pub len: usize,
}

impl Layout {
    pub fn new(config: &Config) -> Layout {
        let listeners = config.listeners.len();
        let upstreams = config.upstreams.len();
        let servers = config.server_count();
        let targets = 1 + upstreams + servers;
        let requests = 0;
        let codes = requests + listeners * targets * CLASSES;
        let request_hist = codes + listeners * targets * CODES;
        let upstream_hist = request_hist + listeners * (1 + upstreams) * SLOTS;
        let server_hist = upstream_hist + upstreams * SLOTS;
        let listener = server_hist + servers * SLOTS;
        let server = listener + listeners * L_FIELDS;
        let upstream = server + servers * S_FIELDS;
        let len = upstream + upstreams * U_FIELDS;
        Layout {
            listeners,
            upstreams,
            servers,
            targets,
            requests,
            codes,
            request_hist,
            upstream_hist,
            server_hist,
            listener,
            server,
            upstream,
            len,
        }
    }

    pub fn target(&self, t: Target) -> usize {
        match t {
            Target::None => 0,
            Target::Upstream(u) => 1 + u.0 as usize,
            Target::Server(s) => 1 + self.upstreams + s.0 as usize,
        }
    }

    /// `class`: 0 for 1xx … 4 for 5xx.
    pub fn requests(&self, l: usize, target: usize, class: usize) -> usize {
        self.requests + (l * self.targets + target) * CLASSES + class
    }

    /// `code`: [`code_index`].
    pub fn codes(&self, l: usize, target: usize, code: usize) -> usize {
        self.codes + (l * self.targets + target) * CODES + code
    }

    /// `upstream`: None for requests that were not routed.
    pub fn request_hist(&self, l: usize, upstream: Option<usize>) -> usize {
        let u = upstream.map_or(0, |u| u + 1);
        self.request_hist + (l * (1 + self.upstreams) + u) * SLOTS
    }

    pub fn upstream_hist(&self, u: usize) -> usize {
        self.upstream_hist + u * SLOTS
    }

    /// The upstream response time of the server with dense id `s`.
    pub fn server_hist(&self, s: usize) -> usize {
        self.server_hist + s * SLOTS
    }

    fn listener_field(&self, l: usize, f: usize) -> usize {
        self.listener + l * L_FIELDS + f
    }

    fn server_field(&self, s: usize, f: usize) -> usize {
        self.server + s * S_FIELDS + f
    }

    fn upstream_field(&self, u: usize, f: usize) -> usize {
        self.upstream + u * U_FIELDS + f
    }

    pub fn conns_opened(&self, l: usize) -> usize {
        self.listener_field(l, L_OPENED)
    }
    pub fn conns_closed(&self, l: usize) -> usize {
        self.listener_field(l, L_CLOSED)
    }
    pub fn received(&self, l: usize) -> usize {
        self.listener_field(l, L_RECEIVED)
    }
    pub fn sent(&self, l: usize) -> usize {
        self.listener_field(l, L_SENT)
    }
    pub fn tls_ok(&self, l: usize) -> usize {
        self.listener_field(l, L_TLS_OK)
    }
    pub fn tls_failed(&self, l: usize, reason: TlsFailure) -> usize {
        self.listener_field(l, L_TLS_FAILED + reason as usize)
    }
    pub fn refused(&self, l: usize, reason: Refusal) -> usize {
        self.listener_field(l, L_REFUSED + reason as usize)
    }
    pub fn upstream_opened(&self, s: usize) -> usize {
        self.server_field(s, S_OPENED)
    }
    pub fn upstream_reused(&self, s: usize) -> usize {
        self.server_field(s, S_REUSED)
    }
    pub fn retries(&self, u: usize) -> usize {
        self.upstream_field(u, U_RETRIES)
    }
    pub fn queued(&self, u: usize) -> usize {
        self.upstream_field(u, U_QUEUED)
    }
    pub fn dequeued(&self, u: usize) -> usize {
        self.upstream_field(u, U_DEQUEUED)
    }
    pub fn queue_timeouts(&self, u: usize) -> usize {
        self.upstream_field(u, U_QUEUE_TIMEOUTS)
    }
}

/// 500..=511 → 0..=11; any other 5xx → 12.
pub fn code_index(status: u16) -> usize {
    match status {
        500..=511 => (status - 500) as usize,
        _ => CODES - 1,
    }
}

/// One finished request, as the counters see it.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub listener: ListenerId,
    pub upstream: Option<UpstreamId>,
    pub target: Target,
    pub status: u16,
    /// Servers tried (0 when none was).
    pub attempts: u32,
    pub duration_ns: u64,
    /// Time to the response head of the server that answered; None when none did.
    pub upstream_ns: Option<u64>,
    pub received: u64,
    pub sent: u64,
}

/// One core's counters. Written only by the owning core (see the module doc); read by scrapes.
pub struct Core {
    layout: Layout,
    enabled: bool,
    lines: Box<[Line]>,
}

impl Core {
    pub fn new(layout: Layout, enabled: bool) -> Core {
        let n = layout.len.div_ceil(PER_LINE);
        let lines = (0..n)
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Core {
            layout,
            enabled,
            lines,
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Single-writer increment: a relaxed load and store, no locked instruction. An index
    /// outside the array (a config whose shape changed) is ignored rather than trusted.
    #[inline]
    fn add(&self, i: usize, n: u64) {
        if let Some(line) = self.lines.get(i / PER_LINE) {
            let c = &line.0[i % PER_LINE];
            c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }

    pub fn get(&self, i: usize) -> u64 {
        self.lines
            .get(i / PER_LINE)
            .map_or(0, |l| l.0[i % PER_LINE].load(Relaxed))
    }

    #[inline]
    fn observe(&self, hist: usize, ns: u64) {
        self.add(hist + histogram::bucket(ns), 1);
        self.add(hist + SUM, ns);
    }

    /// A finished request: its status class (and 5xx code), durations, bytes and retries.
    pub fn request(&self, r: &Request) {
        if !self.enabled {
            return;
        }
        let lay = &self.layout;
        let l = r.listener.0 as usize;
        let t = lay.target(r.target);
        let class = (r.status / 100).clamp(1, 5) as usize - 1;
        self.add(lay.requests(l, t, class), 1);
        if class == 4 {
            self.add(lay.codes(l, t, code_index(r.status)), 1);
        }
        let u = r.upstream.map(|u| u.0 as usize);
        // A tunnel's (101) duration is the session's length, not a latency.
        if r.status != 101 {
            self.observe(lay.request_hist(l, u), r.duration_ns);
        }
        if let (Some(u), Some(ns)) = (u, r.upstream_ns) {
            self.observe(lay.upstream_hist(u), ns);
            if let Target::Server(s) = r.target {
                self.observe(lay.server_hist(s.0 as usize), ns);
            }
        }
        if let (Some(u), true) = (u, r.attempts > 1) {
            self.add(lay.retries(u), u64::from(r.attempts - 1));
        }
        self.add(lay.received(l), r.received);
        self.add(lay.sent(l), r.sent);
    }

    pub fn conn_opened(&self, l: ListenerId) {
        if self.enabled {
            self.add(self.layout.conns_opened(l.0 as usize), 1);
        }
    }

    pub fn conn_closed(&self, l: ListenerId) {
        if self.enabled {
            self.add(self.layout.conns_closed(l.0 as usize), 1);
        }
    }

    /// A connection to `server` was taken from the pool (`reused`) or opened.
    #[inline]
    pub fn upstream_conn(&self, server: ServerId, reused: bool) {
        if self.enabled {
            let s = server.0 as usize;
            let i = if reused {
                self.layout.upstream_reused(s)
            } else {
                self.layout.upstream_opened(s)
            };
            self.add(i, 1);
        }
    }

    /// For the TLS acceptor: one call per connection to the TLS listener `listener`, once its
    /// handshake completed or failed.
    pub fn tls_handshake(&self, listener: ListenerId, result: Result<(), TlsFailure>) {
        if self.enabled {
            let l = listener.0 as usize;
            let i = match result {
                Ok(()) => self.layout.tls_ok(l),
                Err(reason) => self.layout.tls_failed(l, reason),
            };
            self.add(i, 1);
        }
    }

    /// A connection to `listener` closed at accept for `reason`.
    pub fn conn_refused(&self, listener: ListenerId, reason: Refusal) {
        if self.enabled {
            self.add(self.layout.refused(listener.0 as usize, reason), 1);
        }
    }

    /// For the max_conns queue: a request started waiting for a slot of `upstream`.
    pub fn queue_enter(&self, upstream: UpstreamId) {
        if self.enabled {
            self.add(self.layout.queued(upstream.0 as usize), 1);
        }
    }

    /// The request stopped waiting (got a slot, or timed out: then also [`Core::queue_timeout`]).
    pub fn queue_leave(&self, upstream: UpstreamId) {
        if self.enabled {
            self.add(self.layout.dequeued(upstream.0 as usize), 1);
        }
    }

    pub fn queue_timeout(&self, upstream: UpstreamId) {
        if self.enabled {
            self.add(self.layout.queue_timeouts(upstream.0 as usize), 1);
        }
    }
}

/// Every counter summed over `cores`: what one scrape reads.
pub fn sum<'a>(len: usize, cores: impl Iterator<Item = &'a Core>) -> Vec<u64> {
    let mut total = vec![0u64; len];
    for c in cores {
        for (i, t) in total.iter_mut().enumerate() {
            *t = t.wrapping_add(c.get(i));
        }
    }
    total
}

/// The histogram at `at` in summed counters.
pub fn hist(total: &[u64], at: usize) -> histogram::Snapshot {
    histogram::Snapshot::from_slots(&total[at..at + SLOTS])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
[[listeners]]
name = "a"
listen = "127.0.0.1:1"
[[listeners]]
name = "b"
listen = "127.0.0.1:2"
[[routes]]
listener = "a"
upstream = "x"
[[routes]]
listener = "b"
upstream = "y"
[upstreams.x]
[[upstreams.x.servers]]
addr = "127.0.0.1:9001"
[[upstreams.x.servers]]
addr = "127.0.0.1:9002"
[upstreams.y]
[[upstreams.y.servers]]
addr = "127.0.0.1:9003"
"#,
        )
        .unwrap()
    }

    #[test]
    fn every_slot_is_distinct_and_within_len() {
        let lay = Layout::new(&config());
        let mut seen = std::collections::HashSet::new();
        let mut claim = |i: usize| {
            assert!(i < lay.len, "{i} >= {}", lay.len);
            assert!(seen.insert(i), "slot {i} used twice");
        };
        for l in 0..lay.listeners {
            for t in 0..lay.targets {
                (0..CLASSES).for_each(|c| claim(lay.requests(l, t, c)));
                (0..CODES).for_each(|c| claim(lay.codes(l, t, c)));
            }
            for u in [None, Some(0), Some(1)] {
                (0..SLOTS).for_each(|k| claim(lay.request_hist(l, u) + k));
            }
            for f in [
                lay.conns_opened(l),
                lay.conns_closed(l),
                lay.received(l),
                lay.sent(l),
                lay.tls_ok(l),
            ] {
                claim(f);
            }
            for r in ALL_TLS_FAILURES {
                claim(lay.tls_failed(l, r));
            }
            for r in ALL_REFUSALS {
                claim(lay.refused(l, r));
            }
        }
        for u in 0..lay.upstreams {
            (0..SLOTS).for_each(|k| claim(lay.upstream_hist(u) + k));
            for f in [
                lay.retries(u),
                lay.queued(u),
                lay.dequeued(u),
                lay.queue_timeouts(u),
            ] {
                claim(f);
            }
        }
        for s in 0..lay.servers {
            (0..SLOTS).for_each(|k| claim(lay.server_hist(s) + k));
            claim(lay.upstream_opened(s));
            claim(lay.upstream_reused(s));
        }
        assert_eq!(seen.len(), lay.len);
    }

    #[test]
    fn a_request_lands_in_its_slots_and_cores_sum() {
        let lay = Layout::new(&config());
        let cores = [Core::new(lay, true), Core::new(lay, true)];
        let r = Request {
            listener: ListenerId(0),
            upstream: Some(UpstreamId(0)),
            target: Target::Server(ServerId(1)),
            status: 502,
            attempts: 2,
            duration_ns: 3_000_000,
            upstream_ns: Some(700_000),
            received: 100,
            sent: 50,
        };
        cores[0].request(&r);
        cores[1].request(&r);
        cores[1].upstream_conn(ServerId(1), true);
        let total = sum(lay.len, cores.iter());
        let t = lay.target(Target::Server(ServerId(1)));
        assert_eq!(total[lay.requests(0, t, 4)], 2);
        assert_eq!(total[lay.codes(0, t, 2)], 2);
        assert_eq!(total[lay.retries(0)], 2);
        assert_eq!(total[lay.received(0)], 200);
        assert_eq!(total[lay.sent(0)], 100);
        assert_eq!(total[lay.upstream_reused(1)], 1);
        let h = hist(&total, lay.request_hist(0, Some(0)));
        assert_eq!((h.count(), h.sum_ns, h.buckets[3]), (2, 6_000_000, 2));
        let h = hist(&total, lay.upstream_hist(0));
        assert_eq!((h.count(), h.buckets[1]), (2, 2));
        let h = hist(&total, lay.server_hist(1));
        assert_eq!((h.count(), h.buckets[1]), (2, 2));
        assert_eq!(hist(&total, lay.server_hist(0)).count(), 0);
        assert_eq!(total.iter().filter(|&&v| v != 0).count(), 12);
    }

    #[test]
    fn disabled_counts_nothing() {
        let lay = Layout::new(&config());
        let c = Core::new(lay, false);
        c.conn_opened(ListenerId(0));
        c.upstream_conn(ServerId(0), false);
        c.request(&Request {
            listener: ListenerId(0),
            upstream: None,
            target: Target::None,
            status: 404,
            attempts: 0,
            duration_ns: 1,
            upstream_ns: None,
            received: 1,
            sent: 1,
        });
        assert!(sum(lay.len, [&c].into_iter()).iter().all(|&v| v == 0));
    }

    #[test]
    fn codes() {
        assert_eq!(code_index(500), 0);
        assert_eq!(code_index(511), 11);
        assert_eq!(code_index(599), 12);
        assert_eq!(code_index(520), 12);
    }
}
