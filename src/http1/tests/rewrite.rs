use super::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

fn fwd() -> RequestForward<'static> {
    RequestForward {
        client_ip: IP,
        proto: Proto::Http,
        default_host: b"backend.local",
        tunnel: false,
        strip_expect: false,
        drop_cookie: None,
        request_id: None,
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
        strip_expect: true,
        request_id: Some(b"abc123"),
        ..fwd()
    };
    assert_eq!(
        rewrite(buf, &f),
        "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\nX-Forwarded-For: 192.0.2.7\r\n\
         X-Forwarded-Proto: http\r\nX-Request-Id: abc123\r\nConnection: upgrade\r\n\
         Upgrade: websocket\r\n\r\n"
    );
    // Without the options, Expect and the incoming id pass, and no upgrade is forwarded.
    let out = rewrite(buf, &fwd());
    assert!(out.contains("\r\nExpect: 100-continue\r\nX-Request-Id: spoofed\r\n"));
    assert!(!out.contains("pgrade"));
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
