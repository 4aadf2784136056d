//! Request smuggling matrix (RFC 9112 §6, §11.2): every framing variant either is refused with
//! the right status and a close, or reaches the server as exactly the requests ringlb framed,
//! each recorded byte for byte and re-parsed here with one unambiguous framing. Never two
//! requests where ringlb saw one.
//!
//! Each case is sent on a fresh connection followed by a half-close, so ringlb reads everything
//! the client sent (leftover bytes included, as the next request) and then closes. The run
//! prints every variant and its outcome to stderr (`cargo test --test smuggling -- --nocapture`).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use support::*;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// What must happen to one variant.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// Refused with this status and `Connection: close`; the server receives nothing.
    Refused(u16),
    /// The server receives exactly these requests, in order, as (request line, body); each is
    /// answered with 200, and the connection then closes.
    Forwarded(&'static [(&'static str, &'static [u8])]),
    /// As `Forwarded`, then the bytes after them are refused with this status and a close.
    ForwardedThen(&'static [(&'static str, &'static [u8])], u16),
    /// Answered by ringlb itself with this status; the server receives nothing.
    Answered(u16),
    /// The client gets no response and the connection closes (the body never ended, or was
    /// invalid after the head went out); the server receives no complete request.
    Closed,
}

use Want::*;

struct Case {
    name: &'static str,
    bytes: &'static [u8],
    want: Want,
}

const fn case(name: &'static str, bytes: &'static [u8], want: Want) -> Case {
    Case { name, bytes, want }
}

const POST: &str = "POST / HTTP/1.1";
const GET: &str = "GET / HTTP/1.1";

/// The invalid-chunked-body outcome: the head was already sent to the server when the body
/// turned out invalid, so ringlb answers 400 and drops both connections.
const BAD_CHUNKS: Want = Refused(400);

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- Content-Length (RFC 9112 §6.3 item 5, RFC 9110 §8.6) ---
    case("CL + TE", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    case("TE + CL (order swapped)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", Refused(400)),
    case("CL + TE: identity", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: identity\r\n\r\nabc", Refused(400)),
    case("CL + invalid CL + TE", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refused(400)),
    case("duplicate identical CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("identical CL list 3, 3", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("differing CL lines", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", Refused(400)),
    case("differing CL list 3, 4", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd", Refused(400)),
    case("CL list with empty element", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3,\r\n\r\nabc", Refused(400)),
    case("signed CL +3", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc", Refused(400)),
    case("negative CL -1", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\nabc", Refused(400)),
    case("hex CL 0x3", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\nabc", Refused(400)),
    case("CL with trailing junk 3a", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3a\r\n\r\nabc", Refused(400)),
    case("CL with inner space 1 2", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\nabcdefghijkl", Refused(400)),
    case("CL decimal point 3.0", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3.0\r\n\r\nabc", Refused(400)),
    case("empty CL", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n", Refused(400)),
    case("oversized CL (23 digits)", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n", Refused(400)),
    case("CL = 2^64 (u64 overflow by one)", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", Refused(400)),
    case("CL leading zeros 003", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 003\r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("CL with OWS around", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \t3 \r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("CL name in odd case", b"POST / HTTP/1.1\r\nHost: h\r\ncOnTeNt-LeNgTh: 3\r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("CL name with trailing space", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 3\r\n\r\nabc", Refused(400)),
    case("CL name with underscore (not CL)", b"POST / HTTP/1.1\r\nHost: h\r\nContent_Length: 3\r\n\r\nabc", Forwarded(&[(POST, b"")])),
    case("GET with a CL body", b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", Forwarded(&[(GET, b"hello")])),

    // --- Transfer-Encoding (RFC 9112 §6.1, §6.3 item 4) ---
    case("TE: chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("TE: Chunked (case)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("TE: ' chunked' (leading OWS)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:  \tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("TE: 'chunked ' (trailing OWS)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("TE: chunked, identity", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: identity, chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(501)),
    case("TE: gzip, chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(501)),
    case("TE: chunked, gzip", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: identity", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\nabc", Refused(400)),
    case("TE: xchunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: chunkedx", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunkedx\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: \"chunked\" (quoted)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: chunked twice (two lines)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: chunked, chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: identity line + chunked line", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(501)),
    case("TE: empty value", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: chunked, (empty element)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE: chunked with VT before", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE name with trailing space", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE name with leading space", b"POST / HTTP/1.1\r\nHost: h\r\n Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE name with tab before colon", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("TE value by obs-fold", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),
    case("obs-fold on another field", b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\tfolded\r\n\r\n", Refused(400)),
    case("TE name with underscore (not TE)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n", ForwardedThen(&[(POST, b"")], 400)),
    case("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Refused(400)),

    // --- chunked framing (RFC 9112 §7.1) ---
    case("chunk size with junk 3x", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size overflow (17 hex digits)", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size 16 hex digits of zeros", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000003\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("chunk size with leading +", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size with leading -", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size 0x3", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size with leading space", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size with trailing space", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size empty", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk extension", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"d e\"\r\nabc\r\n0;x\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("chunk extension with BWS", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3 ; a=b\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("chunk extension with bare LF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a\nb\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk extension with bare CR", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a\rb\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk extension with NUL", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;a\0b\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk extension without name", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;=b\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk data longer than its size", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk data shorter than its size", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk size line ends in bare LF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", BAD_CHUNKS),
    case("chunk data ends in bare LF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", BAD_CHUNKS),
    case("last chunk ends in bare LF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\n\r\n", BAD_CHUNKS),
    case("chunked end is LF LF", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\n", BAD_CHUNKS),
    case("last chunk 000 with trailer", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n000\r\nX-T: 1\r\n\r\n", Forwarded(&[(POST, b"abc")])),
    case("trailer by obs-fold", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n folded\r\n\r\n", BAD_CHUNKS),
    case("trailer with space before colon", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T : 1\r\n\r\n", BAD_CHUNKS),
    case("chunked body never ends", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", Closed),

    // --- line endings (RFC 9112 §2.2) ---
    case("bare LF after request line", b"GET / HTTP/1.1\nHost: h\r\n\r\n", Refused(400)),
    case("bare LF between fields", b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", Refused(400)),
    case("bare LF ends the head", b"GET / HTTP/1.1\r\nHost: h\r\n\n", Refused(400)),
    case("LF-only head", b"GET / HTTP/1.1\nHost: h\n\n", Refused(400)),
    case("bare CR in a field line", b"GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", Refused(400)),
    case("bare CR ends the head", b"GET / HTTP/1.1\r\nHost: h\r\n\r\r\n", Refused(400)),
    case("bare CR in the request line", b"GET /a\rb HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("leading empty lines (allowed)", b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[(GET, b"")])),

    // --- NUL and control bytes ---
    case("NUL in a field name", b"GET / HTTP/1.1\r\nHost: h\r\nX\0Y: 1\r\n\r\n", Refused(400)),
    case("NUL in a field value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", Refused(400)),
    case("NUL in the CL value", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\0\r\n\r\nabc", Refused(400)),
    case("SOH in a field value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", Refused(400)),
    case("DEL in a field value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", Refused(400)),
    case("ESC in a field name", b"GET / HTTP/1.1\r\nHost: h\r\nX\x1b: 1\r\n\r\n", Refused(400)),
    case("space inside a field name", b"GET / HTTP/1.1\r\nHost: h\r\nX Y: 1\r\n\r\n", Refused(400)),
    case("empty field name", b"GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n", Refused(400)),
    case("obs-text in a field value (allowed)", b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", Forwarded(&[(GET, b"")])),
    case("NUL in the target", b"GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("NUL in the method", b"G\0T / HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),

    // --- request targets (RFC 9112 §3.2) ---
    case("absolute-form replaces Host", b"GET http://abs.example/x?y HTTP/1.1\r\nHost: other\r\n\r\n", Forwarded(&[("GET /x?y HTTP/1.1", b"")])),
    case("absolute-form without path", b"GET http://abs.example HTTP/1.1\r\nHost: other\r\n\r\n", Forwarded(&[(GET, b"")])),
    case("absolute-form with userinfo", b"GET http://u:p@abs.example/ HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("absolute-form with empty authority", b"GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("absolute-form, other scheme", b"GET ftp://abs.example/ HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    // Routes match path prefixes, and `*` has none: no route, so 404 (keep-alive).
    case("asterisk-form OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", Answered(404)),
    case("asterisk-form with GET", b"GET * HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("authority-form CONNECT", b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n", Refused(501)),
    case("target without leading slash", b"GET x HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("space inside the target", b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),

    // --- methods and versions ---
    case("lowercase method (a token: forwarded)", b"get / HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[("get / HTTP/1.1", b"")])),
    case("method with a non-token byte", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("empty method", b" / HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("tab as request-line separator", b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", Refused(505)),
    case("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", Refused(505)),
    case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Refused(505)),
    case("HTTP/1.10", b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", Refused(400)),
    case("lowercase http/1.1", b"GET / http/1.1\r\nHost: h\r\n\r\n", Refused(400)),
    case("space after the version", b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n", Refused(400)),
    case("HTTP/0.9 request line", b"GET /\r\n\r\n", Refused(400)),
    case("HTTP/1.0 without Host (allowed)", b"GET / HTTP/1.0\r\n\r\n", Forwarded(&[(GET, b"")])),
    case("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", Refused(400)),
    case("two Host fields", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused(400)),
    case("Host with a space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Refused(400)),
    case("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Refused(400)),

    // --- smuggled and pipelined requests ---
    case("CL body holding a second request", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[(POST, b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")])),
    case("chunked body holding a second request", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n23\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n\r\n0\r\n\r\n", Forwarded(&[(POST, b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n")])),
    case("pipelined GET, POST, GET", b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[("GET /1 HTTP/1.1", b""), ("POST /2 HTTP/1.1", b"abc"), ("GET /3 HTTP/1.1", b"")])),
    case("pipelined chunked then GET", b"POST /1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[("POST /1 HTTP/1.1", b"abc"), ("GET /2 HTTP/1.1", b"")])),
    case("CL: 0 then a second request", b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[("POST /1 HTTP/1.1", b""), ("GET /2 HTTP/1.1", b"")])),
    case("Connection: close then more bytes", b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n", Forwarded(&[("GET /1 HTTP/1.1", b"")])),
    case("HTTP/1.0 then more bytes", b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.0\r\n\r\n", Forwarded(&[("GET /1 HTTP/1.1", b"")])),
    case("valid request then an invalid one", b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", ForwardedThen(&[("GET /1 HTTP/1.1", b"")], 400)),
    case("Connection lists Content-Length", b"POST / HTTP/1.1\r\nHost: h\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc", Forwarded(&[(POST, b"abc")])),
    case("Connection lists Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", Forwarded(&[(POST, b"abc")])),
];

/// A chunk whose extensions exceed the 4 KiB cap (`http1::chunked::MAX_EXT`).
fn ext_flood() -> &'static [u8] {
    let mut s = String::from("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3");
    for _ in 0..1000 {
        s.push_str(";a=b1");
    }
    s.push_str("\r\nabc\r\n0\r\n\r\n");
    Box::leak(s.into_bytes().into_boxed_slice())
}

/// What one variant did: the statuses the client got, the requests the server recorded, and
/// whether the connection closed.
struct Outcome {
    statuses: Vec<u16>,
    last_close: bool,
    closed: bool,
    forwarded: Vec<Vec<u8>>,
}

impl Outcome {
    fn describe(&self) -> String {
        let mut s = String::new();
        if self.forwarded.is_empty() {
            s.push_str("not forwarded");
        } else {
            s.push_str(&format!("{} forwarded (", self.forwarded.len()));
            let lines: Vec<String> = self
                .forwarded
                .iter()
                .map(|r| {
                    let line = r.split(|&b| b == b'\r').next().unwrap_or_default();
                    let body = body_of(r).unwrap_or_default();
                    format!("{} +{}B", String::from_utf8_lossy(line), body.len())
                })
                .collect();
            s.push_str(&lines.join("; "));
            s.push(')');
        }
        let st: Vec<String> = self.statuses.iter().map(u16::to_string).collect();
        s.push_str(&format!(
            ", client got [{}]{}",
            st.join(", "),
            if self.closed {
                ", closed"
            } else {
                ", NOT closed"
            }
        ));
        s
    }
}

/// Responses ringlb sent on the connection, as (status, has `Connection: close`).
fn responses(mut raw: &[u8]) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = r.parse(raw) else {
            out.push((0, false));
            break;
        };
        let cl = r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        let close = r.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
        });
        out.push((r.code.unwrap_or(0), close));
        raw = raw.get(n + cl..).unwrap_or_default();
    }
    out
}

/// The body of a recorded request, read by the one framing its head must carry: exactly one
/// Content-Length, or exactly `Transfer-Encoding: chunked`, never both; the framing must end
/// exactly at the end of the recorded bytes. Err describes what is wrong.
fn body_of(req: &[u8]) -> Result<Vec<u8>, String> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut hs);
    let n = match r.parse(req) {
        Ok(httparse::Status::Complete(n)) => n,
        other => return Err(format!("forwarded head does not parse: {other:?}")),
    };
    let cls: Vec<&[u8]> = r
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    let tes: Vec<&[u8]> = r
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .map(|h| h.value)
        .collect();
    let body = &req[n..];
    match (&cls[..], &tes[..]) {
        ([], []) if body.is_empty() => Ok(Vec::new()),
        ([], []) => Err(format!("{} body bytes without framing", body.len())),
        ([cl], []) => {
            let len: usize = std::str::from_utf8(cl)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("forwarded Content-Length is not a number")?;
            if len == body.len() {
                Ok(body.to_vec())
            } else {
                Err(format!("Content-Length {len} but {} bytes", body.len()))
            }
        }
        ([], [te]) if te.eq_ignore_ascii_case(b"chunked") => dechunk(body),
        _ => Err(format!(
            "ambiguous forwarded framing: {} CL, {} TE",
            cls.len(),
            tes.len()
        )),
    }
}

/// Strict chunked decoding of a whole body.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk line without CRLF")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "chunk line not text")?;
        let size = line.split(';').next().unwrap_or("").trim_end();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("chunk size {line:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers, then the empty line, then nothing.
            loop {
                let eol = b
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or("trailer without CRLF")?;
                b = &b[eol + 2..];
                if eol == 0 {
                    return if b.is_empty() {
                        Ok(out)
                    } else {
                        Err(format!("{} bytes after the last chunk", b.len()))
                    };
                }
            }
        }
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// A server that records each request's exact bytes, reading the body by the framing its head
/// declares (any chunk extensions and trailers included), and answers each with 200.
/// `support::Recorder` finds the last chunk by a plain `0` line and so waits forever on
/// `0;ext` or `000`.
struct Strict {
    addr: std::net::SocketAddr,
    requests: mpsc::Receiver<Vec<u8>>,
}

impl Strict {
    fn start() -> Strict {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = mpsc::channel();
        thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                let tx = tx.clone();
                thread::spawn(move || {
                    let mut r = BufReader::new(s);
                    while let Some(req) = read_request(&mut r) {
                        let _ = tx.send(req);
                        if r.get_mut().write_all(OK).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Strict { addr, requests }
    }
}

/// One request, as sent; None at end of stream or on bytes that frame no request.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut req).ok()?;
        if n == 0 {
            return None;
        }
        if req.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut hs);
    head.parse(&req).ok()?;
    let value = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let start = req.len();
            r.read_until(b'\n', &mut req).ok()?;
            let line = String::from_utf8_lossy(&req[start..]).to_string();
            let size = line.trim_end().split(';').next()?.trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                // Trailer lines up to the empty one.
                loop {
                    let start = req.len();
                    if r.read_until(b'\n', &mut req).ok()? == 0 {
                        return None;
                    }
                    if &req[start..] == b"\r\n" {
                        return Some(req);
                    }
                }
            }
            let at = req.len();
            req.resize(at + size + 2, 0);
            r.read_exact(&mut req[at..]).ok()?;
        }
    }
    let len: usize = value("content-length").map_or(Some(0), |v| v.trim().parse().ok())?;
    let at = req.len();
    req.resize(at + len, 0);
    r.read_exact(&mut req[at..]).ok()?;
    Some(req)
}

fn run_case(lb: &Ringlb, rec: &Strict, c: &Case) -> Outcome {
    let mut client = Client::connect(lb.addr());
    client.send(c.bytes);
    client.shutdown_write();
    let raw = client.read_to_close();
    let closed = client.closed_within(Duration::from_millis(100));
    let rs = responses(&raw);
    // The server records a request before it answers, so every request behind a response
    // the client got is already in the channel.
    let mut forwarded = Vec::new();
    while let Ok(r) = rec.requests.try_recv() {
        forwarded.push(r);
    }
    Outcome {
        statuses: rs.iter().map(|r| r.0).collect(),
        last_close: rs.last().is_some_and(|r| r.1),
        closed,
        forwarded,
    }
}

/// Why `o` does not satisfy `want`, if it does not.
fn check(want: Want, o: &Outcome) -> Option<String> {
    if !o.closed {
        return Some("connection not closed".into());
    }
    let (reqs, refused): (&[(&str, &[u8])], Option<u16>) = match want {
        Refused(s) | Answered(s) => (&[], Some(s)),
        Forwarded(r) => (r, None),
        ForwardedThen(r, s) => (r, Some(s)),
        Closed => {
            return (!o.statuses.is_empty() || !o.forwarded.is_empty())
                .then(|| "expected no response and nothing forwarded".into());
        }
    };
    if o.forwarded.len() != reqs.len() {
        return Some(format!(
            "{} requests forwarded, want {}",
            o.forwarded.len(),
            reqs.len()
        ));
    }
    for (got, (line, body)) in o.forwarded.iter().zip(reqs) {
        let got_line = got.split(|&b| b == b'\r').next().unwrap_or_default();
        if got_line != line.as_bytes() {
            return Some(format!(
                "forwarded {:?}, want {line:?}",
                String::from_utf8_lossy(got_line)
            ));
        }
        match body_of(got) {
            Ok(b) if b == *body => {}
            Ok(b) => {
                return Some(format!(
                    "forwarded body {:?}, want {:?}",
                    String::from_utf8_lossy(&b),
                    String::from_utf8_lossy(body)
                ))
            }
            Err(e) => return Some(e),
        }
    }
    let mut want_statuses = vec![200; reqs.len()];
    want_statuses.extend(refused);
    if o.statuses != want_statuses {
        return Some(format!("statuses {:?}, want {want_statuses:?}", o.statuses));
    }
    if refused.is_some() && !o.last_close && !matches!(want, Answered(_)) {
        return Some("refusal without Connection: close".into());
    }
    None
}

#[test]
fn framing_matrix() {
    let mut cases: Vec<&Case> = CASES.iter().collect();
    let flood = case("chunk extensions over 4 KiB", ext_flood(), BAD_CHUNKS);
    cases.push(&flood);
    assert!(cases.len() >= 40);
    let rec = Strict::start();
    let lb = Ringlb::start(&config(
        &[server(rec.addr)],
        "",
        "[timeouts]\nclient_body = \"500ms\"\n",
    ));
    let mut failures = Vec::new();
    eprintln!("| # | variant | want | outcome |");
    eprintln!("|---|---|---|---|");
    for (i, c) in cases.iter().enumerate() {
        let o = run_case(&lb, &rec, c);
        let verdict = check(c.want, &o);
        let want = match c.want {
            Refused(s) => format!("{s} + close"),
            Answered(s) => format!("{s}, not forwarded"),
            Forwarded(r) => format!("{} forwarded", r.len()),
            ForwardedThen(r, s) => format!("{} forwarded, then {s} + close", r.len()),
            Closed => "close, nothing forwarded".into(),
        };
        eprintln!(
            "| {} | {} | {} | {}{} |",
            i + 1,
            c.name,
            want,
            o.describe(),
            verdict
                .as_ref()
                .map(|v| format!(" **FAIL: {v}**"))
                .unwrap_or_default()
        );
        if let Some(v) = verdict {
            failures.push(format!("{}: {v} ({})", c.name, o.describe()));
        }
    }
    assert!(
        rec.requests
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "a request reached the server after its variant was done"
    );
    assert!(
        failures.is_empty(),
        "{} of {} variants failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Still serving.
    assert_eq!(lb.get("/").status, 200);
}
