//! What service discovery shares with the rest of the process: the counts of resolutions per
//! entry (for `/metrics`), and the messages that change the server set (a resolver answer,
//! an admin API change), which the control thread turns into a new generation.
//!
//! The counts outlive configuration generations (they are in [`super::Life`]); an entry is
//! known by its upstream and entry name. Written by the control thread and the resolver
//! thread, read by scrapes; the list is replaced whole (arc-swap) when an entry first appears,
//! the counts are atomics. Nothing here is on the request path.

use crate::config::{Entry, Source, Target};
use crate::engine::Signal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

/// How one resolution of a name ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Addresses were found.
    Success = 0,
    /// The name does not exist (NXDOMAIN).
    NxDomain = 1,
    /// The name exists but has no address (or SRV) record.
    Empty = 2,
    /// No usable answer: timeouts, SERVFAIL, REFUSED, a malformed answer, a network error.
    Failure = 3,
}

impl Resolution {
    /// Values of the `result` label, in this enum's order.
    pub const NAMES: [&'static str; 4] = ["success", "nxdomain", "empty", "failure"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The resolutions of one entry.
#[derive(Debug)]
pub struct EntryCounts {
    pub upstream: String,
    pub entry: String,
    /// By [`Resolution`].
    pub results: [AtomicU64; 4],
    /// Unix time (ms) of the last successful resolution; 0 = never.
    pub last_success_ms: AtomicU64,
}

impl EntryCounts {
    pub fn record(&self, r: Resolution) {
        self.results[r as usize].fetch_add(1, Relaxed);
        if r == Resolution::Success {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.last_success_ms.store(ms, Relaxed);
        }
    }
}

/// Every entry's counts, across generations.
#[derive(Default)]
pub struct Resolutions {
    entries: arc_swap::ArcSwap<Vec<Arc<EntryCounts>>>,
}

impl Resolutions {
    /// The counts of `entry` of `upstream`, if it was ever resolved.
    pub fn find(&self, upstream: &str, entry: &str) -> Option<Arc<EntryCounts>> {
        self.entries
            .load()
            .iter()
            .find(|c| c.upstream == upstream && c.entry == entry)
            .cloned()
    }

    /// Counts `r` for `entry` of `upstream`.
    pub fn record(&self, upstream: &str, entry: &str, r: Resolution) {
        if let Some(c) = self.find(upstream, entry) {
            c.record(r);
            return;
        }
        let fresh = Arc::new(EntryCounts {
            upstream: upstream.to_string(),
            entry: entry.to_string(),
            results: Default::default(),
            last_success_ms: AtomicU64::new(0),
        });
        let mut added = None;
        self.entries.rcu(|list| {
            // Another writer may have added it meanwhile.
            if let Some(c) = list
                .iter()
                .find(|c| c.upstream == upstream && c.entry == entry)
            {
                added = Some(c.clone());
                return list.clone();
            }
            added = Some(fresh.clone());
            let mut next = (**list).clone();
            next.push(fresh.clone());
            Arc::new(next)
        });
        if let Some(c) = added {
            c.record(r);
        }
    }
}

/// New addresses for a name, from the resolver thread.
#[derive(Debug)]
pub struct Resolved {
    pub upstream: String,
    pub entry: String,
    /// The entry's source when it was resolved: an answer for a source since replaced by a
    /// reload is dropped.
    pub source: Source,
    pub targets: Vec<Target>,
}

/// A change of an upstream's servers through the admin API.
#[derive(Debug)]
pub enum ServerChange {
    /// A validated entry (`Config::api_entry`).
    Add { upstream: String, entry: Box<Entry> },
    /// A server or entry name: drained, then removed.
    Remove { upstream: String, name: String },
}

/// The control thread's answer to a request from an admin task: an HTTP status and a JSON
/// body, and the signal the task awaits.
#[derive(Default)]
pub struct Reply {
    pub done: Signal,
    answer: OnceLock<(u16, String)>,
}

impl Reply {
    /// Sets the answer (the first one counts) and wakes the waiting task.
    pub fn answer(&self, status: u16, json: String) {
        let _ = self.answer.set((status, json));
        self.done.raise();
    }

    pub fn get(&self) -> Option<&(u16, String)> {
        self.answer.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_per_entry() {
        let r = Resolutions::default();
        r.record("app", "a", Resolution::Success);
        r.record("app", "a", Resolution::Failure);
        r.record("app", "b", Resolution::NxDomain);
        let a = r.find("app", "a").unwrap();
        assert_eq!(a.results[0].load(Relaxed), 1);
        assert_eq!(a.results[3].load(Relaxed), 1);
        assert!(a.last_success_ms.load(Relaxed) > 0);
        let b = r.find("app", "b").unwrap();
        assert_eq!(b.last_success_ms.load(Relaxed), 0);
        assert!(r.find("other", "a").is_none());
    }
}
