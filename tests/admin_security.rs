//! The admin listener against what should not reach it, end to end: what `/ready` reports,
//! browsers (cross-origin writes, DNS rebinding), the Unix socket listener, a non-loopback
//! listener without a token, and many connections holding half-sent requests.

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;
use support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn named(b: &Backend) -> String {
    format!("addr = \"{}\"\nname = \"{}\"", b.addr, b.name)
}

/// `config` with `admin_extra` lines in the [admin] table.
fn with_admin(cfg: &str, admin_extra: &str) -> String {
    assert!(cfg.contains(ADMIN));
    cfg.replace(ADMIN, &format!("{ADMIN}{admin_extra}\n"))
}

/// One raw admin request on a fresh connection.
fn raw(rl: &Ringlb, req: &str) -> Response {
    let mut c = Client::connect(rl.admin);
    c.send(req.as_bytes());
    c.response()
}

fn post_json(host: &str, path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn state_of(rl: &Ringlb, server: &str) -> String {
    let r = raw(
        rl,
        &format!("GET /api/upstreams/app/servers/{server} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["state"].as_str().unwrap_or_default().to_string()
}

/// A config with upstream `app` (the given servers, routed from the listener) and upstream
/// `empty` (one server, routed by Host `empty.test`).
fn two_upstreams(app: &[String], empty_server: &str) -> String {
    let mut cfg = config(app, "", "");
    cfg = cfg.replace(
        "[[routes]]\nlistener = \"http\"\nupstream = \"app\"\n",
        "[[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [[routes]]\nlistener = \"http\"\nhost = \"empty.test\"\nupstream = \"empty\"\n",
    );
    cfg.push_str(&format!(
        "[upstreams.empty]\n[[upstreams.empty.servers]]\n{empty_server}\n"
    ));
    cfg
}

#[test]
fn ready_reports_the_process_not_an_empty_upstream() {
    let a = Backend::start("a", &[]);
    let e = Backend::start("e", &[]);
    let rl = Ringlb::start(&two_upstreams(&[named(&a)], &named(&e)));
    assert_eq!(rl.admin_get("/ready").status, 200);
    let r = raw(
        &rl,
        &post_json(
            "localhost",
            "/api/upstreams/empty/servers/e",
            r#"{"state":"maint"}"#,
            "",
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Upstream `empty` has no usable server, yet the process serves: ready.
    let r = rl.admin_get("/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(rl.admin_get("/live").status, 200);
    assert_eq!(rl.get("/").status, 200);
}

#[test]
fn ready_requires_counts_usable_servers_of_the_listed_upstreams() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let e = Backend::start("e", &[]);
    let cfg = with_admin(
        &two_upstreams(&[named(&a), named(&b)], &named(&e)),
        "ready_requires = [\"app\"]\nready_min_servers = 2",
    );
    let rl = Ringlb::start(&cfg);
    assert_eq!(rl.admin_get("/ready").status, 200);
    // `empty` is not listed: its state does not matter.
    let maint = |u: &str, s: &str, state: &str| {
        let body = format!("{{\"state\":\"{state}\"}}");
        let path = format!("/api/upstreams/{u}/servers/{s}");
        let r = raw(&rl, &post_json("localhost", &path, &body, ""));
        assert_eq!(r.status, 200, "{}", r.text());
    };
    maint("empty", "e", "maint");
    assert_eq!(rl.admin_get("/ready").status, 200);
    // One of app's two servers out: fewer than ready_min_servers.
    maint("app", "b", "drain");
    let r = rl.admin_get("/ready");
    assert_eq!(r.status, 503);
    assert!(
        r.text()
            .contains("upstream app has 1 usable servers, fewer than 2"),
        "{}",
        r.text()
    );
    maint("app", "b", "ready");
    assert_eq!(rl.admin_get("/ready").status, 200);

    // Validation names the field.
    for (extra, needle) in [
        (
            "ready_requires = [\"nope\"]",
            "admin.ready_requires[0]: no upstream named \"nope\"",
        ),
        (
            "ready_requires = [\"empty\"]\nready_min_servers = 2",
            "admin.ready_requires[0]: upstream \"empty\" has 1 servers",
        ),
        ("ready_min_servers = 1", "admin.ready_min_servers"),
        (
            "ready_requires = [\"app\"]\nready_min_servers = 0",
            "admin.ready_min_servers: must be 1..=10000",
        ),
    ] {
        let (ok, text) = check(&with_admin(&two_upstreams(&[named(&a)], &named(&e)), extra));
        assert!(!ok, "{extra}");
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

/// `ringlb check` on `config`: (success, stderr).
fn check(config: &str) -> (bool, String) {
    let path = temp_path("check.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(RINGLB)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn browser_requests_cannot_change_state_or_read_the_api() {
    let a = Backend::start("a", &[]);
    let cfg = with_admin(
        &config(&[named(&a)], "", ""),
        "allow_origins = [\"https://ops.example.com\"]\nallow_hosts = [\"lb1.internal\"]",
    );
    let rl = Ringlb::start(&cfg);
    let path = "/api/upstreams/app/servers/a";
    let body = r#"{"state":"maint"}"#;

    // A "simple" cross-origin request (no preflight): text/plain, a form, no type at all.
    for ct in [
        "Content-Type: text/plain\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "",
    ] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = raw(&rl, &req);
        assert_eq!(r.status, 415, "{ct:?}: {}", r.text());
    }
    let r = raw(
        &rl,
        "POST /api/reload HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=b",
    );
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(state_of(&rl, "a"), "up");

    // A page's fetch carries its Origin: refused unless allowed.
    let r = raw(
        &rl,
        &post_json("localhost", path, body, "Origin: https://evil.example\r\n"),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = raw(
        &rl,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nOrigin: null\r\n\r\n",
    );
    assert_eq!(r.status, 403);
    assert_eq!(state_of(&rl, "a"), "up");

    // DNS rebinding: the page's own name as Host.
    for host in [
        "evil.example",
        "evil.example:9901",
        "localhost.evil.example",
    ] {
        for p in ["/api/upstreams", "/metrics"] {
            let r = raw(&rl, &format!("GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(r.status, 421, "{host} {p}");
            assert!(!r.text().contains("upstreams"), "{}", r.text());
        }
    }

    // What is served: IP literals, localhost, allow_hosts, any port; an allowed Origin.
    let port = rl.admin.port();
    for host in [
        format!("127.0.0.1:{port}"),
        "[::1]:1".into(),
        "localhost".into(),
        "LB1.internal:9901".into(),
    ] {
        let r = raw(
            &rl,
            &format!("GET /api/upstreams HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        );
        assert_eq!(r.status, 200, "{host}");
    }
    let r = raw(
        &rl,
        &post_json(
            "localhost",
            path,
            body,
            "Origin: https://ops.example.com\r\n",
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(state_of(&rl, "a"), "maint");
}

#[test]
fn a_non_loopback_admin_listener_needs_a_token() {
    let cfg = config(&[server("127.0.0.1:9".parse().unwrap())], "", "")
        .replace(ADMIN, "[admin]\nlisten = \"0.0.0.0:0\"\n");
    let (ok, text) = check(&cfg);
    assert!(!ok, "{text}");
    assert!(
        text.contains("admin.listen") && text.contains("admin.token"),
        "{text}"
    );
    // At start too.
    let path = temp_path("open-admin.toml");
    std::fs::write(&path, &cfg).unwrap();
    let mut cmd = std::process::Command::new(RINGLB);
    cmd.args(["run", "-c"]).arg(&path);
    let mut p = spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    let _ = std::fs::remove_file(&path);

    let with_token = cfg.replace(
        "listen = \"0.0.0.0:0\"\n",
        "listen = \"0.0.0.0:0\"\ntoken = \"0123456789abcdef0123\"\n",
    );
    let (ok, text) = check(&with_token);
    assert!(ok, "{text}");
}

/// One request over the Unix socket at `path`; the raw answer.
fn unix_request(path: &std::path::Path, req: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect to the admin socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn unix_socket_admin_listener_with_mode_replacing_a_stale_file() {
    let a = Backend::start("a", &[]);
    let dir = temp_path("admin-dir");
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("admin.sock");
    // A stale socket file, as a crashed process leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let cfg = config(&[named(&a)], "", "").replace(
        ADMIN,
        &format!(
            "[admin]\nlisten = \"unix:{}\"\nsocket_mode = \"0660\"\n",
            sock.display()
        ),
    );
    let rl = Ringlb::start(&cfg);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "{mode:o}");

    let r = unix_request(&sock, "GET /ready HTTP/1.1\r\nHost: anything\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = unix_request(&sock, "GET /api/upstreams HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"app\""),
        "{r}"
    );
    let body = r#"{"state":"drain"}"#;
    let r = unix_request(
        &sock,
        &post_json("x", "/api/upstreams/app/servers/a", body, ""),
    );
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("drain"), "{r}");

    // A second process cannot take over a live socket.
    let path = temp_path("second.toml");
    std::fs::write(&path, &cfg).unwrap();
    let mut cmd = std::process::Command::new(RINGLB);
    cmd.args(["run", "-c"]).arg(&path);
    let mut p = spawn(cmd);
    let status = p.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(p
        .wait_line(Duration::from_secs(2), |l| l
            .contains("another process listens"))
        .is_some());
    let r = unix_request(&sock, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    drop(rl);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `/proc/PID/status` field in kB.
fn status_kb(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {text}"))
}

#[test]
fn half_sent_posts_are_capped_and_hold_little_memory() {
    const CONNS: usize = 400;
    let a = Backend::start("a", &[]);
    let rl = Ringlb::start(&config(&[named(&a)], "", ""));
    assert_eq!(rl.admin_get("/live").status, 200);
    let pid = rl.proc.pid();
    let peak_kb = || status_kb(pid, "VmHWM:").max(status_kb(pid, "VmRSS:"));
    let before = peak_kb();

    // Each announces a 32 KiB chunk and sends 100 bytes of it.
    let head = "PATCH /api/upstreams/app/servers/a HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n8000\r\n";
    let mut held = Vec::new();
    for _ in 0..CONNS {
        let mut s = std::net::TcpStream::connect(rl.admin).unwrap();
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&[b' '; 100]);
        held.push(s);
    }
    // Let worker 0 take them all in; the peak is what counts.
    thread::sleep(Duration::from_millis(1500));
    let grown = peak_kb().saturating_sub(before);

    // Beyond admin.max_connections (64) they were closed at accept.
    let mut closed = 0;
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 64];
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset};
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if matches!(e.kind(), ConnectionReset | ConnectionAborted) => closed += 1,
            _ => {}
        }
    }
    assert!(
        closed >= CONNS - 64 - 8,
        "{closed} of {CONNS} connections closed"
    );
    // A generous bound: 3,000 such requests took 280 MB (93 KB each) before the fix.
    assert!(
        grown < 12 * 1024,
        "RSS grew by {grown} kB for {CONNS} half-sent requests"
    );
    drop(held);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(rl.admin_get("/live").status, 200);
    assert_eq!(state_of(&rl, "a"), "up");
}
