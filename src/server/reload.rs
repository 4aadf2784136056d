//! Configuration reload (SIGHUP, or `POST /api/reload`): the file is read and validated again
//! off the cores; if it is valid, compatible with what only a restart can change, and every
//! new listener binds, it is published as a new generation (the cores then start and stop
//! accepting on the listeners added and removed; see `listeners.rs`). Otherwise the reason is
//! logged and kept for the admin API, and the running configuration stays, its listeners
//! untouched: whatever the refused reload bound is closed.

use super::listeners::{Listening, Plan};
use crate::config::Config;
use crate::context::{Current, Shared};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub(super) fn reload(path: &Path, current: &Current, listening: &mut Listening) {
    super::notify::reloading();
    let old = current.load_full();
    let life = old.life.clone();
    let refused = match next_generation(path, &old, listening) {
        Ok((shared, plan)) => {
            let (generation, upstreams, servers) = (
                shared.generation,
                shared.config.upstreams.len(),
                shared.config.server_count(),
            );
            shared.metrics.config_reload(true);
            super::logging::apply(&shared.config.log);
            listening.commit(plan, &shared.config);
            current.store(Arc::new(shared));
            life.last_reload_error.store(None);
            // After the store: a core woken by this finds the new generation, and so does
            // anyone who read the log line.
            life.published(generation);
            log::info!(
                "reloaded {}: generation {generation}, {upstreams} upstreams, {servers} servers",
                path.display(),
            );
            false
        }
        Err(e) => {
            log::error!(
                "reload of {} refused, the running configuration stays: {e}",
                path.display()
            );
            count_refusal(&old, e.to_string());
            true
        }
    };
    life.reloads.fetch_add(1, Relaxed);
    super::notify::reloaded(life.generation(), refused);
}

/// A reload asked for while it cannot be done (`reason`): refused without reading the file.
pub(super) fn refuse(current: &Current, reason: &str) {
    super::notify::reloading();
    log::error!("reload refused, the running configuration stays: {reason}");
    let old = current.load_full();
    count_refusal(&old, reason.to_string());
    old.life.reloads.fetch_add(1, Relaxed);
    super::notify::reloaded(old.life.generation(), true);
}

/// Counts a refused reload and keeps its reason for the admin API.
fn count_refusal(old: &Shared, reason: String) {
    old.life.reload_failures.fetch_add(1, Relaxed);
    old.metrics.config_reload(false);
    old.life.last_reload_error.store(Some(Arc::new(reason)));
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{}", .0.lines().join("; "))]
    Config(crate::config::ConfigError),
    #[error("{0} changed: this needs a restart")]
    Restart(String),
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    #[error("{0}")]
    Listen(super::RunError),
    #[error("upstream {0} would have no server: its names did not resolve")]
    NoServers(String),
}

/// The generation `path` describes, and the listening sockets it needs (new ones bound).
fn next_generation(
    path: &Path,
    old: &Shared,
    listening: &Listening,
) -> Result<(Shared, Plan), Refused> {
    let mut config = Config::load(path, &crate::tls::Files).map_err(Refused::Config)?;
    super::host::apply_default_max_connections(&mut config, super::host::nofile_soft());
    compatible(&old.config, &config)?;
    // Names resolve again; one that fails keeps its addresses of the running generation.
    for w in crate::discovery::resolve_all(&mut config, Some(&old.config), Some(&old.life)) {
        log::warn!("reload: {}: {}", w.path, w.message);
    }
    if let Some(u) = crate::discovery::empty_upstreams(&config)
        .into_iter()
        .next()
    {
        return Err(Refused::NoServers(u));
    }
    let plan = listening
        .plan(&config, old.workers)
        .map_err(Refused::Listen)?;
    let shared = old.next(config, plan.sockets()).map_err(Refused::Tls)?;
    Ok((shared, plan))
}

/// What is bound or spawned at start, other than listeners, cannot change without a restart.
fn compatible(old: &Config, new: &Config) -> Result<(), Refused> {
    let restart = |what: &str| Err(Refused::Restart(what.to_string()));
    if old.admin.listen != new.admin.listen {
        return restart("admin.listen (or its socket_mode, socket_owner, socket_group)");
    }
    let (o, n) = (&old.runtime, &new.runtime);
    if o.workers != n.workers || o.cpus != n.cpus || o.io_memory != n.io_memory {
        return restart("runtime.workers, runtime.cpus or runtime.io_memory");
    }
    if o.engine != n.engine {
        return restart("runtime.engine");
    }
    Ok(())
}
