//! The Prometheus text exposition format, version 0.0.4
//! (prometheus.io/docs/instrumenting/exposition_formats): `# HELP`, `# TYPE`, then one sample
//! per line. Runs on the admin core, off the request path; allocates freely.
//!
//! Series rendered: every label combination the config can produce (a listener with the
//! upstreams its routes reach, their servers, every status class), zero or not, so `rate()`
//! sees a counter's first increment; 5xx codes only once seen, since most never occur.

use super::core::{self, Target, CLASSES, CODES};
use super::histogram::{self, BOUNDS_LE};
use super::names::{self, Family, Kind};
use super::Registry;
use crate::config::Config;
use crate::state::{now_ms, StateTable, Status};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// What a scrape reads: one configuration generation's counters and server states.
pub struct Scrape<'a> {
    pub config: &'a Config,
    pub state: &'a StateTable,
    pub metrics: &'a Registry,
    pub workers: usize,
    pub started: std::time::SystemTime,
    /// The certificates of the TLS listeners and upstream client certificates.
    pub certificates: &'a [super::CertificateExpiry],
    /// Lookups of server names, across generations.
    pub resolutions: &'a crate::state::Resolutions,
}

/// The whole scrape.
pub fn render(shared: &Scrape<'_>) -> String {
    let reg = &shared.metrics;
    let total = reg.totals();
    let mut w = Writer {
        out: String::with_capacity(64 << 10),
    };
    process(&mut w, shared);
    downstream(&mut w, shared, &total);
    upstream(&mut w, shared, &total);
    servers(&mut w, shared);
    discovery(&mut w, shared);
    queues(&mut w, shared, &total);
    health(&mut w, shared, reg, &total);
    control_plane(&mut w, reg);
    w.out
}

/// Every (listener, upstream-or-none, server-or-none) combination that can occur, with the
/// layout's target index: (listener index, listener, upstream, server, target).
type Targets<'c> = Vec<(usize, &'c str, Option<&'c str>, &'c str, usize)>;

/// For each listener, the upstreams its routes reach.
fn reach(config: &Config) -> Vec<Vec<bool>> {
    (0..config.listeners.len())
        .map(|l| {
            let mut r = vec![false; config.upstreams.len()];
            for route in config.routes.iter().filter(|r| r.listener.0 as usize == l) {
                if let Some(x) = route.upstream.and_then(|u| r.get_mut(u.0 as usize)) {
                    *x = true;
                }
            }
            r
        })
        .collect()
}

fn targets<'c>(config: &'c Config, lay: &core::Layout, reach: &[Vec<bool>]) -> Targets<'c> {
    let mut targets: Targets<'c> = Vec::new();
    for (l, listener) in config.listeners.iter().enumerate() {
        let none = lay.target(Target::None);
        targets.push((l, &listener.name, None, "", none));
        for (u, up) in config.upstreams.iter().enumerate() {
            if !reach[l][u] {
                continue;
            }
            let t = lay.target(Target::Upstream(crate::config::UpstreamId(u as u32)));
            targets.push((l, &listener.name, Some(&up.name), "", t));
            for s in &up.servers {
                targets.push((
                    l,
                    &listener.name,
                    Some(&up.name),
                    &s.name,
                    lay.target(Target::Server(s.id)),
                ));
            }
        }
    }
    targets
}

/// The client side: connections, requests by class and 5xx code, durations, bytes, TLS.
fn downstream(w: &mut Writer, shared: &Scrape<'_>, total: &[u64]) {
    let reg = &shared.metrics;
    let config = &shared.config;
    let lay = reg.layout();
    let reach = reach(config);
    let targets = targets(config, lay, &reach);
    w.family(&names::CONNECTIONS);
    for (l, listener) in config.listeners.iter().enumerate() {
        w.int(
            &names::CONNECTIONS,
            "",
            &[("listener", &listener.name)],
            total[lay.conns_opened(l)],
        );
    }
    w.family(&names::CONNECTIONS_ACTIVE);
    for (l, listener) in config.listeners.iter().enumerate() {
        let active = total[lay.conns_opened(l)].saturating_sub(total[lay.conns_closed(l)]);
        w.int(
            &names::CONNECTIONS_ACTIVE,
            "",
            &[("listener", &listener.name)],
            active,
        );
    }
    w.family(&names::REQUESTS);
    for &(l, lname, uname, sname, t) in &targets {
        for (c, class) in names::CLASSES.iter().enumerate() {
            let labels = [
                ("listener", lname),
                ("upstream", uname.unwrap_or("")),
                ("server", sname),
                ("class", class),
            ];
            w.int(&names::REQUESTS, "", &labels, total[lay.requests(l, t, c)]);
        }
    }
    debug_assert_eq!(names::CLASSES.len(), CLASSES);
    w.family(&names::RESPONSES_5XX);
    for &(l, lname, uname, sname, t) in &targets {
        for c in 0..CODES {
            let n = total[lay.codes(l, t, c)];
            if n == 0 {
                continue;
            }
            let code = if c == CODES - 1 {
                "other".to_string()
            } else {
                (500 + c).to_string()
            };
            let labels = [
                ("listener", lname),
                ("upstream", uname.unwrap_or("")),
                ("server", sname),
                ("code", &code),
            ];
            w.int(&names::RESPONSES_5XX, "", &labels, n);
        }
    }
    w.family(&names::REQUEST_DURATION);
    for (l, listener) in config.listeners.iter().enumerate() {
        let h = core::hist(total, lay.request_hist(l, None));
        w.histogram(
            &names::REQUEST_DURATION,
            &[("listener", &listener.name), ("upstream", "")],
            &h,
        );
        for (u, up) in config.upstreams.iter().enumerate() {
            if reach[l][u] {
                let h = core::hist(total, lay.request_hist(l, Some(u)));
                let labels = [("listener", listener.name.as_str()), ("upstream", &up.name)];
                w.histogram(&names::REQUEST_DURATION, &labels, &h);
            }
        }
    }
    for (family, index) in [
        (
            &names::RECEIVED_BYTES,
            core::Layout::received as fn(&core::Layout, usize) -> usize,
        ),
        (&names::SENT_BYTES, core::Layout::sent),
        (&names::TLS_HANDSHAKES, core::Layout::tls_ok),
    ] {
        w.family(family);
        for (l, listener) in config.listeners.iter().enumerate() {
            w.int(
                family,
                "",
                &[("listener", &listener.name)],
                total[index(lay, l)],
            );
        }
    }

    w.family(&names::TLS_HANDSHAKE_FAILURES);
    for (l, listener) in config.listeners.iter().enumerate() {
        for (reason, name) in core::ALL_TLS_FAILURES
            .iter()
            .zip(names::TLS_FAILURE_REASONS)
        {
            let labels = [("listener", listener.name.as_str()), ("reason", name)];
            w.int(
                &names::TLS_HANDSHAKE_FAILURES,
                "",
                &labels,
                total[lay.tls_failed(l, *reason)],
            );
        }
    }

    w.family(&names::TLS_CERTIFICATE_EXPIRATION);
    for c in shared.certificates {
        let labels = [
            ("listener", c.listener.as_str()),
            ("upstream", &c.upstream),
            ("file", &c.file),
            ("subject", &c.subject),
        ];
        w.float(
            &names::TLS_CERTIFICATE_EXPIRATION,
            "",
            &labels,
            c.not_after as f64,
        );
    }

    w.family(&names::CONNECTIONS_REFUSED);
    for (l, listener) in config.listeners.iter().enumerate() {
        for (reason, name) in core::ALL_REFUSALS.iter().zip(names::REFUSAL_REASONS) {
            let labels = [("listener", listener.name.as_str()), ("reason", name)];
            w.int(
                &names::CONNECTIONS_REFUSED,
                "",
                &labels,
                total[lay.refused(l, *reason)],
            );
        }
    }
}

/// The server side: response durations, connections opened and reused, retries, invalid
/// responses.
fn upstream(w: &mut Writer, shared: &Scrape<'_>, total: &[u64]) {
    let reg = &shared.metrics;
    let config = &shared.config;
    let lay = reg.layout();
    w.family(&names::UPSTREAM_RESPONSE_DURATION);
    for (u, up) in config.upstreams.iter().enumerate() {
        let h = core::hist(total, lay.upstream_hist(u));
        w.histogram(
            &names::UPSTREAM_RESPONSE_DURATION,
            &[("upstream", &up.name)],
            &h,
        );
    }
    w.family(&names::SERVER_RESPONSE_DURATION);
    for (up, s) in config.servers() {
        let h = core::hist(total, lay.server_hist(s.id.0 as usize));
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.histogram(&names::SERVER_RESPONSE_DURATION, &labels, &h);
    }
    for (family, index) in [
        (
            &names::UPSTREAM_CONNECTIONS_OPENED,
            core::Layout::upstream_opened as fn(&core::Layout, usize) -> usize,
        ),
        (
            &names::UPSTREAM_CONNECTIONS_REUSED,
            core::Layout::upstream_reused,
        ),
    ] {
        w.family(family);
        for (up, s) in config.servers() {
            let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
            w.int(family, "", &labels, total[index(lay, s.id.0 as usize)]);
        }
    }
    w.family(&names::UPSTREAM_RETRIES);
    for (u, up) in config.upstreams.iter().enumerate() {
        w.int(
            &names::UPSTREAM_RETRIES,
            "",
            &[("upstream", &up.name)],
            total[lay.retries(u)],
        );
    }
    w.family(&names::UPSTREAM_INVALID_RESPONSES);
    for (up, s) in config.servers() {
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        let n = reg.invalid_responses(total, s.id);
        w.int(&names::UPSTREAM_INVALID_RESPONSES, "", &labels, n);
    }
}

/// The `max_conns` queues.
fn queues(w: &mut Writer, shared: &Scrape<'_>, total: &[u64]) {
    let config = &shared.config;
    let lay = shared.metrics.layout();
    w.family(&names::QUEUE_LENGTH);
    for (u, up) in config.upstreams.iter().enumerate() {
        let n = total[lay.queued(u)].saturating_sub(total[lay.dequeued(u)]);
        w.int(&names::QUEUE_LENGTH, "", &[("upstream", &up.name)], n);
    }
    w.family(&names::QUEUE_TIMEOUTS);
    for (u, up) in config.upstreams.iter().enumerate() {
        let n = total[lay.queue_timeouts(u)];
        w.int(&names::QUEUE_TIMEOUTS, "", &[("upstream", &up.name)], n);
    }
}

/// Reloads and access log failures.
fn control_plane(w: &mut Writer, reg: &Registry) {
    w.family(&names::CONFIG_RELOADS);
    for (result, n) in names::RELOAD_RESULTS.iter().zip(reg.reloads()) {
        w.int(&names::CONFIG_RELOADS, "", &[("result", result)], n);
    }
    w.family(&names::CONFIG_LAST_RELOAD_SUCCESSFUL);
    w.int(
        &names::CONFIG_LAST_RELOAD_SUCCESSFUL,
        "",
        &[],
        u64::from(reg.last_reload_ok()),
    );
    w.family(&names::CONFIG_LAST_RELOAD_SUCCESS_TIME);
    w.float(
        &names::CONFIG_LAST_RELOAD_SUCCESS_TIME,
        "",
        &[],
        reg.last_load_ms() as f64 / 1e3,
    );
    w.family(&names::ACCESS_LOG_WRITE_ERRORS);
    w.int(&names::ACCESS_LOG_WRITE_ERRORS, "", &[], reg.log_errors());
}

fn process(w: &mut Writer, shared: &Scrape<'_>) {
    w.family(&names::BUILD_INFO);
    w.int(
        &names::BUILD_INFO,
        "",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    w.family(&names::WORKERS);
    w.int(&names::WORKERS, "", &[], shared.workers as u64);
    w.family(&names::START_TIME);
    w.float(
        &names::START_TIME,
        "",
        &[],
        super::unix_ms(shared.started) as f64 / 1e3,
    );
    let p = ProcStat::read();
    if let Some(cpu) = p.cpu_seconds {
        w.family(&names::CPU_SECONDS);
        w.float(&names::CPU_SECONDS, "", &[], cpu);
    }
    if let Some(rss) = p.rss_bytes {
        w.family(&names::RESIDENT_MEMORY);
        w.int(&names::RESIDENT_MEMORY, "", &[], rss);
    }
    if let Some(n) = p.open_fds {
        w.family(&names::OPEN_FDS);
        w.int(&names::OPEN_FDS, "", &[], n);
    }
    if let Some(n) = p.max_fds {
        w.family(&names::MAX_FDS);
        w.int(&names::MAX_FDS, "", &[], n);
    }
}

/// Server state from the shared table: state one-hot, in-flight requests, weight.
fn servers(w: &mut Writer, shared: &Scrape<'_>) {
    let config = &shared.config;
    let now = now_ms();
    w.family(&names::SERVER_STATE);
    for (up, s) in config.servers() {
        let state = shared.state.get(s.id).status(now);
        for name in Status::ALL {
            let labels = [
                ("upstream", up.name.as_str()),
                ("server", &s.name),
                ("state", name.as_str()),
            ];
            w.int(&names::SERVER_STATE, "", &labels, u64::from(name == state));
        }
    }
    w.family(&names::SERVER_ACTIVE);
    for (up, s) in config.servers() {
        let n = shared.state.get(s.id).active.load(Relaxed);
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.int(&names::SERVER_ACTIVE, "", &labels, u64::from(n));
    }
    w.family(&names::SERVER_WEIGHT);
    for (up, s) in config.servers() {
        let n = shared.state.get(s.id).weight.load(Relaxed);
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.int(&names::SERVER_WEIGHT, "", &labels, u64::from(n));
    }
    w.family(&names::USABLE_SERVERS);
    for up in &config.upstreams {
        let n = up
            .servers
            .iter()
            .filter(|s| shared.state.get(s.id).usable(now))
            .count();
        w.int(
            &names::USABLE_SERVERS,
            "",
            &[("upstream", &up.name)],
            n as u64,
        );
    }
}

/// Servers per upstream, and the lookups of every named entry.
fn discovery(w: &mut Writer, shared: &Scrape<'_>) {
    let config = &shared.config;
    w.family(&names::UPSTREAM_SERVERS);
    for up in &config.upstreams {
        let n = up.servers.len() as u64;
        w.int(&names::UPSTREAM_SERVERS, "", &[("upstream", &up.name)], n);
    }
    let named = || {
        config.upstreams.iter().flat_map(|u| {
            u.entries
                .iter()
                .filter(|e| e.is_name())
                .map(move |e| (u.name.as_str(), e.name.as_str()))
        })
    };
    w.family(&names::RESOLUTIONS);
    for (u, e) in named() {
        let counts = shared.resolutions.find(u, e);
        for (i, result) in crate::state::Resolution::NAMES.iter().enumerate() {
            let n = counts.as_ref().map_or(0, |c| c.results[i].load(Relaxed));
            let labels = [("upstream", u), ("name", e), ("result", result)];
            w.int(&names::RESOLUTIONS, "", &labels, n);
        }
    }
    w.family(&names::RESOLUTION_AGE);
    let now = super::unix_ms(std::time::SystemTime::now());
    for (u, e) in named() {
        let last = shared
            .resolutions
            .find(u, e)
            .map_or(0, |c| c.last_success_ms.load(Relaxed));
        let age = if last == 0 {
            f64::INFINITY
        } else {
            now.saturating_sub(last) as f64 / 1e3
        };
        w.float(
            &names::RESOLUTION_AGE,
            "",
            &[("upstream", u), ("name", e)],
            age,
        );
    }
}

/// Active health checks: counters from the registry, last results from the state table (only
/// for upstreams with `health_check` configured).
fn health(w: &mut Writer, shared: &Scrape<'_>, reg: &Registry, total: &[u64]) {
    let config = &shared.config;
    w.family(&names::HEALTH_CHECKS);
    for (up, s) in config.servers() {
        for (result, n) in names::CHECK_RESULTS
            .iter()
            .zip(reg.health_counts(total, s.id))
        {
            let labels = [
                ("upstream", up.name.as_str()),
                ("server", &s.name),
                ("result", result),
            ];
            w.int(&names::HEALTH_CHECKS, "", &labels, n);
        }
    }
    w.family(&names::HEALTH_CHECK_DURATION);
    for (u, up) in config.upstreams.iter().enumerate() {
        let h = reg.health_hist(total, u);
        w.histogram(&names::HEALTH_CHECK_DURATION, &[("upstream", &up.name)], &h);
    }
    let checked = || config.servers().filter(|(up, _)| up.health_check.is_some());
    w.family(&names::HEALTH_CHECK_LAST_STATUS);
    for (up, s) in checked() {
        let st = shared.state.get(s.id);
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.int(
            &names::HEALTH_CHECK_LAST_STATUS,
            "",
            &labels,
            u64::from(st.last_check_status.load(Relaxed)),
        );
    }
    w.family(&names::HEALTH_CHECK_LAST_SUCCESS);
    for (up, s) in checked() {
        let st = shared.state.get(s.id);
        let ok = st.last_check_ms.load(Relaxed) != 0 && st.last_check_ok.load(Relaxed);
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.int(
            &names::HEALTH_CHECK_LAST_SUCCESS,
            "",
            &labels,
            u64::from(ok),
        );
    }
    w.family(&names::HEALTH_CHECK_LAST_DURATION);
    for (up, s) in checked() {
        let us = shared.state.get(s.id).last_check_us.load(Relaxed);
        let labels = [("upstream", up.name.as_str()), ("server", &s.name)];
        w.float(
            &names::HEALTH_CHECK_LAST_DURATION,
            "",
            &labels,
            f64::from(us) / 1e6,
        );
    }
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, f: &Family) {
        let _ = writeln!(self.out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(self.out, "# TYPE {} {}", f.name, f.kind.as_str());
    }

    fn series(&mut self, f: &Family, suffix: &str, labels: &[(&str, &str)]) {
        self.out.push_str(f.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
    }

    fn int(&mut self, f: &Family, suffix: &str, labels: &[(&str, &str)], v: u64) {
        self.series(f, suffix, labels);
        let _ = writeln!(self.out, "{v}");
    }

    fn float(&mut self, f: &Family, suffix: &str, labels: &[(&str, &str)], v: f64) {
        self.series(f, suffix, labels);
        if v.is_infinite() {
            // The exposition format's spelling (Rust writes "inf").
            let _ = writeln!(self.out, "{}", if v > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            let _ = writeln!(self.out, "{v}");
        }
    }

    /// `_bucket` (cumulative, `le` last among the labels), `_sum` in seconds, `_count`.
    fn histogram(&mut self, f: &Family, labels: &[(&str, &str)], h: &histogram::Snapshot) {
        debug_assert_eq!(f.kind, Kind::Histogram);
        let mut with_le: Vec<(&str, &str)> = labels.to_vec();
        with_le.push(("le", ""));
        let last = with_le.len() - 1;
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            with_le[last].1 = BOUNDS_LE.get(i).copied().unwrap_or("+Inf");
            self.int(f, "_bucket", &with_le, cumulative);
        }
        self.float(f, "_sum", labels, h.sum_ns as f64 / 1e9);
        self.int(f, "_count", labels, cumulative);
    }
}

/// Label values escape `\`, `"` and newline.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text escapes `\` and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// What the kernel says about this process (Linux `/proc`); a field it cannot read is left out.
#[derive(Default)]
struct ProcStat {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcStat {
    fn read() -> ProcStat {
        let mut p = ProcStat::default();
        // SAFETY: sysconf has no memory effects.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name (which may contain spaces):
            // state is field 3; utime and stime are fields 14 and 15; rss is field 24.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
                if let (Some(u), Some(s), true) = (num(11), num(12), tick > 0) {
                    p.cpu_seconds = Some((u + s) as f64 / tick as f64);
                }
                if let (Some(rss), true) = (num(21), page > 0) {
                    p.rss_bytes = Some(rss * page as u64);
                }
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            p.max_fds = Some(lim.rlim_cur);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\\b\"c\nd");
        assert_eq!(s, "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn histogram_lines_are_cumulative() {
        let mut w = Writer { out: String::new() };
        let mut h = histogram::Snapshot::default();
        h.buckets[0] = 2;
        h.buckets[3] = 1;
        h.buckets[14] = 1;
        h.sum_ns = 12_500_000_000;
        w.histogram(&names::REQUEST_DURATION, &[("listener", "x")], &h);
        let lines: Vec<&str> = w.out.lines().collect();
        assert_eq!(lines.len(), 17);
        assert_eq!(
            lines[0],
            "ringlb_request_duration_seconds_bucket{listener=\"x\",le=\"0.0005\"} 2"
        );
        assert_eq!(
            lines[3],
            "ringlb_request_duration_seconds_bucket{listener=\"x\",le=\"0.005\"} 3"
        );
        assert_eq!(
            lines[13],
            "ringlb_request_duration_seconds_bucket{listener=\"x\",le=\"10\"} 3"
        );
        assert_eq!(
            lines[14],
            "ringlb_request_duration_seconds_bucket{listener=\"x\",le=\"+Inf\"} 4"
        );
        assert_eq!(
            lines[15],
            "ringlb_request_duration_seconds_sum{listener=\"x\"} 12.5"
        );
        assert_eq!(
            lines[16],
            "ringlb_request_duration_seconds_count{listener=\"x\"} 4"
        );
    }
}
