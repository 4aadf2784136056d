//! Prometheus metrics: per-core counters summed when scraped.
//!
//! Layout:
//! - `names.rs`: every metric name, type and help text, defined once.
//! - `core.rs`: one core's counters (single writer, no locked instruction) and their layout.
//! - `histogram.rs`: the fixed latency buckets.
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

pub mod core;
pub mod histogram;
pub mod names;
mod render;
#[cfg(test)]
mod tests;

pub use self::core::{Core, Layout, Request, Target, TlsFailure};
pub use render::{render, Scrape};

use crate::config::{Config, ServerId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Registry {
    layout: Layout,
    enabled: bool,
    cores: Box<[Arc<Core>]>,
    /// Upstream of each server (by `ServerId`), for per-upstream health histograms.
    server_upstream: Box<[u32]>,
    /// Per server: checks passed, failed.
    health: Box<[[AtomicU64; 2]]>,
    /// Per upstream: a histogram of check durations (see `histogram.rs`).
    health_hist: Box<[AtomicU64]>,
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
        Registry {
            layout,
            enabled,
            cores: (0..workers)
                .map(|_| Arc::new(Core::new(layout, enabled)))
                .collect(),
            server_upstream,
            health: (0..layout.servers).map(|_| Default::default()).collect(),
            health_hist: (0..layout.upstreams * histogram::SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            reloads: Default::default(),
            last_reload_ok: AtomicBool::new(true),
            last_load_ms: AtomicU64::new(unix_ms(SystemTime::now())),
            log_errors: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counters of core `index`, for its `Worker`.
    pub fn core(&self, index: usize) -> Arc<Core> {
        self.cores[index].clone()
    }

    pub fn cores(&self) -> impl Iterator<Item = &Core> {
        self.cores.iter().map(|c| &**c)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// For the active health checker: one call per check of `server`, with its result and
    /// duration. Any thread; a shared `fetch_add` (checks are rare).
    pub fn health_check(&self, server: ServerId, passed: bool, took: Duration) {
        let s = server.0 as usize;
        if let Some(c) = self.health.get(s) {
            c[usize::from(!passed)].fetch_add(1, Relaxed);
        }
        if let Some(&u) = self.server_upstream.get(s) {
            let at = u as usize * histogram::SLOTS;
            let ns = took.as_nanos() as u64;
            if let Some(b) = self.health_hist.get(at + histogram::bucket(ns)) {
                b.fetch_add(1, Relaxed);
            }
            if let Some(sum) = self.health_hist.get(at + histogram::SUM) {
                sum.fetch_add(ns, Relaxed);
            }
        }
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
    /// (reloads, access log errors) from the registry this one replaces.
    pub fn carry_process_counters(&self, old: &Registry) {
        for (new, old) in self.reloads.iter().zip(old.reloads.iter()) {
            new.store(old.load(Relaxed), Relaxed);
        }
        self.log_errors.store(old.log_errors.load(Relaxed), Relaxed);
    }

    /// An access log buffer could not be written and was dropped.
    pub fn access_log_error(&self) {
        self.log_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn health_counts(&self, server: ServerId) -> [u64; 2] {
        self.health
            .get(server.0 as usize)
            .map_or([0, 0], |c| [c[0].load(Relaxed), c[1].load(Relaxed)])
    }

    pub(crate) fn health_hist(&self, upstream: usize) -> histogram::Snapshot {
        let at = upstream * histogram::SLOTS;
        let slots: Vec<u64> = self
            .health_hist
            .get(at..at + histogram::SLOTS)
            .map(|s| s.iter().map(|a| a.load(Relaxed)).collect())
            .unwrap_or_else(|| vec![0; histogram::SLOTS]);
        histogram::Snapshot::from_slots(&slots)
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
