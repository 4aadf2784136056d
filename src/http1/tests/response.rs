use super::*;

use Method::{Get, Head};
use ResponseBody::{Chunked, Length, UntilClose};

fn frame(method: Method, line: &str, fields: &str) -> Result<(ResponseBody, bool), ResponseError> {
    let buf = format!("{line}\r\n{fields}\r\n");
    match res(buf.as_bytes(), method)? {
        (Status::Complete, h) => Ok((h.body, h.keep_alive)),
        (Status::Partial, _) => panic!("partial: {buf:?}"),
    }
}

const OK11: &str = "HTTP/1.1 200 OK";
const OK10: &str = "HTTP/1.0 200 OK";

#[test]
fn simple() {
    let buf = b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nX: y\r\n\r\nabc";
    let h = res_ok(buf, Get);
    assert_eq!(h.status, 404);
    assert_eq!(h.version, Version::Http11);
    assert_eq!(h.reason.get(buf), b"Not Found");
    assert_eq!(h.head_len, buf.len() - 3);
    assert_eq!(h.headers.len(), 2);
    assert_eq!(h.body, Length(3));
    assert!(h.keep_alive);
    for i in 0..h.head_len {
        assert_eq!(
            res(&buf[..i], Get).map(|r| r.0),
            Ok(Status::Partial),
            "prefix {i}"
        );
    }
}

#[test]
fn reason_phrase() {
    let buf = b"HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(res_ok(buf, Get).reason.get(buf), b"Tr\xe8s bien");
    let buf = b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(res_ok(buf, Get).reason.get(buf), b"");
    let buf = b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n";
    assert_eq!(res_ok(buf, Get).reason.get(buf), b"");
}

#[test]
fn framing_table() {
    let cl = "Content-Length: 10\r\n";
    let ch = "Transfer-Encoding: chunked\r\n";
    for (method, line, fields, want) in [
        // RFC 9112 §6.3 item 1: no body whatever the fields say.
        (Head, OK11, cl, ResponseBody::None),
        (Head, OK11, ch, ResponseBody::None),
        (Head, OK11, "", ResponseBody::None),
        (Get, "HTTP/1.1 100 Continue", "", ResponseBody::None),
        (
            Get,
            "HTTP/1.1 103 Early Hints",
            "Link: </a>\r\n",
            ResponseBody::None,
        ),
        (Get, "HTTP/1.1 204 No Content", cl, ResponseBody::None),
        (Get, "HTTP/1.1 304 Not Modified", cl, ResponseBody::None),
        (Get, "HTTP/1.1 304 Not Modified", ch, ResponseBody::None),
        // Items 4-8.
        (Get, OK11, ch, Chunked),
        (Get, OK11, "Transfer-Encoding: gzip, Chunked\r\n", Chunked),
        (
            Get,
            OK11,
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Chunked,
        ),
        (Get, OK11, "Transfer-Encoding: gzip\r\n", UntilClose),
        (
            Get,
            OK11,
            "Transfer-Encoding: chunked, gzip\r\n",
            UntilClose,
        ),
        (Get, OK11, cl, Length(10)),
        (Get, OK11, "Content-Length: 10, 10\r\n", Length(10)),
        (Get, OK11, "", UntilClose),
        (Get, OK10, cl, Length(10)),
        (Get, OK10, "", UntilClose),
        (Head, "HTTP/1.1 404 Not Found", "", ResponseBody::None),
    ] {
        assert_eq!(
            frame(method, line, fields).map(|r| r.0),
            Ok(want),
            "{method:?} {line} {fields:?}"
        );
    }
}

#[test]
fn framing_errors() {
    use ResponseError::Framing;
    for (line, fields, want) in [
        (
            OK11,
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            Framing("Transfer-Encoding with Content-Length"),
        ),
        (
            OK11,
            "Content-Length: 3\r\nTransfer-Encoding: gzip\r\n",
            Framing("Transfer-Encoding with Content-Length"),
        ),
        (
            OK11,
            "Transfer-Encoding: chunked, chunked\r\n",
            Framing("Transfer-Encoding"),
        ),
        (
            OK11,
            "Transfer-Encoding: ,chunked\r\n",
            Framing("Transfer-Encoding"),
        ),
        (
            OK10,
            "Transfer-Encoding: chunked\r\n",
            Framing("Transfer-Encoding in HTTP/1.0"),
        ),
        (OK11, "Content-Length: 3, 4\r\n", Framing("Content-Length")),
        (
            OK11,
            "Content-Length: 3\r\nContent-Length: 4\r\n",
            Framing("Content-Length"),
        ),
        (OK11, "Content-Length: -1\r\n", Framing("Content-Length")),
        (OK11, "Content-Length: \r\n", Framing("Content-Length")),
        (
            OK11,
            "Content-Length: 99999999999999999999\r\n",
            Framing("Content-Length"),
        ),
    ] {
        assert_eq!(frame(Get, line, fields), Err(want), "{fields:?}");
    }
}

#[test]
fn keep_alive() {
    let cl = "Content-Length: 0\r\n";
    assert_eq!(frame(Get, OK11, cl), Ok((Length(0), true)));
    assert_eq!(
        frame(Get, OK11, "Content-Length: 0\r\nConnection: close\r\n"),
        Ok((Length(0), false))
    );
    assert_eq!(frame(Get, OK10, cl), Ok((Length(0), false)));
    let ka = "Content-Length: 0\r\nConnection: Keep-Alive\r\n";
    assert_eq!(frame(Get, OK10, ka), Ok((Length(0), true)));
    // A close-delimited body uses the connection up.
    assert_eq!(frame(Get, OK11, ""), Ok((UntilClose, false)));
    assert_eq!(
        frame(Get, OK11, "Transfer-Encoding: gzip\r\n"),
        Ok((UntilClose, false))
    );
    assert_eq!(frame(Head, OK11, ""), Ok((ResponseBody::None, true)));
    assert_eq!(
        frame(Get, "HTTP/1.1 204 No Content", ""),
        Ok((ResponseBody::None, true))
    );
}

#[test]
fn switching_protocols() {
    let buf =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let h = res_ok(buf, Get);
    assert_eq!(h.body, ResponseBody::None);
    assert!(!h.keep_alive);
    assert_eq!(h.upgrade.map(|s| s.get(buf)), Some(&b"websocket"[..]));
    let plain = res_ok(
        b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
        Get,
    );
    assert_eq!(plain.upgrade, None);
}

#[test]
fn malformed() {
    for buf in [
        &b"HTTP/1.1 099 Low\r\n\r\n"[..],
        b"HTTP/1.1 600 High\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n",
        b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ] {
        assert!(
            matches!(res(buf, Get), Err(ResponseError::Malformed(_))),
            "{:?}: {:?}",
            String::from_utf8_lossy(buf),
            res(buf, Get).map(|r| r.0)
        );
    }
}

#[test]
fn limits() {
    let l = Limits {
        max_head: 30,
        ..Limits::default()
    };
    let mut head = ResponseHead::new();
    let big = b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaa";
    assert_eq!(
        parse_response(big, &l, Get, &mut head),
        Err(ResponseError::TooLarge)
    );
    let full = b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaa\r\n\r\n";
    assert_eq!(
        parse_response(full, &l, Get, &mut head),
        Err(ResponseError::TooLarge)
    );
    let l = Limits {
        max_headers: 1,
        ..Limits::default()
    };
    let two = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n";
    assert_eq!(
        parse_response(two, &l, Get, &mut head),
        Err(ResponseError::TooLarge)
    );
}
