//! Choosing the I/O engine: `runtime.engine = "auto" | "io_uring" | "epoll"`.
//! (Every other test runs on each engine: `make test-epoll`, `make test-uring`.)

mod support;

use std::time::Duration;
use support::*;

fn with_engine(backend: &Backend, engine: &str) -> String {
    config(&[server(backend.addr)], "", "").replacen(
        "[runtime]\n",
        &format!("[runtime]\nengine = \"{engine}\"\n"),
        1,
    )
}

/// The engine named by the startup line "N workers running on CPUs [..], engine NAME".
fn engine_line(lb: &Ringlb) -> String {
    lb.proc
        .wait_line(Duration::from_secs(10), |l| l.contains("workers running"))
        .expect("the workers' startup line")
}

/// Whether this host lets ringlb run io_uring cores (what `auto` probes), asked on a thread of
/// its own: closing an io_uring queues kernel work on the creating thread that interrupts its
/// next socket read with a timeout (EINTR), here a test client's.
fn io_uring_here() -> bool {
    std::thread::spawn(probe_io_uring).join().expect("probe")
}

fn probe_io_uring() -> bool {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes at most 120 bytes (struct io_uring_params) of the
    // live, zeroed buffer; a non-negative result is a descriptor we own and close at once.
    unsafe {
        let fd = libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr());
        if fd < 0 {
            return false;
        }
        libc::close(fd as i32);
    }
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() == "0")
        .unwrap_or(true)
}

#[test]
fn epoll_serves_requests_and_says_so_at_start() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&with_engine(&b, "epoll"));
    let line = engine_line(&lb);
    assert!(line.ends_with("engine epoll"), "{line}");
    serves_and_stops(lb);
}

/// Serves a few requests (keep-alive, a larger body), then stops gracefully.
fn serves_and_stops(lb: Ringlb) {
    for _ in 0..20 {
        let r = lb.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-backend"), Some("b"));
    }
    let mut c = Client::connect(lb.addr());
    for _ in 0..5 {
        c.send(b"GET /size/100000 HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.response();
        assert_eq!((r.status, r.body.len()), (200, 100_000));
    }
    drop(c);
    let mut lb = lb;
    lb.proc.signal(libc::SIGTERM);
    let status = lb.proc.wait_exit(Duration::from_secs(10)).expect("stops");
    assert!(status.success());
}

#[test]
fn the_own_io_uring_engine_serves_requests_and_says_so_at_start() {
    if !io_uring_here() {
        return;
    }
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&with_engine(&b, "io_uring"));
    let line = engine_line(&lb);
    assert!(line.ends_with("engine io_uring"), "{line}");
    serves_and_stops(lb);
}

/// The path kernels without DEFER_TASKRUN take (before 6.1), forced here by the environment.
#[test]
fn the_coop_taskrun_ring_serves_requests() {
    if !io_uring_here() {
        return;
    }
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start_with_env(
        &with_engine(&b, "io_uring"),
        &[("RINGLB_IO_URING_SETUP", "coop_taskrun")],
    );
    let line = lb
        .proc
        .wait_line(Duration::from_secs(10), |l| l.contains("io_uring core:"))
        .expect("the core's setup line");
    assert!(line.contains("SINGLE_ISSUER | COOP_TASKRUN"), "{line}");
    serves_and_stops(lb);
}

/// A value the variable does not know is refused, naming it, not ignored.
#[test]
fn an_unknown_io_uring_setup_is_refused_naming_the_variable() {
    if !io_uring_here() {
        return;
    }
    let b = Backend::start("b", &[]);
    let path = temp_path("config.toml");
    std::fs::write(&path, with_engine(&b, "io_uring")).expect("write config");
    let out = std::process::Command::new(RINGLB)
        .args(["run", "-c"])
        .arg(&path)
        .env("RINGLB_IO_URING_SETUP", "sqpoll")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RINGLB_IO_URING_SETUP=\"sqpoll\""), "{err}");
}

#[test]
fn auto_picks_io_uring_where_the_host_allows_it() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&with_engine(&b, "auto"));
    let line = engine_line(&lb);
    let here = io_uring_here();
    if here {
        assert!(line.ends_with("engine io_uring"), "{line}");
    } else {
        assert!(line.ends_with("engine epoll"), "{line}");
    }
    assert_eq!(lb.get("/").status, 200);
}

#[test]
fn an_unknown_engine_is_a_config_error_naming_the_field() {
    let b = Backend::start("b", &[]);
    let path = temp_path("engine.toml");
    std::fs::write(&path, with_engine(&b, "kqueue")).expect("write");
    let out = std::process::Command::new(RINGLB)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("ringlb check");
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runtime.engine: must be \"auto\", \"io_uring\" or \"epoll\", not \"kqueue\""),
        "{err}"
    );
}

#[test]
fn a_reload_cannot_change_the_engine() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&with_engine(&b, "epoll"));
    // A SIGHUP before every worker runs would be dropped.
    engine_line(&lb);
    std::fs::write(&lb.config_path, with_engine(&b, "io_uring")).expect("rewrite");
    lb.proc.signal(libc::SIGHUP);
    let line = lb
        .proc
        .wait_line(Duration::from_secs(5), |l| l.contains("refused"))
        .expect("the reload is refused");
    assert!(
        line.contains("runtime.engine changed: this needs a restart"),
        "{line}"
    );
    assert_eq!(lb.get("/").status, 200);
}
