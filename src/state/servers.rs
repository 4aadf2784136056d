//! Shared, lock-free per-server state. One cache line per server; written with relaxed
//! atomics by whichever core learns something (a failure, a finished request), read by every
//! core on each pick. What one core learns about a dead server protects every core at once.

use crate::config::{Config, Server, ServerId};
use crate::engine::Signal;
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Operator-set state (config `drain`, admin API). Independent of health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AdminState {
    Ready = 0,
    /// Finish what is in flight, take no new requests or sessions.
    Drain = 1,
    /// Out of rotation entirely.
    Maint = 2,
}

impl AdminState {
    fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Drain,
            2 => AdminState::Maint,
            _ => AdminState::Ready,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// The operator's word for a state to set (admin API `{"state": ...}`): `ready`, `drain`
    /// or `maint`; `draining`, the [`Status`] it leads to, is taken for `drain` too.
    pub fn parse(word: &str) -> Option<AdminState> {
        match word {
            "ready" => Some(AdminState::Ready),
            "drain" | "draining" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }
}

/// What a server is, in the one vocabulary every surface uses: the admin API (`state`, and
/// `health` with `up` and `down`), the metric `ringlb_upstream_server_state{state}`, and the
/// log lines about a server ([`log_change`]). The operator's setting ([`AdminState`]) comes
/// first, then health (active and passive checks together).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Ready and healthy: takes new requests.
    Up,
    /// Ready but failed its health checks (active `fall`, or passive `max_fails`).
    Down,
    /// Set to drain: finishes what it has, takes no new requests or sessions.
    Draining,
    /// Set to maintenance: out of rotation entirely.
    Maint,
}

impl Status {
    /// Every status, in the order the metric renders them.
    pub const ALL: [Status; 4] = [Status::Up, Status::Down, Status::Draining, Status::Maint];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Draining => "draining",
            Status::Maint => "maint",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Logs that `server` of `upstream` changed state or health, in the one format every cause
/// uses: `server NAME (ADDR) of upstream U is STATUS[, health H]WHY`, with the fields
/// `upstream`, `server`, `state` and `health`. The health is spelled out when the status does
/// not show it (draining, maint). `why` follows the status word directly (`": 2 checks
/// failed"`, `" for 10s: ..."`). `target` is the caller's `module_path!()`, so per-module log
/// levels keep applying to the line.
pub fn log_change(
    target: &str,
    level: log::Level,
    upstream: &str,
    server: &Server,
    st: &ServerState,
    now: u64,
    why: std::fmt::Arguments<'_>,
) {
    let (state, health) = (st.status(now), st.health(now));
    let shown = match state {
        Status::Up | Status::Down => "",
        Status::Draining | Status::Maint => match health {
            Status::Up => ", health up",
            _ => ", health down",
        },
    };
    log::log!(
        target: target,
        level,
        upstream = upstream,
        server = server.name.as_str(),
        state = state.as_str(),
        health = health.as_str();
        "server {} ({}) of upstream {upstream} is {state}{shown}{why}",
        server.name,
        server.addr,
    );
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the process's clock origin; 0 means "never".
pub fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| Instant::now() - Duration::from_millis(1));
    origin.elapsed().as_millis() as u64
}

#[derive(Debug, Default)]
pub struct ServerState {
    /// Requests in flight to this server, across all cores (least_conn, max_conns, p2c).
    pub active: AtomicU32,
    /// EWMA of response latency, ns.
    pub ewma_ns: AtomicU64,
    /// When `ewma_ns` was last updated (`now_ms`).
    pub ewma_at_ms: AtomicU64,
    admin: AtomicU8,
    /// When the current drain began (Unix seconds; 0 = not draining): sticky sessions issued
    /// before it are the server's existing sessions.
    drain_since: AtomicU64,
    /// Passive health: failures counted in the current window.
    pub fails: AtomicU32,
    /// Start of the current failure window (`now_ms`).
    pub fail_window_ms: AtomicU64,
    /// Marked down by passive checks until this time (`now_ms`); 0 = not down.
    pub down_until_ms: AtomicU64,
    /// Weight currently in force (configured, or set through the admin API).
    pub weight: AtomicU32,
    /// When the server last became usable (`now_ms`), for slow start.
    pub up_since_ms: AtomicU64,
    /// Active health checks: false once `fall` checks failed in a row, true again after
    /// `rise` passes. Starts true (as HAProxy): checks only take servers out.
    pub check_up: AtomicBool,
    /// Last active check: HTTP status (0 = no response), when (`now_ms`, 0 = never), and
    /// how long it took (µs).
    pub last_check_status: AtomicU16,
    pub last_check_ms: AtomicU64,
    pub last_check_us: AtomicU32,
    pub last_check_ok: AtomicBool,
}

impl ServerState {
    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Relaxed))
    }

    /// Sets the operator state; a drain that begins now records when (a drain already in
    /// progress keeps its start).
    pub fn set_admin(&self, s: AdminState) {
        let before = self.admin.swap(s as u8, Relaxed);
        if s == AdminState::Drain && before != AdminState::Drain as u8 {
            self.drain_since.store(unix_secs(), Relaxed);
        }
    }

    /// When the current drain began (Unix seconds), if the server is draining.
    pub fn drain_since(&self) -> Option<u64> {
        (self.admin() == AdminState::Drain).then(|| self.drain_since.load(Relaxed))
    }

    /// Up as far as passive checks know at `now`.
    pub fn healthy(&self, now: u64) -> bool {
        let until = self.down_until_ms.load(Relaxed);
        until == 0 || now >= until
    }

    /// Eligible for new requests: ready, not failed by passive checks, up for active checks.
    pub fn usable(&self, now: u64) -> bool {
        self.admin.load(Relaxed) == AdminState::Ready as u8
            && self.healthy(now)
            && self.check_up.load(Relaxed)
    }

    /// Up as far as health knows (passive and active), whatever the admin state.
    pub fn up(&self, now: u64) -> bool {
        self.healthy(now) && self.check_up.load(Relaxed)
    }

    /// The server's [`Status`] at `now`: the operator's setting, then health.
    pub fn status(&self, now: u64) -> Status {
        match self.admin() {
            AdminState::Maint => Status::Maint,
            AdminState::Drain => Status::Draining,
            AdminState::Ready => self.health(now),
        }
    }

    /// Health alone (active and passive checks), whatever the operator set: `Up` or `Down`.
    pub fn health(&self, now: u64) -> Status {
        if self.up(now) {
            Status::Up
        } else {
            Status::Down
        }
    }

    /// RAII in-flight count: incremented now, decremented when the guard drops.
    pub fn begin(&self) -> Active<'_> {
        self.active.fetch_add(1, Relaxed);
        Active(self)
    }

    /// Like `begin`, but only while fewer than `max` requests are in flight: a hard limit
    /// across all cores (HAProxy `maxconn`), taken with a compare-and-swap.
    pub fn try_begin(&self, max: Option<u32>) -> Option<Active<'_>> {
        let Some(max) = max else {
            return Some(self.begin());
        };
        let mut cur = self.active.load(Relaxed);
        loop {
            if cur >= max {
                return None;
            }
            match self
                .active
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => return Some(Active(self)),
                Err(now) => cur = now,
            }
        }
    }

    /// Passive health (nginx `max_fails` / `fail_timeout`): `max_fails` failures within
    /// `fail_timeout` mark the server down for `fail_timeout`. Returns true when this failure
    /// took the server down.
    pub fn record_failure(&self, now: u64, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let window = fail_timeout.as_millis() as u64;
        let start = self.fail_window_ms.load(Relaxed);
        if start == 0 || now.saturating_sub(start) > window {
            self.fail_window_ms.store(now, Relaxed);
            self.fails.store(0, Relaxed);
        }
        let fails = self.fails.fetch_add(1, Relaxed) + 1;
        if fails >= max_fails && self.healthy(now) {
            self.down_until_ms.store(now + window, Relaxed);
            self.fails.store(0, Relaxed);
            self.fail_window_ms.store(0, Relaxed);
            return true;
        }
        false
    }

    /// A success clears the failure count (nginx resets `fails` on a successful response).
    pub fn record_success(&self) {
        if self.fails.load(Relaxed) != 0 {
            self.fails.store(0, Relaxed);
        }
    }
}

pub struct Active<'a>(&'a ServerState);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Indexed by [`ServerId`].
pub struct StateTable {
    /// Shared with the next generation for servers that stay (identity: upstream and server
    /// names), so health, failures and in-flight counts survive a reload.
    servers: Box<[Arc<CachePadded<ServerState>>]>,
    /// Each upstream's queue, across all cores (by `UpstreamId`).
    queues: Box<[CachePadded<UpstreamQueue>]>,
    /// Client connections open on each listener, across all cores (by `ListenerId`); a
    /// listener that keeps its sockets across a reload keeps its count.
    connections: Box<[Arc<CachePadded<AtomicU64>>]>,
    /// Moves when per-core balancers built from weights (hash rings, `ip_hash`) must be
    /// rebuilt: a weight set through the admin API. Algorithms that read the weight on each
    /// pick see the change without it.
    generation: CachePadded<AtomicU64>,
}

/// Requests waiting for a `max_conns` slot of one upstream, across all cores.
pub struct UpstreamQueue {
    /// Requests waiting, on every core.
    pub waiting: AtomicU32,
    /// One per core: raised when a request to a server of this upstream ends while requests
    /// wait, so the core's oldest waiter tries again (no polling).
    wake: Box<[Signal]>,
}

impl UpstreamQueue {
    /// The wake-up of core `core`'s oldest waiter.
    pub fn wake(&self, core: usize) -> &Signal {
        &self.wake[core % self.wake.len()]
    }

    /// A slot was freed: if requests wait, every core's oldest waiter tries again.
    pub fn slot_freed(&self) {
        if self.waiting.load(Relaxed) > 0 {
            for s in self.wake.iter() {
                s.raise();
            }
        }
    }
}

impl StateTable {
    /// The table for `config` served by `cores` cores.
    pub fn new(config: &Config, cores: usize) -> StateTable {
        let now = now_ms();
        let servers = config
            .servers()
            .map(|(_, s)| {
                let st = ServerState::default();
                st.weight.store(s.weight, Relaxed);
                st.up_since_ms.store(now, Relaxed);
                st.check_up.store(true, Relaxed);
                if s.drain {
                    st.set_admin(AdminState::Drain);
                }
                Arc::new(CachePadded::new(st))
            })
            .collect();
        StateTable {
            servers,
            queues: config
                .upstreams
                .iter()
                .map(|_| {
                    CachePadded::new(UpstreamQueue {
                        waiting: AtomicU32::new(0),
                        wake: (0..cores.max(1)).map(|_| Signal::default()).collect(),
                    })
                })
                .collect(),
            connections: config
                .listeners
                .iter()
                .map(|_| Default::default())
                .collect(),
            generation: CachePadded::new(AtomicU64::new(0)),
        }
    }

    pub fn queue(&self, upstream: crate::config::UpstreamId) -> &UpstreamQueue {
        &self.queues[upstream.0 as usize]
    }

    pub fn connections(&self, listener: crate::config::ListenerId) -> &AtomicU64 {
        &self.connections[listener.0 as usize]
    }

    /// The table for `config` replacing `old` (built from `old_config`): servers found in both
    /// keep their state; a weight changed in the file or `drain = true` is applied.
    pub fn carry(config: &Config, old_config: &Config, old: &StateTable) -> StateTable {
        let cores = old.queues.first().map_or(1, |q| q.wake.len());
        let mut fresh = StateTable::new(config, cores);
        for (u, s) in config.servers() {
            let before = old_config
                .upstreams
                .iter()
                .find(|ou| ou.name == u.name)
                .and_then(|ou| ou.servers.iter().find(|os| os.name == s.name));
            let Some(before) = before else { continue };
            let kept = old.servers[before.id.0 as usize].clone();
            if before.weight != s.weight {
                kept.weight.store(s.weight, Relaxed);
            }
            if s.drain {
                kept.set_admin(AdminState::Drain);
            }
            fresh.servers[s.id.0 as usize] = kept;
        }
        for (l, count) in config.listeners.iter().zip(fresh.connections.iter_mut()) {
            let same = |o: &crate::config::Listener| l.same_socket(o.addr, &o.name);
            if let Some(o) = old_config.listeners.iter().position(same) {
                *count = old.connections[o].clone();
            }
        }
        fresh
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    pub fn bump_generation(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn get(&self, id: ServerId) -> &ServerState {
        &self.servers[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_fails_within_window_marks_down_then_recovers() {
        let s = ServerState::default();
        s.check_up.store(true, Relaxed);
        let ft = Duration::from_secs(10);
        assert!(!s.record_failure(1000, 3, ft));
        assert!(!s.record_failure(2000, 3, ft));
        assert!(s.healthy(2000));
        assert!(s.record_failure(3000, 3, ft));
        assert!(!s.healthy(3000));
        assert!(!s.usable(12_999));
        assert!(s.usable(13_000));
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let s = ServerState::default();
        let ft = Duration::from_secs(1);
        assert!(!s.record_failure(1000, 2, ft));
        assert!(!s.record_failure(2500, 2, ft));
        assert!(s.healthy(2500));
    }

    #[test]
    fn max_fails_zero_never_marks_down() {
        let s = ServerState::default();
        for t in 1..100 {
            assert!(!s.record_failure(t, 0, Duration::from_secs(10)));
        }
        assert!(s.healthy(100));
    }

    #[test]
    fn try_begin_is_a_hard_limit() {
        let s = ServerState::default();
        let a = s.try_begin(Some(2)).unwrap();
        let b = s.try_begin(Some(2)).unwrap();
        assert!(s.try_begin(Some(2)).is_none());
        drop(a);
        let c = s.try_begin(Some(2));
        assert!(c.is_some());
        drop((b, c));
        assert_eq!(s.active.load(Relaxed), 0);
        assert!(s.try_begin(None).is_some());
    }

    #[test]
    fn active_guard_counts_in_flight() {
        let s = ServerState::default();
        {
            let _a = s.begin();
            let _b = s.begin();
            assert_eq!(s.active.load(Relaxed), 2);
        }
        assert_eq!(s.active.load(Relaxed), 0);
    }

    #[test]
    fn status_is_the_setting_then_health() {
        let s = ServerState::default();
        s.check_up.store(true, Relaxed);
        assert_eq!(s.status(1), Status::Up);
        s.check_up.store(false, Relaxed);
        assert_eq!((s.status(1), s.health(1)), (Status::Down, Status::Down));
        s.set_admin(AdminState::Drain);
        assert_eq!((s.status(1), s.health(1)), (Status::Draining, Status::Down));
        s.set_admin(AdminState::Maint);
        assert_eq!(s.status(1), Status::Maint);
        let words: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(words, ["up", "down", "draining", "maint"]);
        assert_eq!(AdminState::parse("draining"), Some(AdminState::Drain));
        assert_eq!(AdminState::parse("down"), None);
    }

    #[test]
    fn drain_and_maint_are_not_usable() {
        let s = ServerState::default();
        s.check_up.store(true, Relaxed);
        s.set_admin(AdminState::Drain);
        assert!(!s.usable(1));
        s.set_admin(AdminState::Maint);
        assert!(!s.usable(1));
        s.set_admin(AdminState::Ready);
        assert!(s.usable(1));
    }
}
