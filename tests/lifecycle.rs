//! The command line and the process lifecycle: check, bind errors, graceful stop.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

#[test]
fn check_reports_every_problem_with_its_path() {
    let path = temp_path("bad.toml");
    std::fs::write(
        &path,
        "[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:8080\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"api\"\n\
         [upstreams.api]\n[[upstreams.api.servers]]\naddr = \"127.0.0.1:1\"\n\
         [[upstreams.api.servers]]\naddr = \"nowhere\"\nweight = 5000\n",
    )
    .unwrap();
    let out = Command::new(RINGLB)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams.api.servers[1].addr: \"nowhere\" has no port"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.api.servers[1].weight: must be 1..=1000"),
        "{err}"
    );

    let ok = Command::new(RINGLB)
        .args(["check", "-c", "ringlb.example.toml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_listener_that_cannot_bind_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = temp_path("taken.toml");
    let text = config(&[server(addr)], "", "").replacen(
        "listen = \"127.0.0.1:0\"\n[[routes]]",
        &format!("listen = \"{addr}\"\n[[routes]]"),
        1,
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new(RINGLB)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("cannot listen"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&addr.to_string()), "{line}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn help_describes_the_commands() {
    let out = Command::new(RINGLB).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("run") && text.contains("check"), "{text}");
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() {
    let b = Backend::start("slow", &[]);
    let mut lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let addr = lb.addr();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(b"GET /delay/500 HTTP/1.1\r\nHost: h\r\n\r\n");
                c.try_response(false)
                    .map(|r| (r.status, r.header("connection").map(str::to_string)))
            })
        })
        .collect();
    // An idle keep-alive connection is closed at shutdown rather than held to the grace.
    let mut idle = Client::connect(addr);
    idle.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(idle.response().status, 200);
    std::thread::sleep(Duration::from_millis(200));
    lb.proc.signal(libc::SIGTERM);
    for c in clients {
        let (status, connection) = c.join().unwrap().expect("in-flight request answered");
        assert_eq!(status, 200);
        assert_eq!(connection.as_deref(), Some("close"));
    }
    assert!(
        idle.closed_within(Duration::from_secs(3)),
        "idle connection not closed"
    );
    let status = lb.proc.wait_exit(Duration::from_secs(5)).expect("exited");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_during_200_in_flight_slow_requests_loses_none() {
    let b = Backend::start("slow200", &["--cores", "2"]);
    let mut lb =
        Ringlb::start(&config(&[server(b.addr)], "", "").replace("workers = 1", "workers = 2"));
    let addr = lb.addr();
    let clients: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(b"GET /delay/800 HTTP/1.1\r\nHost: h\r\n\r\n");
                c.try_response(false).map(|r| r.status)
            })
        })
        .collect();
    // Let every request reach the backend, then stop.
    std::thread::sleep(Duration::from_millis(400));
    lb.proc.signal(libc::SIGTERM);
    let statuses: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");
    let status = lb.proc.wait_exit(Duration::from_secs(10)).expect("exited");
    assert_eq!(status.code(), Some(0));
}
