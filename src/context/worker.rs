//! Per-core state: everything a connection task on this core needs, none of it shared.
//! `!Send` by construction (Rc/RefCell/Cell); runs on the owning core; takes no lock.

use super::{Current, Shared};
use crate::accesslog::{self, Exchange};
use crate::balance::{Balancer, Member};
use crate::engine::Stream;
use crate::metrics;
use crate::state::Conns;
use crate::upstream::Pool;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A request waiting in this core's queue of an upstream: its ticket, and its waker while it
/// waits for its turn.
pub type Waiter = (u64, Option<std::task::Waker>);

pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// One balancer per upstream, indexed by `UpstreamId`.
    pub balancers: RefCell<Vec<Balancer>>,
    pub pool: RefCell<Pool>,
    pub conns: Conns,
    /// Connection tasks that panicked (contained in `proxy::serve`).
    pub panics: Cell<u64>,
    /// Per upstream: this core's requests waiting for a slot, oldest first: a ticket, and
    /// the waker of a waiter that is not first (woken when it becomes first).
    pub queues: RefCell<Vec<std::collections::VecDeque<Waiter>>>,
    pub queue_ticket: Cell<u64>,
    /// Client connections closed at accept because a listener was at `max_connections`.
    pub rejected: Cell<u64>,
    balancer_generation: Cell<u64>,
    /// The generation in force, for the control plane (admin) on this core.
    pub current: Arc<Current>,
    /// Set when a reload replaced this generation, with the worker that replaces it.
    pub retired: Cell<bool>,
    pub successor: RefCell<Option<Rc<Worker>>>,
    /// This core's counters (this core is their only writer).
    pub metrics: Arc<metrics::Core>,
    pub access_log: accesslog::Log,
}

/// One balancer per upstream for core `index`, with the weights now in force.
fn balancers(shared: &Shared, index: usize) -> Vec<Balancer> {
    shared
        .config
        .upstreams
        .iter()
        .map(|u| {
            let members: Vec<Member> = u
                .servers
                .iter()
                .map(|s| Member {
                    id: &s.name,
                    weight: shared.state.get(s.id).weight.load(Relaxed),
                    backup: s.backup,
                })
                .collect();
            Balancer::new(&u.algorithm, &members, index, 0x9e37_79b9 ^ index as u64)
        })
        .collect()
}

impl Worker {
    /// Rebuilds the balancers when weights changed (the state table's generation moved);
    /// a load and a compare otherwise.
    pub fn refresh_balancers(&self) {
        let generation = self.shared.state.generation();
        if generation != self.balancer_generation.get() {
            self.balancer_generation.set(generation);
            *self.balancers.borrow_mut() = balancers(&self.shared, self.index);
        }
    }

    /// This generation is replaced by `next`: its connections move there before their next
    /// request (`proxy` checks `retired` between requests); its pooled upstream
    /// connections close.
    pub fn retire(&self, next: Rc<Worker>) {
        if next.shared.pools == self.shared.pools {
            // Only servers changed (discovery, the admin API): a server that stays (same
            // upstream and name, hence the same address) keeps its idle connections.
            let (old, new) = (&self.shared.config, &next.shared.config);
            let ids: std::collections::HashMap<(&str, &str), crate::config::ServerId> = new
                .servers()
                .map(|(u, s)| ((u.name.as_str(), s.name.as_str()), s.id))
                .collect();
            let names: Vec<(&str, &str)> = old
                .servers()
                .map(|(u, s)| (u.name.as_str(), s.name.as_str()))
                .collect();
            self.pool
                .borrow_mut()
                .hand_over(&mut next.pool.borrow_mut(), |id| {
                    names.get(id.0 as usize).and_then(|k| ids.get(k).copied())
                });
        }
        *self.successor.borrow_mut() = Some(next);
        self.retired.set(true);
        self.pool.borrow_mut().retire();
    }

    pub fn new(index: usize, shared: Arc<Shared>, current: Arc<Current>) -> Worker {
        let config = &shared.config;
        let balancers = balancers(&shared, index);
        let start_secs = metrics::unix_ms(shared.started) / 1000;
        let reopen = shared.life.log_reopen();
        Worker {
            index,
            pool: RefCell::new(Pool::new(config)),
            balancers: RefCell::new(balancers),
            conns: Conns::default(),
            panics: Cell::new(0),
            queues: RefCell::new(
                config
                    .upstreams
                    .iter()
                    .map(|u| {
                        std::collections::VecDeque::with_capacity(
                            u.queue.map_or(0, |q| q.size.min(1024) as usize),
                        )
                    })
                    .collect(),
            ),
            queue_ticket: Cell::new(0),
            rejected: Cell::new(0),
            balancer_generation: Cell::new(shared.state.generation()),
            current,
            retired: Cell::new(false),
            successor: RefCell::new(None),
            metrics: shared.metrics.core(index),
            access_log: accesslog::Log::new(&config.access_log, index, start_secs, reopen),
            shared,
        }
    }

    /// The end of one exchange on `client`: counters, then the access log line.
    pub fn request_done(&self, x: &mut Exchange, client: &Stream) {
        let r = x.finish(client.received(), client.sent());
        self.metrics.request(&r);
        self.access_log
            .write(x, &self.shared.config, &self.shared.metrics);
    }
}

impl Drop for Worker {
    /// A retired generation's last lines are written when its last connection ends.
    fn drop(&mut self) {
        self.access_log.flush(&self.shared.metrics);
    }
}
