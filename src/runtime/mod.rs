//! Executors, pinning, SO_REUSEPORT listeners and the process lifecycle.
//!
//! One glommio executor per worker, pinned to its CPU. Every worker owns one listening socket
//! per configured listener, all bound to the same address with SO_REUSEPORT, so the kernel
//! spreads connections over the cores and nothing is handed between them.
//!
//! Sockets are created and bound on the main thread before any worker starts, so a bind error
//! is reported once, naming the address, and the process exits before serving anything.

pub mod conns;
mod core;
pub mod host;
pub mod io;
mod reload;
pub mod worker;

use crate::config::{Config, Workers};
use crate::upstream::StateTable;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use worker::Worker;

/// One configuration generation: the validated config and the server state table every core
/// reads. Immutable once published; a reload publishes a new one (see `reload.rs`).
pub struct Shared {
    pub config: Arc<Config>,
    pub state: StateTable,
    /// 0 at start, +1 per successful reload.
    pub generation: u64,
    pub life: Arc<Life>,
    /// TLS configs of listeners and upstreams; certificates are swapped by `tls::reload`.
    pub tls: crate::tls::Tls,
    pub started: std::time::SystemTime,
    pub workers: usize,
    pub metrics: crate::metrics::Registry,
    /// Bumped on SIGUSR1: each core reopens its access log when it sees a new value. One
    /// counter for the process, shared by every generation.
    pub log_reopen: Arc<AtomicU64>,
}

impl Shared {
    /// The first generation of a process: `workers` cores serving `config`. Fails when a
    /// TLS file cannot be loaded.
    pub fn new(config: Config, workers: usize) -> Result<Shared, String> {
        Ok(Shared {
            tls: crate::tls::Tls::new(&config)?,
            state: StateTable::new(&config),
            metrics: crate::metrics::Registry::new(&config, workers),
            config: Arc::new(config),
            generation: 0,
            life: Arc::new(Life::default()),
            started: std::time::SystemTime::now(),
            workers,
            log_reopen: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn stopping(&self) -> bool {
        self.life.stopping.load(Ordering::Relaxed)
    }
}

/// The generation in force; cores and the control plane load it, reloads store it.
pub type Current = arc_swap::ArcSwap<Shared>;

/// Process-wide lifecycle state, the same across generations.
#[derive(Default)]
pub struct Life {
    stopping: AtomicBool,
    /// Workers whose executor has started running, and those that have returned (or unwound).
    started_workers: AtomicUsize,
    exited: AtomicUsize,
    /// Set by the admin API; the control loop reloads and clears it.
    pub reload_requested: AtomicBool,
    /// Reloads attempted, and those that failed (the old generation kept serving).
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Why the last reload failed; None after a success.
    pub last_reload_error: arc_swap::ArcSwapOption<String>,
    /// The generation in force.
    generation: AtomicU64,
}

impl Life {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

/// Flags set by signal handlers (or a test): stop gracefully (SIGTERM/SIGINT), reload the
/// configuration (SIGHUP).
#[derive(Clone, Default)]
pub struct Stop {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Stop {
    pub fn trigger(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn is_triggered(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker {index} on CPU {cpu}: {reason}")]
    Worker {
        index: usize,
        cpu: usize,
        reason: String,
    },
    #[error("{0}")]
    Cpus(String),
    #[error("cannot use io_uring: {0}")]
    IoUring(String),
    #[error("worker {0} did not start within 10s (see the log above for why)")]
    WorkerStart(usize),
    #[error("{0}")]
    Health(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
}

/// The CPUs workers are pinned to, in worker order.
fn worker_cpus(config: &Config) -> Result<Vec<usize>, RunError> {
    if !config.runtime.cpus.is_empty() {
        return Ok(config.runtime.cpus.clone());
    }
    let allowed: Vec<usize> = core_affinity::get_core_ids()
        .ok_or_else(|| RunError::Cpus("cannot read the CPU affinity mask".into()))?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if allowed.is_empty() {
        return Err(RunError::Cpus("the CPU affinity mask is empty".into()));
    }
    Ok(match config.runtime.workers {
        Workers::Auto => allowed,
        Workers::Count(n) => (0..n).map(|i| allowed[i % allowed.len()]).collect(),
    })
}

fn bind_one(addr: SocketAddr, backlog: u32, reuse_port: bool) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(backlog as i32)?;
    Ok(s)
}

/// Binds `count` SO_REUSEPORT sockets per listener. A first bind without SO_REUSEPORT proves
/// nobody else (another ringlb included) holds the address, which SO_REUSEPORT would hide.
fn bind_listeners(
    config: &Config,
    count: usize,
) -> Result<Vec<Vec<std::net::TcpListener>>, RunError> {
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..count).map(|_| Vec::new()).collect();
    for l in &config.listeners {
        let err = |source| RunError::Bind {
            name: l.name.clone(),
            addr: l.addr,
            source,
        };
        let probe = bind_one(l.addr, 1, false).map_err(err)?;
        let addr = probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(l.addr);
        drop(probe);
        for sockets in per_worker.iter_mut() {
            let s = bind_one(addr, l.backlog, true).map_err(err)?;
            sockets.push(s.into());
        }
        log::info!("listening on {} {}", l.name, addr);
    }
    Ok(per_worker)
}

/// Runs until `stop` is triggered, then stops gracefully within `runtime.shutdown_grace`.
pub fn run(config: Config, path: &std::path::Path, stop: Stop) -> Result<(), RunError> {
    // SIGUSR1 (logrotate): reopen the access logs. Registered before anything is logged as
    // listening, so a rotation signal never meets the default action (terminate).
    let reopen = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone()) {
        log::warn!("cannot install the SIGUSR1 handler (access log reopen): {e}");
    }
    let cpus = worker_cpus(&config)?;
    crate::accesslog::check(&config.access_log).map_err(|source| RunError::AccessLog {
        path: crate::accesslog::describe(&config.access_log.target),
        source,
    })?;
    let mut listeners = bind_listeners(&config, cpus.len())?;
    let admin = bind_one(config.admin.listen, 128, false).map_err(|source| RunError::Bind {
        name: "admin".into(),
        addr: config.admin.listen,
        source,
    })?;
    log::info!(
        "admin listening on {}",
        admin
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(config.admin.listen)
    );
    let mut admin = Some(std::net::TcpListener::from(admin));

    let facts = host::HostFacts::read();
    let max_connections = config
        .listeners
        .iter()
        .map(|l| l.max_connections.unwrap_or(0))
        .sum();
    let backlog = config
        .listeners
        .iter()
        .map(|l| l.backlog)
        .max()
        .unwrap_or(0);
    let warnings = host::evaluate(&facts, cpus.len(), max_connections, backlog);
    // glommio panics inside the worker thread when io_uring cannot be set up, so this is
    // decided here, before any worker starts.
    let io_uring_off =
        facts.io_uring_setup_errno.is_some() || facts.io_uring_disabled.is_some_and(|d| d != 0);
    if io_uring_off {
        let reasons: Vec<&String> = warnings.iter().filter(|w| w.contains("io_uring")).collect();
        return Err(RunError::IoUring(if reasons.is_empty() {
            io_uring_hint("io_uring is unavailable")
        } else {
            reasons
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        }));
    }
    for w in &warnings {
        log::warn!("{w}");
    }

    let shared = Arc::new(Shared::new(config, cpus.len()).map_err(RunError::Tls)?);
    let life = shared.life.clone();
    let current = Arc::new(Current::new(shared.clone()));
    // Before the workers, so a failure to start it leaves nothing to stop.
    let checker = crate::upstream::health::start(current.clone()).map_err(RunError::Health)?;

    let mut handles = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let sockets = std::mem::take(&mut listeners[index]);
        let admin = if index == 0 { admin.take() } else { None };
        let current = current.clone();
        let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name(&format!("ringlb-w{index}"))
            .io_memory(shared.config.runtime.io_memory)
            .ring_depth(256)
            .preempt_timer(Duration::from_millis(50));
        let handle = builder
            .spawn(move || async move { core::main(index, current, sockets, admin).await })
            .map_err(|e| RunError::Worker {
                index,
                cpu,
                reason: io_uring_hint(&e.to_string()),
            })?;
        handles.push(handle);
    }
    drop(shared);

    // A worker whose executor cannot start (io_uring refused at run time) dies inside glommio
    // without a word to us; wait for every worker to check in.
    let deadline = Instant::now() + Duration::from_secs(10);
    while life.started_workers.load(Ordering::Relaxed) < cpus.len() {
        if Instant::now() > deadline || life.exited.load(Ordering::Relaxed) > 0 {
            life.stopping.store(true, Ordering::Relaxed);
            return Err(RunError::WorkerStart(
                life.started_workers.load(Ordering::Relaxed),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    log::info!("{} workers running on CPUs {:?}", cpus.len(), cpus);

    // The control loop: signals arrive on the main thread; workers poll `stopping` and the
    // current generation.
    while !stop.is_triggered() {
        if reopen.swap(false, Ordering::Relaxed) {
            log::info!("SIGUSR1: reopening access logs");
            current.load().log_reopen.fetch_add(1, Ordering::Relaxed);
        }
        if life.exited.load(Ordering::Relaxed) > 0 {
            log::error!("a worker stopped unexpectedly; stopping all");
            break;
        }
        let by_signal = stop.reload.swap(false, Ordering::Relaxed);
        if by_signal || life.reload_requested.swap(false, Ordering::Relaxed) {
            reload::reload(path, &current);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    log::info!("stopping: no new connections, finishing in-flight requests");
    life.stopping.store(true, Ordering::Relaxed);
    let mut failed = None;
    for (index, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            failed = Some(index);
        }
    }
    if let Some(c) = checker {
        c.join();
    }
    if let Some(index) = failed {
        return Err(RunError::Worker {
            index,
            cpu: cpus[index],
            reason: "the worker thread panicked".into(),
        });
    }
    log::info!("stopped");
    Ok(())
}

/// Explains why glommio could not start, when io_uring is the reason.
fn io_uring_hint(err: &str) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    let mut msg = format!("{err}. ringlb needs io_uring (Linux 5.8+)");
    if disabled != 0 {
        msg.push_str(&format!(
            "; kernel.io_uring_disabled = {disabled}: run `sysctl kernel.io_uring_disabled=0`"
        ));
    } else {
        msg.push_str(
            "; check that seccomp (containers, systemd SystemCallFilter) allows io_uring_setup, \
             and that RLIMIT_MEMLOCK (`ulimit -l`) covers runtime.io_memory per worker, or \
             lower runtime.io_memory",
        );
    }
    msg
}
