//! Request heads as the test backend sees them.

use std::ops::Range;

use super::{has_token, offset_in, parse_content_length, MAX_HEADERS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Other,
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head. Ranges index the buffer passed to [`parse`].
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// Length of the head including the final CRLFCRLF.
    pub len: usize,
    pub method: Method,
    /// Request target without the query string.
    pub path: Range<usize>,
    /// HTTP/1.`minor`.
    pub minor: u8,
    pub body: BodyFraming,
    /// `Connection: close`.
    pub close: bool,
    /// `Connection: keep-alive` (meaningful for HTTP/1.0).
    pub keep_alive: bool,
    /// `Connection: upgrade` with `Upgrade: websocket`.
    pub websocket: bool,
    pub websocket_key: Option<Range<usize>>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl RequestHead {
    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn persistent(&self) -> bool {
        !self.close && (self.minor >= 1 || self.keep_alive)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x syntax, or too many headers.
    Syntax,
    /// Content-Length missing digits, or several different values.
    ContentLength,
    /// A transfer coding other than a final `chunked`.
    TransferEncoding,
}

/// Parses one request head from the start of `buf`; `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Syntax),
    };
    let method = match req.method.unwrap_or_default() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("/").as_bytes();
    let start = offset_in(buf, target);
    let path_len = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let mut head = RequestHead {
        len,
        method,
        path: start..start + path_len,
        minor: req.version.unwrap_or(1),
        body: BodyFraming::Empty,
        close: false,
        keep_alive: false,
        websocket: false,
        websocket_key: None,
        expect_continue: false,
    };
    let (mut length, mut chunked, mut upgrade_ws, mut conn_upgrade) = (None, false, false, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(HeadError::ContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::ContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only `chunked` as the final coding can be framed by this server.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if chunked || !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::TransferEncoding);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            head.close |= has_token(h.value, "close");
            head.keep_alive |= has_token(h.value, "keep-alive");
            conn_upgrade |= has_token(h.value, "upgrade");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_ws |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            let at = offset_in(buf, h.value);
            head.websocket_key = Some(at..at + h.value.len());
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    head.websocket = upgrade_ws && conn_upgrade;
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3, rule 3).
    head.body = match (chunked, length) {
        (true, _) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_head() {
        let buf = b"POST /echo?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let h = parse(buf).unwrap().unwrap();
        assert_eq!(h.len, buf.len() - 5);
        assert_eq!(h.method, Method::Post);
        assert_eq!(&buf[h.path.clone()], b"/echo");
        assert_eq!(h.body, BodyFraming::Length(5));
        assert!(h.persistent());
    }

    #[test]
    fn partial_and_errors() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").unwrap_err(),
            HeadError::ContentLength
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").unwrap_err(),
            HeadError::TransferEncoding
        );
        assert_eq!(
            parse(b"\x01\x02 garbage\r\n\r\n").unwrap_err(),
            HeadError::Syntax
        );
    }

    #[test]
    fn connection_and_upgrade() {
        let buf = b"GET /ws HTTP/1.0\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: abc\r\n\r\n";
        let h = parse(buf).unwrap().unwrap();
        assert!(h.persistent());
        assert!(h.websocket);
        assert_eq!(&buf[h.websocket_key.unwrap()], b"abc");
        let h = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.persistent());
        let h = parse(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(h.unwrap().unwrap().body, BodyFraming::Chunked);
    }
}
