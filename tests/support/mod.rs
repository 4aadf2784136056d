//! End-to-end test support: real binaries on loopback, raw sockets, and a recording backend
//! that keeps the exact bytes it received.
#![allow(dead_code)]

pub mod dns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub const RINGLB: &str = env!("CARGO_BIN_EXE_ringlb");

/// Path of the loadgen binary (built by the workspace; tests of the ringlb package do not get
/// its CARGO_BIN_EXE_ variable).
pub fn loadgen_bin() -> std::path::PathBuf {
    let ringlb = std::path::Path::new(RINGLB);
    let path = ringlb.with_file_name("loadgen");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "loadgen", "--bin", "loadgen"])
            .status()
            .expect("cargo build -p loadgen");
        assert!(status.success(), "building loadgen failed");
    }
    path
}

/// A child process killed (SIGKILL) when dropped, unless it already exited.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    /// Lines read while waiting for startup that were not startup markers: `wait_line` and
    /// `next_line` see them first.
    early: std::cell::RefCell<std::collections::VecDeque<String>>,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for exit, up to `limit`; None if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The next output line, within `limit`.
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        if let Some(l) = self.early.borrow_mut().pop_front() {
            return Some(l);
        }
        self.lines.recv_timeout(limit).ok()
    }

    /// The next output line matching `pred`, within `limit`.
    pub fn wait_line(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(l) if pred(&l) => return Some(l),
                Some(_) => continue,
                None => return None,
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Spawns `cmd`, merging stdout and stderr lines into one channel (drained continuously so
/// the child never blocks on a full pipe).
pub fn spawn(mut cmd: Command) -> Proc {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for r in [Box::new(out) as Box<dyn Read + Send>, Box::new(err)] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if std::env::var_os("RINGLB_TEST_LOG").is_some() {
                    eprintln!("| {line}");
                }
                let _ = tx.send(line);
            }
        });
    }
    Proc {
        child,
        lines: rx,
        early: Default::default(),
    }
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A `loadgen serve` backend on an ephemeral loopback port.
pub struct Backend {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub name: String,
    /// Requests this test support made itself (stats queries), not counted as traffic.
    own_requests: std::cell::Cell<u64>,
}

impl Backend {
    pub fn start(name: &str, extra: &[&str]) -> Backend {
        Backend::start_on("127.0.0.1:0", name, extra)
    }

    pub fn start_on(listen: &str, name: &str, extra: &[&str]) -> Backend {
        let mut cmd = Command::new(loadgen_bin());
        cmd.args(["serve", "--listen", listen, "--name", name])
            .args(extra);
        let proc = spawn(cmd);
        let line = proc
            .wait_line(Duration::from_secs(10), |l| l.contains("listening on"))
            .expect("loadgen serve did not start");
        let addr = addr_after(&line, "listening on ").expect("address in loadgen's line");
        Backend {
            proc,
            addr,
            name: name.into(),
            own_requests: std::cell::Cell::new(0),
        }
    }

    /// GET `path` on the backend directly (e.g. /stats, /control/health/503).
    pub fn request(&self, method: &str, path: &str) -> Response {
        let mut c = Client::connect(self.addr);
        c.send(
            format!("{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        c.response()
    }

    /// (requests, connections) counted by the backend, without the stats queries themselves.
    pub fn stats(&self) -> (u64, u64) {
        self.own_requests.set(self.own_requests.get() + 1);
        let r = self.request("GET", "/stats");
        let body = String::from_utf8_lossy(&r.body).to_string();
        let num = |key: &str| -> u64 {
            let k = format!("\"{key}\":");
            let at = body.find(&k).map(|i| i + k.len()).unwrap_or(0);
            body[at..]
                .trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (
            num("requests").saturating_sub(self.own_requests.get()),
            num("connections").saturating_sub(self.own_requests.get()),
        )
    }
}

/// A running ringlb with its listener and admin addresses.
pub struct Ringlb {
    pub proc: Proc,
    pub listeners: Vec<SocketAddr>,
    pub admin: SocketAddr,
    pub config_path: std::path::PathBuf,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn temp_path(name: &str) -> std::path::PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringlb-test-{}-{n}-{name}", std::process::id()))
}

/// `config` with `runtime.engine` set to the value of the environment variable
/// RINGLB_TEST_ENGINE when that is set (`make test-epoll` runs every test on the epoll engine),
/// unless the config names an engine itself.
pub fn with_test_engine(config: &str) -> String {
    let engine = match std::env::var("RINGLB_TEST_ENGINE") {
        Ok(e) if !e.is_empty() => e,
        _ => return config.to_string(),
    };
    if config
        .lines()
        .any(|l| l.trim_start().starts_with("engine "))
    {
        return config.to_string();
    }
    let line = format!("engine = \"{engine}\"\n");
    match config.find("[runtime]") {
        Some(at) => {
            let end = config[at..].find('\n').map_or(config.len(), |i| at + i + 1);
            format!("{}\n{line}{}", &config[..end].trim_end(), &config[end..])
        }
        None => format!("{config}\n[runtime]\n{line}"),
    }
}

impl Ringlb {
    /// Starts ringlb with `config` (listeners and admin on port 0 are fine) and waits until
    /// every listener and the admin listener are up. See [`with_test_engine`].
    pub fn start(config: &str) -> Ringlb {
        Ringlb::start_with_env(config, &[])
    }

    /// [`Ringlb::start`] with these environment variables set for the process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Ringlb {
        let path = temp_path("config.toml");
        let config = &with_test_engine(config);
        std::fs::write(&path, config).expect("write config");
        let listeners = config.matches("[[listeners]]").count();
        let mut cmd = Command::new(RINGLB);
        cmd.args(["run", "-c"]).arg(&path).env("RUST_LOG", "info");
        cmd.envs(env.iter().copied());
        let proc = spawn(cmd);
        let mut addrs = Vec::new();
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        // Until every listener is bound and every worker runs (`/ready` is 200 from then on).
        let mut running = false;
        while addrs.len() < listeners || admin.is_none() || !running {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = proc
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("ringlb did not start; config:\n{config}"));
            if line.contains("workers running on CPUs") {
                running = true;
                // Tests read it too (which engine runs).
                proc.early.borrow_mut().push_back(line);
            } else if let Some(a) = addr_after(&line, "admin listening on ") {
                admin = Some(a);
            } else if line.contains("admin listening on unix:") {
                // A Unix socket admin listener: tests reach it by its path.
                admin = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
            } else if line.contains("listening on ") {
                let addr = line
                    .split_whitespace()
                    .last()
                    .and_then(|a| a.parse().ok())
                    .expect("listener address");
                addrs.push(addr);
            } else {
                proc.early.borrow_mut().push_back(line);
            }
        }
        Ringlb {
            proc,
            listeners: addrs,
            admin: admin.expect("admin"),
            config_path: path,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listeners[0]
    }

    pub fn get(&self, path: &str) -> Response {
        let mut c = Client::connect(self.addr());
        c.send(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        c.response()
    }

    pub fn admin_get(&self, path: &str) -> Response {
        let mut c = Client::connect(self.admin);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.admin).as_bytes());
        c.response()
    }

    /// `POST path` on the admin listener with a JSON `body`.
    pub fn admin_post(&self, path: &str, body: &str) -> Response {
        let mut c = Client::connect(self.admin);
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        c.response()
    }
}

impl Drop for Ringlb {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Rewrites ringlb's config file, keeping its listener and admin addresses (port 0 in the
/// file, as at start).
pub fn rewrite(lb: &Ringlb, text: &str) {
    std::fs::write(&lb.config_path, with_test_engine(text)).unwrap();
}

/// `POST path` on the admin listener with a JSON `body` (see [`Ringlb::admin_post`]).
pub fn post(lb: &Ringlb, path: &str, body: &str) -> Response {
    lb.admin_post(path, body)
}

/// SIGHUP, then the reload's log up to "reloaded": the address of the listener `name` if
/// the reload bound one.
pub fn sighup_reload(lb: &Ringlb, name: &str) -> Option<SocketAddr> {
    lb.proc.signal(libc::SIGHUP);
    let marker = format!("listening on {name} ");
    let mut bound = None;
    loop {
        let line = lb
            .proc
            .next_line(Duration::from_secs(5))
            .expect("reload logged");
        assert!(!line.contains("refused"), "{line}");
        if line.contains(&marker) {
            bound = line.split_whitespace().last().and_then(|a| a.parse().ok());
        }
        if line.contains("reloaded") {
            return bound;
        }
    }
}

/// GETs in a loop from `clients` threads (the first `short` of them with `Connection: close`,
/// the others keep-alive) until `stop` (20 s at most); a keep-alive connection closed by the
/// server before any response byte is reopened and the request resent (as HTTP clients do);
/// anything else is a failure. Each thread returns (responses by backend, failures).
pub fn load(
    addr: SocketAddr,
    clients: usize,
    short: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<thread::JoinHandle<(std::collections::HashMap<String, u32>, u32)>> {
    (0..clients)
        .map(|i| {
            let stop = stop.clone();
            let request: &[u8] = if i < short {
                b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            } else {
                b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
            };
            thread::spawn(move || {
                let mut seen = std::collections::HashMap::new();
                let mut failures = 0;
                let mut c = Client::connect(addr);
                let mut fresh = true;
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    c.send(request);
                    match c.try_response(false) {
                        Some(r) if r.status == 200 => {
                            let backend = r.header("x-backend").unwrap_or("?").to_string();
                            *seen.entry(backend).or_default() += 1;
                            fresh = r.header("connection") == Some("close");
                            if fresh {
                                c = Client::connect(addr);
                            }
                        }
                        Some(_) => failures += 1,
                        None if !fresh => {
                            c = Client::connect(addr);
                            fresh = true;
                        }
                        None => {
                            failures += 1;
                            c = Client::connect(addr);
                        }
                    }
                }
                (seen, failures)
            })
        })
        .collect()
}

/// Joins [`load`]'s threads: (responses by backend, failures).
pub fn load_results(
    threads: Vec<thread::JoinHandle<(std::collections::HashMap<String, u32>, u32)>>,
) -> (std::collections::HashMap<String, u32>, u32) {
    let mut total = std::collections::HashMap::new();
    let mut failures = 0;
    for t in threads {
        let (seen, f) = t.join().expect("load thread");
        failures += f;
        for (k, v) in seen {
            *total.entry(k).or_default() += v;
        }
    }
    (total, failures)
}

/// A config with one listener on an ephemeral port, admin on an ephemeral port, one upstream
/// `app` over `servers` (TOML lines for each server table), `upstream_extra` lines in the
/// upstream table, and `extra` top-level tables appended.
pub fn config(servers: &[String], upstream_extra: &str, extra: &str) -> String {
    let mut s = String::from(
        "[runtime]\nworkers = 1\nshutdown_grace = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n",
    );
    s.push_str(extra);
    s.push_str("\n[upstreams.app]\n");
    s.push_str(upstream_extra);
    s.push('\n');
    for srv in servers {
        s.push_str("[[upstreams.app.servers]]\n");
        s.push_str(srv);
        s.push('\n');
    }
    s
}

pub fn server(addr: SocketAddr) -> String {
    format!("addr = \"{addr}\"")
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The raw head bytes.
    pub head: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(_) => 0,
        }
    }

    /// Reads one response (for a request with method `GET`).
    pub fn response(&mut self) -> Response {
        self.try_response(false).expect("a response")
    }

    pub fn response_to_head(&mut self) -> Response {
        self.try_response(true).expect("a response")
    }

    /// One response, or None if the connection closed (or timed out) first.
    pub fn try_response(&mut self, head_request: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let hs: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let head = self.buf[..n].to_vec();
                    self.buf.drain(..n);
                    let mut resp = Response {
                        status,
                        headers: hs,
                        body: Vec::new(),
                        head,
                    };
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Some(resp);
                        }
                        continue;
                    }
                    if head_request || status == 204 || status == 304 {
                        return Some(resp);
                    }
                    let chunked = resp
                        .header("transfer-encoding")
                        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                    if chunked {
                        resp.body = self.read_chunked()?;
                    } else if let Some(cl) = resp.header("content-length") {
                        let n: usize = cl.trim().parse().ok()?;
                        while self.buf.len() < n {
                            if self.fill() == 0 {
                                return None;
                            }
                        }
                        resp.body = self.buf.drain(..n).collect();
                    } else {
                        while self.fill() > 0 {}
                        resp.body = std::mem::take(&mut self.buf);
                    }
                    return Some(resp);
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill() == 0 {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if self.fill() == 0 {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers until an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            break i;
                        }
                        if self.fill() == 0 {
                            return None;
                        }
                    };
                    self.buf.drain(..end + 2);
                    if end == 0 {
                        return Some(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill() == 0 {
                    return None;
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }

    /// True when the peer closed the connection (EOF) within `limit` with no more bytes.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.stream.set_read_timeout(Some(limit)).unwrap();
        let mut tmp = [0u8; 1024];
        let r = matches!(self.stream.read(&mut tmp), Ok(0))
            || matches!(self.stream.read(&mut tmp), Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset);
        self.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        r
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Everything until the peer closes (or 5 s pass).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }
}

/// A backend that records the raw bytes of each request it receives and answers each with
/// `response`. It reads a head, then a Content-Length or chunked body, per request.
pub struct Recorder {
    pub addr: SocketAddr,
    pub requests: mpsc::Receiver<Vec<u8>>,
    pub connections: Arc<AtomicUsize>,
}

impl Recorder {
    pub fn start(response: &'static [u8]) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let conns = connections.clone();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                conns.fetch_add(1, Ordering::Relaxed);
                let tx = tx.clone();
                thread::spawn(move || record_conn(s, tx, response));
            }
        });
        Recorder {
            addr,
            requests: rx,
            connections,
        }
    }

    /// The next request's bytes, if one arrives within `limit`.
    pub fn next(&self, limit: Duration) -> Option<Vec<u8>> {
        self.requests.recv_timeout(limit).ok()
    }

    pub fn none_within(&self, limit: Duration) -> bool {
        self.requests.recv_timeout(limit).is_err()
    }
}

fn record_conn(mut s: TcpStream, tx: mpsc::Sender<Vec<u8>>, response: &[u8]) {
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let cl = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head
            .lines()
            .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let total = if chunked {
            loop {
                // The last chunk ("0" at the start of a line), then trailers up to an empty line.
                let body = &buf[head_end..];
                let last = if body.starts_with(b"0\r\n") {
                    Some(0)
                } else {
                    body.windows(5)
                        .position(|w| w == b"\r\n0\r\n")
                        .map(|i| i + 2)
                };
                if let Some(l) = last {
                    if let Some(e) = body[l..].windows(4).position(|w| w == b"\r\n\r\n") {
                        break head_end + l + e + 4;
                    }
                }
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        } else {
            let want = head_end + cl.unwrap_or(0);
            while buf.len() < want {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
            want
        };
        let req: Vec<u8> = buf.drain(..total).collect();
        let _ = tx.send(req);
        if s.write_all(response).is_err() {
            return;
        }
    }
}

/// The header lines of a raw request (without the request line), lowercased names.
pub fn header_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").skip(1).map(|l| l.to_string()).collect()
}

/// Sends `bytes` on a fresh connection and returns everything received until close or 3 s.
pub fn exchange_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut c = Client::connect(addr);
    c.send(bytes);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    while c.fill() > 0 {}
    c.buf
}

/// Without promtool the checks that need it are skipped, except in CI (`CI` set), which
/// installs it (Debian package `prometheus`).
pub fn no_promtool(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "promtool is required in CI for the {what}: apt-get install prometheus"
    );
    eprintln!("promtool not installed: {what} skipped");
}

/// `promtool check metrics` lints the exposition (names, types, help) when promtool is
/// installed (CI installs the Debian `prometheus` package).
pub fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        no_promtool("exposition lint");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
