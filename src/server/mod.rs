//! The process: SO_REUSEPORT listeners, one pinned engine core per worker, the health checker,
//! and the control thread that turns signals and admin requests into reloads and the graceful
//! stop.
//!
//! Every worker owns one listening socket per configured listener, all bound to the same
//! address with SO_REUSEPORT, so the kernel spreads connections over the cores and nothing is
//! handed between them. Sockets are created and bound on the main thread before any worker
//! starts, so a bind error is reported once, naming the address, and the process exits before
//! serving anything.
//!
//! The control thread (the caller of [`run`]) blocks on one channel of [`Event`]s: signals
//! (forwarded by signal-hook's thread), admin reload requests, workers starting and exiting.
//! It wakes the cores through their [`crate::engine::Signal`]s; nothing polls.
//!
//! The top layer: uses every other module.

mod admin;
mod core;
pub mod host;
pub mod logging;
mod notify;
mod reload;
mod servers;

use crate::config::{Config, Engine, Workers};
use crate::context::{Current, Shared};
use crate::engine::{self, CoreSpec, EngineKind};
use crate::state::{Event, Life};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr} ({name}): {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on {listen} (admin): {reason}")]
    Admin { listen: String, reason: String },
    #[error("cannot start worker {index} on CPU {cpu}: {reason}")]
    Worker {
        index: usize,
        cpu: usize,
        reason: String,
    },
    #[error("{0}")]
    Cpus(String),
    #[error("cannot handle signals: {0}")]
    Signals(String),
    #[error("cannot use io_uring: {0}")]
    IoUring(String),
    #[error("worker {0} did not start within 10s (see the log above for why)")]
    WorkerStart(usize),
    #[error("cannot start the health check thread: {0}")]
    Health(engine::StartError),
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    #[error(
        "upstream {0} has no server: its names did not resolve (see the warnings above); \
         list an address, fix the name, or set resolve = true to start without servers and \
         wait for the name"
    )]
    NoServers(String),
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

/// Whether other sockets may bind the same address (one listening socket per core).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Port {
    Exclusive,
    Shared,
}

fn bind_one(addr: SocketAddr, backlog: u32, port: Port) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if port == Port::Shared {
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
        let probe = bind_one(l.addr, 1, Port::Exclusive).map_err(err)?;
        let addr = probe
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(l.addr);
        drop(probe);
        for sockets in per_worker.iter_mut() {
            let s = bind_one(addr, l.backlog, Port::Shared).map_err(err)?;
            sockets.push(s.into());
        }
        log::info!("listening on {} {}", l.name, addr);
    }
    Ok(per_worker)
}

/// Runs until SIGTERM or SIGINT, then stops gracefully within `runtime.shutdown_grace`.
/// SIGHUP (and the admin API) reload `path`; SIGUSR1 reopens the access logs.
pub fn run(config: Config, path: &std::path::Path) -> Result<(), RunError> {
    let (events, inbox) = mpsc::channel();
    // Registered before anything is logged as listening, so a signal never meets its default
    // action (terminate) once ringlb says it serves.
    let signals = forward_signals(events.clone())?;
    let served = serve(config, path, events, &inbox);
    signals.close();
    served
}

/// Signals become events on the control thread's channel.
fn forward_signals(events: mpsc::Sender<Event>) -> Result<signal_hook::iterator::Handle, RunError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| RunError::Signals(e.to_string()))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("ringlb-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let e = match sig {
                    SIGHUP => Event::Reload(None),
                    SIGUSR1 => Event::ReopenLogs,
                    _ => Event::Stop,
                };
                if events.send(e).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| RunError::Signals(e.to_string()))?;
    Ok(handle)
}

fn serve(
    mut config: Config,
    path: &std::path::Path,
    events: mpsc::Sender<Event>,
    inbox: &mpsc::Receiver<Event>,
) -> Result<(), RunError> {
    let nofile = host::nofile_soft();
    for (name, max) in host::apply_default_max_connections(&mut config, nofile) {
        log::info!(
            "listener {name}: max_connections = {max} (from RLIMIT_NOFILE {nofile}: \
             (nofile - max(nofile / 10, 64)) / 2 per connection / {} listeners)",
            config.listeners.len()
        );
    }
    let cpus = worker_cpus(&config)?;
    let life = Arc::new(Life::new(cpus.len(), events));
    for w in crate::discovery::resolve_all(&mut config, None, Some(&life)) {
        log::warn!("{}: {}", w.path, w.message);
    }
    if let Some(u) = crate::discovery::empty_upstreams(&config)
        .into_iter()
        .next()
    {
        return Err(RunError::NoServers(u));
    }
    crate::accesslog::check(&config.access_log).map_err(|source| RunError::AccessLog {
        path: crate::accesslog::describe(&config.access_log.target),
        source,
    })?;
    let listeners = bind_listeners(&config, cpus.len())?;
    let admin = admin::bind(&config.admin.listen)?;
    let engine = choose_engine(&config, cpus.len())?;

    let shared = Arc::new(Shared::new(config, cpus.len(), life.clone()).map_err(RunError::Tls)?);
    let current = Arc::new(Current::new(shared.clone()));
    // Before the workers, so a failure to start it leaves nothing to stop.
    let checker =
        crate::health::start(current.clone(), cpus.len(), engine).map_err(RunError::Health)?;
    let io_memory = shared.config.runtime.io_memory;
    drop(shared);
    let cores = start_cores(&cpus, &current, listeners, admin, io_memory, engine)?;
    let early = wait_started(&life, inbox, cpus.len())?;
    life.workers_running();
    log::info!(
        "{} workers running on CPUs {:?}, engine {}",
        cpus.len(),
        cpus,
        engine.name()
    );
    notify::ready(cpus.len(), life.generation());

    let mut servers = servers::Servers::start(&current);
    control_loop(&life, early, inbox, path, &current, &mut servers);
    drop(servers);

    notify::stopping();
    log::info!("stopping: no new connections, finishing in-flight requests");
    life.stop();
    let mut failed = None;
    for (index, c) in cores.into_iter().enumerate() {
        if !c.join() {
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

/// One engine core per worker, pinned to its CPU, serving its listeners (worker 0 also the
/// admin listener).
fn start_cores(
    cpus: &[usize],
    current: &Arc<Current>,
    mut listeners: Vec<Vec<std::net::TcpListener>>,
    admin: admin::Socket,
    io_memory: usize,
    engine: EngineKind,
) -> Result<Vec<engine::Core>, RunError> {
    let mut admin = Some(admin);
    let mut cores = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let sockets = std::mem::take(&mut listeners[index]);
        let admin = if index == 0 { admin.take() } else { None };
        let current = current.clone();
        let spec = CoreSpec {
            name: format!("ringlb-w{index}"),
            cpu: Some(cpu),
            io_memory,
            engine,
        };
        let core = engine::Core::start(spec, move || async move {
            core::main(index, current, sockets, admin).await
        })
        .map_err(|e| RunError::Worker {
            index,
            cpu,
            reason: io_uring_hint(&e.to_string()),
        })?;
        cores.push(core);
    }
    Ok(cores)
}

/// Waits for every worker to check in: a worker whose executor cannot start (io_uring refused
/// at run time) dies inside the engine without a word to us. Returns the events that came
/// meanwhile (a reload asked through worker 0's admin listener), for the control loop.
fn wait_started(
    life: &Life,
    inbox: &mpsc::Receiver<Event>,
    workers: usize,
) -> Result<Vec<Event>, RunError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut started = 0;
    let mut early = Vec::new();
    while started < workers {
        let left = deadline.saturating_duration_since(Instant::now());
        match inbox.recv_timeout(left) {
            Ok(Event::Started(_)) => started += 1,
            Ok(Event::Exited(_) | Event::Stop) | Err(_) => {
                life.stop();
                return Err(RunError::WorkerStart(started));
            }
            Ok(e) => early.push(e),
        }
    }
    Ok(early)
}

/// The control thread: acts on events until the stop (a signal, or a worker that died).
fn control_loop(
    life: &Life,
    early: Vec<Event>,
    inbox: &mpsc::Receiver<Event>,
    path: &std::path::Path,
    current: &Current,
    servers: &mut servers::Servers,
) {
    let mut early = early.into_iter();
    loop {
        let event = match (early.next(), servers.wait()) {
            (Some(e), _) => e,
            (None, None) => match inbox.recv() {
                Ok(e) => e,
                Err(_) => return,
            },
            // A removal drains: look at its servers again soon.
            (None, Some(wait)) => match inbox.recv_timeout(wait) {
                Ok(e) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    servers.tick(current);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        match event {
            Event::Stop => return,
            Event::Reload(done) => {
                let before = current.load_full();
                reload::reload(path, current);
                servers.reloaded(&before, current);
                if let Some(done) = done {
                    done.raise();
                }
            }
            Event::Resolved(r) => servers.resolved(current, r),
            Event::Servers(change, reply) => servers.change(current, change, &reply),
            Event::ReopenLogs => {
                log::info!("SIGUSR1: reopening access logs");
                life.reopen_logs();
            }
            Event::Exited(index) => {
                log::error!("worker {index} stopped unexpectedly; stopping all");
                return;
            }
            Event::Started(_) => {}
        }
    }
}

/// The engine of every core, from `runtime.engine` and what the host allows; logs the host's
/// warnings for that engine. `auto` takes io_uring when the host allows it, else epoll, saying
/// why in one line; `io_uring` on a host that refuses it is an error naming cause and fix;
/// `epoll` never creates an io_uring.
fn choose_engine(config: &Config, workers: usize) -> Result<EngineKind, RunError> {
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
    let wanted = config.runtime.engine;
    let facts = match wanted {
        Engine::Epoll => host::HostFacts::read_without_io_uring(),
        Engine::Auto | Engine::IoUring | Engine::Glommio => host::HostFacts::read(),
    };
    let glommio = wanted == Engine::Glommio;
    let mut warnings = host::evaluate_common(&facts, max_connections, backlog);
    let io_uring = host::evaluate_io_uring(&facts, workers, glommio);
    let engine = match wanted {
        Engine::Epoll => EngineKind::Epoll,
        _ if !host::io_uring_refused(&facts, glommio) => {
            warnings.extend(io_uring);
            if glommio {
                EngineKind::Glommio
            } else {
                EngineKind::IoUring
            }
        }
        Engine::Auto => {
            let reasons = if io_uring.is_empty() {
                "io_uring is unavailable".to_string()
            } else {
                io_uring.join("; ")
            };
            log::warn!(
                "runtime.engine = \"auto\": using the epoll engine, because io_uring cannot \
                 run here: {reasons}"
            );
            EngineKind::Epoll
        }
        Engine::IoUring | Engine::Glommio => {
            return Err(RunError::IoUring(if io_uring.is_empty() {
                io_uring_hint("io_uring is unavailable")
            } else {
                io_uring.join("; ")
            }));
        }
    };
    for w in &warnings {
        log::warn!("{w}");
    }
    Ok(engine)
}

/// Explains why the engine could not start, when io_uring is the reason.
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
