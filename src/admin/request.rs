//! Reading one admin request: the head, then a body of at most [`MAX_BODY`] bytes framed by
//! Content-Length or chunked, everything within one deadline. Off the request path: the
//! admin listener is served by worker 0, one short connection per request.
//!
//! Memory per connection: the head buffer ([`MAX_HEAD`] plus a little), which is also the
//! read window for the body, and the body itself, which grows only with the bytes that arrived
//! (at most [`MAX_BODY`]). A client that announces a large body and sends none of it costs
//! nothing more than the head buffer.

use crate::engine::Stream;
use crate::http1::{self, ChunkedDecoder, Method, RequestBody, RequestHead, Status};
use std::time::{Duration, Instant};

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;
/// Head bytes accepted (431 beyond); the admin API needs short heads only.
const MAX_HEAD: usize = 8 * 1024;

/// Why no request came out of the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// Closed, reset, or idle until the deadline before sending anything: no answer.
    Closed,
    /// Answer with this status and close.
    Status(u16),
}

/// A request head, with the body not yet read.
pub struct Request {
    pub method: Method,
    /// The request-target in origin-form, query included.
    pub path: Vec<u8>,
    pub authorization: Option<Vec<u8>>,
    /// `Host`, `Origin` and `Content-Type` as received (absent: None).
    pub host: Option<Vec<u8>>,
    pub origin: Option<Vec<u8>>,
    pub content_type: Option<Vec<u8>>,
    body: RequestBody,
    expect_continue: bool,
    buf: Vec<u8>,
    /// Bytes of `buf` received; those after the head are body bytes.
    len: usize,
    head_len: usize,
    deadline: Instant,
    body_read: bool,
}

fn left(deadline: Instant) -> Result<Duration, ReadError> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(ReadError::Status(408))
    } else {
        Ok(d)
    }
}

/// Reads the head; the body (if any) must be read with [`Request::body`] before the deadline.
pub async fn read_head(s: &mut Stream, timeout: Duration) -> Result<Request, ReadError> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HEAD + 1024];
    let mut len = 0;
    let mut head = RequestHead::new();
    let limits = http1::Limits {
        max_head: MAX_HEAD,
        ..http1::Limits::default()
    };
    loop {
        let wait = match left(deadline) {
            Ok(w) => w,
            Err(_) if len == 0 => return Err(ReadError::Closed),
            Err(e) => return Err(e),
        };
        match s.read(&mut buf[len..], wait).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(n) => len += n,
            Err(_) if len == 0 => return Err(ReadError::Closed),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(ReadError::Status(408))
            }
            Err(_) => return Err(ReadError::Closed),
        }
        match http1::parse_request(&buf[..len], &limits, &mut head) {
            Ok(Status::Complete) => break,
            Ok(Status::Partial) if len < buf.len() => continue,
            Ok(Status::Partial) => return Err(ReadError::Status(431)),
            Err(e) => return Err(ReadError::Status(e.status())),
        }
    }
    let filled = &buf[..len];
    let header = |name: &[u8]| http1::find_header(filled, &head.headers, name).map(<[u8]>::to_vec);
    Ok(Request {
        method: head.method,
        path: head.path.get(filled).to_vec(),
        authorization: header(b"authorization"),
        host: head.host.map(|h| h.get(filled).to_vec()),
        origin: header(b"origin"),
        content_type: header(b"content-type"),
        body: head.body,
        expect_continue: head.expect_continue,
        head_len: head.head_len,
        buf,
        len,
        deadline,
        body_read: false,
    })
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &[u8] {
        let p = self.path.as_slice();
        p.split(|&b| b == b'?').next().unwrap_or(p)
    }

    /// Declared too large to read: answer 413 without reading it.
    pub fn body_too_large(&self) -> bool {
        matches!(self.body, RequestBody::Length(n) if n > MAX_BODY as u64)
    }

    /// The request has a body that was not read: closing now could reset the connection
    /// before the client reads the answer.
    pub fn body_unread(&self) -> bool {
        self.body != RequestBody::None && !self.body_read
    }

    /// Reads the whole body (empty when the request has none). Sends `100 Continue` first
    /// when the client waits for it (RFC 9110 §10.1.1).
    pub async fn body(&mut self, s: &mut Stream) -> Result<Vec<u8>, ReadError> {
        if self.body == RequestBody::None {
            return Ok(Vec::new());
        }
        let body = self.read_body(s).await?;
        self.body_read = true;
        Ok(body)
    }

    async fn read_body(&mut self, s: &mut Stream) -> Result<Vec<u8>, ReadError> {
        if self.body_too_large() {
            return Err(ReadError::Status(413));
        }
        // Body bytes already received: the client did not wait.
        if self.expect_continue && self.len == self.head_len {
            s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", left(self.deadline)?)
                .await
                .map_err(|_| ReadError::Closed)?;
        }
        // Body bytes go to the front of the buffer, after the head is no longer needed.
        self.buf.copy_within(self.head_len..self.len, 0);
        self.len -= self.head_len;
        self.head_len = 0;
        match self.body {
            RequestBody::None => Ok(Vec::new()),
            RequestBody::Length(n) => self.length_body(s, n as usize).await,
            RequestBody::Chunked => self.chunked_body(s).await,
        }
    }

    async fn fill(&mut self, s: &mut Stream) -> Result<(), ReadError> {
        if self.len == self.buf.len() {
            return Err(ReadError::Status(413));
        }
        match s
            .read(&mut self.buf[self.len..], left(self.deadline)?)
            .await
        {
            Ok(0) => Err(ReadError::Closed),
            Ok(n) => {
                self.len += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(ReadError::Status(408)),
            Err(_) => Err(ReadError::Closed),
        }
    }

    /// Body bytes go to `body` as they arrive; `buf` is only the read window.
    async fn length_body(&mut self, s: &mut Stream, n: usize) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::with_capacity(n.min(self.len.max(1024)));
        loop {
            let take = self.len.min(n - body.len());
            body.extend_from_slice(&self.buf[..take]);
            self.buf.copy_within(take..self.len, 0);
            self.len -= take;
            if body.len() == n {
                return Ok(body);
            }
            self.fill(s).await?;
        }
    }

    async fn chunked_body(&mut self, s: &mut Stream) -> Result<Vec<u8>, ReadError> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut scanned = 0;
        loop {
            let input = &self.buf[scanned..self.len];
            let mut too_large = false;
            let progress = decoder
                .advance(input, &mut |r| {
                    if body.len() + r.len() > MAX_BODY {
                        too_large = true;
                    } else {
                        body.extend_from_slice(&input[r]);
                    }
                })
                .map_err(|_| ReadError::Status(400))?;
            if too_large {
                return Err(ReadError::Status(413));
            }
            scanned += progress.consumed;
            if progress.done {
                return Ok(body);
            }
            // Scanned bytes are consumed; keep only the unscanned tail (a partial chunk-size
            // line at most), so the window is free for the next read.
            self.buf.copy_within(scanned..self.len, 0);
            self.len -= scanned;
            scanned = 0;
            self.fill(s).await?;
        }
    }
}

/// After answering with part of the request unread: discard what the client still sends, for
/// a short while, so that closing does not reset the connection before the client has read
/// the answer (nginx `lingering_close`).
pub async fn linger(s: &mut Stream) {
    const LINGER: Duration = Duration::from_secs(2);
    const MAX: usize = 1 << 20;
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < MAX {
        let Ok(wait) = left(deadline) else { return };
        match s.read(&mut sink, wait).await {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}
