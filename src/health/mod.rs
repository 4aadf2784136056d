//! Active health checks: one HTTP check per server per interval for the whole process (not per
//! core), run on one control core of the engine (an unpinned thread), off the request path. Results go
//! to the shared state table (`check_up`, `last_check_*`), which every core reads on each pick.
//!
//! A check: TCP connect, `GET {path}` with `Connection: close`, read the response head; it
//! passes when the status is in `expect`. The whole check (connect, write, read) must finish
//! within `timeout`. `fall` failures in a row take a server down, `rise` passes in a row bring
//! it back (HAProxy `rise`/`fall`); a server starts up, so checks only take servers out.
//!
//! A server taken out by passive checks (failed requests, `max_fails`) also returns after
//! `rise` passes counted from when the checker first saw it down, instead of waiting for the
//! rest of `fail_timeout`, as HAProxy does when it observes errors on a checked server.
//!
//! Uses `http1`, `config`, `engine`, `state`, `metrics`, `tls` (upstream TLS) and `context`.

use crate::config::{HealthCheck, Server, Upstream};
use crate::context::{Current, Shared};
use crate::engine::{self, CoreSpec, EngineKind, Stream};
use crate::http1::{self, Method, ResponseHead, Status};
use crate::state::{log_change, now_ms};
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registered I/O memory of the checker's executor: checks move a few hundred bytes each.
const IO_MEMORY: usize = 256 * 1024;

/// The running checker thread.
pub struct Checker {
    core: engine::Core,
}

impl Checker {
    /// Waits for the thread, which ends as soon as the process stops (it is woken).
    pub fn join(self) {
        if !self.core.join() {
            log::error!("the health check thread panicked");
        }
    }
}

/// Starts the checker thread. It checks the servers of the generation in force, and starts
/// over with the new servers when a reload publishes another. `wake` is its index in
/// `Life::wake` (after the workers').
/// `engine` is the workers' engine.
pub fn start(
    current: Arc<Current>,
    wake: usize,
    engine: EngineKind,
) -> Result<Option<Checker>, engine::StartError> {
    let spec = CoreSpec {
        name: "ringlb-health".into(),
        cpu: None,
        io_memory: IO_MEMORY,
        engine,
    };
    let core = engine::Core::start(spec, move || async move {
        let mut seen = 0;
        loop {
            let shared = current.load_full();
            let targets = targets(&shared.config.upstreams);
            let n = targets.len();
            if n > 0 {
                log::info!("health checks: {n} servers");
            }
            let tasks: Vec<engine::Task<()>> = targets
                .iter()
                .enumerate()
                .map(|(i, &(u, s))| engine::spawn(check_loop(shared.clone(), u, s, i, n)))
                .collect();
            while !shared.stopping() && current.load().generation == shared.generation {
                shared.life.wake(wake).wait(&mut seen).await;
            }
            // Dropping a task cancels it, with any check in progress.
            drop(tasks);
            if shared.stopping() {
                return;
            }
        }
    })?;
    Ok(Some(Checker { core }))
}

/// (upstream index, server index) of every checked server.
fn targets(upstreams: &[Upstream]) -> Vec<(usize, usize)> {
    upstreams
        .iter()
        .enumerate()
        .filter(|(_, u)| u.health_check.is_some())
        .flat_map(|(ui, u)| (0..u.servers.len()).map(move |si| (ui, si)))
        .collect()
}

/// First check of target `i` of `n`: spread over one interval, so checks do not fire together.
fn first_delay(interval: Duration, i: usize, n: usize) -> Duration {
    let (i, n) = (i as u128, n.max(1) as u128);
    let ns = interval.as_nanos() * i / n;
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Checks one server every interval until the task is dropped.
async fn check_loop(shared: Arc<Shared>, u: usize, s: usize, i: usize, n: usize) {
    let upstream = &shared.config.upstreams[u];
    let Some(hc) = &upstream.health_check else {
        return;
    };
    let server = &upstream.servers[s];
    let state = shared.state.get(server.id);
    let request = check_request(hc, server);
    let mut buf = vec![0u8; http1::Limits::default().max_head + 1];
    let mut head = ResponseHead::new();
    let mut counter = Counter::default();
    let mut passive_seen = false;
    engine::sleep(first_delay(hc.interval, i, n)).await;
    loop {
        let started = Instant::now();
        let outcome = check(&shared, server, &request, hc.timeout, &mut buf, &mut head).await;
        let took = started.elapsed();
        let pass = matches!(outcome, Outcome::Status(code) if hc.expect.contains(&code));
        shared.metrics.health_check(server.id, pass, took);
        let now = now_ms();
        state.last_check_status.store(outcome.status(), Relaxed);
        state
            .last_check_us
            .store(u32::try_from(took.as_micros()).unwrap_or(u32::MAX), Relaxed);
        state.last_check_ok.store(pass, Relaxed);
        state.last_check_ms.store(now, Relaxed);

        let passive_down = !state.healthy(now);
        if passive_down && !passive_seen {
            // Passes before the passive mark do not count towards bringing it back.
            counter.passes = 0;
        }
        passive_seen = passive_down;
        match counter.record(pass, hc) {
            Some(Transition::Up) if !state.check_up.load(Relaxed) || passive_down => {
                state.up_since_ms.store(now, Relaxed);
                state.down_until_ms.store(0, Relaxed);
                state.check_up.store(true, Relaxed);
                passive_seen = false;
                log_change(
                    module_path!(),
                    log::Level::Info,
                    &upstream.name,
                    server,
                    state,
                    now,
                    format_args!(": {} checks passed", counter.passes),
                );
            }
            Some(Transition::Down) if state.check_up.load(Relaxed) => {
                state.check_up.store(false, Relaxed);
                log_change(
                    module_path!(),
                    log::Level::Warn,
                    &upstream.name,
                    server,
                    state,
                    now,
                    format_args!(": {} checks failed (last: {outcome})", counter.fails),
                );
            }
            _ => {}
        }
        engine::sleep(hc.interval.saturating_sub(took)).await;
    }
}

fn check_request(hc: &HealthCheck, server: &Server) -> Vec<u8> {
    let host = match &hc.host {
        Some(h) => h.clone(),
        None => server.addr.to_string(),
    };
    format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringlb-health\r\nConnection: close\r\n\r\n",
        hc.path
    )
    .into_bytes()
}

/// What one check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    Connect(std::io::ErrorKind),
    Timeout,
    /// The server closed or reset the connection before a complete response head.
    Closed,
    Invalid,
}

impl Outcome {
    /// The HTTP status, 0 when there was none.
    fn status(self) -> u16 {
        match self {
            Outcome::Status(s) => s,
            _ => 0,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "status {s}"),
            Outcome::Connect(kind) => write!(f, "connect failed: {kind}"),
            Outcome::Timeout => f.write_str("timed out"),
            Outcome::Closed => f.write_str("connection closed before a response"),
            Outcome::Invalid => f.write_str("invalid response"),
        }
    }
}

/// Opens the connection a check runs over: TLS, verified as for requests, when the upstream
/// has `tls`.
async fn connect(shared: &Shared, server: &Server, timeout: Duration) -> std::io::Result<Stream> {
    Stream::connect_upstream(
        server.addr,
        timeout,
        shared.tls.client(server.id, server.addr),
    )
    .await
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// One check within `timeout` overall. `buf` holds the response head (its length bounds it).
async fn check(
    shared: &Shared,
    server: &Server,
    request: &[u8],
    timeout: Duration,
    buf: &mut [u8],
    head: &mut ResponseHead,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let mut s = match connect(shared, server, timeout).await {
        Ok(s) => s,
        Err(e) if is_timeout(&e) => return Outcome::Timeout,
        Err(e) => return Outcome::Connect(e.kind()),
    };
    if left().is_zero() {
        return Outcome::Timeout;
    }
    match s.write_all(request, left()).await {
        Ok(()) => {}
        Err(e) if is_timeout(&e) => return Outcome::Timeout,
        Err(_) => return Outcome::Closed,
    }
    let limits = http1::Limits {
        max_head: buf.len() - 1,
        ..http1::Limits::default()
    };
    let mut len = 0;
    loop {
        let wait = left();
        if wait.is_zero() {
            return Outcome::Timeout;
        }
        match s.read(&mut buf[len..], wait).await {
            Ok(0) => return Outcome::Closed,
            Ok(n) => len += n,
            Err(e) if is_timeout(&e) => return Outcome::Timeout,
            Err(_) => return Outcome::Closed,
        }
        match http1::parse_response(&buf[..len], &limits, Method::Get, head) {
            // 1xx is not the final answer (RFC 9110 §15.2); a check server has no reason to
            // send one, so it counts as a failure rather than being skipped.
            Ok(Status::Complete) => return Outcome::Status(head.status),
            Ok(Status::Partial) if len < buf.len() => continue,
            _ => return Outcome::Invalid,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Up,
    Down,
}

/// Consecutive passes and failures of one server. I/O-free, so the rise/fall rule is tested
/// without sockets.
#[derive(Debug, Default)]
struct Counter {
    passes: u32,
    fails: u32,
}

impl Counter {
    /// Records one result. `Up` once `rise` passes are in a row, `Down` once `fall` failures
    /// are; the caller applies a transition only when it changes the server's state.
    fn record(&mut self, pass: bool, hc: &HealthCheck) -> Option<Transition> {
        if pass {
            self.fails = 0;
            self.passes = self.passes.saturating_add(1);
            (self.passes >= hc.rise).then_some(Transition::Up)
        } else {
            self.passes = 0;
            self.fails = self.fails.saturating_add(1);
            (self.fails >= hc.fall).then_some(Transition::Down)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(rise: u32, fall: u32) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            rise,
            fall,
            expect: 200..=399,
            host: None,
        }
    }

    #[test]
    fn fall_failures_in_a_row_take_down_and_a_pass_resets_them() {
        let hc = hc(2, 3);
        let mut c = Counter::default();
        assert_eq!(c.record(false, &hc), None);
        assert_eq!(c.record(false, &hc), None);
        assert_eq!(c.record(true, &hc), None);
        assert_eq!(c.record(false, &hc), None);
        assert_eq!(c.record(false, &hc), None);
        assert_eq!(c.record(false, &hc), Some(Transition::Down));
        assert_eq!(c.fails, 3);
    }

    #[test]
    fn rise_passes_in_a_row_bring_up() {
        let hc = hc(2, 1);
        let mut c = Counter::default();
        assert_eq!(c.record(false, &hc), Some(Transition::Down));
        assert_eq!(c.record(true, &hc), None);
        assert_eq!(c.record(false, &hc), Some(Transition::Down));
        assert_eq!(c.record(true, &hc), None);
        assert_eq!(c.record(true, &hc), Some(Transition::Up));
        assert_eq!(c.passes, 2);
    }

    #[test]
    fn first_checks_are_spread_over_one_interval() {
        let i = Duration::from_millis(1000);
        assert_eq!(first_delay(i, 0, 4), Duration::ZERO);
        assert_eq!(first_delay(i, 1, 4), Duration::from_millis(250));
        assert_eq!(first_delay(i, 3, 4), Duration::from_millis(750));
        assert_eq!(first_delay(i, 0, 0), Duration::ZERO);
    }

    #[test]
    fn request_names_the_host_or_the_server_address() {
        let server = Server {
            id: crate::config::ServerId(0),
            name: "a".into(),
            entry: 0,
            addr: "127.0.0.1:8080".parse().unwrap(),
            weight: 1,
            backup: false,
            keepalive: 0,
            max_conns: None,
            drain: false,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            cookie: Box::default(),
        };
        let mut h = hc(2, 3);
        assert_eq!(
            check_request(&h, &server),
            b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ringlb-health\r\n\
              Connection: close\r\n\r\n"
        );
        h.host = Some("app.example".into());
        h.path = "/up?x=1".into();
        assert!(check_request(&h, &server)
            .starts_with(b"GET /up?x=1 HTTP/1.1\r\nHost: app.example\r\n"));
    }

    #[test]
    fn outcomes_read_as_log_text() {
        assert_eq!(Outcome::Status(503).to_string(), "status 503");
        assert_eq!(
            Outcome::Connect(std::io::ErrorKind::ConnectionRefused).to_string(),
            "connect failed: connection refused"
        );
        assert_eq!(Outcome::Timeout.status(), 0);
    }
}
