//! File → typed [`Config`]: every problem is collected with its path, none stops the others.

use super::file::{File, ServerFile, UpstreamFile, WorkersFile};
use super::*;
use crate::balance::HashKey;
use std::collections::HashSet;

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
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

    fn size(&mut self, path: &str, value: Option<&String>, default: usize, max: usize) -> usize {
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

    fn int(&mut self, path: &str, value: Option<i64>, default: u64, range: (u64, u64)) -> u64 {
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

/// "16KiB", "1MiB", "512", "4KB" (KB = 1000). Case-insensitive units.
fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

pub(super) fn validate(file: File) -> Result<Config, Vec<Problem>> {
    let mut p = Problems(Vec::new());

    let runtime = runtime(&mut p, &file);
    let admin = match file
        .admin
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_ADMIN)
        .parse()
    {
        Ok(listen) => Admin { listen },
        Err(_) => {
            p.add("admin.listen", "expected IP:port, e.g. \"127.0.0.1:9901\"");
            Admin {
                listen: DEFAULT_ADMIN.parse().expect("default admin address"),
            }
        }
    };
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
    };
    if limits.request.max_request_line > limits.request.max_head {
        p.add(
            "limits.max_request_line",
            "must not exceed limits.max_request_head",
        );
    }

    let listeners = listeners(&mut p, &file);
    let upstreams = upstreams(&mut p, &file);
    let routes = routes(&mut p, &file, &listeners, &upstreams);

    if p.0.is_empty() {
        Ok(Config {
            runtime,
            admin,
            timeouts,
            limits,
            listeners,
            routes,
            upstreams,
        })
    } else {
        Err(p.0)
    }
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
        io_memory: p.size(
            "runtime.io_memory",
            r.io_memory.as_ref(),
            512 << 10,
            64 << 20,
        ),
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
        out.push(Listener {
            name: l.name.clone(),
            addr,
            backlog,
        });
    }
    out
}

fn upstreams(p: &mut Problems, file: &File) -> Vec<Upstream> {
    let mut out = Vec::new();
    let mut next_server = 0u32;
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
        let servers = servers(p, &path, &u.servers, keepalive, &mut next_server);
        out.push(Upstream {
            name: name.clone(),
            algorithm,
            slow_start,
            servers,
        });
    }
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

fn servers(
    p: &mut Problems,
    path: &str,
    files: &[ServerFile],
    keepalive: usize,
    next_id: &mut u32,
) -> Vec<Server> {
    if files.is_empty() {
        p.add(format!("{path}.servers"), "at least one server is required");
    }
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, s) in files.iter().enumerate() {
        let spath = format!("{path}.servers[{i}]");
        let addr: Option<SocketAddr> = s.addr.parse().ok();
        match addr {
            None => p.add(
                format!("{spath}.addr"),
                format!("{:?} is not IP:port (e.g. \"10.0.0.1:8080\")", s.addr),
            ),
            Some(a) if a.port() == 0 => p.add(format!("{spath}.addr"), "port must not be 0"),
            Some(a) if !addrs.insert(a) => {
                p.add(format!("{spath}.addr"), format!("{a} is listed twice"))
            }
            Some(_) => {}
        }
        let name = s.name.clone().unwrap_or_else(|| s.addr.clone());
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            p.add(format!("{spath}.name"), "must be non-empty, without spaces");
        } else if !names.insert(name.clone()) {
            p.add(format!("{spath}.name"), format!("{name:?} is used twice"));
        }
        let weight = p.int(&format!("{spath}.weight"), s.weight, 1, (1, 1000)) as u32;
        let keepalive = p.int(
            &format!("{spath}.keepalive"),
            s.keepalive,
            keepalive as u64,
            (0, 10_000),
        ) as usize;
        let Some(addr) = addr else { continue };
        out.push(Server {
            id: ServerId(*next_id),
            name,
            addr,
            weight,
            backup: s.backup.unwrap_or(false),
            keepalive,
        });
        *next_id += 1;
    }
    if !out.is_empty() && out.iter().all(|s| s.backup) {
        p.add(
            format!("{path}.servers"),
            "every server is a backup; at least one must be a primary",
        );
    }
    out
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
        let upstream = upstreams.iter().position(|u| u.name == r.upstream);
        if upstream.is_none() {
            p.add(
                format!("{path}.upstream"),
                format!("no upstream named {:?}", r.upstream),
            );
        }
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
        let (Some(l), Some(u)) = (listener, upstream) else {
            continue;
        };
        let route = Route {
            listener: ListenerId(l as u32),
            host,
            path: prefix.as_bytes().into(),
            upstream: UpstreamId(u as u32),
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
        if !out.iter().any(|r| r.listener.0 as usize == i) {
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
