//! One core's life: its listeners, its admin listener (core 0), the switch to a new config
//! generation, and the graceful stop.
//!
//! A generation is served by its own per-core [`Worker`] (balancers, pools, connection
//! registry). New connections go to the newest; a retired worker's connections finish the
//! request in flight and close (idle ones at once), as nginx's old workers do after a reload.
//! Runs on the owning core; takes no lock.

use crate::config::ListenerId;
use crate::context::{Current, Generations, Worker};
use crate::engine;
use crate::metrics::Refusal;
use crate::state::{Event, Life};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn main(
    index: usize,
    current: Arc<Current>,
    sockets: Vec<std::net::TcpListener>,
    admin: Option<super::admin::Socket>,
) {
    let life = current.load().life.clone();
    let _exit = ExitGuard(life.clone(), index);
    life.send(Event::Started(index));
    let grace = current.load().config.runtime.shutdown_grace;
    let gens = Rc::new(Generations::new(index, current.clone()));
    let listeners: Vec<Rc<engine::Listener>> = sockets
        .into_iter()
        .map(|s| Rc::new(engine::Listener::from_std(s)))
        .collect();
    let accepts: Vec<engine::Task<()>> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| engine::spawn(accept_loop(gens.clone(), l.clone(), ListenerId(i as u32))))
        .collect();
    let admin =
        admin.map(|a| engine::spawn(crate::admin::serve(gens.current(), a.into_listener())));
    let sweeper = engine::spawn({
        let gens = gens.clone();
        async move {
            loop {
                engine::sleep(Duration::from_secs(1)).await;
                gens.current().pool.borrow_mut().sweep();
                return_free_memory();
            }
        }
    });
    // Access log lines are written from here, never from a request.
    let log_ticker = engine::spawn({
        let gens = gens.clone();
        let life = life.clone();
        async move {
            loop {
                engine::sleep(crate::accesslog::TICK).await;
                for w in gens.live() {
                    w.access_log.tick(&w.shared.metrics, life.log_reopen());
                }
            }
        }
    });

    // Woken by the control thread: a new generation, a log reopen, or the stop.
    let wake = life.wake(index);
    let mut seen = 0;
    while !life.stopping() {
        wake.wait(&mut seen).await;
        gens.follow(current.load_full());
    }

    // Stop accepting: serve what the kernel already queued, then close the sockets.
    drop(accepts);
    let w = gens.current();
    for (i, l) in listeners.iter().enumerate() {
        for (stream, peer) in l.accept_queued() {
            let (w, per_ip) = (w.clone(), Rc::new(PerIp::default()));
            engine::spawn_detached(connection(w, stream, peer, ListenerId(i as u32), per_ip));
        }
    }
    drop(listeners);
    let live = gens.live();
    for w in &live {
        w.conns.close_idle();
    }
    let deadline = Instant::now() + grace;
    let mut open = 0;
    for w in &live {
        let left = deadline.saturating_duration_since(Instant::now());
        open += w.conns.wait_closed(left).await;
    }
    if open > 0 {
        log::warn!("worker {index}: shutdown grace over, closing {open} connections");
    }
    drop(admin);
    drop(sweeper);
    drop(log_ticker);
    for w in gens.live() {
        w.access_log.flush(&w.shared.metrics);
        w.pool.borrow_mut().clear();
    }
}

async fn accept_loop(gens: Rc<Generations>, listener: Rc<engine::Listener>, id: ListenerId) {
    let throttle = engine::Throttle::new(Duration::from_secs(10));
    // Outlives generations, so a reload does not reset what each address holds.
    let per_ip = Rc::new(PerIp::default());
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let w = gens.for_new_connection();
                let max = w.shared.config.listeners[id.0 as usize].max_connections;
                let open = w.shared.state.connections(id);
                if max.is_some_and(|max| open.load(Ordering::Relaxed) >= max) {
                    // Over the listener's limit: closed at once, before reading anything.
                    w.rejected.set(w.rejected.get() + 1);
                    w.metrics.conn_refused(id, Refusal::MaxConnections);
                    drop(stream);
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                engine::spawn_detached(connection(w, stream, peer, id, per_ip.clone()));
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the queue waits. A
                // connection flood causes these at will: one line per 10 s with a count.
                if let Some(skipped) = throttle.allow() {
                    log::warn!(
                        "accept failed: {e}; retrying in 100ms ({skipped} more failures since \
                         the last line)"
                    );
                }
                engine::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Connections open per client address on one listener of this core
/// (`max_connections_per_ip`). Per core, as everything on the accept path: no lock, no
/// shared write. SO_REUSEPORT spreads one address's connections over the cores by their
/// ports, so the limit is per core (nginx `limit_conn` counts in a shared zone under a lock).
#[derive(Default)]
struct PerIp(RefCell<ahash::AHashMap<IpAddr, u32>>);

/// One connection counted for its address; uncounted when dropped.
struct IpCount(Rc<PerIp>, IpAddr);

impl PerIp {
    fn enter(self: &Rc<Self>, ip: IpAddr, max: Option<u32>) -> Option<Option<IpCount>> {
        let Some(max) = max else {
            return Some(None);
        };
        let mut map = self.0.borrow_mut();
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Some(IpCount(self.clone(), ip)))
    }
}

impl Drop for IpCount {
    fn drop(&mut self) {
        let mut map = (self.0).0.borrow_mut();
        if let Some(n) = map.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// An accepted connection for as long as it is open: counted in the listener's open
/// connections (`max_connections`, the metrics) and, with `max_connections_per_ip`, for its
/// client address.
struct Open {
    w: Rc<Worker>,
    listener: ListenerId,
    _per_ip: Option<IpCount>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.w.metrics.conn_closed(self.listener);
        self.w
            .shared
            .state
            .connections(self.listener)
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What serving an accepted connection starts from, once its setup is done.
struct Accepted {
    stream: engine::Stream,
    peer: SocketAddr,
    /// The PROXY header's source, on a `proxy_protocol` listener.
    proxied: Option<SocketAddr>,
    open: Open,
}

/// One accepted connection, as the task that serves it (counted in the listener's open
/// connections by the caller; uncounted when it ends). Its setup — the PROXY header, the
/// per-address limit, the TLS handshake — runs in a boxed future dropped once done, so the
/// task that lives as long as the connection holds only what serving needs (an idle
/// keep-alive connection is this task; see `proxy::serve`). Not an `async fn`, which would
/// store its arguments twice.
fn connection(
    w: Rc<Worker>,
    stream: engine::Stream,
    peer: SocketAddr,
    id: ListenerId,
    per_ip: Rc<PerIp>,
) -> impl std::future::Future<Output = ()> {
    w.metrics.conn_opened(id);
    let open = Open {
        w: w.clone(),
        listener: id,
        _per_ip: None,
    };
    let setup = Box::pin(setup(stream, peer, open, per_ip));
    async move {
        let Some(Accepted {
            stream,
            peer,
            proxied,
            open,
        }) = setup.await
        else {
            return;
        };
        crate::proxy::serve(w, stream, peer, id, proxied).await;
        drop(open);
    }
}

/// On a PROXY listener its header is read first (from the raw stream, before any TLS), then
/// the per-address limit applies, then on a TLS listener the handshake runs, on this core.
/// None: the connection is closed (refused, or its setup failed).
async fn setup(
    mut stream: engine::Stream,
    peer: SocketAddr,
    mut open: Open,
    per_ip: Rc<PerIp>,
) -> Option<Accepted> {
    let w = &open.w;
    let id = open.listener;
    let listener = &w.shared.config.listeners[id.0 as usize];
    let t = &w.shared.config.timeouts;
    let proxied = if listener.proxy_protocol {
        if !listener.proxy_peer_allowed(peer.ip()) {
            // Closed, not served as plain: this port is reached through the balancers only,
            // and a peer that bypasses them gets nothing (see README, Security).
            log::debug!("{peer}: not in proxy_protocol_from; closed");
            w.metrics.conn_refused(id, Refusal::ProxyFrom);
            return None;
        }
        Some(crate::proxy::read_proxy_header(&mut stream, peer, t.client_header).await?)
    } else {
        None
    };
    let client_ip = proxied.map_or(peer.ip(), |s| s.ip());
    // Bound only while the connection is served; the map is this core's.
    let Some(count) = per_ip.enter(client_ip, listener.max_connections_per_ip) else {
        log::debug!("{client_ip}: max_connections_per_ip reached; closed");
        w.metrics.conn_refused(id, Refusal::PerIp);
        return None;
    };
    let stream = match w.shared.tls.server(id) {
        None => stream,
        Some(tls) => crate::tls::accept::handshake(stream, peer, tls, t, &w.metrics, id).await?,
    };
    open._per_ip = count;
    Some(Accepted {
        stream,
        peer,
        proxied,
        open,
    })
}

/// Hands this core's free allocator pages back to the system. mimalloc purges freed pages
/// only when the thread allocates or frees again, so a core that went quiet after a burst of
/// connections would keep their memory resident; once a second it is asked to.
fn return_free_memory() {
    extern "C" {
        fn mi_collect(force: bool);
    }
    // SAFETY: mi_collect takes no pointers; it walks the calling thread's own mimalloc heap
    // (linked through the `mimalloc` dependency). With another global allocator it only
    // tidies mimalloc's empty heap for this thread.
    unsafe { mi_collect(false) }
}

/// Tells the control thread that a worker ended, however its executor ends, panics included.
struct ExitGuard(Arc<Life>, usize);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.send(Event::Exited(self.1));
    }
}
