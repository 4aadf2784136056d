//! Response serialization into a reused write buffer (no I/O, no allocation once the buffer
//! has grown to its working size).

use std::io::Write as _;

use super::Framing;
use crate::http::{reason, status_has_no_body};

/// What the `Connection` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnHeader {
    /// HTTP/1.1 keep-alive: no header.
    None,
    /// HTTP/1.0 keep-alive.
    KeepAlive,
    Close,
}

/// Writes a status line and headers. `body_len` is `None` for statuses that have no body.
pub fn head(
    w: &mut Vec<u8>,
    status: u16,
    name: &str,
    body_len: Option<u64>,
    framing: Framing,
    conn: ConnHeader,
    content_type: Option<&str>,
) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        w,
        "HTTP/1.1 {status} {}\r\nX-Backend: {name}\r\n",
        reason(status)
    );
    if let Some(ct) = content_type {
        let _ = write!(w, "Content-Type: {ct}\r\n");
    }
    match (body_len, framing) {
        (None, _) => {}
        (Some(n), Framing::ContentLength) => {
            let _ = write!(w, "Content-Length: {n}\r\n");
        }
        (Some(_), Framing::Chunked) => w.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    match conn {
        ConnHeader::None => {}
        ConnHeader::KeepAlive => w.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnHeader::Close => w.extend_from_slice(b"Connection: close\r\n"),
    }
    w.extend_from_slice(b"\r\n");
}

/// The body length to announce for `status`, or `None` if it has no body.
pub fn body_len(status: u16, len: u64) -> Option<u64> {
    (!status_has_no_body(status)).then_some(len)
}

/// Chunk size used to split a body of `len` bytes into about three chunks, so that chunked
/// responses always exercise the chunk parser of whoever reads them.
pub fn chunk_size(len: u64) -> u64 {
    len.div_ceil(3).clamp(1, 64 * 1024)
}

pub fn chunk_header(w: &mut Vec<u8>, len: u64) {
    let _ = write!(w, "{len:x}\r\n");
}

pub const CHUNK_END: &[u8] = b"\r\n";
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A 400-class answer that also closes the connection.
pub fn rejection(w: &mut Vec<u8>, status: u16, name: &str) {
    let body = reason(status).as_bytes();
    head(
        w,
        status,
        name,
        Some(body.len() as u64 + 1),
        Framing::ContentLength,
        ConnHeader::Close,
        None,
    );
    w.extend_from_slice(body);
    w.push(b'\n');
}

/// `101 Switching Protocols` for a WebSocket upgrade (RFC 6455 §4.2.2).
pub fn switching_protocols(w: &mut Vec<u8>, name: &str, key: Option<&[u8]>) {
    let _ = write!(
        w,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         X-Backend: {name}\r\n"
    );
    if let Some(key) = key {
        w.extend_from_slice(b"Sec-WebSocket-Accept: ");
        let mut accept = [0u8; 28];
        websocket_accept(key, &mut accept);
        w.extend_from_slice(&accept);
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"\r\n");
}

/// base64(SHA-1(key ++ GUID)), RFC 6455 §1.3.
pub fn websocket_accept(key: &[u8], out: &mut [u8; 28]) {
    use base64::Engine as _;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = sha.digest().bytes();
    // 20 bytes always encode to 28 base64 characters.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_matches_rfc_6455() {
        let mut out = [0u8; 28];
        websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ==", &mut out);
        assert_eq!(&out, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn heads() {
        let mut w = Vec::new();
        head(
            &mut w,
            200,
            "a",
            Some(2),
            Framing::ContentLength,
            ConnHeader::Close,
            None,
        );
        assert_eq!(
            w,
            b"HTTP/1.1 200 OK\r\nX-Backend: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        w.clear();
        head(
            &mut w,
            204,
            "a",
            body_len(204, 5),
            Framing::Chunked,
            ConnHeader::None,
            None,
        );
        assert_eq!(w, b"HTTP/1.1 204 No Content\r\nX-Backend: a\r\n\r\n");
    }
}
