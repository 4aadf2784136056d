//! Cookie sticky sessions (insert mode): pinning, re-pinning, indirect, nocache, draining.

mod support;

use support::*;

const STICKY: &str =
    "sticky = { cookie = \"srv_id\", expires = \"1h\", path = \"/\", indirect = true, nocache = true }";

fn three() -> Vec<Backend> {
    ["s1", "s2", "s3"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect()
}

fn named(backends: &[Backend]) -> Vec<String> {
    backends
        .iter()
        .map(|b| format!("{}\nname = \"{}\"", server(b.addr), b.name))
        .collect()
}

fn get(lb: &Ringlb, path: &str, cookie: Option<&str>) -> Response {
    let mut c = Client::connect(lb.addr());
    let cookie = cookie
        .map(|v| format!("Cookie: {v}\r\n"))
        .unwrap_or_default();
    c.send(format!("GET {path} HTTP/1.1\r\nHost: h\r\n{cookie}\r\n").as_bytes());
    c.response()
}

/// `srv_id=VALUE` from a Set-Cookie header.
fn pin(r: &Response) -> String {
    let sc = r.header("set-cookie").expect("Set-Cookie");
    sc.split(';').next().unwrap().trim().to_string()
}

#[test]
fn a_cookie_pins_the_client_across_100_requests() {
    let b = three();
    let lb = Ringlb::start(&config(&named(&b), STICKY, ""));
    let first = get(&lb, "/", None);
    let sc = first.header("set-cookie").unwrap().to_string();
    assert!(sc.starts_with("srv_id="), "{sc}");
    assert!(
        sc.contains("; Path=/") && sc.contains("; Max-Age=3600") && sc.contains("; HttpOnly"),
        "{sc}"
    );
    let value = pin(&first);
    // Opaque: not the server's address or name.
    assert!(!b
        .iter()
        .any(|x| value.contains(&x.addr.port().to_string()) || value.contains(&x.name)));
    assert_eq!(first.header("cache-control"), Some("private"));
    let home = first.header("x-backend").unwrap().to_string();
    let mut c = Client::connect(lb.addr());
    for _ in 0..100 {
        c.send(format!("GET / HTTP/1.1\r\nHost: h\r\nCookie: {value}\r\n\r\n").as_bytes());
        let r = c.response();
        assert_eq!(r.header("x-backend"), Some(home.as_str()));
        assert_eq!(
            r.header("set-cookie"),
            None,
            "an already pinned client is not re-pinned"
        );
    }
}

#[test]
fn indirect_strips_the_cookie_before_the_backend() {
    let b = three();
    let lb = Ringlb::start(&config(&named(&b), STICKY, ""));
    let value = pin(&get(&lb, "/", None));
    let echo = get(&lb, "/echo", Some(&format!("a=1; {value}; b=2")));
    let head = echo.text();
    assert!(head.contains("Cookie: a=1; b=2\r\n"), "{head}");
    assert!(!head.contains("srv_id"), "{head}");
}

#[test]
fn a_cookie_for_a_dead_server_moves_and_is_rewritten() {
    let mut b = three();
    let servers: Vec<String> = named(&b)
        .into_iter()
        .map(|s| format!("{s}\nfail_timeout = \"30s\""))
        .collect();
    let lb = Ringlb::start(&config(&servers, STICKY, ""));
    let first = get(&lb, "/", None);
    let value = pin(&first);
    let home = first.header("x-backend").unwrap().to_string();
    let i = b.iter().position(|x| x.name == home).unwrap();
    drop(b.remove(i));
    let moved = get(&lb, "/", Some(&value));
    assert_eq!(moved.status, 200);
    let new_home = moved.header("x-backend").unwrap().to_string();
    assert_ne!(new_home, home);
    let new_value = pin(&moved);
    assert_ne!(new_value, value);
    // And the new cookie sticks.
    for _ in 0..10 {
        assert_eq!(
            get(&lb, "/", Some(&new_value)).header("x-backend"),
            Some(new_home.as_str())
        );
    }
}

/// A cookie pinning to `name`: new clients until one lands there (round robin).
fn cookie_for(lb: &Ringlb, name: &str) -> String {
    for _ in 0..12 {
        let r = get(lb, "/", None);
        if r.header("x-backend") == Some(name) {
            return pin(&r);
        }
    }
    panic!("no request landed on {name}");
}

/// The cookie value ringlb used to issue for a server: an unkeyed hash of the upstream and
/// server names, which anyone can compute.
fn forged(server: &str) -> String {
    let id = ringlb::balance::stable_hash(format!("app/{server}").as_bytes());
    format!("srv_id={id:016x}")
}

/// Sets a server's state through the admin API.
fn set_state(lb: &Ringlb, server: &str, state: &str) {
    let body = format!("{{\"state\":\"{state}\"}}");
    let mut c = Client::connect(lb.admin);
    c.send(
        format!(
            "POST /api/upstreams/app/servers/{server} HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.response().status, 200);
}

#[test]
fn a_draining_server_keeps_its_sessions_but_gets_no_new_ones() {
    let b = three();
    let lb = Ringlb::start(&config(&named(&b), STICKY, ""));
    let before = cookie_for(&lb, "s1");
    set_state(&lb, "s1", "drain");
    // New clients never land on the draining server.
    for _ in 0..30 {
        assert_ne!(get(&lb, "/", None).header("x-backend"), Some("s1"));
    }
    // A client pinned to it before the drain stays.
    for _ in 0..10 {
        let r = get(&lb, "/", Some(&before));
        assert_eq!(r.header("x-backend"), Some("s1"));
        assert_eq!(r.header("set-cookie"), None);
    }
}

#[test]
fn forged_cookies_reach_neither_a_backup_nor_a_draining_server() {
    let b: Vec<Backend> = ["s1", "s2", "bk", "dr"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let mut servers = named(&b);
    servers[2].push_str("\nbackup = true");
    servers[3].push_str("\ndrain = true");
    let lb = Ringlb::start(&config(&servers, STICKY, ""));
    for target in ["bk", "dr"] {
        for _ in 0..6 {
            let r = get(&lb, "/", Some(&forged(target)));
            assert_eq!(r.status, 200);
            let home = r.header("x-backend").unwrap();
            assert!(home == "s1" || home == "s2", "{target}: served by {home}");
            // Re-pinned with a genuine cookie for the primary that served it.
            assert!(r.header("set-cookie").is_some());
        }
    }
    // A genuine value with its issue time moved back (to claim a session from before the
    // drain) is no cookie at all.
    let genuine = cookie_for(&lb, "s1");
    let (name, value) = genuine.split_once('=').unwrap();
    let backdated = format!("{name}={}00000001{}", &value[..16], &value[24..]);
    let r = get(&lb, "/", Some(&backdated));
    assert!(r.header("set-cookie").is_some(), "backdated value accepted");
    // Nothing in the value is the server's name or address.
    assert!(!b
        .iter()
        .any(|x| value.contains(&format!("{:x}", x.addr.port())) || value.contains(&x.name)));
}

#[test]
fn a_backup_cookie_counts_only_while_backups_serve() {
    let b: Vec<Backend> = ["s1", "bk"]
        .iter()
        .map(|n| Backend::start(n, &[]))
        .collect();
    let mut servers = named(&b);
    servers[1].push_str("\nbackup = true");
    let lb = Ringlb::start(&config(&servers, STICKY, ""));
    set_state(&lb, "s1", "maint");
    let r = get(&lb, "/", None);
    assert_eq!(r.header("x-backend"), Some("bk"));
    let on_backup = pin(&r);
    assert_eq!(
        get(&lb, "/", Some(&on_backup)).header("x-backend"),
        Some("bk")
    );
    // The primary is back: the backup's sessions move to it.
    set_state(&lb, "s1", "ready");
    let r = get(&lb, "/", Some(&on_backup));
    assert_eq!(r.header("x-backend"), Some("s1"));
    assert!(r.header("set-cookie").is_some());
}

#[test]
fn sessions_survive_a_reload_and_a_shared_secret_spans_nodes() {
    let b = three();
    let lb = Ringlb::start(&config(&named(&b), STICKY, ""));
    let value = cookie_for(&lb, "s2");
    lb.proc.signal(libc::SIGHUP);
    assert!(lb
        .proc
        .wait_line(std::time::Duration::from_secs(10), |l| l
            .contains("reloaded"))
        .is_some());
    for _ in 0..5 {
        let r = get(&lb, "/", Some(&value));
        assert_eq!(r.header("x-backend"), Some("s2"));
        assert_eq!(r.header("set-cookie"), None);
    }
    // Another node without the secret does not know this process's cookies...
    let other = Ringlb::start(&config(&named(&b), STICKY, ""));
    assert!(get(&other, "/", Some(&value))
        .header("set-cookie")
        .is_some());
    // ...two nodes with the same secret share them.
    let shared = STICKY.replace(
        "nocache = true",
        "nocache = true, secret = \"0123456789abcdef0123456789abcdef\"",
    );
    let n1 = Ringlb::start(&config(&named(&b), &shared, ""));
    let n2 = Ringlb::start(&config(&named(&b), &shared, ""));
    let value = cookie_for(&n1, "s3");
    for _ in 0..5 {
        let r = get(&n2, "/", Some(&value));
        assert_eq!(r.header("x-backend"), Some("s3"));
        assert_eq!(r.header("set-cookie"), None);
    }
}

#[test]
fn samesite_and_secure_attributes() {
    let b = three();
    let lb = Ringlb::start(&config(&named(&b), STICKY, ""));
    let sc = get(&lb, "/", None)
        .header("set-cookie")
        .unwrap()
        .to_string();
    // A plain listener: no Secure by default (TLS listeners add it); SameSite=Lax.
    assert!(sc.ends_with("; HttpOnly; SameSite=Lax"), "{sc}");
    let strict = STICKY.replace(
        "nocache = true",
        "nocache = true, samesite = \"strict\", secure = true",
    );
    let lb = Ringlb::start(&config(&named(&b), &strict, ""));
    let sc = get(&lb, "/", None)
        .header("set-cookie")
        .unwrap()
        .to_string();
    assert!(sc.ends_with("; SameSite=Strict; Secure"), "{sc}");
}
