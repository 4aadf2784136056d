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
}

impl Parts {
    fn scrape(&self) -> Scrape<'_> {
        Scrape {
            config: &self.config,
            state: &self.state,
            metrics: &self.metrics,
            workers: 2,
            started: std::time::SystemTime::now(),
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
        state: StateTable::new(&config),
        metrics: Registry::new(&config, 2),
        config,
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
        for s in names::STATES {
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
