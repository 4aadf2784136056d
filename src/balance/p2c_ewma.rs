//! Power of two choices over peak-EWMA latency (Finagle `P2CPeakEwma`, Linkerd and Envoy
//! `LEAST_REQUEST` with two choices).
//!
//! Two distinct usable servers are drawn at random; the one with the lower cost
//! `ewma_ns * (active + 1) / weight` wins. Sampling two instead of scanning all makes a pick
//! O(1) and keeps cores, which each read the same shared counters, from all herding onto the
//! single least-loaded server. Dividing by the effective weight lets slow start and configured
//! weights count.
//!
//! A server without a latency sample yet (`ewma_ns == 0`) is costed with the other candidate's
//! EWMA (the minimum known of the two), so it competes on in-flight requests alone: it is
//! neither starved (as a high default would do) nor flooded (as a zero cost would do, Finagle's
//! behaviour). When neither has a sample, only in-flight requests per weight count.
//!
//! Candidates are drawn uniformly among all indices and redrawn when unusable, up to
//! [`DRAWS`] times; after that (most servers unusable) the first usable servers after a random
//! start are taken, which favours a server that follows a run of unusable ones.

use super::{Member, Rng, ServerView, TierView};

/// Draws per candidate before scanning.
const DRAWS: usize = 8;

/// `p2c_ewma` state of one upstream on one core.
#[derive(Clone, Debug)]
pub struct P2cEwma {
    rng: Rng,
    members: usize,
}

impl P2cEwma {
    pub(crate) fn new(members: &[Member], rng: Rng) -> Self {
        P2cEwma {
            rng,
            members: members.len(),
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.members
    }

    pub(crate) fn pick<V: ServerView>(&mut self, view: &TierView<'_, V>) -> Option<usize> {
        let a = self.draw(view, None)?;
        let Some(b) = self.draw(view, Some(a)) else {
            return Some(a);
        };
        Some(if cheaper(view, b, a) { b } else { a })
    }

    /// A usable server other than `other`.
    fn draw<V: ServerView>(
        &mut self,
        view: &TierView<'_, V>,
        other: Option<usize>,
    ) -> Option<usize> {
        let n = view.len();
        // Indices other than `other`: draw from n - 1 and skip over it.
        let m = if other.is_some() {
            n.checked_sub(1)?
        } else {
            n
        };
        if m == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let mut i = self.rng.below(m as u64) as usize;
            if other.is_some_and(|o| i >= o) {
                i += 1;
            }
            if view.usable(i) {
                return Some(i);
            }
        }
        let start = self.rng.below(n as u64) as usize;
        (start..n)
            .chain(0..start)
            .find(|&i| Some(i) != other && view.usable(i))
    }
}

/// Whether `a` costs less than `b`: `ewma_a * (active_a + 1) / weight_a` against the same for
/// `b`, cross-multiplied in u128 (saturating; an EWMA near u64::MAX is not a real latency).
fn cheaper<V: ServerView>(view: &TierView<'_, V>, a: usize, b: usize) -> bool {
    let (ea, eb) = match (view.ewma_ns(a), view.ewma_ns(b)) {
        (0, 0) => (1, 1),
        (0, e) | (e, 0) => (e, e),
        both => both,
    };
    let load = |e: u64, i: usize| u128::from(e).saturating_mul(u128::from(view.active(i)) + 1);
    let (wa, wb) = (u128::from(view.weight(a)), u128::from(view.weight(b)));
    load(ea, a).saturating_mul(wb) < load(eb, b).saturating_mul(wa)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer};

    fn counts(view: &TestView, picks: usize, seed: u64) -> Vec<usize> {
        let mut b = Balancer::new(&Algorithm::P2cEwma, &members(&view.weight), 0, seed);
        let mut counts = vec![0; view.weight.len()];
        for _ in 0..picks {
            counts[b.pick(view, &TestView::ctx()).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn slow_server_gets_clearly_fewer_picks() {
        let mut view = TestView::with_weights(&[1; 4]);
        view.ewma_ns = vec![1_000_000, 10_000_000, 1_000_000, 1_000_000];
        let c = counts(&view, 40_000, 1);
        // Server 1 wins only against itself, never drawn twice: 0 picks.
        assert_eq!(c[1], 0, "{c:?}");
        // Closed loop: 40 requests start every millisecond and each takes its server's latency.
        // The fast servers accumulate in-flight requests; the slow one still gets clearly fewer.
        let mut b = Balancer::new(&Algorithm::P2cEwma, &members(&view.weight), 0, 2);
        let mut done_at: Vec<(u64, usize)> = Vec::new();
        let mut c = [0; 4];
        for now in 0..2_000u64 {
            done_at.retain(|&(t, i)| {
                if t <= now {
                    view.active[i] -= 1;
                }
                t > now
            });
            for _ in 0..40 {
                let i = b.pick(&view, &TestView::ctx()).unwrap();
                c[i] += 1;
                view.active[i] += 1;
                done_at.push((now + view.ewma_ns[i] / 1_000_000, i));
            }
        }
        assert!(c[1] > 0 && c[1] < 80_000 / 8, "{c:?}");
    }

    #[test]
    fn single_usable_server_is_picked() {
        let mut view = TestView::with_weights(&[1; 100]);
        view.usable = vec![false; 100];
        view.usable[63] = true;
        assert_eq!(counts(&view, 100, 3)[63], 100);
    }

    #[test]
    fn unsampled_server_competes_on_load() {
        let mut view = TestView::with_weights(&[1; 2]);
        view.ewma_ns = vec![0, 5_000_000];
        view.active = vec![3, 1];
        // Server 0 costs as 5 ms * 4 against 5 ms * 2: server 1 wins.
        assert_eq!(counts(&view, 100, 4), [0, 100]);
        view.active = vec![0, 1];
        assert_eq!(counts(&view, 100, 4), [100, 0]);
    }

    #[test]
    fn deterministic_for_a_seed() {
        let view = TestView::with_weights(&[1; 10]);
        assert_eq!(counts(&view, 1000, 42), counts(&view, 1000, 42));
        assert_ne!(counts(&view, 1000, 42), counts(&view, 1000, 43));
    }

    #[test]
    fn equal_servers_share_evenly() {
        let view = TestView::with_weights(&[1; 5]);
        for c in counts(&view, 50_000, 5) {
            assert!((9_400..10_600).contains(&c), "{c}");
        }
    }
}
