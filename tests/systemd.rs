//! systemd's notify protocol: the test binds the datagram socket systemd would and passes it as
//! NOTIFY_SOCKET; ringlb says READY=1 once every worker runs, RELOADING=1 with MONOTONIC_USEC
//! and READY=1 again around a reload (applied or refused), STOPPING=1 on SIGTERM, and pings
//! WATCHDOG=1 when WATCHDOG_USEC asks.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{config, server, spawn, temp_path, Backend, RINGLB};

/// The next datagram, within `limit`.
fn next(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The next datagram with a line `key`, skipping watchdog pings and others.
fn wait_for(sock: &UnixDatagram, key: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = next(sock, left).unwrap_or_else(|| panic!("no {key} within {limit:?}"));
        if msg.lines().any(|l| l == key) {
            return msg;
        }
    }
}

fn monotonic_usec(msg: &str) -> u64 {
    msg.lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {msg:?}"))
}

#[test]
fn ready_reloading_stopping_and_watchdog() {
    let b = Backend::start("b", &[]);
    let sock_path = temp_path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let path = temp_path("notify.toml");
    let good = config(&[server(b.addr)], "", "");
    std::fs::write(&path, &good).unwrap();
    let mut cmd = Command::new(RINGLB);
    cmd.args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000");
    let mut p = spawn(cmd);

    let ready = wait_for(&sock, "READY=1", Duration::from_secs(15));
    assert!(
        ready.contains("STATUS=serving generation") && ready.contains("1 workers"),
        "{ready:?}"
    );
    // Only after the workers run.
    assert!(p
        .wait_line(Duration::from_secs(5), |l| l.contains("workers running"))
        .is_some());
    // Pings every WATCHDOG_USEC / 2.
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2));
    wait_for(&sock, "WATCHDOG=1", Duration::from_secs(2));

    // A reload: RELOADING=1 with the monotonic clock, then READY=1.
    // The test's own CLOCK_MONOTONIC, for comparison.
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let before = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000;
    p.signal(libc::SIGHUP);
    let reloading = wait_for(&sock, "RELOADING=1", Duration::from_secs(10));
    let at = monotonic_usec(&reloading);
    assert!(at >= before && at < before + 10_000_000, "{at} vs {before}");
    let again = wait_for(&sock, "READY=1", Duration::from_secs(10));
    assert!(!again.contains("refused"), "{again:?}");

    // A refused reload ends with READY=1 too (the old config keeps serving).
    std::fs::write(&path, "[[listeners]]\n").unwrap();
    p.signal(libc::SIGHUP);
    wait_for(&sock, "RELOADING=1", Duration::from_secs(10));
    let after_refusal = wait_for(&sock, "READY=1", Duration::from_secs(10));
    assert!(after_refusal.contains("refused"), "{after_refusal:?}");

    p.signal(libc::SIGTERM);
    wait_for(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn no_watchdog_for_another_pid() {
    let b = Backend::start("b", &[]);
    let sock_path = temp_path("notify2.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let path = temp_path("notify2.toml");
    std::fs::write(&path, config(&[server(b.addr)], "", "")).unwrap();
    let mut cmd = Command::new(RINGLB);
    cmd.args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut p = spawn(cmd);
    wait_for(&sock, "READY=1", Duration::from_secs(15));
    // Nothing else arrives: no pings meant for pid 1.
    assert_eq!(next(&sock, Duration::from_millis(400)), None);
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(Duration::from_secs(10)).is_some());
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&path);
}
