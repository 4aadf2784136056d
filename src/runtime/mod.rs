//! Executors, pinning, SO_REUSEPORT listeners and the process lifecycle.
//!
//! One glommio executor per worker, pinned to its CPU. Every worker owns one listening socket
//! per configured listener, all bound to the same address with SO_REUSEPORT, so the kernel
//! spreads connections over the cores and nothing is handed between them.
//!
//! Sockets are created and bound on the main thread before any worker starts, so a bind error
//! is reported once, naming the address, and the process exits before serving anything.

pub mod conns;
pub mod host;
pub mod io;
pub mod worker;

use crate::config::{Config, ListenerId, Workers};
use crate::upstream::StateTable;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use worker::Worker;

/// State every core reads; written rarely.
pub struct Shared {
    pub config: Arc<Config>,
    pub state: StateTable,
    stopping: AtomicBool,
    /// Workers whose executor has returned (or unwound).
    exited: AtomicUsize,
    pub started: std::time::SystemTime,
    pub workers: usize,
    pub metrics: crate::metrics::Registry,
    /// Bumped on SIGUSR1: each core reopens its access log when it sees a new value.
    pub log_reopen: AtomicU64,
}

impl Shared {
    /// The shared state for `workers` cores serving `config`.
    pub fn new(config: Config, workers: usize) -> Shared {
        Shared {
            state: StateTable::new(&config),
            metrics: crate::metrics::Registry::new(&config, workers),
            log_reopen: AtomicU64::new(0),
            config: Arc::new(config),
            stopping: AtomicBool::new(false),
            exited: AtomicUsize::new(0),
            started: std::time::SystemTime::now(),
            workers,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Set by the signal handler (or a test) to begin a graceful stop.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
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
pub fn run(config: Config, stop: Stop) -> Result<(), RunError> {
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

    for w in host::check_host(
        cpus.len(),
        0,
        config
            .listeners
            .iter()
            .map(|l| l.backlog)
            .max()
            .unwrap_or(0),
    ) {
        log::warn!("{w}");
    }

    let shared = Arc::new(Shared::new(config, cpus.len()));

    let mut handles = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let sockets = std::mem::take(&mut listeners[index]);
        let admin = if index == 0 { admin.take() } else { None };
        let shared = shared.clone();
        let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name(&format!("ringlb-w{index}"))
            .io_memory(shared.config.runtime.io_memory)
            .ring_depth(256)
            .preempt_timer(Duration::from_millis(50));
        let handle = builder
            .spawn(move || async move { worker_main(index, shared, sockets, admin).await })
            .map_err(|e| RunError::Worker {
                index,
                cpu,
                reason: io_uring_hint(&e.to_string()),
            })?;
        handles.push(handle);
    }

    // The control loop: signals arrive on the main thread; workers poll `stopping`.
    while !stop.is_triggered() {
        if reopen.swap(false, Ordering::Relaxed) {
            log::info!("SIGUSR1: reopening access logs");
            shared.log_reopen.fetch_add(1, Ordering::Relaxed);
        }
        if shared.exited.load(Ordering::Relaxed) > 0 {
            log::error!("a worker stopped unexpectedly; stopping all");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log::info!("stopping: no new connections, finishing in-flight requests");
    shared.stopping.store(true, Ordering::Relaxed);
    let mut failed = None;
    for (index, h) in handles.into_iter().enumerate() {
        if h.join().is_err() {
            failed = Some(index);
        }
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

async fn worker_main(
    index: usize,
    shared: Arc<Shared>,
    sockets: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
) {
    let _exit = ExitGuard(shared.clone());
    let w = Rc::new(Worker::new(index, shared.clone()));
    let listeners: Vec<Rc<io::Listener>> = sockets
        .into_iter()
        .map(|s| Rc::new(io::Listener::from_std(s)))
        .collect();
    let accepts: Vec<io::Task<()>> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| io::spawn(accept_loop(w.clone(), l.clone(), ListenerId(i as u32))))
        .collect();
    let admin = admin.map(|a| io::spawn(crate::admin::serve(w.clone(), io::Listener::from_std(a))));
    let sweeper = io::spawn({
        let w = w.clone();
        async move {
            loop {
                io::sleep(Duration::from_secs(1)).await;
                w.pool.borrow_mut().sweep();
            }
        }
    });
    let log_ticker = io::spawn({
        let w = w.clone();
        async move {
            loop {
                io::sleep(crate::accesslog::TICK).await;
                w.access_log.tick(&w.shared);
            }
        }
    });

    while !shared.stopping() {
        io::sleep(Duration::from_millis(50)).await;
    }

    // Stop accepting: serve what the kernel already queued, then close the sockets.
    drop(accepts);
    for (i, l) in listeners.iter().enumerate() {
        for (stream, peer) in l.accept_queued() {
            io::spawn_detached(serve(w.clone(), stream, peer, ListenerId(i as u32)));
        }
    }
    drop(listeners);
    w.conns.close_idle();

    let deadline = Instant::now() + shared.config.runtime.shutdown_grace;
    while w.conns.live() > 0 && Instant::now() < deadline {
        io::sleep(Duration::from_millis(20)).await;
    }
    if w.conns.live() > 0 {
        log::warn!(
            "worker {index}: shutdown grace over, closing {} connections",
            w.conns.live()
        );
    }
    drop(admin);
    drop(sweeper);
    drop(log_ticker);
    w.access_log.flush(&w.shared);
    w.pool.borrow_mut().clear();
}

/// One client connection, counted as open (metrics) for as long as it is served.
async fn serve(w: Rc<Worker>, stream: io::Stream, peer: SocketAddr, id: ListenerId) {
    struct Open(Rc<Worker>, ListenerId);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.metrics.conn_closed(self.1);
        }
    }
    w.metrics.conn_opened(id);
    let _open = Open(w.clone(), id);
    crate::proxy::serve(w, stream, peer, id).await;
}

async fn accept_loop(w: Rc<Worker>, listener: Rc<io::Listener>, id: ListenerId) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                io::spawn_detached(serve(w.clone(), stream, peer, id));
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the queue waits.
                log::warn!("accept failed: {e}; retrying in 100ms");
                io::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts a worker as exited however its executor ends, panics included.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.exited.fetch_add(1, Ordering::Relaxed);
    }
}
