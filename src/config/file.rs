//! The TOML file as written by the operator: a serde mirror with `deny_unknown_fields`.
//!
//! Nothing here is validated beyond TOML types; `validate.rs` turns this into the typed
//! [`Config`](super::Config) and reports every problem with its path.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub runtime: RuntimeFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub listeners: Vec<ListenerFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// A BTreeMap keeps upstream ids in name order, so ids are stable across reloads.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum WorkersFile {
    Count(i64),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeFile {
    pub workers: Option<WorkersFile>,
    pub cpus: Option<Vec<i64>>,
    pub shutdown_grace: Option<String>,
    /// glommio's registered I/O memory per worker; small by default (RLIMIT_MEMLOCK).
    pub io_memory: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub client_header: Option<String>,
    pub client_body: Option<String>,
    pub keepalive: Option<String>,
    pub upstream_connect: Option<String>,
    pub upstream_send: Option<String>,
    pub upstream_read: Option<String>,
    pub upstream_keepalive: Option<String>,
    pub client_send: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_request_head: Option<String>,
    pub max_request_line: Option<String>,
    pub max_headers: Option<i64>,
    pub max_response_head: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub listen: String,
    pub backlog: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub listener: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    pub upstream: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    #[serde(default)]
    pub balance: Option<String>,
    /// Hash key for `balance = "hash"`: `$request_uri`, `$remote_addr`, `header:NAME`,
    /// `cookie:NAME`.
    pub key: Option<String>,
    pub consistent: Option<bool>,
    pub bounded_load: Option<f64>,
    /// Idle keep-alive connections kept per server per core (nginx `keepalive`).
    pub keepalive: Option<i64>,
    pub slow_start: Option<String>,
    #[serde(default)]
    pub servers: Vec<ServerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub addr: String,
    pub name: Option<String>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
    pub keepalive: Option<i64>,
}
