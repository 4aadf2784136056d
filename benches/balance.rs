//! Cost of one `Balancer::pick` per algorithm, over 3 and 100 servers.
//!
//! The view is plain vectors with every server usable, mixed weights (1..=4), in-flight counts
//! and latencies, so no algorithm takes a shortcut. Keys and client addresses vary per pick.
//! `cargo bench --bench balance`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use ringlb::balance::{Algorithm, Balancer, HashKey, Member, PickCtx, ServerView};

struct View {
    weight: Vec<u32>,
    active: Vec<u32>,
    ewma_ns: Vec<u64>,
}

impl View {
    fn new(n: usize) -> Self {
        View {
            weight: (0..n).map(|i| 1 + (i % 4) as u32).collect(),
            active: (0..n).map(|i| (i * 7 % 13) as u32).collect(),
            ewma_ns: (0..n)
                .map(|i| 1_000_000 + (i as u64 * 7919 % 100) * 10_000)
                .collect(),
        }
    }
}

impl ServerView for View {
    fn len(&self) -> usize {
        self.weight.len()
    }
    fn usable(&self, _: usize) -> bool {
        true
    }
    fn backup(&self, _: usize) -> bool {
        false
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

fn hash(consistent: bool, bounded_load: Option<f64>) -> Algorithm {
    Algorithm::Hash {
        key: HashKey::RequestUri,
        consistent,
        bounded_load,
    }
}

fn pick(c: &mut Criterion) {
    let algorithms = [
        ("round_robin", Algorithm::RoundRobin),
        ("least_conn", Algorithm::LeastConn),
        ("ip_hash", Algorithm::IpHash),
        ("hash", hash(true, None)),
        ("hash_bounded", hash(true, Some(1.25))),
        ("hash_modulo", hash(false, None)),
        ("p2c_ewma", Algorithm::P2cEwma),
        ("random", Algorithm::Random),
    ];
    // About 40 bytes, like a request target.
    let keys: Vec<String> = (0..1024)
        .map(|i| format!("/api/v2/objects/{i:08}/thumbnail.jpg"))
        .collect();
    for n in [3, 100] {
        let view = View::new(n);
        let ids: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 256, i % 256))
            .collect();
        let members: Vec<Member> = ids
            .iter()
            .zip(&view.weight)
            .map(|(id, &weight)| Member {
                id,
                weight,
                backup: false,
            })
            .collect();
        for (name, algo) in &algorithms {
            let mut b = Balancer::new(algo, &members, 1, 0x5EED);
            let mut k = 0usize;
            c.bench_function(&format!("pick/{name}/{n}"), |bench| {
                bench.iter(|| {
                    k = k.wrapping_add(1);
                    let ctx = PickCtx {
                        client_ip: IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + k as u32)),
                        key: Some(keys[k & 1023].as_bytes()),
                    };
                    black_box(b.pick(black_box(&view), &ctx))
                })
            });
        }
    }
}

criterion_group!(benches, pick);
criterion_main!(benches);
