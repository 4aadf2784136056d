//! Per-core state: everything a connection task on this core needs, none of it shared.
//! `!Send` by construction (Rc/RefCell/Cell); runs on the owning core; takes no lock.

use crate::accesslog;
use crate::balance::{Balancer, Member};
use crate::metrics::{self, Exchange};
use crate::runtime::conns::Conns;
use crate::runtime::io::Stream;
use crate::runtime::Shared;
use crate::upstream::Pool;
use std::cell::RefCell;
use std::sync::Arc;

pub struct Worker {
    pub index: usize,
    pub shared: Arc<Shared>,
    /// One balancer per upstream, indexed by `UpstreamId`.
    pub balancers: RefCell<Vec<Balancer>>,
    pub pool: RefCell<Pool>,
    pub conns: Conns,
    /// This core's counters (this core is their only writer).
    pub metrics: Arc<metrics::Core>,
    pub access_log: accesslog::Log,
}

impl Worker {
    pub fn new(index: usize, shared: Arc<Shared>) -> Worker {
        let config = &shared.config;
        let balancers = config
            .upstreams
            .iter()
            .map(|u| {
                let members: Vec<Member> = u
                    .servers
                    .iter()
                    .map(|s| Member {
                        id: &s.name,
                        weight: s.weight,
                        backup: s.backup,
                    })
                    .collect();
                Balancer::new(&u.algorithm, &members, index, 0x9e37_79b9 ^ index as u64)
            })
            .collect();
        let start_secs = metrics::unix_ms(shared.started) / 1000;
        let reopen = shared.log_reopen.load(std::sync::atomic::Ordering::Relaxed);
        Worker {
            index,
            pool: RefCell::new(Pool::new(config)),
            balancers: RefCell::new(balancers),
            conns: Conns::default(),
            metrics: shared.metrics.core(index),
            access_log: accesslog::Log::new(&config.access_log, index, start_secs, reopen),
            shared,
        }
    }

    /// The end of one exchange on `client`: counters, then the access log line.
    pub fn request_done(&self, x: &mut Exchange, client: &Stream) {
        let r = x.finish(client.received(), client.sent());
        self.metrics.request(&r);
        self.access_log.write(x, &self.shared);
    }
}
