//! Binary upgrade (SIGUSR2): a new ringlb process inherits every listening socket, and once it
//! serves the old one stops accepting, finishes its requests and exits, with no failed
//! request on the way; a new process that cannot start leaves the old one serving; under
//! systemd the new process says `MAINPID=` and `READY=1`, the old one never `STOPPING=1`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// The new process, started by ringlb (not by the test): killed when the test ends, passed or
/// failed, unless it already exited.
struct Started(i32);

impl Started {
    fn alive(&self) -> bool {
        // SAFETY: kill(2) with signal 0 only checks that the pid exists.
        unsafe { libc::kill(self.0, 0) == 0 }
    }

    /// SIGTERM, then waits (bounded) until the process is gone.
    fn stop(&self) -> bool {
        // SAFETY: kill(2) on the pid of the process this test caused to start.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.alive() || zombie(self.0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if self.alive() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
}

/// An exited process not reaped yet (its parent is gone and the reaper may be slow).
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Waits for the old process's line naming the new process; its pid.
fn new_process(p: &Proc) -> Started {
    let line = p
        .wait_line(Duration::from_secs(20), |l| {
            l.contains("binary upgrade: process") || l.contains("binary upgrade failed")
        })
        .expect("the upgrade's outcome is logged");
    let pid = line
        .split("binary upgrade: process ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    Started(pid)
}

#[test]
fn sigusr2_hands_over_to_a_new_process_without_a_failed_request() {
    let b = Backend::start("b", &[]);
    let text = config(&[server(b.addr)], "", "").replace("workers = 1", "workers = 2");
    let mut lb = Ringlb::start(&text);
    let old = lb.proc.pid();
    let stop = Arc::new(AtomicBool::new(false));
    // Keep-alive clients and clients with a new connection per request.
    let threads = load(lb.addr(), 6, 3, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    lb.proc.signal(libc::SIGUSR2);
    let new = new_process(&lb.proc);
    assert_ne!(new.0, old);
    let status = lb
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("old exits");
    assert!(status.success(), "{status:?}");
    // Only the new process is left: it serves, on the same listener and admin sockets.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(lb.get("/").status, 200);
    }
    assert_eq!(lb.admin_get("/ready").status, 200);
    stop.store(true, Ordering::Relaxed);
    let (total, failures) = load_results(threads);
    assert_eq!(failures, 0, "{total:?}");
    assert!(total.get("b").is_some_and(|&n| n > 50), "{total:?}");
    assert!(new.stop(), "the new process stops on SIGTERM");
}

#[test]
fn a_new_process_that_fails_leaves_the_old_one_serving() {
    let b = Backend::start("b", &[]);
    let text = config(&[server(b.addr)], "", "");
    let lb = Ringlb::start(&text);
    // The new process reads the file at start: a bad one ends it before it is ready.
    std::fs::write(&lb.config_path, "[[listeners]]\n").unwrap();
    lb.proc.signal(libc::SIGUSR2);
    let line = lb
        .proc
        .wait_line(Duration::from_secs(20), |l| {
            l.contains("binary upgrade failed")
        })
        .expect("the failure is logged");
    assert!(
        line.contains("ended before it was ready") && line.contains("keeps serving"),
        "{line}"
    );
    assert_eq!(lb.get("/").status, 200);
    assert_eq!(lb.admin_get("/ready").status, 200);
    // A reload still works, and so does the next upgrade.
    rewrite(&lb, &text);
    assert_eq!(post(&lb, "/api/reload", "").status, 200);
    lb.proc.signal(libc::SIGUSR2);
    let new = new_process(&lb.proc);
    assert_eq!(lb.get("/").status, 200);
    assert!(new.stop());
}

/// The next datagram with a line `key`.
fn notified(sock: &UnixDatagram, key: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|_| panic!("no {key}: {seen:?}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.lines().any(|l| l.starts_with(key)) {
            return msg;
        }
    }
}

#[test]
fn under_systemd_the_new_process_becomes_the_main_pid() {
    let b = Backend::start("b", &[]);
    let sock_path = temp_path("upgrade-notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let path = temp_path("upgrade-notify.toml");
    std::fs::write(&path, with_test_engine(&config(&[server(b.addr)], "", ""))).unwrap();
    let mut cmd = Command::new(RINGLB);
    cmd.args(["run", "-c"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &sock_path);
    let mut p = spawn(cmd);
    let mut seen = Vec::new();
    notified(&sock, "READY=1", &mut seen);
    p.signal(libc::SIGUSR2);
    let msg = notified(&sock, "MAINPID=", &mut seen);
    let pid: i32 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{msg:?}"));
    let new = Started(pid);
    assert_ne!(pid, p.pid());
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(p.wait_exit(Duration::from_secs(15)).is_some());
    // The old process said nothing that would make systemd think the service stops.
    assert!(!seen.iter().any(|m| m.contains("STOPPING=1")), "{seen:?}");
    assert!(new.stop());
    let _ = std::fs::remove_file(&sock_path);
    let _ = std::fs::remove_file(&path);
}
