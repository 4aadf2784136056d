//! The scrape as a whole: control-plane counters and server states rendered from a `Shared`.

use super::names;
use super::render;
use super::{Registry, Scrape};
use crate::config::{Config, ListenerId, ServerId, UpstreamId};
use crate::state::{AdminState, StateTable};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One generation's pieces, as `context::Shared` holds them.
struct Parts {
    config: Config,
    state: StateTable,
    metrics: Registry,
    resolutions: crate::state::Resolutions,
}

impl Parts {
    fn scrape(&self) -> Scrape<'_> {
        Scrape {
            config: &self.config,
            state: &self.state,
            metrics: &self.metrics,
            workers: 2,
            started: std::time::SystemTime::now(),
            certificates: &[],
            resolutions: &self.resolutions,
        }
    }
}

fn shared() -> Parts {
    let config = Config::parse(
        r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:1"
[[routes]]
listener = "web"
upstream = "api"
[upstreams.api]
health_check = { path = "/health" }
[[upstreams.api.servers]]
addr = "127.0.0.1:9001"
name = "a"
[[upstreams.api.servers]]
addr = "127.0.0.1:9002"
name = "b"
[[upstreams.api.servers]]
addr = "127.0.0.1:9003"
name = "c"
[[upstreams.api.servers]]
addr = "127.0.0.1:9004"
name = "d\"q"
"#,
    )
    .unwrap();
    Parts {
        state: StateTable::new(&config, 2),
        metrics: Registry::new(&config, 2),
        config,
        resolutions: Default::default(),
    }
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in\n{text}"
    );
}

#[test]
fn control_plane_counters_and_server_states() {
    let sh = shared();
    let reg = &sh.metrics;
    reg.health_check(ServerId(0), true, Duration::from_millis(2));
    reg.health_check(ServerId(0), true, Duration::from_millis(3));
    reg.health_check(ServerId(1), false, Duration::from_secs(20));
    reg.config_reload(true);
    reg.config_reload(false);
    reg.access_log_error();
    reg.core(0).tls_handshake(ListenerId(0), Ok(()));
    reg.core(1)
        .tls_handshake(ListenerId(0), Err(crate::metrics::TlsFailure::PlainHttp));
    reg.core(0).queue_enter(UpstreamId(0));
    reg.core(1).queue_enter(UpstreamId(0));
    reg.core(1).queue_leave(UpstreamId(0));
    reg.core(1).queue_timeout(UpstreamId(0));
    reg.core(0).conn_opened(ListenerId(0));
    reg.core(1).conn_opened(ListenerId(0));
    reg.core(1).conn_closed(ListenerId(0));
    let st = |i| sh.state.get(ServerId(i));
    st(1).check_up.store(false, Relaxed);
    st(2).set_admin(AdminState::Drain);
    st(3).set_admin(AdminState::Maint);
    st(0).last_check_status.store(200, Relaxed);
    st(0).last_check_ok.store(true, Relaxed);
    st(0).last_check_ms.store(5, Relaxed);
    st(0).last_check_us.store(1500, Relaxed);
    st(0).active.store(7, Relaxed);

    let text = render(&sh.scrape());
    has(&text, "ringlb_workers 2");
    has(
        &text,
        &format!(
            "ringlb_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    );
    has(
        &text,
        "ringlb_health_checks_total{upstream=\"api\",server=\"a\",result=\"pass\"} 2",
    );
    has(
        &text,
        "ringlb_health_checks_total{upstream=\"api\",server=\"b\",result=\"fail\"} 1",
    );
    has(
        &text,
        "ringlb_health_check_duration_seconds_bucket{upstream=\"api\",le=\"0.0025\"} 1",
    );
    has(
        &text,
        "ringlb_health_check_duration_seconds_bucket{upstream=\"api\",le=\"0.005\"} 2",
    );
    has(
        &text,
        "ringlb_health_check_duration_seconds_bucket{upstream=\"api\",le=\"10\"} 2",
    );
    has(
        &text,
        "ringlb_health_check_duration_seconds_count{upstream=\"api\"} 3",
    );
    has(
        &text,
        "ringlb_health_check_duration_seconds_sum{upstream=\"api\"} 20.005",
    );
    has(
        &text,
        "ringlb_health_check_last_status{upstream=\"api\",server=\"a\"} 200",
    );
    has(
        &text,
        "ringlb_health_check_last_success{upstream=\"api\",server=\"a\"} 1",
    );
    has(
        &text,
        "ringlb_health_check_last_success{upstream=\"api\",server=\"b\"} 0",
    );
    has(
        &text,
        "ringlb_health_check_last_duration_seconds{upstream=\"api\",server=\"a\"} 0.0015",
    );
    has(&text, "ringlb_config_reloads_total{result=\"success\"} 1");
    has(&text, "ringlb_config_reloads_total{result=\"failure\"} 1");
    has(&text, "ringlb_config_last_reload_successful 0");
    has(&text, "ringlb_access_log_write_errors_total 1");
    has(&text, "ringlb_tls_handshakes_total{listener=\"web\"} 1");
    has(
        &text,
        "ringlb_tls_handshake_failures_total{listener=\"web\",reason=\"plain_http\"} 1",
    );
    has(&text, "ringlb_queue_length{upstream=\"api\"} 1");
    has(&text, "ringlb_queue_timeouts_total{upstream=\"api\"} 1");
    has(&text, "ringlb_connections_total{listener=\"web\"} 2");
    has(&text, "ringlb_connections_active{listener=\"web\"} 1");
    has(
        &text,
        "ringlb_upstream_server_active_requests{upstream=\"api\",server=\"a\"} 7",
    );
    for (server, state) in [
        ("a", "up"),
        ("b", "down"),
        ("c", "draining"),
        ("d\\\"q", "maint"),
    ] {
        for s in crate::state::Status::ALL.map(|s| s.as_str()) {
            let v = u64::from(s == state);
            has(
                &text,
                &format!(
                    "ringlb_upstream_server_state{{upstream=\"api\",server=\"{server}\",state=\"{s}\"}} {v}"
                ),
            );
        }
    }
    has(&text, "ringlb_upstream_usable_servers{upstream=\"api\"} 1");
    for f in names::ALL {
        assert!(
            text.contains(&format!("# TYPE {} {}\n", f.name, f.kind.as_str())),
            "{}",
            f.name
        );
    }
}

/// Generation `n` of a reload sequence: servers `a` (weight `n`) and `b`; `c` appears in
/// generation 1, `a` and upstream `old` are gone in generation 2.
fn generation(n: u32) -> Config {
    let mut text = String::from(
        "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:1\"\n\
         [[routes]]\nlistener = \"web\"\nupstream = \"api\"\n",
    );
    if n < 2 {
        text.push_str("[[routes]]\nlistener = \"web\"\npath = \"/old\"\nupstream = \"old\"\n");
        text.push_str("[upstreams.old]\n[[upstreams.old.servers]]\naddr = \"127.0.0.1:9009\"\n");
    }
    text.push_str("[upstreams.api]\n");
    if n < 2 {
        text.push_str(&format!(
            "[[upstreams.api.servers]]\naddr = \"127.0.0.1:9001\"\nname = \"a\"\nweight = {}\n",
            n + 1
        ));
    }
    if n >= 1 {
        text.push_str("[[upstreams.api.servers]]\naddr = \"127.0.0.1:9003\"\nname = \"c\"\n");
    }
    text.push_str("[[upstreams.api.servers]]\naddr = \"127.0.0.1:9002\"\nname = \"b\"\n");
    Config::parse(&text).unwrap()
}

fn server_id(c: &Config, name: &str) -> ServerId {
    c.servers().find(|(_, s)| s.name == name).unwrap().1.id
}

fn upstream_id(c: &Config, name: &str) -> UpstreamId {
    UpstreamId(c.upstreams.iter().position(|u| u.name == name).unwrap() as u32)
}

/// One 200 from `server` of `upstream`, counted on `core`.
fn served(reg: &Registry, core: usize, c: &Config, upstream: &str, server: &str) {
    reg.core(core).request(&crate::metrics::Request {
        listener: ListenerId(0),
        upstream: Some(upstream_id(c, upstream)),
        target: crate::metrics::Target::Server(server_id(c, server)),
        status: 200,
        attempts: 2,
        duration_ns: 1_000_000,
        upstream_ns: Some(500_000),
        received: 10,
        sent: 100,
    });
    reg.core(core).upstream_conn(server_id(c, server), false);
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_carry_over_reloads_and_never_go_back() {
    let configs = [generation(0), generation(1), generation(2)];
    let state = |c: &Config| StateTable::new(c, 2);
    let scrape = |c: &Config, reg: &Registry| {
        let st = state(c);
        render(&Scrape {
            config: c,
            state: &st,
            metrics: reg,
            workers: 2,
            started: std::time::SystemTime::now(),
            certificates: &[],
            resolutions: &Default::default(),
        })
    };
    let req = |u: &str, s: &str| {
        format!("ringlb_requests_total{{listener=\"web\",upstream=\"{u}\",server=\"{s}\",class=\"2xx\"}}")
    };
    let g0 = Registry::new(&configs[0], 2);
    served(&g0, 0, &configs[0], "api", "a");
    served(&g0, 1, &configs[0], "api", "b");
    served(&g0, 1, &configs[0], "old", "127.0.0.1:9009");
    g0.health_check(server_id(&configs[0], "b"), true, Duration::from_millis(1));
    g0.core(0).conn_opened(ListenerId(0));
    let before = scrape(&configs[0], &g0);

    let g1 = Registry::next(&configs[1], 2, &g0, &configs[0]);
    // A connection still on generation 0 finishes a request there after the reload.
    served(&g0, 0, &configs[0], "api", "b");
    served(&g1, 0, &configs[1], "api", "c");
    g1.core(1).conn_closed(ListenerId(0));
    let after = scrape(&configs[1], &g1);
    assert_eq!(sample(&after, &req("api", "a")), Some(1.0));
    assert_eq!(sample(&after, &req("api", "b")), Some(2.0));
    assert_eq!(sample(&after, &req("api", "c")), Some(1.0));
    assert_eq!(sample(&after, &req("old", "127.0.0.1:9009")), Some(1.0));
    has(&after, "ringlb_received_bytes_total{listener=\"web\"} 50");
    has(&after, "ringlb_upstream_retries_total{upstream=\"api\"} 4");
    has(
        &after,
        "ringlb_health_checks_total{upstream=\"api\",server=\"b\",result=\"pass\"} 1",
    );
    has(
        &after,
        "ringlb_health_check_duration_seconds_count{upstream=\"api\"} 1",
    );
    has(
        &after,
        "ringlb_upstream_connections_opened_total{upstream=\"api\",server=\"b\"} 2",
    );
    // Opened in generation 0, closed in 1: no longer active.
    has(&after, "ringlb_connections_active{listener=\"web\"} 0");
    has(
        &after,
        "ringlb_request_duration_seconds_count{listener=\"web\",upstream=\"api\"} 4",
    );

    // Generation 2 folds generation 0 into its base; `a` and `old` disappear.
    let g2 = Registry::next(&configs[2], 2, &g1, &configs[1]);
    served(&g2, 1, &configs[2], "api", "b");
    let last = scrape(&configs[2], &g2);
    assert_eq!(sample(&last, &req("api", "a")), None);
    assert_eq!(sample(&last, &req("old", "127.0.0.1:9009")), None);
    assert_eq!(sample(&last, &req("api", "b")), Some(3.0));
    assert_eq!(sample(&last, &req("api", "c")), Some(1.0));
    has(&last, "ringlb_received_bytes_total{listener=\"web\"} 60");

    // Every counter sample present in two consecutive scrapes did not decrease.
    for (earlier, later) in [(&before, &after), (&after, &last)] {
        for line in earlier.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, v)) = line.rsplit_once(' ') else {
                continue;
            };
            let counter = series.contains("_total")
                || series.contains("_bucket")
                || series.contains("_count")
                || series.contains("_sum");
            if !counter || series.starts_with("process_") {
                continue;
            }
            if let (Ok(a), Some(b)) = (v.parse::<f64>(), sample(later, series)) {
                assert!(b >= a, "{series}: {a} then {b}");
            }
        }
    }
}
