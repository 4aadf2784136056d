//! Per-route traffic features (nginx's `client_max_body_size`, `proxy_set_header` /
//! `add_header`, prefix rewrites, `return`), end to end against a recording backend.

mod support;

use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Powered-By: php\r\n\r\nok";
const WAIT: Duration = Duration::from_secs(5);

/// One recorder behind a proxy whose route carries `route` lines.
fn proxy(route: &str) -> (Recorder, Ringlb) {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        &format!("{route}\n[proxy]\nvia = false\n"),
    ));
    (rec, lb)
}

#[test]
fn declared_body_over_the_limit_is_413_before_any_byte_is_read() {
    let (rec, lb) = proxy("client_max_body_size = \"10\"");
    // Expect: 100-continue: no 100, the 413 at once, then the close.
    let mut c = Client::connect(lb.addr());
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    assert!(rec.none_within(Duration::from_millis(200)));

    // At the limit: forwarded, and the connection goes on.
    let mut c = Client::connect(lb.addr());
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789");
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).expect("forwarded");
    assert!(got.ends_with(b"\r\n\r\n0123456789"));
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn chunked_body_growing_past_the_limit_is_cut_with_413() {
    let (rec, lb) = proxy("client_max_body_size = \"8\"");
    let mut c = Client::connect(lb.addr());
    c.send(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"5\r\nworld\r\n0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(c.closed_within(WAIT));
    // The server never saw a complete request.
    assert!(rec.none_within(Duration::from_millis(300)));

    // Under the limit: passed through.
    let mut c = Client::connect(lb.addr());
    c.send(
        b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    assert!(rec
        .next(WAIT)
        .expect("forwarded")
        .ends_with(b"3\r\nabc\r\n0\r\n\r\n"));
}

#[test]
fn request_headers_are_set_added_and_removed() {
    let (rec, lb) = proxy(
        "request_headers = { set = { \"X-Real-IP\" = \"$remote_addr\", \"X-Env\" = \"prod\" }, \
         add = { \"X-Origin\" = \"$scheme://$host$request_uri\" }, remove = [\"X-Secret\"] }",
    );
    let mut c = Client::connect(lb.addr());
    c.send(
        b"GET /a?b=1 HTTP/1.1\r\nHost: h.example:8080\r\nX-Env: dev\r\nX-Secret: s\r\n\
          X-secret: t\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).expect("forwarded");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "GET /a?b=1 HTTP/1.1\r\nHost: h.example:8080\r\nAccept: */*\r\n\
         X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\
         X-Env: prod\r\nX-Real-IP: 127.0.0.1\r\nX-Origin: http://h.example/a?b=1\r\n\r\n"
    );
}

#[test]
fn response_headers_are_set_added_and_removed() {
    let (_rec, lb) = proxy(
        "response_headers = { set = { \"X-Served-By\" = \"$server_name\" }, \
         add = { \"X-Uri\" = \"$request_uri\" }, remove = [\"X-Powered-By\"] }",
    );
    let mut c = Client::connect(lb.addr());
    c.send(b"GET /p?q HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-powered-by"), None);
    assert!(r
        .header("x-served-by")
        .is_some_and(|v| v.starts_with("127.0.0.1:")));
    assert_eq!(r.header("x-uri"), Some("/p?q"));
    assert_eq!(r.text(), "ok");
}

#[test]
fn path_prefix_is_rewritten_and_the_query_kept() {
    let (rec, lb) = proxy("path = \"/api\"\nstrip_prefix = \"/api\"\nrewrite_prefix = \"/v2\"");
    for (sent, forwarded) in [
        ("/api/users?x=1", "/v2/users?x=1"),
        ("/api", "/v2/"),
        ("/api?x", "/v2/?x"),
    ] {
        let mut c = Client::connect(lb.addr());
        c.send(format!("GET {sent} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(c.response().status, 200);
        let got = rec.next(WAIT).expect("forwarded");
        let line = format!("GET {forwarded} HTTP/1.1\r\n");
        assert!(
            got.starts_with(line.as_bytes()),
            "{sent}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    let (rec, lb) = proxy("path = \"/api/\"\nstrip_prefix = \"/api\"");
    let mut c = Client::connect(lb.addr());
    c.send(b"GET /api/x?y HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(rec
        .next(WAIT)
        .expect("forwarded")
        .starts_with(b"GET /x?y HTTP/1.1\r\n"));
}

fn return_config(extra_routes: &str, rec: &Recorder) -> String {
    format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         {extra_routes}\n\
         [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{}\"\n",
        rec.addr
    )
}

#[test]
fn return_routes_answer_without_an_upstream() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&return_config(
        "[[routes]]\nlistener = \"http\"\npath = \"/old\"\n\
         return = { status = 301, location = \"https://example.com$request_uri\" }\n\
         [[routes]]\nlistener = \"http\"\npath = \"/health\"\nreturn = { status = 200, body = \"ok\\n\" }\n\
         response_headers = { set = { \"Cache-Control\" = \"no-store\" } }\n\
         [[routes]]\nlistener = \"http\"\npath = \"/empty\"\nreturn = { status = 204 }\n",
        &rec,
    ));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET /old/page?x=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some("https://example.com/old/page?x=1")
    );
    // Keep-alive goes on.
    c.send(b"GET /health HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    c.send(b"GET /empty HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("content-length"), None);
    c.send(b"HEAD /health HTTP/1.1\r\nHost: h\r\n\r\n");
    let r = c.response_to_head();
    assert_eq!((r.status, r.header("content-length")), (200, Some("3")));
    // Other paths still reach the upstream; the return routes never did.
    c.send(b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(rec
        .next(WAIT)
        .expect("forwarded")
        .starts_with(b"GET /other "));
    assert!(rec.none_within(Duration::from_millis(100)));
}
