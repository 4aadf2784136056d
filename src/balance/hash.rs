//! Hashing on a request key (nginx `hash $key [consistent]`, HAProxy `balance hash` with
//! `hash-type consistent` and `hash-balance-factor`).
//!
//! - `consistent = false`: `stable_hash(key)` mapped onto the configured weights by
//!   [`Weighted`] (nginx's `hash % total_weight`, by multiply-shift), with its rehash-then-walk
//!   when the server is not usable. Adding or removing a server remaps most keys.
//! - `consistent = true`: a ketama ring. Each server owns `512 * weight` points at
//!   `xxh3_64_with_seed(id, point_number)` (nginx uses 160; more points narrow the spread of
//!   each server's share — with 160, one of ten servers sometimes owns over 12% of the keys); a key belongs to the first point at
//!   or after `stable_hash(key)`. An unusable server is skipped by walking forward on the ring,
//!   so taking a server out moves only its own keys, and adding one moves keys only onto it.
//!   Point positions depend only on the server's id and weight, never on its index or on the
//!   other servers, so every node and restart builds the same ring. Above 2^18 points in total
//!   (total weight above 512) every server's count is divided by the same factor to bound
//!   memory (13 bytes a point, per core); a change of that factor moves keys.
//! - `bounded_load = Some(c)` (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
//!   Bounded Loads", 2018): walking the ring also skips a server whose `active + 1` exceeds
//!   `ceil(c * (total_active + 1) / usable_servers)`, counted over the usable servers of the
//!   tier. That costs one O(servers) pass per pick, skipped when the first usable server has
//!   nothing in flight. At least one usable server is always under the bound when `c >= 1`
//!   (values below 1 are taken as 1).
//! - A request without the key (`None`) is balanced by smooth weighted round robin, as
//!   HAProxy does for a missing hash input. nginx would hash the empty string and send all such
//!   requests to one server.
//!
//! Ring or Maglev (Eisenbud et al., NSDI 2016): a ring. Measured against a Maglev prototype
//! (65,537-entry table, same key hash) with 100,000 keys of 40 bytes and equal weights, on 2
//! shared AMD EPYC cores, minimum of 20-30 runs; in parentheses, keys moved between servers that
//! did not change:
//!
//! | servers, scheme | build   | pick  | keys moved, add one | keys moved, remove one |
//! |-----------------|---------|-------|---------------------|------------------------|
//! | 10, ring        | 0.07 ms | 35 ns | 8.7 % (0)           | 10.1 % (0)             |
//! | 10, Maglev      | 1.6 ms  | 9 ns  | 9.4 % (0.34 %)      | 10.2 % (0.27 %)        |
//! | 100, ring       | 0.91 ms | 38 ns | 0.88 % (0)          | 1.10 % (0)             |
//! | 100, Maglev     | 2.1 ms  | 9 ns  | 1.50 % (0.56 %)     | 1.63 % (0.63 %)        |
//!
//! (The ring pick is a whole [`Balancer::pick`](super::Balancer::pick), the Maglev one only
//! hash and lookup.) Maglev picks faster, but its rebuild moves keys between servers that did
//! not change, while the ring moves keys only off a removed server and only onto an added one,
//! the property cache affinity needs; every core rebuilds on each membership change, where
//! the ring is also cheaper. A ring pick finds its point through a bucket index over the top
//! bits of the hash (about four points a bucket) and a binary search within the bucket.
//! An unusable server is skipped without a rebuild in either scheme.

use super::{stable_hash, Member, RoundRobin, ServerView, Tier, TierView, Weighted};

/// Ring points per unit of weight (nginx `ngx_http_upstream_init_chash` and libketama use
/// 160).
const POINTS_PER_WEIGHT: u64 = 512;
/// Bound on the ring size.
const MAX_POINTS: u64 = 1 << 18;
/// Points walked before checking that any server of the tier is usable at all, so a pick while
/// every server is down costs O(servers), not O(points).
const PROBE: usize = 64;

/// `hash` state of one upstream on one core.
#[derive(Clone, Debug)]
pub struct Hash {
    mode: Mode,
    /// Bounded-load factor `c`; only with a ring.
    bound: Option<f64>,
    /// For requests without a key.
    fallback: RoundRobin,
}

#[derive(Clone, Debug)]
enum Mode {
    Ring(Ring),
    /// Indexed by `Tier as usize`.
    Modulo([Weighted; 2]),
}

impl Hash {
    pub(crate) fn new(
        members: &[Member],
        core: usize,
        consistent: bool,
        bounded_load: Option<f64>,
    ) -> Self {
        let mode = if consistent {
            Mode::Ring(Ring::new(members))
        } else {
            Mode::Modulo([
                Weighted::new(members, Tier::Primary),
                Weighted::new(members, Tier::Backup),
            ])
        };
        Hash {
            mode,
            bound: bounded_load.map(|c| c.max(1.0)),
            fallback: RoundRobin::new(members, core),
        }
    }

    pub(crate) fn members(&self) -> usize {
        self.fallback.members()
    }

    pub(crate) fn pick<V: ServerView>(
        &mut self,
        view: &TierView<'_, V>,
        key: Option<&[u8]>,
    ) -> Option<usize> {
        let Some(key) = key else {
            return self.fallback.pick(view);
        };
        let h = stable_hash(key);
        match &self.mode {
            Mode::Ring(ring) => ring.pick(view, h, self.bound),
            Mode::Modulo(tables) => tables[view.tier() as usize].pick(view, h),
        }
    }
}

/// A ketama ring: sorted point positions and the server owning each.
#[derive(Clone, Debug)]
struct Ring {
    points: Vec<u64>,
    owners: Vec<u32>,
    /// `buckets[t]` is the first point whose top bits are `>= t`; one extra entry at the end.
    buckets: Vec<u32>,
    /// `64 - bucket bits`.
    shift: u32,
}

/// The position of a server's point `n`. Frozen, like [`stable_hash`]: it decides which server
/// owns a key on every node.
fn point(id: &str, n: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), n)
}

impl Ring {
    fn new(members: &[Member]) -> Self {
        let total: u64 = members
            .iter()
            .map(|m| u64::from(m.weight) * POINTS_PER_WEIGHT)
            .sum();
        let divisor = total.div_ceil(MAX_POINTS).max(1);
        let count = |m: &Member| match m.weight {
            0 => 0,
            w => (u64::from(w) * POINTS_PER_WEIGHT / divisor).max(1),
        };
        let mut all: Vec<(u64, u32)> =
            Vec::with_capacity(members.iter().map(count).sum::<u64>() as usize);
        for (i, m) in members.iter().enumerate() {
            all.extend((0..count(m)).map(|n| (point(m.id, n), i as u32)));
        }
        // Ties (two servers on one position) go to the smaller id, so the result does not
        // depend on member order.
        all.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| members[a.1 as usize].id.cmp(members[b.1 as usize].id))
                .then(a.1.cmp(&b.1))
        });
        let points: Vec<u64> = all.iter().map(|p| p.0).collect();
        let owners = all.iter().map(|p| p.1).collect();
        // About four points a bucket, at least two buckets.
        let bits = (points.len() / 4)
            .max(2)
            .next_power_of_two()
            .trailing_zeros();
        let shift = 64 - bits;
        let buckets = (0..=1u64 << bits)
            .map(|t| points.partition_point(|&p| (p >> shift) < t) as u32)
            .collect();
        Ring {
            points,
            owners,
            buckets,
            shift,
        }
    }

    /// Index of the first point at or after `h`, wrapping; `points` is not empty.
    #[inline]
    fn first(&self, h: u64) -> usize {
        let t = (h >> self.shift) as usize;
        let (lo, hi) = (self.buckets[t] as usize, self.buckets[t + 1] as usize);
        let p = lo + self.points[lo..hi].partition_point(|&x| x < h);
        if p == self.points.len() {
            0
        } else {
            p
        }
    }

    fn pick<V: ServerView>(
        &self,
        view: &TierView<'_, V>,
        h: u64,
        bound: Option<f64>,
    ) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return view.next_usable(h);
        }
        // The bound, counted when first needed: a server with nothing in flight is under any
        // bound (the bound is at least 1), so an idle upstream needs no O(servers) pass.
        let mut cap = None;
        // The first usable server met, in case every usable one is at the bound (possible only
        // when active counts change between the capacity pass and the walk).
        let mut over_cap = None;
        let start = self.first(h);
        for k in 0..len {
            let p = if start + k >= len {
                start + k - len
            } else {
                start + k
            };
            let i = self.owners[p] as usize;
            if view.usable(i) {
                let Some(c) = bound else { return Some(i) };
                let active = u64::from(view.active(i));
                if active == 0 {
                    return Some(i);
                }
                let cap = *cap.get_or_insert_with(|| capacity(view, c));
                if active < cap {
                    return Some(i);
                }
                over_cap.get_or_insert(i);
            } else if k == PROBE && over_cap.is_none() && view.next_usable(0).is_none() {
                return None;
            }
        }
        // A usable server without points (a member of weight 0 that the view gives weight).
        over_cap.or_else(|| view.next_usable(h))
    }
}

/// `ceil(c * (total_active + 1) / usable)` over the usable servers of the tier (at least 1).
fn capacity<V: ServerView>(view: &TierView<'_, V>, c: f64) -> u64 {
    let (mut usable, mut total) = (0u64, 0u64);
    for i in 0..view.len() {
        if view.usable(i) {
            usable += 1;
            total += u64::from(view.active(i));
        }
    }
    ((c * (total + 1) as f64 / usable.max(1) as f64).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::{members, TestView};
    use super::super::{Algorithm, Balancer, HashKey, Member, PickCtx};

    fn algo(consistent: bool, bounded_load: Option<f64>) -> Algorithm {
        Algorithm::Hash {
            key: HashKey::RequestUri,
            consistent,
            bounded_load,
        }
    }

    fn ctx(key: &[u8]) -> PickCtx<'_> {
        PickCtx {
            key: Some(key),
            ..TestView::ctx()
        }
    }

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{prefix}-10.0.{i}.1:8080"))
            .collect()
    }

    fn ring_members(ids: &[String]) -> Vec<Member<'_>> {
        ids.iter()
            .map(|id| Member {
                id,
                weight: 1,
                backup: false,
            })
            .collect()
    }

    /// The id each key maps to.
    fn owners(ids: &[String], view: &TestView, keys: u32) -> Vec<String> {
        let mut b = Balancer::new(&algo(true, None), &ring_members(ids), 0, 0);
        (0..keys)
            .map(|k| {
                let key = format!("/objects/{k}");
                ids[b.pick(view, &ctx(key.as_bytes())).unwrap()].clone()
            })
            .collect()
    }

    const KEYS: u32 = 100_000;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        #[test]
        fn removing_a_server_moves_only_its_keys(prefix in "[a-z]{1,8}", gone in 0..10usize) {
            let ids = ids(&prefix, 10);
            let view = TestView::with_weights(&[1; 10]);
            let before = owners(&ids, &view, KEYS);
            // Marked unusable, and removed from the membership.
            let mut down = view.clone();
            down.usable[gone] = false;
            let after_down = owners(&ids, &down, KEYS);
            let mut fewer = ids.clone();
            fewer.remove(gone);
            let after_removed = owners(&fewer, &TestView::with_weights(&[1; 9]), KEYS);
            prop_assert_eq!(&after_down, &after_removed);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after_down) {
                if b != a {
                    prop_assert_eq!(b, &ids[gone]);
                    moved += 1;
                }
            }
            prop_assert!(moved <= KEYS as usize * 12 / 100, "moved {}", moved);
        }

        #[test]
        fn adding_a_server_moves_keys_only_onto_it(prefix in "[a-z]{1,8}") {
            let ids = ids(&prefix, 11);
            let before = owners(&ids[..10], &TestView::with_weights(&[1; 10]), KEYS);
            let after = owners(&ids, &TestView::with_weights(&[1; 11]), KEYS);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    prop_assert_eq!(a, &ids[10]);
                    moved += 1;
                }
            }
            prop_assert!(moved <= KEYS as usize * 12 / 100, "moved {}", moved);
        }

        #[test]
        fn bounded_load_is_never_exceeded(
            c in 1.05f64..3.0,
            n in 1..12usize,
            ops in proptest::collection::vec((any::<u16>(), any::<bool>()), 1..600),
        ) {
            let ids = ids("b", n);
            let mut b = Balancer::new(&algo(true, Some(c)), &ring_members(&ids), 0, 0);
            let mut view = TestView::with_weights(&vec![1; n]);
            let mut open: Vec<usize> = Vec::new();
            for (k, finish) in ops {
                if finish && !open.is_empty() {
                    let done = open.swap_remove(k as usize % open.len());
                    view.active[done] -= 1;
                    continue;
                }
                // A skewed key set: a few hot keys.
                let key = (k % 7).to_le_bytes();
                let total: u32 = view.active.iter().sum();
                let bound = (c * f64::from(total + 1) / n as f64).ceil() as u32;
                let i = b.pick(&view, &ctx(&key)).unwrap();
                prop_assert!(view.active[i] < bound, "{} + 1 > {}", view.active[i], bound);
                view.active[i] += 1;
                open.push(i);
            }
        }
    }

    #[test]
    fn ring_is_frozen() {
        // Pins the ring construction and the key hash: changing either remaps keys across a
        // rolling upgrade.
        let ids = ids("pin", 5);
        let view = TestView::with_weights(&[1; 5]);
        let mut b = Balancer::new(&algo(true, None), &ring_members(&ids), 0, 0);
        let got: Vec<usize> = ["/", "/a", "/index.html", "user:42", ""]
            .iter()
            .map(|k| b.pick(&view, &ctx(k.as_bytes())).unwrap())
            .collect();
        assert_eq!(got, [0, 2, 1, 4, 3]);
    }

    #[test]
    fn member_order_does_not_matter() {
        let ids = ids("order", 7);
        let mut reversed = ids.clone();
        reversed.reverse();
        let view = TestView::with_weights(&[1; 7]);
        let a = owners(&ids, &view, 2000);
        let b = owners(&reversed, &view, 2000);
        assert_eq!(a, b);
    }

    #[test]
    fn ring_distribution_follows_weights() {
        let ids = ids("w", 3);
        let weights = [1, 2, 3];
        let m: Vec<Member> = ids
            .iter()
            .zip(weights)
            .map(|(id, weight)| Member {
                id,
                weight,
                backup: false,
            })
            .collect();
        let view = TestView::with_weights(&weights);
        let mut b = Balancer::new(&algo(true, None), &m, 0, 0);
        let mut counts = [0f64; 3];
        for k in 0..60_000u32 {
            counts[b.pick(&view, &ctx(&k.to_le_bytes())).unwrap()] += 1.0;
        }
        for (i, w) in weights.iter().enumerate() {
            let share = counts[i] / 60_000.0;
            let want = f64::from(*w) / 6.0;
            assert!((share - want).abs() < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn modulo_follows_weights_and_is_stable() {
        let weights = [1, 3];
        let view = TestView::with_weights(&weights);
        let mut a = Balancer::new(&algo(false, None), &members(&weights), 0, 0);
        let mut b = Balancer::new(&algo(false, None), &members(&weights), 3, 9);
        let mut counts = [0u32; 2];
        for k in 0..40_000u32 {
            let i = a.pick(&view, &ctx(&k.to_le_bytes())).unwrap();
            assert_eq!(Some(i), b.pick(&view, &ctx(&k.to_le_bytes())));
            counts[i] += 1;
        }
        assert!((9_400..10_600).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn missing_key_falls_back_to_round_robin() {
        for consistent in [false, true] {
            let view = TestView::with_weights(&[1; 3]);
            let mut b = Balancer::new(&algo(consistent, None), &members(&[1; 3]), 0, 0);
            let seq: Vec<_> = (0..6)
                .map(|_| b.pick(&view, &TestView::ctx()).unwrap())
                .collect();
            assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        }
    }

    #[test]
    fn all_down_is_none_without_walking_the_ring() {
        let ids = ids("down", 50);
        let mut view = TestView::with_weights(&[1; 50]);
        view.usable = vec![false; 50];
        let mut b = Balancer::new(&algo(true, None), &ring_members(&ids), 0, 0);
        assert_eq!(b.pick(&view, &ctx(b"k")), None);
        view.usable[17] = true;
        for k in 0..100u32 {
            assert_eq!(b.pick(&view, &ctx(&k.to_le_bytes())), Some(17));
        }
    }

    #[test]
    fn ring_size_is_bounded() {
        let ids = ids("big", 300);
        let m: Vec<Member> = ids
            .iter()
            .map(|id| Member {
                id,
                weight: 1000,
                backup: false,
            })
            .collect();
        let ring = super::Ring::new(&m);
        assert!(ring.points.len() as u64 <= super::MAX_POINTS);
        assert!(ring.points.len() as u64 >= super::MAX_POINTS * 99 / 100);
    }
}
