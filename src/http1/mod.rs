//! HTTP/1.1 message heads and framing, I/O-free.
//!
//! Functions here take bytes and return decisions; they never touch a socket, never panic on any
//! input, and in steady state write only into `Vec`s the caller owns and reuses.
//!
//! Layout:
//! - `mod.rs`: shared vocabulary (`Span`, `Version`, `Method`, `Header`, `Limits`, `Status`), the
//!   field names acted on (`Name`), and header look-ups.
//! - `parse.rs`: request and response heads, and their message framing (RFC 9112 §6).
//! - `chunked.rs`: the chunked transfer coding scanner (RFC 9112 §7.1).
//! - `rewrite.rs`: the heads ringlb writes: to the server, to the client, and its own errors.
//! - `edit.rs`: what a route changes on the way: header edits with variables, the path prefix,
//!   fixed answers (`return`).
//! - `upgrade.rs`: which protocol upgrades a route forwards (an allow-list).
//! - `via.rs`: ringlb's `Via` entry and forwarding-loop detection.
//!
//! Choices where RFC 9112 leaves room, taken to keep one reading of a message across every hop:
//! - A bare LF ends no line, in a request or response head or in a chunked body: 400 / malformed
//!   (§2.2 lets a recipient accept it). httparse's leniencies (obs-fold, extra spaces, space
//!   before a colon) stay off.
//! - A request `Transfer-Encoding` must be exactly `chunked`: another coding before it is 501
//!   (§6.1), any other list is 400 (§6.3 item 4). Responses may carry codings before `chunked`,
//!   since the body passes through unchanged.
//! - Identical repeated `Content-Length` values count as one, differing ones are refused (§6.3
//!   item 5); an empty list element is refused too.
//! - Host must be a valid `uri-host [":" port]` even when an absolute-form target overrides it.
//!
//! Uses no other module of ringlb: bytes in, decisions out (no sockets, no runtime).

mod chunked;
mod edit;
mod parse;
mod rewrite;
mod upgrade;
mod via;
pub(crate) use rewrite::{ip as write_ip, num as write_num};

#[cfg(test)]
mod tests;

pub use chunked::{ChunkError, ChunkedDecoder, Progress};
pub use edit::{
    refused_name, write_return, Edit, Field, HeaderEdits, PrefixRewrite, Return, Template, Var,
    Vars,
};
pub use parse::{
    parse_request, parse_response, RequestBody, RequestError, RequestHead, ResponseBody,
    ResponseError, ResponseHead, MAX_HEADERS,
};
pub use rewrite::{
    reason, write_error, write_request_head, write_response_head, Proto, RequestForward,
    ResponseForward,
};
pub use upgrade::{is_protocol_name, Upgrades};
pub use via::{is_via_name, via_loop};

/// Byte range into the buffer the head was parsed from (u32 offsets keep headers small).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The bytes of this span in `buf`; empty when the span does not fit `buf`.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    Other,
}

impl Method {
    /// RFC 9110 §9.2.2. `Other` is not known to be idempotent, so it is not retried.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Put
                | Method::Delete
                | Method::Options
                | Method::Trace
        )
    }

    /// Method names are case-sensitive (RFC 9110 §9.1).
    pub(crate) fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub name: Span,
    /// Without the optional whitespace around it (RFC 9112 §5.1).
    pub value: Span,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Whole head including the request line and leading empty lines.
    pub max_head: usize,
    /// Request line without its CRLF.
    pub max_request_line: usize,
    /// Capped at [`MAX_HEADERS`].
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_request_line: 8 * 1024,
            max_headers: 100,
        }
    }
}

/// Parse outcome: "need more bytes" is not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Partial,
    Complete,
}

/// Value of the first header named `name` (ASCII case-insensitive, RFC 9110 §5.1).
/// Whether `buf` holds an empty line — the end of a request head, as far as a scan can tell
/// without parsing (`\n\r\n` or `\n\n`; a bare-LF one is then refused by the parser, and
/// empty lines before the request line make this true early) — or a bare CR, which the
/// parser refuses at once. Lets a connection read a head before it takes what parsing and
/// serving need, without delaying the parser's verdict.
pub fn head_end_seen(buf: &[u8]) -> bool {
    if buf.ends_with(b"\r\n\r\n") {
        return true;
    }
    let mut at = 0;
    while let Some(i) = buf[at..].iter().position(|&b| b == b'\n') {
        let rest = &buf[at + i + 1..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return true;
        }
        at += i + 1;
    }
    // A CR that is not followed by LF ends nothing, but the parser refuses it: let it.
    buf.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n')
}

pub fn find_header<'b>(buf: &'b [u8], headers: &[Header], name: &[u8]) -> Option<&'b [u8]> {
    headers
        .iter()
        .find(|h| h.name.get(buf).eq_ignore_ascii_case(name))
        .map(|h| h.value.get(buf))
}

/// Value of cookie `name` in any `Cookie` header (RFC 6265 §4.2.1: `a=1; b=2`). Cookie names
/// are case-sensitive; the value is returned as sent, quotes included.
pub fn find_cookie<'b>(buf: &'b [u8], headers: &[Header], name: &[u8]) -> Option<&'b [u8]> {
    headers
        .iter()
        .filter(|h| h.name.get(buf).eq_ignore_ascii_case(b"cookie"))
        .flat_map(|h| cookies(h.value.get(buf)))
        .find(|&(n, _)| n == name)
        .map(|(_, v)| v)
}

/// `(name, value)` pairs of a Cookie header value; pairs without `=` have an empty value.
pub(crate) fn cookies(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value
        .split(|&b| b == b';')
        .map(trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &p[p.len()..]),
        })
}

/// Elements of a comma-separated list field (RFC 9110 §5.6.1), OWS trimmed; empty elements kept
/// so callers that must refuse them can.
pub(crate) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim)
}

/// The field names `http1` acts on; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Cookie,
    XForwardedFor,
    XForwardedProto,
    XRequestId,
    Http2Settings,
    Via,
    Other,
}

impl Name {
    /// ASCII case-insensitive (RFC 9110 §5.1). Length and first letter pick the one candidate
    /// worth comparing, so the common names (Accept, User-Agent) cost two compares.
    pub(crate) fn of(n: &[u8]) -> Name {
        let first = n.first().map_or(0, |b| b.to_ascii_lowercase());
        let (want, kind): (&[u8], Name) = match (n.len(), first) {
            (2, b't') => (b"te", Name::Te),
            (3, b'v') => (b"via", Name::Via),
            (4, b'h') => (b"host", Name::Host),
            (6, b'c') => (b"cookie", Name::Cookie),
            (6, b'e') => (b"expect", Name::Expect),
            (7, b'u') => (b"upgrade", Name::Upgrade),
            (7, b't') => (b"trailer", Name::Trailer),
            (10, b'c') => (b"connection", Name::Connection),
            (10, b'k') => (b"keep-alive", Name::KeepAlive),
            (12, b'x') => (b"x-request-id", Name::XRequestId),
            (14, b'c') => (b"content-length", Name::ContentLength),
            (14, b'h') => (b"http2-settings", Name::Http2Settings),
            (15, b'x') => (b"x-forwarded-for", Name::XForwardedFor),
            (16, b'p') => (b"proxy-connection", Name::ProxyConnection),
            (17, b't') => (b"transfer-encoding", Name::TransferEncoding),
            (17, b'x') => (b"x-forwarded-proto", Name::XForwardedProto),
            _ => return Name::Other,
        };
        let same = n.len() == want.len()
            && n.iter()
                .zip(want)
                .all(|(&a, &b)| a.to_ascii_lowercase() == b);
        if same {
            kind
        } else {
            Name::Other
        }
    }
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strips SP and HTAB from both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}
