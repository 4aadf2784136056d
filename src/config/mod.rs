//! Configuration: the TOML file (`file.rs`) is validated once (`validate.rs`) into the typed
//! [`Config`] below. After [`Config::load`] returns `Ok`, nothing re-checks a weight, an address
//! or a timeout.
//!
//! Plain validated data: no certificate is loaded and no socket is opened here (the files a
//! config names are checked through [`FileCheck`], which `tls` implements). Uses `http1` and
//! `balance` (limits and algorithm types).

mod dump;
mod entries;
mod file;
mod forward;
mod locate;
mod sticky;
mod traffic;
mod validate;

pub use entries::{host_port, host_syntax, Entry, Origin, ServerDefaults, Source, Target};
pub use sticky::CookieKey;

use crate::balance::Algorithm;
use crate::http1::{HeaderEdits, Limits, PrefixRewrite, Return, Upgrades};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Dense index of a listener in [`Config::listeners`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerId(pub u32);
/// Dense index of an upstream in [`Config::upstreams`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamId(pub u32);
/// Dense index of a server across all upstreams: the index into the shared state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerId(pub u32);

#[derive(Debug, Clone)]
pub struct Config {
    pub runtime: Runtime,
    pub admin: Admin,
    pub timeouts: Timeouts,
    pub limits: HttpLimits,
    pub metrics: Metrics,
    pub log: Log,
    pub access_log: AccessLog,
    pub proxy: Proxy,
    pub listeners: Vec<Listener>,
    /// Routes in match order: most specific host first, then longest path prefix.
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
    pub resolver: Resolver,
}

/// How names are re-resolved (`[resolver]`, for server entries with `resolve = true` or
/// `srv`): queried over UDP (TCP when an answer is truncated) at the nameservers, in turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    /// Empty: the `nameserver` lines of /etc/resolv.conf, read at each resolution.
    pub nameservers: Vec<SocketAddr>,
    /// One query to one nameserver.
    pub timeout: Duration,
    /// Rounds over the nameservers before a resolution fails.
    pub attempts: u32,
    /// A name is re-queried when its TTL runs out, but no sooner than `valid_min` and no
    /// later than `valid_max` (equal with `valid`: TTLs are ignored, as nginx's `valid=`).
    pub valid_min: Duration,
    pub valid_max: Duration,
    /// Query AAAA records (and keep IPv6 answers of the system resolver) too.
    pub ipv6: bool,
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(2),
            attempts: 2,
            valid_min: Duration::from_secs(1),
            valid_max: Duration::from_secs(300),
            ipv6: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One worker per CPU the process may run on (its affinity mask).
    Auto,
    Count(usize),
}

#[derive(Debug, Clone)]
pub struct Runtime {
    pub workers: Workers,
    /// CPUs to pin workers to, in order; empty = the CPUs of the affinity mask.
    pub cpus: Vec<usize>,
    pub shutdown_grace: Duration,
    pub io_memory: usize,
    pub engine: Engine,
}

/// The I/O engine of the workers and the health checker, chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// io_uring when this host allows it, else epoll (saying why, once, in the log).
    Auto,
    /// io_uring or nothing: start fails, naming the cause, if the host refuses it.
    IoUring,
    /// epoll; io_uring is never touched.
    Epoll,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: AdminListen,
    pub token: Option<String>,
    /// Per-upstream conditions of `/ready` (none by default: `/ready` reports the process).
    pub ready_requires: Vec<ReadyRequire>,
    /// Exact `Origin` values served (lowercase, no trailing slash); any other Origin is 403.
    pub allow_origins: Vec<String>,
    /// Host names (lowercase, no port) served besides the admin address, IP literals and
    /// `localhost`.
    pub allow_hosts: Vec<String>,
    /// Admin connections open at once.
    pub max_connections: usize,
}

/// Where the admin listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    Tcp(SocketAddr),
    /// A Unix stream socket (HAProxy's stats socket): who may connect is the file's mode,
    /// owner and group. A stale file is replaced at start.
    Unix {
        path: PathBuf,
        /// Permission bits, e.g. 0o600.
        mode: u32,
        /// User and group names or numeric ids, resolved when the socket is bound.
        owner: Option<String>,
        group: Option<String>,
    },
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminListen::Tcp(a) => write!(f, "{a}"),
            AdminListen::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `/ready` is 503 while `upstream` has fewer than `min_servers` usable servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyRequire {
    pub upstream: UpstreamId,
    pub min_servers: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Metrics {
    /// Per-request counters and histograms; off only to measure their cost.
    pub enabled: bool,
}

/// ringlb's own log on stderr (`[log]`). `RUST_LOG`, when set, overrides the levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub level: log::LevelFilter,
    /// Module path prefix (`ringlb::proxy`) and its level, most specific last.
    pub modules: Vec<(String, log::LevelFilter)>,
    pub format: LogStyle,
}

impl Log {
    /// The levels as one `RUST_LOG`-style directive: `info,ringlb::proxy=debug`.
    pub fn directive(&self) -> String {
        let mut d = self.level.as_str().to_ascii_lowercase();
        for (module, level) in &self.modules {
            d.push_str(&format!(
                ",{module}={}",
                level.as_str().to_ascii_lowercase()
            ));
        }
        d
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: log::LevelFilter::Info,
            modules: Vec::new(),
            format: LogStyle::Text,
        }
    }
}

/// How ringlb's own log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// `time LEVEL target: message`; under systemd a `<N>` syslog priority instead of the time.
    Text,
    /// One JSON object per line: time, level, target, message, fields.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Off,
    /// NCSA combined, then `key=value` fields (upstream, times, request id).
    Common,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    Stderr,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone)]
pub struct AccessLog {
    pub format: LogFormat,
    pub target: LogTarget,
    /// Lowercase request header carrying the request id (default `x-request-id`).
    pub request_id_header: Box<[u8]>,
    /// Peers whose request id is adopted (default: none; ids are generated).
    pub request_id_from: Vec<ipnet::IpNet>,
}

/// What ringlb adds to the requests it forwards (`[proxy]`).
#[derive(Debug, Clone)]
pub struct Proxy {
    /// `Via: 1.1 <name>` on forwarded requests, and the name whose presence in a received Via
    /// is a loop (508). None: no Via, no loop check. Default: the host name.
    pub via: Option<Box<[u8]>>,
}

/// Timeouts, named after their nginx counterparts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Whole request head (`client_header_timeout`); also bounds slowloris.
    pub client_header: Duration,
    /// Between two reads of a request body (`client_body_timeout`).
    pub client_body: Duration,
    /// Idle client keep-alive connection between requests (`keepalive_timeout`).
    pub keepalive: Duration,
    pub upstream_connect: Duration,
    /// Between two writes to the upstream (`proxy_send_timeout`).
    pub upstream_send: Duration,
    /// Between two reads from the upstream (`proxy_read_timeout`).
    pub upstream_read: Duration,
    /// Idle pooled upstream connection.
    pub upstream_keepalive: Duration,
    /// Between two writes to the client (`send_timeout`).
    pub client_send: Duration,
    /// Idle WebSocket/Upgrade tunnel (HAProxy `timeout tunnel`).
    pub tunnel: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub request: LimitsCopy,
    pub max_response_head: usize,
    /// A response may take `timeouts.client_send` plus its bytes at this rate (bytes per
    /// second) to reach the client; slower, the connection is closed and its server slot
    /// freed. None: no limit beyond `client_send` per write.
    pub min_send_rate: Option<u64>,
}

/// Copyable mirror of [`Limits`] so the config stays `Clone` without depending on its derives.
#[derive(Debug, Clone, Copy)]
pub struct LimitsCopy {
    pub max_head: usize,
    pub max_request_line: usize,
    pub max_headers: usize,
}

impl LimitsCopy {
    pub fn limits(&self) -> Limits {
        Limits {
            max_head: self.max_head,
            max_request_line: self.max_request_line,
            max_headers: self.max_headers,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub backlog: u32,
    pub real_ip: Option<RealIp>,
    /// Across all workers. None in the file: derived from `RLIMIT_NOFILE` at start
    /// (`Config::default_max_connections`).
    pub max_connections: Option<u64>,
    /// Per client address (the PROXY source on PROXY listeners), per worker; None = unlimited.
    pub max_connections_per_ip: Option<u32>,
    /// Every connection starts with a PROXY v1/v2 header, read before any TLS.
    pub proxy_protocol: bool,
    /// Peers allowed to connect when `proxy_protocol` (the L4 balancers); empty: any.
    pub proxy_protocol_from: Vec<ipnet::IpNet>,
    /// TLS termination; None for a plain listener.
    pub tls: Option<ListenerTls>,
    /// Plain listener answering every request with a 301 to https.
    pub redirect_https: bool,
}

impl Listener {
    /// Whether this listener is the one that was on `addr` as `name` (in an earlier config):
    /// the same `listen` address, and for port 0 (a port of the kernel's choice, so not an
    /// identity) the same name as well. Such a listener keeps its sockets across a reload.
    pub fn same_socket(&self, addr: SocketAddr, name: &str) -> bool {
        self.addr == addr && (addr.port() != 0 || self.name == name)
    }

    /// Whether `ip` may open a connection that carries a PROXY header on this listener.
    pub fn proxy_peer_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.proxy_protocol_from.is_empty()
            || self.proxy_protocol_from.iter().any(|n| n.contains(&ip))
    }
}

/// TLS termination on a listener. The files are read at start and on reload
/// (`crate::tls`); validation reads them once to report problems early.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default.
    pub certs: Vec<CertKey>,
    pub min_version: TlsVersion,
}

/// A certificate (chain) file and its private key file, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// TLS to the servers of an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Required when `verify`.
    pub ca: Option<PathBuf>,
    /// None: each server's IP address.
    pub server_name: Option<String>,
    pub verify: bool,
    /// Mutual TLS.
    pub client_cert: Option<CertKey>,
}

/// Where the client address comes from when a trusted proxy is in front (nginx realip).
#[derive(Debug, Clone)]
pub struct RealIp {
    /// Lowercase header name, e.g. `x-forwarded-for`.
    pub header: Box<[u8]>,
    pub from: Vec<ipnet::IpNet>,
}

impl RealIp {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.from.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    /// Lowercase host without port.
    Exact(Box<[u8]>),
    /// `*.example.com`: stored as `.example.com`, lowercase; matches any deeper name.
    Suffix(Box<[u8]>),
}

impl HostMatch {
    pub fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
            HostMatch::Suffix(s) => {
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            HostMatch::Exact(_) => 0,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub listener: ListenerId,
    pub host: HostMatch,
    pub path: Box<[u8]>,
    /// The upstream that serves the route; None when `traffic.answer` answers instead.
    pub upstream: Option<UpstreamId>,
    /// Protocols a request on this route may upgrade to (tunnel); others go on as plain
    /// HTTP/1.1 without their Upgrade.
    pub upgrade: Upgrades,
    pub traffic: Traffic,
}

impl Route {
    /// Whether a request on `listener` with `host` (port stripped) and `path` takes this route.
    pub fn matches(&self, listener: ListenerId, host: &[u8], path: &[u8]) -> bool {
        self.listener == listener && self.host.matches(host) && path.starts_with(&self.path)
    }
}

/// What a route changes in the traffic it serves (nginx's `client_max_body_size`,
/// `proxy_set_header` / `add_header`, `rewrite`, `return`). All None: forwarded as is.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// A request body larger than this is refused with 413.
    pub max_body: Option<u64>,
    pub prefix: Option<PrefixRewrite>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    /// A fixed answer; the route then has no upstream.
    pub answer: Option<Return>,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub algorithm: Algorithm,
    pub slow_start: Option<Duration>,
    /// Servers tried for one request (at least 1).
    pub tries: usize,
    /// `tries = 0` in the file: every server, recounted when names resolve to more or fewer.
    pub tries_all: bool,
    pub retry_timeout: Option<Duration>,
    pub next_upstream: NextUpstream,
    pub health_check: Option<HealthCheck>,
    pub queue: Option<Queue>,
    pub sticky: Option<Sticky>,
    pub send_proxy_protocol: Option<ProxyProtocol>,
    pub tls: Option<UpstreamTls>,
    /// What servers take from the upstream unless they set it (for entries the API adds).
    pub defaults: ServerDefaults,
    /// What the file lists (and the admin API added): literal addresses and names to resolve.
    pub entries: Vec<Entry>,
    /// Names of servers or entries removed through the admin API (until the next reload).
    pub removed: Vec<String>,
    /// The servers in force, in entry order: each literal address, and every address a name
    /// resolved to ([`Config::expand`]).
    pub servers: Vec<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// Requests wait (in arrival order on each worker) while every usable server is at max_conns.
#[derive(Debug, Clone, Copy)]
pub struct Queue {
    /// Requests waiting across all workers; beyond it: 503.
    pub size: u32,
    pub timeout: Duration,
}

/// Cookie sticky sessions (`insert` mode, as nginx `sticky cookie` / HAProxy `cookie insert`).
#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie: String,
    pub expires: Option<Duration>,
    pub domain: Option<String>,
    pub path: String,
    /// None: `Secure` on TLS listeners only.
    pub secure: Option<bool>,
    pub httponly: bool,
    pub samesite: Option<SameSite>,
    /// Strip ringlb's cookie before the server sees it.
    pub indirect: bool,
    /// Mark responses that set the cookie non-cacheable.
    pub nocache: bool,
    /// Keys the values (`sticky.secret`, or the process's own).
    pub key: CookieKey,
    /// `; Path=...; Domain=...; Max-Age=...; HttpOnly; SameSite=...`: every attribute but
    /// `Secure`, which depends on the listener.
    pub attributes: Box<[u8]>,
}

impl Sticky {
    /// Appends the `Set-Cookie` value pinning a client to the server with cookie id `id`,
    /// issued at `issued` (Unix seconds), for a client connected over TLS or not.
    pub fn set_cookie(&self, id: &[u8], issued: u32, tls: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(self.cookie.as_bytes());
        out.push(b'=');
        self.key.issue(id, issued, out);
        out.extend_from_slice(&self.attributes);
        if self.secure.unwrap_or(tls) {
            out.extend_from_slice(b"; Secure");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// When another server is tried (nginx `proxy_next_upstream`). A request whose body was
/// already streamed is never sent twice, whatever these say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    /// Connect failure, or the connection closed/reset before a response byte.
    pub error: bool,
    /// Connect or response-head timeout.
    pub timeout: bool,
    /// An invalid response (malformed or ambiguously framed head, bad chunked framing, an
    /// unasked 101): counted against the server only when listed, since a client can ask for
    /// a route that answers so at will. Never retried (bytes may have reached the client).
    pub invalid_header: bool,
    /// These statuses from the server are treated as failures (and retried when allowed).
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    /// Also retry POST, PATCH and other non-idempotent requests.
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    fn default() -> Self {
        NextUpstream {
            error: true,
            timeout: true,
            invalid_header: false,
            http_500: false,
            http_502: false,
            http_503: false,
            http_504: false,
            non_idempotent: false,
        }
    }
}

impl NextUpstream {
    /// Whether a response with `status` counts as a server failure.
    pub fn status_fails(&self, status: u16) -> bool {
        match status {
            500 => self.http_500,
            502 => self.http_502,
            503 => self.http_503,
            504 => self.http_504,
            _ => false,
        }
    }
}

/// Active HTTP health check of every server of an upstream.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    pub fall: u32,
    pub expect: std::ops::RangeInclusive<u16>,
    pub host: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub id: ServerId,
    /// `name` from the file, or the address as written: identity across reloads and nodes.
    /// A server from a name is `ENTRY@ADDRESS` (`app@10.0.0.5:8080`).
    pub name: String,
    pub addr: SocketAddr,
    /// The index of its entry in [`Upstream::entries`].
    pub entry: usize,
    pub weight: u32,
    pub backup: bool,
    /// Idle keep-alive connections kept per core.
    pub keepalive: usize,
    /// Requests in flight across all workers; None = unlimited.
    pub max_conns: Option<u32>,
    /// Draining from the start (config `drain = true`).
    pub drain: bool,
    /// Passive health: 0 disables.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Sticky cookie id of this server (upstreams with `sticky`): keyed, opaque (not its
    /// name or address), stable across reloads, and across restarts and nodes with
    /// `sticky.secret` (see `CookieKey`).
    pub cookie: Box<[u8]>,
}

/// One problem found in the file, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML; `offset` is the byte where the parser stopped.
    #[error("{message}")]
    Syntax {
        message: String,
        offset: Option<usize>,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
    /// The problems of a file, each as `file:line:column: path: message`, in file order.
    #[error("{}", .0.join("\n"))]
    InFile(Vec<String>),
}

impl ConfigError {
    /// Every problem as one line each (`path: message`, or with `Config::load`
    /// `file:line:column: path: message`).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
            ConfigError::InFile(lines) => lines.clone(),
            other => vec![other.to_string()],
        }
    }

    /// Places each problem in `file` (whose text is `text`).
    fn in_file(self, file: &Path, text: &str) -> ConfigError {
        let name = file.display();
        match self {
            ConfigError::Syntax { message, offset } => {
                let at = offset.map(|o| locate::line_column(text, o));
                ConfigError::InFile(vec![match at {
                    Some((line, column)) => format!("{name}:{line}:{column}: {message}"),
                    None => format!("{name}: {message}"),
                }])
            }
            ConfigError::Invalid(problems) => {
                let positions = locate::Positions::new(text);
                let mut placed: Vec<(Option<(usize, usize)>, Problem)> = problems
                    .into_iter()
                    .map(|p| (positions.of(&p.path), p))
                    .collect();
                // File order; problems without a position (a missing section) last.
                placed.sort_by_key(|(at, _)| at.unwrap_or((usize::MAX, 0)));
                ConfigError::InFile(
                    placed
                        .into_iter()
                        .map(|(at, p)| match at {
                            Some((line, column)) => format!("{name}:{line}:{column}: {p}"),
                            None => format!("{name}: {p}"),
                        })
                        .collect(),
                )
            }
            other => other,
        }
    }
}

/// A problem with one field of a section whose files are read by another layer (`field` is
/// relative to the section, e.g. `certs[0].key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `prefix.field: message`, the form config validation reports.
    pub fn at(&self, prefix: &str) -> String {
        format!("{prefix}.{}: {}", self.field, self.message)
    }
}

/// Checks the files a configuration names (certificates, keys, CA bundles). Validation calls
/// it so that a bad file is reported with its path like any other problem, while reading and
/// parsing those files stays the job of the layer that uses them (`tls` implements this).
pub trait FileCheck {
    fn listener_tls(&self, tls: &ListenerTls) -> Vec<FieldError>;
    fn upstream_tls(&self, tls: &UpstreamTls) -> Vec<FieldError>;
}

/// Checks only the structure: no file is read.
pub struct NoFileCheck;

impl FileCheck for NoFileCheck {
    fn listener_tls(&self, _: &ListenerTls) -> Vec<FieldError> {
        Vec::new()
    }
    fn upstream_tls(&self, _: &UpstreamTls) -> Vec<FieldError> {
        Vec::new()
    }
}

impl Config {
    /// Reads and validates the file at `path`; `files` checks the files it names. Relative
    /// paths in it (certificates, keys, CA files, the access log) are taken relative to the
    /// file's directory. Each problem names its `file:line:column`.
    pub fn load(path: &Path, files: &dyn FileCheck) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Config::from_text(&text, files, Some(&base)).map_err(|e| e.in_file(path, &text))
    }

    /// Validates `text`, reading no file.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, &NoFileCheck)
    }

    /// Validates `text`; relative file paths stay relative (to the working directory).
    pub fn parse_with(text: &str, files: &dyn FileCheck) -> Result<Config, ConfigError> {
        Config::from_text(text, files, None)
    }

    /// Every problem of the file at once: unknown keys and wrong types (each stepped over so
    /// the next is found too), then the checks of values, when the structure allows them.
    fn from_text(
        text: &str,
        files: &dyn FileCheck,
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            // Some parser errors carry no message (e.g. a control character in a comment).
            message: match e.message().trim() {
                "" => "invalid TOML: a character or token TOML does not allow here".to_string(),
                m => m.to_string(),
            },
            offset: e.span().map(|s| s.start),
        })?;
        let (file, mut problems) = locate::deserialize_all(table);
        if let Some(file) = file {
            match validate::validate(file, files, base) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => {}
                Err(more) => problems.extend(more),
            }
        }
        Err(ConfigError::Invalid(problems))
    }

    /// The configuration as TOML with every default written out (`ringlb check --dump`).
    pub fn dump(&self) -> String {
        dump::dump(self)
    }

    /// Total number of servers (the size of the shared state table).
    pub fn server_count(&self) -> usize {
        self.upstreams.iter().map(|u| u.servers.len()).sum()
    }

    pub fn servers(&self) -> impl Iterator<Item = (&Upstream, &Server)> {
        self.upstreams
            .iter()
            .flat_map(|u| u.servers.iter().map(move |s| (u, s)))
    }

    /// The upstream for a request on `listener` with `host` (port stripped) and `path`.
    pub fn route(&self, listener: ListenerId, host: &[u8], path: &[u8]) -> Option<UpstreamId> {
        self.find_route(listener, host, path)
            .and_then(|r| r.upstream)
    }

    /// The route a request on `listener` with `host` (port stripped) and `path` takes.
    pub fn find_route(&self, listener: ListenerId, host: &[u8], path: &[u8]) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(listener, host, path))
    }
}

#[cfg(test)]
mod tests;
