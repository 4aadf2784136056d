//! Host checks run once at startup, before any executor starts.
//!
//! Each check compares one fact about the host (a resource limit, a sysctl, whether an `io_uring`
//! can be created) with what this configuration needs, and yields a warning that names the fix.
//! Nothing here refuses to start: the caller logs the warnings and decides.
//!
//! Reading the host (`HostFacts::read`) is kept apart from judging it (`evaluate`), so the
//! judgement is unit-tested with made-up facts.

use std::fs;

/// File descriptors kept aside beyond the connections: listeners, the admin listener, the
/// `io_uring` and eventfd descriptors of every executor, logs and health checks.
pub const NOFILE_RESERVE: u64 = 64;

/// The `max_connections` of a listener that sets none: what the open files limit allows.
/// Every proxied connection holds two descriptors (client and server); a tenth of the limit,
/// at least [`NOFILE_RESERVE`], stays aside for pooled idle server connections, listeners,
/// the admin listener, logs and health checks; the rest is shared evenly by the listeners:
///
/// `(nofile - max(nofile / 10, 64)) / 2 / listeners`, at least 1, at most 10,000,000.
#[must_use]
pub fn default_max_connections(nofile_soft: u64, listeners: usize) -> u64 {
    let reserve = (nofile_soft / 10).max(NOFILE_RESERVE);
    (nofile_soft.saturating_sub(reserve) / 2 / listeners.max(1) as u64).clamp(1, 10_000_000)
}

/// Gives every listener without `max_connections` the default for `nofile_soft`; returns
/// the names and values given.
pub fn apply_default_max_connections(
    config: &mut crate::config::Config,
    nofile_soft: u64,
) -> Vec<(String, u64)> {
    let n = config.listeners.len();
    let mut given = Vec::new();
    for l in &mut config.listeners {
        if l.max_connections.is_none() {
            let max = default_max_connections(nofile_soft, n);
            l.max_connections = Some(max);
            given.push((l.name.clone(), max));
        }
    }
    given
}

/// What the host offers, as read at startup. Limits are soft limits; `u64::MAX` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `RLIMIT_NOFILE` soft limit.
    pub nofile_soft: u64,
    /// `net.core.somaxconn`; `None` when it could not be read.
    pub somaxconn: Option<u32>,
    /// `kernel.io_uring_disabled` (Linux 6.6+); `None` when absent (older kernels allow `io_uring`).
    pub io_uring_disabled: Option<u8>,
    /// The errno of creating a one-entry `io_uring`, `None` when that worked. A seccomp filter
    /// that denies `io_uring_setup` (Docker 25+, containerd 2.0+ defaults) shows only here.
    pub io_uring_setup_errno: Option<i32>,
}

impl HostFacts {
    /// Reads the facts of the running process and host. A value that cannot be read is reported
    /// as the most permissive one (or `None`), so a sandbox that hides `/proc/sys` gives no
    /// false warning.
    #[must_use]
    pub fn read() -> HostFacts {
        HostFacts {
            io_uring_disabled: read_sysctl("/proc/sys/kernel/io_uring_disabled"),
            io_uring_setup_errno: probe_io_uring(),
            ..HostFacts::read_without_io_uring()
        }
    }

    /// [`HostFacts::read`] without creating an io_uring (for the epoll engine, which must
    /// not touch it): the io_uring facts are `None`.
    #[must_use]
    pub fn read_without_io_uring() -> HostFacts {
        HostFacts {
            nofile_soft: soft_limit(libc::RLIMIT_NOFILE).unwrap_or(u64::MAX),
            somaxconn: read_sysctl("/proc/sys/net/core/somaxconn"),
            io_uring_disabled: None,
            io_uring_setup_errno: None,
        }
    }
}

/// Checks the running host for serving up to `max_connections` client connections on
/// listeners with `listen_backlog`. Returns one warning per problem, each with its fix; empty
/// when the host is fit.
#[must_use]
pub fn check_host(max_connections: u64, listen_backlog: u32) -> Vec<String> {
    evaluate(&HostFacts::read(), max_connections, listen_backlog)
}

/// The judgement of `check_host`, on given facts: [`evaluate_common`] and
/// [`evaluate_io_uring`].
#[must_use]
pub fn evaluate(facts: &HostFacts, max_connections: u64, listen_backlog: u32) -> Vec<String> {
    let mut warnings = evaluate_common(facts, max_connections, listen_backlog);
    warnings.extend(evaluate_io_uring(facts));
    warnings
}

/// Whether an io_uring engine cannot start a core here: io_uring (with the own engine's setup
/// flags) cannot be created, or is disabled by sysctl. [`evaluate_io_uring`] says why and how
/// to fix it.
#[must_use]
pub fn io_uring_refused(facts: &HostFacts) -> bool {
    facts.io_uring_setup_errno.is_some() || facts.io_uring_disabled.is_some_and(|d| d != 0)
}

/// Warnings that hold whatever engine runs: descriptors and the accept queue.
#[must_use]
pub fn evaluate_common(
    facts: &HostFacts,
    max_connections: u64,
    listen_backlog: u32,
) -> Vec<String> {
    let mut warnings = Vec::new();

    // Every proxied connection holds two descriptors: the client's and the server's.
    let nofile_needed = max_connections
        .saturating_mul(2)
        .saturating_add(NOFILE_RESERVE);
    if facts.nofile_soft < nofile_needed {
        warnings.push(format!(
            "open files limit (RLIMIT_NOFILE) is {}, but {} connections need {} (2 per \
             connection + {} reserved); connections beyond it fail with EMFILE. Fix: \
             `ulimit -n 1048576` before starting, LimitNOFILE=1048576 in the systemd unit, or \
             `nofile` in /etc/security/limits.conf",
            facts.nofile_soft, max_connections, nofile_needed, NOFILE_RESERVE
        ));
    }

    if let Some(somaxconn) = facts.somaxconn {
        if somaxconn < listen_backlog {
            warnings.push(format!(
                "net.core.somaxconn is {somaxconn}, below the listen backlog {listen_backlog}; \
                 the kernel silently caps the accept queue and drops SYNs under bursts. Fix: \
                 `sysctl -w net.core.somaxconn={listen_backlog}` (or apply \
                 tuning/sysctl/throughput.conf)"
            ));
        }
    }

    warnings
}

/// Warnings about io_uring: can it be created, is it disabled. (The engine registers no I/O
/// memory but its buffer ring's entries: RLIMIT_MEMLOCK matters only as the cause of an
/// ENOMEM from io_uring_setup on kernels before 5.12.)
#[must_use]
pub fn evaluate_io_uring(facts: &HostFacts) -> Vec<String> {
    let mut warnings = Vec::new();
    let disabled = matches!(facts.io_uring_disabled, Some(d) if d != 0);
    match facts.io_uring_setup_errno {
        None => {}
        // EPERM is the sysctl's own doing when it is set; its warning below names the fix.
        Some(libc::EPERM) if disabled => {}
        Some(libc::EPERM) => warnings.push(
            "io_uring_setup is denied (EPERM), so ringlb cannot start its workers: a seccomp \
             filter blocks it. Fix: allow io_uring_setup, io_uring_enter and io_uring_register \
             (Kubernetes: tuning/kubernetes/seccomp/ringlb.json; Docker: --security-opt \
             seccomp=PROFILE; systemd: SystemCallFilter=)"
                .to_string(),
        ),
        Some(libc::ENOSYS) => warnings.push(
            "io_uring_setup is not implemented (ENOSYS), so ringlb cannot start its workers: \
             the kernel lacks io_uring (ringlb needs Linux 5.8+ with CONFIG_IO_URING) or a \
             seccomp filter answers ENOSYS. Fix: a newer kernel, or allow io_uring_setup, \
             io_uring_enter and io_uring_register in the seccomp profile"
                .to_string(),
        ),
        Some(libc::EINVAL) => warnings.push(
            "the kernel refuses io_uring with SINGLE_ISSUER and DEFER_TASKRUN or COOP_TASKRUN \
             (EINVAL), which ringlb's io_uring engine needs. Fix: Linux 6.0+ (6.1+ for \
             DEFER_TASKRUN)"
                .to_string(),
        ),
        Some(errno) => warnings.push(format!(
            "creating an io_uring failed: {}; ringlb cannot start its workers without one. \
             Fix: see the error; ENOMEM on kernels before 5.12 means RLIMIT_MEMLOCK is too low",
            std::io::Error::from_raw_os_error(errno)
        )),
    }

    match facts.io_uring_disabled {
        Some(1) => warnings.push(
            "kernel.io_uring_disabled is 1: only members of kernel.io_uring_group (or \
             CAP_SYS_ADMIN) may create io_uring instances, and ringlb cannot run without them. \
             Fix: `sysctl -w kernel.io_uring_disabled=0`, or add ringlb's group to \
             kernel.io_uring_group"
                .to_string(),
        ),
        Some(2) => warnings.push(
            "kernel.io_uring_disabled is 2: io_uring is disabled for every process, and ringlb \
             cannot run without it. Fix: `sysctl -w kernel.io_uring_disabled=0`"
                .to_string(),
        ),
        Some(other) if other != 0 => warnings.push(format!(
            "kernel.io_uring_disabled is {other}, a value this check does not know; io_uring \
             may be unavailable. Fix: `sysctl -w kernel.io_uring_disabled=0`"
        )),
        _ => {}
    }

    warnings
}

/// The type of getrlimit's `resource` argument differs between glibc and musl.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// The soft limit of `resource`, with `RLIM_INFINITY` as `u64::MAX`.
/// The `RLIMIT_NOFILE` soft limit (`u64::MAX` when unlimited or unreadable).
pub fn nofile_soft() -> u64 {
    soft_limit(libc::RLIMIT_NOFILE).unwrap_or(u64::MAX)
}

fn soft_limit(resource: Resource) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, exclusively borrowed `rlimit` for the duration of the call, and
    // getrlimit only writes into it.
    let rc = unsafe { libc::getrlimit(resource, &raw mut limit) };
    if rc != 0 {
        return None;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        Some(u64::MAX)
    } else {
        Some(limit.rlim_cur)
    }
}

/// Creates and closes a ring as the io_uring engine sets it up (SINGLE_ISSUER with
/// DEFER_TASKRUN or COOP_TASKRUN, a provided-buffer ring); returns the errno when the kernel
/// refuses (EINVAL: the setup flags).
fn probe_io_uring() -> Option<i32> {
    match crate::engine::probe_io_uring() {
        Ok(_) => None,
        Err(e) => Some(e.raw_os_error().unwrap_or(libc::EINVAL)),
    }
}

fn read_sysctl<T: std::str::FromStr>(path: &str) -> Option<T> {
    parse_sysctl(&fs::read_to_string(path).ok()?)
}

/// A `/proc/sys` value: one number, maybe followed by a newline.
fn parse_sysctl<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_max_connections_leaves_room() {
        use super::default_max_connections as d;
        // (1024 - 102) / 2 = 461; two listeners share it.
        assert_eq!(d(1024, 1), 461);
        assert_eq!(d(1024, 2), 230);
        // The reserve is at least 64 descriptors.
        assert_eq!(d(256, 1), 96);
        assert_eq!(d(10, 1), 1);
        assert_eq!(d(u64::MAX, 1), 10_000_000);
    }

    use super::*;

    fn fit() -> HostFacts {
        HostFacts {
            nofile_soft: 1_048_576,
            somaxconn: Some(4096),
            io_uring_disabled: Some(0),
            io_uring_setup_errno: None,
        }
    }

    #[test]
    fn fit_host_has_no_warning() {
        assert!(evaluate(&fit(), 10_000, 4096).is_empty());
    }

    #[test]
    fn unknown_and_unlimited_facts_give_no_warning() {
        let facts = HostFacts {
            nofile_soft: u64::MAX,
            somaxconn: None,
            io_uring_disabled: None,
            io_uring_setup_errno: None,
        };
        assert!(evaluate(&facts, u64::MAX, u32::MAX).is_empty());
    }

    #[test]
    fn nofile_needs_two_per_connection_plus_reserve() {
        let mut facts = fit();
        facts.nofile_soft = 2 * 1000 + NOFILE_RESERVE;
        assert!(evaluate(&facts, 1000, 128).is_empty());

        facts.nofile_soft -= 1;
        let warnings = evaluate(&facts, 1000, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("RLIMIT_NOFILE"), "{}", warnings[0]);
        assert!(warnings[0].contains("2064"), "{}", warnings[0]);
        assert!(warnings[0].contains("LimitNOFILE="), "{}", warnings[0]);
    }

    #[test]
    fn default_shell_limit_of_1024_warns() {
        let mut facts = fit();
        facts.nofile_soft = 1024;
        let warnings = evaluate(&facts, 10_000, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("ulimit -n"), "{}", warnings[0]);
    }

    #[test]
    fn somaxconn_below_backlog_warns_with_the_value_to_set() {
        let mut facts = fit();
        facts.somaxconn = Some(128);
        assert!(evaluate(&facts, 100, 128).is_empty());

        let warnings = evaluate(&facts, 100, 4096);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("sysctl -w net.core.somaxconn=4096"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn io_uring_disabled_values() {
        let mut facts = fit();
        for (value, expected) in [
            (None, 0),
            (Some(0), 0),
            (Some(1), 1),
            (Some(2), 1),
            (Some(7), 1),
        ] {
            facts.io_uring_disabled = value;
            let warnings = evaluate(&facts, 100, 128);
            assert_eq!(warnings.len(), expected, "{value:?}: {warnings:?}");
            if expected == 1 {
                assert!(
                    warnings[0].contains("io_uring_disabled=0"),
                    "{}",
                    warnings[0]
                );
            }
        }
        facts.io_uring_disabled = Some(1);
        assert!(evaluate(&facts, 100, 128)[0].contains("io_uring_group"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let facts = HostFacts {
            nofile_soft: 1024,
            somaxconn: Some(128),
            io_uring_disabled: Some(2),
            io_uring_setup_errno: Some(libc::EPERM),
        };
        // EPERM from io_uring_disabled = 2 is reported once, by the sysctl's warning.
        assert_eq!(evaluate(&facts, 10_000, 4096).len(), 3);
    }

    #[test]
    fn io_uring_setup_refusals_name_their_cause() {
        let mut facts = fit();
        facts.io_uring_setup_errno = Some(libc::EPERM);
        let warnings = evaluate(&facts, 100, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("seccomp"), "{}", warnings[0]);
        assert!(warnings[0].contains("io_uring_register"), "{}", warnings[0]);

        facts.io_uring_setup_errno = Some(libc::ENOSYS);
        let warnings = evaluate(&facts, 100, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("5.8"), "{}", warnings[0]);

        facts.io_uring_setup_errno = Some(libc::ENOMEM);
        let warnings = evaluate(&facts, 100, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("RLIMIT_MEMLOCK"), "{}", warnings[0]);
    }

    #[test]
    fn eperm_with_io_uring_disabled_is_reported_once() {
        let mut facts = fit();
        facts.io_uring_disabled = Some(1);
        facts.io_uring_setup_errno = Some(libc::EPERM);
        let warnings = evaluate(&facts, 100, 128);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("io_uring_group"), "{}", warnings[0]);
    }

    #[test]
    fn parses_proc_sys_values() {
        assert_eq!(parse_sysctl::<u32>("4096\n"), Some(4096));
        assert_eq!(parse_sysctl::<u8>("0\n"), Some(0));
        assert_eq!(parse_sysctl::<u32>(""), None);
        assert_eq!(parse_sysctl::<u8>("300\n"), None);
        assert_eq!(parse_sysctl::<u32>("4096\t65536\n"), None);
    }

    #[test]
    fn reads_this_host() {
        let facts = HostFacts::read();
        assert!(facts.nofile_soft > 0);
        // The real check never panics, whatever it finds.
        let _ = check_host(1, 1);
    }
}
