//! Only the upgrades a route allows are forwarded (h2c smuggling), and no hop-by-hop field or
//! expectation reaches a server: what the server receives, byte for byte.

mod support;

use std::io::{Read, Write};
use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
const SWITCH_H2C: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
const WAIT: Duration = Duration::from_secs(5);
/// The Via name the tests configure, so the expected heads do not depend on the host name.
const PROXY: &str = "[proxy]\nvia = \"lb-test\"\n";

const H2C: &[u8] = b"GET /admin HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n\
    Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAccept: */*\r\n\r\n";

fn proxy_to(rec: &Recorder, route_extra: &str) -> Ringlb {
    let text = config(&[server(rec.addr)], "", PROXY).replacen(
        "upstream = \"app\"\n",
        &format!("upstream = \"app\"\n{route_extra}\n"),
        1,
    );
    Ringlb::start(&text)
}

#[test]
fn an_h2c_upgrade_reaches_the_server_as_plain_http() {
    let rec = Recorder::start(OK);
    let lb = proxy_to(&rec, "");
    let mut c = Client::connect(lb.addr());
    c.send(H2C);
    let r = c.response();
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let got = rec.next(WAIT).expect("the server got the request");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "GET /admin HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX-Forwarded-For: 127.0.0.1\r\n\
         X-Forwarded-Proto: http\r\nVia: 1.1 lb-test\r\n\r\n"
    );
    // The connection stays plain HTTP/1.1: a second request is parsed and routed as one.
    c.send(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(c.response().status, 200);
    let next = rec.next(WAIT).expect("second request");
    assert!(next.starts_with(b"GET /next HTTP/1.1\r\n"));
}

#[test]
fn a_101_to_an_upgrade_that_was_not_forwarded_is_not_tunnelled() {
    // A server that switches whatever it is sent: ringlb never asked it to, so it is a 502 and
    // the client's next bytes are never piped to the server unparsed.
    let rec = Recorder::start(SWITCH_H2C);
    let lb = proxy_to(&rec, "");
    let mut c = Client::connect(lb.addr());
    c.send(H2C);
    let r = c.response();
    assert_eq!(r.status, 502);
    assert!(c.closed_within(WAIT));
    let got = rec.next(WAIT).expect("the server got the request");
    assert!(!String::from_utf8_lossy(&got)
        .to_ascii_lowercase()
        .contains("upgrade"));
}

#[test]
fn mixed_or_unknown_upgrades_are_stripped_whole() {
    let rec = Recorder::start(OK);
    let lb = proxy_to(&rec, "");
    for offer in ["websocket, h2c", "h2c, websocket", "foo/1", "TLS/1.2"] {
        let mut c = Client::connect(lb.addr());
        c.send(
            format!("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: {offer}\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(c.response().status, 200, "{offer}");
        let got = rec.next(WAIT).expect("the server got the request");
        assert_eq!(
            String::from_utf8_lossy(&got),
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nVia: 1.1 lb-test\r\n\r\n",
            "{offer}"
        );
    }
}

#[test]
fn hop_by_hop_fields_and_expectations_never_reach_the_server() {
    let rec = Recorder::start(OK);
    let lb = proxy_to(&rec, "");
    let mut c = Client::connect(lb.addr());
    // HTTP2-Settings and Expect that no Connection lists; every hop-by-hop field there is.
    c.send(
        b"POST /p HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMA\r\nExpect: x-custom\r\n\
          TE: trailers, deflate\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          Trailer: X-T\r\nConnection: keep-alive, X-Hop, X-Other\r\nX-Hop: 1\r\n\
          Connection: X-Third\r\nX-Other: 2\r\nX-Third: 3\r\nX-End: yes\r\n\
          Content-Length: 2\r\n\r\nhi",
    );
    assert_eq!(c.response().status, 200);
    let got = rec.next(WAIT).expect("the server got the request");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "POST /p HTTP/1.1\r\nHost: h\r\nX-End: yes\r\nContent-Length: 2\r\n\
         X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nVia: 1.1 lb-test\r\n\r\nhi"
    );
    // Expect: 100-continue is answered by ringlb on HTTP/1.1 and ignored on HTTP/1.0; the
    // server sees it in neither case.
    for version in ["1.1", "1.0"] {
        let mut c = Client::connect(lb.addr());
        c.send(
            format!(
                "PUT /e HTTP/{version}\r\nHost: h\r\nExpect: 100-continue\r\n\
                 Content-Length: 2\r\n\r\n"
            )
            .as_bytes(),
        );
        if version == "1.1" {
            let mut interim = [0u8; 25];
            c.stream.read_exact(&mut interim).unwrap();
            assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        c.stream.write_all(b"ok").unwrap();
        assert_eq!(c.response().status, 200);
        let got = rec.next(WAIT).expect("the server got the request");
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(!text.contains("expect"), "HTTP/{version}: {text}");
        assert!(text.ends_with("\r\n\r\nok"), "HTTP/{version}: {text}");
    }
}

#[test]
fn a_route_that_allows_h2c_tunnels_it() {
    let rec = Recorder::start(SWITCH_H2C);
    let lb = proxy_to(&rec, "upgrade = [\"websocket\", \"h2c\"]");
    let mut c = Client::connect(lb.addr());
    c.send(H2C);
    let r = c.response();
    assert_eq!(r.status, 101);
    assert_eq!(r.header("upgrade"), Some("h2c"));
    let got = rec.next(WAIT).expect("the server got the request");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "GET /admin HTTP/1.1\r\nHost: h\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAccept: */*\r\n\
         X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\nVia: 1.1 lb-test\r\n\
         Connection: upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    );
}

#[test]
fn websocket_is_still_forwarded_by_default_and_can_be_turned_off() {
    const WS: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let rec = Recorder::start(OK);
    let lb = proxy_to(&rec, "");
    let mut c = Client::connect(lb.addr());
    c.send(WS);
    assert_eq!(c.response().status, 200);
    let got = String::from_utf8_lossy(&rec.next(WAIT).unwrap()).into_owned();
    assert!(
        got.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
        "{got}"
    );

    let rec = Recorder::start(OK);
    let lb = proxy_to(&rec, "upgrade = []");
    let mut c = Client::connect(lb.addr());
    c.send(WS);
    assert_eq!(c.response().status, 200);
    let got = String::from_utf8_lossy(&rec.next(WAIT).unwrap()).to_ascii_lowercase();
    assert!(!got.contains("upgrade"), "{got}");
}

#[test]
fn check_names_a_bad_upgrade_entry() {
    let rec = Recorder::start(OK);
    let text = config(&[server(rec.addr)], "", "").replacen(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nupgrade = [\"h2c/2\"]\n",
        1,
    );
    let path = temp_path("upgrade.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringlb"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("routes[0].upgrade[0]: \"h2c/2\" is not a protocol name"),
        "{text}"
    );
}
