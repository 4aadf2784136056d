//! `loadgen serve`: an HTTP/1.1 test backend.
//!
//! Each `--listen` address is an *instance* with its own name, health status and counters.
//! Every core binds every instance's address with SO_REUSEPORT, so the kernel spreads
//! connections over cores; a core serves each connection it accepts to the end.
//!
//! Cores share only the instance table below: atomics behind an `Arc`.

mod conn;
mod route;
mod write;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::cli::ServeArgs;
use crate::rt;

/// What a response looks like, from the command line, validated once.
#[derive(Clone, Debug)]
pub struct Behaviour {
    pub body_size: Option<u64>,
    pub status: u16,
    pub delay: Duration,
    pub delay_random: Option<(Duration, Duration)>,
    pub fail_ratio: f64,
    pub framing: Framing,
    pub persistence: Persistence,
    /// `(after N requests, stall for)`.
    pub stall: Option<(u64, Duration)>,
    /// Close connections idle this long.
    pub idle_close: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    Chunked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    KeepAlive,
    Close,
}

impl Behaviour {
    pub fn from_args(a: &ServeArgs) -> Self {
        Self {
            body_size: a.body_size,
            status: a.status,
            delay: a.delay.unwrap_or_default(),
            delay_random: a.delay_random,
            fail_ratio: a.fail_ratio,
            framing: if a.chunked {
                Framing::Chunked
            } else {
                Framing::ContentLength
            },
            persistence: if a.close {
                Persistence::Close
            } else {
                Persistence::KeepAlive
            },
            stall: a.stall_once_after.zip(a.stall),
            idle_close: a.idle_close,
        }
    }
}

/// One core's counters for one instance; only that core writes them.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    connections: AtomicU64,
    active: AtomicU64,
}

/// One listen address and its run-time state, shared by all cores.
pub struct Instance {
    pub name: String,
    pub addr: SocketAddr,
    health: AtomicU16,
    counters: Box<[CachePadded<Counters>]>,
    /// Requests seen, counted only when `--stall-once-after` is set.
    stall_seen: AtomicU64,
    /// End of the one stall, in nanoseconds since `Shared::epoch` (0: none yet).
    stall_until: AtomicU64,
}

impl Instance {
    /// `(requests, connections, active_connections)` summed over cores.
    pub fn stats(&self) -> (u64, u64, u64) {
        self.counters.iter().fold((0, 0, 0), |(r, c, a), k| {
            (
                r + k.requests.load(Ordering::Relaxed),
                c + k.connections.load(Ordering::Relaxed),
                a + k.active.load(Ordering::Relaxed),
            )
        })
    }
}

struct Shared {
    instances: Box<[Instance]>,
    behaviour: Behaviour,
    epoch: Instant,
}

/// One core's view: its index and the shared table.
struct Core {
    index: usize,
    shared: Arc<Shared>,
}

impl Core {
    fn counters(&self, instance: usize) -> &Counters {
        &self.shared.instances[instance].counters[self.index]
    }
}

/// A started server: its instances (with real ports) and its executors.
pub struct Server {
    shared: Arc<Shared>,
    _cores: Vec<rt::Core<()>>,
}

impl Server {
    pub fn instances(&self) -> &[Instance] {
        &self.shared.instances
    }
}

/// Binds every address on every core and returns once all cores accept connections.
pub fn start(args: &ServeArgs) -> anyhow::Result<Server> {
    // Port 0 must mean one port for all cores: reserve it on a SO_REUSEPORT socket that
    // never listens, let the cores bind that port, then let the reservation go.
    let mut reservations = Vec::new();
    let mut addrs = Vec::with_capacity(args.listen.len());
    for &addr in &args.listen {
        if addr.port() == 0 {
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            sock.set_reuse_port(true)?;
            sock.bind(&addr.into())?;
            let bound = sock
                .local_addr()?
                .as_socket()
                .ok_or_else(|| anyhow::anyhow!("{addr}: not an IP socket"))?;
            addrs.push(bound);
            reservations.push(sock);
        } else {
            addrs.push(addr);
        }
    }
    let cores = usize::from(args.cores.count());
    let instances = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| Instance {
            name: match (&args.name, addrs.len()) {
                (Some(name), 1) => name.clone(),
                (Some(name), _) => format!("{name}-{i}"),
                (None, _) => addr.to_string(),
            },
            addr,
            health: AtomicU16::new(200),
            counters: (0..cores).map(|_| CachePadded::default()).collect(),
            stall_seen: AtomicU64::new(0),
            stall_until: AtomicU64::new(0),
        })
        .collect();
    let shared = Arc::new(Shared {
        instances,
        behaviour: Behaviour::from_args(args),
        epoch: Instant::now(),
    });

    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let for_cores = shared.clone();
    let handles = rt::start(cores, args.cores.pinning(), move |index| {
        let shared = for_cores.clone();
        let ready = ready_tx.clone();
        async move {
            let core = Rc::new(Core { index, shared });
            let mut listeners = Vec::new();
            for inst in core.shared.instances.iter() {
                match rt::bind(inst.addr) {
                    Ok(l) => listeners.push(l),
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot listen on {}: {e}", inst.addr)));
                        return;
                    }
                }
            }
            for (i, listener) in listeners.into_iter().enumerate() {
                rt::spawn_local(conn::accept_loop(listener, core.clone(), i)).detach();
            }
            let _ = ready.send(Ok(()));
            drop(ready);
            futures_lite::future::pending::<()>().await;
        }
    })?;
    for _ in 0..cores {
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("an executor stopped before listening"))?
            .map_err(|e| anyhow::anyhow!(e))?;
    }
    drop(reservations);
    Ok(Server {
        shared,
        _cores: handles,
    })
}
