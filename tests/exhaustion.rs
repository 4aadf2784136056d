//! Resource exhaustion, bounded: slow clients, clients that vanish mid-exchange, and running out
//! of file descriptors. ringlb keeps serving, releases what a gone client held, and never spins.
//!
//! `soak_10k_keepalive_connections` (ignored; `make soak`) holds 10,000 idle keep-alive client
//! connections and prints ringlb's resident memory.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use support::*;

/// Descriptors the process holds (entries of /proc/PID/fd).
fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User + system CPU time of the process, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// VmRSS of the process in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The backend's `active_connections` from /stats, without the /stats connection itself.
fn backend_active(b: &Backend) -> u64 {
    let body = b.request("GET", "/stats").text();
    let k = "\"active_connections\":";
    let at = body
        .find(k)
        .map(|i| i + k.len())
        .expect("active_connections");
    let n: u64 = body[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    n.saturating_sub(1)
}

/// Polls `f` until it holds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// GET / on a fresh connection with `limit` to answer; the status, or None.
fn quick_get(addr: SocketAddr, limit: Duration) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn slowloris_does_not_starve_a_normal_client() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[timeouts]\nclient_header = \"3s\"\n",
    ));
    let mut slow: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr()).expect("connect");
            s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    // Trickle one byte per connection per round; a normal client is served in every round.
    for round in 0..4 {
        for s in &mut slow {
            let _ = s.write_all(b"x");
        }
        let started = Instant::now();
        let status = quick_get(lb.addr(), Duration::from_secs(2));
        assert_eq!(status, Some(200), "round {round}");
        eprintln!("round {round}: served in {:?}", started.elapsed());
        thread::sleep(Duration::from_millis(200));
    }
    // The head timeout ends them all with 408.
    let mut timed_out = 0;
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        if buf.starts_with(b"HTTP/1.1 408 ") {
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, slow.len());
    drop(slow);
    assert!(eventually(Duration::from_secs(3), || fd_count(
        lb.proc.pid()
    ) < 100));
}

#[test]
fn vanished_clients_release_everything() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "keepalive = 2", ""));
    let pid = lb.proc.pid();
    // Warm up: one exchange, so the baseline includes a pooled connection.
    assert_eq!(lb.get("/").status, 200);
    let baseline = fd_count(pid);

    let mut workers = Vec::new();
    for i in 0..30 {
        let addr = lb.addr();
        workers.push(thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            match i % 3 {
                // Mid-request: the head of a large body and a little of it, then gone.
                0 => {
                    s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n")
                        .unwrap();
                    s.write_all(&[b'x'; 1000]).unwrap();
                    thread::sleep(Duration::from_millis(50));
                }
                // While the server is still working on the answer.
                1 => {
                    s.write_all(b"GET /delay/300 HTTP/1.1\r\nHost: h\r\n\r\n")
                        .unwrap();
                    thread::sleep(Duration::from_millis(50));
                }
                // Mid-response: a little of a large body, then gone.
                _ => {
                    s.write_all(b"GET /size/50000000 HTTP/1.1\r\nHost: h\r\n\r\n")
                        .unwrap();
                    let mut got = 0;
                    let mut buf = [0u8; 16384];
                    while got < 100_000 {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                }
            }
            // Dropping the socket closes it (with a reset when unread bytes remain).
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    // No upstream connection outlives its client beyond the pool (keepalive = 2 per core).
    assert!(
        eventually(Duration::from_secs(5), || backend_active(&b) <= 2),
        "backend still has {} connections",
        backend_active(&b)
    );
    assert!(
        eventually(Duration::from_secs(5), || fd_count(pid) <= baseline + 2),
        "ringlb holds {} descriptors, {baseline} before",
        fd_count(pid)
    );
    assert_eq!(lb.get("/").status, 200);
}

#[test]
fn slow_body_and_slow_reader_are_cut_off() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "keepalive = 2",
        "[timeouts]\nclient_body = \"500ms\"\nclient_send = \"500ms\"\n",
    ));
    // A body that stalls after its first bytes: 408 and a close once client_body passes.
    let mut body = TcpStream::connect(lb.addr()).unwrap();
    body.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    body.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nabc")
        .unwrap();
    // A client that asks for a large body and never reads it: cut once client_send passes.
    let mut reader = TcpStream::connect(lb.addr()).unwrap();
    reader
        .write_all(b"GET /size/200000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = body.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // The stalled writes give up: the upstream connections close, none is pooled mid-body.
    assert!(
        eventually(Duration::from_secs(5), || backend_active(&b) == 0),
        "backend still has {} connections",
        backend_active(&b)
    );
    // The reader's connection was closed by ringlb: reading drains what was buffered, then ends.
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                break;
            }
        }
    }
    assert!(total < 200_000_000, "the whole body was delivered");
    assert_eq!(lb.get("/").status, 200);
}

#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", ""));
    let pid = lb.proc.pid();
    assert_eq!(lb.get("/").status, 200);
    // Lower the running process's limit just above what it holds now.
    let limit = fd_count(pid) as u64 + 8;
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; the old value is not read.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());

    // Twice as many connections as descriptors left; each sends a request.
    let mut held: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr()).expect("connect (the backlog accepts)");
            s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let tps = ticks_per_second();
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    eprintln!("CPU while out of descriptors: {used} ticks of {tps} in 1 s");
    assert!(
        used * 4 < tps,
        "ringlb spins while accept fails: {used}/{tps} ticks"
    );
    assert!(
        matches!(lb.proc.child.id(), id if std::fs::metadata(format!("/proc/{id}")).is_ok()),
        "ringlb died"
    );

    // Every held connection gets an answer eventually, or at least is not lost forever: close
    // them and check a new client is served.
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
    }
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || quick_get(
            lb.addr(),
            Duration::from_secs(1)
        ) == Some(200)),
        "not serving after descriptors were freed"
    );
}

/// 10,000 concurrent keep-alive client connections, each after one exchange; prints ringlb's
/// VmRSS. Ignored in the normal suite; `make soak` runs it:
/// `cargo test --test exhaustion -- --ignored --nocapture soak`.
#[test]
#[ignore]
fn soak_10k_keepalive_connections() {
    const N: usize = 10_000;
    // Both this process and ringlb (which inherits it) need a descriptor per connection.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    assert!(
        lim.rlim_cur as usize > N + 200,
        "RLIMIT_NOFILE hard limit {} is too low",
        lim.rlim_max
    );
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[timeouts]\nkeepalive = \"300s\"\n",
    ));
    let pid = lb.proc.pid();
    let rss_idle = rss_kib(pid);
    let started = Instant::now();
    let mut conns = Vec::with_capacity(N);
    let mut buf = [0u8; 4096];
    for i in 0..N {
        let mut s = TcpStream::connect(lb.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /size/100 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let mut got = 0;
        loop {
            match s.read(&mut buf[got..]) {
                Ok(0) | Err(_) => panic!("connection {i} closed"),
                Ok(n) => got += n,
            }
            let head = buf[..got].windows(4).position(|w| w == b"\r\n\r\n");
            if head.is_some_and(|h| got >= h + 4 + 100) {
                break;
            }
        }
        conns.push(s);
    }
    let opened = started.elapsed();
    thread::sleep(Duration::from_secs(1));
    let rss = rss_kib(pid);
    let fds = fd_count(pid);
    eprintln!(
        "{N} keep-alive connections opened in {opened:?}; ringlb VmRSS {rss} KiB \
         ({rss_idle} KiB idle, {:.1} KiB per connection), {fds} descriptors",
        (rss - rss_idle) as f64 / N as f64
    );
    // Still serving, and every held connection still works.
    assert_eq!(quick_get(lb.addr(), Duration::from_secs(5)), Some(200));
    for s in conns.iter_mut().step_by(1000) {
        s.write_all(b"GET /size/1 HTTP/1.1\r\nHost: h\r\n\r\n")
            .unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 "));
    }
    drop(conns);
    assert!(eventually(Duration::from_secs(10), || fd_count(pid) < 200));
}

/// A connection that has sent part of a request head costs little: 2,000 connections that
/// each sent one byte raise ringlb's resident memory by less than 8 KiB each, and the memory
/// goes back once they close (buffers are taken as the head grows, upstream-side buffers only
/// once a server is chosen, and the free lists keep a bounded number of bytes).
#[test]
fn connections_that_sent_one_byte_cost_little_and_give_it_back() {
    const N: usize = 2_000;
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[server(b.addr)],
        "",
        "[timeouts]\nclient_header = \"60s\"\n",
    ));
    let pid = lb.proc.pid();
    // Warm up: a few exchanges, so the baseline has the buffers one request uses.
    for _ in 0..3 {
        assert_eq!(lb.get("/").status, 200);
    }
    thread::sleep(Duration::from_millis(300));
    let baseline = rss_kib(pid);
    let mut held: Vec<TcpStream> = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = TcpStream::connect(lb.addr()).expect("connect");
        s.write_all(b"G").unwrap();
        held.push(s);
    }
    // Every connection accepted and its byte read.
    thread::sleep(Duration::from_millis(1500));
    let loaded = rss_kib(pid);
    let per_conn = (loaded.saturating_sub(baseline)) as f64 / N as f64;
    eprintln!("VmRSS {baseline} KiB -> {loaded} KiB with {N} connections: {per_conn:.2} KiB each");
    assert!(per_conn < 8.0, "{per_conn:.2} KiB per connection");
    assert_eq!(quick_get(lb.addr(), Duration::from_secs(5)), Some(200));
    drop(held);
    let grown = loaded.saturating_sub(baseline);
    let back = eventually(Duration::from_secs(10), || {
        rss_kib(pid) <= baseline + grown / 2 + 1024
    });
    let after = rss_kib(pid);
    eprintln!("VmRSS after they closed: {after} KiB");
    assert!(back, "VmRSS stays at {after} KiB (baseline {baseline} KiB)");
}

#[test]
fn max_connections_per_ip_refuses_the_next_one_and_counts_it() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(&[server(b.addr)], "", "").replacen(
        "listen = \"127.0.0.1:0\"\n[[routes]]",
        "listen = \"127.0.0.1:0\"\nmax_connections_per_ip = 3\n[[routes]]",
        1,
    ));
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr()).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(200));
    // The fourth from 127.0.0.1 is closed at once, without an answer.
    assert_eq!(quick_get(lb.addr(), Duration::from_secs(5)), None);
    let text = lb.admin_get("/metrics").text();
    let line = "ringlb_connections_refused_total{listener=\"http\",reason=\"per_ip\"} 1";
    assert!(text.lines().any(|l| l == line), "{text}");
    // One closes: there is room again.
    drop(held.pop());
    assert!(eventually(Duration::from_secs(5), || quick_get(
        lb.addr(),
        Duration::from_secs(2)
    ) == Some(200)));
}

/// With `max_conns = 1`, a client that reads its response a little at a time (each write still
/// progresses within `client_send`) no longer keeps the only server slot: below
/// `limits.min_send_rate` it is cut, and the next client is served. A client reading at full
/// speed downloads a large body untouched.
#[test]
fn a_slow_reader_does_not_hold_the_only_slot() {
    let b = Backend::start("b", &[]);
    let lb = Ringlb::start(&config(
        &[format!("{}\nmax_conns = 1", server(b.addr))],
        "",
        "[timeouts]\nclient_send = \"1s\"\n[limits]\nmin_send_rate = \"1MiB\"\n",
    ));
    // A small receive window, so that ringlb's writes wait for this reader.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 << 10).unwrap();
    sock.connect(&lb.addr().into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.write_all(b"GET /size/64000000 HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let reader = thread::spawn(move || {
        // 16 KiB every 250 ms: 64 KiB/s, enough for each write to progress within 1 s.
        let mut buf = [0u8; 16 << 10];
        let mut total = 0usize;
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline && !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            match slow.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            thread::sleep(Duration::from_millis(250));
        }
        total
    });
    thread::sleep(Duration::from_millis(500));
    // The slot is taken: another client is refused for now (no queue).
    assert_eq!(quick_get(lb.addr(), Duration::from_secs(5)), Some(503));
    // Within the limit's reach the slot is free again.
    let started = Instant::now();
    assert!(
        eventually(Duration::from_secs(25), || quick_get(
            lb.addr(),
            Duration::from_secs(5)
        ) == Some(200)),
        "the slow reader still holds the only slot"
    );
    eprintln!("slot free after {:?}", started.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let read = reader.join().unwrap();
    assert!(read < 64_000_000, "read {read}");

    // A client reading at full speed gets every byte of a large body.
    let mut c = Client::connect(lb.addr());
    c.send(b"GET /size/100000000 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100_000_000);
}
