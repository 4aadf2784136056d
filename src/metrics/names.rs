//! Every metric ringlb exports, defined once: name, type and help text. The renderer, the
//! tests, the alert rules and the dashboard (`tuning/monitoring/`) use these names; a rename
//! here is a breaking change for every operator's queries.
//!
//! Conventions (prometheus.io/docs/practices/naming): `ringlb_` prefix, base units (`_seconds`,
//! `_bytes`), counters end in `_total`. Labels have bounded values only: listener, upstream and
//! server names from the config, status class, 5xx code, fixed state and result words.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        help,
    }
}

// Process.
pub const BUILD_INFO: Family = gauge("ringlb_build_info", "ringlb version; always 1.");
pub const WORKERS: Family = gauge("ringlb_workers", "Worker cores serving traffic.");
pub const START_TIME: Family = gauge(
    "process_start_time_seconds",
    "Start time of the process since the Unix epoch, in seconds.",
);
pub const CPU_SECONDS: Family = counter(
    "process_cpu_seconds_total",
    "User and system CPU time spent, in seconds.",
);
pub const RESIDENT_MEMORY: Family = gauge(
    "process_resident_memory_bytes",
    "Resident memory size, in bytes.",
);
pub const OPEN_FDS: Family = gauge("process_open_fds", "Open file descriptors.");
pub const MAX_FDS: Family = gauge("process_max_fds", "Limit on open file descriptors.");

// Client side.
pub const CONNECTIONS: Family = counter(
    "ringlb_connections_total",
    "Client connections accepted, by listener.",
);
pub const CONNECTIONS_ACTIVE: Family = gauge(
    "ringlb_connections_active",
    "Client connections open now, by listener.",
);
pub const REQUESTS: Family = counter(
    "ringlb_requests_total",
    "Requests answered, by listener, upstream, last server tried and status class. \
     upstream=\"\" when no route matched or the request was refused before routing; \
     server=\"\" when no server was tried. 499: the client went away before the response.",
);
pub const RESPONSES_5XX: Family = counter(
    "ringlb_responses_5xx_total",
    "5xx responses by code (500 to 511; \"other\" for the rest), with the labels of \
     ringlb_requests_total.",
);
pub const REQUEST_DURATION: Family = histogram(
    "ringlb_request_duration_seconds",
    "Time from the request head parsed to the last response byte written, by listener and \
     upstream. Tunnels (101) are not observed.",
);
pub const RECEIVED_BYTES: Family = counter(
    "ringlb_received_bytes_total",
    "Bytes received from clients in requests (heads and bodies), by listener.",
);
pub const SENT_BYTES: Family = counter(
    "ringlb_sent_bytes_total",
    "Bytes sent to clients in responses (heads and bodies), by listener.",
);
pub const TLS_HANDSHAKES: Family = counter(
    "ringlb_tls_handshakes_total",
    "TLS handshakes completed, by listener.",
);
pub const TLS_CERTIFICATE_EXPIRATION: Family = gauge(
    "ringlb_tls_certificate_expiration_timestamp_seconds",
    "When the leaf certificate stops being valid (its notAfter), since the Unix epoch, for \
     each certificate of each TLS listener (upstream=\"\") and each upstream's client \
     certificate (listener=\"\"), with its file and subject common name. Read at start and \
     on each reload.",
);
pub const TLS_HANDSHAKE_FAILURES: Family = counter(
    "ringlb_tls_handshake_failures_total",
    "Connections to a TLS listener that did not complete a handshake, by listener and reason: \
     plain_http (an HTTP request on the TLS port), not_tls (other bytes), timeout (no \
     handshake within timeouts.client_header), closed (closed or reset by the client), error \
     (refused by TLS: no common version or cipher, malformed message).",
);
pub const CONNECTIONS_REFUSED: Family = counter(
    "ringlb_connections_refused_total",
    "Client connections closed at accept, before anything was read, by listener and reason: \
     max_connections (the listener's limit), per_ip (max_connections_per_ip for the client \
     address on one core), proxy_protocol_from (a PROXY listener's peer not in the list).",
);

// Upstream side.
pub const UPSTREAM_RESPONSE_DURATION: Family = histogram(
    "ringlb_upstream_response_duration_seconds",
    "Time from the request written to a server until its response head was read, by upstream.",
);
pub const SERVER_RESPONSE_DURATION: Family = histogram(
    "ringlb_server_response_duration_seconds",
    "Time from the request written to a server until its response head was read, by server.",
);
pub const UPSTREAM_CONNECTIONS_OPENED: Family = counter(
    "ringlb_upstream_connections_opened_total",
    "New connections opened to a server.",
);
pub const UPSTREAM_CONNECTIONS_REUSED: Family = counter(
    "ringlb_upstream_connections_reused_total",
    "Requests sent on a pooled keep-alive connection to a server.",
);
pub const UPSTREAM_INVALID_RESPONSES: Family = counter(
    "ringlb_upstream_invalid_responses_total",
    "Invalid responses from a server (malformed or ambiguously framed head, bad chunked \
     framing, an unasked 101); counted against its passive health only with invalid_header.",
);
pub const UPSTREAM_RETRIES: Family = counter(
    "ringlb_upstream_retries_total",
    "Requests tried again on another server of the upstream after a failure.",
);
pub const SERVER_STATE: Family = gauge(
    "ringlb_upstream_server_state",
    "1 for the server's current state, 0 for the others: up, down (failed health checks), \
     draining, maint (the words of the admin API and the log).",
);
pub const SERVER_ACTIVE: Family = gauge(
    "ringlb_upstream_server_active_requests",
    "Requests in flight to the server, across all workers.",
);
pub const SERVER_WEIGHT: Family = gauge(
    "ringlb_upstream_server_weight",
    "Weight currently in force for the server.",
);
pub const USABLE_SERVERS: Family = gauge(
    "ringlb_upstream_usable_servers",
    "Servers of the upstream that can take new requests (up and not draining or in maint).",
);
pub const QUEUE_LENGTH: Family = gauge(
    "ringlb_queue_length",
    "Requests waiting for a server slot (max_conns), by upstream.",
);
pub const QUEUE_TIMEOUTS: Family = counter(
    "ringlb_queue_timeouts_total",
    "Requests that waited for a server slot longer than the queue timeout, by upstream.",
);

pub const UPSTREAM_SERVERS: Family = gauge(
    "ringlb_upstream_servers",
    "Servers of the upstream in the generation in force (addresses of names included), \
     whatever their state.",
);

// Service discovery.
pub const RESOLUTIONS: Family = counter(
    "ringlb_resolver_resolutions_total",
    "Lookups of a server entry's name, by upstream, entry name and result: success, nxdomain \
     (no such name), empty (no address or SRV record), failure (timeouts, SERVFAIL, REFUSED, \
     network). Anything but success keeps the entry's last addresses.",
);
pub const RESOLUTION_AGE: Family = gauge(
    "ringlb_resolver_last_success_age_seconds",
    "Seconds since the entry's name last resolved (+Inf: never), by upstream and entry name.",
);

// Health checks.
pub const HEALTH_CHECKS: Family = counter(
    "ringlb_health_checks_total",
    "Active health checks by result (pass, fail).",
);
pub const HEALTH_CHECK_DURATION: Family = histogram(
    "ringlb_health_check_duration_seconds",
    "Duration of active health checks, by upstream.",
);
pub const HEALTH_CHECK_LAST_STATUS: Family = gauge(
    "ringlb_health_check_last_status",
    "HTTP status of the last active health check (0: no response or never checked).",
);
pub const HEALTH_CHECK_LAST_SUCCESS: Family = gauge(
    "ringlb_health_check_last_success",
    "1 if the last active health check passed.",
);
pub const HEALTH_CHECK_LAST_DURATION: Family = gauge(
    "ringlb_health_check_last_duration_seconds",
    "Duration of the last active health check.",
);

// Control plane.
pub const CONFIG_RELOADS: Family = counter(
    "ringlb_config_reloads_total",
    "Configuration reloads by result (success, failure).",
);
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: Family = gauge(
    "ringlb_config_last_reload_successful",
    "1 if the last configuration reload succeeded (or none was attempted).",
);
pub const CONFIG_LAST_RELOAD_SUCCESS_TIME: Family = gauge(
    "ringlb_config_last_reload_success_timestamp_seconds",
    "Time of the last successful configuration load, since the Unix epoch.",
);
pub const ACCESS_LOG_WRITE_ERRORS: Family = counter(
    "ringlb_access_log_write_errors_total",
    "Access log buffers dropped because writing them failed.",
);

/// Values of the `class` label of [`REQUESTS`].
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Values of the `reason` label of [`TLS_HANDSHAKE_FAILURES`], in `metrics::TlsFailure` order.
pub const TLS_FAILURE_REASONS: [&str; 5] = ["plain_http", "not_tls", "timeout", "closed", "error"];
/// Values of the `reason` label of [`CONNECTIONS_REFUSED`], in `metrics::Refusal` order.
pub const REFUSAL_REASONS: [&str; 3] = ["max_connections", "per_ip", "proxy_protocol_from"];
/// Values of the `result` label of [`HEALTH_CHECKS`] and [`CONFIG_RELOADS`].
pub const CHECK_RESULTS: [&str; 2] = ["pass", "fail"];
pub const RELOAD_RESULTS: [&str; 2] = ["success", "failure"];

/// Every family, in render order (tests check each appears in a scrape).
pub const ALL: &[Family] = &[
    BUILD_INFO,
    WORKERS,
    START_TIME,
    CPU_SECONDS,
    RESIDENT_MEMORY,
    OPEN_FDS,
    MAX_FDS,
    CONNECTIONS,
    CONNECTIONS_ACTIVE,
    REQUESTS,
    RESPONSES_5XX,
    REQUEST_DURATION,
    RECEIVED_BYTES,
    SENT_BYTES,
    TLS_HANDSHAKES,
    TLS_HANDSHAKE_FAILURES,
    TLS_CERTIFICATE_EXPIRATION,
    CONNECTIONS_REFUSED,
    UPSTREAM_RESPONSE_DURATION,
    SERVER_RESPONSE_DURATION,
    UPSTREAM_CONNECTIONS_OPENED,
    UPSTREAM_CONNECTIONS_REUSED,
    UPSTREAM_RETRIES,
    UPSTREAM_INVALID_RESPONSES,
    SERVER_STATE,
    SERVER_ACTIVE,
    SERVER_WEIGHT,
    USABLE_SERVERS,
    UPSTREAM_SERVERS,
    RESOLUTIONS,
    RESOLUTION_AGE,
    QUEUE_LENGTH,
    QUEUE_TIMEOUTS,
    HEALTH_CHECKS,
    HEALTH_CHECK_DURATION,
    HEALTH_CHECK_LAST_STATUS,
    HEALTH_CHECK_LAST_SUCCESS,
    HEALTH_CHECK_LAST_DURATION,
    CONFIG_RELOADS,
    CONFIG_LAST_RELOAD_SUCCESSFUL,
    CONFIG_LAST_RELOAD_SUCCESS_TIME,
    ACCESS_LOG_WRITE_ERRORS,
];
