//! Service discovery end to end: ringlb re-resolves names through a DNS server the test runs
//! on loopback (`support::dns`), whose answers change while a client loop runs. Backends
//! listen on 127.0.0.2 and 127.0.0.3 and answer with their own name, so each test sees which
//! addresses ringlb actually uses; no request of the client loop may fail.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};
use support::dns::Dns;
use support::{Backend, Client, Response, Ringlb};

const B2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B3: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// Backends named b2 and b3 on 127.0.0.2 and 127.0.0.3, on one port (or two with `same`
/// false).
fn backends(same: bool) -> (Backend, Backend) {
    let b2 = Backend::start_on("127.0.0.2:0", "b2", &[]);
    let port = if same { b2.addr.port() } else { 0 };
    let b3 = Backend::start_on(&format!("127.0.0.3:{port}"), "b3", &[]);
    (b2, b3)
}

fn config(dns: &Dns, servers: &str, resolver: &str) -> String {
    format!(
        "[runtime]\nworkers = 2\nshutdown_grace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [resolver]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\nattempts = 1\n{resolver}\n\
         [upstreams.app]\nmax_fails = 0\n{servers}\n",
        dns.addr
    )
}

/// One GET on a fresh connection: the backend's name, or what went wrong.
fn fetch(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).to_string();
    if !text.starts_with("HTTP/1.1 200") {
        return Err(text.lines().next().unwrap_or("nothing").to_string());
    }
    Ok(text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Requests in a loop until dropped: every answer (backend name) or failure, with its time.
struct ClientLoop {
    stop: Arc<AtomicBool>,
    seen: mpsc::Receiver<(Instant, Result<String, String>)>,
    thread: Option<thread::JoinHandle<()>>,
    failures: Vec<String>,
}

impl ClientLoop {
    fn start(addr: SocketAddr) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, seen) = mpsc::channel();
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Relaxed) {
                if tx.send((Instant::now(), fetch(addr))).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        ClientLoop {
            stop,
            seen,
            thread: Some(thread),
            failures: Vec::new(),
        }
    }

    /// Waits (at most `limit`) until `n` answers in a row come from backends in `want` and,
    /// with `all`, every one of them answered since the wait began. Returns how long it took.
    fn until(&mut self, want: &[&str], all: bool, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut run = 0;
        let mut seen: Vec<String> = Vec::new();
        while start.elapsed() < limit {
            let Ok((at, r)) = self.seen.recv_timeout(Duration::from_millis(500)) else {
                continue;
            };
            if at < start {
                continue;
            }
            match r {
                Ok(name) if want.contains(&name.as_str()) => {
                    run += 1;
                    if !seen.contains(&name) {
                        seen.push(name);
                    }
                }
                Ok(_) => {
                    run = 0;
                    seen.clear();
                }
                Err(e) => self.failures.push(e),
            }
            if run >= 20 && (!all || seen.len() == want.len()) {
                return start.elapsed();
            }
        }
        panic!(
            "not only {want:?} (all: {all}) within {limit:?}; failures: {:?}",
            self.failures
        );
    }

    /// Everything answered during `d` came from `want`.
    fn only_for(&mut self, want: &[&str], d: Duration) {
        let start = Instant::now();
        while start.elapsed() < d {
            if let Ok((_, r)) = self.seen.recv_timeout(Duration::from_millis(200)) {
                match r {
                    Ok(name) => assert!(want.contains(&name.as_str()), "{name} answered"),
                    Err(e) => self.failures.push(e),
                }
            }
        }
    }

    /// Stops the loop; no request may have failed.
    fn finish(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        while let Ok((_, r)) = self.seen.try_recv() {
            if let Err(e) = r {
                self.failures.push(e);
            }
        }
        assert!(
            self.failures.is_empty(),
            "failed requests: {:?}",
            self.failures
        );
    }
}

/// TTL 1 s: a change must be followed within TTL + 1 s (and the 20 answers counted).
const FOLLOW: Duration = Duration::from_millis(2500);

#[test]
fn a_records_added_changed_and_removed_are_followed_and_nxdomain_keeps_the_last_set() {
    let dns = Dns::start(1);
    let (b2, _b3) = backends(true);
    dns.set_a("app.test", &[B2]);
    let servers = format!(
        "[[upstreams.app.servers]]\naddr = \"app.test:{}\"\nname = \"app\"\nresolve = true\n",
        b2.addr.port()
    );
    let lb = Ringlb::start(&config(&dns, &servers, ""));
    let mut client = ClientLoop::start(lb.addr());
    client.until(&["b2"], false, FOLLOW);

    dns.set_a("app.test", &[B2, B3]);
    let took = client.until(&["b2", "b3"], true, FOLLOW);
    eprintln!("added in {took:?}");
    lb.proc
        .wait_line(Duration::from_secs(2), |l| {
            l.contains("upstream app: servers added: app@127.0.0.3:")
        })
        .expect("a log line for the added server");

    dns.set_a("app.test", &[B3]);
    let took = client.until(&["b3"], false, FOLLOW);
    eprintln!("changed in {took:?}");
    lb.proc
        .wait_line(Duration::from_secs(2), |l| {
            l.contains("removed: app@127.0.0.2:")
        })
        .expect("a log line for the removed server");

    dns.remove("app.test");
    client.only_for(&["b3"], Duration::from_secs(3));
    lb.proc
        .wait_line(Duration::from_secs(2), |l| {
            l.contains("does not resolve (NXDOMAIN") && l.contains("keeping its 1 servers")
        })
        .expect("a log line for the kept servers");

    let metrics = lb.admin_get("/metrics").text();
    support::promtool_check(&metrics);
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{metrics}"))
    };
    assert!(
        value(
            "ringlb_resolver_resolutions_total{upstream=\"app\",name=\"app\",result=\"nxdomain\"}"
        ) >= 1.0
    );
    assert!(
        value(
            "ringlb_resolver_resolutions_total{upstream=\"app\",name=\"app\",result=\"success\"}"
        ) >= 3.0
    );
    assert_eq!(value("ringlb_upstream_servers{upstream=\"app\"}"), 1.0);
    assert!(
        value("ringlb_resolver_last_success_age_seconds{upstream=\"app\",name=\"app\"}") >= 1.0
    );

    dns.set_a("app.test", &[B2]);
    client.until(&["b2"], false, FOLLOW);
    client.finish();
}

#[test]
fn srv_targets_ports_and_priorities_are_followed() {
    let dns = Dns::start(1);
    let (b2, b3) = backends(false);
    assert_ne!(b2.addr.port(), b3.addr.port());
    dns.set_a("a.app.test", &[B2]);
    dns.set_a("b.app.test", &[B3]);
    dns.set_srv(
        "_http._tcp.app.test",
        &[(0, 5, b2.addr.port(), "a.app.test")],
    );
    let servers = "[[upstreams.app.servers]]\nsrv = \"_http._tcp.app.test\"\nname = \"app\"\n";
    let lb = Ringlb::start(&config(&dns, servers, ""));
    let mut client = ClientLoop::start(lb.addr());
    client.until(&["b2"], false, FOLLOW);

    // A second target at a lower priority is a backup: still only b2.
    dns.set_srv(
        "_http._tcp.app.test",
        &[
            (0, 5, b2.addr.port(), "a.app.test"),
            (10, 5, b3.addr.port(), "b.app.test"),
        ],
    );
    lb.proc
        .wait_line(FOLLOW, |l| l.contains("servers added: app@127.0.0.3:"))
        .expect("the backup target joins");
    client.only_for(&["b2"], Duration::from_secs(1));
    let api = lb.admin_get("/api/upstreams/app").text();
    assert!(
        api.contains(&format!("\"name\":\"app@127.0.0.3:{}\"", b3.addr.port())),
        "{api}"
    );

    // Same priority: both, at their SRV weights.
    dns.set_srv(
        "_http._tcp.app.test",
        &[
            (0, 5, b2.addr.port(), "a.app.test"),
            (0, 5, b3.addr.port(), "b.app.test"),
        ],
    );
    client.until(&["b2", "b3"], true, FOLLOW);

    // The first target leaves: only b3, on its own port.
    dns.set_srv(
        "_http._tcp.app.test",
        &[(0, 5, b3.addr.port(), "b.app.test")],
    );
    client.until(&["b3"], false, FOLLOW);
    client.finish();
}

#[test]
fn truncated_udp_answers_are_asked_again_over_tcp() {
    let dns = Dns::start(1);
    let (b2, _b3) = backends(true);
    dns.set_a("app.test", &[B2]);
    dns.truncate_udp(true);
    let servers = format!(
        "[[upstreams.app.servers]]\naddr = \"app.test:{}\"\nresolve = true\n",
        b2.addr.port()
    );
    let lb = Ringlb::start(&config(&dns, &servers, ""));
    assert_eq!(fetch(lb.addr()), Ok("b2".to_string()));
    assert!(dns.tcp_queries.load(Relaxed) >= 1);
}

#[test]
fn a_name_with_resolve_starts_without_servers_and_serves_once_it_resolves() {
    let dns = Dns::start(1);
    let (b2, _b3) = backends(true);
    let servers = format!(
        "[[upstreams.app.servers]]\naddr = \"app.test:{}\"\nname = \"app\"\nresolve = true\n",
        b2.addr.port()
    );
    let lb = Ringlb::start(&config(&dns, &servers, "valid_max = \"1s\""));
    assert!(
        lb.proc
            .wait_line(Duration::from_secs(1), |l| l.contains("app.test")
                && l.contains("does not resolve"))
            .is_some(),
        "a warning at start"
    );
    assert_eq!(lb.get("/").status, 503, "no server yet");
    dns.set_a("app.test", &[B2]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetch(lb.addr()) != Ok("b2".into()) {
        assert!(Instant::now() < deadline, "the name never started to serve");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn names_in_etc_hosts_resolve_at_start_and_check_warns_about_names_that_do_not() {
    let dns = Dns::start(1);
    let (b2, _b3) = backends(true);
    let b1 = Backend::start("b1", &[]);
    // localhost: /etc/hosts, through the system resolver.
    let servers = format!(
        "[[upstreams.app.servers]]\naddr = \"localhost:{}\"\nname = \"local\"\n\
         [[upstreams.app.servers]]\naddr = \"missing.test:{}\"\nresolve = true\n",
        b1.addr.port(),
        b2.addr.port()
    );
    let text = config(&dns, &servers, "");
    let path = support::temp_path("check.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(support::RINGLB)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: upstreams.app.servers[1].addr: missing.test:")
            && stderr.contains("NXDOMAIN"),
        "{stderr}"
    );
    let lb = Ringlb::start(&text);
    assert_eq!(fetch(lb.addr()), Ok("b1".to_string()));
    let _ = std::fs::remove_file(path);
}

fn admin(lb: &Ringlb, method: &str, path: &str, body: Option<&str>) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    match body {
        Some(b) => req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => req.push_str("\r\n"),
    }
    let mut c = Client::connect(lb.admin);
    c.send(req.as_bytes());
    c.response()
}

#[test]
fn servers_added_and_removed_through_the_api_until_a_reload() {
    let dns = Dns::start(1);
    let (b2, b3) = backends(true);
    let servers = format!(
        "[[upstreams.app.servers]]\naddr = \"{}\"\nname = \"b2\"\n",
        b2.addr
    );
    let text = config(&dns, &servers, "");
    let lb = Ringlb::start(&text);
    let mut client = ClientLoop::start(lb.addr());
    client.until(&["b2"], false, FOLLOW);

    // Validated as the file is.
    let bad = admin(
        &lb,
        "POST",
        "/api/upstreams/app/servers",
        Some(r#"{"addr":"127.0.0.3","weight":0}"#),
    );
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(
        bad.text().contains("body.addr") && bad.text().contains("body.weight"),
        "{}",
        bad.text()
    );
    let dup = admin(
        &lb,
        "POST",
        "/api/upstreams/app/servers",
        Some(&format!(r#"{{"addr":"{}"}}"#, b2.addr)),
    );
    assert_eq!(dup.status, 422, "{}", dup.text());
    assert!(dup.text().contains("listed twice"), "{}", dup.text());

    let add = format!(r#"{{"addr":"{}","name":"b3","weight":2}}"#, b3.addr);
    let r = admin(&lb, "POST", "/api/upstreams/app/servers", Some(&add));
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.text().contains("next reload"), "{}", r.text());
    client.until(&["b2", "b3"], true, FOLLOW);
    let api = lb.admin_get("/api/upstreams/app").text();
    assert!(api.contains("\"origin\":\"api\""), "{api}");

    let r = admin(&lb, "DELETE", "/api/upstreams/app/servers/b2", None);
    assert_eq!(r.status, 202, "{}", r.text());
    client.until(&["b3"], false, FOLLOW);
    let api = lb.admin_get("/api/upstreams/app").text();
    assert!(api.contains("\"removed\":[\"b2\"]"), "{api}");
    let r = admin(&lb, "DELETE", "/api/upstreams/app/servers/nope", None);
    assert_eq!(r.status, 404, "{}", r.text());

    // A reload re-reads the file: b2 back, b3 gone.
    lb.proc.signal(libc::SIGHUP);
    lb.proc
        .wait_line(Duration::from_secs(5), |l| l.contains("discarded"))
        .expect("the reload says the API changes are discarded");
    client.until(&["b2"], false, FOLLOW);
    client.finish();
}
