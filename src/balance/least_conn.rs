//! Least connections: the usable server with the fewest in-flight requests per unit of
//! effective weight (nginx `least_conn`, HAProxy `leastconn`).
//!
//! `active / weight` is compared by cross-multiplication in u64, so there is no division and no
//! rounding. The in-flight count is the shared one across all cores (the same counter that
//! enforces `max_conns`): a per-core count would let every core send its first request to the
//! same server.
//!
//! Ties go to the first tied server at or after a per-instance cursor, and the cursor moves past
//! the server picked, so servers with equal load share requests in rotation. nginx breaks ties
//! with weighted round robin instead; plain rotation costs no extra state, and weights still
//! count as soon as any request is in flight. An idle upstream (all counts 0) is therefore
//! rotated evenly regardless of weight.
//!
//! A pick is O(servers).

use super::{Member, ServerView, TierView};

/// Least-connections state of one upstream on one core.
#[derive(Clone, Debug)]
pub struct LeastConn {
    cursor: usize,
    members: usize,
}

impl LeastConn {
    /// `core` offsets the tie-break cursor, as round robin offsets its start.
    pub(crate) fn new(members: &[Member], core: usize) -> Self {
        LeastConn {
            cursor: core.checked_rem(members.len()).unwrap_or(0),
            members: members.len(),
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.members
    }

    pub(crate) fn pick<V: ServerView>(&mut self, view: &TierView<'_, V>) -> Option<usize> {
        let n = view.len();
        let start = if self.cursor < n { self.cursor } else { 0 };
        let mut best = Best {
            i: usize::MAX,
            active: 0,
            weight: 0,
        };
        // Two plain loops rather than a chained iterator: this is the whole cost of a pick.
        best.scan(view, start..n);
        best.scan(view, 0..start);
        if best.i == usize::MAX {
            return None;
        }
        self.cursor = best.i + 1;
        Some(best.i)
    }
}

/// The least loaded server so far; `i == usize::MAX` for none.
struct Best {
    i: usize,
    active: u64,
    weight: u64,
}

impl Best {
    #[inline]
    fn scan<V: ServerView>(&mut self, view: &TierView<'_, V>, range: std::ops::Range<usize>) {
        for i in range {
            let weight = u64::from(view.usable_weight(i));
            if weight == 0 {
                continue;
            }
            let active = u64::from(view.active(i));
            // active / weight < best.active / best.weight; always true for the first server,
            // whose best.weight is 0.
            if active * self.weight < self.active * weight || self.weight == 0 {
                *self = Best { i, active, weight };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer};

    fn balancer(weights: &[u32]) -> Balancer {
        Balancer::new(&Algorithm::LeastConn, &members(weights), 0, 0)
    }

    #[test]
    fn picks_fewest_active_per_weight() {
        let mut view = TestView::with_weights(&[1, 3, 1]);
        view.active = vec![2, 5, 1];
        // 2/1, 5/3, 1/1: server 2.
        assert_eq!(balancer(&[1, 3, 1]).pick(&view, &TestView::ctx()), Some(2));
        view.active = vec![2, 5, 2];
        // 2/1, 5/3, 2/1: server 1.
        assert_eq!(balancer(&[1, 3, 1]).pick(&view, &TestView::ctx()), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let view = TestView::with_weights(&[1; 4]);
        let mut b = balancer(&[1; 4]);
        let seq: Vec<_> = (0..8)
            .map(|_| b.pick(&view, &TestView::ctx()).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn ties_rotate_among_the_least_loaded_only() {
        let mut view = TestView::with_weights(&[1; 4]);
        view.active = vec![1, 0, 1, 0];
        let mut b = balancer(&[1; 4]);
        let seq: Vec<_> = (0..4)
            .map(|_| b.pick(&view, &TestView::ctx()).unwrap())
            .collect();
        assert_eq!(seq, [1, 3, 1, 3]);
    }

    #[test]
    fn closed_loop_distribution_follows_weights() {
        // Each pick opens a request; the oldest one completes once 60 are open. The in-flight
        // counts then settle in proportion to the weights, within one request.
        let weights = [1, 2, 3];
        let mut view = TestView::with_weights(&weights);
        let mut b = balancer(&weights);
        let mut open = std::collections::VecDeque::new();
        for _ in 0..10_000 {
            let i = b.pick(&view, &TestView::ctx()).unwrap();
            view.active[i] += 1;
            open.push_back(i);
            if open.len() > 60 {
                let done = open.pop_front().unwrap();
                view.active[done] -= 1;
            }
        }
        for (active, want) in view.active.iter().zip([10, 20, 30]) {
            assert!(active.abs_diff(want) <= 1, "{:?}", view.active);
        }
    }

    #[test]
    fn equal_load_shares_evenly() {
        let view = TestView::with_weights(&[1; 3]);
        let mut b = balancer(&[1; 3]);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[b.pick(&view, &TestView::ctx()).unwrap()] += 1;
        }
        assert_eq!(counts, [1000; 3]);
    }
}
