//! Balancing through the real binary: the distribution across servers.

mod support;

use std::collections::HashMap;
use support::*;

#[test]
fn weights_5_3_2_over_1000_requests() {
    let backends: Vec<Backend> = ["a", "b", "c"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let servers: Vec<String> = backends
        .iter()
        .zip([5, 3, 2])
        .map(|(b, w)| format!("{}\nweight = {w}", server(b.addr)))
        .collect();
    let lb = Ringlb::start(&config(&servers, "balance = \"round_robin\"", ""));
    let mut c = Client::connect(lb.addr());
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..1000 {
        c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let r = c.response();
        *counts
            .entry(r.header("x-backend").unwrap().to_string())
            .or_default() += 1;
    }
    // One worker: smooth weighted round robin is exact.
    assert_eq!(counts["a"], 500, "{counts:?}");
    assert_eq!(counts["b"], 300, "{counts:?}");
    assert_eq!(counts["c"], 200, "{counts:?}");
}

fn counts_by_backend(lb: &Ringlb, requests: usize, path: &str) -> HashMap<String, u32> {
    let mut c = Client::connect(lb.addr());
    let mut counts = HashMap::new();
    for _ in 0..requests {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.status, 200);
        *counts
            .entry(r.header("x-backend").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    counts
}

fn backend_of(lb: &Ringlb, request: &str) -> String {
    let mut c = Client::connect(lb.addr());
    c.send(request.as_bytes());
    let r = c.response();
    assert_eq!(r.status, 200);
    r.header("x-backend").unwrap().to_string()
}

#[test]
fn consistent_hash_maps_keys_identically_on_separate_instances() {
    let backends: Vec<Backend> = ["h1", "h2", "h3", "h4"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let servers: Vec<String> = backends
        .iter()
        .map(|b| format!("{}\nname = \"{}\"", server(b.addr), b.name))
        .collect();
    let hash = "balance = \"hash\"\nkey = \"$request_uri\"\nconsistent = true";
    let one = Ringlb::start(&config(&servers, hash, ""));
    // A second instance with two workers: every core of every instance agrees.
    let two = Ringlb::start(&config(&servers, hash, "").replace("workers = 1", "workers = 2"));
    let mut used = std::collections::HashSet::new();
    for i in 0..60 {
        let req = format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n");
        let a = backend_of(&one, &req);
        for _ in 0..3 {
            assert_eq!(backend_of(&two, &req), a, "key /item/{i}");
        }
        assert_eq!(backend_of(&one, &req), a, "key /item/{i} moved");
        used.insert(a);
    }
    assert!(used.len() >= 3, "keys spread over {used:?}");
}

#[test]
fn hash_on_header_and_cookie_keys() {
    let backends: Vec<Backend> = ["k1", "k2", "k3"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let servers: Vec<String> = backends.iter().map(|b| server(b.addr)).collect();
    for (key, req) in [
        (
            "header:x-user",
            "GET /{} HTTP/1.1\r\nHost: h\r\nX-User: user-{}\r\n\r\n",
        ),
        (
            "cookie:sid",
            "GET /{} HTTP/1.1\r\nHost: h\r\nCookie: a=1; sid=s{}; b=2\r\n\r\n",
        ),
    ] {
        let lb = Ringlb::start(&config(
            &servers,
            &format!("balance = \"hash\"\nkey = \"{key}\"\nconsistent = true"),
            "",
        ));
        let mut used = std::collections::HashSet::new();
        for user in 0..30 {
            let first = backend_of(
                &lb,
                &req.replacen("{}", "x", 1)
                    .replacen("{}", &user.to_string(), 1),
            );
            for path in ["a", "b", "c"] {
                let r = req
                    .replacen("{}", path, 1)
                    .replacen("{}", &user.to_string(), 1);
                assert_eq!(backend_of(&lb, &r), first, "{key} user {user}");
            }
            used.insert(first);
        }
        assert!(used.len() >= 2, "{key}: {used:?}");
    }
}

#[test]
fn ip_hash_uses_the_trusted_real_ip() {
    let backends: Vec<Backend> = ["i1", "i2", "i3"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let servers: Vec<String> = backends.iter().map(|b| server(b.addr)).collect();
    let text = config(&servers, "balance = \"ip_hash\"", "").replacen(
        "listen = \"127.0.0.1:0\"\n[[routes]]",
        "listen = \"127.0.0.1:0\"\nreal_ip_header = \"X-Forwarded-For\"\nreal_ip_from = [\"127.0.0.0/8\"]\n[[routes]]",
        1,
    );
    let lb = Ringlb::start(&text);
    let mut used = std::collections::HashSet::new();
    for i in 0..40 {
        // The client is the rightmost address not in real_ip_from.
        let req = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 198.51.100.7, 203.0.113.{i}, 127.0.0.5\r\n\r\n"
        );
        let first = backend_of(&lb, &req);
        for _ in 0..3 {
            assert_eq!(backend_of(&lb, &req), first);
        }
        used.insert(first);
    }
    assert!(used.len() >= 2, "{used:?}");
    // IPv6 clients hash too.
    let v6 = "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 2001:db8::1\r\n\r\n";
    let first = backend_of(&lb, v6);
    assert_eq!(backend_of(&lb, v6), first);
}

/// Sends requests from `clients` threads for `limit` and counts responses per backend.
fn concurrent_counts(
    lb: &Ringlb,
    clients: usize,
    limit: std::time::Duration,
) -> HashMap<String, u32> {
    let addr = lb.addr();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut counts: HashMap<String, u32> = HashMap::new();
                let end = std::time::Instant::now() + limit;
                while std::time::Instant::now() < end {
                    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                    let r = c.response();
                    assert_eq!(r.status, 200);
                    *counts
                        .entry(r.header("x-backend").unwrap().to_string())
                        .or_default() += 1;
                }
                counts
            })
        })
        .collect();
    let mut total: HashMap<String, u32> = HashMap::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

fn slow_peer_gets_less(balance: &str) {
    let fast1 = Backend::start("fast1", &[]);
    let fast2 = Backend::start("fast2", &[]);
    let slow = Backend::start("slow", &["--delay", "50ms"]);
    let servers: Vec<String> = [&fast1, &fast2, &slow]
        .iter()
        .map(|b| server(b.addr))
        .collect();
    let lb = Ringlb::start(&config(&servers, &format!("balance = \"{balance}\""), ""));
    let counts = concurrent_counts(&lb, 6, std::time::Duration::from_millis(1500));
    let slow_n = *counts.get("slow").unwrap_or(&0);
    let fast_n = counts.get("fast1").unwrap_or(&0) + counts.get("fast2").unwrap_or(&0);
    // Round robin would give the slow server a third of the requests.
    assert!(
        slow_n * 10 < fast_n,
        "{balance}: slow server got {slow_n} of {}: {counts:?}",
        slow_n + fast_n
    );
}

#[test]
fn least_conn_sends_fewer_requests_to_a_slow_server() {
    slow_peer_gets_less("least_conn");
}

#[test]
fn p2c_ewma_sends_fewer_requests_to_a_slow_server() {
    slow_peer_gets_less("p2c_ewma");
}

#[test]
fn random_follows_weights() {
    let a = Backend::start("ra", &[]);
    let b = Backend::start("rb", &[]);
    let servers = vec![
        format!("{}\nweight = 3", server(a.addr)),
        format!("{}\nweight = 1", server(b.addr)),
    ];
    let lb = Ringlb::start(&config(&servers, "balance = \"random\"", ""));
    let counts = counts_by_backend(&lb, 800, "/");
    let ra = counts["ra"];
    assert!((520..=680).contains(&ra), "{counts:?}");
}

#[test]
fn backups_take_over_when_primaries_are_gone_and_hand_back() {
    let primary = Backend::start("primary", &[]);
    let backup = Backend::start("backup", &[]);
    let paddr = primary.addr;
    let servers = vec![
        format!("{}\nfail_timeout = \"300ms\"", server(primary.addr)),
        format!("{}\nbackup = true", server(backup.addr)),
    ];
    let lb = Ringlb::start(&config(&servers, "", ""));
    let counts = counts_by_backend(&lb, 20, "/");
    assert_eq!(counts.get("primary"), Some(&20), "{counts:?}");
    drop(primary);
    // Every request succeeds: the failed connect is retried on the backup.
    let counts = counts_by_backend(&lb, 20, "/");
    assert_eq!(counts.get("backup"), Some(&20), "{counts:?}");
    let _primary = Backend::start_on(&paddr.to_string(), "primary", &[]);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let counts = counts_by_backend(&lb, 20, "/");
    assert_eq!(counts.get("primary"), Some(&20), "{counts:?}");
}

/// Slow start at weight 1 (the default): a server added by a reload gets a small share in its
/// first moments, then its full share once the window has passed. Before the finer weight
/// scale, weight 1 could not ramp at all (the ramp was max(1, weight * elapsed / window)) and
/// the new server took half the traffic at once.
#[test]
fn slow_start_ramps_a_new_server_of_weight_1() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let extra = "slow_start = \"2s\"";
    let lb = Ringlb::start(&config(&[server(a.addr)], extra, ""));
    // Server a's own ramp (it came up with the process) ends first.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    std::fs::write(
        &lb.config_path,
        with_test_engine(&config(&[server(a.addr), server(b.addr)], extra, "")),
    )
    .unwrap();
    lb.proc.signal(libc::SIGHUP);
    assert!(lb
        .proc
        .wait_line(std::time::Duration::from_secs(10), |l| l
            .contains("reloaded"))
        .is_some());
    let share_of_b = |lb: &Ringlb, for_ms: u64| {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(for_ms);
        let (mut n, mut to_b) = (0u32, 0u32);
        while n < 40 || std::time::Instant::now() < until {
            let r = lb.get("/");
            assert_eq!(r.status, 200);
            n += 1;
            to_b += u32::from(r.text().trim() == "b");
        }
        f64::from(to_b) / f64::from(n)
    };
    // The first 400 ms of 2 s: b's weight is at most 16 * 0.4 / 2 = 3 of a's 16.
    let early = share_of_b(&lb, 400);
    assert!(
        early < 0.2,
        "b got {early:.2} of the requests right after it was added"
    );
    std::thread::sleep(std::time::Duration::from_millis(1800));
    let late = share_of_b(&lb, 0);
    assert!(
        (0.4..=0.6).contains(&late),
        "b got {late:.2} after its slow start"
    );
}
