//! One core's life: its listeners, its admin listener (core 0), the switch to a new config
//! generation, and the graceful stop.
//!
//! The listeners a core serves are those of the generation it serves: on each switch it
//! starts accepting on sockets new to it and stops on those the generation dropped (see
//! `context::Sockets`), leaving the others untouched.
//!
//! A generation is served by its own per-core [`Worker`] (balancers, pools, connection
//! registry). New connections go to the newest; a retired worker's connections finish the
//! request in flight and close (idle ones at once), as nginx's old workers do after a reload.
//! Runs on the owning core; takes no lock.

use crate::config::ListenerId;
use crate::context::{Current, Generations, Sockets, Worker};
use crate::engine;
use crate::metrics::Refusal;
use crate::state::{Event, Life};
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn main(index: usize, current: Arc<Current>, admin: Option<super::admin::Socket>) {
    let life = current.load().life.clone();
    let _exit = ExitGuard(life.clone(), index);
    life.send(Event::Started(index));
    let grace = current.load().config.runtime.shutdown_grace;
    let gens = Rc::new(Generations::new(index, current.clone()));
    let mut serving = Vec::new();
    reconcile(index, &gens, &mut serving);
    let admin = admin.map(|a| {
        let listener = Rc::new(a.into_listener());
        let task = engine::spawn(crate::admin::serve(gens.current(), listener.clone()));
        (listener, task)
    });
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
        reconcile(index, &gens, &mut serving);
    }

    // Handed over to a new process: the admin listener is its from now on. What this one
    // accepted until then is served (the accept loop takes it from the queue).
    let admin = match admin {
        Some((listener, task)) if life.handed_over() => {
            listener.stop_accepting().await;
            engine::yield_now().await;
            drop(task);
            None
        }
        admin => admin,
    };
    // Stop accepting: serve what the kernel already queued, then close the sockets.
    for s in serving {
        s.stop().await;
    }
    // The connections just taken from the queues register when their tasks first run: let
    // them, so that the wait below counts them.
    engine::yield_now().await;
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

/// One listener served on this core: its sockets, and where its new connections go.
struct Listener {
    sockets: Arc<Sockets>,
    /// The newest worker whose generation serves these sockets, and the listener's id there.
    target: RefCell<(Rc<Worker>, ListenerId)>,
    /// Outlives generations, so a reload does not reset what each address holds.
    per_ip: Rc<PerIp>,
}

impl Listener {
    /// The worker and listener id for a connection accepted now: the newest generation's, or,
    /// in the moment between a reload that removed this listener and this core's stopping it,
    /// the last generation that had it.
    fn target(&self, gens: &Generations) -> (Rc<Worker>, ListenerId) {
        let w = gens.for_new_connection();
        let mut t = self.target.borrow_mut();
        if !Rc::ptr_eq(&w, &t.0) {
            if let Some(id) = w.shared.listener_of(&self.sockets) {
                *t = (w, id);
            }
        }
        t.clone()
    }
}

/// A listener being served: its accept loops, one per socket of this core.
struct Serving {
    listener: Rc<Listener>,
    sockets: Vec<Rc<engine::Listener>>,
    accepts: Vec<engine::Task<()>>,
}

impl Serving {
    /// Stops accepting: what the kernel already queued is served, then the sockets close.
    async fn stop(self) {
        drop(self.accepts);
        let l = self.listener;
        for socket in &self.sockets {
            socket.stop_accepting().await;
            for (stream, peer) in socket.accept_queued() {
                let (w, id) = l.target.borrow().clone();
                w.shared
                    .state
                    .connections(id)
                    .fetch_add(1, Ordering::Relaxed);
                engine::spawn_detached(connection(w, stream, peer, id, l.per_ip.clone()));
            }
        }
    }
}

/// Serves the listeners of the current generation and only those: starts accepting on
/// sockets new to this core, stops on those the generation no longer has. The idle
/// connections of a listener that is gone close now; busy ones finish their request first.
fn reconcile(index: usize, gens: &Rc<Generations>, serving: &mut Vec<Serving>) {
    let current = gens.current();
    let listening = &current.shared.listening;
    let (keep, gone): (Vec<Serving>, Vec<Serving>) = std::mem::take(serving)
        .into_iter()
        .partition(|s| current.shared.listener_of(&s.listener.sockets).is_some());
    *serving = keep;
    for s in gone {
        let sockets = s.listener.sockets.clone();
        engine::spawn_detached(s.stop());
        for w in gens.live() {
            if let Some(id) = w.shared.listener_of(&sockets) {
                w.conns.close_idle_on(id.0);
            }
        }
    }
    for s in serving.iter() {
        if let Some(id) = current.shared.listener_of(&s.listener.sockets) {
            *s.listener.target.borrow_mut() = (current.clone(), id);
        }
    }
    for (i, sockets) in listening.iter().enumerate() {
        if serving
            .iter()
            .any(|s| Arc::ptr_eq(&s.listener.sockets, sockets))
        {
            continue;
        }
        let listener = Rc::new(Listener {
            sockets: sockets.clone(),
            target: RefCell::new((current.clone(), ListenerId(i as u32))),
            per_ip: Rc::default(),
        });
        let socks: Vec<Rc<engine::Listener>> = sockets
            .take(index)
            .into_iter()
            .map(|s| Rc::new(engine::Listener::from_std(s)))
            .collect();
        let accepts = socks
            .iter()
            .map(|s| engine::spawn(accept_loop(gens.clone(), listener.clone(), s.clone())))
            .collect();
        serving.push(Serving {
            listener,
            sockets: socks,
            accepts,
        });
    }
}

async fn accept_loop(gens: Rc<Generations>, l: Rc<Listener>, socket: Rc<engine::Listener>) {
    let throttle = engine::Throttle::new(Duration::from_secs(10));
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                let (w, id) = l.target(&gens);
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
                engine::spawn_detached(connection(w, stream, peer, id, l.per_ip.clone()));
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
    /// None: the address is at its limit. Some(None): no limit, nothing counted.
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
    /// Boxed: most listeners have no per-address limit, and this lives as long as the
    /// connection (every byte of the idle task counts).
    _per_ip: Option<Box<IpCount>>,
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
        w,
        listener: id,
        _per_ip: None,
    };
    let setup = Box::pin(setup(stream, peer, open, per_ip));
    // Holds nothing but the boxed setup until it is done: the worker and listener come back
    // with it.
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
        let (w, id) = (open.w.clone(), open.listener);
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
    let w = open.w.clone();
    let id = open.listener;
    // Registered from the accept on (never idle), so a graceful stop or a hand-over waits for
    // a connection in its setup: it was accepted here, so it is answered here. Serving
    // registers it again (see `proxy::serve`), from the same poll this one ends in.
    let _accepted = w.conns.register(stream.fd(), id.0);
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
    open._per_ip = count.map(Box::new);
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
