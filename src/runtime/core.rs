//! One core's life: its listeners, its admin listener (core 0), the switch to a new config
//! generation, and the graceful stop.
//!
//! A generation is served by its own per-core [`Worker`] (balancers, pools, connection
//! registry). New connections go to the newest; a retired worker's connections finish the
//! request in flight and close (idle ones at once), as nginx's old workers do after a reload.
//! Runs on the owning core; takes no lock.

use super::{io, Current, Shared, Worker};
use crate::config::ListenerId;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a core looks at the stop flag and the current generation.
const TICK: Duration = Duration::from_millis(50);

/// The worker new connections are given, and the retired ones still serving connections.
struct Generations {
    index: usize,
    published: Arc<Current>,
    current: RefCell<Rc<Worker>>,
    retired: RefCell<Vec<Weak<Worker>>>,
}

impl Generations {
    fn current(&self) -> Rc<Worker> {
        self.current.borrow().clone()
    }

    /// The worker for a new connection: the published generation's, switching to it first
    /// if a reload just published one (so no connection accepted after a reload uses the
    /// old configuration or certificates).
    fn for_new_connection(&self) -> Rc<Worker> {
        let published = self.published.load().generation;
        if published != self.current.borrow().shared.generation {
            self.follow(self.published.load_full());
        }
        self.current()
    }

    fn live(&self) -> Vec<Rc<Worker>> {
        let mut all = vec![self.current()];
        all.extend(self.retired.borrow().iter().filter_map(Weak::upgrade));
        all
    }

    /// Moves to `shared` when it is newer than the current worker's generation.
    fn follow(&self, shared: Arc<Shared>) {
        if shared.generation <= self.current.borrow().shared.generation {
            return;
        }
        let next = Rc::new(Worker::new(self.index, shared, self.published.clone()));
        let old = self.current.replace(next.clone());
        old.retire(next);
        let mut retired = self.retired.borrow_mut();
        retired.retain(|w| w.strong_count() > 0);
        retired.push(Rc::downgrade(&old));
    }
}

pub(super) async fn main(
    index: usize,
    current: Arc<Current>,
    sockets: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
) {
    let first = current.load_full();
    let life = first.life.clone();
    let _exit = ExitGuard(life.clone());
    life.started_workers.fetch_add(1, Ordering::Relaxed);
    let grace = first.config.runtime.shutdown_grace;
    let gens = Rc::new(Generations {
        index,
        published: current.clone(),
        current: RefCell::new(Rc::new(Worker::new(index, first, current.clone()))),
        retired: RefCell::new(Vec::new()),
    });
    let listeners: Vec<Rc<io::Listener>> = sockets
        .into_iter()
        .map(|s| Rc::new(io::Listener::from_std(s)))
        .collect();
    let accepts: Vec<io::Task<()>> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| io::spawn(accept_loop(gens.clone(), l.clone(), ListenerId(i as u32))))
        .collect();
    let admin = admin.map(|a| {
        io::spawn(crate::admin::serve(
            gens.current(),
            io::Listener::from_std(a),
        ))
    });
    let sweeper = io::spawn({
        let gens = gens.clone();
        async move {
            loop {
                io::sleep(Duration::from_secs(1)).await;
                gens.current().pool.borrow_mut().sweep();
            }
        }
    });
    // Access log lines are written from here, never from a request.
    let log_ticker = io::spawn({
        let gens = gens.clone();
        async move {
            loop {
                io::sleep(crate::accesslog::TICK).await;
                for w in gens.live() {
                    w.access_log.tick(&w.shared);
                }
            }
        }
    });

    while !life.stopping.load(Ordering::Relaxed) {
        io::sleep(TICK).await;
        gens.follow(current.load_full());
    }

    // Stop accepting: serve what the kernel already queued, then close the sockets.
    drop(accepts);
    let w = gens.current();
    for (i, l) in listeners.iter().enumerate() {
        for (stream, peer) in l.accept_queued() {
            io::spawn_detached(serve_accepted(
                w.clone(),
                stream,
                peer,
                ListenerId(i as u32),
            ));
        }
    }
    drop(listeners);
    let live = gens.live();
    for w in &live {
        w.conns.close_idle();
    }

    let open = |ws: &[Rc<Worker>]| ws.iter().map(|w| w.conns.live()).sum::<usize>();
    let deadline = Instant::now() + grace;
    while open(&live) > 0 && Instant::now() < deadline {
        io::sleep(Duration::from_millis(20)).await;
    }
    if open(&live) > 0 {
        log::warn!(
            "worker {index}: shutdown grace over, closing {} connections",
            open(&live)
        );
    }
    drop(admin);
    drop(sweeper);
    drop(log_ticker);
    for w in gens.live() {
        w.access_log.flush(&w.shared);
        w.pool.borrow_mut().clear();
    }
}

async fn accept_loop(gens: Rc<Generations>, listener: Rc<io::Listener>, id: ListenerId) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let w = gens.for_new_connection();
                let max = w.shared.config.listeners[id.0 as usize].max_connections;
                let open = w.shared.state.connections(id);
                if max.is_some_and(|max| open.load(Ordering::Relaxed) >= max) {
                    // Over the listener's limit: closed at once, before reading anything.
                    w.rejected.set(w.rejected.get() + 1);
                    drop(stream);
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                io::spawn_detached(async move {
                    serve_accepted(w.clone(), stream, peer, id).await;
                    w.shared
                        .state
                        .connections(id)
                        .fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the queue waits.
                log::warn!("accept failed: {e}; retrying in 100ms");
                io::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection; on a TLS listener the handshake runs first, on this core. Counted as open
/// (metrics) for as long as it is served.
async fn serve_accepted(w: Rc<Worker>, stream: io::Stream, peer: SocketAddr, id: ListenerId) {
    struct Open(Rc<Worker>, ListenerId);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.metrics.conn_closed(self.1);
        }
    }
    w.metrics.conn_opened(id);
    let _open = Open(w.clone(), id);
    match w.shared.tls.server(id) {
        None => crate::proxy::serve(w, stream, peer, id).await,
        Some(tls) => crate::tls::accept::serve(w, stream, peer, id, tls).await,
    }
}

/// Counts a worker as exited however its executor ends, panics included.
struct ExitGuard(Arc<super::Life>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.exited.fetch_add(1, Ordering::Relaxed);
    }
}
