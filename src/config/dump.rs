//! The effective configuration as TOML (`ringlb check --dump`): every key the file may hold,
//! with the default written out where the file left it out, in the file's own names. Per-server
//! values that an upstream sets for all its servers (`keepalive`, `max_fails`, `fail_timeout`)
//! are written on each server, where they end up. The output is itself a valid config that
//! loads to the same configuration (tested).

use super::*;
use toml::{Table, Value};

fn dur(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string().replace(' ', ""))
}

fn size(n: usize) -> Value {
    Value::String(if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{}KiB", n >> 10)
    } else {
        n.to_string()
    })
}

fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn text(bytes: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
}

fn table<const N: usize>(entries: [(&str, Value); N]) -> Table {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

pub(super) fn dump(c: &Config) -> String {
    let mut root = Table::new();
    root.insert("runtime".into(), Value::Table(runtime(&c.runtime)));
    root.insert("admin".into(), Value::Table(admin(c)));
    let t = &c.timeouts;
    root.insert(
        "timeouts".into(),
        Value::Table(table([
            ("client_header", dur(t.client_header)),
            ("client_body", dur(t.client_body)),
            ("client_send", dur(t.client_send)),
            ("keepalive", dur(t.keepalive)),
            ("upstream_connect", dur(t.upstream_connect)),
            ("upstream_send", dur(t.upstream_send)),
            ("upstream_read", dur(t.upstream_read)),
            ("upstream_keepalive", dur(t.upstream_keepalive)),
            ("tunnel", dur(t.tunnel)),
        ])),
    );
    let l = &c.limits;
    root.insert(
        "limits".into(),
        Value::Table(table([
            ("max_request_head", size(l.request.max_head)),
            ("max_request_line", size(l.request.max_request_line)),
            ("max_headers", int(l.request.max_headers)),
            ("max_response_head", size(l.max_response_head)),
            ("min_send_rate", size(l.min_send_rate.unwrap_or(0) as usize)),
        ])),
    );
    root.insert(
        "metrics".into(),
        Value::Table(table([("enabled", Value::Boolean(c.metrics.enabled))])),
    );
    root.insert(
        "log".into(),
        Value::Table(table([
            (
                "level",
                Value::String(c.log.level.as_str().to_ascii_lowercase()),
            ),
            (
                "modules",
                Value::Table(
                    c.log
                        .modules
                        .iter()
                        .map(|(m, l)| (m.clone(), Value::String(l.as_str().to_ascii_lowercase())))
                        .collect(),
                ),
            ),
            (
                "format",
                Value::String(
                    match c.log.format {
                        LogStyle::Text => "text",
                        LogStyle::Json => "json",
                    }
                    .into(),
                ),
            ),
        ])),
    );
    let a = &c.access_log;
    root.insert(
        "access_log".into(),
        Value::Table(table([
            (
                "format",
                Value::String(
                    match a.format {
                        LogFormat::Off => "off",
                        LogFormat::Common => "common",
                        LogFormat::Json => "json",
                    }
                    .into(),
                ),
            ),
            (
                "path",
                Value::String(match &a.target {
                    LogTarget::Stdout => "stdout".into(),
                    LogTarget::Stderr => "stderr".into(),
                    LogTarget::File(p) => p.display().to_string(),
                }),
            ),
            ("request_id_header", text(&a.request_id_header)),
            (
                "request_id_from",
                strings(
                    a.request_id_from
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                ),
            ),
        ])),
    );
    root.insert(
        "proxy".into(),
        Value::Table(table([(
            "via",
            match &c.proxy.via {
                Some(name) => text(name),
                None => Value::Boolean(false),
            },
        )])),
    );
    root.insert("resolver".into(), Value::Table(resolver(&c.resolver)));
    root.insert(
        "listeners".into(),
        Value::Array(
            c.listeners
                .iter()
                .map(|l| Value::Table(listener(l)))
                .collect(),
        ),
    );
    root.insert(
        "routes".into(),
        Value::Array(c.routes.iter().map(|r| Value::Table(route(c, r))).collect()),
    );
    root.insert(
        "upstreams".into(),
        Value::Table(
            c.upstreams
                .iter()
                .map(|u| (u.name.clone(), Value::Table(upstream(u))))
                .collect(),
        ),
    );
    toml::to_string(&root).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// `[runtime]`.
fn runtime(r: &Runtime) -> Table {
    let mut runtime = table([
        (
            "workers",
            match r.workers {
                Workers::Auto => Value::String("auto".into()),
                Workers::Count(n) => int(n),
            },
        ),
        ("shutdown_grace", dur(r.shutdown_grace)),
        ("io_memory", size(r.io_memory)),
        (
            "engine",
            Value::String(
                match r.engine {
                    Engine::Auto => "auto",
                    Engine::IoUring => "io_uring",
                    Engine::Epoll => "epoll",
                }
                .into(),
            ),
        ),
    ]);
    if !r.cpus.is_empty() {
        runtime.insert(
            "cpus".into(),
            Value::Array(r.cpus.iter().map(|&n| int(n)).collect()),
        );
    }
    runtime
}

fn admin(c: &Config) -> Table {
    let a = &c.admin;
    let mut t = table([
        ("listen", Value::String(a.listen.to_string())),
        ("max_connections", int(a.max_connections)),
        (
            "allow_origins",
            strings(a.allow_origins.iter().map(String::as_str)),
        ),
        (
            "allow_hosts",
            strings(a.allow_hosts.iter().map(String::as_str)),
        ),
        (
            "ready_requires",
            strings(
                a.ready_requires
                    .iter()
                    .filter_map(|r| c.upstreams.get(r.upstream.0 as usize))
                    .map(|u| u.name.as_str()),
            ),
        ),
    ]);
    if let Some(r) = a.ready_requires.first() {
        t.insert("ready_min_servers".into(), int(r.min_servers));
    }
    if let Some(token) = &a.token {
        t.insert("token".into(), Value::String(token.clone()));
    }
    if let AdminListen::Unix {
        mode, owner, group, ..
    } = &a.listen
    {
        t.insert("socket_mode".into(), Value::String(format!("{mode:04o}")));
        if let Some(o) = owner {
            t.insert("socket_owner".into(), Value::String(o.clone()));
        }
        if let Some(g) = group {
            t.insert("socket_group".into(), Value::String(g.clone()));
        }
    }
    t
}

fn cert_key(c: &CertKey) -> Value {
    Value::Table(table([
        ("cert", Value::String(c.cert.display().to_string())),
        ("key", Value::String(c.key.display().to_string())),
    ]))
}

fn listener(l: &Listener) -> Table {
    let mut t = table([
        ("name", Value::String(l.name.clone())),
        ("listen", Value::String(l.addr.to_string())),
        ("backlog", int(l.backlog)),
        ("proxy_protocol", Value::Boolean(l.proxy_protocol)),
        ("redirect_https", Value::Boolean(l.redirect_https)),
    ]);
    if let Some(n) = l.max_connections {
        t.insert("max_connections".into(), int(n));
    }
    if let Some(n) = l.max_connections_per_ip {
        t.insert("max_connections_per_ip".into(), int(n));
    }
    if !l.proxy_protocol_from.is_empty() {
        t.insert(
            "proxy_protocol_from".into(),
            Value::Array(
                l.proxy_protocol_from
                    .iter()
                    .map(|n| Value::String(n.to_string()))
                    .collect(),
            ),
        );
    }
    if let Some(r) = &l.real_ip {
        t.insert("real_ip_header".into(), text(&r.header));
        t.insert(
            "real_ip_from".into(),
            Value::Array(
                r.from
                    .iter()
                    .map(|n| Value::String(n.to_string()))
                    .collect(),
            ),
        );
    }
    if let Some(tls) = &l.tls {
        t.insert(
            "tls".into(),
            Value::Table(table([
                (
                    "min_version",
                    Value::String(
                        match tls.min_version {
                            TlsVersion::Tls12 => "1.2",
                            TlsVersion::Tls13 => "1.3",
                        }
                        .into(),
                    ),
                ),
                (
                    "certs",
                    Value::Array(tls.certs.iter().map(cert_key).collect()),
                ),
            ])),
        );
    }
    t
}

fn route(c: &Config, r: &Route) -> Table {
    let host = match &r.host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Exact(h) => String::from_utf8_lossy(h).into_owned(),
        HostMatch::Suffix(s) => format!("*{}", String::from_utf8_lossy(s)),
    };
    let listener = c
        .listeners
        .get(r.listener.0 as usize)
        .map_or(String::new(), |l| l.name.clone());
    let mut t = table([
        ("listener", Value::String(listener)),
        ("host", Value::String(host)),
        ("path", text(&r.path)),
        (
            "upgrade",
            Value::Array(r.upgrade.names().map(text).collect()),
        ),
    ]);
    if let Some(u) = r.upstream.and_then(|u| c.upstreams.get(u.0 as usize)) {
        t.insert("upstream".into(), Value::String(u.name.clone()));
    }
    traffic(&r.traffic, &mut t);
    t
}

/// A route's traffic settings (`client_max_body_size`, header edits, prefix rewrite, return).
fn traffic(tr: &Traffic, t: &mut Table) {
    if let Some(n) = tr.max_body {
        t.insert("client_max_body_size".into(), size(n as usize));
    }
    if let Some(p) = &tr.prefix {
        t.insert("strip_prefix".into(), text(&p.strip));
        t.insert("rewrite_prefix".into(), text(&p.replace));
    }
    for (key, edits) in [
        ("request_headers", &tr.request_headers),
        ("response_headers", &tr.response_headers),
    ] {
        let Some(e) = edits else { continue };
        let mut set = Table::new();
        let mut add = Table::new();
        for f in e.fields.iter() {
            let name = String::from_utf8_lossy(&f.name).into_owned();
            let value = Value::String(f.value.source());
            match f.edit {
                crate::http1::Edit::Set => set.insert(name, value),
                crate::http1::Edit::Add => add.insert(name, value),
            };
        }
        let remove = Value::Array(e.remove.iter().map(|n| text(n)).collect());
        t.insert(
            key.into(),
            Value::Table(table([
                ("set", Value::Table(set)),
                ("add", Value::Table(add)),
                ("remove", remove),
            ])),
        );
    }
    if let Some(a) = &tr.answer {
        let mut r = table([("status", int(a.status))]);
        if let Some(l) = &a.location {
            r.insert("location".into(), Value::String(l.source()));
        }
        if !a.body.is_empty() {
            r.insert("body".into(), text(&a.body));
        }
        t.insert("return".into(), Value::Table(r));
    }
}

/// `health_check = { ... }` of an upstream.
fn health_check(h: &HealthCheck) -> Table {
    let mut hc = table([
        ("path", Value::String(h.path.clone())),
        ("interval", dur(h.interval)),
        ("timeout", dur(h.timeout)),
        ("rise", int(h.rise)),
        ("fall", int(h.fall)),
        (
            "expect_status",
            if h.expect.start() == h.expect.end() {
                int(*h.expect.start())
            } else {
                Value::String(format!("{}-{}", h.expect.start(), h.expect.end()))
            },
        ),
    ]);
    if let Some(host) = &h.host {
        hc.insert("host".into(), Value::String(host.clone()));
    }
    hc
}

/// `sticky = { ... }` of an upstream (the secret is never printed).
fn sticky(s: &Sticky) -> Table {
    let mut st = table([
        ("cookie", Value::String(s.cookie.clone())),
        ("path", Value::String(s.path.clone())),
        ("httponly", Value::Boolean(s.httponly)),
        ("indirect", Value::Boolean(s.indirect)),
        ("nocache", Value::Boolean(s.nocache)),
    ]);
    if let Some(e) = s.expires {
        st.insert("expires".into(), dur(e));
    }
    // Unset: Secure on TLS connections only. The secret is never printed.
    if let Some(secure) = s.secure {
        st.insert("secure".into(), Value::Boolean(secure));
    }
    if let Some(same) = s.samesite {
        let v = match same {
            SameSite::Lax => "lax",
            SameSite::Strict => "strict",
            SameSite::None => "none",
        };
        st.insert("samesite".into(), Value::String(v.into()));
    }
    if let Some(d) = &s.domain {
        st.insert("domain".into(), Value::String(d.clone()));
    }
    st
}

fn upstream(u: &Upstream) -> Table {
    let mut t = Table::new();
    t.insert("balance".into(), Value::String(u.algorithm.name().into()));
    if let crate::balance::Algorithm::Hash {
        key,
        consistent,
        bounded_load,
    } = &u.algorithm
    {
        use crate::balance::HashKey;
        let key = match key {
            HashKey::RequestUri => "$request_uri".to_string(),
            HashKey::RemoteAddr => "$remote_addr".to_string(),
            HashKey::Header(h) => format!("header:{}", String::from_utf8_lossy(h)),
            HashKey::Cookie(c) => format!("cookie:{}", String::from_utf8_lossy(c)),
        };
        t.insert("key".into(), Value::String(key));
        t.insert("consistent".into(), Value::Boolean(*consistent));
        if let Some(b) = bounded_load {
            t.insert("bounded_load".into(), Value::Float(*b));
        }
    }
    if let Some(s) = u.slow_start {
        t.insert("slow_start".into(), dur(s));
    }
    // 0 means "every server" in the file.
    t.insert(
        "tries".into(),
        int(if u.tries_all { 0 } else { u.tries.min(100) }),
    );
    if let Some(r) = u.retry_timeout {
        t.insert("retry_timeout".into(), dur(r));
    }
    let n = &u.next_upstream;
    let conditions = [
        (n.error, "error"),
        (n.timeout, "timeout"),
        (n.invalid_header, "invalid_header"),
        (n.http_500, "http_500"),
        (n.http_502, "http_502"),
        (n.http_503, "http_503"),
        (n.http_504, "http_504"),
        (n.non_idempotent, "non_idempotent"),
    ];
    t.insert(
        "next_upstream".into(),
        strings(
            conditions
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| *name),
        ),
    );
    if let Some(h) = &u.health_check {
        t.insert("health_check".into(), Value::Table(health_check(h)));
    }
    if let Some(q) = &u.queue {
        t.insert(
            "queue".into(),
            Value::Table(table([("size", int(q.size)), ("timeout", dur(q.timeout))])),
        );
    }
    if let Some(s) = &u.sticky {
        t.insert("sticky".into(), Value::Table(sticky(s)));
    }
    if let Some(p) = u.send_proxy_protocol {
        t.insert(
            "send_proxy_protocol".into(),
            Value::String(
                match p {
                    ProxyProtocol::V1 => "v1",
                    ProxyProtocol::V2 => "v2",
                }
                .into(),
            ),
        );
    }
    if let Some(tls) = &u.tls {
        let mut tt = table([("verify", Value::Boolean(tls.verify))]);
        if let Some(ca) = &tls.ca {
            tt.insert("ca".into(), Value::String(ca.display().to_string()));
        }
        if let Some(n) = &tls.server_name {
            tt.insert("server_name".into(), Value::String(n.clone()));
        }
        if let Some(ck) = &tls.client_cert {
            tt.insert(
                "client_cert".into(),
                Value::String(ck.cert.display().to_string()),
            );
            tt.insert(
                "client_key".into(),
                Value::String(ck.key.display().to_string()),
            );
        }
        t.insert("tls".into(), Value::Table(tt));
    }
    t.insert(
        "servers".into(),
        Value::Array(
            u.entries
                .iter()
                .filter(|e| e.origin == Origin::File)
                .map(|e| Value::Table(entry(e)))
                .collect(),
        ),
    );
    t
}

/// A server entry as the file writes it.
fn entry(e: &Entry) -> Table {
    let s = &e.options;
    let mut st = table([
        ("name", Value::String(e.name.clone())),
        ("weight", int(s.weight)),
        ("backup", Value::Boolean(s.backup)),
        ("drain", Value::Boolean(s.drain)),
        ("keepalive", int(s.keepalive)),
        ("max_fails", int(s.max_fails)),
        ("fail_timeout", dur(s.fail_timeout)),
    ]);
    match &e.source {
        Source::Srv(name) => {
            st.insert("srv".into(), Value::String(name.clone()));
        }
        source => {
            st.insert("addr".into(), Value::String(source.to_string()));
            if e.is_name() {
                st.insert("resolve".into(), Value::Boolean(e.resolve));
            }
        }
    }
    if let Some(m) = s.max_conns {
        st.insert("max_conns".into(), int(m));
    }
    st
}

fn resolver(r: &Resolver) -> Table {
    let ns = r.nameservers.iter().map(|a| Value::String(a.to_string()));
    table([
        ("nameservers", Value::Array(ns.collect())),
        ("timeout", dur(r.timeout)),
        ("attempts", int(r.attempts)),
        ("valid_min", dur(r.valid_min)),
        ("valid_max", dur(r.valid_max)),
        ("ipv6", Value::Boolean(r.ipv6)),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn the_dump_of_the_example_loads_to_the_same_dump() {
        let c = Config::parse(include_str!("../../ringlb.example.toml")).expect("example");
        let text = c.dump();
        let again = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again.dump(), text);
        for key in [
            "shutdown_grace = \"30s\"",
            "max_headers = 100",
            "[log]",
            "level = \"info\"",
        ] {
            assert!(text.contains(key), "{key} not in\n{text}");
        }
    }

    #[test]
    fn route_traffic_and_newer_keys_survive_the_dump() {
        let text = r#"
[runtime]
engine = "epoll"
[limits]
min_send_rate = "2KiB"
[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
proxy_protocol = true
proxy_protocol_from = ["10.0.0.0/8"]
max_connections_per_ip = 10
[[routes]]
listener = "web"
path = "/api/"
upstream = "app"
client_max_body_size = "1MiB"
strip_prefix = "/api"
rewrite_prefix = "/v2"
request_headers = { set = { "X-A" = "$host and $$1" }, add = { "X-B" = "b" }, remove = ["X-C"] }
[[routes]]
listener = "web"
path = "/old"
return = { status = 301, location = "https://example.com$request_uri" }
[upstreams.app]
sticky = { cookie = "s", samesite = "strict", secure = true }
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
"#;
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let dump = c.dump();
        let again = Config::parse(&dump).unwrap_or_else(|e| panic!("{e}\n{dump}"));
        assert_eq!(again.dump(), dump);
        for key in [
            "engine = \"epoll\"",
            "min_send_rate = \"2KiB\"",
            "max_connections_per_ip = 10",
            "client_max_body_size = \"1MiB\"",
            "strip_prefix = \"/api\"",
            "X-A = \"$host and $$1\"",
            "location = \"https://example.com$request_uri\"",
            "samesite = \"strict\"",
        ] {
            assert!(dump.contains(key), "{key} not in\n{dump}");
        }
    }
}
