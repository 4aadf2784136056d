//! File → typed [`Config`]: every problem is collected with its path, none stops the others.

use super::entries::{self, ServerDefaults};
use super::file::{File, UpstreamFile, WorkersFile};
use super::traffic;
use super::*;
use crate::balance::HashKey;
use std::collections::HashSet;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

pub(super) struct Problems<'a> {
    pub(super) list: Vec<Problem>,
    /// Reads the files the config names (certificates, keys, CAs).
    files: &'a dyn FileCheck,
    /// The config file's directory: relative file paths are resolved against it.
    base: Option<&'a Path>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(files: &'a dyn FileCheck, base: Option<&'a Path>) -> Problems<'a> {
        Problems {
            list: Vec::new(),
            files,
            base,
        }
    }

    /// A file path from the config: relative paths name files beside the config file (nginx
    /// resolves them against its prefix, HAProxy against the working directory; the config's
    /// directory works for a unit started from `/` and for a checkout alike).
    fn file(&self, text: &str) -> PathBuf {
        match self.base {
            Some(base) if Path::new(text).is_relative() => base.join(text),
            _ => PathBuf::from(text),
        }
    }

    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn duration(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    path,
                    format!("invalid duration {text:?} ({e}); write e.g. \"5s\""),
                );
                default
            }
        }
    }

    pub(super) fn size(
        &mut self,
        path: &str,
        value: Option<&String>,
        default: usize,
        max: usize,
    ) -> usize {
        let Some(text) = value else { return default };
        match parse_size(text) {
            Some(n) if (1..=max).contains(&n) => n,
            Some(_) => {
                self.add(path, format!("must be between 1 and {max} bytes"));
                default
            }
            None => {
                self.add(path, format!("invalid size {text:?}; write e.g. \"16KiB\""));
                default
            }
        }
    }

    pub(super) fn int(
        &mut self,
        path: &str,
        value: Option<i64>,
        default: u64,
        range: (u64, u64),
    ) -> u64 {
        let Some(v) = value else { return default };
        match u64::try_from(v) {
            Ok(v) if (range.0..=range.1).contains(&v) => v,
            _ => {
                self.add(path, format!("must be {}..={}", range.0, range.1));
                default
            }
        }
    }
}

/// A size in bytes: "512", "16KiB", "1MiB", "4KB" (KB = 1000), and nginx's one-letter
/// suffixes "16k", "1m", "1g" (powers of 1024). Units are case-insensitive; fractions round
/// ("1.5k" = 1536). The `parse-size` crate reads it; None for anything it refuses.
pub(super) fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    // parse-size reads a bare "k" as 1000; nginx, and ringlb since its first release, as 1024.
    let nginx = t.len() > 1
        && t.ends_with(['k', 'K', 'm', 'M', 'g', 'G'])
        && t[..t.len() - 1]
            .trim_end()
            .ends_with(|c: char| c.is_ascii_digit() || c == '.');
    let n = if nginx {
        parse_size::parse_size(format!("{t}i"))
    } else {
        parse_size::parse_size(t)
    };
    usize::try_from(n.ok()?).ok()
}

pub(super) fn validate(
    file: File,
    files: &dyn FileCheck,
    base: Option<&Path>,
) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::new(files, base);

    let runtime = runtime(&mut p, &file);
    let t = &file.timeouts;
    let timeouts = Timeouts {
        client_header: p.duration("timeouts.client_header", t.client_header.as_ref(), secs(10)),
        client_body: p.duration("timeouts.client_body", t.client_body.as_ref(), secs(60)),
        keepalive: p.duration("timeouts.keepalive", t.keepalive.as_ref(), secs(75)),
        upstream_connect: p.duration(
            "timeouts.upstream_connect",
            t.upstream_connect.as_ref(),
            secs(5),
        ),
        upstream_send: p.duration("timeouts.upstream_send", t.upstream_send.as_ref(), secs(60)),
        upstream_read: p.duration("timeouts.upstream_read", t.upstream_read.as_ref(), secs(60)),
        upstream_keepalive: p.duration(
            "timeouts.upstream_keepalive",
            t.upstream_keepalive.as_ref(),
            secs(60),
        ),
        client_send: p.duration("timeouts.client_send", t.client_send.as_ref(), secs(60)),
        tunnel: p.duration("timeouts.tunnel", t.tunnel.as_ref(), secs(3600)),
    };
    let l = &file.limits;
    let limits = HttpLimits {
        request: LimitsCopy {
            max_head: p.size(
                "limits.max_request_head",
                l.max_request_head.as_ref(),
                16 << 10,
                1 << 20,
            ),
            max_request_line: p.size(
                "limits.max_request_line",
                l.max_request_line.as_ref(),
                8 << 10,
                1 << 20,
            ),
            max_headers: p.int("limits.max_headers", l.max_headers, 100, (1, 128)) as usize,
        },
        max_response_head: p.size(
            "limits.max_response_head",
            l.max_response_head.as_ref(),
            16 << 10,
            1 << 20,
        ),
        min_send_rate: match l.min_send_rate.as_deref() {
            Some("0") => None,
            rate => Some(p.size(
                "limits.min_send_rate",
                rate.map(str::to_string).as_ref(),
                1 << 10,
                1 << 30,
            ) as u64),
        },
    };
    if limits.request.max_request_line > limits.request.max_head {
        p.add(
            "limits.max_request_line",
            "must not exceed limits.max_request_head",
        );
    }

    let metrics = Metrics {
        enabled: file.metrics.enabled.unwrap_or(true),
    };
    let log = log_settings(&mut p, &file.log);
    let access_log = access_log(&mut p, &file.access_log);
    let proxy = Proxy {
        via: forward::via(file.proxy.via.as_ref(), &mut p.list),
    };
    let listeners = listeners(&mut p, &file);
    let upstreams = upstreams(&mut p, &file);
    let routes = routes(&mut p, &file, &listeners, &upstreams);
    let admin = admin(&mut p, &file.admin, &upstreams);
    let resolver = entries::resolver(&mut p, &file.resolver);

    if p.list.is_empty() {
        Ok(Config {
            runtime,
            admin,
            timeouts,
            limits,
            metrics,
            log,
            access_log,
            proxy,
            listeners,
            routes,
            upstreams,
            resolver,
        })
    } else {
        Err(p.list)
    }
}

fn log_settings(p: &mut Problems, l: &super::file::LogFile) -> Log {
    const LEVELS: &str = "one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\"";
    let level_at = |p: &mut Problems, path: &str, text: &str| match text.parse() {
        Ok(level) => Some(level),
        Err(_) => {
            p.add(path, format!("unknown level {text:?}; {LEVELS}"));
            None
        }
    };
    let level = l
        .level
        .as_deref()
        .and_then(|t| level_at(p, "log.level", t))
        .unwrap_or(log::LevelFilter::Info);
    let mut modules = Vec::new();
    for (module, text) in &l.modules {
        let path = format!("log.modules.{module}");
        let well_formed = !module.is_empty()
            && module.split("::").all(|part| {
                !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !well_formed {
            p.add(&path, "must be a module path such as \"ringlb::proxy\"");
            continue;
        }
        if let Some(level) = level_at(p, &path, text) {
            modules.push((module.clone(), level));
        }
    }
    // Shorter paths first, so a directive for a submodule comes after its parent's.
    modules.sort_by_key(|(m, _)| m.len());
    let format = match l.format.as_deref() {
        None | Some("text") => LogStyle::Text,
        Some("json") => LogStyle::Json,
        Some(other) => {
            p.add(
                "log.format",
                format!("unknown format {other:?}; one of \"text\", \"json\""),
            );
            LogStyle::Text
        }
    };
    Log {
        level,
        modules,
        format,
    }
}

fn access_log(p: &mut Problems, a: &super::file::AccessLogFile) -> AccessLog {
    let format = match a.format.as_deref() {
        None | Some("off") => LogFormat::Off,
        Some("common") => LogFormat::Common,
        Some("json") => LogFormat::Json,
        Some(other) => {
            p.add(
                "access_log.format",
                format!("unknown format {other:?}; one of \"off\", \"common\", \"json\""),
            );
            LogFormat::Off
        }
    };
    let target = match a.path.as_deref() {
        None | Some("stdout") => LogTarget::Stdout,
        Some("stderr") => LogTarget::Stderr,
        Some("") => {
            p.add(
                "access_log.path",
                "must be a file path, \"stdout\" or \"stderr\"",
            );
            LogTarget::Stdout
        }
        Some(path) => LogTarget::File(p.file(path)),
    };
    let header = a.request_id_header.as_deref().unwrap_or("X-Request-Id");
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        p.add("access_log.request_id_header", "must be a header name");
    }
    AccessLog {
        format,
        target,
        request_id_header: header.to_ascii_lowercase().into_bytes().into(),
        request_id_from: cidrs(p, "access_log.request_id_from", &a.request_id_from),
    }
}

/// Addresses or CIDRs ("10.0.0.0/8", "::1"); each bad one is reported at `path[i]`.
fn cidrs(p: &mut Problems, path: &str, list: &[String]) -> Vec<ipnet::IpNet> {
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let net = c
            .parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) => out.push(n),
            Err(_) => p.add(
                format!("{path}[{i}]"),
                format!("{c:?} is not an address or CIDR (e.g. \"10.0.0.0/8\")"),
            ),
        }
    }
    out
}

fn admin(p: &mut Problems, a: &super::file::AdminFile, upstreams: &[Upstream]) -> Admin {
    let listen = admin_listen(p, a);
    let token = a.token.clone();
    if token
        .as_deref()
        .is_some_and(|t| t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()))
    {
        p.add(
            "admin.token",
            "must be at least 16 visible ASCII characters",
        );
    }
    if let AdminListen::Tcp(addr) = &listen {
        if !addr.ip().is_loopback() && token.is_none() {
            p.add(
                "admin.listen",
                format!(
                    "{addr} is not loopback and admin.token is not set: anyone who can reach it \
                     could change server state; set admin.token, or listen on loopback or a \
                     Unix socket"
                ),
            );
        }
    }
    let ready_requires = ready_requires(p, a, upstreams);
    let (allow_origins, allow_hosts) = admin_allowed(p, a);
    let max_connections = p.int("admin.max_connections", a.max_connections, 64, (1, 4096)) as usize;
    Admin {
        listen,
        token,
        ready_requires,
        allow_origins,
        allow_hosts,
        max_connections,
    }
}

/// `admin.listen` (TCP or `unix:/path`) and the Unix socket's mode and owner.
fn admin_listen(p: &mut Problems, a: &super::file::AdminFile) -> AdminListen {
    let text = a.listen.as_deref().unwrap_or(DEFAULT_ADMIN);
    let socket_only = [
        ("admin.socket_mode", a.socket_mode.is_some()),
        ("admin.socket_owner", a.socket_owner.is_some()),
        ("admin.socket_group", a.socket_group.is_some()),
    ];
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            p.add(
                "admin.listen",
                "a Unix socket needs an absolute path, e.g. \"unix:/run/ringlb/admin.sock\"",
            );
        }
        let mode = match a.socket_mode.as_deref() {
            None => 0o600,
            Some(m) => match u32::from_str_radix(m, 8) {
                Ok(v) if v <= 0o777 => v,
                _ => {
                    p.add(
                        "admin.socket_mode",
                        "must be permission bits as an octal string, e.g. \"0660\"",
                    );
                    0o600
                }
            },
        };
        for (field, v) in [
            ("admin.socket_owner", &a.socket_owner),
            ("admin.socket_group", &a.socket_group),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                p.add(field, "must be a name or a numeric id");
            }
        }
        AdminListen::Unix {
            path: path.into(),
            mode,
            owner: a.socket_owner.clone(),
            group: a.socket_group.clone(),
        }
    } else {
        for (field, set) in socket_only {
            if set {
                p.add(
                    field,
                    "applies only to a Unix socket (listen = \"unix:/path\")",
                );
            }
        }
        match text.parse() {
            Ok(addr) => AdminListen::Tcp(addr),
            Err(_) => {
                p.add(
                    "admin.listen",
                    "expected IP:port (\"127.0.0.1:9901\") or unix:/path",
                );
                AdminListen::Tcp(DEFAULT_ADMIN.parse().expect("default admin address"))
            }
        }
    }
}

/// `admin.ready_requires` and `admin.ready_min_servers`.
fn ready_requires(
    p: &mut Problems,
    a: &super::file::AdminFile,
    upstreams: &[Upstream],
) -> Vec<ReadyRequire> {
    let min_servers = match a.ready_min_servers {
        None => 1,
        Some(n) => {
            if a.ready_requires.is_empty() {
                p.add(
                    "admin.ready_min_servers",
                    "has no effect without admin.ready_requires",
                );
            }
            p.int("admin.ready_min_servers", Some(n), 1, (1, 10_000)) as usize
        }
    };
    let mut ready_requires = Vec::new();
    for (i, name) in a.ready_requires.iter().enumerate() {
        let path = format!("admin.ready_requires[{i}]");
        match upstreams.iter().position(|u| u.name == *name) {
            None => p.add(path, format!("no upstream named {name:?}")),
            Some(u)
                if upstreams[u].entries.iter().all(|e| !e.is_name())
                    && upstreams[u].servers.len() < min_servers =>
            {
                p.add(
                    path,
                    format!(
                        "upstream {name:?} has {} servers, fewer than admin.ready_min_servers = \
                     {min_servers}: it could never be ready",
                        upstreams[u].servers.len()
                    ),
                )
            }
            Some(u) => ready_requires.push(ReadyRequire {
                upstream: UpstreamId(u as u32),
                min_servers,
            }),
        }
    }
    ready_requires
}

/// `admin.allow_origins` and `admin.allow_hosts`.
fn admin_allowed(p: &mut Problems, a: &super::file::AdminFile) -> (Vec<String>, Vec<String>) {
    let mut allow_origins = Vec::new();
    for (i, o) in a.allow_origins.iter().enumerate() {
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        let host = o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"));
        let ok = host
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
        if ok {
            allow_origins.push(o);
        } else {
            p.add(
                format!("admin.allow_origins[{i}]"),
                "must be scheme://host[:port], e.g. \"https://ops.example.com\"",
            );
        }
    }
    let mut allow_hosts = Vec::new();
    for (i, h) in a.allow_hosts.iter().enumerate() {
        let ok = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if ok {
            allow_hosts.push(h.to_ascii_lowercase());
        } else {
            p.add(
                format!("admin.allow_hosts[{i}]"),
                "must be a host name without port, e.g. \"lb1.internal\"",
            );
        }
    }
    (allow_origins, allow_hosts)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn runtime(p: &mut Problems, file: &File) -> Runtime {
    let r = &file.runtime;
    let workers = match &r.workers {
        None => Workers::Auto,
        Some(WorkersFile::Word(w)) if w == "auto" => Workers::Auto,
        Some(WorkersFile::Count(n)) if (1..=1024).contains(n) => Workers::Count(*n as usize),
        Some(_) => {
            p.add("runtime.workers", "must be \"auto\" or a number 1..=1024");
            Workers::Auto
        }
    };
    let mut cpus = Vec::new();
    for (i, c) in r.cpus.iter().flatten().enumerate() {
        match usize::try_from(*c) {
            Ok(c) if c < 4096 && !cpus.contains(&c) => cpus.push(c),
            Ok(c) if cpus.contains(&c) => p.add(format!("runtime.cpus[{i}]"), "listed twice"),
            _ => p.add(format!("runtime.cpus[{i}]"), "must be a CPU number 0..4096"),
        }
    }
    if let (Workers::Count(n), false) = (workers, cpus.is_empty()) {
        if n != cpus.len() {
            p.add(
                "runtime.cpus",
                format!("lists {} CPUs but runtime.workers = {n}", cpus.len()),
            );
        }
    }
    Runtime {
        workers,
        cpus,
        shutdown_grace: p.duration(
            "runtime.shutdown_grace",
            r.shutdown_grace.as_ref(),
            secs(30),
        ),
        io_memory: p.size("runtime.io_memory", r.io_memory.as_ref(), 4 << 20, 64 << 20),
        engine: match r.engine.as_deref() {
            None | Some("auto") => Engine::Auto,
            Some("io_uring") => Engine::IoUring,
            Some("epoll") => Engine::Epoll,
            Some("glommio") => {
                p.add(
                    "runtime.engine",
                    "\"glommio\" is no longer built in (ringlb's own io_uring engine replaced \
                     it); use \"auto\", \"io_uring\" or \"epoll\"",
                );
                Engine::Auto
            }
            Some(other) => {
                p.add(
                    "runtime.engine",
                    format!("must be \"auto\", \"io_uring\" or \"epoll\", not {other:?}"),
                );
                Engine::Auto
            }
        },
    }
}

fn listeners(p: &mut Problems, file: &File) -> Vec<Listener> {
    if file.listeners.is_empty() {
        p.add("listeners", "at least one listener is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, l) in file.listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if l.name.is_empty() {
            p.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(l.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("{:?} is used twice", l.name),
            );
        }
        let backlog = p.int(&format!("{path}.backlog"), l.backlog, 1024, (1, 65535)) as u32;
        let max_connections = l.max_connections.map(|_| {
            p.int(
                &format!("{path}.max_connections"),
                l.max_connections,
                0,
                (1, 10_000_000),
            )
        });
        let max_connections_per_ip = l.max_connections_per_ip.map(|_| {
            p.int(
                &format!("{path}.max_connections_per_ip"),
                l.max_connections_per_ip,
                0,
                (1, 1_000_000),
            ) as u32
        });
        let real_ip = real_ip(p, &path, l);
        let addr: SocketAddr = match l.listen.parse() {
            Ok(a) => a,
            Err(_) => {
                p.add(
                    format!("{path}.listen"),
                    format!("{:?} is not IP:port (e.g. \"0.0.0.0:8080\")", l.listen),
                );
                continue;
            }
        };
        if addr.port() != 0 && !addrs.insert(addr) {
            p.add(format!("{path}.listen"), format!("{addr} is used twice"));
        }
        let tls = l.tls.as_ref().and_then(|t| listener_tls(p, &path, t));
        let redirect_https = l.redirect_https.unwrap_or(false);
        if redirect_https && l.tls.is_some() {
            p.add(
                format!("{path}.redirect_https"),
                "applies to plain listeners; this one has tls",
            );
        }
        let proxy_protocol = l.proxy_protocol.unwrap_or(false);
        let proxy_protocol_from = cidrs(
            p,
            &format!("{path}.proxy_protocol_from"),
            &l.proxy_protocol_from,
        );
        if !proxy_protocol && !proxy_protocol_from.is_empty() {
            p.add(
                format!("{path}.proxy_protocol_from"),
                "needs proxy_protocol = true",
            );
        }
        out.push(Listener {
            name: l.name.clone(),
            addr,
            backlog,
            real_ip,
            max_connections,
            max_connections_per_ip,
            proxy_protocol,
            proxy_protocol_from,
            tls,
            redirect_https,
        });
    }
    out
}

fn real_ip(p: &mut Problems, path: &str, l: &super::file::ListenerFile) -> Option<RealIp> {
    let from = cidrs(p, &format!("{path}.real_ip_from"), &l.real_ip_from);
    match &l.real_ip_header {
        None => {
            if !from.is_empty() {
                p.add(format!("{path}.real_ip_from"), "needs real_ip_header");
            }
            None
        }
        Some(h) => {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                p.add(format!("{path}.real_ip_header"), "must be a header name");
            }
            if from.is_empty() {
                p.add(
                    format!("{path}.real_ip_from"),
                    "list the proxies trusted to set real_ip_header (CIDRs)",
                );
            }
            Some(RealIp {
                header: h.to_ascii_lowercase().into_bytes().into(),
                from,
            })
        }
    }
}

/// Reads the certificate and key files, so `ringlb check` reports a bad file as startup would.
fn listener_tls(
    p: &mut Problems,
    path: &str,
    t: &super::file::ListenerTlsFile,
) -> Option<ListenerTls> {
    let path = format!("{path}.tls");
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            p.add(
                format!("{path}.min_version"),
                format!("{other:?} is not supported; \"1.2\" or \"1.3\""),
            );
            return None;
        }
    };
    let tls = ListenerTls {
        certs: t
            .certs
            .iter()
            .map(|c| CertKey {
                cert: p.file(&c.cert),
                key: p.file(&c.key),
            })
            .collect(),
        min_version,
    };
    let errors = p.files.listener_tls(&tls);
    for e in &errors {
        p.add(format!("{path}.{}", e.field), e.message.clone());
    }
    errors.is_empty().then_some(tls)
}

fn upstream_tls(
    p: &mut Problems,
    path: &str,
    t: &super::file::UpstreamTlsFile,
) -> Option<UpstreamTls> {
    let client_cert = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(key)) => Some(CertKey {
            cert: p.file(cert),
            key: p.file(key),
        }),
        (None, None) => None,
        (Some(_), None) => {
            p.add(format!("{path}.client_key"), "required with client_cert");
            return None;
        }
        (None, Some(_)) => {
            p.add(format!("{path}.client_cert"), "required with client_key");
            return None;
        }
    };
    let tls = UpstreamTls {
        ca: t.ca.as_deref().map(|ca| p.file(ca)),
        server_name: t.server_name.clone(),
        verify: t.verify.unwrap_or(true),
        client_cert,
    };
    let errors = p.files.upstream_tls(&tls);
    for e in &errors {
        p.add(format!("{path}.{}", e.field), e.message.clone());
    }
    errors.is_empty().then_some(tls)
}

fn next_upstream(p: &mut Problems, path: &str, list: Option<&Vec<String>>) -> NextUpstream {
    let Some(list) = list else {
        return NextUpstream::default();
    };
    let mut n = NextUpstream {
        error: false,
        timeout: false,
        ..NextUpstream::default()
    };
    for (i, item) in list.iter().enumerate() {
        match item.as_str() {
            "error" => n.error = true,
            "timeout" => n.timeout = true,
            "invalid_header" => n.invalid_header = true,
            "http_500" => n.http_500 = true,
            "http_502" => n.http_502 = true,
            "http_503" => n.http_503 = true,
            "http_504" => n.http_504 = true,
            "non_idempotent" => n.non_idempotent = true,
            "off" if list.len() == 1 => {}
            other => p.add(
                format!("{path}[{i}]"),
                format!(
                    "unknown condition {other:?}; one of error, timeout, invalid_header, \
                     http_500, http_502, http_503, http_504, non_idempotent, or [\"off\"]"
                ),
            ),
        }
    }
    n
}

fn health_check(p: &mut Problems, path: &str, h: &super::file::HealthCheckFile) -> HealthCheck {
    let check_path = h.path.clone().unwrap_or_else(|| "/health".into());
    if !check_path.starts_with('/') || check_path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        p.add(
            format!("{path}.path"),
            "must start with '/' and contain no spaces",
        );
    }
    let interval = p.duration(&format!("{path}.interval"), h.interval.as_ref(), secs(5));
    // Without a timeout, 1s or the interval if shorter: a short interval alone is valid (HAProxy
    // likewise bounds a check by `inter` when `timeout check` is unset).
    let timeout = p.duration(
        &format!("{path}.timeout"),
        h.timeout.as_ref(),
        interval.min(secs(1)),
    );
    if timeout > interval {
        p.add(format!("{path}.timeout"), "must not exceed interval");
    }
    let rise = p.int(&format!("{path}.rise"), h.rise, 2, (1, 100)) as u32;
    let fall = p.int(&format!("{path}.fall"), h.fall, 3, (1, 100)) as u32;
    let expect = match &h.expect_status {
        None => 200..=399,
        Some(v) => status_range(v).unwrap_or_else(|| {
            p.add(
                format!("{path}.expect_status"),
                "a status (200) or a range (\"200-399\") within 100..=599",
            );
            200..=399
        }),
    };
    if let Some(host) = &h.host {
        if host.is_empty() || host.bytes().any(|b| !b.is_ascii_graphic()) {
            p.add(format!("{path}.host"), "must be a host name");
        }
    }
    HealthCheck {
        path: check_path,
        interval,
        timeout,
        rise,
        fall,
        expect,
        host: h.host.clone(),
    }
}

fn sticky(p: &mut Problems, path: &str, st: &super::file::StickyFile) -> Sticky {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(&st.cookie) {
        p.add(
            format!("{path}.cookie"),
            "must be a cookie name (RFC 6265 token)",
        );
    }
    if let Some(mode) = st.mode.as_deref() {
        if mode != "insert" {
            p.add(
                format!("{path}.mode"),
                format!("{mode:?}: only \"insert\" is supported"),
            );
        }
    }
    let attr_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if let Some(d) = &st.domain {
        if !attr_ok(d) {
            p.add(
                format!("{path}.domain"),
                "must be a domain without spaces or ';'",
            );
        }
    }
    let cookie_path = st.path.clone().unwrap_or_else(|| "/".into());
    if !cookie_path.starts_with('/') || !attr_ok(&cookie_path) {
        p.add(
            format!("{path}.path"),
            "must start with '/' and contain no spaces or ';'",
        );
    }
    let secure = st.secure;
    let samesite = match st.samesite.as_deref() {
        None | Some("lax") => Some(SameSite::Lax),
        Some("strict") => Some(SameSite::Strict),
        Some("none") => {
            if secure != Some(true) {
                p.add(
                    format!("{path}.samesite"),
                    "\"none\" needs secure = true (browsers drop SameSite=None cookies \
                     without Secure)",
                );
            }
            Some(SameSite::None)
        }
        Some(other) => {
            p.add(
                format!("{path}.samesite"),
                format!("{other:?}: use \"lax\", \"strict\" or \"none\""),
            );
            None
        }
    };
    if let Some(secret) = &st.secret {
        if secret.len() < 16 {
            p.add(
                format!("{path}.secret"),
                "must be at least 16 bytes (e.g. 32 random hex digits)",
            );
        }
    }
    let expires = st
        .expires
        .as_ref()
        .map(|e| p.duration(&format!("{path}.expires"), Some(e), secs(3600)));
    let httponly = st.httponly.unwrap_or(true);
    // RFC 6265 §4.1: `; Path=/; Domain=d; Max-Age=n; HttpOnly; SameSite=Lax`.
    let mut attributes = format!("; Path={cookie_path}");
    if let Some(d) = &st.domain {
        attributes.push_str(&format!("; Domain={d}"));
    }
    if let Some(e) = expires {
        attributes.push_str(&format!("; Max-Age={}", e.as_secs()));
    }
    if httponly {
        attributes.push_str("; HttpOnly");
    }
    match samesite {
        Some(SameSite::Lax) => attributes.push_str("; SameSite=Lax"),
        Some(SameSite::Strict) => attributes.push_str("; SameSite=Strict"),
        Some(SameSite::None) => attributes.push_str("; SameSite=None"),
        None => {}
    }
    Sticky {
        cookie: st.cookie.clone(),
        expires,
        domain: st.domain.clone(),
        path: cookie_path,
        secure,
        httponly,
        samesite,
        indirect: st.indirect.unwrap_or(false),
        nocache: st.nocache.unwrap_or(false),
        key: CookieKey::new(st.secret.as_deref().map(str::as_bytes)),
        attributes: attributes.into_bytes().into(),
    }
}

fn status_range(v: &toml::Value) -> Option<std::ops::RangeInclusive<u16>> {
    let ok = |n: i64| (100..=599).contains(&n).then_some(n as u16);
    match v {
        toml::Value::Integer(n) => ok(*n).map(|n| n..=n),
        toml::Value::String(s) => {
            let (a, b) = s.split_once('-')?;
            let (a, b) = (ok(a.trim().parse().ok()?)?, ok(b.trim().parse().ok()?)?);
            (a <= b).then_some(a..=b)
        }
        _ => None,
    }
}

fn upstreams(p: &mut Problems, file: &File) -> Vec<Upstream> {
    let mut out = Vec::new();
    for (name, u) in &file.upstreams {
        let path = format!("upstreams.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            p.add(&path, "name must be letters, digits, '-', '_' or '.'");
        }
        let algorithm = algorithm(p, &path, u);
        let slow_start = u
            .slow_start
            .as_ref()
            .map(|s| p.duration(&format!("{path}.slow_start"), Some(s), secs(30)));
        let keepalive = p.int(&format!("{path}.keepalive"), u.keepalive, 32, (0, 10_000)) as usize;
        let defaults = ServerDefaults {
            keepalive,
            max_fails: p.int(&format!("{path}.max_fails"), u.max_fails, 1, (0, 1000)) as u32,
            fail_timeout: p.duration(
                &format!("{path}.fail_timeout"),
                u.fail_timeout.as_ref(),
                secs(10),
            ),
        };
        let entries = entries::entries(p, &path, &u.servers, &defaults);
        let tries = p.int(&format!("{path}.tries"), u.tries, 0, (0, 100)) as usize;
        let retry_timeout = u
            .retry_timeout
            .as_ref()
            .map(|t| p.duration(&format!("{path}.retry_timeout"), Some(t), secs(10)));
        let next_upstream = next_upstream(
            p,
            &format!("{path}.next_upstream"),
            u.next_upstream.as_ref(),
        );
        let health_check = u
            .health_check
            .as_ref()
            .map(|h| health_check(p, &format!("{path}.health_check"), h));
        let queue = u.queue.as_ref().map(|q| Queue {
            size: p.int(&format!("{path}.queue.size"), q.size, 100, (1, 1_000_000)) as u32,
            timeout: p.duration(
                &format!("{path}.queue.timeout"),
                q.timeout.as_ref(),
                secs(30),
            ),
        });
        if queue.is_some() && entries.iter().all(|e| e.options.max_conns.is_none()) {
            p.add(
                format!("{path}.queue"),
                "has no effect: no server of this upstream sets max_conns",
            );
        }
        let sticky = u
            .sticky
            .as_ref()
            .map(|st| sticky(p, &format!("{path}.sticky"), st));
        let send_proxy_protocol = match u.send_proxy_protocol.as_deref() {
            None => None,
            Some("v1") => Some(ProxyProtocol::V1),
            Some("v2") => Some(ProxyProtocol::V2),
            Some(other) => {
                p.add(
                    format!("{path}.send_proxy_protocol"),
                    format!("{other:?}: use \"v1\" or \"v2\""),
                );
                None
            }
        };
        let tls = u
            .tls
            .as_ref()
            .and_then(|t| upstream_tls(p, &format!("{path}.tls"), t));
        out.push(Upstream {
            name: name.clone(),
            algorithm,
            slow_start,
            tries: tries.max(1),
            tries_all: tries == 0,
            retry_timeout,
            next_upstream,
            health_check,
            queue,
            sticky,
            send_proxy_protocol,
            tls,
            defaults,
            entries,
            removed: Vec::new(),
            servers: Vec::new(),
        });
    }
    entries::expand(&mut out);
    out
}

fn algorithm(p: &mut Problems, path: &str, u: &UpstreamFile) -> Algorithm {
    let balance = u.balance.as_deref().unwrap_or("round_robin");
    let is_hash = balance == "hash";
    if !is_hash {
        for (set, field) in [
            (u.key.is_some(), "key"),
            (u.consistent.is_some(), "consistent"),
            (u.bounded_load.is_some(), "bounded_load"),
        ] {
            if set {
                p.add(
                    format!("{path}.{field}"),
                    "only applies to balance = \"hash\"",
                );
            }
        }
    }
    match balance {
        "round_robin" => Algorithm::RoundRobin,
        "least_conn" => Algorithm::LeastConn,
        "ip_hash" => Algorithm::IpHash,
        "p2c_ewma" => Algorithm::P2cEwma,
        "random" => Algorithm::Random,
        "hash" => {
            let key = match u.key.as_deref() {
                None => {
                    p.add(format!("{path}.key"), "required with balance = \"hash\"");
                    HashKey::RequestUri
                }
                Some(k) => hash_key(p, &format!("{path}.key"), k),
            };
            let consistent = u.consistent.unwrap_or(false);
            let bounded_load = match u.bounded_load {
                Some(c) if !consistent => {
                    p.add(format!("{path}.bounded_load"), "needs consistent = true");
                    Some(c)
                }
                Some(c) if !(c > 1.0 && c <= 100.0) => {
                    p.add(format!("{path}.bounded_load"), "must be > 1.0 and <= 100");
                    Some(c)
                }
                other => other,
            };
            Algorithm::Hash {
                key,
                consistent,
                bounded_load,
            }
        }
        other => {
            p.add(
                format!("{path}.balance"),
                format!(
                    "unknown algorithm {other:?}; one of round_robin, least_conn, ip_hash, \
                     hash, p2c_ewma, random"
                ),
            );
            Algorithm::RoundRobin
        }
    }
}

fn hash_key(p: &mut Problems, path: &str, key: &str) -> HashKey {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    };
    match key {
        "$request_uri" => HashKey::RequestUri,
        "$remote_addr" => HashKey::RemoteAddr,
        k => {
            if let Some(h) = k.strip_prefix("header:").filter(|h| token(h)) {
                HashKey::Header(h.to_ascii_lowercase().into_bytes().into())
            } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| token(c)) {
                HashKey::Cookie(c.as_bytes().into())
            } else {
                p.add(
                    path,
                    format!(
                        "{k:?} is not a key; use \"$request_uri\", \"$remote_addr\", \
                         \"header:NAME\" or \"cookie:NAME\""
                    ),
                );
                HashKey::RequestUri
            }
        }
    }
}

fn routes(
    p: &mut Problems,
    file: &File,
    listeners: &[Listener],
    upstreams: &[Upstream],
) -> Vec<Route> {
    let mut out: Vec<Route> = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let listener = listeners.iter().position(|l| l.name == r.listener);
        if listener.is_none() {
            p.add(
                format!("{path}.listener"),
                format!("no listener named {:?}", r.listener),
            );
        }
        let traffic = traffic::traffic(&path, r, &mut p.list);
        let upstream = match (&r.upstream, &r.answer, &traffic.answer) {
            (Some(name), None, _) => {
                let found = upstreams.iter().position(|u| &u.name == name);
                if found.is_none() {
                    p.add(
                        format!("{path}.upstream"),
                        format!("no upstream named {name:?}"),
                    );
                }
                found.map(|u| Some(UpstreamId(u as u32)))
            }
            (Some(_), Some(_), _) => {
                p.add(
                    &path,
                    "has both upstream and return: a return route answers by itself, remove one",
                );
                None
            }
            (None, Some(_), Some(_)) => Some(None),
            // The invalid `return` was reported already.
            (None, Some(_), None) => None,
            (None, None, _) => {
                p.add(
                    format!("{path}.upstream"),
                    "missing: name an upstream (or answer with return)",
                );
                None
            }
        };
        let host = match host_match(r.host.as_deref().unwrap_or("*")) {
            Ok(h) => h,
            Err(m) => {
                p.add(format!("{path}.host"), m);
                HostMatch::Any
            }
        };
        let prefix = r.path.as_deref().unwrap_or("/");
        if !prefix.starts_with('/') || prefix.bytes().any(|b| b <= b' ' || b == 0x7f) {
            p.add(
                format!("{path}.path"),
                "must start with '/' and contain no spaces",
            );
        }
        let upgrade = forward::upgrades(&path, r.upgrade.as_deref(), &mut p.list);
        let (Some(l), Some(u)) = (listener, upstream) else {
            continue;
        };
        let route = Route {
            listener: ListenerId(l as u32),
            host,
            path: prefix.as_bytes().into(),
            upstream: u,
            upgrade,
            traffic,
        };
        if out
            .iter()
            .any(|o| o.listener == route.listener && o.host == route.host && o.path == route.path)
        {
            p.add(
                &path,
                "duplicates an earlier route (same listener, host and path)",
            );
        }
        out.push(route);
    }
    for (i, l) in listeners.iter().enumerate() {
        if !l.redirect_https && !out.iter().any(|r| r.listener.0 as usize == i) {
            p.add("routes", format!("listener {:?} has no route", l.name));
        }
    }
    // Most specific first: exact host, then wildcard, then any; longer path prefixes first.
    out.sort_by(|a, b| {
        (a.listener.0, a.host.rank(), std::cmp::Reverse(a.path.len())).cmp(&(
            b.listener.0,
            b.host.rank(),
            std::cmp::Reverse(b.path.len()),
        ))
    });
    out
}

fn host_match(host: &str) -> Result<HostMatch, String> {
    if host == "*" {
        return Ok(HostMatch::Any);
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if !valid {
        return Err(format!(
            "{host:?} is not a host name; use \"*\", \"example.com\" or \"*.example.com\""
        ));
    }
    let lower = name.to_ascii_lowercase();
    Ok(if suffix {
        HostMatch::Suffix(format!(".{lower}").into_bytes().into())
    } else {
        HostMatch::Exact(lower.into_bytes().into())
    })
}
