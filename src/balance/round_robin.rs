//! Smooth weighted round robin, as nginx `ngx_http_upstream_get_peer`.
//!
//! Each pick adds every usable server's effective weight to its `current` value, takes the
//! server with the largest `current` (the first one on a tie) and subtracts the total effective
//! weight from it. Weights 5, 1, 1 give `a a b a c a a`: heavy servers are spread out instead
//! of picked in a burst. With equal weights this is plain rotation. Over any run of
//! `total_weight` picks with constant weights each server is picked exactly `weight` times.
//!
//! A pick is O(servers): it reads every server's state, like nginx.

use super::{Member, ServerView, TierView};

/// Smooth weighted round robin state of one upstream on one core.
#[derive(Clone, Debug)]
pub struct RoundRobin {
    /// nginx `current_weight`, per server.
    current: Vec<i64>,
}

impl RoundRobin {
    /// Starts core `core` `core % total_weight` picks into the cycle of the configured primary
    /// weights, so cores do not all pick the same server first. The offset keeps the
    /// distribution exact: each core runs the same cycle, shifted.
    pub(crate) fn new(members: &[Member], core: usize) -> Self {
        let mut rr = RoundRobin {
            current: vec![0; members.len()],
        };
        let weight = |i: usize| {
            let m = &members[i];
            if m.backup {
                0
            } else {
                m.weight
            }
        };
        let total: u64 = (0..members.len()).map(|i| u64::from(weight(i))).sum();
        if total > 0 {
            for _ in 0..(core as u64 % total) {
                rr.step(members.len(), weight);
            }
        }
        rr
    }

    pub(crate) fn members(&self) -> usize {
        self.current.len()
    }

    pub(crate) fn pick<V: ServerView>(&mut self, view: &TierView<'_, V>) -> Option<usize> {
        let n = view.len().min(self.current.len());
        self.step(n, |i| view.usable_weight(i))
    }

    /// One nginx step over servers `0..n`; `weight(i)` is 0 for a server to skip.
    #[inline]
    fn step(&mut self, n: usize, weight: impl Fn(usize) -> u32) -> Option<usize> {
        let current = &mut self.current[..n];
        let mut best = usize::MAX;
        // `current` stays within +-total weight, far above i64::MIN, so the first usable server
        // always replaces this.
        let mut best_current = i64::MIN;
        let mut total: i64 = 0;
        for (i, cur) in current.iter_mut().enumerate() {
            let w = weight(i);
            if w == 0 {
                continue;
            }
            let w = i64::from(w);
            *cur += w;
            total += w;
            if *cur > best_current {
                best = i;
                best_current = *cur;
            }
        }
        *current.get_mut(best)? -= total;
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer};

    fn picks(b: &mut Balancer, view: &TestView, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| b.pick(view, &TestView::ctx()).unwrap())
            .collect()
    }

    #[test]
    fn nginx_golden_sequence() {
        // nginx commit 52327e0627f4 (smooth weighted round robin): weights 5, 1, 1 give
        // a a b a c a a.
        let weights = [5, 1, 1];
        let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&weights), 0, 0);
        let view = TestView::with_weights(&weights);
        let seq = picks(&mut b, &view, 14);
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn exact_distribution_on_every_core() {
        let weights = [5, 3, 2];
        let view = TestView::with_weights(&weights);
        for core in 0..16 {
            let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&weights), core, 0);
            let mut counts = [0; 3];
            for i in picks(&mut b, &view, 1000) {
                counts[i] += 1;
            }
            assert_eq!(counts, [500, 300, 200], "core {core}");
        }
    }

    #[test]
    fn cores_start_at_different_servers() {
        let weights = [1; 4];
        let view = TestView::with_weights(&weights);
        let first: Vec<usize> = (0..4)
            .map(|core| {
                let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&weights), core, 0);
                b.pick(&view, &TestView::ctx()).unwrap()
            })
            .collect();
        assert_eq!(first, [0, 1, 2, 3]);
    }

    #[test]
    fn equal_weights_rotate() {
        let weights = [7; 5];
        let view = TestView::with_weights(&weights);
        let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&weights), 2, 0);
        assert_eq!(picks(&mut b, &view, 10), [2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    }

    #[test]
    fn unusable_server_is_skipped_and_others_keep_their_ratio() {
        let weights = [2, 1, 1];
        let mut view = TestView::with_weights(&weights);
        view.usable[0] = false;
        let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&weights), 0, 0);
        let seq = picks(&mut b, &view, 6);
        assert_eq!(seq, [1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn effective_weight_is_read_at_pick_time() {
        // Slow start lowers the effective weight of server 0 from 3 to 1.
        let mut view = TestView::with_weights(&[3, 1]);
        view.weight[0] = 1;
        let mut b = Balancer::new(&Algorithm::RoundRobin, &members(&[3, 1]), 0, 0);
        let seq = picks(&mut b, &view, 4);
        assert_eq!(seq, [0, 1, 0, 1]);
    }
}
