//! Prometheus metrics: per-core counters summed when scraped.
//!
//! Layout:
//! - `names.rs`: every metric name, type and help text, defined once.
//! - `core.rs`: one core's counters (single writer, no locked instruction) and their layout.
//! - `histogram.rs`: the fixed latency buckets.
//! - `carry.rs`: counts of earlier configuration generations, added at scrape time so that
//!   counters never go back across a reload.
//! - `render.rs`: the text exposition format 0.0.4, built from the summed counters, the shared
//!   server-state table and the registry's control-plane counters ([`Scrape`]).
//!
//! Hot-path writes go to the calling core's own [`Core`]. Rare events that happen off the
//! request path and not on any particular core (health checks, reloads, access log failures)
//! are shared atomics updated with `fetch_add`, here in the [`Registry`].
//!
//! For other modules (the health checker, TLS, the queue, reload):
//! - `shared.metrics.health_check(server, passed, took)` after each active check;
//! - `w.metrics.tls_handshake(listener, result)` after each TLS handshake on a core;
//! - `w.metrics.queue_enter/queue_leave/queue_timeout(upstream)` around a max_conns wait;
//! - `shared.metrics.config_reload(ok)` after each reload attempt.
//!
//! Uses `config`, `http1` and `state`.

mod carry;
pub mod core;
pub mod histogram;
pub mod names;
mod render;
#[cfg(test)]
mod tests;

pub use self::core::{Core, Layout, Refusal, Request, Target, TlsFailure};
pub use render::{render, Scrape};

use crate::config::{Config, ServerId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One certificate ringlb presents, with when it expires: a sample of
/// [`names::TLS_CERTIFICATE_EXPIRATION`]. `tls` builds these when it loads a generation's
/// certificates (a reload reads the files again, so renewed certificates show at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateExpiry {
    /// The TLS listener presenting it; empty for an upstream's client certificate.
    pub listener: String,
    /// The upstream presenting it as client certificate; empty for a listener's.
    pub upstream: String,
    /// The certificate file, as the config names it.
    pub file: String,
    /// The leaf's subject common name; empty when it has none.
    pub subject: String,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
}

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Registry {
    layout: Layout,
    enabled: bool,
    /// The per-core arrays and the health counts this generation's traffic writes.
    live: Arc<carry::Live>,
    /// Upstream of each server (by `ServerId`), for per-upstream health histograms.
    server_upstream: Box<[u32]>,
    /// What the generations before this one counted (None for the first).
    carried: Option<carry::Carried>,
    /// Reloads succeeded, failed.
    reloads: [AtomicU64; 2],
    last_reload_ok: AtomicBool,
    /// Unix time (ms) of the last successful config load (the start, then each reload).
    last_load_ms: AtomicU64,
    log_errors: AtomicU64,
}

impl Registry {
    /// Counters for `workers` cores, shaped by `config`.
    pub fn new(config: &Config, workers: usize) -> Registry {
        let layout = Layout::new(config);
        let enabled = config.metrics.enabled;
        let server_upstream = config
            .upstreams
            .iter()
            .enumerate()
            .flat_map(|(u, up)| up.servers.iter().map(move |_| u as u32))
            .collect();
        let live = carry::Live {
            cores: (0..workers)
                .map(|_| Arc::new(Core::new(layout, enabled)))
                .collect(),
            health: (0..layout.servers).map(|_| Default::default()).collect(),
            health_hist: (0..layout.upstreams * histogram::SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        };
        Registry {
            layout,
            enabled,
            live: Arc::new(live),
            server_upstream,
            carried: None,
            reloads: Default::default(),
            last_reload_ok: AtomicBool::new(true),
            last_load_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            log_errors: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The registry of the generation after `old`, for `config` (`old_config` is `old`'s): it
    /// counts from zero, and its scrapes add what `old` and the generations before it counted
    /// for every series that stays (see `carry.rs`). The process counters carry over too.
    pub fn next(config: &Config, workers: usize, old: &Registry, old_config: &Config) -> Registry {
        let mut reg = Registry::new(config, workers);
        reg.carry_process_counters(old);
        reg.carried = Some(carry::Carried::new(old, old_config, config, &reg.layout));
        reg
    }

    /// The counters of core `index`, for its `Worker`.
    pub fn core(&self, index: usize) -> Arc<Core> {
        self.live.cores[index].clone()
    }

    pub fn cores(&self) -> impl Iterator<Item = &Core> {
        self.live.cores.iter().map(|c| &**c)
    }

    /// Every counter slot summed over the cores, plus the counts carried from earlier
    /// generations: what a scrape renders. Slot order: `carry.rs`.
    pub(crate) fn totals(&self) -> Vec<u64> {
        let mut total = self.live.sum(&self.layout);
        if let Some(c) = &self.carried {
            for (t, old) in total.iter_mut().zip(c.counts(&self.layout)) {
                *t = t.wrapping_add(old);
            }
        }
        total
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// For the active health checker: one call per check of `server`, with its result and
    /// duration. Any thread; a shared `fetch_add` (checks are rare).
    pub fn health_check(&self, server: ServerId, passed: bool, took: Duration) {
        let s = server.0 as usize;
        if let Some(c) = self.live.health.get(s) {
            c[usize::from(!passed)].fetch_add(1, Relaxed);
        }
        if let Some(&u) = self.server_upstream.get(s) {
            let at = u as usize * histogram::SLOTS;
            let ns = took.as_nanos() as u64;
            if let Some(b) = self.live.health_hist.get(at + histogram::bucket(ns)) {
                b.fetch_add(1, Relaxed);
            }
            if let Some(sum) = self.live.health_hist.get(at + histogram::SUM) {
                sum.fetch_add(ns, Relaxed);
            }
        }
    }

    /// For the proxy: `server` sent an invalid response. Any core; a shared `fetch_add`
    /// (a server that misbehaves is rare, and counting it must not depend on the core).
    pub fn invalid_response(&self, server: ServerId) {
        if let Some(c) = self.live.health.get(server.0 as usize) {
            c[carry::INVALID].fetch_add(1, Relaxed);
        }
    }

    /// The invalid responses of `server`, in `totals`.
    pub(crate) fn invalid_responses(&self, totals: &[u64], server: ServerId) -> u64 {
        let slot = carry::invalid(&self.layout, server.0 as usize);
        totals.get(slot).copied().unwrap_or(0)
    }

    /// For the reload path: one call per reload attempt.
    pub fn config_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Relaxed);
        self.last_reload_ok.store(ok, Relaxed);
        if ok {
            self.last_load_ms.store(unix_ms(SystemTime::now()), Relaxed);
        }
    }

    /// Takes over the counts that belong to the process rather than to one configuration
    /// (reloads and their outcome, access log errors) from the registry this one replaces.
    pub fn carry_process_counters(&self, old: &Registry) {
        for (new, old) in self.reloads.iter().zip(old.reloads.iter()) {
            new.store(old.load(Relaxed), Relaxed);
        }
        self.last_reload_ok
            .store(old.last_reload_ok.load(Relaxed), Relaxed);
        self.last_load_ms
            .store(old.last_load_ms.load(Relaxed), Relaxed);
        self.log_errors.store(old.log_errors.load(Relaxed), Relaxed);
    }

    /// An access log buffer could not be written and was dropped.
    pub fn access_log_error(&self) {
        self.log_errors.fetch_add(1, Relaxed);
    }

    /// Checks of `server` passed and failed, in `totals`.
    pub(crate) fn health_counts(&self, totals: &[u64], server: ServerId) -> [u64; 2] {
        let s = server.0 as usize;
        [false, true].map(|failed| {
            totals
                .get(carry::health(&self.layout, s, failed))
                .copied()
                .unwrap_or(0)
        })
    }

    /// The health check histogram of `upstream`, in `totals`.
    pub(crate) fn health_hist(&self, totals: &[u64], upstream: usize) -> histogram::Snapshot {
        let at = carry::health_hist(&self.layout, upstream);
        match totals.get(at..at + histogram::SLOTS) {
            Some(slots) => histogram::Snapshot::from_slots(slots),
            None => histogram::Snapshot::from_slots(&[0; histogram::SLOTS]),
        }
    }

    pub(crate) fn reloads(&self) -> [u64; 2] {
        [self.reloads[0].load(Relaxed), self.reloads[1].load(Relaxed)]
    }

    pub(crate) fn last_reload_ok(&self) -> bool {
        self.last_reload_ok.load(Relaxed)
    }

    pub(crate) fn last_load_ms(&self) -> u64 {
        self.last_load_ms.load(Relaxed)
    }

    pub(crate) fn log_errors(&self) -> u64 {
        self.log_errors.load(Relaxed)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
