//! Changes of the server set between reloads, on the control thread: new addresses from the
//! resolver thread, and servers added or removed through the admin API. Each change is
//! published as a new generation exactly as a reload publishes one (`current.store`, then
//! `life.published`), built with `Shared::with_servers`: servers that stay keep their state
//! slot (health, drain, in-flight count), counters, sticky identity and idle connections;
//! servers that leave finish what they have in flight on the generation that had them.
//!
//! The control thread is the only publisher of generations, so a reload and a resolution
//! never race. A removal through the API drains first: the servers are set to `drain` at
//! once (no new requests or sessions) and leave the upstream once nothing is in flight to
//! them, or after `runtime.shutdown_grace`. What the API changed is kept until the next
//! reload, which re-reads the file and discards it (logged, and said in every answer).

use crate::config::{Config, Entry, Origin, Upstream};
use crate::context::{Current, Shared};
use crate::discovery::{self, Outcome, Resolver};
use crate::state::{AdminState, Reply, Resolved, ServerChange};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reload does to changes made through the API (in every API answer).
const ON_RELOAD: &str = "kept until the next reload, which re-reads the configuration file \
                         and discards changes made through the API";

/// How often a removal checks whether its servers are idle.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// A removal waiting for its servers to finish what is in flight.
struct Removal {
    upstream: String,
    /// The server or entry name removed.
    name: String,
    /// The servers drained for it.
    servers: Vec<String>,
    deadline: Instant,
}

/// The control thread's share of service discovery.
pub(super) struct Servers {
    resolver: Option<Resolver>,
    removals: Vec<Removal>,
}

impl Servers {
    /// Starts the resolver thread for the generation in `current`.
    pub(super) fn start(current: &Current) -> Servers {
        let shared = current.load_full();
        let resolver = match Resolver::start(shared.config.clone(), shared.life.clone()) {
            Ok(r) => Some(r),
            Err(e) => {
                log::error!("cannot start the resolver thread: {e}; names are not re-resolved");
                None
            }
        };
        Servers {
            resolver,
            removals: Vec::new(),
        }
    }

    /// How long the control thread may wait for its next event.
    pub(super) fn wait(&self) -> Option<Duration> {
        (!self.removals.is_empty()).then_some(DRAIN_CHECK)
    }

    /// After a reload attempt: if `before` was replaced, what the API had changed is gone,
    /// and the resolver follows the new generation.
    pub(super) fn reloaded(&mut self, before: &Shared, current: &Current) {
        let now = current.load_full();
        if now.generation == before.generation {
            return;
        }
        let (added, removed) = before.config.upstreams.iter().fold((0, 0), |(a, r), u| {
            let api = u.entries.iter().filter(|e| e.origin == Origin::Api).count();
            (a + api, r + u.removed.len())
        });
        if added + removed + self.removals.len() > 0 {
            log::warn!(
                "reload: {added} server entries added and {removed} removed through the admin \
                 API are discarded (the configuration file is the configuration)"
            );
        }
        self.removals.clear();
        self.follow(&now.config);
    }

    fn follow(&self, config: &Arc<Config>) {
        if let Some(r) = &self.resolver {
            r.follow(config.clone());
        }
    }

    /// New addresses for an entry, from the resolver thread.
    pub(super) fn resolved(&mut self, current: &Current, r: Resolved) {
        let shared = current.load_full();
        let mut config = (*shared.config).clone();
        let Some(u) = config.upstreams.iter_mut().find(|u| u.name == r.upstream) else {
            return;
        };
        let Some(e) = u
            .entries
            .iter_mut()
            .find(|e| e.name == r.entry && e.source == r.source)
        else {
            return;
        };
        if e.targets == r.targets {
            return;
        }
        let why = format!("{} resolved to {} addresses", e.source, r.targets.len());
        e.targets = r.targets;
        self.publish(current, &shared, config, &why);
    }

    /// A change through the admin API; answered through `reply`.
    pub(super) fn change(&mut self, current: &Current, change: ServerChange, reply: &Reply) {
        let (status, body) = match change {
            ServerChange::Add { upstream, entry } => self.add(current, &upstream, *entry),
            ServerChange::Remove { upstream, name } => self.remove(current, &upstream, &name),
        };
        reply.answer(status, body.to_string());
    }

    fn add(
        &mut self,
        current: &Current,
        upstream: &str,
        mut entry: Entry,
    ) -> (u16, serde_json::Value) {
        let shared = current.load_full();
        let mut config = (*shared.config).clone();
        let Some(u) = config.upstreams.iter_mut().find(|u| u.name == upstream) else {
            return error(404, format!("no upstream named {upstream:?}"));
        };
        // Checked again here: another change may have come first.
        if let Some(why) = u.clash(&entry) {
            return error(409, why);
        }
        if entry.is_name() {
            let outcome = discovery::lookup(&entry, &config.resolver);
            shared
                .life
                .resolutions
                .record(upstream, &entry.name, outcome.resolution());
            match outcome {
                Outcome::Found(targets, _) => entry.targets = targets,
                failed if !entry.resolve => {
                    return error(
                        422,
                        format!("{} does not resolve: {}", entry.source, failed.why()),
                    )
                }
                // Re-resolved from now on, as at start: no server until it resolves.
                _ => {}
            }
        }
        let name = entry.name.clone();
        let Some(u) = config.upstreams.iter_mut().find(|u| u.name == upstream) else {
            return error(404, format!("no upstream named {upstream:?}"));
        };
        u.entries.push(entry);
        let why = format!("server {name} added through the admin API");
        let published = self.publish(current, &shared, config, &why);
        let servers = published
            .config
            .upstreams
            .iter()
            .find(|u| u.name == upstream)
            .map(|u| entry_servers(u, &name))
            .unwrap_or_default();
        (
            201,
            json!({
                "added": name,
                "upstream": upstream,
                "servers": servers,
                "generation": published.generation,
                "on_reload": ON_RELOAD,
            }),
        )
    }

    fn remove(
        &mut self,
        current: &Current,
        upstream: &str,
        name: &str,
    ) -> (u16, serde_json::Value) {
        let shared = current.load_full();
        let Some(u) = shared.config.upstreams.iter().find(|u| u.name == upstream) else {
            return error(404, format!("no upstream named {upstream:?}"));
        };
        let servers: Vec<&crate::config::Server> = if u.entry(name).is_some() {
            u.servers
                .iter()
                .filter(|s| u.entries[s.entry].name == name)
                .collect()
        } else {
            u.servers.iter().filter(|s| s.name == name).collect()
        };
        if servers.is_empty() && u.entry(name).is_none() {
            return error(
                404,
                format!("upstream {upstream:?} has no server or entry named {name:?}"),
            );
        }
        if self
            .removals
            .iter()
            .any(|r| r.upstream == upstream && r.name == name)
        {
            return error(409, format!("{name:?} is already being removed"));
        }
        for s in &servers {
            let st = shared.state.get(s.id);
            if st.admin() != AdminState::Drain {
                st.set_admin(AdminState::Drain);
            }
        }
        let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
        log::info!(
            "admin: removing {name} from upstream {upstream}: draining {}",
            if names.is_empty() {
                "no server".to_string()
            } else {
                names.join(", ")
            }
        );
        let grace = shared.config.runtime.shutdown_grace;
        self.removals.push(Removal {
            upstream: upstream.to_string(),
            name: name.to_string(),
            servers: names.clone(),
            deadline: Instant::now() + grace,
        });
        // Nothing in flight: it goes at once.
        self.tick(current);
        (
            202,
            json!({
                "removing": name,
                "upstream": upstream,
                "draining": names,
                "removed_when": format!(
                    "nothing is in flight to them, at most runtime.shutdown_grace ({}) from now",
                    humantime::format_duration(grace)
                ),
                "on_reload": ON_RELOAD,
            }),
        )
    }

    /// Completes the removals whose servers are idle (or whose time is up).
    pub(super) fn tick(&mut self, current: &Current) {
        let now = Instant::now();
        let shared = current.load_full();
        let ready: Vec<Removal> = {
            let (ready, waiting) = std::mem::take(&mut self.removals)
                .into_iter()
                .partition(|r| now >= r.deadline || idle(&shared, r));
            self.removals = waiting;
            ready
        };
        if ready.is_empty() {
            return;
        }
        let mut config = (*shared.config).clone();
        let mut why = Vec::new();
        for r in ready {
            let Some(u) = config.upstreams.iter_mut().find(|u| u.name == r.upstream) else {
                continue;
            };
            match u.entries.iter().position(|e| e.name == r.name) {
                Some(i) if u.entries[i].origin == Origin::Api => {
                    u.entries.remove(i);
                }
                _ => u.removed.push(r.name.clone()),
            }
            why.push(format!("{} removed through the admin API", r.name));
        }
        self.publish(current, &shared, config, &why.join(", "));
    }

    /// Publishes `config` (`old`'s with other entries or targets) with its servers expanded,
    /// logging what changed and why.
    fn publish(
        &self,
        current: &Current,
        old: &Shared,
        mut config: Config,
        why: &str,
    ) -> Arc<Shared> {
        config.expand();
        let shared = Arc::new(old.with_servers(config));
        for (u, before) in shared.config.upstreams.iter().zip(&old.config.upstreams) {
            log_change(before, u, why, shared.generation);
        }
        current.store(shared.clone());
        shared.life.published(shared.generation);
        self.follow(&shared.config);
        shared
    }
}

/// Whether nothing is in flight to the servers of `r`.
fn idle(shared: &Shared, r: &Removal) -> bool {
    let Some(u) = shared
        .config
        .upstreams
        .iter()
        .find(|u| u.name == r.upstream)
    else {
        return true;
    };
    u.servers
        .iter()
        .filter(|s| r.servers.contains(&s.name))
        .all(|s| shared.state.get(s.id).active.load(Relaxed) == 0)
}

/// The servers of entry `name`.
fn entry_servers(u: &Upstream, name: &str) -> Vec<String> {
    u.servers
        .iter()
        .filter(|s| u.entries[s.entry].name == name)
        .map(|s| s.name.clone())
        .collect()
}

/// One line per upstream whose servers changed.
fn log_change(before: &Upstream, after: &Upstream, why: &str, generation: u64) {
    let names =
        |u: &Upstream| -> Vec<String> { u.servers.iter().map(|s| s.name.clone()).collect() };
    let (old, new) = (names(before), names(after));
    let added: Vec<&String> = new.iter().filter(|n| !old.contains(n)).collect();
    let removed: Vec<&String> = old.iter().filter(|n| !new.contains(n)).collect();
    if added.is_empty() && removed.is_empty() {
        return;
    }
    let list = |v: &[&String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    log::info!(
        "upstream {}: servers added: {}; removed: {}; {} servers now ({why}); generation {generation}",
        after.name,
        list(&added),
        list(&removed),
        new.len(),
    );
}

fn error(status: u16, message: String) -> (u16, serde_json::Value) {
    (status, json!({ "error": message }))
}
