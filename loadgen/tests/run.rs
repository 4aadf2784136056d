//! `loadgen run` end to end against `loadgen serve`, each run bounded to a few seconds.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::{get, Backend, BIN};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("run")
        .args(args)
        .output()
        .expect("spawn loadgen run")
}

/// Runs with `--json` and returns the parsed result object.
fn run_json(args: &[&str]) -> Value {
    let out = run(&[args, &["--json"]].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen run {args:?} failed: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn url(b: &Backend, path: &str) -> String {
    format!("http://{}{path}", b.addr())
}

fn errors(v: &Value) -> u64 {
    ["connect", "timeout", "reset", "parse"]
        .iter()
        .map(|k| v["errors"][k].as_u64().unwrap())
        .sum()
}

#[test]
fn count_mode_gets_exactly_n_ok_responses() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--name", "n"]);
    let v = run_json(&[&url(&b, "/"), "-n", "1000", "-c", "7"]);
    assert_eq!(v["requests"], 1000, "{v}");
    assert_eq!(v["status"]["200"], 1000, "{v}");
    assert_eq!(errors(&v), 0, "{v}");
    assert_eq!(v["bytes"].as_u64().unwrap() % 1000, 0, "{v}");
    // Keep-alive: 7 connections for 1000 requests (+1 for the stats request itself).
    let stats: Value = serde_json::from_slice(&get(b.addr(), "/stats").body).unwrap();
    assert_eq!(stats["connections"], 8, "{stats}");
}

#[test]
fn json_has_every_documented_field() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let v = run_json(&[&url(&b, "/"), "-d", "300ms", "-c", "2"]);
    for k in [
        "requests",
        "duration_s",
        "rps",
        "bytes",
        "bytes_per_s",
        "latency_us",
        "status",
        "errors",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    for k in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
        assert!(
            v["latency_us"][k].as_f64().unwrap() > 0.0,
            "latency_us.{k}: {v}"
        );
    }
    let l = &v["latency_us"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());
    assert!(
        (v["duration_s"].as_f64().unwrap() - 0.3).abs() < 0.01,
        "{v}"
    );
    assert_eq!(v["mode"], "closed");
}

#[test]
fn open_loop_delivers_the_rate() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let v = run_json(&[&url(&b, "/"), "-R", "500", "-d", "2s", "-c", "4"]);
    let n = v["requests"].as_u64().unwrap();
    assert!((980..=1020).contains(&n), "{v}");
    assert_eq!(v["mode"], "open");
    assert_eq!(v["target_rps"], 500.0);
}

#[test]
fn warmup_is_not_counted() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let v = run_json(&[
        &url(&b, "/"),
        "-R",
        "200",
        "-d",
        "1s",
        "--warmup",
        "500ms",
        "-c",
        "2",
    ]);
    let n = v["requests"].as_u64().unwrap();
    assert!((195..=205).contains(&n), "{v}");
    let stats: Value = serde_json::from_slice(&get(b.addr(), "/stats").body).unwrap();
    let served = stats["requests"].as_u64().unwrap();
    assert!((290..=310).contains(&served), "server saw {served}: {v}");
}

#[test]
fn pipelining_with_chunked_responses_and_a_body() {
    let b = Backend::start(&[
        "--listen",
        "127.0.0.1:0",
        "--chunked",
        "--body-size",
        "1000",
    ]);
    let v = run_json(&[&url(&b, "/"), "-n", "2000", "-c", "4", "--pipeline", "8"]);
    assert_eq!(v["status"]["200"], 2000, "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 2000 * 1000, "{v}");
    let v = run_json(&[
        &url(&b, "/"),
        "-n",
        "50",
        "-m",
        "POST",
        "--body",
        "hello",
        "-H",
        "X-A: b",
    ]);
    assert_eq!(v["status"]["200"], 50, "{v}");
    let v = run_json(&[&url(&b, "/"), "-n", "50", "-m", "HEAD", "--pipeline", "4"]);
    assert_eq!(v["status"]["200"], 50, "{v}");
}

#[test]
fn server_that_closes_and_no_keepalive() {
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--close"]);
    let v = run_json(&[&url(&b, "/"), "-n", "300", "-c", "3", "--pipeline", "4"]);
    assert_eq!(v["status"]["200"], 300, "{v}");
    assert_eq!(errors(&v), 0, "{v}");

    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    let v = run_json(&[&url(&b, "/"), "-n", "200", "-c", "2", "--no-keepalive"]);
    assert_eq!(v["status"]["200"], 200, "{v}");
    let stats: Value = serde_json::from_slice(&get(b.addr(), "/stats").body).unwrap();
    assert_eq!(stats["connections"], 201, "{stats}");
}

#[test]
fn a_connection_closed_while_idle_is_retried_not_counted() {
    // Every request finds its connection closed by the server (idle 100 ms > 30 ms).
    let b = Backend::start(&["--listen", "127.0.0.1:0", "--idle-close", "30ms"]);
    let v = run_json(&[&url(&b, "/"), "-R", "20", "-d", "1s", "-c", "2"]);
    assert_eq!(v["status"]["200"], 20, "{v}");
    assert_eq!(errors(&v), 0, "{v}");
    let stats: Value = serde_json::from_slice(&get(b.addr(), "/stats").body).unwrap();
    assert!(stats["connections"].as_u64().unwrap() >= 15, "{stats}");
}

#[test]
fn errors_are_counted_by_kind() {
    // A port held bound but not listening: connecting is refused, and no other test can
    // take the port meanwhile (a closed backend's port could be reused by a parallel test).
    let (_held, port) = refused_port();
    let out = run(&[
        &format!("http://127.0.0.1:{port}/"),
        "-n",
        "5",
        "-c",
        "1",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"]["connect"], 5, "{v}");

    let b = Backend::start(&["--listen", "127.0.0.1:0", "--delay", "2s"]);
    let out = run(&[
        &url(&b, "/"),
        "-n",
        "2",
        "-c",
        "2",
        "--timeout",
        "200ms",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"]["timeout"], 2, "{v}");

    let b = Backend::start(&["--listen", "127.0.0.1:0", "--fail-ratio", "1"]);
    let v = run_json(&[&url(&b, "/"), "-n", "20"]);
    assert_eq!(v["status"]["500"], 20, "{v}");
}

#[test]
fn a_healthy_run_longer_than_the_timeout_has_no_timeouts() {
    let b = Backend::start(&["--listen", "127.0.0.1:0"]);
    for load in [&["-c", "4"][..], &["-c", "4", "-R", "400"]] {
        let v = run_json(
            &[
                &[url(&b, "/").as_str(), "-d", "1s", "--timeout", "200ms"],
                load,
            ]
            .concat(),
        );
        assert_eq!(errors(&v), 0, "{v}");
    }
}

#[test]
fn open_loop_sees_a_stall_that_closed_loop_hides() {
    let stalled = [
        "--listen",
        "127.0.0.1:0",
        "--stall-once-after",
        "200",
        "--stall",
        "500ms",
    ];
    let b = Backend::start(&stalled);
    let open = run_json(&[&url(&b, "/"), "-R", "400", "-d", "2s", "-c", "4"]);
    let b = Backend::start(&stalled);
    let closed = run_json(&[&url(&b, "/"), "-d", "2s", "-c", "1"]);
    let ms = |v: &Value, k: &str| v["latency_us"][k].as_f64().unwrap() / 1000.0;
    // Open loop: ~200 requests were due during the stall, so p99 is in the hundreds of ms.
    assert!(ms(&open, "max") >= 450.0, "{open}");
    // ...but most requests were not due during the stall.
    assert!(ms(&open, "p50") < 50.0, "{open}");
    assert!(ms(&open, "p99") >= 100.0, "{open}");
    // Closed loop, one connection: one slow request among thousands.
    assert!(ms(&closed, "max") >= 450.0, "{closed}");
    assert!(ms(&closed, "p99") < 100.0, "{closed}");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for (args, needle) in [
        (&["http://127.0.0.1:1/", "-c", "0"][..], "--connections"),
        (&["http://127.0.0.1:1/", "-d", "10"], "unit"),
        (&["http://127.0.0.1:1/", "-R", "0"], "rate"),
        (
            &["http://127.0.0.1:1/", "-n", "5", "-d", "1s"],
            "cannot be used with",
        ),
        (&["ftp://127.0.0.1:1/"], "http://"),
        (&["http://127.0.0.1:1/", "-H", "nocolon"], "Name: value"),
        (
            &["http://127.0.0.1:1/", "--no-keepalive", "--pipeline", "2"],
            "--pipeline",
        ),
        (&["https://127.0.0.1:1/"], "--insecure"),
        (&[], "URL"),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A loopback TCP port bound but not listening, and the socket holding it.
fn refused_port() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2)/bind(2)/getsockname(2) calls on a descriptor this function
    // creates and hands over to an OwnedFd; the address structs are initialised and sized.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0
        );
        let mut got: libc::sockaddr_in = std::mem::zeroed();
        let mut got_len = len;
        assert_eq!(
            libc::getsockname(fd, &mut got as *mut _ as *mut libc::sockaddr, &mut got_len),
            0
        );
        (owned, u16::from_be(got.sin_port))
    }
}
