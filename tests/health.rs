//! Active health checks, end to end: a server whose check fails is taken out after `fall`
//! checks and comes back after `rise`; a killed server costs no request; `/ready` follows.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// Checks every 100 ms, 2 failures take a server out, 2 passes bring it back.
const CHECK: &str =
    "health_check = { interval = \"100ms\", timeout = \"100ms\", rise = 2, fall = 2 }";
const LIMIT: Duration = Duration::from_secs(10);

fn named(b: &Backend) -> String {
    format!("addr = \"{}\"\nname = \"{}\"", b.addr, b.name)
}

fn start(backends: &[&Backend], upstream_extra: &str) -> Ringlb {
    let servers: Vec<String> = backends.iter().map(|b| named(b)).collect();
    Ringlb::start(&config(&servers, upstream_extra, ""))
}

/// One GET through ringlb on a fresh connection: the X-Backend that answered, or why not.
fn get_once(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
    match c.try_response(false) {
        Some(r) if r.status == 200 => Ok(r.header("x-backend").unwrap_or("?").to_string()),
        Some(r) => Err(format!("status {}: {}", r.status, r.text().trim())),
        None => Err("no response".into()),
    }
}

/// Which backends answered `n` sequential GETs, and the failures.
fn spread(addr: SocketAddr, n: usize) -> (HashMap<String, u64>, Vec<String>) {
    let mut t = Tally::default();
    for _ in 0..n {
        t.add(get_once(addr, "/"));
    }
    (t.by_backend, t.failures)
}

#[derive(Default, Debug)]
struct Tally {
    by_backend: HashMap<String, u64>,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, r: Result<String, String>) {
        match r {
            Ok(b) => *self.by_backend.entry(b).or_default() += 1,
            Err(e) => self.failures.push(e),
        }
    }

    fn total(&self) -> u64 {
        self.by_backend.values().sum::<u64>() + self.failures.len() as u64
    }
}

/// Sequential GETs from a thread until stopped, bounded in count and time.
struct Load {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Tally>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut t = Tally::default();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline && t.total() < 20_000 {
                t.add(get_once(addr, "/"));
                thread::sleep(Duration::from_millis(1));
            }
            t
        });
        Load { stop, handle }
    }

    fn finish(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("load thread")
    }
}

/// The next log line about server `name` going `up` or `down` by active checks.
fn wait_log(rl: &Ringlb, name: &str, what: &str) -> String {
    let server = format!("server {name} (");
    let what = format!(" is {what}: ");
    rl.proc
        .wait_line(LIMIT, |l| l.contains(&server) && l.contains(&what))
        .unwrap_or_else(|| panic!("no log line with {server:?} and {what:?}"))
}

#[test]
fn failing_check_takes_a_server_out_after_fall_and_rise_brings_it_back() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let rl = start(&[&a, &b], CHECK);
    let (seen, failures) = spread(rl.addr(), 10);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");

    let load = Load::start(rl.addr());
    assert_eq!(b.request("POST", "/control/health/503").status, 200);
    let down = wait_log(&rl, "b", "down");
    assert!(
        down.contains(&format!(
            "server b ({}) of upstream app is down: 2 checks failed (last: status 503)",
            b.addr
        )),
        "{down}"
    );
    // Taken out: nothing more reaches b, and no request failed on the way.
    let (seen, failures) = spread(rl.addr(), 20);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen.get("a"), Some(&20), "{seen:?}");

    assert_eq!(b.request("POST", "/control/health/200").status, 200);
    let up = wait_log(&rl, "b", "up");
    assert!(
        up.contains("of upstream app is up: 2 checks passed"),
        "{up}"
    );
    let t = load.finish();
    assert!(t.failures.is_empty(), "{:?}", t.failures);
    assert!(t.by_backend.contains_key("a"), "{t:?}");

    // Back in rotation: round robin alternates again.
    let (seen, failures) = spread(rl.addr(), 10);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen.get("b"), Some(&5), "{seen:?}");
}

#[test]
fn killed_server_costs_no_request_and_returns_after_rise_once_restarted() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let mut c = Backend::start("c", &[]);
    let c_addr = c.addr;
    let rl = start(&[&a, &b, &c], CHECK);

    let load = Load::start(rl.addr());
    thread::sleep(Duration::from_millis(300));
    c.proc.signal(libc::SIGKILL);
    assert!(c.proc.wait_exit(LIMIT).is_some(), "backend c did not die");
    let down = wait_log(&rl, "c", "down");
    assert!(down.contains("of upstream app is down"), "{down}");
    thread::sleep(Duration::from_millis(300));

    let c2 = Backend::start_on(&c_addr.to_string(), "c", &[]);
    let up = wait_log(&rl, "c", "up");
    assert!(
        up.contains("of upstream app is up: 2 checks passed"),
        "{up}"
    );
    thread::sleep(Duration::from_millis(200));
    let t = load.finish();
    assert!(
        t.failures.is_empty(),
        "{} of {} GETs failed (retries to the next server expected): {:?}",
        t.failures.len(),
        t.total(),
        &t.failures[..t.failures.len().min(5)]
    );
    assert!(t.total() > 50, "too little load to tell: {t:?}");

    let (seen, failures) = spread(rl.addr(), 12);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(seen.get("c").copied().unwrap_or(0) >= 3, "{seen:?}");
    drop(c2);
}

/// Polls `/ready` until it answers `want`, within `LIMIT`.
fn ready_becomes(rl: &Ringlb, want: u16) -> Response {
    let deadline = Instant::now() + LIMIT;
    loop {
        let r = rl.admin_get("/ready");
        if r.status == want || Instant::now() > deadline {
            return r;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ready_requires_is_503_while_every_server_of_the_upstream_is_down() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let servers: Vec<String> = [&a, &b].iter().map(|b| named(b)).collect();
    let cfg = config(&servers, CHECK, "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        "[admin]\nlisten = \"127.0.0.1:0\"\nready_requires = [\"app\"]\n",
    );
    let rl = Ringlb::start(&cfg);
    assert_eq!(ready_becomes(&rl, 200).status, 200);

    a.request("POST", "/control/health/503");
    wait_log(&rl, "a", "down");
    // One server left: still ready.
    assert_eq!(rl.admin_get("/ready").status, 200);
    b.request("POST", "/control/health/500");
    let r = ready_becomes(&rl, 503);
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("upstream app has 0 usable servers"),
        "{}",
        r.text()
    );
    assert_eq!(rl.admin_get("/live").status, 200);
    // No usable server: the proxy answers 502/503 itself, without trying a server.
    let resp = rl.get("/");
    assert!(resp.status >= 500, "{}", resp.status);

    a.request("POST", "/control/health/200");
    b.request("POST", "/control/health/200");
    assert_eq!(ready_becomes(&rl, 200).status, 200);
    assert_eq!(rl.get("/").status, 200);
}

#[test]
fn check_request_and_expected_status_are_configurable() {
    let rec = Recorder::start(b"HTTP/1.1 204 No Content\r\n\r\n");
    let servers = [format!("addr = \"{}\"\nname = \"r\"", rec.addr)];
    let extra = "health_check = { path = \"/healthz?full=1\", host = \"app.example\", \
                 interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 1, \
                 expect_status = 200 }";
    let rl = Ringlb::start(&config(&servers, extra, ""));
    let req = rec.next(LIMIT).expect("a check request");
    assert_eq!(
        String::from_utf8_lossy(&req),
        "GET /healthz?full=1 HTTP/1.1\r\nHost: app.example\r\nUser-Agent: ringlb-health\r\n\
         Connection: close\r\n\r\n"
    );
    // 204 is not the expected 200.
    let down = wait_log(&rl, "r", "down");
    assert!(
        down.contains("is down: 1 checks failed (last: status 204)"),
        "{down}"
    );
}

#[test]
fn silent_server_fails_by_timeout() {
    // Listening but never accepting: connects succeed, no answer comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = Backend::start("a", &[]);
    let servers = [
        named(&a),
        format!("addr = \"{}\"\nname = \"s\"", silent.local_addr().unwrap()),
    ];
    let rl = Ringlb::start(&config(&servers, CHECK, ""));
    let down = wait_log(&rl, "s", "down");
    assert!(
        down.contains("is down: 2 checks failed (last: timed out)"),
        "{down}"
    );
    let (seen, failures) = spread(rl.addr(), 6);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(seen.get("a"), Some(&6), "{seen:?}");
}

#[test]
fn each_server_is_checked_once_per_interval_for_the_whole_process() {
    let a = Backend::start("a", &[]);
    let servers = [named(&a)];
    let cfg = config(&servers, CHECK, "").replace("workers = 1", "workers = 2");
    let _rl = Ringlb::start(&cfg);
    thread::sleep(Duration::from_millis(300));
    let (before, _) = a.stats();
    thread::sleep(Duration::from_millis(1000));
    let (after, _) = a.stats();
    // stats() leaves out the /stats request it makes, not the one made before it.
    let checks = after - before - 1;
    // 10 at 100 ms for one checker; one checker per core would make it 20.
    assert!((3..=14).contains(&checks), "{checks} checks in 1 s");
}
