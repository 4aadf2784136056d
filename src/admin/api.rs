//! The JSON runtime API: read upstreams and servers, change a server's state and weight, add
//! and remove servers (the control thread applies those: `server/servers.rs`).
//!
//! Writes go to the shared state table, which every core reads on its next pick; worker 0
//! serves every admin request, so two changes never race each other.

use super::Response;
use crate::config::{Entry, Server, Upstream};
use crate::context::Shared;
use crate::state::Resolution;
use crate::state::{log_change, now_ms, AdminState, ServerChange};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;

#[derive(Serialize)]
struct UpstreamsJson<'a> {
    upstreams: Vec<UpstreamJson<'a>>,
}

#[derive(Serialize)]
struct UpstreamJson<'a> {
    name: &'a str,
    balance: &'static str,
    servers: Vec<ServerJson<'a>>,
    /// What the file and the API list: addresses, and names with what they resolved to.
    entries: Vec<EntryJson<'a>>,
    /// Server and entry names removed through the API (until the next reload).
    removed: &'a [String],
}

#[derive(Serialize)]
struct EntryJson<'a> {
    name: &'a str,
    /// `IP:port`, `host:port` or `srv NAME`.
    source: String,
    resolve: bool,
    /// `config` or `api`: a reload discards what the API added or removed.
    origin: &'static str,
    /// The addresses in force.
    addresses: Vec<String>,
    /// Lookups by result (names only), and how long ago the last one succeeded.
    resolutions: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ServerJson<'a> {
    name: &'a str,
    addr: String,
    /// The entry it comes from.
    entry: &'a str,
    /// `up`, `down`, `draining` or `maint`: the words of the metrics and the log
    /// (`state::Status`).
    state: &'static str,
    /// Passive and active health together, whatever the operator set: `up` or `down`.
    health: &'static str,
    active: u32,
    weight: u32,
    fails: u32,
    backup: bool,
    max_conns: Option<u32>,
    last_check: Option<LastCheck>,
}

#[derive(Serialize)]
struct LastCheck {
    /// 0 when the check got no response.
    status: u16,
    ok: bool,
    at_ms_ago: u64,
    duration_us: u32,
}

fn server_json<'a>(shared: &Shared, u: &'a Upstream, s: &'a Server, now: u64) -> ServerJson<'a> {
    let st = shared.state.get(s.id);
    let checked_at = st.last_check_ms.load(Relaxed);
    ServerJson {
        name: &s.name,
        addr: s.addr.to_string(),
        entry: u.entries.get(s.entry).map_or("", |e| e.name.as_str()),
        state: st.status(now).as_str(),
        health: st.health(now).as_str(),
        active: st.active.load(Relaxed),
        weight: st.weight.load(Relaxed),
        fails: st.fails.load(Relaxed),
        backup: s.backup,
        max_conns: s.max_conns,
        last_check: (checked_at != 0).then(|| LastCheck {
            status: st.last_check_status.load(Relaxed),
            ok: st.last_check_ok.load(Relaxed),
            at_ms_ago: now.saturating_sub(checked_at),
            duration_us: st.last_check_us.load(Relaxed),
        }),
    }
}

fn upstream_json<'a>(shared: &Shared, u: &'a Upstream, now: u64) -> UpstreamJson<'a> {
    UpstreamJson {
        name: &u.name,
        balance: u.algorithm.name(),
        servers: u
            .servers
            .iter()
            .map(|s| server_json(shared, u, s, now))
            .collect(),
        entries: u.entries.iter().map(|e| entry_json(shared, u, e)).collect(),
        removed: &u.removed,
    }
}

fn entry_json<'a>(shared: &Shared, u: &Upstream, e: &'a Entry) -> EntryJson<'a> {
    let resolutions = shared.life.resolutions.find(&u.name, &e.name).map(|c| {
        let mut m = serde_json::Map::new();
        for (name, n) in Resolution::NAMES.iter().zip(&c.results) {
            m.insert((*name).into(), n.load(Relaxed).into());
        }
        let last = c.last_success_ms.load(Relaxed);
        let now = crate::metrics::unix_ms(std::time::SystemTime::now());
        m.insert(
            "last_success_ms_ago".into(),
            (last != 0).then(|| now.saturating_sub(last)).into(),
        );
        serde_json::Value::Object(m)
    });
    EntryJson {
        name: &e.name,
        source: e.source.to_string(),
        resolve: e.resolve,
        origin: e.origin.name(),
        addresses: e.targets.iter().map(|t| t.addr.to_string()).collect(),
        resolutions,
    }
}

/// `POST /api/upstreams/{u}/servers` with a server table as JSON: validated here (as the
/// file is), applied by the control thread.
pub fn add(shared: &Shared, upstream: &str, body: &[u8]) -> Result<ServerChange, Response> {
    let u = find_upstream(shared, upstream)?;
    match shared.config.api_entry(u, body) {
        Ok(entry) => Ok(ServerChange::Add {
            upstream: upstream.to_string(),
            entry: Box::new(entry),
        }),
        Err(problems) => {
            // Not JSON (or not a server table): 400; JSON with invalid values: 422.
            let status = if problems
                .iter()
                .any(|p| p.message.starts_with("invalid JSON"))
            {
                400
            } else {
                422
            };
            let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            Err(Response::json(
                status,
                &serde_json::json!({ "error": lines.join("; "), "problems": lines }),
            ))
        }
    }
}

/// `GET /api/upstreams`
pub fn upstreams(shared: &Shared) -> Response {
    let now = now_ms();
    Response::json(
        200,
        &UpstreamsJson {
            upstreams: shared
                .config
                .upstreams
                .iter()
                .map(|u| upstream_json(shared, u, now))
                .collect(),
        },
    )
}

fn find_upstream<'a>(shared: &'a Shared, name: &str) -> Result<&'a Upstream, Response> {
    shared
        .config
        .upstreams
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| Response::error(404, &format!("no upstream named {name:?}")))
}

fn find_server<'a>(
    shared: &'a Shared,
    upstream: &str,
    server: &str,
) -> Result<(&'a Upstream, &'a Server), Response> {
    let u = find_upstream(shared, upstream)?;
    let s = u.servers.iter().find(|s| s.name == server).ok_or_else(|| {
        Response::error(
            404,
            &format!("upstream {upstream:?} has no server named {server:?}"),
        )
    })?;
    Ok((u, s))
}

/// `GET /api/upstreams/{u}`
pub fn upstream(shared: &Shared, name: &str) -> Response {
    match find_upstream(shared, name) {
        Ok(u) => Response::json(200, &upstream_json(shared, u, now_ms())),
        Err(r) => r,
    }
}

/// `GET /api/upstreams/{u}/servers/{s}`
pub fn server(shared: &Shared, upstream: &str, server: &str) -> Response {
    match find_server(shared, upstream, server) {
        Ok((u, s)) => Response::json(200, &server_json(shared, u, s, now_ms())),
        Err(r) => r,
    }
}

/// The body of a change: either field or both.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    state: Option<String>,
    weight: Option<i64>,
}

/// A change, validated.
#[derive(Debug, PartialEq, Eq)]
struct Valid {
    state: Option<AdminState>,
    weight: Option<u32>,
}

fn parse_change(body: &[u8]) -> Result<Valid, String> {
    let c: Change = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let state = match c.state.as_deref() {
        None => None,
        Some(word) => match AdminState::parse(word) {
            Some(s) => Some(s),
            None => {
                return Err(format!(
                    "state must be \"ready\", \"drain\" or \"maint\", not {word:?}"
                ))
            }
        },
    };
    let weight = match c.weight {
        None => None,
        Some(w @ 1..=1000) => Some(w as u32),
        Some(w) => return Err(format!("weight must be 1..=1000, not {w}")),
    };
    if state.is_none() && weight.is_none() {
        return Err("expected \"state\" and/or \"weight\"".into());
    }
    Ok(Valid { state, weight })
}

/// `POST|PUT|PATCH /api/upstreams/{u}/servers/{s}` with `{"state": ..., "weight": ...}`.
pub fn change(shared: &Shared, upstream: &str, server: &str, body: &[u8]) -> Response {
    let (u, s) = match find_server(shared, upstream, server) {
        Ok(found) => found,
        Err(r) => return r,
    };
    let change = match parse_change(body) {
        Ok(c) => c,
        Err(why) => return Response::error(400, &why),
    };
    apply(shared, &change, u, s, now_ms());
    Response::json(200, &server_json(shared, u, s, now_ms()))
}

/// Applies `change`, logging what it changed, once.
fn apply(shared: &Shared, change: &Valid, u: &Upstream, s: &Server, now: u64) {
    let st = shared.state.get(s.id);
    if let Some(state) = change.state {
        let (old, before) = (st.admin(), st.status(now));
        if old != state {
            if state == AdminState::Ready {
                // Back in rotation: slow start counts from now.
                st.up_since_ms.store(now, Relaxed);
            }
            st.set_admin(state);
            log_change(
                module_path!(),
                log::Level::Info,
                &u.name,
                s,
                st,
                now,
                format_args!(
                    " (was {before}): set to {} through the admin API",
                    state.name()
                ),
            );
        }
    }
    if let Some(weight) = change.weight {
        let old = st.weight.swap(weight, Relaxed);
        if old != weight {
            shared.state.bump_generation();
            log::info!(
                "admin: server {} of upstream {} weight set to {weight} (was {old})",
                s.name,
                u.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_validated() {
        assert_eq!(
            parse_change(br#"{"state":"drain"}"#),
            Ok(Valid {
                state: Some(AdminState::Drain),
                weight: None
            })
        );
        assert_eq!(
            parse_change(br#"{"weight":1000,"state":"ready"}"#),
            Ok(Valid {
                state: Some(AdminState::Ready),
                weight: Some(1000)
            })
        );
        for bad in [
            &br#"{"state":"down"}"#[..],
            br#"{"weight":0}"#,
            br#"{"weight":1001}"#,
            br#"{"weight":-1}"#,
            br#"{"weight":1.5}"#,
            br#"{"weight":"2"}"#,
            br#"{}"#,
            br#"{"state":"ready","extra":1}"#,
            br#"[]"#,
            b"",
            b"state=drain",
        ] {
            assert!(
                parse_change(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
