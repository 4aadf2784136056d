//! The process: SO_REUSEPORT listeners, one pinned engine core per worker, the health checker,
//! and the control thread that turns signals and admin requests into reloads, binary upgrades
//! and the graceful stop.
//!
//! Every worker owns one listening socket per configured listener, all bound to the same
//! address with SO_REUSEPORT, so the kernel spreads connections over the cores and nothing is
//! handed between them. Sockets are created and bound on the main thread before any worker
//! starts (or inherited from the process a binary upgrade replaces), so a bind error is
//! reported once, naming the address, and the process exits before serving anything; a
//! reload binds its new listeners the same way before it applies anything (`listeners.rs`).
//!
//! The control thread (the caller of [`run`]) blocks on one channel of [`Event`]s: signals
//! (forwarded by signal-hook's thread), admin reload requests, workers starting and exiting.
//! It wakes the cores through their [`crate::engine::Signal`]s; nothing polls.
//!
//! The top layer: uses every other module.

mod admin;
mod core;
pub mod host;
mod listeners;
pub mod logging;
mod notify;
mod reload;
mod servers;
mod upgrade;

use crate::config::{Config, Engine, Workers};
use crate::context::{Current, Shared};
use crate::engine::{self, CoreSpec, EngineKind};
use crate::state::{Event, Life};
use listeners::{Inherited, Listening};
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
    #[error("binary upgrade: {0}")]
    Upgrade(String),
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

/// Runs until SIGTERM or SIGINT, then stops gracefully within `runtime.shutdown_grace`.
/// SIGHUP (and the admin API) reload `path`; SIGUSR1 reopens the access logs; SIGUSR2 starts
/// a binary upgrade (see `upgrade.rs`).
pub fn run(config: Config, path: &std::path::Path) -> Result<(), RunError> {
    upgrade::remember_binary();
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
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2])
            .map_err(|e| RunError::Signals(e.to_string()))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("ringlb-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let e = match sig {
                    SIGHUP => Event::Reload(None),
                    SIGUSR1 => Event::ReopenLogs,
                    SIGUSR2 => Event::Upgrade,
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
    let life = Arc::new(Life::new(cpus.len(), events.clone()));
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
    // After a binary upgrade: the sockets the previous process passed on, and its pipe.
    let parent = upgrade::Parent::from_env();
    let mut inherited = Inherited::from_env();
    let mut listening = Listening::bind(&config, cpus.len(), &mut inherited)?;
    let admin = admin::bind(&config.admin.listen, &mut inherited)?;
    inherited.close_rest();
    listening.set_admin(config.admin.listen.to_string(), &admin);
    let engine = choose_engine(&config)?;
    if let Some(p) = &parent {
        p.check_engine(engine)?;
    }

    let shared = Shared::new(config, cpus.len(), life.clone(), listening.sockets());
    let shared = Arc::new(shared.map_err(RunError::Tls)?);
    let current = Arc::new(Current::new(shared.clone()));
    // Before the workers, so a failure to start it leaves nothing to stop.
    let checker =
        crate::health::start(current.clone(), cpus.len(), engine).map_err(RunError::Health)?;
    let io_memory = shared.config.runtime.io_memory;
    drop(shared);
    let cores = start_cores(&cpus, &current, admin, io_memory, engine)?;
    let early = wait_started(&life, inbox, cpus.len())?;
    life.workers_running();
    log::info!(
        "{} workers running on CPUs {:?}, engine {}",
        cpus.len(),
        cpus,
        engine.name()
    );
    notify::ready(cpus.len(), life.generation(), parent.is_some());
    if let Some(p) = parent {
        p.ready();
    }

    let mut control = Control {
        life: &life,
        path,
        current: &current,
        listening,
        engine,
        events,
        upgrade: None,
        servers: servers::Servers::start(&current),
    };
    control.run(early, inbox);
    if let Some(pending) = control.upgrade.take() {
        pending.cancel();
    }
    drop(control);

    if life.handed_over() {
        log::info!("handed over: no new connections, finishing in-flight requests");
    } else {
        notify::stopping();
        log::info!("stopping: no new connections, finishing in-flight requests");
        life.stop();
    }
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
    admin: admin::Socket,
    io_memory: usize,
    engine: EngineKind,
) -> Result<Vec<engine::Core>, RunError> {
    let mut admin = Some(admin);
    let mut cores = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let admin = if index == 0 { admin.take() } else { None };
        let current = current.clone();
        let spec = CoreSpec {
            name: format!("ringlb-w{index}"),
            cpu: Some(cpu),
            io_memory,
            engine,
        };
        let core = engine::Core::start(spec, move || async move {
            core::main(index, current, admin).await
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

/// The control thread's state: what it acts on events with.
struct Control<'a> {
    life: &'a Life,
    path: &'a std::path::Path,
    current: &'a Current,
    listening: Listening,
    engine: EngineKind,
    events: mpsc::Sender<Event>,
    /// A binary upgrade under way: its new process is starting.
    upgrade: Option<upgrade::Pending>,
    /// Servers from names (DNS) and the admin API, and removals that drain.
    servers: servers::Servers,
}

impl Control<'_> {
    /// Acts on events until the stop (a signal, a worker that died, or a binary upgrade's
    /// new process ready to serve): `early` ones first, then the inbox.
    fn run(&mut self, early: Vec<Event>, inbox: &mpsc::Receiver<Event>) {
        let mut early = early.into_iter();
        loop {
            let event = match (early.next(), self.servers.wait()) {
                (Some(e), _) => e,
                (None, None) => match inbox.recv() {
                    Ok(e) => e,
                    Err(_) => return,
                },
                // A removal drains: look at its servers again soon.
                (None, Some(wait)) => match inbox.recv_timeout(wait) {
                    Ok(e) => e,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.servers.tick(self.current);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            if !self.handle(event) {
                return;
            }
        }
    }

    /// False: stop.
    fn handle(&mut self, event: Event) -> bool {
        match event {
            Event::Stop => return false,
            Event::Reload(done) => {
                if self.upgrade.is_some() {
                    reload::refuse(self.current, "a binary upgrade is under way");
                } else {
                    let before = self.current.load_full();
                    reload::reload(self.path, self.current, &mut self.listening);
                    self.servers.reloaded(&before, self.current);
                }
                if let Some(done) = done {
                    done.raise();
                }
            }
            Event::Resolved(r) => self.servers.resolved(self.current, r),
            Event::Servers(change, reply) => self.servers.change(self.current, change, &reply),
            Event::ReopenLogs => {
                log::info!("SIGUSR1: reopening access logs");
                self.life.reopen_logs();
            }
            Event::Upgrade if self.upgrade.is_some() => {
                log::warn!("SIGUSR2: a binary upgrade is already under way");
            }
            Event::Upgrade => {
                match upgrade::start(&self.listening, self.engine, self.events.clone()) {
                    Ok(p) => self.upgrade = Some(p),
                    Err(e) => {
                        log::error!("binary upgrade failed: {e}; this process keeps serving")
                    }
                }
            }
            Event::Upgraded(Ok(pid)) => {
                self.upgrade = None;
                log::info!(
                    "binary upgrade: process {pid} serves; this process ({}) stops \
                     accepting and finishes its requests",
                    std::process::id()
                );
                self.life.hand_over();
                return false;
            }
            Event::Upgraded(Err(e)) => {
                self.upgrade = None;
                log::error!("binary upgrade failed: {e}; this process keeps serving");
            }
            Event::Exited(index) => {
                log::error!("worker {index} stopped unexpectedly; stopping all");
                return false;
            }
            Event::Started(_) => {}
        }
        true
    }
}

/// The engine of every core, from `runtime.engine` and what the host allows; logs the host's
/// warnings for that engine. `auto` takes io_uring when the host allows it, else epoll, saying
/// why in one line; `io_uring` on a host that refuses it is an error naming cause and fix;
/// `epoll` never creates an io_uring.
fn choose_engine(config: &Config) -> Result<EngineKind, RunError> {
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
    if wanted != Engine::Epoll {
        // A mistyped override is refused, not ignored (nor taken for a kernel's refusal).
        engine::io_uring_setup_override().map_err(|e| RunError::IoUring(e.to_string()))?;
    }
    let facts = match wanted {
        Engine::Epoll => host::HostFacts::read_without_io_uring(),
        Engine::Auto | Engine::IoUring => host::HostFacts::read(),
    };
    let mut warnings = host::evaluate_common(&facts, max_connections, backlog);
    let io_uring = host::evaluate_io_uring(&facts);
    let engine = match wanted {
        Engine::Epoll => EngineKind::Epoll,
        _ if !host::io_uring_refused(&facts) => {
            warnings.extend(io_uring);
            EngineKind::IoUring
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
        Engine::IoUring => {
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
