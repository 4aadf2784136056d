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
    pub metrics: MetricsFile,
    #[serde(default)]
    pub log: LogFile,
    #[serde(default)]
    pub access_log: AccessLogFile,
    #[serde(default)]
    pub proxy: ProxyFile,
    #[serde(default)]
    pub resolver: ResolverFile,
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
    /// Receive-buffer memory of the io_uring engine per worker.
    pub io_memory: Option<String>,
    /// "auto" (default), "io_uring" or "epoll".
    pub engine: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// "IP:port" or "unix:/path/to/admin.sock".
    pub listen: Option<String>,
    /// Bearer token required on every admin request when set.
    pub token: Option<String>,
    /// Upstreams that must have `ready_min_servers` usable servers for `/ready` to be 200.
    #[serde(default)]
    pub ready_requires: Vec<String>,
    pub ready_min_servers: Option<i64>,
    /// `Origin` values (e.g. "https://ops.example.com") whose requests are served.
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Host names served besides the admin address, IP literals and `localhost`.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Admin connections open at once; more are closed at accept.
    pub max_connections: Option<i64>,
    /// Unix socket only: permission bits as an octal string ("0600"), owner and group.
    pub socket_mode: Option<String>,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    /// Per-request counters and histograms (default true); `/metrics` answers 404 when off.
    pub enabled: Option<bool>,
}

/// ringlb's own log (stderr): what is logged and how.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// "error", "warn", "info" (default), "debug", "trace" or "off".
    pub level: Option<String>,
    /// Per-module levels, e.g. `{ "ringlb::proxy" = "debug" }`.
    #[serde(default)]
    pub modules: BTreeMap<String, String>,
    /// "text" (default) or "json" (one object per line).
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogFile {
    /// "off" (default), "common" or "json".
    pub format: Option<String>,
    /// A file path, "stdout" (default) or "stderr".
    pub path: Option<String>,
    /// Request header whose value is the request id; without it one is generated.
    pub request_id_header: Option<String>,
    /// CIDRs whose `request_id_header` is adopted; from anyone else an id is generated.
    #[serde(default)]
    pub request_id_from: Vec<String>,
}

/// What ringlb adds to the requests it forwards.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    /// `Via` name: a string, `true` (the host name, the default) or `false` (no Via).
    pub via: Option<ViaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ViaFile {
    Switch(bool),
    Name(String),
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
    pub tunnel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_request_head: Option<String>,
    pub max_request_line: Option<String>,
    pub max_headers: Option<i64>,
    pub max_response_head: Option<String>,
    /// Bytes per second a client must read a response at, on average, once
    /// `timeouts.client_send` has passed; "0" turns it off.
    pub min_send_rate: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: String,
    pub listen: String,
    pub backlog: Option<i64>,
    /// Header carrying the client address (nginx `real_ip_header`), trusted only from
    /// `real_ip_from`.
    pub real_ip_header: Option<String>,
    /// CIDRs whose `real_ip_header` is believed (nginx `set_real_ip_from`).
    #[serde(default)]
    pub real_ip_from: Vec<String>,
    /// Client connections this listener holds at once, across all workers.
    pub max_connections: Option<i64>,
    /// Client connections one address holds at once on one worker (nginx `limit_conn`).
    pub max_connections_per_ip: Option<i64>,
    /// Expect a PROXY protocol (v1 or v2) header on every connection (behind an L4 balancer).
    pub proxy_protocol: Option<bool>,
    /// CIDRs allowed to send the PROXY header; a connection from elsewhere is closed. Empty:
    /// any peer.
    #[serde(default)]
    pub proxy_protocol_from: Vec<String>,
    /// TLS termination: the listener serves HTTPS.
    pub tls: Option<ListenerTlsFile>,
    /// On a plain listener: answer every request with a 301 to the same URL over https.
    pub redirect_https: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsFile {
    /// Chosen by SNI from their subjectAltName DNS names; the first is the default.
    #[serde(default)]
    pub certs: Vec<CertFile>,
    /// "1.2" (default) or "1.3".
    pub min_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFile {
    /// PEM: the certificate, then its intermediates.
    pub cert: String,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM: the CA certificate(s) the servers' certificates are verified against.
    pub ca: Option<String>,
    /// Name verified in the servers' certificates and sent as SNI (default: the server's IP).
    pub server_name: Option<String>,
    /// Verify the servers' certificates (default true).
    pub verify: Option<bool>,
    /// PEM: client certificate and key presented to the servers (mutual TLS).
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub listener: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// Absent only when `return` answers instead.
    pub upstream: Option<String>,
    /// Protocols a client may upgrade to on this route (default `["websocket"]`).
    pub upgrade: Option<Vec<String>>,
    /// Largest request body accepted ("1MiB"); default unlimited.
    pub client_max_body_size: Option<String>,
    pub request_headers: Option<HeaderEditsFile>,
    pub response_headers: Option<HeaderEditsFile>,
    pub strip_prefix: Option<String>,
    pub rewrite_prefix: Option<String>,
    #[serde(rename = "return")]
    pub answer: Option<ReturnFile>,
}

/// `{ set = { "X-A" = "v" }, add = { ... }, remove = ["X-B"] }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsFile {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `return = { status = 301, location = "...", body = "..." }` (nginx `return`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnFile {
    pub status: i64,
    pub location: Option<String>,
    pub body: Option<String>,
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
    /// Passive health (nginx): failures within `fail_timeout` that take a server out for
    /// `fail_timeout`. Servers may override both.
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<String>,
    /// Servers tried for one request, 0 = all (nginx `proxy_next_upstream_tries`).
    pub tries: Option<i64>,
    /// Time limit for trying further servers (nginx `proxy_next_upstream_timeout`).
    pub retry_timeout: Option<String>,
    /// When to try the next server: "error", "timeout", "http_500", "http_502", "http_503",
    /// "http_504", "non_idempotent" (nginx `proxy_next_upstream`).
    pub next_upstream: Option<Vec<String>>,
    pub health_check: Option<HealthCheckFile>,
    /// Requests wait here when every usable server is at max_conns.
    pub queue: Option<QueueFile>,
    pub sticky: Option<StickyFile>,
    /// Send a PROXY protocol header ("v1" or "v2") on upstream connections.
    pub send_proxy_protocol: Option<String>,
    /// Connect to the servers with TLS.
    pub tls: Option<UpstreamTlsFile>,
    #[serde(default)]
    pub servers: Vec<ServerFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub size: Option<i64>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyFile {
    pub cookie: String,
    pub mode: Option<String>,
    pub expires: Option<String>,
    pub domain: Option<String>,
    pub path: Option<String>,
    pub secure: Option<bool>,
    pub httponly: Option<bool>,
    /// "lax" (default), "strict" or "none" (needs `secure = true`).
    pub samesite: Option<String>,
    /// Key of the cookie values (HMAC-SHA256), at least 16 bytes; default: drawn per process.
    pub secret: Option<String>,
    pub indirect: Option<bool>,
    pub nocache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    /// A status (200) or a range ("200-399").
    pub expect_status: Option<toml::Value>,
    /// Host header of the check request (default: the server address).
    pub host: Option<String>,
}

/// How names with `resolve = true` and `srv` names are re-resolved.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverFile {
    /// "IP" or "IP:port"; default: the `nameserver` lines of /etc/resolv.conf.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// One query to one nameserver (default "2s").
    pub timeout: Option<String>,
    /// Rounds over the nameservers (default 2).
    pub attempts: Option<i64>,
    /// Re-query every `valid`, whatever the TTL (nginx `valid=`); exclusive with the bounds.
    pub valid: Option<String>,
    /// Bounds of the TTL (default "1s" and "5m").
    pub valid_min: Option<String>,
    pub valid_max: Option<String>,
    /// Query AAAA records too (default true).
    pub ipv6: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// "IP:port" or "host:port" (every address of the name is a server).
    pub addr: Option<String>,
    /// An SRV name: every target and port of the answer is a server.
    pub srv: Option<String>,
    /// Re-resolve the host name as its TTL runs out, through `[resolver]`.
    pub resolve: Option<bool>,
    pub name: Option<String>,
    pub weight: Option<i64>,
    pub backup: Option<bool>,
    pub keepalive: Option<i64>,
    /// Requests in flight to this server across all workers (nginx/HAProxy `max_conns`).
    pub max_conns: Option<i64>,
    /// Start draining: no new requests or sessions, in-flight ones finish.
    pub drain: Option<bool>,
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<String>,
}
