use super::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn fwd() -> RequestForward<'static> {
    RequestForward {
        client_ip: IP,
        proto: Proto::Http,
        default_host: b"backend.local",
        tunnel: false,
        via: None,
        drop_cookie: None,
        request_id: None,
        prefix: None,
        edits: None,
    }
}

fn rewrite(buf: &[u8], f: &RequestForward) -> String {
    let head = ok(buf);
    let mut out = Vec::new();
    write_request_head(buf, &head, f, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn plain_request() {
    let buf = b"GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept:  */* \r\nUser-Agent: t\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "GET /a?b HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nUser-Agent: t\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn appends_to_out() {
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = ok(buf);
    let mut out = b"kept".to_vec();
    write_request_head(buf, &head, &fwd(), &mut out);
    assert!(out.starts_with(b"keptGET / HTTP/1.1\r\n"));
}

#[test]
fn hop_by_hop_removed() {
    let buf =
        b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Content-Length\r\n\
        Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X-Sum\r\n\
        Upgrade: websocket\r\nx-secret: 1\r\nConnection: X-Other\r\nX-Other: 2\r\nX-Kept: 3\r\n\
        Content-Length: 4\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "POST /x HTTP/1.1\r\nHost: a\r\nX-Kept: 3\r\nContent-Length: 4\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn content_length_sent_once() {
    let buf = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 005, 5\r\nX: 1\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX: 1\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(
        resp(buf, Method::Get, &rfwd()),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    );
    // Informational on a HEAD response: passed as received.
    assert_eq!(
        resp(buf, Method::Head, &rfwd()),
        "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n"
    );
}

#[test]
fn framing_and_host_survive_connection_listing() {
    let buf = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding, host\r\n\
        Transfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn forwarded_for_appends() {
    let buf = b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nHost: a\r\n\
        X-Forwarded-Proto: https\r\nx-forwarded-for: 10.0.0.3\r\nX-Forwarded-For: \r\n\r\n";
    let f = RequestForward {
        proto: Proto::Https,
        ..fwd()
    };
    assert_eq!(
        rewrite(buf, &f),
        "GET / HTTP/1.1\r\nHost: a\r\n\
         X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\nX-Forwarded-Proto: https\r\n\r\n"
    );
    let v6 = RequestForward {
        client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        ..fwd()
    };
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(rewrite(buf, &v6).contains("\r\nX-Forwarded-For: ::1\r\n"));
    // A Connection-listed X-Forwarded-For is hop-by-hop: the received chain goes.
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-For\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n";
    assert!(rewrite(buf, &fwd()).contains("\r\nX-Forwarded-For: 192.0.2.7\r\n"));
}

#[test]
fn absolute_form_to_origin_form() {
    let buf = b"GET http://origin.example:81/p?q HTTP/1.1\r\nHost: ignored\r\nAccept: *\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "GET /p?q HTTP/1.1\r\nHost: origin.example:81\r\nAccept: *\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    let buf = b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n";
    assert!(rewrite(buf, &fwd()).starts_with("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For"));
    let buf = b"GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n";
    assert!(rewrite(buf, &fwd()).starts_with("GET /?x HTTP/1.1\r\nHost: h\r\n"));
}

#[test]
fn http10_gets_default_host_and_http11() {
    let buf = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nAccept: *\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "GET / HTTP/1.1\r\nHost: backend.local\r\nAccept: *\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    let buf = b"OPTIONS * HTTP/1.0\r\nHost: a\r\n\r\n";
    assert!(rewrite(buf, &fwd()).starts_with("OPTIONS * HTTP/1.1\r\nHost: a\r\nX-Forwarded-For"));
}

#[test]
fn tunnel_expect_request_id() {
    let buf = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Expect: 100-continue\r\nX-Request-Id: spoofed\r\nSec-WebSocket-Key: k\r\n\r\n";
    let f = RequestForward {
        tunnel: true,
        request_id: Some(b"abc123"),
        ..fwd()
    };
    assert_eq!(
        rewrite(buf, &f),
        "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: http\r\nX-Request-Id: abc123\r\nConnection: upgrade\r\n\
         Upgrade: websocket\r\n\r\n"
    );
    // Without the options, the incoming id passes, and no upgrade is forwarded.
    let out = rewrite(buf, &fwd());
    assert!(out.contains("\r\nHost: a\r\nX-Request-Id: spoofed\r\nSec-WebSocket-Key: k\r\n"));
    assert!(!out.contains("pgrade"));
    assert!(!out.contains("Expect"));
}

#[test]
fn drop_cookie() {
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; SRV=s1;b=2\r\nCookie: SRV=s1\r\n\
        Cookie: c=3\r\n\r\n";
    let f = RequestForward {
        drop_cookie: Some(b"SRV"),
        ..fwd()
    };
    assert_eq!(
        rewrite(buf, &f),
        "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
    // Untouched bytes when the cookie is absent.
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\ncookie: a=1;b=2\r\n\r\n";
    assert!(rewrite(buf, &f).contains("\r\ncookie: a=1;b=2\r\n"));
}

fn resp(buf: &[u8], method: Method, f: &ResponseForward) -> String {
    let head = res_ok(buf, method);
    let mut out = Vec::new();
    write_response_head(buf, &head, f, &mut out);
    String::from_utf8(out).unwrap()
}

fn rfwd() -> ResponseForward<'static> {
    ResponseForward {
        keep_alive: true,
        client_version: Version::Http11,
        dechunk: false,
        set_cookie: None,
        nocache: false,
        edits: None,
    }
}

#[test]
fn response_plain() {
    let buf = b"HTTP/1.0 200 OK\r\nServer: s\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\
        Keep-Alive: timeout=5\r\n\r\nhi";
    assert_eq!(
        resp(buf, Method::Get, &rfwd()),
        "HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 2\r\n\r\n"
    );
    let close = ResponseForward {
        keep_alive: false,
        ..rfwd()
    };
    assert!(
        resp(buf, Method::Get, &close).ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n")
    );
    let old = ResponseForward {
        client_version: Version::Http10,
        ..rfwd()
    };
    assert!(resp(buf, Method::Get, &old)
        .ends_with("Content-Length: 2\r\nConnection: keep-alive\r\n\r\n"));
    let no_reason = b"HTTP/1.1 204\r\nX: y\r\n\r\n";
    assert_eq!(
        resp(no_reason, Method::Get, &rfwd()),
        "HTTP/1.1 204 \r\nX: y\r\n\r\n"
    );
}

#[test]
fn response_hop_by_hop_and_dechunk() {
    let buf =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-A, transfer-encoding\r\n\
        X-A: 1\r\nTrailer: X-Sum\r\nUpgrade: h2c\r\nX-B: 2\r\n\r\n";
    assert_eq!(
        resp(buf, Method::Get, &rfwd()),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-B: 2\r\n\r\n"
    );
    let dechunk = ResponseForward {
        keep_alive: false,
        client_version: Version::Http10,
        dechunk: true,
        ..rfwd()
    };
    assert_eq!(
        resp(buf, Method::Get, &dechunk),
        "HTTP/1.1 200 OK\r\nX-B: 2\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn response_switching_protocols() {
    let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: x\r\n\r\n";
    let f = ResponseForward {
        keep_alive: false,
        ..rfwd()
    };
    assert_eq!(
        resp(buf, Method::Get, &f),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\
         Connection: upgrade\r\n\r\n"
    );
}

#[test]
fn response_set_cookie() {
    let buf = b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 0\r\n\r\n";
    let f = ResponseForward {
        set_cookie: Some(b"SRV=s1; Path=/; HttpOnly"),
        nocache: true,
        ..rfwd()
    };
    assert_eq!(
        resp(buf, Method::Get, &f),
        "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 0\r\n\
         Set-Cookie: SRV=s1; Path=/; HttpOnly\r\nCache-Control: private\r\n\r\n"
    );
    let f = ResponseForward {
        set_cookie: Some(b"SRV=s1"),
        ..rfwd()
    };
    assert!(resp(buf, Method::Get, &f).ends_with("Content-Length: 0\r\nSet-Cookie: SRV=s1\r\n\r\n"));
    let f = ResponseForward {
        nocache: true,
        ..rfwd()
    };
    assert!(!resp(buf, Method::Get, &f).contains("private"));
}

#[test]
fn error_responses() {
    let mut out = Vec::new();
    write_error(503, true, &[(b"Retry-After", b"5")], &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\
         Retry-After: 5\r\nConnection: close\r\n\r\n503 Service Unavailable\n"
    );
    let mut out = Vec::new();
    write_error(404, false, &[], &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n\
         404 Not Found\n"
    );
    // Every emitted error parses back with its declared length.
    for code in [
        400, 408, 413, 414, 431, 500, 501, 502, 504, 505, 599, 1, 65535,
    ] {
        let mut out = Vec::new();
        write_error(code, true, &[], &mut out);
        let mut head = ResponseHead::new();
        let st = parse_response(&out, &Limits::default(), Method::Get, &mut head);
        if (100..=599).contains(&code) {
            assert_eq!(st, Ok(Status::Complete));
            assert_eq!(
                head.body,
                ResponseBody::Length((out.len() - head.head_len) as u64),
                "{code}"
            );
        } else {
            let body = &out[out.iter().rposition(|&b| b == b'\n').unwrap()..];
            assert!(!body.is_empty());
        }
    }
}

#[test]
fn reasons() {
    assert_eq!(reason(200), "OK");
    assert_eq!(reason(431), "Request Header Fields Too Large");
    assert_eq!(reason(599), "");
}

#[test]
fn many_connection_listed_names() {
    let mut s = String::from("GET / HTTP/1.1\r\nHost: a\r\nConnection: ");
    let names: Vec<String> = (0..12).map(|i| format!("X-{i}")).collect();
    s.push_str(&names.join(", "));
    s.push_str("\r\n");
    for n in &names {
        s.push_str(&format!("{n}: v\r\n"));
    }
    s.push_str("X-Kept: v\r\n\r\n");
    assert_eq!(
        rewrite(s.as_bytes(), &fwd()),
        "GET / HTTP/1.1\r\nHost: a\r\nX-Kept: v\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
    );
}

#[test]
fn head_with_more_than_max_headers() {
    // Not something parse_request makes; the rewrite still classifies every field.
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nTE: x\r\nX: y\r\n\r\n";
    let mut head = ok(buf);
    let (te, x) = (head.headers[1], head.headers[2]);
    head.headers.truncate(1);
    head.headers.extend(std::iter::repeat_n(x, MAX_HEADERS));
    head.headers.push(te);
    let mut out = Vec::new();
    write_request_head(buf, &head, &fwd(), &mut out);
    let s = String::from_utf8(out).unwrap();
    assert_eq!(s.matches("X: y\r\n").count(), MAX_HEADERS);
    assert!(!s.contains("TE: x"));
}

#[test]
fn h2c_upgrade_is_stripped_unless_tunnelled() {
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAccept: */*\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: http\r\n\r\n"
    );
    // HTTP2-Settings not listed in Connection is dropped all the same.
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMA\r\n\r\n";
    assert!(!rewrite(buf, &fwd()).contains("HTTP2-Settings"));
    // A route that allows h2c tunnels it with its settings.
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n";
    let f = RequestForward {
        tunnel: true,
        ..fwd()
    };
    assert_eq!(
        rewrite(buf, &f),
        "GET / HTTP/1.1\r\nHost: a\r\nHTTP2-Settings: AAMA\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: http\r\nConnection: upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    );
}

#[test]
fn expect_te_and_listed_fields_never_pass() {
    let buf = b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\nTE: trailers\r\n\
        Connection: X-Secret, te\r\nX-Secret: 1\r\nProxy-Connection: keep-alive\r\n\
        Keep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        rewrite(buf, &fwd()),
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: http\r\n\r\n"
    );
    // HTTP/1.0: Expect is not acted on (RFC 9110 §10.1.1), and not forwarded either.
    let buf = b"POST / HTTP/1.0\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n";
    assert!(!rewrite(buf, &fwd()).contains("Expect"));
}

#[test]
fn via_is_appended_with_the_received_version() {
    let f = RequestForward {
        via: Some(b"lb-a"),
        ..fwd()
    };
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 edge, 1.0 cache (squid)\r\n\r\n";
    assert_eq!(
        rewrite(buf, &f),
        "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 edge, 1.0 cache (squid)\r\n\
         X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nVia: 1.1 lb-a\r\n\r\n"
    );
    let buf = b"GET / HTTP/1.0\r\nHost: a\r\n\r\n";
    assert!(rewrite(buf, &f).ends_with("\r\nVia: 1.0 lb-a\r\n\r\n"));
}

#[test]
fn via_loops_are_found_by_received_by() {
    let name = b"lb-a";
    let looped = |head: &[u8]| via_loop(head, &ok(head).headers, name);
    assert!(looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 LB-A\r\n\r\n"
    ));
    assert!(looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.0 x, HTTP/1.1 lb-a (c)\r\n\r\n"
    ));
    assert!(looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 x\r\nvia:  1.1\tlb-a \r\n\r\n"
    ));
    assert!(!looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 lb-ab, 1.1 x-lb-a\r\n\r\n"
    ));
    assert!(!looped(b"GET / HTTP/1.1\r\nHost: a\r\nVia: lb-a\r\n\r\n"));
    assert!(!looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 edge (lb-a)\r\n\r\n"
    ));
    assert!(!looped(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Via: 1.1 lb-a\r\n\r\n"
    ));
    assert!(is_via_name(b"lb-a.example.com"));
    assert!(!is_via_name(b"") && !is_via_name(b"lb a") && !is_via_name(b"lb,a"));
}

#[test]
fn upgrades_allow_only_listed_protocols() {
    let ws = Upgrades::default();
    assert!(ws.allows(b"websocket") && ws.allows(b"WebSocket") && ws.allows(b"websocket/13"));
    assert!(ws.allows(b"websocket, "));
    assert!(!ws.allows(b"h2c") && !ws.allows(b"websocket, h2c") && !ws.allows(b"h2c, websocket"));
    assert!(!ws.allows(b"") && !ws.allows(b" , "));
    assert!(!Upgrades::new([]).allows(b"websocket"));
    let both = Upgrades::new([&b"WebSocket"[..], b"h2c"]);
    assert!(both.allows(b"h2c, websocket"));
    assert_eq!(
        both.names().collect::<Vec<_>>(),
        [&b"websocket"[..], b"h2c"]
    );
    // The request must ask for an upgrade (Connection: upgrade, HTTP/1.1) to be allowed one.
    let asks = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert!(ws.allow(asks, &ok(asks)));
    let h2c = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n";
    assert!(!ws.allow(h2c, &ok(h2c)));
    let unasked = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    assert!(!ws.allow(unasked, &ok(unasked)));
    assert!(is_protocol_name(b"websocket") && is_protocol_name(b"h2c"));
    assert!(!is_protocol_name(b"") && !is_protocol_name(b"h2c/1") && !is_protocol_name(b"a b"));
}
