//! What an operator meets first: ringlb's own log (`[log]`: level, modules, JSON, journald
//! priorities), `ringlb check` (every problem with `file:line:column`, "did you mean",
//! `--dump`), and file paths relative to the config file.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{spawn, temp_path, Backend, Client, Proc, RINGLB};

/// A free loopback port (bound and released: the tests that use it start ringlb at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A config on ephemeral ports except the admin listener, which tests poll for `/ready`
/// (a quiet log does not say when ringlb is up).
fn config(backend: &Backend, admin_port: u16, log: &str) -> String {
    format!(
        "[runtime]\nworkers = 1\nshutdown_grace = \"2s\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [log]\n{log}\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{}\"\n",
        backend.addr
    )
}

fn run_cmd(path: &std::path::Path) -> Command {
    let mut cmd = Command::new(RINGLB);
    cmd.args(["run", "-c"]).arg(path).env_remove("RUST_LOG");
    cmd.env_remove("JOURNAL_STREAM").env_remove("NOTIFY_SOCKET");
    cmd
}

/// Polls `/ready` on the admin port until 200 (bounded).
fn wait_ready(admin_port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", admin_port)) {
            drop(s);
            let mut c = Client::connect(([127, 0, 0, 1], admin_port).into());
            c.send(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            if c.try_response(false).is_some_and(|r| r.status == 200) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ringlb not ready on :{admin_port}");
}

/// SIGTERM, then every line until exit.
fn stop_and_collect(mut p: Proc) -> Vec<String> {
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(Duration::from_secs(10)).expect("ringlb exits");
    assert!(status.success(), "{status:?}");
    let mut lines = Vec::new();
    while let Some(l) = p.next_line(Duration::from_millis(300)) {
        lines.push(l);
    }
    lines
}

#[test]
fn json_logs_are_one_object_per_line() {
    let b = Backend::start("b", &[]);
    let port = free_port();
    let path = temp_path("json.toml");
    std::fs::write(&path, config(&b, port, "format = \"json\"")).unwrap();
    let p = spawn(run_cmd(&path));
    wait_ready(port);
    let mut lines = Vec::new();
    while let Some(l) = p.next_line(Duration::from_millis(300)) {
        lines.push(l);
    }
    lines.extend(stop_and_collect(p));
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for o in &objects {
        for key in ["time", "level", "target", "message"] {
            assert!(o[key].is_string(), "{key} missing in {o}");
        }
        assert!(o["fields"].is_object(), "{o}");
    }
    let running = objects
        .iter()
        .find(|o| {
            o["message"]
                .as_str()
                .is_some_and(|m| m.contains("workers running"))
        })
        .expect("workers running line");
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["target"], "ringlb::server");
    assert!(
        objects.iter().any(|o| o["message"] == "stopped"),
        "{lines:?}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn levels_come_from_the_config_and_rust_log_overrides_them() {
    let b = Backend::start("b", &[]);
    // warn everywhere, info for the reload module only.
    let port = free_port();
    let path = temp_path("levels.toml");
    let text = config(
        &b,
        port,
        "level = \"warn\"\nmodules = { \"ringlb::server::reload\" = \"info\" }",
    );
    std::fs::write(&path, &text).unwrap();
    let p = spawn(run_cmd(&path));
    wait_ready(port);
    p.signal(libc::SIGHUP);
    let reloaded = p.wait_line(Duration::from_secs(10), |l| l.contains("reloaded"));
    assert!(reloaded.is_some(), "the reload module logs at info");
    let lines = stop_and_collect(p);
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("workers running") || l.contains("INFO")),
        "{lines:?}"
    );

    // RUST_LOG wins over the file.
    let port = free_port();
    std::fs::write(&path, config(&b, port, "level = \"error\"")).unwrap();
    let mut cmd = run_cmd(&path);
    cmd.env("RUST_LOG", "info");
    let p = spawn(cmd);
    assert!(p
        .wait_line(Duration::from_secs(15), |l| l.contains("workers running"))
        .is_some());
    stop_and_collect(p);
    let _ = std::fs::remove_file(path);
}

#[test]
fn under_journald_lines_carry_syslog_priorities() {
    let b = Backend::start("b", &[]);
    let port = free_port();
    let path = temp_path("journal.toml");
    std::fs::write(&path, config(&b, port, "level = \"info\"")).unwrap();
    // stderr is a file whose device and inode JOURNAL_STREAM names, as systemd does for the
    // journal's stream socket.
    let log_path = temp_path("journal.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut cmd = run_cmd(&path);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().unwrap();
    wait_ready(port);
    // A bad file: the refused reload is an error line.
    std::fs::write(&path, "[[listeners]]\n").unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let read = |p: &std::path::Path| {
        let mut s = String::new();
        std::fs::File::open(p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .unwrap();
        s
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(&log_path).contains("refused") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = read(&log_path);
    let running = text
        .lines()
        .find(|l| l.contains("workers running"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(running.starts_with("<6>ringlb::server: "), "{running}");
    let refused = text
        .lines()
        .find(|l| l.contains("refused"))
        .expect("refused");
    assert!(refused.starts_with("<3>"), "{refused}");
    assert!(text.lines().all(|l| l.starts_with('<')), "{text}");

    // The same variable naming another stream (inherited by a redirected child): no prefix.
    let port = free_port();
    std::fs::write(&path, config(&b, port, "level = \"info\"")).unwrap();
    let mut cmd = run_cmd(&path);
    cmd.env("JOURNAL_STREAM", "1:1");
    let p = spawn(cmd);
    let line = p
        .wait_line(Duration::from_secs(15), |l| l.contains("workers running"))
        .expect("running");
    assert!(!line.starts_with('<'), "{line}");
    stop_and_collect(p);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(log_path);
}

fn check(text: &str, extra: &[&str]) -> (Option<i32>, String, String, std::path::PathBuf) {
    let path = temp_path("check.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(RINGLB)
        .args(["check", "-c"])
        .arg(&path)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path,
    )
}

#[test]
fn check_reports_every_problem_with_file_line_and_column() {
    let text = "\
[runtime]
workerz = 2

[[listeners]]
name = \"http\"
listen = \"127.0.0.1:8080\"

[[routes]]
listener = \"http\"
upstream = \"api\"

[upstreams.api]
balance = \"least_conn\"
health_check = { interval = \"1s\", rsie = 2 }

[[upstreams.api.servers]]
addr = \"127.0.0.1:9001\"
weigth = 5

[[upstreams.api.servers]]
addr = \"127.0.0.1:9002\"
weight = 5000
";
    let (code, _, err, path) = check(text, &[]);
    assert_eq!(code, Some(1), "{err}");
    let p = path.display();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{p}:2:1: runtime.workerz: unknown key `workerz`; did you mean `workers`?"),
            format!(
                "{p}:14:35: upstreams.api.health_check.rsie: unknown key `rsie`; did you mean `rise`?"
            ),
            format!(
                "{p}:18:1: upstreams.api.servers[0].weigth: unknown key `weigth`; did you mean `weight`?"
            ),
            format!("{p}:22:1: upstreams.api.servers[1].weight: must be 1..=1000"),
        ],
        "{err}"
    );
    let _ = std::fs::remove_file(path);

    // Not TOML: the parser's position.
    let (code, _, err, path) = check("[runtime]\nworkers = = 1\n", &[]);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!("{}:2:11: ", path.display())),
        "{err}"
    );
    let _ = std::fs::remove_file(path);

    // A missing required field: the enclosing table.
    let (code, _, err, path) = check(
        "[[listeners]]\nname = \"http\"\n[upstreams.a]\n[[upstreams.a.servers]]\nname = \"x\"\n",
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "{}:1:1: listeners[0]: missing field `listen`",
            path.display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn check_dump_prints_the_effective_config_with_defaults() {
    let text = "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
                [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
                [upstreams.app]\nhealth_check = { interval = \"500ms\" }\n\
                [[upstreams.app.servers]]\naddr = \"127.0.0.1:9001\"\n";
    let (code, out, err, path) = check(text, &["--dump"]);
    assert_eq!(code, Some(0), "{err}");
    for line in [
        "shutdown_grace = \"30s\"",
        "client_header = \"10s\"",
        "listen = \"127.0.0.1:9901\"",
        "max_request_head = \"16KiB\"",
        "balance = \"round_robin\"",
        "timeout = \"500ms\"",
        "weight = 1",
        "keepalive = 32",
        "level = \"info\"",
        "format = \"text\"",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
    }
    // The dump is a config that checks.
    let (code, again, err, path2) = check(&out, &["--dump"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again, out);
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path2);
}

#[test]
fn file_paths_are_relative_to_the_config_file() {
    let dir = temp_path("confdir");
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("certs/site.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("certs/site.key"), ck.key_pair.serialize_pem()).unwrap();
    let config = "[[listeners]]\nname = \"https\"\nlisten = \"127.0.0.1:8443\"\n\
                  tls = { certs = [{ cert = \"certs/site.pem\", key = \"certs/site.key\" }] }\n\
                  [access_log]\nformat = \"common\"\npath = \"logs/access.log\"\n\
                  [[routes]]\nlistener = \"https\"\nupstream = \"app\"\n\
                  [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"127.0.0.1:9001\"\n";
    let cfg = dir.join("ringlb.toml");
    std::fs::write(&cfg, config).unwrap();
    // A unit starts in `/`.
    let out = Command::new(RINGLB)
        .current_dir("/")
        .args(["check", "--dump", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = dir.join("certs/site.pem");
    assert!(
        text.contains(&format!("cert = \"{}\"", cert.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "path = \"{}\"",
            dir.join("logs/access.log").display()
        )),
        "{text}"
    );
    // Relative to the working directory it would not be found: a missing file is reported.
    std::fs::remove_file(&cert).unwrap();
    let out = Command::new(RINGLB)
        .current_dir("/")
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains(&cert.display().to_string()), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_marked_down_line_says_how_many_failures_in_which_window() {
    // A port nobody listens on: every connect is refused.
    let refused = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let lb = support::Ringlb::start(&support::config(
        &[support::server(refused)],
        "max_fails = 2\nfail_timeout = \"5s\"\ntries = 1",
        "",
    ));
    for _ in 0..2 {
        assert_eq!(lb.get("/").status, 502);
    }
    let line = lb
        .proc
        .wait_line(Duration::from_secs(5), |l| l.contains("failures in"))
        .expect("passive down line");
    assert!(line.contains("is down for 5s: 2 failures in 5s"), "{line}");
}
