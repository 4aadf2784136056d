//! The heads ringlb writes: the request to the server, the response to the client, and its own
//! error responses. Every function appends to `out`, which the caller clears and reuses.
//!
//! Hop-by-hop fields (RFC 9110 §7.6.1) are dropped: Connection and every name it lists,
//! Keep-Alive, Proxy-Connection, TE (`TE: trailers` too: ringlb does not promise the server
//! that trailers reach the client, an HTTP/1.0 client gets the body decoded), Trailer, and
//! Upgrade with HTTP2-Settings unless the request is tunnelled (an allowed upgrade, see
//! `upgrade.rs`). Expect is dropped from requests: ringlb answers `100-continue` itself, and
//! any other expectation is not the server's to meet. Content-Length, Transfer-Encoding and
//! Host stay even when Connection lists them: the body is passed through with the framing
//! ringlb parsed, and a server that lost those fields would read the body as the next request.

use std::io::Write;
use std::net::IpAddr;

use super::edit::{HeaderEdits, PrefixRewrite, Vars};
use super::{
    cookies, list, trim, Header, Name, RequestBody, RequestHead, ResponseBody, ResponseHead,
    Version, MAX_HEADERS,
};

/// The scheme the client used to reach ringlb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Http,
    Https,
}

/// Who the request is forwarded for, and what ringlb changes on the way.
#[derive(Clone, Copy, Debug)]
pub struct RequestForward<'a> {
    pub client_ip: IpAddr,
    pub proto: Proto,
    /// Emitted as Host when the request has none (HTTP/1.0).
    pub default_host: &'a [u8],
    /// Forward the upgrade: `Connection: upgrade`, Upgrade and HTTP2-Settings. Only for an
    /// upgrade the route allows ([`super::Upgrades::allow`]).
    pub tunnel: bool,
    /// Append `Via: <version> <name>` (RFC 9110 §7.6.3) after any Via received.
    pub via: Option<&'a [u8]>,
    /// Remove this cookie from Cookie headers (sticky `indirect`); a Cookie header left empty is
    /// dropped.
    pub drop_cookie: Option<&'a [u8]>,
    /// Emit `X-Request-Id: value` and drop any incoming one.
    pub request_id: Option<&'a [u8]>,
    /// The route's path prefix rewrite (`strip_prefix`, `rewrite_prefix`).
    pub prefix: Option<&'a PrefixRewrite>,
    /// The route's `request_headers`, with the values of their variables.
    pub edits: Option<(&'a HeaderEdits, &'a Vars<'a>)>,
}

/// Writes the request head for the server:
/// - `METHOD target HTTP/1.1`, an absolute-form target turned into origin-form;
/// - Host first when ringlb makes it up: the absolute-form authority (RFC 9112 §3.2.2, incoming
///   Host dropped) or `default_host` for a request without one;
/// - the end-to-end fields in their received order and bytes, minus hop-by-hop ones, Expect,
///   X-Forwarded-For, X-Forwarded-Proto, and X-Request-Id when replaced; Cookie without
///   `drop_cookie`; Content-Length once, with the value parsed; HTTP2-Settings only when
///   `tunnel`;
/// - `X-Forwarded-For`: every incoming X-Forwarded-For value joined with `, `, then the client;
/// - `X-Forwarded-Proto`, `Via` (received Via fields stay above, in place: ours is the last
///   element), `X-Request-Id`, and when `tunnel`: `Connection: upgrade` (plus
///   `HTTP2-Settings` when that field was forwarded) and Upgrade;
/// - the empty line.
pub fn write_request_head(buf: &[u8], head: &RequestHead, fwd: &RequestForward, out: &mut Vec<u8>) {
    let absolute = head.path != head.target;
    out.extend_from_slice(head.method_span.get(buf));
    out.push(b' ');
    let path = head.path.get(buf);
    if absolute && path.first() != Some(&b'/') {
        out.push(b'/');
    }
    match fwd.prefix {
        Some(p) => p.write(path, out),
        None => out.extend_from_slice(path),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    match head.host {
        Some(h) if absolute => field(out, b"Host", h.get(buf)),
        None => field(out, b"Host", fwd.default_host),
        Some(_) => {}
    }

    let hs = &head.headers;
    let kinds = Kinds::new(buf, hs);
    let listed = Listed::new(buf, hs, &kinds);
    let mut chain = false;
    let mut h2_settings = false;
    let mut length = match head.body {
        RequestBody::Length(n) => Some(n),
        _ => None,
    };
    for (i, h) in hs.iter().enumerate() {
        let name = h.name.get(buf);
        let value = h.value.get(buf);
        let kind = kinds.get(i, name);
        chain |= kind == Name::XForwardedFor;
        let drop = match kind {
            Name::ContentLength => {
                content_length(out, name, &mut length);
                true
            }
            Name::Host => absolute,
            Name::Http2Settings => {
                h2_settings |= fwd.tunnel;
                !fwd.tunnel
            }
            Name::Expect | Name::XForwardedFor | Name::XForwardedProto | Name::Upgrade => true,
            Name::XRequestId => fwd.request_id.is_some(),
            n => hop_by_hop(n),
        };
        if drop || listed.has(buf, hs, name) || fwd.edits.is_some_and(|(e, _)| e.drops(name)) {
            continue;
        }
        match fwd.drop_cookie {
            Some(c) if kind == Name::Cookie => cookie(out, name, value, c),
            _ => field(out, name, value),
        }
    }

    out.extend_from_slice(b"X-Forwarded-For: ");
    // A Connection header listing X-Forwarded-For drops the chain received so far.
    if chain && !listed.has(buf, hs, b"x-forwarded-for") {
        for h in hs
            .iter()
            .filter(|h| Name::of(h.name.get(buf)) == Name::XForwardedFor)
        {
            let v = trim(h.value.get(buf));
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    ip(out, fwd.client_ip);
    out.extend_from_slice(b"\r\n");
    let proto: &[u8] = match fwd.proto {
        Proto::Http => b"http",
        Proto::Https => b"https",
    };
    field(out, b"X-Forwarded-Proto", proto);
    if let Some(name) = fwd.via {
        out.extend_from_slice(match head.version {
            Version::Http10 => b"Via: 1.0 ",
            Version::Http11 => b"Via: 1.1 ",
        });
        out.extend_from_slice(name);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(id) = fwd.request_id {
        field(out, b"X-Request-Id", id);
    }
    if let Some((e, vars)) = fwd.edits {
        e.write(vars, out);
    }
    if let (true, Some(u)) = (fwd.tunnel, head.upgrade) {
        let connection: &[u8] = if h2_settings {
            b"upgrade, HTTP2-Settings"
        } else {
            b"upgrade"
        };
        field(out, b"Connection", connection);
        field(out, b"Upgrade", u.get(buf));
    }
    out.extend_from_slice(b"\r\n");
}

/// What ringlb changes in a response on its way to the client.
#[derive(Clone, Copy, Debug)]
pub struct ResponseForward<'a> {
    /// The client connection stays open after this response.
    pub keep_alive: bool,
    pub client_version: Version,
    /// The body is sent decoded and close-delimited (HTTP/1.0 client, chunked response): drop
    /// Transfer-Encoding.
    pub dechunk: bool,
    /// A Set-Cookie value to add (sticky `insert`).
    pub set_cookie: Option<&'a [u8]>,
    /// With `set_cookie`: add `Cache-Control: private` beside any Cache-Control the server sent,
    /// so shared caches do not hand the cookie to other clients. HAProxy's `nocache` adds the same
    /// field, and not `no-cache="set-cookie"`, which some caches ignore.
    pub nocache: bool,
    /// The route's `response_headers`, with the values of their variables.
    pub edits: Option<(&'a HeaderEdits, &'a Vars<'a>)>,
}

/// Writes `HTTP/1.1 <status> <reason>` (RFC 9110 §6.2: ringlb answers with its own version), the
/// end-to-end fields minus hop-by-hop ones (a 101 keeps Upgrade and gets `Connection: upgrade`),
/// Content-Length once when it frames the body, Transfer-Encoding dropped when `dechunk`, Set-Cookie and Cache-Control when asked, then
/// `Connection: close` when the client connection closes, or `Connection: keep-alive` when it
/// stays open for an HTTP/1.0 client (RFC 9112 §9.3), and the empty line.
pub fn write_response_head(
    buf: &[u8],
    head: &ResponseHead,
    fwd: &ResponseForward,
    out: &mut Vec<u8>,
) {
    let switching = head.status == 101;
    out.extend_from_slice(b"HTTP/1.1 ");
    num(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.get(buf));
    out.extend_from_slice(b"\r\n");
    let hs = &head.headers;
    let kinds = Kinds::new(buf, hs);
    let listed = Listed::new(buf, hs, &kinds);
    let mut length = match head.body {
        ResponseBody::Length(n) => Some(n),
        _ => None,
    };
    for (i, h) in hs.iter().enumerate() {
        let name = h.name.get(buf);
        let drop = match kinds.get(i, name) {
            // Without a body (HEAD, 304) the value is informational and passes as received.
            Name::ContentLength if head.body != ResponseBody::None => {
                content_length(out, name, &mut length);
                true
            }
            Name::Upgrade => !switching,
            Name::TransferEncoding => fwd.dechunk,
            n => hop_by_hop(n),
        };
        if drop || listed.has(buf, hs, name) || fwd.edits.is_some_and(|(e, _)| e.drops(name)) {
            continue;
        }
        field(out, name, h.value.get(buf));
    }
    if let Some((e, vars)) = fwd.edits {
        e.write(vars, out);
    }
    if let Some(c) = fwd.set_cookie {
        field(out, b"Set-Cookie", c);
        if fwd.nocache {
            field(out, b"Cache-Control", b"private");
        }
    }
    if switching {
        field(out, b"Connection", b"upgrade");
    } else if !fwd.keep_alive {
        field(out, b"Connection", b"close");
    } else if fwd.client_version == Version::Http10 {
        field(out, b"Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete error response: status line, `Content-Type: text/plain`, Content-Length, `extra`
/// fields, `Connection: close` when `close`, and the body `<code> <reason>\n`.
pub fn write_error(status: u16, close: bool, extra: &[(&[u8], &[u8])], out: &mut Vec<u8>) {
    let why = reason(status).as_bytes();
    out.extend_from_slice(b"HTTP/1.1 ");
    num(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(why);
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    let code_len = status.checked_ilog10().unwrap_or(0) as usize + 1;
    num(out, (code_len + 1 + why.len() + 1) as u64);
    out.extend_from_slice(b"\r\n");
    for (n, v) in extra {
        field(out, n, v);
    }
    if close {
        field(out, b"Connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    num(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(why);
    out.push(b'\n');
}

/// Reason phrase of the status codes RFC 9110 §15 defines, plus 429 and 431 (RFC 6585) and 508
/// (RFC 5842); empty for any other code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        508 => "Loop Detected",
        _ => "",
    }
}

/// Hop-by-hop by name alone (RFC 9110 §7.6.1); callers decide Upgrade.
fn hop_by_hop(n: Name) -> bool {
    matches!(
        n,
        Name::Connection | Name::KeepAlive | Name::ProxyConnection | Name::Te | Name::Trailer
    )
}

/// `Name::of` each header, worked out once per head.
struct Kinds([Name; MAX_HEADERS]);

impl Kinds {
    fn new(buf: &[u8], hs: &[Header]) -> Self {
        let mut k = Kinds([Name::Other; MAX_HEADERS]);
        for (slot, h) in k.0.iter_mut().zip(hs) {
            *slot = Name::of(h.name.get(buf));
        }
        k
    }

    /// Past MAX_HEADERS (a head not made by `parse_*`) the name is classified again.
    fn get(&self, i: usize, name: &[u8]) -> Name {
        self.0.get(i).copied().unwrap_or_else(|| Name::of(name))
    }
}

/// Names the Connection headers list (RFC 9110 §7.6.1), gathered once per head. Framing fields
/// and Host never count as listed.
struct Listed<'b> {
    names: [&'b [u8]; 8],
    len: usize,
    /// More names than fit: read the Connection headers again for each field.
    spill: bool,
}

impl<'b> Listed<'b> {
    fn new(buf: &'b [u8], hs: &[Header], kinds: &Kinds) -> Self {
        let mut l = Listed {
            names: [&[]; 8],
            len: 0,
            spill: false,
        };
        let conn = hs
            .iter()
            .enumerate()
            .filter(|&(i, h)| kinds.get(i, h.name.get(buf)) == Name::Connection);
        for t in conn.flat_map(|(_, h)| list(h.value.get(buf))) {
            // Options that name no field of their own, or one the rules above decide.
            if t.is_empty()
                || is(t, b"close")
                || is(t, b"keep-alive")
                || is(t, b"upgrade")
                || is(t, b"http2-settings")
            {
                continue;
            }
            match l.names.get_mut(l.len) {
                Some(slot) => {
                    *slot = t;
                    l.len += 1;
                }
                None => l.spill = true,
            }
        }
        l
    }

    fn has(&self, buf: &[u8], hs: &[Header], name: &[u8]) -> bool {
        if self.len == 0 {
            return false;
        }
        if matches!(
            Name::of(name),
            Name::ContentLength | Name::TransferEncoding | Name::Host
        ) {
            return false;
        }
        if self.spill {
            return hs
                .iter()
                .filter(|h| Name::of(h.name.get(buf)) == Name::Connection)
                .any(|h| list(h.value.get(buf)).any(|t| is(t, name)));
        }
        self.names.iter().take(self.len).any(|t| is(t, name))
    }
}

fn is(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The client address as X-Forwarded-For carries it: dotted quad, or RFC 5952 text without
/// brackets. Also the access log's.
pub(crate) fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                num(out, u64::from(o));
            }
        }
        // Writing to a Vec cannot fail.
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The first Content-Length field carries the one value parsing agreed on; repeats (`5, 5` or a
/// second field, RFC 9112 §6.3 item 5) are dropped so the next hop sees a single value.
fn content_length(out: &mut Vec<u8>, name: &[u8], length: &mut Option<u64>) {
    if let Some(n) = length.take() {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        num(out, n);
        out.extend_from_slice(b"\r\n");
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    field_start(out, name);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `name: `, the value to follow.
pub(crate) fn field_start(out: &mut Vec<u8>, name: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
}

/// Writes the Cookie field without the cookie `drop`; nothing when no other cookie is left, the
/// received bytes when `drop` is absent.
fn cookie(out: &mut Vec<u8>, name: &[u8], value: &[u8], drop: &[u8]) {
    if !cookies(value).any(|(n, _)| n == drop) {
        return field(out, name, value);
    }
    let mark = out.len();
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    let mut kept = false;
    for pair in value
        .split(|&b| b == b';')
        .map(trim)
        .filter(|p| !p.is_empty())
    {
        let n = pair
            .split(|&b| b == b'=')
            .next()
            .map(trim)
            .unwrap_or_default();
        if n == drop {
            continue;
        }
        if kept {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
        kept = true;
    }
    if kept {
        out.extend_from_slice(b"\r\n");
    } else {
        out.truncate(mark);
    }
}

/// Decimal digits of `n` without going through `fmt`.
pub(crate) fn num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}
