//! Response heads as the load generator sees them.

use super::{has_token, parse_content_length, status_has_no_body, MAX_HEADERS};

/// How the response body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    /// No length: the body ends when the server closes.
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Length of the head including the final CRLFCRLF.
    pub len: usize,
    pub status: u16,
    pub body: BodyFraming,
    /// The server will close after this response.
    pub close: bool,
}

impl ResponseHead {
    /// A 1xx other than 101 is followed by the real response (RFC 9110 §15.2).
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct ParseError;

/// Parses one response head from the start of `buf`; `Ok(None)` means more bytes are needed.
/// `head_request`: the request was HEAD, so there is no body whatever the headers say.
pub fn parse(buf: &[u8], head_request: bool) -> Result<Option<ResponseHead>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ParseError),
    };
    let status = resp.code.ok_or(ParseError)?;
    let minor = resp.version.unwrap_or(1);
    let (mut length, mut chunked, mut close, mut keep_alive) = (None, false, false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(h.value).ok_or(ParseError)?;
            if length.is_some_and(|l| l != n) {
                return Err(ParseError);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                // Any other final coding is delimited by close (RFC 9112 §6.3, rule 4).
                length = None;
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_token(h.value, "close");
            keep_alive |= has_token(h.value, "keep-alive");
        }
    }
    let body = if head_request || status_has_no_body(status) {
        BodyFraming::Empty
    } else if chunked {
        BodyFraming::Chunked
    } else {
        match length {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::UntilClose,
        }
    };
    let close = close || (minor == 0 && !keep_alive) || body == BodyFraming::UntilClose;
    Ok(Some(ResponseHead {
        len,
        status,
        body,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.len, h.status, h.body, h.close),
            (38, 200, BodyFraming::Length(3), false)
        );
        let h = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyFraming::Empty);
        let h = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.unwrap().unwrap().body, BodyFraming::Chunked);
        let h = parse(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.body, h.close), (BodyFraming::UntilClose, true));
        let h = parse(
            b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
            false,
        );
        assert!(h.unwrap().unwrap().close);
        assert!(parse(b"HTTP/1.1 100 Continue\r\n\r\n", false)
            .unwrap()
            .unwrap()
            .is_interim());
        assert!(parse(b"HTTP/1.1 200 OK\r\n", false).unwrap().is_none());
        assert_eq!(parse(b"HTTX/1.1 200 OK\r\n\r\n", false), Err(ParseError));
    }
}
