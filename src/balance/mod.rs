//! Server selection for one upstream: one file per algorithm behind [`Balancer`].
//!
//! Contract: a `Balancer` runs on its owning core, takes no lock, does no I/O and allocates only
//! in [`Balancer::new`]. A pick never panics; when no server is usable it returns `None`.
//!
//! The proxy builds one `Balancer` per upstream per core and builds a new one when membership or
//! configured weights change (the shared table's generation moves), as nginx `init_upstream`
//! does. Everything that changes between requests (health, drain, maintenance, `max_conns`,
//! servers excluded by a retry, slow start, in-flight counts, latency) reaches the algorithm at
//! pick time through [`ServerView`], so it needs no rebuild.
//!
//! Backup servers: [`Balancer::pick`] runs the algorithm over the primary servers and, only when
//! none of them is usable, over the backup servers (nginx and HAProxy `backup`). Each pass sees a
//! `TierView` that hides the servers of the other tier, so the algorithms know nothing of
//! backups and both passes share one algorithm state without allocating.
//!
//! Every algorithm returns `Some` whenever its view has a usable server; the backup pass relies
//! on it.
//!
//! Cost of a pick (`benches/balance.rs`): `p2c_ewma`, `random`, `ip_hash` and `hash` read a
//! few servers; `round_robin` and `least_conn` read every server of the upstream on every pick,
//! as nginx does, and so does `hash` with `bounded_load` (to count the in-flight total). The
//! view's methods are therefore on the request path once per server: they should be plain
//! loads (an effective weight stored by the control plane, not [`slow_start_weight`] computed
//! per call).
//!
//! Uses no other module of ringlb: indices, weights and state in, a server index out.

mod hash;
mod ip_hash;
mod least_conn;
mod p2c_ewma;
mod random;
mod round_robin;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::Duration;

pub use hash::Hash;
pub use ip_hash::IpHash;
pub use least_conn::LeastConn;
pub use p2c_ewma::P2cEwma;
pub use random::Random;
pub use round_robin::RoundRobin;

/// What a balancer sees of the servers of one upstream, by index `0..len`.
///
/// The proxy implements it over the shared server-state atomics; tests implement it over plain
/// `Vec`s. Servers already tried by a retry are folded into [`usable`](Self::usable) by the
/// caller. Balancers call the methods other than `len` and `usable` only for indices that are
/// usable, and never with an index `>= len`.
pub trait ServerView {
    /// Number of servers in the upstream.
    fn len(&self) -> usize;
    /// `len() == 0`.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up, not draining, not in maintenance, under `max_conns`, not excluded by a retry.
    fn usable(&self, i: usize) -> bool;
    /// Backup servers are considered only when no primary server is usable.
    fn backup(&self, i: usize) -> bool;
    /// Effective weight now (slow start applied); 0 makes the server unusable. Algorithms use
    /// only the ratios of the weights of one upstream, so a view may return them on any scale
    /// common to that upstream: the configured weight (`1..=1000`), or, with slow start, the
    /// values of [`slow_start_weight`] (`weight * SLOW_START_SCALE` once ramped up).
    fn weight(&self, i: usize) -> u32;
    /// In-flight requests to this server across all cores.
    fn active(&self, i: usize) -> u32;
    /// EWMA of response latency in ns; 0 means no sample yet.
    fn ewma_ns(&self, i: usize) -> u64;
}

/// Per-request input to a pick.
#[derive(Clone, Copy, Debug)]
pub struct PickCtx<'a> {
    /// The downstream peer address; the key of `ip_hash`.
    pub client_ip: IpAddr,
    /// The hash key the proxy extracted per [`HashKey`]; `None` when the request lacks it.
    pub key: Option<&'a [u8]>,
}

/// Where `balance = "hash"` takes its key from.
#[derive(Clone, Debug, PartialEq)]
pub enum HashKey {
    /// The request target as received.
    RequestUri,
    /// The downstream IP; the proxy passes its text form as the key.
    RemoteAddr,
    /// A request header; lowercase name.
    Header(Box<[u8]>),
    /// A cookie by name.
    Cookie(Box<[u8]>),
}

/// A balancing algorithm as configured for an upstream.
#[derive(Clone, Debug, PartialEq)]
pub enum Algorithm {
    RoundRobin,
    LeastConn,
    IpHash,
    Hash {
        key: HashKey,
        /// A ring (ketama) instead of a weighted `hash mod total_weight` mapping.
        consistent: bool,
        /// Consistent hashing with bounded loads, factor `c > 1`; only with `consistent`.
        bounded_load: Option<f64>,
    },
    P2cEwma,
    Random,
}

impl Algorithm {
    /// The configuration name (`balance = "..."`).
    pub fn name(&self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::LeastConn => "least_conn",
            Algorithm::IpHash => "ip_hash",
            Algorithm::Hash { .. } => "hash",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::Random => "random",
        }
    }
}

/// One server as configured, in upstream index order.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// Identity for consistent hashing: stable across restarts and nodes (the server's name, or
    /// its address string). Unique within the upstream.
    pub id: &'a str,
    /// Configured weight (not the effective weight).
    pub weight: u32,
    pub backup: bool,
}

/// The per-core balancer of one upstream.
#[derive(Clone, Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastConn(LeastConn),
    IpHash(IpHash),
    Hash(Hash),
    P2cEwma(P2cEwma),
    Random(Random),
}

impl Balancer {
    /// Builds the per-core instance; allocates.
    ///
    /// `core` staggers round-robin start positions across cores and is mixed into the PRNG
    /// seed, so cores given the same `seed` still draw different sequences. A pick depends only
    /// on `members`, `core`, `seed`, the views and contexts given so far.
    pub fn new(algo: &Algorithm, members: &[Member], core: usize, seed: u64) -> Self {
        match algo {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::new(members, core)),
            Algorithm::LeastConn => Balancer::LeastConn(LeastConn::new(members, core)),
            Algorithm::IpHash => Balancer::IpHash(IpHash::new(members)),
            Algorithm::Hash {
                consistent,
                bounded_load,
                ..
            } => Balancer::Hash(Hash::new(members, core, *consistent, *bounded_load)),
            Algorithm::P2cEwma => Balancer::P2cEwma(P2cEwma::new(members, Rng::new(seed, core))),
            Algorithm::Random => Balancer::Random(Random::new(members, Rng::new(seed, core))),
        }
    }

    /// Picks a server index, or `None` when no server is usable. Primary servers first; backup
    /// servers only when no primary server is usable.
    ///
    /// Servers at indices `>= members.len()` (given to [`new`](Self::new)) are never picked.
    pub fn pick(&mut self, view: &impl ServerView, ctx: &PickCtx) -> Option<usize> {
        let len = view.len().min(self.members());
        let primary = TierView::new(view, len, Tier::Primary);
        if let Some(i) = self.pick_in(&primary, ctx) {
            return Some(i);
        }
        self.pick_in(&TierView::new(view, len, Tier::Backup), ctx)
    }

    fn pick_in<V: ServerView>(&mut self, view: &TierView<'_, V>, ctx: &PickCtx) -> Option<usize> {
        match self {
            Balancer::RoundRobin(b) => b.pick(view),
            Balancer::LeastConn(b) => b.pick(view),
            Balancer::IpHash(b) => b.pick(view, ctx.client_ip),
            Balancer::Hash(b) => b.pick(view, ctx.key),
            Balancer::P2cEwma(b) => b.pick(view),
            Balancer::Random(b) => b.pick(view),
        }
    }

    fn members(&self) -> usize {
        match self {
            Balancer::RoundRobin(b) => b.members(),
            Balancer::LeastConn(b) => b.members(),
            Balancer::IpHash(b) => b.members(),
            Balancer::Hash(b) => b.members(),
            Balancer::P2cEwma(b) => b.members(),
            Balancer::Random(b) => b.members(),
        }
    }
}

/// The scale of the weights [`slow_start_weight`] returns: a configured weight `w` is `w * 16`
/// (HAProxy's `BE_WEIGHT_SCALE`), so even a server of weight 1, the default, ramps up in 16
/// steps instead of starting at full weight.
pub const SLOW_START_SCALE: u32 = 16;

/// Slow start (nginx `slow_start`, HAProxy `slowstart`): the effective weight grows linearly over
/// `window` after a server comes up, on the finer scale [`SLOW_START_SCALE`].
///
/// Returns `weight * SLOW_START_SCALE * elapsed / window`, at least 1, and
/// `weight * SLOW_START_SCALE` once `elapsed >= window` or when `window` is zero. A `weight` of 0
/// stays 0 (the server is unusable). A view returns these for every server of an upstream with
/// slow start, so all its weights share the scale (see [`ServerView::weight`]).
pub fn slow_start_weight(weight: u32, elapsed: Duration, window: Duration) -> u32 {
    let full = weight.saturating_mul(SLOW_START_SCALE);
    if weight == 0 || elapsed >= window {
        return full;
    }
    let (elapsed, window) = (elapsed.as_nanos(), window.as_nanos());
    // Views call this once per server per pick; u64 arithmetic avoids a u128 division whenever
    // the product fits (weight 1000 and a window up to 13 days).
    let product = u64::try_from(elapsed)
        .ok()
        .and_then(|e| e.checked_mul(u64::from(full)));
    let scaled = match (product, u64::try_from(window)) {
        (Some(p), Ok(w)) => u128::from(p / w),
        _ => u128::from(full) * elapsed / window,
    };
    // scaled < full because elapsed < window, so it fits in u32.
    (scaled as u32).max(1)
}

/// One step of the peak-sensitive EWMA of response latency used by `p2c_ewma` (Finagle
/// `PeakEwma`, Linkerd `PeakEwma`).
///
/// A sample above the current value is taken at once, so a server that slows down loses traffic
/// within one response; a lower sample is blended in with weight `1 - exp(-elapsed / decay)`, so
/// a server recovers over about `decay` (10 s by default). `elapsed_ns` is the time since the
/// previous sample. `prev_ns == 0` (no sample yet) takes the sample. The result is at least 1,
/// since 0 means "no sample".
pub fn ewma_next(prev_ns: u64, sample_ns: u64, elapsed_ns: u64, decay_ns: u64) -> u64 {
    if prev_ns == 0 || sample_ns >= prev_ns || decay_ns == 0 {
        return sample_ns.max(1);
    }
    let w = (-(elapsed_ns as f64) / decay_ns as f64).exp();
    let next = prev_ns as f64 * w + sample_ns as f64 * (1.0 - w);
    // f64 rounding above 2^53 ns could step outside [sample, prev].
    (next as u64).clamp(sample_ns.max(1), prev_ns)
}

/// The stable 64-bit hash of hash keys (`hash`) and client addresses (`ip_hash`): XXH3-64 with
/// seed 0.
///
/// Frozen: every ringlb node, restart and version must map a key to the same server, so this
/// function and the ring point hash in `hash.rs` never change (`stable_hash_is_frozen` pins
/// known values). ahash is not used here because its output may change between versions.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Which servers a pass of [`Balancer::pick`] considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tier {
    Primary,
    Backup,
}

/// A [`ServerView`] restricted to one tier and to the servers the balancer was built for: a
/// server is usable only if the underlying view says so, it is in this tier, and its weight is
/// not 0.
pub(crate) struct TierView<'a, V> {
    view: &'a V,
    len: usize,
    tier: Tier,
}

impl<'a, V: ServerView> TierView<'a, V> {
    pub(crate) fn new(view: &'a V, len: usize, tier: Tier) -> Self {
        TierView { view, len, tier }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn tier(&self) -> Tier {
        self.tier
    }

    #[inline]
    pub(crate) fn usable(&self, i: usize) -> bool {
        i < self.len
            && self.view.usable(i)
            && self.view.backup(i) == (self.tier == Tier::Backup)
            && self.view.weight(i) > 0
    }

    /// The weight of server `i` if it is usable, else 0; one call instead of `usable` and
    /// `weight` for the algorithms that scan every server.
    #[inline]
    pub(crate) fn usable_weight(&self, i: usize) -> u32 {
        if i < self.len && self.view.usable(i) && self.view.backup(i) == (self.tier == Tier::Backup)
        {
            self.view.weight(i)
        } else {
            0
        }
    }

    #[inline]
    pub(crate) fn weight(&self, i: usize) -> u32 {
        self.view.weight(i)
    }

    #[inline]
    pub(crate) fn active(&self, i: usize) -> u32 {
        self.view.active(i)
    }

    #[inline]
    pub(crate) fn ewma_ns(&self, i: usize) -> u64 {
        self.view.ewma_ns(i)
    }

    /// The first usable server at or after `hash % len`, wrapping; deterministic fallback for
    /// the hashing algorithms.
    pub(crate) fn next_usable(&self, hash: u64) -> Option<usize> {
        let n = self.len;
        if n == 0 {
            return None;
        }
        let start = (hash % n as u64) as usize;
        (start..n).chain(0..start).find(|&i| self.usable(i))
    }
}

/// Per-core PRNG: `fastrand`'s wyrand (one multiply per draw), seeded so that a balancer's
/// picks are reproducible in tests. Not for secrets.
#[derive(Clone, Debug)]
pub(crate) struct Rng(fastrand::Rng);

impl Rng {
    pub(crate) fn new(seed: u64, core: usize) -> Self {
        Rng(fastrand::Rng::with_seed(
            seed ^ (core as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ))
    }

    #[cfg(test)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.u64(..)
    }

    /// Uniform in `0..n`; 0 when `n == 0`.
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.u64(..n)
        }
    }
}

/// Maps a hash to a server in proportion to configured weights, as nginx `ip_hash` and
/// `hash $key` (without `consistent`) do: a point `r` in `0..total_weight`, then the server whose
/// weight interval holds `r`. One table per tier, built from [`Member`]s.
///
/// `r` is `(hash * total_weight) >> 64` (Lemire's multiply-shift range reduction) rather than
/// nginx's `hash % total_weight`: the same distribution without a 64-bit division. Frozen, like
/// [`stable_hash`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Weighted {
    /// Exclusive end of each server's interval in `0..total`.
    ends: Vec<u64>,
    servers: Vec<u32>,
    /// The slot of every `r` when `total <= DIRECT_MAX`, so a pick needs no search.
    direct: Vec<u32>,
    total: u64,
}

/// nginx tries 20 hashes before giving up on the hash (`ngx_http_upstream_get_ip_hash_peer`).
const REHASH_TRIES: usize = 20;

/// Largest total weight with a direct table (4 bytes per unit of weight, per tier, per core).
const DIRECT_MAX: u64 = 1 << 13;

impl Weighted {
    pub(crate) fn new(members: &[Member], tier: Tier) -> Self {
        let mut w = Weighted::default();
        for (i, m) in members.iter().enumerate() {
            if m.backup == (tier == Tier::Backup) && m.weight > 0 {
                w.total += u64::from(m.weight);
                w.ends.push(w.total);
                w.servers.push(i as u32);
            }
        }
        if w.total <= DIRECT_MAX {
            w.direct = (0..w.total).map(|r| w.search(r) as u32).collect();
        }
        w
    }

    fn search(&self, r: u64) -> usize {
        self.ends.partition_point(|&end| end <= r)
    }

    #[inline]
    fn slot(&self, hash: u64) -> usize {
        let r = ((u128::from(hash) * u128::from(self.total)) >> 64) as u64;
        match self.direct.get(r as usize) {
            Some(&slot) => slot as usize,
            None => self.search(r),
        }
    }

    /// The server for `hash`; if it is not usable, up to [`REHASH_TRIES`] rehashes, then the
    /// next usable server in table order, then any usable server of the view.
    ///
    /// nginx falls back to round robin after its 20 tries; walking on deterministically instead
    /// keeps a key on the same server on every core and node while its servers are down.
    pub(crate) fn pick<V: ServerView>(&self, view: &TierView<'_, V>, hash: u64) -> Option<usize> {
        if self.total == 0 {
            return view.next_usable(hash);
        }
        let mut h = hash;
        let mut slot = 0;
        for _ in 0..REHASH_TRIES {
            slot = self.slot(h);
            let i = self.servers[slot] as usize;
            if view.usable(i) {
                return Some(i);
            }
            h = rehash(h);
        }
        let n = self.servers.len();
        let mut next = (slot + 1..n)
            .chain(0..slot)
            .map(|s| self.servers[s] as usize);
        if let Some(i) = next.find(|&i| view.usable(i)) {
            return Some(i);
        }
        // The view may disagree with the members about which servers are backups.
        view.next_usable(hash)
    }
}

/// The next hash in a rehash sequence (SplitMix64 finalizer). Frozen, like [`stable_hash`].
#[inline]
pub(crate) fn rehash(h: u64) -> u64 {
    let mut z = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
