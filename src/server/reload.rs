//! Configuration reload (SIGHUP, or `POST /api/reload`): the file is read and validated again
//! off the cores; if it is valid and compatible with what is bound, it is published as a new
//! generation. Otherwise the reason is logged and kept for the admin API, and the running
//! configuration stays.

use crate::config::Config;
use crate::context::{Current, Shared};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub(super) fn reload(path: &Path, current: &Current) {
    super::notify::reloading();
    let old = current.load_full();
    let life = old.life.clone();
    let refused = match next_generation(path, &old) {
        Ok(shared) => {
            let (generation, upstreams, servers) = (
                shared.generation,
                shared.config.upstreams.len(),
                shared.config.server_count(),
            );
            shared.metrics.config_reload(true);
            super::logging::apply(&shared.config.log);
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
            life.reload_failures.fetch_add(1, Relaxed);
            old.metrics.config_reload(false);
            life.last_reload_error.store(Some(Arc::new(e.to_string())));
            true
        }
    };
    life.reloads.fetch_add(1, Relaxed);
    super::notify::reloaded(life.generation(), refused);
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
    #[error("upstream {0} would have no server: its names did not resolve")]
    NoServers(String),
}

fn next_generation(path: &Path, old: &Shared) -> Result<Shared, Refused> {
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
    old.next(config).map_err(Refused::Tls)
}

/// What is bound or spawned at start cannot change without a restart.
fn compatible(old: &Config, new: &Config) -> Result<(), Refused> {
    let restart = |what: &str| Err(Refused::Restart(what.to_string()));
    if old.listeners.len() != new.listeners.len() {
        return restart("the number of listeners");
    }
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        if o.name != n.name || o.addr != n.addr || o.backlog != n.backlog {
            return restart(&format!("listener {:?} (name, listen or backlog)", o.name));
        }
    }
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
