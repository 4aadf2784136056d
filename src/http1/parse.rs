//! Request and response heads (RFC 9112 §2-§5) and the framing of the body that follows
//! (RFC 9112 §6). A request whose framing could be read two ways is refused here, so it never
//! reaches a server.

use std::mem::MaybeUninit;

use super::{list, trim, Header, Limits, Method, Name, Span, Status, Version};

/// Size of the stack array handed to httparse; `Limits::max_headers` is capped to it.
pub const MAX_HEADERS: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestBody {
    /// No Content-Length and no Transfer-Encoding: length zero (RFC 9112 §6.3 item 7).
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head. Spans index the buffer given to [`parse_request`]. After an error or
/// `Partial` the fields hold no meaning.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: Method,
    pub method_span: Span,
    /// The request-target as received.
    pub target: Span,
    /// The target in origin-form: equal to `target` except for absolute-form, where it is what
    /// follows the authority (empty, or starting with `/` or `?`; `write_request_head` prepends
    /// `/` when needed). Route on this.
    pub path: Span,
    pub version: Version,
    /// Bytes of the head, leading empty lines and the final CRLF CRLF included.
    pub head_len: usize,
    /// Cleared and refilled by `parse_request`; keep the head to reuse its allocation.
    pub headers: Vec<Header>,
    /// Value of the single Host header, or the authority of an absolute-form target
    /// (RFC 9112 §3.2.2).
    pub host: Option<Span>,
    pub body: RequestBody,
    /// HTTP/1.1: unless Connection has `close`; HTTP/1.0: only with `keep-alive` (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1 (RFC 9110 §10.1.1: ignored on HTTP/1.0).
    pub expect_continue: bool,
    /// Value of Upgrade when Connection lists `upgrade` (HTTP/1.1 only, RFC 9110 §7.8).
    pub upgrade: Option<Span>,
}

impl RequestHead {
    pub fn new() -> Self {
        RequestHead {
            method: Method::Get,
            method_span: Span::default(),
            target: Span::default(),
            path: Span::default(),
            version: Version::Http11,
            head_len: 0,
            headers: Vec::with_capacity(MAX_HEADERS),
            host: None,
            body: RequestBody::None,
            keep_alive: false,
            expect_continue: false,
            upgrade: None,
        }
    }
}

impl Default for RequestHead {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    BadRequest(&'static str),
    UriTooLong,
    HeadersTooLarge,
    NotImplemented(&'static str),
    VersionNotSupported,
}

impl RequestError {
    pub fn status(self) -> u16 {
        match self {
            RequestError::BadRequest(_) => 400,
            RequestError::UriTooLong => 414,
            RequestError::HeadersTooLarge => 431,
            RequestError::NotImplemented(_) => 501,
            RequestError::VersionNotSupported => 505,
        }
    }
}

use RequestError::{BadRequest, HeadersTooLarge, UriTooLong};

/// Parses the request head at the start of `buf` into `head`. `Partial` asks for more bytes;
/// the caller parses again from the start of the grown buffer.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Status, RequestError> {
    // Uninitialized: filling 128 headers costs as much as parsing a small head.
    let mut raw = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let max = limits.max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let line = request_line(buf);
    let n = match req.parse_with_uninit_headers(buf, raw.get_mut(..max).unwrap_or_default()) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if line.len > limits.max_request_line {
                return Err(UriTooLong);
            }
            if buf.len() > limits.max_head {
                return Err(HeadersTooLarge);
            }
            return Ok(Status::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadersTooLarge),
        Err(httparse::Error::Version) if http_version(line.version) => {
            return Err(RequestError::VersionNotSupported)
        }
        Err(e) => return Err(BadRequest(what(e))),
    };
    if line.len > limits.max_request_line {
        return Err(UriTooLong);
    }
    if n > limits.max_head || u32::try_from(n).is_err() {
        return Err(HeadersTooLarge);
    }
    let head_bytes = buf.get(..n).unwrap_or_default();
    if bare_lf(head_bytes) {
        return Err(BadRequest("bare LF"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(BadRequest("request line"));
    };

    head.method = Method::from_bytes(method.as_bytes());
    head.method_span = span(buf, method.as_bytes());
    head.target = span(buf, target.as_bytes());
    head.version = if version == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    head.head_len = n;
    head.headers.clear();
    head.headers.extend(req.headers.iter().map(|h| Header {
        name: span(buf, h.name.as_bytes()),
        value: span(buf, h.value),
    }));

    if head.method == Method::Connect {
        // Authority-form targets are for forward proxies (RFC 9112 §3.2.3).
        return Err(RequestError::NotImplemented("CONNECT"));
    }
    let f = scan(buf, &head.headers);
    let http11 = head.version == Version::Http11;

    // RFC 9112 §3.2: 400 for a missing Host on HTTP/1.1, several Host lines, or an invalid one.
    if f.hosts > 1 {
        return Err(BadRequest("several Host"));
    }
    if let Some(h) = f.host {
        if !valid_host(h.get(buf)) {
            return Err(BadRequest("invalid Host"));
        }
    } else if http11 {
        return Err(BadRequest("missing Host"));
    }
    head.host = f.host;
    head.path = head.target;
    let t = target.as_bytes();
    if t.first() == Some(&b'/') {
        // origin-form (RFC 9112 §3.2.1)
    } else if t == b"*" {
        if head.method != Method::Options {
            return Err(BadRequest("asterisk-form"));
        }
    } else if let Some((auth, path)) = absolute_form(t) {
        // RFC 9112 §3.2.2: the authority replaces the Host header.
        head.host = Some(span(buf, auth));
        head.path = span(buf, path);
    } else {
        return Err(BadRequest("request-target"));
    }

    // RFC 9112 §6.1 and §6.3: TE with CL, TE on HTTP/1.0, or a TE not ending in chunked make
    // the length ambiguous; only a single `chunked` coding is passed through.
    head.body = if f.te {
        if f.length.is_some() || f.bad_length {
            return Err(BadRequest("Transfer-Encoding with Content-Length"));
        }
        if !http11 {
            return Err(BadRequest("Transfer-Encoding in HTTP/1.0"));
        }
        if f.bad_te || !f.last_chunked || f.chunked > 1 {
            return Err(BadRequest("Transfer-Encoding"));
        }
        if f.codings > 1 {
            return Err(RequestError::NotImplemented("transfer-coding"));
        }
        RequestBody::Chunked
    } else if f.bad_length {
        return Err(BadRequest("Content-Length"));
    } else if let Some(len) = f.length {
        RequestBody::Length(len)
    } else {
        RequestBody::None
    };

    head.keep_alive = !f.close && (http11 || f.keep_alive);
    head.expect_continue = http11 && f.expect_continue;
    head.upgrade = if http11 && f.upgrade_token {
        f.upgrade
    } else {
        None
    };
    Ok(Status::Complete)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    None,
    Length(u64),
    Chunked,
    /// Ends when the server closes the connection (RFC 9112 §6.3 item 8).
    UntilClose,
}

/// A parsed response head. Spans index the buffer given to [`parse_response`].
#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub reason: Span,
    pub head_len: usize,
    pub headers: Vec<Header>,
    pub body: ResponseBody,
    /// The upstream connection may carry another request after this response: version default
    /// and Connection, false when the body is close-delimited and for 101.
    pub keep_alive: bool,
    /// Value of Upgrade when Connection lists `upgrade` (HTTP/1.1 only).
    pub upgrade: Option<Span>,
}

impl ResponseHead {
    pub fn new() -> Self {
        ResponseHead {
            status: 0,
            version: Version::Http11,
            reason: Span::default(),
            head_len: 0,
            headers: Vec::with_capacity(MAX_HEADERS),
            body: ResponseBody::None,
            keep_alive: false,
            upgrade: None,
        }
    }
}

impl Default for ResponseHead {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseError {
    Malformed(&'static str),
    TooLarge,
    Framing(&'static str),
}

/// Parses the response head at the start of `buf`; `req_method` is the method of the request it
/// answers, which decides whether a body follows (RFC 9112 §6.3 item 1).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    req_method: Method,
    head: &mut ResponseHead,
) -> Result<Status, ResponseError> {
    use ResponseError::{Framing, Malformed, TooLarge};

    let mut raw = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let max = limits.max_headers.min(MAX_HEADERS);
    let mut res = httparse::Response::new(&mut []);
    // The default configuration has every leniency off (obs-fold, extra spaces, bad lines).
    let config = httparse::ParserConfig::default();
    let n = match config.parse_response_with_uninit_headers(
        &mut res,
        buf,
        raw.get_mut(..max).unwrap_or_default(),
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => return Err(TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(TooLarge),
        Err(e) => return Err(Malformed(what(e))),
    };
    if n > limits.max_head || u32::try_from(n).is_err() {
        return Err(TooLarge);
    }
    if bare_lf(buf.get(..n).unwrap_or_default()) {
        return Err(Malformed("bare LF"));
    }
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(Malformed("status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(Malformed("status code"));
    }
    head.status = status;
    head.version = if version == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    head.head_len = n;
    head.reason = reason_span(buf);
    head.headers.clear();
    head.headers.extend(res.headers.iter().map(|h| Header {
        name: span(buf, h.name.as_bytes()),
        value: span(buf, h.value),
    }));
    let f = scan(buf, &head.headers);
    let http11 = head.version == Version::Http11;

    // RFC 9112 §6.3: items 1-2 hold whatever the header fields say.
    head.body = if req_method == Method::Head || status < 200 || status == 204 || status == 304 {
        ResponseBody::None
    } else if f.te {
        if f.length.is_some() || f.bad_length {
            return Err(Framing("Transfer-Encoding with Content-Length"));
        }
        if !http11 {
            // RFC 9112 §6.1: the framing of an HTTP/1.0 message with TE is faulty.
            return Err(Framing("Transfer-Encoding in HTTP/1.0"));
        }
        if f.bad_te || f.chunked > 1 {
            return Err(Framing("Transfer-Encoding"));
        }
        if f.last_chunked {
            ResponseBody::Chunked
        } else {
            ResponseBody::UntilClose
        }
    } else if f.bad_length {
        return Err(Framing("Content-Length"));
    } else if let Some(len) = f.length {
        ResponseBody::Length(len)
    } else {
        ResponseBody::UntilClose
    };
    head.keep_alive = !f.close
        && (http11 || f.keep_alive)
        && head.body != ResponseBody::UntilClose
        && status != 101;
    head.upgrade = if http11 && f.upgrade_token {
        f.upgrade
    } else {
        None
    };
    Ok(Status::Complete)
}

/// What the framing and connection fields of a head say.
#[derive(Default)]
struct Fields {
    host: Option<Span>,
    hosts: u32,
    /// The one value every Content-Length element agrees on.
    length: Option<u64>,
    /// A Content-Length element that is not 1*DIGIT, overflows, or differs from another.
    bad_length: bool,
    te: bool,
    codings: u32,
    chunked: u32,
    last_chunked: bool,
    /// An empty Transfer-Encoding element.
    bad_te: bool,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
    upgrade: Option<Span>,
    expect_continue: bool,
}

fn scan(buf: &[u8], headers: &[Header]) -> Fields {
    let mut f = Fields::default();
    for h in headers {
        let value = h.value.get(buf);
        match Name::of(h.name.get(buf)) {
            Name::Host => {
                f.hosts += 1;
                f.host = Some(h.value);
            }
            Name::ContentLength => {
                for v in list(value) {
                    match (digits(v), f.length) {
                        (Some(n), None) => f.length = Some(n),
                        (Some(n), Some(m)) if n == m => {}
                        _ => f.bad_length = true,
                    }
                }
            }
            Name::TransferEncoding => {
                f.te = true;
                for c in list(value) {
                    f.bad_te |= c.is_empty();
                    f.codings += 1;
                    f.last_chunked = c.eq_ignore_ascii_case(b"chunked");
                    f.chunked += u32::from(f.last_chunked);
                }
            }
            Name::Connection => {
                for t in list(value) {
                    f.close |= t.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                    f.upgrade_token |= t.eq_ignore_ascii_case(b"upgrade");
                }
            }
            Name::Upgrade => f.upgrade = f.upgrade.or(Some(h.value)),
            Name::Expect => f.expect_continue |= trim(value).eq_ignore_ascii_case(b"100-continue"),
            _ => {}
        }
    }
    f
}

/// `1*DIGIT` as u64 (RFC 9110 §8.6); no sign, no whitespace, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2-3), without userinfo: an IP-literal in
/// brackets or a reg-name / IPv4 address, then an optional all-digit port. Empty is allowed
/// (RFC 9110 §7.2: a target without authority is sent with an empty Host).
fn valid_host(h: &[u8]) -> bool {
    let (host, port) = match h.strip_prefix(b"[") {
        Some(rest) => match rest.iter().position(|&b| b == b']') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i + 1..).unwrap_or_default(),
            ),
            None => return false,
        },
        None => match h.iter().position(|&b| b == b':') {
            Some(i) => (
                h.get(..i).unwrap_or_default(),
                h.get(i..).unwrap_or_default(),
            ),
            None => (h, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let bracketed = h.first() == Some(&b'[');
    port_ok
        && host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || b"-._~!$&'()*+,;=%".contains(&b)
                || (bracketed && b == b':')
        })
}

/// Splits `http://authority/path?query` into authority and what follows it. The authority must
/// be a non-empty valid host (RFC 9110 §4.2.1), so userinfo (`@`) is refused.
fn absolute_form(t: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = strip_prefix_ci(t, b"http://").or_else(|| strip_prefix_ci(t, b"https://"))?;
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    if auth.is_empty() || !valid_host(auth) || path.first() == Some(&b'#') {
        return None;
    }
    Some((auth, path))
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Span of `sub`, which httparse returned as a sub-slice of `buf`. Offsets fit u32 because the
/// head was checked against `u32::MAX` first; anything else yields an empty span.
fn span(buf: &[u8], sub: &[u8]) -> Span {
    let base = buf.as_ptr() as usize;
    let start = (sub.as_ptr() as usize).wrapping_sub(base);
    match start.checked_add(sub.len()) {
        Some(end) if end <= buf.len() => match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Span { start, end },
            _ => Span::default(),
        },
        _ => Span::default(),
    }
}

/// An LF not preceded by CR (RFC 9112 §2.2 lets a recipient accept it; we do not). In a head
/// httparse accepted, a CR only ever appears right before an LF, so LFs outnumber CRs exactly
/// when some LF is bare. Counting in u8 lanes over blocks of 255 bytes (no lane overflows)
/// keeps the pass vectorized.
fn bare_lf(head: &[u8]) -> bool {
    let (mut lf, mut cr) = (0usize, 0usize);
    for block in head.chunks(255) {
        let (l, c) = block.iter().fold((0u8, 0u8), |(l, c), &b| {
            (l + u8::from(b == b'\n'), c + u8::from(b == b'\r'))
        });
        lf += usize::from(l);
        cr += usize::from(c);
    }
    lf != cr
}

fn what(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "version",
    }
}

/// Offset past the empty lines a server should skip before a start-line (RFC 9112 §2.2).
fn skip_empty(buf: &[u8]) -> usize {
    let mut i = 0;
    while let Some([b'\r', b'\n', ..]) = buf.get(i..) {
        i += 2;
    }
    i
}

struct Line<'a> {
    /// Without CRLF; when no LF arrived yet, everything after the empty lines.
    len: usize,
    /// The third space-separated word of the line so far, when it is the last one.
    version: &'a [u8],
}

fn request_line(buf: &[u8]) -> Line<'_> {
    let rest = buf.get(skip_empty(buf)..).unwrap_or_default();
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(lf) => rest.get(..lf).unwrap_or_default(),
        None => rest,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let version = match (words.nth(2), words.next()) {
        (Some(v), None) => v,
        _ => &[],
    };
    Line {
        len: line.len(),
        version,
    }
}

/// `HTTP/<digit>.<digit>` (RFC 9112 §2.3): a well-formed version httparse does not speak, which
/// is 505 rather than 400 (the HTTP/2 preface `PRI * HTTP/2.0` among them).
fn http_version(v: &[u8]) -> bool {
    matches!(v, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
}

/// Reason phrase of the status line, computed here because httparse returns `""` for one that
/// holds obs-text.
fn reason_span(buf: &[u8]) -> Span {
    let start = skip_empty(buf);
    let rest = buf.get(start..).unwrap_or_default();
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        return Span::default();
    };
    let line = rest.get(..lf).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // "HTTP/1.1 200 " is 13 bytes; httparse checked that shape.
    match line.get(13..) {
        Some(r) => span(buf, r),
        None => Span::default(),
    }
}
