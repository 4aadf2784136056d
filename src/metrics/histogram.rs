//! Fixed-bucket latency histograms stored as plain counters.
//!
//! One histogram is [`SLOTS`] consecutive counters: one per bucket, *not* cumulative (an
//! observation increments exactly one counter, so a core writes two counters per observation),
//! then the sum of observations in nanoseconds. Cumulative `le` buckets and `_count` are
//! computed when rendering. The bounds are fixed at compile time so every core, every scrape and
//! every dashboard agree on them.

/// Upper bounds of the buckets, in nanoseconds (0.5 ms … 10 s); a last bucket takes the rest.
pub const BOUNDS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// The `le` label of each bound, as Prometheus clients print them.
pub const BOUNDS_LE: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// Buckets including the overflow (`+Inf`) one.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;
/// Counters per histogram: the buckets, then the sum in nanoseconds.
pub const SLOTS: usize = BUCKETS + 1;
/// Offset of the sum within a histogram.
pub const SUM: usize = BUCKETS;

/// The bucket an observation of `ns` falls in: the first whose bound is >= `ns`
/// (Prometheus buckets are `le`, less than or equal).
#[inline]
pub fn bucket(ns: u64) -> usize {
    // Most observations fall in the first few buckets: a forward scan ends early.
    BOUNDS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(BOUNDS_NS.len())
}

/// Summed histogram read for rendering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Snapshot {
    pub fn from_slots(slots: &[u64]) -> Snapshot {
        let mut s = Snapshot::default();
        s.buckets.copy_from_slice(&slots[..BUCKETS]);
        s.sum_ns = slots[SUM];
        s
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_ordered() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(500_000), 0);
        assert_eq!(bucket(500_001), 1);
        assert_eq!(bucket(10_000_000_000), 13);
        assert_eq!(bucket(10_000_000_001), 14);
        assert_eq!(bucket(u64::MAX), 14);
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        for (ns, le) in BOUNDS_NS.iter().zip(BOUNDS_LE) {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e9).round() as u64, *ns, "{le}");
        }
    }
}
