use super::*;

const MINIMAL: &str = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"
[[routes]]
listener = "http"
upstream = "app"
[upstreams.app]
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
"#;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.lines(),
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(
        c.admin.listen,
        AdminListen::Tcp("127.0.0.1:9901".parse().unwrap())
    );
    assert!(c.admin.ready_requires.is_empty());
    assert_eq!(c.admin.max_connections, 64);
    assert_eq!(c.runtime.workers, Workers::Auto);
    assert_eq!(c.runtime.engine, Engine::Auto);
    assert_eq!(c.timeouts.keepalive, Duration::from_secs(75));
    assert_eq!(c.timeouts.upstream_connect, Duration::from_secs(5));
    assert_eq!(c.upstreams[0].algorithm, Algorithm::RoundRobin);
    let s = &c.upstreams[0].servers[0];
    assert_eq!((s.weight, s.backup, s.keepalive), (1, false, 32));
    assert_eq!(s.name, "127.0.0.1:9001");
    assert_eq!(c.limits.request.max_head, 16 << 10);
}

#[test]
fn runtime_engine_takes_three_values_and_says_glommio_is_gone() {
    for (word, engine) in [
        ("auto", Engine::Auto),
        ("io_uring", Engine::IoUring),
        ("epoll", Engine::Epoll),
    ] {
        let text = format!("[runtime]\nengine = \"{word}\"\n{MINIMAL}");
        assert_eq!(Config::parse(&text).unwrap().runtime.engine, engine);
    }
    let p = problems(&format!("[runtime]\nengine = \"kqueue\"\n{MINIMAL}"));
    assert_eq!(
        p,
        ["runtime.engine: must be \"auto\", \"io_uring\" or \"epoll\", not \"kqueue\""]
    );
    let p = problems(&format!("[runtime]\nengine = \"glommio\"\n{MINIMAL}"));
    assert_eq!(
        p,
        [
            "runtime.engine: \"glommio\" is no longer built in (ringlb's own io_uring engine \
          replaced it); use \"auto\", \"io_uring\" or \"epoll\""
        ]
    );
}

#[test]
fn example_config_is_valid() {
    let text = include_str!("../../ringlb.example.toml");
    let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.server_count(), 3);
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = r#"
[runtime]
workers = 0
shutdown_grace = "soon"
[timeouts]
upstream_read = "0s"
[[listeners]]
name = "http"
listen = "nowhere"
[[routes]]
listener = "nope"
upstream = "missing"
host = "bad host"
path = "x"
[upstreams.app]
balance = "fastest"
[[upstreams.app.servers]]
addr = "127.0.0.1:9001"
weight = 0
[[upstreams.app.servers]]
addr = "not-an-addr"
"#;
    let p = problems(text);
    for expected in [
        "runtime.workers: ",
        "runtime.shutdown_grace: invalid duration",
        "timeouts.upstream_read: must be greater than zero",
        "listeners[0].listen: ",
        "routes[0].listener: no listener named \"nope\"",
        "routes[0].upstream: no upstream named \"missing\"",
        "routes[0].host: ",
        "routes[0].path: ",
        "upstreams.app.balance: unknown algorithm \"fastest\"",
        "upstreams.app.servers[0].weight: must be 1..=1000",
        "upstreams.app.servers[1].addr: ",
    ] {
        assert!(
            p.iter().any(|l| l.starts_with(expected)),
            "missing {expected:?} in {p:#?}"
        );
    }
}

#[test]
fn unknown_keys_are_errors() {
    let text = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nwieght = 3");
    let p = problems(&text);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("upstreams.app.wieght: unknown key `wieght`"),
        "{p:?}"
    );
    // A server's key is close to a known one: a suggestion.
    let text = MINIMAL.replace("addr = ", "wieght = 3\naddr = ");
    assert_eq!(
        problems(&text),
        ["upstreams.app.servers[0].wieght: unknown key `wieght`; did you mean `weight`?"]
    );
}

#[test]
fn duplicates_are_errors() {
    let text = format!(
        "{MINIMAL}[[upstreams.app.servers]]\naddr = \"127.0.0.1:9001\"\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:8081\"\n"
    );
    let p = problems(&text);
    assert!(p.iter().any(|l| l.starts_with("upstreams.app.servers[1].addr: 127.0.0.1:9001 is listed twice")), "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.starts_with("listeners[1].name: \"http\" is used twice")),
        "{p:?}"
    );
}

#[test]
fn only_backups_is_an_error() {
    let text = MINIMAL.replace(
        "addr = \"127.0.0.1:9001\"",
        "addr = \"127.0.0.1:9001\"\nbackup = true",
    );
    assert!(problems(&text)
        .iter()
        .any(|l| l.contains("every server is a backup")));
}

#[test]
fn hash_needs_a_valid_key() {
    let base = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nbalance = \"hash\"");
    assert!(problems(&base)
        .iter()
        .any(|l| l.starts_with("upstreams.app.key: required")));
    let bad = base.replace("balance = \"hash\"", "balance = \"hash\"\nkey = \"$uri\"");
    assert!(problems(&bad)
        .iter()
        .any(|l| l.starts_with("upstreams.app.key: ")));
    let good = base.replace(
        "balance = \"hash\"",
        "balance = \"hash\"\nkey = \"cookie:sid\"\nconsistent = true\nbounded_load = 1.25",
    );
    let c = Config::parse(&good).unwrap();
    assert_eq!(
        c.upstreams[0].algorithm,
        Algorithm::Hash {
            key: crate::balance::HashKey::Cookie(b"sid".as_slice().into()),
            consistent: true,
            bounded_load: Some(1.25)
        }
    );
    let stray = MINIMAL.replace("[upstreams.app]", "[upstreams.app]\nkey = \"$request_uri\"");
    assert!(problems(&stray)
        .iter()
        .any(|l| l.contains("only applies to balance = \"hash\"")));
}

#[test]
fn routes_match_most_specific_first() {
    let text = r#"
[[listeners]]
name = "http"
listen = "127.0.0.1:8080"
[[routes]]
listener = "http"
upstream = "any"
[[routes]]
listener = "http"
host = "*.example.com"
upstream = "wild"
[[routes]]
listener = "http"
host = "api.example.com"
path = "/v2/"
upstream = "v2"
[[routes]]
listener = "http"
host = "api.example.com"
upstream = "api"
[upstreams.any]
servers = [{ addr = "127.0.0.1:1" }]
[upstreams.wild]
servers = [{ addr = "127.0.0.1:2" }]
[upstreams.api]
servers = [{ addr = "127.0.0.1:3" }]
[upstreams.v2]
servers = [{ addr = "127.0.0.1:4" }]
"#;
    let c = Config::parse(text).unwrap();
    let name = |host: &[u8], path: &[u8]| {
        let id = c.route(ListenerId(0), host, path).unwrap();
        c.upstreams[id.0 as usize].name.clone()
    };
    assert_eq!(name(b"API.example.com", b"/v2/x"), "v2");
    assert_eq!(name(b"api.example.com", b"/v1"), "api");
    assert_eq!(name(b"www.example.com", b"/"), "wild");
    assert_eq!(name(b"example.com", b"/"), "any");
    assert_eq!(name(b"other.org", b"/"), "any");
}

#[test]
fn sizes_and_durations_parse() {
    let text = format!(
        "[limits]\nmax_request_head = \"32KiB\"\nmax_request_line = \"4KiB\"\n\
         [timeouts]\nclient_header = \"250ms\"\n{MINIMAL}"
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.limits.request.max_head, 32 << 10);
    assert_eq!(c.limits.request.max_request_line, 4 << 10);
    assert_eq!(c.timeouts.client_header, Duration::from_millis(250));
    let bad = format!("[limits]\nmax_request_head = \"lots\"\n{MINIMAL}");
    assert!(problems(&bad)[0].starts_with("limits.max_request_head: invalid size"));
}

/// Every spelling the config took before sizes went through parse-size still means the same,
/// nginx's one-letter suffixes stay binary, and a bad size is a problem naming its field.
#[test]
fn size_spellings() {
    use super::validate::parse_size;
    for (text, bytes) in [
        ("512", 512),
        ("512b", 512),
        ("512 B", 512),
        ("1k", 1 << 10),
        ("1K", 1 << 10),
        ("16 k", 16 << 10),
        ("1KiB", 1 << 10),
        ("1kib", 1 << 10),
        ("1KB", 1000),
        ("10m", 10 << 20),
        ("1MiB", 1 << 20),
        ("2MB", 2_000_000),
        ("1g", 1 << 30),
        ("1GiB", 1 << 30),
        ("1.5k", 1536),
        ("0", 0),
    ] {
        assert_eq!(parse_size(text), Some(bytes), "{text}");
    }
    for bad in ["", "k", "lots", "1kk", "-1", "1 KiB B", "1 parsec"] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
    let bad = format!("[limits]\nmax_request_line = \"4kk\"\n{MINIMAL}");
    assert_eq!(
        problems(&bad)[0],
        "limits.max_request_line: invalid size \"4kk\"; write e.g. \"16KiB\""
    );
}

/// The config fuzz target's corpus, replayed: parsing never panics, and a refused file
/// reports at least one non-empty problem.
#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/fuzz_config");
    let entries = std::fs::read_dir(&dir).expect("fuzz/corpus/fuzz_config exists");
    let mut n = 0;
    for e in entries {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Err(err) = Config::parse(text) {
                let lines = err.lines();
                assert!(!lines.is_empty() && lines.iter().all(|l| !l.is_empty()));
            }
        }
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}

#[test]
fn access_log_and_metrics_keys() {
    let c = Config::parse(MINIMAL).unwrap();
    assert!(c.metrics.enabled);
    assert_eq!(c.access_log.format, LogFormat::Off);
    assert_eq!(c.access_log.target, LogTarget::Stdout);
    assert_eq!(&*c.access_log.request_id_header, b"x-request-id");

    let text = format!(
        "{MINIMAL}\n[metrics]\nenabled = false\n[access_log]\nformat = \"json\"\n\
         path = \"/var/log/ringlb/access.log\"\nrequest_id_header = \"X-Trace\"\n"
    );
    let c = Config::parse(&text).unwrap();
    assert!(!c.metrics.enabled);
    assert_eq!(c.access_log.format, LogFormat::Json);
    assert_eq!(
        c.access_log.target,
        LogTarget::File("/var/log/ringlb/access.log".into())
    );
    assert_eq!(&*c.access_log.request_id_header, b"x-trace");

    let bad = format!(
        "{MINIMAL}\n[access_log]\nformat = \"combined\"\nrequest_id_header = \"X Id\"\nfoo = 1\n"
    );
    // The unknown key and the bad values, all in one run.
    let p = problems(&bad);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].starts_with("access_log.foo: unknown key"), "{p:?}");
    let bad =
        format!("{MINIMAL}\n[access_log]\nformat = \"combined\"\nrequest_id_header = \"X Id\"\n");
    let p = problems(&bad);
    assert!(
        p.iter().any(|l| l.starts_with("access_log.format:")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("access_log.request_id_header:")),
        "{p:?}"
    );
}

#[test]
fn route_upgrades_default_to_websocket_and_are_validated() {
    let c = Config::parse(MINIMAL).unwrap();
    let names: Vec<&[u8]> = c.routes[0].upgrade.names().collect();
    assert_eq!(names, [&b"websocket"[..]]);
    let with = |list: &str| {
        MINIMAL.replace(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\nupgrade = {list}\n"),
        )
    };
    let c = Config::parse(&with("[\"WebSocket\", \"h2c\"]")).unwrap();
    assert!(c.routes[0].upgrade.allows(b"h2c, websocket"));
    let none = Config::parse(&with("[]")).unwrap();
    assert!(!none.routes[0].upgrade.allows(b"websocket"));
    assert_eq!(
        problems(&with("[\"websocket\", \"h2c/1\", \"a b\", \"\", \"WEBSOCKET\"]")),
        [
            "routes[0].upgrade[1]: \"h2c/1\" is not a protocol name (a token without '/' or spaces, e.g. \"websocket\")",
            "routes[0].upgrade[2]: \"a b\" is not a protocol name (a token without '/' or spaces, e.g. \"websocket\")",
            "routes[0].upgrade[3]: \"\" is not a protocol name (a token without '/' or spaces, e.g. \"websocket\")",
            "routes[0].upgrade[4]: \"WEBSOCKET\" is listed twice",
        ]
    );
    assert!(Config::parse(&with("\"websocket\"")).is_err());
}

#[test]
fn via_is_the_host_name_a_given_name_or_off() {
    let c = Config::parse(MINIMAL).unwrap();
    let via = c.proxy.via.expect("Via on by default");
    assert!(crate::http1::is_via_name(&via));
    let with = |v: &str| format!("[proxy]\nvia = {v}\n{MINIMAL}");
    let named = Config::parse(&with("\"lb-1.example\"")).unwrap();
    assert_eq!(named.proxy.via.as_deref(), Some(&b"lb-1.example"[..]));
    assert!(Config::parse(&with("false")).unwrap().proxy.via.is_none());
    assert_eq!(Config::parse(&with("true")).unwrap().proxy.via, Some(via));
    let bad = problems(&with("\"two words\""));
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].starts_with("proxy.via: \"two words\" is not a Via name"),
        "{bad:?}"
    );
    assert!(Config::parse(&with("3")).is_err());
    assert!(Config::parse(&format!("[proxy]\nvai = \"x\"\n{MINIMAL}")).is_err());
}

#[test]
fn sticky_samesite_secure_and_secret() {
    let with = |sticky: &str| {
        MINIMAL.replace(
            "[upstreams.app]",
            &format!("[upstreams.app]\nsticky = {{ {sticky} }}"),
        )
    };
    let p = problems(&with("cookie = \"s\", samesite = \"none\""));
    assert!(
        p.iter()
            .any(|l| l.contains("sticky.samesite") && l.contains("secure = true")),
        "{p:?}"
    );
    assert!(problems(&with("cookie = \"s\", samesite = \"none\", secure = true")).is_empty());
    let p = problems(&with("cookie = \"s\", samesite = \"loose\""));
    assert!(p.iter().any(|l| l.contains("sticky.samesite")), "{p:?}");
    let p = problems(&with("cookie = \"s\", secret = \"short\""));
    assert!(p.iter().any(|l| l.contains("sticky.secret")), "{p:?}");
    let p = problems(&MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nproxy_protocol_from = [\"10.0.0.0/8\"]",
    ));
    assert!(
        p.iter().any(|l| l.contains("needs proxy_protocol")),
        "{p:?}"
    );

    // Secure by default on TLS connections only, unless set.
    let c = Config::parse(&with("cookie = \"s\"")).unwrap();
    let st = c.upstreams[0].sticky.as_ref().unwrap();
    let id = &c.upstreams[0].servers[0].cookie;
    let cookie = |tls| {
        let mut out = Vec::new();
        st.set_cookie(id, 1_700_000_000, tls, &mut out);
        String::from_utf8(out).unwrap()
    };
    assert!(
        cookie(true).ends_with("; HttpOnly; SameSite=Lax; Secure"),
        "{}",
        cookie(true)
    );
    assert!(
        cookie(false).ends_with("; HttpOnly; SameSite=Lax"),
        "{}",
        cookie(false)
    );
    let c = Config::parse(&with("cookie = \"s\", secure = false")).unwrap();
    let st = c.upstreams[0].sticky.as_ref().unwrap();
    let mut out = Vec::new();
    st.set_cookie(id, 1, true, &mut out);
    assert!(!String::from_utf8_lossy(&out).contains("Secure"));
}

#[test]
fn min_send_rate_defaults_and_turns_off() {
    assert_eq!(
        Config::parse(MINIMAL).unwrap().limits.min_send_rate,
        Some(1024)
    );
    let off = format!("[limits]\nmin_send_rate = \"0\"\n{MINIMAL}");
    assert_eq!(Config::parse(&off).unwrap().limits.min_send_rate, None);
    let bad = format!("[limits]\nmin_send_rate = \"fast\"\n{MINIMAL}");
    assert!(problems(&bad)
        .iter()
        .any(|l| l.contains("limits.min_send_rate")));
}

#[test]
fn a_short_health_check_interval_alone_is_valid() {
    let text = MINIMAL.replace(
        "[upstreams.app]",
        "[upstreams.app]\nhealth_check = { interval = \"200ms\" }",
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let h = c.upstreams[0].health_check.as_ref().expect("health check");
    assert_eq!(h.timeout, Duration::from_millis(200));
    let text = MINIMAL.replace(
        "[upstreams.app]",
        "[upstreams.app]\nhealth_check = { interval = \"10s\" }",
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let h = c.upstreams[0].health_check.as_ref().expect("health check");
    assert_eq!(h.timeout, Duration::from_secs(1));
    // An explicit timeout longer than the interval is still refused.
    let text = MINIMAL.replace(
        "[upstreams.app]",
        "[upstreams.app]\nhealth_check = { interval = \"200ms\", timeout = \"1s\" }",
    );
    assert_eq!(
        problems(&text),
        ["upstreams.app.health_check.timeout: must not exceed interval"]
    );
}

#[test]
fn log_settings_from_the_file() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.log, Log::default());
    assert_eq!(c.log.directive(), "info");
    let text = format!(
        "{MINIMAL}\n[log]\nlevel = \"warn\"\nformat = \"json\"\n\
         modules = {{ \"ringlb::proxy\" = \"debug\", \"ringlb\" = \"error\" }}\n"
    );
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.log.format, LogStyle::Json);
    assert_eq!(c.log.directive(), "warn,ringlb=error,ringlb::proxy=debug");
    let text = format!(
        "{MINIMAL}\n[log]\nlevel = \"loud\"\nformat = \"xml\"\nmodules = {{ \"a b\" = \"info\" }}\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn route_traffic_settings_are_validated() {
    let with = |lines: &str| MINIMAL.replace("upstream = \"app\"\n", lines);
    let c = Config::parse(&with(
        "upstream = \"app\"\nclient_max_body_size = \"1MiB\"\nstrip_prefix = \"/api\"\n\
         request_headers = { set = { \"X-A\" = \"$host\" }, remove = [\"X-B\"] }\n",
    ))
    .unwrap();
    let t = &c.routes[0].traffic;
    assert_eq!(t.max_body, Some(1 << 20));
    assert!(t.prefix.is_some() && t.request_headers.is_some() && t.answer.is_none());
    // Unlimited by default.
    assert_eq!(
        Config::parse(MINIMAL).unwrap().routes[0].traffic.max_body,
        None
    );

    let p = problems(&with(
        "upstream = \"app\"\nclient_max_body_size = \"lots\"\nrewrite_prefix = \"/v2\"\n\
         request_headers = { set = { \"Content-Length\" = \"1\", \"X-A\" = \"a\\r\\nB: c\", \
         \"X-S\" = \"$server_name\", \"Bad Name\" = \"v\" }, remove = [\"Host\", \"x-a\"] }\n\
         response_headers = { add = { \"Transfer-Encoding\" = \"x\", \"X-V\" = \"$nope\" } }\n",
    ));
    for expected in [
        "routes[0].client_max_body_size: invalid size",
        "routes[0].rewrite_prefix: replaces strip_prefix",
        "routes[0].request_headers.set.Content-Length: \"Content-Length\" is a framing header",
        "routes[0].request_headers.set.X-A: control byte 0x0d",
        "routes[0].request_headers.set.X-S: $server_name",
        "routes[0].request_headers.set.Bad Name: \"Bad Name\" is not a header name",
        "routes[0].request_headers.remove[0]: \"Host\" chose the route",
        "routes[0].request_headers.remove[1]: \"x-a\" is edited twice",
        "routes[0].response_headers.add.Transfer-Encoding: ",
        "routes[0].response_headers.add.X-V: unknown variable $nope",
    ] {
        assert!(
            p.iter().any(|l| l.starts_with(expected)),
            "missing {expected:?} in {p:#?}"
        );
    }
}

#[test]
fn return_routes_have_no_upstream() {
    let with = |lines: &str| MINIMAL.replace("upstream = \"app\"\n", lines);
    let c = Config::parse(&with(
        "return = { status = 301, location = \"https://e.com$request_uri\" }\n",
    ))
    .unwrap();
    assert_eq!(c.routes[0].upstream, None);
    assert_eq!(
        c.routes[0].traffic.answer.as_ref().map(|a| a.status),
        Some(301)
    );
    assert_eq!(
        problems(&with("upstream = \"app\"\nreturn = { status = 204 }\n"))[..1],
        ["routes[0]: has both upstream and return: a return route answers by itself, remove one"]
    );
    assert_eq!(
        problems(&with("path = \"/\"\n"))[..1],
        ["routes[0].upstream: missing: name an upstream (or answer with return)"]
    );
    for (ret, expected) in [
        (
            "{ status = 301 }",
            "routes[0].return.location: a 301 redirect needs a location",
        ),
        (
            "{ status = 200, location = \"/x\" }",
            "routes[0].return.location: only a redirect (301, 302, 303, 307, 308) has a location",
        ),
        (
            "{ status = 99 }",
            "routes[0].return.status: must be 200..=599",
        ),
        (
            "{ status = 204, body = \"x\" }",
            "routes[0].return.body: a 204 response has no body",
        ),
    ] {
        let p = problems(&with(&format!("return = {ret}\n")));
        assert_eq!(p.first().map(String::as_str), Some(expected), "{ret}");
    }
}

#[test]
fn a_syntax_error_always_says_something() {
    // Found by fuzz_config: a DEL in a comment made the parser's message empty.
    let e = Config::parse("# a comment with a \u{7f} in it\n[runtime]\n").unwrap_err();
    assert!(e.lines().iter().all(|l| !l.trim().is_empty()), "{e:?}");
}
