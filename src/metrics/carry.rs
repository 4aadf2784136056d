//! Counters that survive a reload. A reload builds a new [`Registry`](super::Registry) shaped
//! by the new config; its counters start at zero, so each scrape adds what the generations
//! before it counted, for every series that exists in both (same listener, upstream and server
//! names). Series that disappear are dropped; gauges are computed as before.
//!
//! Nothing here runs on the request path: the slot map is built once per reload, and the sums
//! are made when a scrape asks. A core still writes only its own generation's array.
//!
//! Connections that have not switched yet keep writing the previous generation's counters, so
//! those are read live ([`Carried::prev`]), not copied at the reload. Generations older than
//! that are folded into a fixed base at the next reload: a connection that serves no request
//! across two reloads (a long tunnel) may have its last bytes left out, but no counter ever
//! goes back.
//!
//! Slots: a registry's whole counter set is its core layout (`Layout::len` slots), then per
//! server the health checks passed and failed and the invalid responses, then per upstream a
//! health check histogram.

use super::core::{Core, Layout, Target, ALL_REFUSALS, ALL_TLS_FAILURES, CLASSES, CODES};
use super::histogram::SLOTS;
use crate::config::{Config, ServerId, UpstreamId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// A slot with no counterpart in the previous generation.
const NONE: u32 = u32::MAX;

/// What one generation's traffic writes: each core's array, and the shared health counts.
pub(crate) struct Live {
    pub(crate) cores: Box<[Arc<Core>]>,
    /// Per server: checks passed, failed; invalid responses.
    pub(crate) health: Box<[[AtomicU64; PER_SERVER]]>,
    /// Per upstream: a histogram of check durations.
    pub(crate) health_hist: Box<[AtomicU64]>,
}

impl Live {
    /// Every slot of this generation, summed over the cores (see the module doc for the order).
    pub(crate) fn sum(&self, lay: &Layout) -> Vec<u64> {
        let mut total = super::core::sum(lay.len, self.cores.iter().map(|c| &**c));
        total.reserve(len(lay) - lay.len);
        total.extend(self.health.iter().flatten().map(|c| c.load(Relaxed)));
        total.extend(self.health_hist.iter().map(|c| c.load(Relaxed)));
        total
    }
}

/// Shared counters per server: health checks passed, failed; invalid responses.
pub(crate) const PER_SERVER: usize = 3;
/// Index of the invalid responses among a server's shared counters.
pub(crate) const INVALID: usize = 2;

/// Slots in a registry's whole counter set.
pub(crate) fn len(lay: &Layout) -> usize {
    lay.len + lay.servers * PER_SERVER + lay.upstreams * SLOTS
}

/// Slot `k` of server `s`'s shared counters.
fn per_server(lay: &Layout, s: usize, k: usize) -> usize {
    lay.len + s * PER_SERVER + k
}

/// Slot of the health checks of server `s` that passed (`failed` false) or failed.
pub(crate) fn health(lay: &Layout, s: usize, failed: bool) -> usize {
    per_server(lay, s, usize::from(failed))
}

/// Slot of the invalid responses of server `s`.
pub(crate) fn invalid(lay: &Layout, s: usize) -> usize {
    per_server(lay, s, INVALID)
}

/// First slot of the health check histogram of upstream `u`.
pub(crate) fn health_hist(lay: &Layout, u: usize) -> usize {
    lay.len + lay.servers * PER_SERVER + u * SLOTS
}

/// The counts of earlier generations, for a registry that replaced another.
pub(crate) struct Carried {
    /// The previous generation's live counters, and their layout.
    prev: Arc<Live>,
    prev_layout: Layout,
    /// For each slot of this generation: the previous generation's slot, or [`NONE`].
    map: Box<[u32]>,
    /// Everything older than the previous generation, already in this layout.
    base: Box<[u64]>,
}

impl Carried {
    /// Carries `old` (its live counters and its own carried counts) into `new_config`'s
    /// layout. Runs once per reload, off the cores.
    pub(crate) fn new(
        old: &super::Registry,
        old_config: &Config,
        new_config: &Config,
        new_layout: &Layout,
    ) -> Carried {
        let map = slot_map(old_config, old.layout(), new_config, new_layout);
        let older = old.carried.as_ref().map(|c| c.counts(old.layout()));
        let base = map
            .iter()
            .map(|&j| {
                older
                    .as_ref()
                    .and_then(|o| o.get(j as usize))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        Carried {
            prev: old.live.clone(),
            prev_layout: *old.layout(),
            map,
            base,
        }
    }

    /// What earlier generations counted, in this generation's layout of `lay`.
    pub(crate) fn counts(&self, lay: &Layout) -> Vec<u64> {
        let prev = self.prev.sum(&self.prev_layout);
        (0..len(lay))
            .map(|i| {
                let base = self.base.get(i).copied().unwrap_or(0);
                let from_prev = self
                    .map
                    .get(i)
                    .and_then(|&j| prev.get(j as usize))
                    .copied()
                    .unwrap_or(0);
                base.wrapping_add(from_prev)
            })
            .collect()
    }
}

/// Old ids by new id, matched by name: listeners, upstreams, servers (upstream and server
/// name: a server's identity across reloads).
struct Ids {
    listeners: Vec<Option<usize>>,
    upstreams: Vec<Option<usize>>,
    servers: Vec<Option<usize>>,
}

impl Ids {
    fn new(old: &Config, new: &Config) -> Ids {
        let old_servers: HashMap<(&str, &str), ServerId> = old
            .servers()
            .map(|(u, s)| ((u.name.as_str(), s.name.as_str()), s.id))
            .collect();
        let mut servers = vec![None; new.server_count()];
        for (u, s) in new.servers() {
            if let Some(slot) = servers.get_mut(s.id.0 as usize) {
                *slot = old_servers
                    .get(&(u.name.as_str(), s.name.as_str()))
                    .map(|id| id.0 as usize);
            }
        }
        Ids {
            listeners: new
                .listeners
                .iter()
                .map(|l| old.listeners.iter().position(|o| o.name == l.name))
                .collect(),
            upstreams: new
                .upstreams
                .iter()
                .map(|u| old.upstreams.iter().position(|o| o.name == u.name))
                .collect(),
            servers,
        }
    }

    /// The old target index of new target index `t`.
    fn target(&self, new: &Layout, old: &Layout, t: usize) -> Option<usize> {
        let u = t.checked_sub(1)?;
        let target = match u.checked_sub(new.upstreams) {
            None => Target::Upstream(UpstreamId(*self.upstreams.get(u)?.as_ref()? as u32)),
            Some(s) => Target::Server(ServerId(*self.servers.get(s)?.as_ref()? as u32)),
        };
        Some(old.target(target))
    }
}

/// For each slot of `new`, the slot of `old` counting the same series, or [`NONE`].
fn slot_map(old_config: &Config, old: &Layout, new_config: &Config, new: &Layout) -> Box<[u32]> {
    let ids = Ids::new(old_config, new_config);
    let mut map = vec![NONE; len(new)];
    let mut set = |n: usize, o: Option<usize>| {
        if let (Some(slot), Some(o)) = (map.get_mut(n), o.and_then(|o| u32::try_from(o).ok())) {
            *slot = o;
        }
    };
    for l in 0..new.listeners {
        let ol = ids.listeners.get(l).copied().flatten();
        for t in 0..new.targets {
            // Target::None is index 0 in both layouts.
            let ot = if t == 0 {
                Some(0)
            } else {
                ids.target(new, old, t)
            };
            let both = ol.zip(ot);
            for c in 0..CLASSES {
                set(
                    new.requests(l, t, c),
                    both.map(|(ol, ot)| old.requests(ol, ot, c)),
                );
            }
            for c in 0..CODES {
                set(
                    new.codes(l, t, c),
                    both.map(|(ol, ot)| old.codes(ol, ot, c)),
                );
            }
        }
        let routed = (0..new.upstreams).map(|u| (Some(u), ids.upstreams.get(u).copied().flatten()));
        for (u, ou) in std::iter::once((None, None)).chain(routed) {
            // Unrouted requests (None) always have a counterpart; a routed one only when its
            // upstream stays.
            let old_u = match u {
                None => Some(None),
                Some(_) => ou.map(Some),
            };
            for k in 0..SLOTS {
                let o = ol.zip(old_u).map(|(ol, ou)| old.request_hist(ol, ou) + k);
                set(new.request_hist(l, u) + k, o);
            }
        }
        let fields: [fn(&Layout, usize) -> usize; 5] = [
            Layout::conns_opened,
            Layout::conns_closed,
            Layout::received,
            Layout::sent,
            Layout::tls_ok,
        ];
        for f in fields {
            set(f(new, l), ol.map(|ol| f(old, ol)));
        }
        for reason in ALL_TLS_FAILURES {
            let o = ol.map(|ol| old.tls_failed(ol, reason));
            set(new.tls_failed(l, reason), o);
        }
        for reason in ALL_REFUSALS {
            set(new.refused(l, reason), ol.map(|ol| old.refused(ol, reason)));
        }
    }
    for u in 0..new.upstreams {
        let ou = ids.upstreams.get(u).copied().flatten();
        for k in 0..SLOTS {
            set(
                new.upstream_hist(u) + k,
                ou.map(|ou| old.upstream_hist(ou) + k),
            );
            set(
                health_hist(new, u) + k,
                ou.map(|ou| health_hist(old, ou) + k),
            );
        }
        let fields: [fn(&Layout, usize) -> usize; 4] = [
            Layout::retries,
            Layout::queued,
            Layout::dequeued,
            Layout::queue_timeouts,
        ];
        for f in fields {
            set(f(new, u), ou.map(|ou| f(old, ou)));
        }
    }
    for s in 0..new.servers {
        let os = ids.servers.get(s).copied().flatten();
        let fields: [fn(&Layout, usize) -> usize; 2] =
            [Layout::upstream_opened, Layout::upstream_reused];
        for f in fields {
            set(f(new, s), os.map(|os| f(old, os)));
        }
        for k in 0..SLOTS {
            set(new.server_hist(s) + k, os.map(|os| old.server_hist(os) + k));
        }
        for k in 0..PER_SERVER {
            set(per_server(new, s, k), os.map(|os| per_server(old, os, k)));
        }
    }
    map.into_boxed_slice()
}
