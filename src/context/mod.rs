//! What the serving code works with: the configuration generation every core reads
//! ([`Shared`], published whole through [`Current`]), the per-core state built from it
//! ([`Worker`]) and the switch between generations on a core ([`Generations`]).
//!
//! A generation bundles the pieces that the lower features build from one config (server
//! state table, TLS configs, metric registry), so this layer sits above them and below the
//! modules that serve traffic (proxy, admin, health). Uses `config`, `engine`, `state`,
//! `balance`, `metrics`, `accesslog`, `tls`, `upstream`.

mod generations;
mod sockets;
mod worker;

pub use generations::Generations;
pub use sockets::Sockets;
pub use worker::Worker;

use crate::config::{Config, ListenerId};
use crate::state::{Life, StateTable};
use std::sync::Arc;

/// One configuration generation: the validated config and everything built from it that
/// every core reads. Immutable once published; a reload publishes a new one.
pub struct Shared {
    pub config: Arc<Config>,
    pub state: StateTable,
    /// 0 at start, +1 per successful reload or change of servers.
    pub generation: u64,
    /// Generations with the same value differ in their servers only (discovery, the admin
    /// API): a core moving between them hands idle upstream connections over. A reload
    /// starts a new value.
    pub pools: u64,
    pub life: Arc<Life>,
    /// TLS configs of listeners and upstreams.
    pub tls: crate::tls::Tls,
    pub started: std::time::SystemTime,
    pub workers: usize,
    pub metrics: crate::metrics::Registry,
    /// The sockets of each listener, by `ListenerId` (see [`Sockets`] for identity).
    pub listening: Box<[Arc<Sockets>]>,
}

impl Shared {
    /// The first generation of a process: `workers` cores serving `config` on `listening`
    /// (one entry per listener). Fails when a TLS file cannot be loaded.
    pub fn new(
        config: Config,
        workers: usize,
        life: Arc<Life>,
        listening: Box<[Arc<Sockets>]>,
    ) -> Result<Shared, crate::tls::TlsError> {
        Ok(Shared {
            tls: crate::tls::Tls::new(&config)?,
            state: StateTable::new(&config, workers),
            metrics: crate::metrics::Registry::new(&config, workers),
            config: Arc::new(config),
            generation: 0,
            pools: 0,
            life,
            started: std::time::SystemTime::now(),
            workers,
            listening,
        })
    }

    /// The generation after this one, for `config` (already validated) on `listening`:
    /// servers that stay keep their state, TLS keeps its session-ticket keys, counters carry
    /// over.
    pub fn next(
        &self,
        config: Config,
        listening: Box<[Arc<Sockets>]>,
    ) -> Result<Shared, crate::tls::TlsError> {
        let state = StateTable::carry(&config, &self.config, &self.state);
        let tls = self.tls.rebuild(&config)?;
        let metrics =
            crate::metrics::Registry::next(&config, self.workers, &self.metrics, &self.config);
        Ok(Shared {
            tls,
            metrics,
            config: Arc::new(config),
            state,
            generation: self.generation + 1,
            pools: self.generation + 1,
            life: self.life.clone(),
            started: self.started,
            workers: self.workers,
            listening,
        })
    }

    /// The listener served on `sockets` in this generation, if it still is.
    pub fn listener_of(&self, sockets: &Arc<Sockets>) -> Option<ListenerId> {
        self.listening
            .iter()
            .position(|s| Arc::ptr_eq(s, sockets))
            .map(|i| ListenerId(i as u32))
    }

    /// Listener `id` of this generation in `next`: the listener on the same sockets (its name
    /// may have changed), or None when `next` no longer serves them (removed, or moved to
    /// another address).
    pub fn listener_in(&self, id: ListenerId, next: &Shared) -> Option<ListenerId> {
        next.listener_of(self.listening.get(id.0 as usize)?)
    }

    /// The generation after this one for `config`, which differs from this one's in its
    /// servers only (`Config::expand` after a resolution or an admin API change): servers
    /// that stay keep their state, counters and idle connections; TLS is not re-read.
    pub fn with_servers(&self, config: Config) -> Shared {
        Shared {
            tls: self.tls.with_servers(&config),
            state: StateTable::carry(&config, &self.config, &self.state),
            metrics: crate::metrics::Registry::next(
                &config,
                self.workers,
                &self.metrics,
                &self.config,
            ),
            config: Arc::new(config),
            generation: self.generation + 1,
            pools: self.pools,
            life: self.life.clone(),
            started: self.started,
            workers: self.workers,
            listening: self.listening.clone(),
        }
    }

    pub fn stopping(&self) -> bool {
        self.life.stopping()
    }

    /// What a metrics scrape reads.
    pub fn scrape(&self) -> crate::metrics::Scrape<'_> {
        crate::metrics::Scrape {
            config: &self.config,
            state: &self.state,
            metrics: &self.metrics,
            workers: self.workers,
            started: self.started,
            certificates: self.tls.certificates(),
            resolutions: &self.life.resolutions,
        }
    }
}

/// The generation in force; cores and the control plane load it, reloads store it.
pub type Current = arc_swap::ArcSwap<Shared>;
