//! Properties every algorithm shares, the shared helpers, and the test view.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// A [`ServerView`] over plain vectors, one entry per server.
#[derive(Clone, Debug)]
pub(crate) struct TestView {
    pub usable: Vec<bool>,
    pub backup: Vec<bool>,
    pub weight: Vec<u32>,
    pub active: Vec<u32>,
    pub ewma_ns: Vec<u64>,
}

impl TestView {
    /// All servers usable, primary, idle and unsampled.
    pub fn with_weights(weights: &[u32]) -> Self {
        let n = weights.len();
        TestView {
            usable: vec![true; n],
            backup: vec![false; n],
            weight: weights.to_vec(),
            active: vec![0; n],
            ewma_ns: vec![0; n],
        }
    }

    pub fn ctx() -> PickCtx<'static> {
        PickCtx {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            key: None,
        }
    }
}

impl ServerView for TestView {
    fn len(&self) -> usize {
        self.weight.len()
    }
    fn usable(&self, i: usize) -> bool {
        self.usable[i]
    }
    fn backup(&self, i: usize) -> bool {
        self.backup[i]
    }
    fn weight(&self, i: usize) -> u32 {
        self.weight[i]
    }
    fn active(&self, i: usize) -> u32 {
        self.active[i]
    }
    fn ewma_ns(&self, i: usize) -> u64 {
        self.ewma_ns[i]
    }
}

/// Primary members `s0, s1, ...` with these weights.
pub(crate) fn members(weights: &[u32]) -> Vec<Member<'static>> {
    const IDS: [&str; 16] = [
        "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13",
        "s14", "s15",
    ];
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Member {
            id: IDS.get(i).copied().unwrap_or("s-many"),
            weight,
            backup: false,
        })
        .collect()
}

fn algorithms() -> Vec<Algorithm> {
    let hash = |consistent, bounded_load| Algorithm::Hash {
        key: HashKey::RequestUri,
        consistent,
        bounded_load,
    };
    vec![
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::IpHash,
        hash(false, None),
        hash(true, None),
        hash(true, Some(1.25)),
        Algorithm::P2cEwma,
        Algorithm::Random,
    ]
}

#[test]
fn no_servers_is_none() {
    let view = TestView::with_weights(&[]);
    for algo in algorithms() {
        let mut b = Balancer::new(&algo, &[], 3, 0);
        assert_eq!(b.pick(&view, &TestView::ctx()), None, "{algo:?}");
        let ctx = PickCtx {
            key: Some(b"/x"),
            ..TestView::ctx()
        };
        assert_eq!(b.pick(&view, &ctx), None, "{algo:?}");
    }
}

#[test]
fn empty_view_is_none() {
    // The view shrank before the balancer was rebuilt. Weights large enough that the ring is
    // scaled down to a few points per server.
    let view = TestView::with_weights(&[]);
    let ids: Vec<String> = (0..3000).map(|i| format!("s{i}")).collect();
    let big: Vec<Member> = ids
        .iter()
        .map(|id| Member {
            id,
            weight: 1000,
            backup: false,
        })
        .collect();
    for algo in algorithms() {
        for m in [members(&[1, 2, 3]), big.clone()] {
            let mut b = Balancer::new(&algo, &m, 1, 0);
            let ctx = PickCtx {
                key: Some(b"/x"),
                ..TestView::ctx()
            };
            assert_eq!(b.pick(&view, &ctx), None, "{algo:?}");
            assert_eq!(b.pick(&view, &TestView::ctx()), None, "{algo:?}");
        }
    }
}

#[test]
fn all_unusable_is_none() {
    let weights = [1, 2, 3, 4];
    let mut view = TestView::with_weights(&weights);
    view.usable = vec![false; 4];
    view.backup[3] = true;
    let mut zero = TestView::with_weights(&[0; 4]);
    zero.backup[0] = true;
    for algo in algorithms() {
        let mut b = Balancer::new(&algo, &members(&weights), 0, 0);
        for _ in 0..10 {
            let ctx = PickCtx {
                key: Some(b"/x"),
                ..TestView::ctx()
            };
            assert_eq!(b.pick(&view, &ctx), None, "{algo:?}");
            assert_eq!(b.pick(&view, &TestView::ctx()), None, "{algo:?}");
            assert_eq!(b.pick(&zero, &ctx), None, "{algo:?}: weight 0 is unusable");
        }
    }
}

#[test]
fn servers_beyond_the_members_are_never_picked() {
    // The view grew before the balancer was rebuilt.
    let view = TestView::with_weights(&[1; 6]);
    for algo in algorithms() {
        let mut b = Balancer::new(&algo, &members(&[1; 3]), 0, 0);
        for k in 0..50u32 {
            let key = k.to_le_bytes();
            let ctx = PickCtx {
                key: Some(&key),
                ..TestView::ctx()
            };
            assert!(b.pick(&view, &ctx).unwrap() < 3, "{algo:?}");
        }
    }
}

#[test]
fn backups_only_when_no_primary_is_usable() {
    let weights = [1; 6];
    let m: Vec<Member> = members(&weights)
        .into_iter()
        .enumerate()
        .map(|(i, m)| Member {
            backup: i >= 4,
            ..m
        })
        .collect();
    let mut view = TestView::with_weights(&weights);
    view.backup = m.iter().map(|m| m.backup).collect();
    for algo in algorithms() {
        let mut b = Balancer::new(&algo, &m, 0, 0);
        let mut view = view.clone();
        for k in 0..100u32 {
            let key = k.to_le_bytes();
            let ctx = PickCtx {
                key: Some(&key),
                client_ip: IpAddr::V4(Ipv4Addr::from(k)),
            };
            view.usable[..4].copy_from_slice(&[true, false, false, false]);
            assert_eq!(b.pick(&view, &ctx), Some(0), "{algo:?}");
            view.usable[0] = false;
            assert!(b.pick(&view, &ctx).unwrap() >= 4, "{algo:?}");
        }
    }
}

fn arb_view() -> impl Strategy<Value = TestView> {
    (1..40usize).prop_flat_map(|n| {
        (
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(prop::bool::weighted(0.2), n),
            proptest::collection::vec(prop_oneof![Just(0u32), 1..5u32, Just(1000)], n),
            proptest::collection::vec(0..50u32, n),
            proptest::collection::vec(prop_oneof![Just(0u64), 1..1_000_000_000u64], n),
        )
            .prop_map(|(usable, backup, weight, active, ewma_ns)| TestView {
                usable,
                backup,
                weight,
                active,
                ewma_ns,
            })
    })
}

proptest! {
    #[test]
    fn picks_only_usable_servers_of_the_right_tier(
        view in arb_view(),
        configured in proptest::collection::vec(0..4u32, 40),
        seed in any::<u64>(),
        core in 0..8usize,
        keys in proptest::collection::vec(proptest::option::of(any::<[u8; 3]>()), 1..20),
    ) {
        let usable = |i: usize| view.usable[i] && view.weight[i] > 0;
        let primary = (0..view.len()).any(|i| usable(i) && !view.backup[i]);
        let any = (0..view.len()).any(usable);
        // Configured weights and backup flags that disagree with the view's.
        let m: Vec<Member> = members(&configured[..view.len().min(16)])
            .into_iter()
            .enumerate()
            .map(|(i, m)| Member { backup: view.backup[i] != (i % 5 == 0), ..m })
            .collect();
        let view_len = view.len().min(m.len());
        let usable_in = |i: usize| i < view_len && usable(i);
        let primary = primary && (0..view_len).any(|i| usable_in(i) && !view.backup[i]);
        let any = any && (0..view_len).any(usable_in);
        for algo in algorithms() {
            let mut b = Balancer::new(&algo, &m, core, seed);
            for (k, key) in keys.iter().enumerate() {
                let ctx = PickCtx {
                    client_ip: IpAddr::V4(Ipv4Addr::from(k as u32 * 977)),
                    key: key.as_ref().map(|k| &k[..]),
                };
                match b.pick(&view, &ctx) {
                    None => prop_assert!(!any, "{:?} found nothing", algo),
                    Some(i) => {
                        prop_assert!(usable_in(i), "{:?} picked unusable {}", algo, i);
                        prop_assert_eq!(view.backup[i], !primary, "{:?} tier", &algo);
                    }
                }
            }
        }
    }

    #[test]
    fn slow_start_weight_is_bounded(w in 0..2000u32, e in 0..100_000u64, win in 0..100_000u64) {
        let got = slow_start_weight(w, Duration::from_millis(e), Duration::from_millis(win));
        prop_assert!(got <= w * SLOW_START_SCALE);
        prop_assert!(w == 0 || got >= 1);
        if e >= win {
            prop_assert_eq!(got, w * SLOW_START_SCALE);
        }
    }

    #[test]
    fn slow_start_weight_matches_exact_arithmetic(
        w in 1..u32::MAX / SLOW_START_SCALE,
        e in any::<u64>(),
        win in any::<u64>(),
        win_secs in prop_oneof![Just(0u64), 0..u64::MAX / 2],
    ) {
        let e = Duration::from_nanos(e);
        let win = Duration::new(win_secs, 0) + Duration::from_nanos(win);
        let full = w * SLOW_START_SCALE;
        let exact = if e >= win {
            full
        } else {
            ((u128::from(full) * e.as_nanos() / win.as_nanos()) as u32).max(1)
        };
        prop_assert_eq!(slow_start_weight(w, e, win), exact);
    }

    #[test]
    fn ewma_stays_between_prev_and_sample(
        prev in 1..u64::MAX / 2,
        sample in 0..u64::MAX / 2,
        elapsed in any::<u64>(),
        decay in 1..u64::MAX,
    ) {
        let next = ewma_next(prev, sample, elapsed, decay);
        prop_assert!(next >= sample.min(prev).max(1) && next <= sample.max(prev), "{}", next);
    }
}

#[test]
fn slow_start_ramps_linearly() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    // On the scale of 16 per unit of weight.
    assert_eq!(slow_start_weight(100, s(0), s(30)), 1);
    assert_eq!(slow_start_weight(100, s(15), s(30)), 800);
    assert_eq!(slow_start_weight(100, s(29), s(30)), 1546);
    assert_eq!(slow_start_weight(100, s(30), s(30)), 1600);
    assert_eq!(slow_start_weight(100, s(99), s(30)), 1600);
    assert_eq!(slow_start_weight(7, s(1), s(0)), 112);
    assert_eq!(slow_start_weight(0, s(1), s(30)), 0);
    // Weight 1, the default, ramps too: a sixteenth of the way in, a sixteenth of the weight.
    assert_eq!(slow_start_weight(1, s(0), s(16)), 1);
    assert_eq!(slow_start_weight(1, s(1), s(16)), 1);
    assert_eq!(slow_start_weight(1, s(4), s(16)), 4);
    assert_eq!(slow_start_weight(1, ms(8_500), s(16)), 8);
    assert_eq!(slow_start_weight(1, s(16), s(16)), 16);
}

#[test]
fn slow_start_at_weight_1_gives_a_new_server_a_small_share() {
    // Two servers of weight 1 under round robin: one up for long, one up for 1 s of a 10 s
    // window. The new one gets weight 1.6 of 17.6 (rounded down: 1 of 17), about 6%.
    let old = slow_start_weight(1, Duration::from_secs(60), Duration::from_secs(10));
    let new = slow_start_weight(1, Duration::from_secs(1), Duration::from_secs(10));
    let view = TestView::with_weights(&[old, new]);
    let mut b = Balancer::new(
        &Algorithm::RoundRobin,
        &[
            Member {
                id: "a",
                weight: 1,
                backup: false,
            },
            Member {
                id: "b",
                weight: 1,
                backup: false,
            },
        ],
        0,
        1,
    );
    let mut counts = [0u32; 2];
    for _ in 0..1700 {
        let i = b.pick(&view, &TestView::ctx()).expect("usable");
        counts[i] += 1;
    }
    assert_eq!(counts, [1600, 100]);
}

#[test]
fn ewma_takes_peaks_at_once_and_decays_with_time() {
    const MS: u64 = 1_000_000;
    const TAU: u64 = 10_000 * MS;
    assert_eq!(ewma_next(0, 5 * MS, 0, TAU), 5 * MS);
    assert_eq!(ewma_next(5 * MS, 50 * MS, 0, TAU), 50 * MS);
    // A lower sample right after the previous one barely moves the value...
    assert!(ewma_next(50 * MS, 5 * MS, MS, TAU) > 49 * MS);
    // ...after one tau it is 1/e of the way from the sample...
    let one_tau = ewma_next(50 * MS, 5 * MS, TAU, TAU);
    let want = 5.0 + 45.0 / std::f64::consts::E;
    assert!(
        (one_tau as f64 / MS as f64 - want).abs() < 0.01,
        "{one_tau}"
    );
    // ...and after many it is the sample.
    assert_eq!(ewma_next(50 * MS, 5 * MS, 100 * TAU, TAU), 5 * MS);
    assert_eq!(ewma_next(0, 0, 0, TAU), 1, "0 means no sample");
    // Above 2^53 ns f64 rounding must not push the value past prev (found by proptest).
    let (prev, sample) = (511_366_267_145_525_454, 41_304_239_656_933_217);
    assert!(ewma_next(prev, sample, u64::MAX / 2, 1) >= sample);
}

#[test]
fn stable_hash_is_frozen() {
    // XXH3-64, seed 0: the published empty-input value, and values pinned when the ring shipped.
    assert_eq!(stable_hash(b""), 0x2D06_8005_38D3_94C2);
    assert_eq!(stable_hash(b"/index.html"), 0xAA8F_18AB_73B5_F828);
    assert_eq!(stable_hash(&[10, 0, 0, 1]), 0x83CF_F27F_7DA3_9D96);
    assert_eq!(rehash(0), 0xE220_A839_7B1D_CDAF);
}

#[test]
fn rng_is_seeded_per_core() {
    let draws = |seed, core| {
        let mut r = super::Rng::new(seed, core);
        (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
    };
    assert_eq!(draws(1, 0), draws(1, 0));
    assert_ne!(draws(1, 0), draws(1, 1));
    assert_ne!(draws(1, 0), draws(2, 0));
    let mut r = super::Rng::new(0, 0);
    assert!((0..1000).all(|_| r.below(7) < 7));
    assert_eq!(r.below(0), 0);
}

#[test]
fn names() {
    let names: Vec<_> = algorithms().iter().map(Algorithm::name).collect();
    assert_eq!(
        names,
        [
            "round_robin",
            "least_conn",
            "ip_hash",
            "hash",
            "hash",
            "hash",
            "p2c_ewma",
            "random"
        ]
    );
}

/// An upstream whose names have not resolved yet has no member: every algorithm says so
/// instead of panicking.
#[test]
fn an_empty_upstream_picks_nothing() {
    let algorithms = [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::IpHash,
        Algorithm::Hash {
            key: HashKey::RequestUri,
            consistent: true,
            bounded_load: Some(1.25),
        },
        Algorithm::Hash {
            key: HashKey::RequestUri,
            consistent: false,
            bounded_load: None,
        },
        Algorithm::P2cEwma,
        Algorithm::Random,
    ];
    let view = TestView::with_weights(&[]);
    for a in &algorithms {
        for core in 0..3 {
            let mut b = Balancer::new(a, &[], core, 7);
            let ctx = PickCtx {
                key: Some(b"/x"),
                ..TestView::ctx()
            };
            assert_eq!(b.pick(&view, &ctx), None, "{a:?}");
        }
    }
}
