//! `/metrics` end to end: known traffic through the real binary, then exact counter values and
//! server states in a scrape read with a Prometheus text parser (and `promtool check metrics`
//! when promtool is installed).

mod support;

use prometheus_parse::{Sample, Scrape, Value};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use support::*;

/// An address nothing listens on (bound, then closed): connections are refused.
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn scrape(rl: &Ringlb) -> (String, Scrape) {
    let r = rl.admin_get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse");
    (text, parsed)
}

/// The one sample of `metric` whose labels are exactly `labels`.
fn sample<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> &'a Sample {
    let found: Vec<&Sample> = s
        .samples
        .iter()
        .filter(|x| {
            x.metric == metric
                && x.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    found[0]
}

fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(s, metric, labels).value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric}: not a scalar: {other:?}"),
    }
}

/// Observations in a histogram (its `+Inf` bucket).
fn hist_count(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(s, metric, labels).value {
        Value::Histogram(b) => {
            let inf = b.iter().find(|c| c.less_than.is_infinite()).expect("+Inf");
            assert!(b.windows(2).all(|w| w[0].count <= w[1].count), "cumulative");
            inf.count
        }
        other => panic!("{metric}: not a histogram: {other:?}"),
    }
}

/// Client bytes on one listener, counted on our side of the socket.
#[derive(Default)]
struct Bytes {
    sent: u64,
    received: u64,
}

fn get(c: &mut Client, path: &str, close: bool, b: &mut Bytes) -> Response {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{conn}\r\n");
    c.send(req.as_bytes());
    b.sent += req.len() as u64;
    let r = c.response();
    b.received += (r.head.len() + r.body.len()) as u64;
    r
}

#[test]
fn scrape_counts_known_traffic() {
    let ok = Backend::start("ok", &["--no-pin"]);
    let err = Backend::start("err", &["--no-pin"]);
    let retry_ok = Backend::start("retry", &["--no-pin"]);
    let config = format!(
        r#"
[runtime]
workers = 1
shutdown_grace = "2s"
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "http"
listen = "127.0.0.1:0"
[[listeners]]
name = "side"
listen = "127.0.0.1:0"
[[routes]]
listener = "http"
path = "/"
upstream = "ok"
[[routes]]
listener = "http"
path = "/status/502"
upstream = "err"
[[routes]]
listener = "http"
path = "/dead"
upstream = "dead"
[[routes]]
listener = "http"
path = "/retry"
upstream = "retry"
[[routes]]
listener = "side"
path = "/only"
upstream = "ok"
[upstreams.ok]
[[upstreams.ok.servers]]
addr = "{}"
name = "ok-1"
[upstreams.err]
[[upstreams.err.servers]]
addr = "{}"
name = "err-1"
[upstreams.dead]
[[upstreams.dead.servers]]
addr = "{}"
name = "dead-1"
[upstreams.retry]
[[upstreams.retry.servers]]
addr = "{}"
name = "retry-dead"
[[upstreams.retry.servers]]
addr = "{}"
name = "retry-ok"
"#,
        ok.addr,
        err.addr,
        closed_port(),
        closed_port(),
        retry_ok.addr
    );
    let rl = Ringlb::start(&config);
    let (http, side) = (rl.listeners[0], rl.listeners[1]);
    let mut bytes = Bytes::default();

    // 100 × 200 on one keep-alive connection, kept open for the scrape.
    let mut a = Client::connect(http);
    for _ in 0..100 {
        assert_eq!(get(&mut a, "/echo", false, &mut bytes).status, 200);
    }
    // 10 × 502 from the backend.
    {
        let mut b = Client::connect(http);
        for _ in 0..10 {
            assert_eq!(get(&mut b, "/status/502", false, &mut bytes).status, 502);
        }
    }
    // A server that refuses connections: 502 once (it is then marked down), then 503.
    for want in [502, 503, 503] {
        let mut c = Client::connect(http);
        assert_eq!(get(&mut c, "/dead", true, &mut bytes).status, want);
    }
    // Two servers, one refusing: the one failed attempt is retried on the other.
    {
        let mut d = Client::connect(http);
        for _ in 0..4 {
            let r = get(&mut d, "/retry/x", false, &mut bytes);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-backend"), Some("retry"));
        }
    }
    // No route on the second listener: 404.
    let mut side_bytes = Bytes::default();
    {
        let mut e = Client::connect(side);
        assert_eq!(get(&mut e, "/nope", true, &mut side_bytes).status, 404);
    }

    // Closed connections are noticed asynchronously: wait until only `a` is open.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (text, s) = loop {
        let (text, s) = scrape(&rl);
        let active = value(&s, "ringlb_connections_active", &[("listener", "http")]);
        let side_active = value(&s, "ringlb_connections_active", &[("listener", "side")]);
        if (active == 1.0 && side_active == 0.0) || Instant::now() > deadline {
            break (text, s);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(a);

    let req = |l: &str, u: &str, srv: &str, class: &str| {
        value(
            &s,
            "ringlb_requests_total",
            &[
                ("listener", l),
                ("upstream", u),
                ("server", srv),
                ("class", class),
            ],
        )
    };
    assert_eq!(req("http", "ok", "ok-1", "2xx"), 100.0);
    assert_eq!(req("http", "ok", "ok-1", "5xx"), 0.0);
    assert_eq!(req("http", "err", "err-1", "5xx"), 10.0);
    assert_eq!(req("http", "dead", "dead-1", "5xx"), 1.0);
    assert_eq!(req("http", "dead", "", "5xx"), 2.0);
    assert_eq!(req("http", "retry", "retry-ok", "2xx"), 4.0);
    assert_eq!(req("http", "retry", "retry-dead", "2xx"), 0.0);
    assert_eq!(req("side", "", "", "4xx"), 1.0);
    assert_eq!(req("http", "", "", "4xx"), 0.0);
    let total: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "ringlb_requests_total")
        .map(|x| match x.value {
            Value::Counter(v) => v,
            _ => panic!("requests_total must be a counter"),
        })
        .sum();
    assert_eq!(total, 118.0, "every request counted once");

    let code = |u: &str, srv: &str, code: &str| {
        value(
            &s,
            "ringlb_responses_5xx_total",
            &[
                ("listener", "http"),
                ("upstream", u),
                ("server", srv),
                ("code", code),
            ],
        )
    };
    assert_eq!(code("err", "err-1", "502"), 10.0);
    assert_eq!(code("dead", "dead-1", "502"), 1.0);
    assert_eq!(code("dead", "", "503"), 2.0);
    assert!(
        !text.contains("ringlb_responses_5xx_total{listener=\"http\",upstream=\"ok\""),
        "5xx codes never seen are not rendered"
    );

    let dur = |l: &str, u: &str| {
        hist_count(
            &s,
            "ringlb_request_duration_seconds",
            &[("listener", l), ("upstream", u)],
        )
    };
    assert_eq!(dur("http", "ok"), 100.0);
    assert_eq!(dur("http", "err"), 10.0);
    assert_eq!(dur("http", "dead"), 3.0);
    assert_eq!(dur("http", "retry"), 4.0);
    assert_eq!(dur("http", ""), 0.0);
    assert_eq!(dur("side", ""), 1.0);
    let up = |u: &str| {
        hist_count(
            &s,
            "ringlb_upstream_response_duration_seconds",
            &[("upstream", u)],
        )
    };
    assert_eq!(
        (up("ok"), up("err"), up("dead"), up("retry")),
        (100.0, 10.0, 0.0, 4.0)
    );
    let by_server = |u: &str, srv: &str| {
        hist_count(
            &s,
            "ringlb_server_response_duration_seconds",
            &[("upstream", u), ("server", srv)],
        )
    };
    assert_eq!(
        (
            by_server("ok", "ok-1"),
            by_server("retry", "retry-ok"),
            by_server("retry", "retry-dead")
        ),
        (100.0, 4.0, 0.0)
    );
    assert_eq!(
        value(
            &s,
            "ringlb_upstream_response_duration_seconds_count",
            &[("upstream", "ok")]
        ),
        100.0
    );

    let http_l = [("listener", "http")];
    let side_l = [("listener", "side")];
    assert_eq!(value(&s, "ringlb_connections_total", &http_l), 6.0);
    assert_eq!(value(&s, "ringlb_connections_total", &side_l), 1.0);
    assert_eq!(value(&s, "ringlb_connections_active", &http_l), 1.0);
    assert_eq!(value(&s, "ringlb_connections_active", &side_l), 0.0);
    assert_eq!(
        value(&s, "ringlb_received_bytes_total", &http_l),
        bytes.sent as f64
    );
    assert_eq!(
        value(&s, "ringlb_sent_bytes_total", &http_l),
        bytes.received as f64
    );
    assert_eq!(
        value(&s, "ringlb_sent_bytes_total", &side_l),
        side_bytes.received as f64
    );

    let conns = |which: &str, u: &str, srv: &str| {
        value(
            &s,
            &format!("ringlb_upstream_connections_{which}_total"),
            &[("upstream", u), ("server", srv)],
        )
    };
    assert_eq!(conns("opened", "ok", "ok-1"), 1.0);
    assert_eq!(conns("reused", "ok", "ok-1"), 99.0);
    assert_eq!(
        conns("opened", "err", "err-1") + conns("reused", "err", "err-1"),
        10.0
    );
    assert_eq!(conns("opened", "retry", "retry-ok"), 1.0);
    assert_eq!(conns("reused", "retry", "retry-ok"), 3.0);
    assert_eq!(conns("opened", "dead", "dead-1"), 0.0);
    assert_eq!(conns("opened", "retry", "retry-dead"), 0.0);
    let retries = |u: &str| value(&s, "ringlb_upstream_retries_total", &[("upstream", u)]);
    assert_eq!(
        (retries("retry"), retries("ok"), retries("dead")),
        (1.0, 0.0, 0.0)
    );

    let state = |u: &str, srv: &str| -> Vec<&str> {
        ["up", "down", "draining", "maint"]
            .into_iter()
            .filter(|st| {
                value(
                    &s,
                    "ringlb_upstream_server_state",
                    &[("upstream", u), ("server", srv), ("state", st)],
                ) == 1.0
            })
            .collect()
    };
    assert_eq!(state("ok", "ok-1"), ["up"]);
    assert_eq!(state("err", "err-1"), ["up"]);
    assert_eq!(state("dead", "dead-1"), ["down"]);
    assert_eq!(state("retry", "retry-dead"), ["down"]);
    assert_eq!(state("retry", "retry-ok"), ["up"]);
    let usable = |u: &str| value(&s, "ringlb_upstream_usable_servers", &[("upstream", u)]);
    assert_eq!(
        (usable("ok"), usable("dead"), usable("retry")),
        (1.0, 0.0, 1.0)
    );
    assert_eq!(
        value(
            &s,
            "ringlb_upstream_server_active_requests",
            &[("upstream", "ok"), ("server", "ok-1")]
        ),
        0.0
    );

    assert_eq!(value(&s, "ringlb_workers", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "ringlb_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let start = value(&s, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 600.0, "{start} vs {now}");
    assert_eq!(value(&s, "ringlb_queue_length", &[("upstream", "ok")]), 0.0);
    assert_eq!(
        value(
            &s,
            "ringlb_health_checks_total",
            &[("upstream", "ok"), ("server", "ok-1"), ("result", "fail")]
        ),
        0.0
    );
    assert_eq!(value(&s, "ringlb_config_last_reload_successful", &[]), 1.0);

    promtool_check(&text);
}

#[test]
fn metrics_can_be_switched_off() {
    let b = Backend::start("b", &["--no-pin"]);
    let rl = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[metrics]\nenabled = false\n",
    ));
    assert_eq!(rl.get("/").status, 200);
    let r = rl.admin_get("/metrics");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("enabled = false"), "{}", r.text());
}

/// Metric names (`ringlb_…`, `process_…`) in `text`, with histogram suffixes removed.
fn metric_names(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let starts = (rest.starts_with(b"ringlb_") || rest.starts_with(b"process_"))
            && (i == 0 || !word(b[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let len = rest.iter().position(|&c| !word(c)).unwrap_or(rest.len());
        let name = String::from_utf8_lossy(&rest[..len]).into_owned();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_string();
        out.push(base);
        i += len;
    }
    out
}

fn monitoring(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning/monitoring")
        .join(file)
}

/// The alert rules, their tests, the dashboard and the README name only metrics ringlb
/// exports; with promtool installed, the rules pass `check` and `test`, and every dashboard
/// query parses.
#[test]
fn monitoring_files_use_real_metric_names() {
    let known: Vec<&str> = ringlb::metrics::names::ALL.iter().map(|f| f.name).collect();
    let dashboard = std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| collect(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&json, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    for file in [
        "alerts.yml",
        "alerts.test.yml",
        "README.md",
        "grafana-dashboard.json",
    ] {
        let text = std::fs::read_to_string(monitoring(file)).unwrap();
        let names = metric_names(&text);
        assert!(!names.is_empty(), "{file}");
        for n in names {
            assert!(known.contains(&n.as_str()), "{file}: {n} is not exported");
        }
    }
    // The README lists every metric.
    let readme = std::fs::read_to_string(monitoring("README.md")).unwrap();
    for n in &known {
        assert!(
            readme.contains(&format!("`{n}`")),
            "README.md does not list {n}"
        );
    }

    let promtool = |args: &[&str]| {
        std::process::Command::new("promtool")
            .args(args)
            .current_dir(monitoring(""))
            .output()
    };
    let Ok(out) = promtool(&["check", "rules", "alerts.yml"]) else {
        no_promtool("rule checks");
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = promtool(&["test", "rules", "alerts.test.yml"]).unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Each dashboard query as a recording rule, Grafana's variables replaced.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let path = temp_path("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    let out = promtool(&["check", "rules", path.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "dashboard queries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every monotonic sample of a scrape by series (`metric{sorted labels}`): counters, histogram
/// buckets (`le=...`), and the `_sum`/`_count` of histograms.
fn monotonic(s: &Scrape) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for x in &s.samples {
        let mut labels: Vec<String> = x.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        labels.sort();
        let key = format!("{}{{{}}}", x.metric, labels.join(","));
        match &x.value {
            Value::Counter(v) => {
                out.insert(key, *v);
            }
            Value::Histogram(buckets) => {
                for b in buckets {
                    out.insert(format!("{key}le={}", b.less_than), b.count);
                }
            }
            Value::Untyped(v) if x.metric.ends_with("_sum") || x.metric.ends_with("_count") => {
                out.insert(key, *v);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn counters_never_go_back_across_a_reload() {
    let b: Vec<Backend> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let upstream =
        "health_check = { path = \"/health\", interval = \"100ms\", timeout = \"100ms\" }";
    let text = |servers: &[String]| {
        config(servers, upstream, "[metrics]\nenabled = true\n")
            .replace("workers = 1", "workers = 2")
    };
    let two = [server(b[0].addr), server(b[1].addr)];
    let lb = Ringlb::start(&text(&two));
    let traffic = |n: usize| {
        for i in 0..n {
            let r = lb.get(&format!("/size/{i}"));
            assert_eq!(r.status, 200);
        }
        // A few misses, so 4xx and unrouted series count too.
        let mut c = Client::connect(lb.addr());
        c.send(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(c.response().status, 400);
    };
    // One connection opened before the reload and used after it: it switches generations.
    let mut kept = Client::connect(lb.addr());
    kept.send(b"GET /size/5 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(kept.response().status, 200);
    traffic(40);
    std::thread::sleep(Duration::from_millis(300)); // a few health checks
    let (_, first) = scrape(&lb);
    let before = monotonic(&first);

    // b1 weighs more, b3 joins: a new registry for a new layout.
    let three = [
        format!("{}\nweight = 4", server(b[0].addr)),
        server(b[1].addr),
        server(b[2].addr),
    ];
    std::fs::write(&lb.config_path, support::with_test_engine(&text(&three))).unwrap();
    lb.proc.signal(libc::SIGHUP);
    lb.proc
        .wait_line(Duration::from_secs(5), |l| l.contains("reloaded"))
        .expect("reload logged");
    kept.send(b"GET /size/6 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(kept.response().status, 200);
    drop(kept);
    traffic(12);
    let (text2, second) = scrape(&lb);
    let after = monotonic(&second);

    let mut common = 0;
    for (series, v) in &before {
        if let Some(w) = after.get(series) {
            common += 1;
            assert!(
                w >= v,
                "{series}: {v} before the reload, {w} after\n{text2}"
            );
        }
    }
    assert!(common > 100, "only {common} series in both scrapes");
    // Series that stay carry their counts; new ones start from zero.
    let two_xx = |s: &Scrape, name: &str| {
        value(
            s,
            "ringlb_requests_total",
            &[
                ("listener", "http"),
                ("upstream", "app"),
                ("server", name),
                ("class", "2xx"),
            ],
        )
    };
    let (m2, m3) = (b[1].addr.to_string(), b[2].addr.to_string());
    assert!(two_xx(&second, &m2) >= two_xx(&first, &m2));
    assert!(two_xx(&second, &m3) >= 1.0);
    let conns = |s: &Scrape| value(s, "ringlb_connections_total", &[("listener", "http")]);
    assert!(conns(&second) >= conns(&first) + 12.0);
    assert_eq!(
        value(
            &second,
            "ringlb_config_reloads_total",
            &[("result", "success")]
        ),
        1.0
    );
}

/// A self-signed certificate for `name` valid until `not_after` (written to temp files):
/// (cert path, key path).
fn certificate(name: &str, not_after: (i32, u8, u8)) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (temp_path("cert.pem"), temp_path("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// The expiry gauge shows each listener certificate's and each upstream client certificate's
/// notAfter, and a reload that brings renewed files shows the new dates.
#[test]
fn certificate_expiry_gauge_shows_not_after_and_follows_reloads() {
    let b = Backend::start("b", &["--no-pin"]);
    let (site, site_key) = certificate("site.test", (2031, 5, 17));
    let (client, client_key) = certificate("ringlb-client.test", (2032, 2, 29));
    let text = format!(
        "[runtime]\nworkers = 1\nshutdown_grace = \"2s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\n\
         tls = {{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}\n\
         [[routes]]\nlistener = \"https\"\nupstream = \"app\"\n\
         [upstreams.app]\n\
         tls = {{ verify = false, client_cert = \"{}\", client_key = \"{}\" }}\n\
         [[upstreams.app.servers]]\naddr = \"{}\"\n",
        site.display(),
        site_key.display(),
        client.display(),
        client_key.display(),
        b.addr
    );
    let lb = Ringlb::start(&text);
    let expiry = |s: &Scrape, listener: &str, upstream: &str, file: &str, subject: &str| {
        value(
            s,
            "ringlb_tls_certificate_expiration_timestamp_seconds",
            &[
                ("listener", listener),
                ("upstream", upstream),
                ("file", file),
                ("subject", subject),
            ],
        )
    };
    let (site_file, client_file) = (site.display().to_string(), client.display().to_string());
    let (text1, s) = scrape(&lb);
    // 2031-05-17T00:00:00Z and 2032-02-29T00:00:00Z.
    assert_eq!(
        expiry(&s, "https", "", &site_file, "site.test"),
        1936742400.0
    );
    assert_eq!(
        expiry(&s, "", "app", &client_file, "ringlb-client.test"),
        1961625600.0
    );
    promtool_check(&text1);

    // Renewed in place: the same files, a later date.
    let (renewed, renewed_key) = certificate("site.test", (2033, 1, 2));
    std::fs::copy(&renewed, &site).unwrap();
    std::fs::copy(&renewed_key, &site_key).unwrap();
    lb.proc.signal(libc::SIGHUP);
    lb.proc
        .wait_line(Duration::from_secs(5), |l| l.contains("reloaded"))
        .expect("reload logged");
    let (_, s) = scrape(&lb);
    // 2033-01-02T00:00:00Z.
    assert_eq!(
        expiry(&s, "https", "", &site_file, "site.test"),
        1988236800.0
    );
    for f in [site, site_key, client, client_key, renewed, renewed_key] {
        let _ = std::fs::remove_file(f);
    }
}
