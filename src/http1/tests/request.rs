use super::*;

const GET: &[u8] = b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";

#[test]
fn simple_get() {
    let h = ok(GET);
    assert_eq!(h.method, Method::Get);
    assert_eq!(h.method_span.get(GET), b"GET");
    assert_eq!(h.target.get(GET), b"/a?b=c");
    assert_eq!(h.path.get(GET), b"/a?b=c");
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.head_len, GET.len());
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.headers[1].name.get(GET), b"Accept");
    assert_eq!(h.headers[1].value.get(GET), b"*/*");
    assert_eq!(h.host.map(|s| s.get(GET)), Some(&b"example.com"[..]));
    assert_eq!(h.body, RequestBody::None);
    assert!(h.keep_alive);
    assert!(!h.expect_continue);
    assert_eq!(h.upgrade, None);
}

#[test]
fn every_prefix_is_partial() {
    for i in 0..GET.len() {
        assert_eq!(
            req(&GET[..i]).map(|r| r.0),
            Ok(Status::Partial),
            "prefix {i}"
        );
    }
}

#[test]
fn pipelined_bytes_after_head() {
    let mut buf = GET.to_vec();
    buf.extend_from_slice(b"GET /next HTTP/1.1\r\n");
    assert_eq!(ok(&buf).head_len, GET.len());
}

#[test]
fn head_reuse_clears_headers() {
    let mut head = RequestHead::new();
    let l = Limits::default();
    parse_request(GET, &l, &mut head).unwrap();
    let one = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    parse_request(one, &l, &mut head).unwrap();
    assert_eq!(head.headers.len(), 1);
    assert_eq!(head.head_len, one.len());
}

#[test]
fn leading_empty_lines_are_skipped() {
    let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.head_len, buf.len());
    assert_eq!(h.method_span.get(buf), b"GET");
    assert_eq!(req(b"\r\n\r\n").map(|r| r.0), Ok(Status::Partial));
}

#[test]
fn bare_lf_is_refused() {
    assert_eq!(
        bad(b"GET / HTTP/1.1\nHost: a\r\n\r\n"),
        RequestError::BadRequest("bare LF")
    );
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\nHost: a\n\r\n"),
        RequestError::BadRequest("bare LF")
    );
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\nHost: a\r\n\n"),
        RequestError::BadRequest("bare LF")
    );
    assert_eq!(
        bad(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest("bare LF")
    );
    assert!(matches!(
        bad(b"GET / HTTP/1.1\rHost: a\r\n\r\n"),
        RequestError::BadRequest(_)
    ));
}

#[test]
fn request_line_limit() {
    let l = Limits {
        max_request_line: 20,
        ..Limits::default()
    };
    // No LF yet, already too long.
    let long = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        req_with(long, &l).map(|r| r.0),
        Err(RequestError::UriTooLong)
    );
    // Just at the limit, waiting for more.
    assert_eq!(
        req_with(b"GET /aaaaaaaaaaaaaaa", &l).map(|r| r.0),
        Ok(Status::Partial)
    );
    // Complete line over the limit, head complete or not.
    let line = b"GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\n";
    assert_eq!(
        req_with(line, &l).map(|r| r.0),
        Err(RequestError::UriTooLong)
    );
    let full = b"GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        req_with(full, &l).map(|r| r.0),
        Err(RequestError::UriTooLong)
    );
    assert_eq!(RequestError::UriTooLong.status(), 414);
}

#[test]
fn head_limit() {
    let l = Limits {
        max_head: 40,
        ..Limits::default()
    };
    let partial = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        req_with(partial, &l).map(|r| r.0),
        Err(RequestError::HeadersTooLarge)
    );
    let full = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaa\r\n\r\n";
    assert_eq!(
        req_with(full, &l).map(|r| r.0),
        Err(RequestError::HeadersTooLarge)
    );
    let fits = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
    assert_eq!(req_with(fits, &l).map(|r| r.0), Ok(Status::Complete));
    // Endless empty lines count too.
    assert_eq!(
        req_with(&[b'\r', b'\n'].repeat(30), &l).map(|r| r.0),
        Err(RequestError::HeadersTooLarge)
    );
    assert_eq!(RequestError::HeadersTooLarge.status(), 431);
}

#[test]
fn header_count_limit() {
    let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..99 {
        buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut at_limit = buf.clone();
    at_limit.extend_from_slice(b"\r\n");
    assert_eq!(ok(&at_limit).headers.len(), 100);
    buf.extend_from_slice(b"X-Last: v\r\n\r\n");
    assert_eq!(bad(&buf), RequestError::HeadersTooLarge);

    let l = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    let three = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(
        req_with(three, &l).map(|r| r.0),
        Err(RequestError::HeadersTooLarge)
    );
    // Limits past MAX_HEADERS are capped, not a panic.
    let l = Limits {
        max_headers: 10_000,
        ..Limits::default()
    };
    assert_eq!(req_with(three, &l).map(|r| r.0), Ok(Status::Complete));
}

#[test]
fn versions() {
    let h = ok(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.version, Version::Http10);
    assert_eq!(h.host, None);
    let e = bad(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    assert_eq!((e, e.status()), (RequestError::VersionNotSupported, 505));
    assert_eq!(
        bad(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        RequestError::VersionNotSupported
    );
    assert_eq!(
        bad(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        RequestError::VersionNotSupported
    );
    assert_eq!(bad(b"GET / HTTP/3.0"), RequestError::VersionNotSupported);
    for v in [&b"http/1.1"[..], b"HTTP/1", b"HTTP/11.1", b"FOO"] {
        let mut buf = b"GET / ".to_vec();
        buf.extend_from_slice(v);
        buf.extend_from_slice(b"\r\nHost: a\r\n\r\n");
        assert!(matches!(bad(&buf), RequestError::BadRequest(_)), "{v:?}");
    }
}

#[test]
fn methods() {
    for (m, want) in [
        ("GET", Method::Get),
        ("HEAD", Method::Head),
        ("POST", Method::Post),
        ("PUT", Method::Put),
        ("DELETE", Method::Delete),
        ("OPTIONS", Method::Options),
        ("TRACE", Method::Trace),
        ("PATCH", Method::Patch),
        ("PURGE", Method::Other),
        ("get", Method::Other),
    ] {
        let buf = format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n");
        let h = ok(buf.as_bytes());
        assert_eq!(h.method, want);
        assert_eq!(h.method_span.get(buf.as_bytes()), m.as_bytes());
    }
    let e = bad(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(
        (e, e.status()),
        (RequestError::NotImplemented("CONNECT"), 501)
    );
    assert!(matches!(
        bad(b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest(_)
    ));
    assert!(matches!(
        bad(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest(_)
    ));
}

#[test]
fn idempotent_methods() {
    use Method::*;
    let yes = [Get, Head, Put, Delete, Options, Trace];
    let no = [Post, Patch, Connect, Other];
    assert!(yes.iter().all(|m| m.is_idempotent()));
    assert!(!no.iter().any(|m| m.is_idempotent()));
}

#[test]
fn absolute_form() {
    let buf = b"GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.target.get(buf), b"http://Example.com:8080/p?q");
    assert_eq!(h.path.get(buf), b"/p?q");
    assert_eq!(h.host.map(|s| s.get(buf)), Some(&b"Example.com:8080"[..]));

    let buf = b"GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.path.get(buf), b"");
    assert_eq!(h.host.map(|s| s.get(buf)), Some(&b"h"[..]));
    let buf = b"GET http://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(ok(buf).path.get(buf), b"?x=1");

    for t in [
        "http://u@h/",
        "http:///x",
        "ftp://h/",
        "http:/h",
        "http://h#f",
        "http://a b/",
    ] {
        let buf = format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(
            matches!(bad(buf.as_bytes()), RequestError::BadRequest(_)),
            "{t}"
        );
    }
    // RFC 9112 §3.2: Host is still required on HTTP/1.1.
    assert_eq!(
        bad(b"GET http://h/ HTTP/1.1\r\n\r\n"),
        RequestError::BadRequest("missing Host")
    );
    let buf = b"GET http://h/x HTTP/1.0\r\n\r\n";
    assert_eq!(ok(buf).host.map(|s| s.get(buf)), Some(&b"h"[..]));
}

#[test]
fn asterisk_and_other_forms() {
    let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(h.method, Method::Options);
    assert_eq!(
        bad(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest("asterisk-form")
    );
    assert_eq!(
        bad(b"GET x HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest("request-target")
    );
    assert_eq!(
        bad(b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest("request-target")
    );
    assert_eq!(
        bad(b"GET example.com:80 HTTP/1.1\r\nHost: a\r\n\r\n"),
        RequestError::BadRequest("request-target")
    );
}

#[test]
fn host_rules() {
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\n\r\n"),
        RequestError::BadRequest("missing Host")
    );
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
        RequestError::BadRequest("several Host")
    );
    assert_eq!(
        bad(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        RequestError::BadRequest("several Host")
    );
    for h in [
        "a b", "a/b", "a@b", "a\tb", "a\\b", "a?b", "a#b", "\x7fa", "\u{e9}", "a:b", "a:1:2",
        "a:-1", "[::1", "[::1]x", "::1", "a]", "a[b]",
    ] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
        assert!(
            matches!(bad(buf.as_bytes()), RequestError::BadRequest(_)),
            "{h:?}"
        );
    }
    for h in [
        "",
        "a",
        "a.b:8080",
        "[::1]:80",
        "[::1]",
        "a:",
        "xn--e1a.example",
        "10.0.0.1",
    ] {
        let buf = format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n");
        let h2 = ok(buf.as_bytes());
        assert_eq!(h2.host.map(|s| s.get(buf.as_bytes())), Some(h.as_bytes()));
    }
}

fn with(fields: &str) -> Result<(Status, RequestHead), RequestError> {
    let buf = format!("POST / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
    req(buf.as_bytes())
}

fn body(fields: &str) -> Result<RequestBody, RequestError> {
    with(fields).map(|(_, h)| h.body)
}

#[test]
fn content_length() {
    assert_eq!(body("Content-Length: 5\r\n"), Ok(RequestBody::Length(5)));
    assert_eq!(body("Content-Length: 0\r\n"), Ok(RequestBody::Length(0)));
    assert_eq!(body("content-length: 007\r\n"), Ok(RequestBody::Length(7)));
    assert_eq!(body("Content-Length: 5, 5\r\n"), Ok(RequestBody::Length(5)));
    assert_eq!(
        body("Content-Length: 5\r\nContent-Length: 5\r\n"),
        Ok(RequestBody::Length(5))
    );
    let max = format!("Content-Length: {}\r\n", u64::MAX);
    assert_eq!(body(&max), Ok(RequestBody::Length(u64::MAX)));
    assert_eq!(body(""), Ok(RequestBody::None));
    for v in [
        "5, 6",
        "+5",
        "-5",
        "5a",
        "0x5",
        "5 5",
        "5,",
        ",5",
        "",
        "18446744073709551616",
        "99999999999999999999999",
        "5.0",
    ] {
        let f = format!("Content-Length: {v}\r\n");
        assert_eq!(
            body(&f),
            Err(RequestError::BadRequest("Content-Length")),
            "{v:?}"
        );
    }
    assert_eq!(
        body("Content-Length: 5\r\nContent-Length: 6\r\n"),
        Err(RequestError::BadRequest("Content-Length"))
    );
}

#[test]
fn transfer_encoding() {
    assert_eq!(
        body("Transfer-Encoding: chunked\r\n"),
        Ok(RequestBody::Chunked)
    );
    assert_eq!(
        body("Transfer-Encoding: ChUnKeD\r\n"),
        Ok(RequestBody::Chunked)
    );
    let te = RequestError::BadRequest("Transfer-Encoding");
    for v in [
        "chunked, gzip",
        "gzip",
        "identity",
        "chunked, chunked",
        "",
        "chunked,",
        " , chunked",
    ] {
        let f = format!("Transfer-Encoding: {v}\r\n");
        assert_eq!(body(&f), Err(te), "{v:?}");
    }
    assert_eq!(
        body("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        Err(te)
    );
    assert_eq!(body("Transfer-Encoding: chunked;q=1\r\n"), Err(te));
    assert_eq!(
        body("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
        Err(te)
    );
    let e = body("Transfer-Encoding: gzip, chunked\r\n").unwrap_err();
    assert_eq!(
        (e, e.status()),
        (RequestError::NotImplemented("transfer-coding"), 501)
    );
    assert_eq!(
        body("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        Err(RequestError::NotImplemented("transfer-coding"))
    );
    let both = RequestError::BadRequest("Transfer-Encoding with Content-Length");
    assert_eq!(
        body("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
        Err(both)
    );
    assert_eq!(
        body("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        Err(both)
    );
    assert_eq!(
        body("Content-Length: x\r\nTransfer-Encoding: chunked\r\n"),
        Err(both)
    );
    let old = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        bad(old),
        RequestError::BadRequest("Transfer-Encoding in HTTP/1.0")
    );
}

#[test]
fn malformed_fields() {
    for f in [
        "Host : a\r\n",
        "X-A : b\r\n",
        "X-A\t: b\r\n",
        " X-A: b\r\n",
        "X-A: b\r\n c\r\n",
        "X-A: b\r\n\tc\r\n",
        "X-A: b\0c\r\n",
        "X-A: b\rc\r\n",
        "X-A: b\x01c\r\n",
        "X-A: b\x7fc\r\n",
        "X(A): b\r\n",
        ": b\r\n",
        "X-A b\r\n",
    ] {
        assert!(matches!(with(f), Err(RequestError::BadRequest(_))), "{f:?}");
    }
    // Tabs and obs-text are field content (RFC 9110 §5.5).
    assert_eq!(
        with("X-A: b\tc\u{e9}\r\n").map(|r| r.0),
        Ok(Status::Complete)
    );
}

#[test]
fn field_value_trimmed() {
    let buf = b"GET / HTTP/1.1\r\nHost: \t a \t\r\nX: \r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.headers[0].value.get(buf), b"a");
    assert_eq!(h.headers[1].value.get(buf), b"");
    assert_eq!(find_header(buf, &h.headers, b"x"), Some(&b""[..]));
}

fn conn(version: &str, fields: &str) -> RequestHead {
    let buf = format!("GET / {version}\r\nHost: a\r\n{fields}\r\n");
    ok(buf.as_bytes())
}

#[test]
fn keep_alive() {
    assert!(conn("HTTP/1.1", "").keep_alive);
    assert!(!conn("HTTP/1.1", "Connection: close\r\n").keep_alive);
    assert!(!conn("HTTP/1.1", "Connection: Keep-Alive, CLOSE\r\n").keep_alive);
    assert!(!conn("HTTP/1.1", "Connection: foo\r\nConnection: close\r\n").keep_alive);
    assert!(!conn("HTTP/1.0", "").keep_alive);
    assert!(conn("HTTP/1.0", "Connection: keep-alive\r\n").keep_alive);
    assert!(conn("HTTP/1.0", "Connection: foo , Keep-Alive\r\n").keep_alive);
    assert!(!conn("HTTP/1.0", "Connection: keep-alive, close\r\n").keep_alive);
    assert!(!conn("HTTP/1.0", "Keep-Alive: timeout=5\r\n").keep_alive);
}

#[test]
fn expect_continue() {
    assert!(conn("HTTP/1.1", "Expect: 100-continue\r\n").expect_continue);
    assert!(conn("HTTP/1.1", "Expect: 100-Continue\r\n").expect_continue);
    assert!(!conn("HTTP/1.1", "Expect: 200-ok\r\n").expect_continue);
    // RFC 9110 §10.1.1: ignored on HTTP/1.0.
    assert!(!conn("HTTP/1.0", "Expect: 100-continue\r\n").expect_continue);
}

#[test]
fn upgrade() {
    let buf = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(ok(buf).upgrade.map(|s| s.get(buf)), Some(&b"websocket"[..]));
    assert_eq!(conn("HTTP/1.1", "Upgrade: websocket\r\n").upgrade, None);
    assert_eq!(conn("HTTP/1.1", "Connection: upgrade\r\n").upgrade, None);
    let old = "Connection: upgrade\r\nUpgrade: websocket\r\n";
    assert_eq!(conn("HTTP/1.0", old).upgrade, None);
}

#[test]
fn error_status() {
    assert_eq!(RequestError::BadRequest("x").status(), 400);
    assert_eq!(RequestError::UriTooLong.status(), 414);
    assert_eq!(RequestError::HeadersTooLarge.status(), 431);
    assert_eq!(RequestError::NotImplemented("x").status(), 501);
    assert_eq!(RequestError::VersionNotSupported.status(), 505);
}

#[test]
fn header_lookup() {
    let buf = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; SRV=s2\r\ncookie: b=\"q\"; flag\r\n\r\n";
    let h = ok(buf);
    assert_eq!(find_header(buf, &h.headers, b"HOST"), Some(&b"a"[..]));
    assert_eq!(
        find_header(buf, &h.headers, b"cookie"),
        Some(&b"a=1; SRV=s2"[..])
    );
    assert_eq!(find_header(buf, &h.headers, b"x"), None);
    assert_eq!(find_cookie(buf, &h.headers, b"SRV"), Some(&b"s2"[..]));
    assert_eq!(find_cookie(buf, &h.headers, b"b"), Some(&b"\"q\""[..]));
    assert_eq!(find_cookie(buf, &h.headers, b"flag"), Some(&b""[..]));
    assert_eq!(find_cookie(buf, &h.headers, b"srv"), None);
    assert_eq!(find_cookie(buf, &h.headers, b"c"), None);
}

#[test]
fn span_helpers() {
    let s = Span { start: 2, end: 5 };
    assert_eq!(s.get(b"abcdefg"), b"cde");
    assert_eq!(s.len(), 3);
    assert!(!s.is_empty());
    assert_eq!(s.get(b"abc"), b"");
    assert!(Span::default().is_empty());
    assert_eq!(Span { start: 5, end: 2 }.len(), 0);
}
