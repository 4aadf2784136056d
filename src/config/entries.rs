//! Server entries: what `[[upstreams.NAME.servers]]` (or the admin API) lists, and how the
//! servers in force are expanded from them.
//!
//! An entry is a literal `IP:port` (one server), a `host:port` (one server per address the
//! name resolves to), or an `srv` name (one server per SRV target and port). The addresses
//! themselves are found elsewhere (`discovery`, at start, on reload and as TTLs run out);
//! here they are plain data ([`Entry::targets`]) and [`Config::expand`] turns entries into
//! the dense server list every other layer reads.
//!
//! A server from a name is called `ENTRY@ADDRESS`: the same address keeps the same name, so
//! it keeps its state-table slot (health, counters, pooled connections) and its sticky
//! cookie id across the generations that a resolution or a reload publishes.

use super::file::{ResolverFile, ServerFile};
use super::validate::Problems;
use super::*;
use std::collections::HashSet;

/// Where an entry's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `addr = "10.0.0.1:8080"`: one server.
    Addr(SocketAddr),
    /// `addr = "app.internal:8080"`: every A (and AAAA) answer, on `port`.
    Host { host: String, port: u16 },
    /// `srv = "_http._tcp.app.internal"`: every SRV target, on its own port.
    Srv(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Addr(a) => write!(f, "{a}"),
            Source::Host { host, port } => write!(f, "{host}:{port}"),
            Source::Srv(name) => write!(f, "srv {name}"),
        }
    }
}

/// Who put an entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file.
    File,
    /// `POST /api/upstreams/NAME/servers`: kept until the next reload.
    Api,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::File => "config",
            Origin::Api => "api",
        }
    }
}

/// One address of an entry. SRV answers set the weight and the tier; other names keep the
/// entry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub addr: SocketAddr,
    /// SRV weight (1..=1000); None: the entry's `weight`.
    pub weight: Option<u32>,
    /// SRV priority above the lowest of the answer: a backup.
    pub backup: bool,
}

impl Target {
    pub fn at(addr: SocketAddr) -> Target {
        Target {
            addr,
            weight: None,
            backup: false,
        }
    }
}

/// One server entry of an upstream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `name`, or the `addr` / `srv` text as written.
    pub name: String,
    pub source: Source,
    /// Re-resolved as its TTL runs out (always true for `srv`).
    pub resolve: bool,
    pub origin: Origin,
    /// The options every server of the entry takes; its `id`, `name`, `addr`, `entry` and
    /// `cookie` are set per server by [`Config::expand`].
    pub options: Server,
    /// The addresses in force, sorted; empty while a name has not resolved.
    pub targets: Vec<Target>,
}

impl Entry {
    /// Whether the entry's addresses come from DNS.
    pub fn is_name(&self) -> bool {
        !matches!(self.source, Source::Addr(_))
    }

    /// The name of the server of this entry at `addr`.
    pub fn server_name(&self, addr: SocketAddr) -> String {
        match self.source {
            Source::Addr(_) => self.name.clone(),
            _ => format!("{}@{addr}", self.name),
        }
    }
}

/// The values an upstream gives its servers unless they set their own.
#[derive(Debug, Clone, Copy)]
pub struct ServerDefaults {
    pub keepalive: usize,
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// A host name as DNS allows it (labels of letters, digits, `-` and `_`, at most 63 bytes
/// each, 253 in all, an optional final dot), and not something that looks like a mistyped
/// IPv4 address.
pub fn host_syntax(host: &str) -> bool {
    let h = host.strip_suffix('.').unwrap_or(host);
    !h.is_empty()
        && h.len() <= 253
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `IP:port` or `host:port`, or why not.
pub fn host_port(text: &str) -> Result<Source, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return if a.port() == 0 {
            Err("port must not be 0".into())
        } else {
            Ok(Source::Addr(a))
        };
    }
    let example = "(e.g. \"10.0.0.1:8080\" or \"app.internal:8080\")";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} has no port: write IP:port or host:port {example}"
        ));
    };
    if host.contains(':') || host.starts_with('[') {
        return Err(format!("{text:?} is not IP:port or host:port {example}"));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("port {port:?} must be 1..=65535")),
    };
    if !host_syntax(host) {
        return Err(format!("{text:?} is not IP:port or host:port {example}"));
    }
    Ok(Source::Host {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The server entries of one upstream, each problem at its path.
pub(super) fn entries(
    p: &mut Problems,
    path: &str,
    files: &[ServerFile],
    defaults: &ServerDefaults,
) -> Vec<Entry> {
    if files.is_empty() {
        p.add(format!("{path}.servers"), "at least one server is required");
    }
    let mut out: Vec<Entry> = Vec::new();
    for (i, s) in files.iter().enumerate() {
        let spath = format!("{path}.servers[{i}]");
        let Some(e) = entry(p, &spath, s, defaults, Origin::File) else {
            continue;
        };
        if let Some(why) = clash(&out, &e) {
            let field = if why.starts_with("name ") {
                "name"
            } else if s.srv.is_some() {
                "srv"
            } else {
                "addr"
            };
            p.add(format!("{spath}.{field}"), why);
            continue;
        }
        out.push(e);
    }
    if !out.is_empty() && out.iter().all(|e| e.options.backup) {
        p.add(
            format!("{path}.servers"),
            "every server is a backup; at least one must be a primary",
        );
    }
    out
}

/// Why `e` cannot join `others`: a name or an address already listed.
pub fn clash(others: &[Entry], e: &Entry) -> Option<String> {
    if others.iter().any(|o| o.source == e.source) {
        return Some(format!("{} is listed twice", e.source));
    }
    if others.iter().any(|o| o.name == e.name) {
        return Some(format!("name {:?} is used twice", e.name));
    }
    None
}

/// One entry, or None when it has a problem (reported).
pub(super) fn entry(
    p: &mut Problems,
    spath: &str,
    s: &ServerFile,
    defaults: &ServerDefaults,
    origin: Origin,
) -> Option<Entry> {
    let before = p.list.len();
    let source = match (&s.addr, &s.srv) {
        (Some(_), Some(_)) => {
            p.add(
                format!("{spath}.srv"),
                "srv and addr are exclusive: the SRV answer gives the addresses and ports",
            );
            None
        }
        (None, None) => {
            p.add(
                format!("{spath}.addr"),
                "missing: addr = \"IP:port\" or \"host:port\", or srv = \"_http._tcp.NAME\"",
            );
            None
        }
        (Some(addr), None) => match host_port(addr) {
            Ok(source) => Some(source),
            Err(why) => {
                p.add(format!("{spath}.addr"), why);
                None
            }
        },
        (None, Some(srv)) if host_syntax(srv) => Some(Source::Srv(srv.to_ascii_lowercase())),
        (None, Some(srv)) => {
            p.add(
                format!("{spath}.srv"),
                format!("{srv:?} is not a DNS name (e.g. \"_http._tcp.app.internal\")"),
            );
            None
        }
    };
    let resolve = match (&source, s.resolve) {
        (Some(Source::Addr(_)), Some(true)) => {
            p.add(
                format!("{spath}.resolve"),
                "only applies to a host name: an IP address is not resolved",
            );
            false
        }
        (Some(Source::Srv(_)), Some(false)) => {
            p.add(
                format!("{spath}.resolve"),
                "srv names are always re-resolved; remove resolve = false",
            );
            true
        }
        (Some(Source::Srv(_)), _) => true,
        (_, r) => r.unwrap_or(false),
    };
    let written = s.addr.as_deref().or(s.srv.as_deref()).unwrap_or_default();
    let name = s.name.clone().unwrap_or_else(|| written.to_string());
    if written.is_empty() && s.name.is_none() {
        // Reported as the missing address.
    } else if name.is_empty() || name.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        p.add(format!("{spath}.name"), "must be non-empty, without spaces");
    } else if name.contains('@') {
        p.add(
            format!("{spath}.name"),
            "must not contain '@': servers from DNS are named ENTRY@ADDRESS",
        );
    }
    let weight = p.int(&format!("{spath}.weight"), s.weight, 1, (1, 1000)) as u32;
    let keepalive = p.int(
        &format!("{spath}.keepalive"),
        s.keepalive,
        defaults.keepalive as u64,
        (0, 10_000),
    ) as usize;
    let max_conns = s.max_conns.map(|_| {
        p.int(
            &format!("{spath}.max_conns"),
            s.max_conns,
            1,
            (1, 1_000_000),
        ) as u32
    });
    let max_fails = p.int(
        &format!("{spath}.max_fails"),
        s.max_fails,
        defaults.max_fails as u64,
        (0, 1000),
    ) as u32;
    let fail_timeout = p.duration(
        &format!("{spath}.fail_timeout"),
        s.fail_timeout.as_ref(),
        defaults.fail_timeout,
    );
    let source = source?;
    if p.list.len() > before {
        return None;
    }
    let placeholder = SocketAddr::from(([0, 0, 0, 0], 0));
    let targets = match &source {
        Source::Addr(a) => vec![Target::at(*a)],
        _ => Vec::new(),
    };
    Some(Entry {
        options: Server {
            id: ServerId(0),
            name: name.clone(),
            addr: match &source {
                Source::Addr(a) => *a,
                _ => placeholder,
            },
            entry: 0,
            weight,
            backup: s.backup.unwrap_or(false),
            keepalive,
            max_conns,
            drain: s.drain.unwrap_or(false),
            max_fails,
            fail_timeout,
            cookie: Box::default(),
        },
        name,
        source,
        resolve,
        origin,
        targets,
    })
}

/// `[resolver]`.
pub(super) fn resolver(p: &mut Problems, r: &ResolverFile) -> Resolver {
    let d = Resolver::default();
    let mut nameservers = Vec::new();
    for (i, ns) in r.nameservers.iter().enumerate() {
        let parsed = ns.parse::<SocketAddr>().ok().or_else(|| {
            ns.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| (ip, 53).into())
        });
        match parsed {
            Some(a) if a.port() != 0 => nameservers.push(a),
            _ => p.add(
                format!("resolver.nameservers[{i}]"),
                format!("{ns:?} is not IP or IP:port (e.g. \"10.0.0.2:53\")"),
            ),
        }
    }
    let timeout = p.duration("resolver.timeout", r.timeout.as_ref(), d.timeout);
    let attempts = p.int("resolver.attempts", r.attempts, 2, (1, 10)) as u32;
    let (valid_min, valid_max) = match &r.valid {
        Some(v) => {
            for (set, field) in [(&r.valid_min, "valid_min"), (&r.valid_max, "valid_max")] {
                if set.is_some() {
                    p.add(
                        format!("resolver.{field}"),
                        "valid fixes the interval; remove valid or valid_min/valid_max",
                    );
                }
            }
            let v = p.duration("resolver.valid", Some(v), d.valid_min);
            (v, v)
        }
        None => (
            p.duration("resolver.valid_min", r.valid_min.as_ref(), d.valid_min),
            p.duration("resolver.valid_max", r.valid_max.as_ref(), d.valid_max),
        ),
    };
    if valid_min > valid_max {
        p.add("resolver.valid_min", "must not exceed resolver.valid_max");
    }
    Resolver {
        nameservers,
        timeout,
        attempts,
        valid_min,
        valid_max,
        ipv6: r.ipv6.unwrap_or(true),
    }
}

impl Upstream {
    /// The servers of the entries, ids from `next`.
    fn expanded(&self, next: &mut u32) -> Vec<Server> {
        let mut out = Vec::new();
        let mut names = HashSet::new();
        for (index, e) in self.entries.iter().enumerate() {
            if self.removed.contains(&e.name) {
                continue;
            }
            for t in &e.targets {
                let name = e.server_name(t.addr);
                if self.removed.contains(&name) || !names.insert(name.clone()) {
                    continue;
                }
                let mut s = e.options.clone();
                s.id = ServerId(*next);
                s.addr = t.addr;
                s.entry = index;
                s.weight = t.weight.unwrap_or(s.weight);
                s.backup |= t.backup;
                s.cookie = match &self.sticky {
                    Some(st) => st.key.server_id(&self.name, &name),
                    None => Box::default(),
                };
                s.name = name;
                *next += 1;
                out.push(s);
            }
        }
        out
    }

    /// Why `e` cannot join this upstream: its name or source is already listed, or its name
    /// is a server's.
    pub fn clash(&self, e: &Entry) -> Option<String> {
        clash(&self.entries, e).or_else(|| {
            self.servers
                .iter()
                .any(|s| s.name == e.name)
                .then(|| format!("name {:?} is used by a server", e.name))
        })
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

pub(super) fn expand(upstreams: &mut [Upstream]) {
    let mut next = 0;
    for u in upstreams {
        u.servers = u.expanded(&mut next);
        if u.tries_all {
            u.tries = u.servers.len().max(1);
        }
    }
}

impl Config {
    /// Rebuilds every upstream's servers from its entries' targets, numbering them densely
    /// (upstreams in name order, servers in entry order), and recounts `tries = 0`.
    pub fn expand(&mut self) {
        expand(&mut self.upstreams);
    }

    /// A server entry for `upstream` from the JSON of the admin API (the keys of a
    /// `[[upstreams.NAME.servers]]` table), validated as the file's are, and not clashing
    /// with the upstream's entries.
    pub fn api_entry(&self, upstream: &Upstream, json: &[u8]) -> Result<Entry, Vec<Problem>> {
        let file: ServerFile = serde_json::from_slice(json).map_err(|e| {
            vec![Problem {
                path: "body".into(),
                message: format!("invalid JSON body: {e}"),
            }]
        })?;
        let mut p = Problems::new(&NoFileCheck, None);
        let Some(e) = entry(&mut p, "body", &file, &upstream.defaults, Origin::Api) else {
            return Err(p.list);
        };
        match upstream.clash(&e) {
            Some(why) => p.add("body", why),
            None => return Ok(e),
        }
        Err(p.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_names() {
        assert_eq!(
            host_port("10.0.0.1:80"),
            Ok(Source::Addr("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            host_port("App.Internal:8080"),
            Ok(Source::Host {
                host: "app.internal".into(),
                port: 8080
            })
        );
        assert!(host_port("[::1]:80").is_ok());
        for bad in [
            "app.internal",
            "app.internal:0",
            "app.internal:70000",
            "app internal:80",
            "10.0.0.300:80",
            "-app:80",
            ":80",
            "a..b:80",
            "[::1:80",
            "10.0.0.1:0",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
        assert!(host_syntax("_http._tcp.app.internal."));
        assert!(!host_syntax(&"a".repeat(64)));
    }

    const BASE: &str = "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\
                        [[routes]]\nlistener = \"l\"\nupstream = \"app\"\n";

    fn parse(tail: &str) -> Result<Config, Vec<String>> {
        Config::parse(&format!("{BASE}{tail}")).map_err(|e| e.lines())
    }

    #[test]
    fn entries_are_validated_with_their_paths() {
        let e = parse(
            "[upstreams.app]\n\
             [[upstreams.app.servers]]\naddr = \"10.0.0.1:80\"\nsrv = \"_http._tcp.x\"\n\
             [[upstreams.app.servers]]\nresolve = true\naddr = \"10.0.0.2:80\"\n\
             [[upstreams.app.servers]]\nsrv = \"_http._tcp.x\"\nresolve = false\n\
             [[upstreams.app.servers]]\nname = \"a@b\"\naddr = \"app:80\"\n\
             [[upstreams.app.servers]]\nweight = 1\n\
             [resolver]\nnameservers = [\"10.0.0.2\", \"x\"]\nvalid = \"5s\"\nvalid_max = \"1m\"\n",
        )
        .unwrap_err();
        let want = [
            "upstreams.app.servers[0].srv: srv and addr are exclusive",
            "upstreams.app.servers[1].resolve: only applies to a host name",
            "upstreams.app.servers[2].resolve: srv names are always re-resolved",
            "upstreams.app.servers[3].name: must not contain '@'",
            "upstreams.app.servers[4].addr: missing",
            "resolver.nameservers[1]: \"x\" is not IP or IP:port",
            "resolver.valid_max: valid fixes the interval",
        ];
        for w in want {
            assert!(e.iter().any(|l| l.contains(w)), "{w} not in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn names_expand_into_servers_that_keep_their_names() {
        let mut c = parse(
            "[upstreams.app]\nsticky = { cookie = \"s\", secret = \"0123456789abcdef0123\" }\n\
             [[upstreams.app.servers]]\naddr = \"10.0.0.1:80\"\n\
             [[upstreams.app.servers]]\naddr = \"app.internal:8080\"\nname = \"app\"\nresolve = true\n\
             [[upstreams.app.servers]]\nsrv = \"_http._tcp.app\"\n",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.servers.len(), 1, "names have no server until resolved");
        assert_eq!(u.tries, 1);
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        c.upstreams[0].entries[1].targets = vec![Target::at(a("10.0.0.5:8080"))];
        c.upstreams[0].entries[2].targets = vec![
            Target {
                addr: a("10.0.0.6:81"),
                weight: Some(7),
                backup: false,
            },
            Target {
                addr: a("10.0.0.7:82"),
                weight: None,
                backup: true,
            },
        ];
        c.expand();
        let u = &c.upstreams[0];
        let names: Vec<&str> = u.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "10.0.0.1:80",
                "app@10.0.0.5:8080",
                "_http._tcp.app@10.0.0.6:81",
                "_http._tcp.app@10.0.0.7:82"
            ]
        );
        assert_eq!(u.servers[2].weight, 7);
        assert!(u.servers[3].backup && !u.servers[2].backup);
        assert_eq!(u.tries, 4);
        let ids: Vec<u32> = u.servers.iter().map(|s| s.id.0).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        let cookie = u.servers[1].cookie.clone();
        c.upstreams[0].removed.push("10.0.0.1:80".into());
        c.expand();
        let u = &c.upstreams[0];
        assert_eq!(u.servers[0].name, "app@10.0.0.5:8080");
        assert_eq!(
            u.servers[0].cookie, cookie,
            "the cookie id follows the name"
        );
        let again = Config::parse(&c.dump()).unwrap();
        assert_eq!(again.upstreams[0].entries.len(), 3);
        assert!(again.upstreams[0].entries[1].resolve);
    }

    #[test]
    fn api_entries_are_validated_like_the_file() {
        let c =
            parse("[upstreams.app]\n[[upstreams.app.servers]]\naddr = \"10.0.0.1:80\"\n").unwrap();
        let u = &c.upstreams[0];
        let e = c
            .api_entry(u, br#"{"addr":"10.0.0.2:80","weight":3,"name":"b"}"#)
            .unwrap();
        assert_eq!((e.origin, e.options.weight), (Origin::Api, 3));
        for bad in [
            &br#"{"addr":"10.0.0.1:80"}"#[..],
            br#"{"addr":"10.0.0.2:80","name":"10.0.0.1:80"}"#,
            br#"{"addr":"10.0.0.2:80","weight":0}"#,
            br#"{"addr":"10.0.0.2:80","color":"red"}"#,
            br#"{"srv":"_x._tcp.a","addr":"a:1"}"#,
            b"[]",
        ] {
            assert!(
                c.api_entry(u, bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
