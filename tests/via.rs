//! `Via` on forwarded requests (RFC 9110 §7.6.3) and forwarding loops (508).

mod support;

use std::net::TcpListener;
use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const WAIT: Duration = Duration::from_secs(5);

fn via_lines(raw: &[u8]) -> Vec<String> {
    header_lines(raw)
        .into_iter()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .collect()
}

#[test]
fn forwarded_requests_carry_via_after_the_received_ones() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        "[proxy]\nvia = \"lb-test\"\n",
    ));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 edge, 1.0 cache (squid)\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).expect("request");
    assert_eq!(
        via_lines(&got),
        ["Via: 1.1 edge, 1.0 cache (squid)", "Via: 1.1 lb-test"]
    );
    // The received protocol is the client's.
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(via_lines(&rec.next(WAIT).unwrap()), ["Via: 1.0 lb-test"]);
    // Not added to responses.
    let r = lb.get("/");
    assert_eq!(r.header("via"), None);
}

#[test]
fn the_default_via_name_is_the_host_name_and_false_turns_it_off() {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(&[server(rec.addr)], "", ""));
    assert_eq!(lb.get("/").status, 200);
    assert_eq!(
        via_lines(&rec.next(WAIT).unwrap()),
        [format!("Via: 1.1 {}", host.trim())]
    );

    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(&[server(rec.addr)], "", "[proxy]\nvia = false\n"));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 edge\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(via_lines(&rec.next(WAIT).unwrap()), ["Via: 1.1 edge"]);
}

#[test]
fn a_request_that_already_passed_here_gets_508_and_is_not_forwarded() {
    let rec = Recorder::start(OK);
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        "[proxy]\nvia = \"lb-test\"\n",
    ));
    let mut c = Client::connect(lb.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 edge, 1.1 LB-Test\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 508);
    // Without a body the connection stays usable.
    c.send(b"GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 lb-test-2\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).expect("the second request");
    assert_eq!(via_lines(&got), ["Via: 1.1 lb-test-2", "Via: 1.1 lb-test"]);
    assert!(rec.none_within(Duration::from_millis(200)));
    // With a body that was not read, the connection closes.
    let mut c = Client::connect(lb.addr());
    c.send(b"POST / HTTP/1.1\r\nHost: h\r\nVia: 1.1 lb-test\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(c.response().status, 508);
    assert!(c.closed_within(WAIT));
    assert!(rec.none_within(Duration::from_millis(200)));
}

#[test]
fn a_proxy_that_forwards_to_itself_stops_at_the_second_pass() {
    // ringlb's only server is ringlb itself. The port is reserved, released, then bound by
    // ringlb; max_connections bounds the damage should the loop not be caught.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[runtime]\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nvia = \"lb-self\"\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:{port}\"\nmax_connections = 32\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"self\"\n\
         [upstreams.self]\nmax_fails = 0\n[[upstreams.self.servers]]\naddr = \"127.0.0.1:{port}\"\n"
    );
    let lb = Ringlb::start(&text);
    let r = lb.get("/");
    assert_eq!(r.status, 508);
}
