//! One client connection, served on the core that accepted it.
//!
//! The request lifecycle, by phase:
//! 1. **head** — read and parse the request head (`read_head`), bounded by
//!    `timeouts.client_header` (slowloris) and the head limits; ambiguous framing is refused
//!    here with 400 and a close, so it never reaches a server.
//! 2. **route** — listener, host and path select an upstream (`Config::route`); none → 404.
//! 3. **attempt** — the upstream's balancer picks a server; a pooled keep-alive connection is
//!    taken or a new one opened (`upstream.rs`). The rewritten head (and the body, when it is
//!    already buffered) is written once; a pooled connection found dead before any response
//!    byte is retried on a fresh one, and another server is tried while that is safe.
//! 4. **response** — the response head is read, rewritten and streamed back with its body by
//!    its framing (`body.rs`); the upstream connection returns to the pool only after a
//!    complete, clean response.
//! 5. **next** — keep the client connection for the next (possibly already buffered,
//!    pipelined) request, or close.
//!
//! Runs on the owning core; takes no lock. Buffers are allocated once per connection.

mod body;
mod buf;
mod error;
mod upstream;

use crate::config::{Config, ListenerId};
use crate::http1::{self, Method, RequestBody, RequestHead, ResponseHead, Status, Version};
use crate::runtime::conns::ConnSlot;
use crate::runtime::io::Stream;
use crate::runtime::Worker;
use buf::Buf;
pub use error::Failure;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Headroom above the head limit, so a head at the limit still leaves room for body bytes.
const BUF_SLACK: usize = 4096;
const UPSTREAM_BUF: usize = 32 << 10;

/// What the exchange decided about the client connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

/// The request facts needed after its head bytes are gone from the buffer.
#[derive(Clone, Copy, Debug)]
struct Req {
    method: Method,
    version: Version,
    keep_alive: bool,
    body: RequestBody,
    expect_continue: bool,
    upgrade: bool,
}

enum HeadRead {
    Ready,
    Closed,
    Refuse(u16),
}

pub async fn serve(w: Rc<Worker>, client: Stream, peer: SocketAddr, listener: ListenerId) {
    let slot = w.conns.register(client.fd());
    let config = w.shared.config.clone();
    let limits = config.limits.request;
    let mut conn = Conn {
        w: &w,
        config: &config,
        slot: &slot,
        client,
        peer,
        listener,
        cbuf: Buf::new(limits.max_head + BUF_SLACK),
        ubuf: Buf::new(UPSTREAM_BUF.max(config.limits.max_response_head + BUF_SLACK)),
        head: RequestHead::new(),
        rhead: ResponseHead::new(),
        out: Vec::with_capacity(4096),
        resp: Vec::with_capacity(4096),
        key: Vec::with_capacity(64),
        x: crate::metrics::Exchange::new(&w, listener, peer), // metrics
    };
    conn.run().await;
}

struct Conn<'a> {
    w: &'a Worker,
    config: &'a Arc<Config>,
    slot: &'a ConnSlot<'a>,
    client: Stream,
    peer: SocketAddr,
    listener: ListenerId,
    /// Client bytes: the request head, then body bytes and pipelined requests.
    cbuf: Buf,
    /// Upstream bytes of the current attempt.
    ubuf: Buf,
    head: RequestHead,
    rhead: ResponseHead,
    /// The request as written to the upstream (head, plus the body when replayable).
    out: Vec<u8>,
    /// Bytes for the client (response heads, error responses, decoded chunks).
    resp: Vec<u8>,
    /// Hash key of the current request, for hash balancing.
    key: Vec<u8>,
    /// metrics: facts of the current exchange, for the counters and the access log.
    x: crate::metrics::Exchange,
}

impl Conn<'_> {
    async fn run(&mut self) {
        let mut first = true;
        loop {
            match self.read_head(first).await {
                HeadRead::Ready => {}
                HeadRead::Closed => return,
                HeadRead::Refuse(status) => {
                    self.x.refused(self.cbuf.filled()); // metrics
                    self.send_error(status, true).await;
                    self.w.request_done(&mut self.x, &self.client); // metrics
                    return;
                }
            }
            first = false;
            let next = self.exchange().await;
            self.w.request_done(&mut self.x, &self.client); // metrics
            if next == Next::Close {
                return;
            }
        }
    }

    async fn read_head(&mut self, first: bool) -> HeadRead {
        let t = &self.config.timeouts;
        self.cbuf.compact();
        if self.cbuf.is_empty() {
            if self.w.conns.closing() {
                return HeadRead::Closed;
            }
            // Idle between requests: closable at shutdown.
            self.slot.set_idle(true);
            let wait = if first { t.client_header } else { t.keepalive };
            let r = self.cbuf.fill(&mut self.client, wait).await;
            self.slot.set_idle(false);
            if !matches!(r, Ok(n) if n > 0) {
                return HeadRead::Closed;
            }
        }
        let limits = self.config.limits.request.limits();
        let deadline = Instant::now() + t.client_header;
        loop {
            match http1::parse_request(self.cbuf.filled(), &limits, &mut self.head) {
                Ok(Status::Complete) => return HeadRead::Ready,
                Ok(Status::Partial) => {
                    if self.cbuf.is_full() {
                        return HeadRead::Refuse(431);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HeadRead::Refuse(408);
                    }
                    match self.cbuf.fill(&mut self.client, left).await {
                        Ok(0) => return HeadRead::Closed,
                        Ok(_) => {}
                        Err(e) if error::is_timeout(&e) => return HeadRead::Refuse(408),
                        Err(_) => return HeadRead::Closed,
                    }
                }
                Err(e) => {
                    log::debug!("{}: refused request: {e:?}", self.peer);
                    return HeadRead::Refuse(e.status());
                }
            }
        }
    }

    /// One request: route, attempts, response. The head is in `self.head`, parsed from the
    /// start of `self.cbuf`.
    async fn exchange(&mut self) -> Next {
        let buf = self.cbuf.filled();
        let head = &self.head;
        self.x.begin(self.w, buf, head); // metrics
        let req = Req {
            method: head.method,
            version: head.version,
            keep_alive: head.keep_alive,
            body: head.body,
            expect_continue: head.expect_continue,
            upgrade: head.upgrade.is_some(),
        };
        let host = head
            .host
            .map(|s| host_without_port(s.get(buf)))
            .unwrap_or(b"");
        let path = request_path(head.target.get(buf));
        let Some(up) = self.config.route(self.listener, host, path) else {
            let head_len = head.head_len;
            self.cbuf.consume(head_len);
            return self.refuse(Failure::NoRoute, &req, true).await;
        };
        let upstream = &self.config.upstreams[up.0 as usize];
        self.key.clear();
        if let crate::balance::Algorithm::Hash { key, .. } = &upstream.algorithm {
            hash_key(key, buf, head, self.peer, &mut self.key);
        }

        // The upstream request is built once; retries write the same bytes again.
        let body_buffered = buf.len() - head.head_len;
        let replay_len = match req.body {
            RequestBody::None => Some(0),
            RequestBody::Length(n) if n <= body_buffered as u64 => Some(n as usize),
            _ => None,
        };
        self.out.clear();
        let fwd = http1::RequestForward {
            client_ip: self.peer.ip(),
            proto: http1::Proto::Http,
            default_host: upstream.name.as_bytes(),
            tunnel: req.upgrade,
            strip_expect: req.expect_continue,
            drop_cookie: None,
            request_id: self.x.request_id(), // metrics: set when the access log is on
        };
        http1::write_request_head(buf, head, &fwd, &mut self.out);
        let head_len = head.head_len;
        match replay_len {
            Some(n) => {
                self.out.extend_from_slice(&buf[head_len..head_len + n]);
                self.cbuf.consume(head_len + n);
            }
            None => self.cbuf.consume(head_len),
        }
        self.attempts(up, &req, replay_len.is_some()).await
    }

    /// Answers with an error. `body_pending`: the request body was not read, so the
    /// connection cannot continue.
    async fn refuse(&mut self, f: Failure, req: &Req, body_pending: bool) -> Next {
        let close = !req.keep_alive
            || self.w.conns.closing()
            || (body_pending && req.body != RequestBody::None);
        self.send_error(f.status(), close).await;
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    async fn send_error(&mut self, status: u16, close: bool) {
        self.x.status(status); // metrics
        self.resp.clear();
        http1::write_error(status, close, &[], &mut self.resp);
        let _ = self
            .client
            .write_all(&self.resp, self.config.timeouts.client_send)
            .await;
    }

    fn client_send_timeout(&self) -> Duration {
        self.config.timeouts.client_send
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// The path of a request target: origin-form as is; absolute-form without scheme and authority.
fn request_path(target: &[u8]) -> &[u8] {
    if target.first() == Some(&b'/') {
        return target;
    }
    let rest = match target.windows(3).position(|w| w == b"://") {
        Some(i) => &target[i + 3..],
        None => return target,
    };
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => &rest[i..],
        None => b"/",
    }
}

fn hash_key(
    key: &crate::balance::HashKey,
    buf: &[u8],
    head: &RequestHead,
    peer: SocketAddr,
    out: &mut Vec<u8>,
) {
    use crate::balance::HashKey;
    use std::io::Write;
    match key {
        HashKey::RequestUri => out.extend_from_slice(head.target.get(buf)),
        HashKey::RemoteAddr => {
            let _ = write!(out, "{}", peer.ip());
        }
        HashKey::Header(name) => {
            if let Some(v) = http1::find_header(buf, &head.headers, name) {
                out.extend_from_slice(v);
            }
        }
        HashKey::Cookie(name) => {
            if let Some(v) = http1::find_cookie(buf, &head.headers, name) {
                out.extend_from_slice(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port(b"example.com:8080"), b"example.com");
        assert_eq!(host_without_port(b"example.com"), b"example.com");
        assert_eq!(host_without_port(b"[::1]:8080"), b"[::1]");
        assert_eq!(host_without_port(b"[::1]"), b"[::1]");
    }

    #[test]
    fn path_of_targets() {
        assert_eq!(request_path(b"/a/b?c"), b"/a/b?c");
        assert_eq!(request_path(b"http://h.example/x/y"), b"/x/y");
        assert_eq!(request_path(b"http://h.example"), b"/");
        assert_eq!(request_path(b"*"), b"*");
    }
}
