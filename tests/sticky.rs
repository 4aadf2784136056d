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

#[test]
fn a_draining_server_keeps_its_sessions_but_gets_no_new_ones() {
    let b = three();
    let mut servers = named(&b);
    servers[0].push_str("\ndrain = true");
    let lb = Ringlb::start(&config(&servers, STICKY, ""));
    // New clients never land on the draining server.
    for _ in 0..30 {
        assert_ne!(get(&lb, "/", None).header("x-backend"), Some("s1"));
    }
    // A client already pinned to it stays.
    let cookie_s1 = {
        let id = ringlb::balance::stable_hash(b"app/s1");
        format!("srv_id={id:016x}")
    };
    for _ in 0..10 {
        let r = get(&lb, "/", Some(&cookie_s1));
        assert_eq!(r.header("x-backend"), Some("s1"));
        assert_eq!(r.header("set-cookie"), None);
    }
}
