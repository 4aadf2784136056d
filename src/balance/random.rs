//! Weighted random among the usable servers (nginx `random` without `two`).
//!
//! Rejection sampling: draw an index uniformly and keep it with probability
//! `weight / max_weight`; conditioned on acceptance, server `i` is chosen with probability
//! proportional to its effective weight. That is O(1) expected while most servers are usable and
//! of similar weight. After [`DRAWS`] rejections an exact O(servers) pass (sum the usable
//! weights, draw below the sum, walk) takes over; both paths have the same distribution, so
//! the mix does too.
//!
//! `max_weight` starts as the largest configured weight; an effective weight above it (a weight
//! raised at run time before the rebuild) raises it, after a draw biased towards that server.

use super::{Member, Rng, ServerView, TierView};

/// Draws before the exact pass.
const DRAWS: usize = 16;

/// `random` state of one upstream on one core.
#[derive(Clone, Debug)]
pub struct Random {
    rng: Rng,
    max_weight: u32,
    members: usize,
}

impl Random {
    pub(crate) fn new(members: &[Member], rng: Rng) -> Self {
        Random {
            rng,
            max_weight: members.iter().map(|m| m.weight).max().unwrap_or(1).max(1),
            members: members.len(),
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.members
    }

    pub(crate) fn pick<V: ServerView>(&mut self, view: &TierView<'_, V>) -> Option<usize> {
        let n = view.len() as u64;
        if n == 0 {
            return None;
        }
        for _ in 0..DRAWS {
            let i = self.rng.below(n) as usize;
            if !view.usable(i) {
                continue;
            }
            let w = view.weight(i);
            if w >= self.max_weight {
                self.max_weight = w;
                return Some(i);
            }
            if self.rng.below(u64::from(self.max_weight)) < u64::from(w) {
                return Some(i);
            }
        }
        self.exact(view)
    }

    fn exact<V: ServerView>(&mut self, view: &TierView<'_, V>) -> Option<usize> {
        let usable = |i: &usize| view.usable(*i);
        let total: u64 = (0..view.len())
            .filter(usable)
            .map(|i| u64::from(view.weight(i)))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = self.rng.below(total);
        for i in (0..view.len()).filter(usable) {
            let w = u64::from(view.weight(i));
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer};

    fn counts(view: &TestView, picks: usize) -> Vec<usize> {
        let mut b = Balancer::new(&Algorithm::Random, &members(&view.weight), 1, 11);
        let mut counts = vec![0; view.weight.len()];
        for _ in 0..picks {
            counts[b.pick(view, &TestView::ctx()).unwrap()] += 1;
        }
        counts
    }

    fn assert_shares(counts: &[usize], weights: &[u32]) {
        let total: usize = counts.iter().sum();
        let wsum: u32 = weights.iter().sum();
        for (c, w) in counts.iter().zip(weights) {
            let share = *c as f64 / total as f64;
            let want = f64::from(*w) / f64::from(wsum);
            assert!(
                (share - want).abs() < 0.01,
                "{counts:?} for weights {weights:?}"
            );
        }
    }

    #[test]
    fn distribution_follows_weights() {
        let view = TestView::with_weights(&[1, 2, 3, 4]);
        assert_shares(&counts(&view, 100_000), &[1, 2, 3, 4]);
    }

    #[test]
    fn exact_pass_has_the_same_distribution() {
        // Two usable servers out of 200: nearly every pick goes through the exact pass.
        let mut weights = vec![1; 200];
        weights[10] = 3;
        let mut view = TestView::with_weights(&weights);
        view.usable = vec![false; 200];
        view.usable[10] = true;
        view.usable[150] = true;
        let c = counts(&view, 40_000);
        assert_shares(&[c[10], c[150]], &[3, 1]);
    }

    #[test]
    fn effective_weight_counts() {
        // Slow start: server 0 is configured at 4 but runs at 1 for now.
        let mut view = TestView::with_weights(&[4, 4]);
        view.weight[0] = 1;
        let mut b = Balancer::new(&Algorithm::Random, &members(&[4, 4]), 0, 5);
        let mut c = [0; 2];
        for _ in 0..50_000 {
            c[b.pick(&view, &TestView::ctx()).unwrap()] += 1;
        }
        assert_shares(&c, &[1, 4]);
    }
}
