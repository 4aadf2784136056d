use super::*;

use proptest::prelude::*;

/// Names that change framing, the connection or the host; generated fields avoid them so the
/// expected parse is known.
const SPECIAL: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
];

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,12}".prop_filter("special", |n| {
        !SPECIAL.iter().any(|s| n.eq_ignore_ascii_case(s))
    })
}

fn value() -> impl Strategy<Value = String> {
    "([!-~]([ -~\t]{0,30}[!-~])?)?"
}

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    target: String,
    host: String,
    fields: Vec<(String, String)>,
    body: RequestBody,
}

fn request() -> impl Strategy<Value = Req> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "PURGE",
    ];
    let body = prop_oneof![
        Just(RequestBody::None),
        any::<u64>().prop_map(RequestBody::Length),
        Just(RequestBody::Chunked),
    ];
    (
        prop::sample::select(&METHODS[..]),
        "/[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,40}",
        "[a-z0-9.-]{0,20}(:[0-9]{1,5})?",
        prop::collection::vec((name(), value()), 0..20),
        body,
    )
        .prop_map(|(method, target, host, fields, body)| Req {
            method,
            target,
            host,
            fields,
            body,
        })
}

fn serialize(r: &Req) -> Vec<u8> {
    let mut s = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", r.method, r.target, r.host);
    for (n, v) in &r.fields {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    match r.body {
        RequestBody::None => {}
        RequestBody::Length(n) => s.push_str(&format!("Content-Length: {n}\r\n")),
        RequestBody::Chunked => s.push_str("Transfer-Encoding: chunked\r\n"),
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Pieces of a request head from which arbitrary but likely-parsing heads are made.
fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let parts: Vec<&'static [u8]> = vec![
        b"GET ",
        b"POST ",
        b"OPTIONS ",
        b"CONNECT ",
        b"/",
        b"/a?b",
        b"*",
        b"http://h",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b" HTTP/2.0",
        b"\r\n",
        b"\n",
        b"\r",
        b" ",
        b"\t",
        b",",
        b":",
        b"Host: a",
        b"Host:",
        b"Content-Length: 5",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: ",
        b"gzip",
        b"chunked",
        b"Connection: ",
        b"close",
        b"keep-alive",
        b"upgrade",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"X-Forwarded-For: 1.2.3.4",
        b"Cookie: SRV=1; a=2",
        b"x",
        b"0",
        b"\0",
        b"\xff",
        b"@",
    ];
    prop::collection::vec(prop::sample::select(parts), 0..40).prop_map(|v| v.concat())
}

#[derive(Clone, Debug)]
struct Body {
    chunks: Vec<Vec<u8>>,
    ext: bool,
    upper: bool,
    trailers: Vec<(String, String)>,
}

fn chunked_body() -> impl Strategy<Value = Body> {
    (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..6),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((name(), value()), 0..3),
    )
        .prop_map(|(chunks, ext, upper, trailers)| Body {
            chunks,
            ext,
            upper,
            trailers,
        })
}

fn encode(b: &Body) -> Vec<u8> {
    let mut out = Vec::new();
    for c in &b.chunks {
        let size = if b.upper {
            format!("{:X}", c.len())
        } else {
            format!("{:x}", c.len())
        };
        out.extend_from_slice(size.as_bytes());
        if b.ext {
            out.extend_from_slice(b" ; name=\"v a\";x");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in &b.trailers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn serialized_request_parses_back(r in request()) {
        let buf = serialize(&r);
        let h = ok(&buf);
        prop_assert_eq!(h.method_span.get(&buf), r.method.as_bytes());
        prop_assert_eq!(h.method, Method::from_bytes(r.method.as_bytes()));
        prop_assert_eq!(h.target.get(&buf), r.target.as_bytes());
        prop_assert_eq!(h.host.map(|s| s.get(&buf)), Some(r.host.as_bytes()));
        prop_assert_eq!(h.body, r.body);
        prop_assert_eq!(h.head_len, buf.len());
        // Host first, then the generated fields in order.
        for (f, (n, v)) in h.headers.iter().skip(1).zip(&r.fields) {
            prop_assert_eq!(f.name.get(&buf), n.as_bytes());
            prop_assert_eq!(f.value.get(&buf), v.as_bytes());
        }
        checks::request(&buf);
    }

    #[test]
    fn chunked_any_split(b in chunked_body(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut body = encode(&b);
        let len = body.len();
        body.extend_from_slice(b"NEXT");
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for &to in &at {
            pieces.push(&body[from..to]);
            from = to;
        }
        pieces.push(&body[from..]);
        let want: Vec<u8> = b.chunks.concat();
        prop_assert_eq!(dechunk(&pieces), Ok((want, len, true)));
    }

    #[test]
    fn request_any_split(r in request(), extra in head_bytes(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        // A valid head, then arbitrary bytes (the body or the next request).
        let mut buf = serialize(&r);
        buf.extend_from_slice(&extra);
        let at: Vec<usize> = cuts.iter().map(|i| i.index(buf.len() + 1)).collect();
        checks::request_split(&buf, &at);
    }

    #[test]
    fn request_pieces_any_split(data in head_bytes(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        checks::request_split(&data, &at);
    }

    #[test]
    fn request_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        checks::request(&data);
    }

    #[test]
    fn request_pieces_never_panic(data in head_bytes()) {
        checks::request(&data);
    }

    #[test]
    fn response_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        checks::response(&data);
        let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
        prefixed.extend_from_slice(&data);
        checks::response(&prefixed);
    }

    #[test]
    fn chunked_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        checks::chunked(&data);
    }

    #[test]
    fn chunked_alphabet_never_panics(data in "[0-9a-fA-Fg;= \t\r\nX:]{0,200}") {
        checks::chunked(data.as_bytes());
    }
}

proptest! {
    /// A head the parser calls complete is one `head_end_seen` sees the end of, at every
    /// prefix where it completes: a connection reading a head outside the parser never waits
    /// past a complete head.
    #[test]
    fn head_end_seen_whenever_the_parser_completes(pieces in prop::collection::vec(
        prop::sample::select(&[
            "GET /a HTTP/1.1", "POST / HTTP/1.0", "\r\n", "\n", "\r", "Host: h", "X: y",
            " ", "\t", "Content-Length: 2", "ab",
        ][..]),
        0..24,
    )) {
        let data = pieces.concat().into_bytes();
        for end in 0..=data.len() {
            let prefix = &data[..end];
            if let Ok((Status::Complete, _)) = req(prefix) {
                prop_assert!(head_end_seen(prefix), "{:?}", String::from_utf8_lossy(prefix));
            }
        }
    }
}

#[test]
fn head_end_seen_finds_empty_lines() {
    assert!(head_end_seen(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert!(head_end_seen(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nbody"));
    assert!(head_end_seen(b"GET / HTTP/1.1\nHost: h\n\n"));
    assert!(!head_end_seen(b"GET / HTTP/1.1\r\nHost: h\r\n"));
    assert!(!head_end_seen(b"GET / HTTP/1.1\r\nHost: h\r\n\r"));
    assert!(head_end_seen(b"GET / HTTP/1.1\r\nHost: h\r\rX"));
    assert!(!head_end_seen(b""));
    assert!(!head_end_seen(b"G"));
}
