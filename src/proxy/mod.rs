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
//! Runs on the owning core; takes no lock. Buffers come from the core's free list while a
//! request is in flight and go back to it while the connection is idle. How a failure is
//! answered, counted and retried is decided in `error.rs` only.
//!
//! Uses `http1`, `balance`, `config`, `engine`, `state`, `metrics`, `accesslog`, `upstream`
//! and `context`.

mod body;
mod buf;
mod client;
mod error;
mod proxy_protocol;
mod queue;
mod tunnel;
mod upstream;

use crate::config::{Config, ListenerId, Traffic, Upstream};
use crate::context::Worker;
use crate::engine::Stream;
use crate::http1::{self, Method, RequestBody, RequestError, RequestHead, Status, Version};
use crate::state::conns::ConnSlot;
use client::{Client, Scratch};
pub use error::Failure;
pub use proxy_protocol::read_header as read_proxy_header;
use std::net::{IpAddr, SocketAddr};
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
    /// The route's `client_max_body_size`.
    max_body: Option<u64>,
}

enum HeadRead {
    Ready,
    Closed,
    /// The generation was retired: continue on the next (nothing consumed).
    Switch,
    Refuse(Failure),
}

/// Whether some of the request body is still unread from the client: then the connection
/// cannot go on to the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyLeft {
    Read,
    Unread,
}

/// Serves one client connection. A panic inside is contained here: logged and counted, the
/// connection closed, the core keeps serving.
/// `proxied`: the client's address from the PROXY header read before (see
/// [`read_proxy_header`]), when the listener expects one.
pub async fn serve(
    w: Rc<Worker>,
    client: Stream,
    peer: SocketAddr,
    listener: ListenerId,
    proxied: Option<SocketAddr>,
) {
    use futures_lite::FutureExt;
    let worker = w.clone();
    let served = std::panic::AssertUnwindSafe(async move {
        let Some(first) = first_head(&w, client).await else {
            return;
        };
        // The whole machinery of exchanges (kilobytes of task state), allocated once the
        // connection has sent a request head, and kept for its keep-alive requests.
        Box::pin(serve_conn(w, first, peer, listener, proxied)).await
    })
    .catch_unwind()
    .await;
    if served.is_err() {
        worker.panics.set(worker.panics.get() + 1);
        log::error!(
            "worker {}: a connection task panicked; connection closed",
            worker.index
        );
    }
}

/// The first request head of a connection, read with only what a connection holds before
/// it has sent one: its stream and a small buffer that grows with the head (no upstream-side
/// buffer, no task state of the exchange phases).
struct FirstHead {
    stream: Stream,
    buf: buf::Buf,
    headers: Vec<http1::Header>,
    /// `timeouts.client_header` passed before the head was complete (answered 408).
    late: bool,
}

/// Reads until the first request head is complete, invalid, at the size limit or late; the
/// exchange phases then parse it again and answer. None: the client closed, or sent nothing
/// within `client_header`.
async fn first_head(w: &Worker, mut stream: Stream) -> Option<FirstHead> {
    let config = &w.shared.config;
    let wait = config.timeouts.client_header;
    let limits = config.limits.request.limits();
    let full = config.limits.request.max_head + BUF_SLACK;
    // The first bytes land here, so a connection that sends nothing holds no buffer (a peek
    // would make the engine allocate one for it).
    let mut first = [0u8; 64];
    let n = match stream.read(&mut first, wait).await {
        Ok(n) if n > 0 => n,
        _ => return None,
    };
    let mut buf = buf::Buf::empty();
    buf.ensure(client::HEAD_START);
    buf.push(&first[..n]);
    let mut head = RequestHead {
        headers: Vec::new(),
        ..RequestHead::new()
    };
    let deadline = Instant::now() + wait;
    let mut late = false;
    loop {
        if !buf.is_empty() {
            match http1::parse_request(buf.filled(), &limits, &mut head) {
                Ok(Status::Partial) => {}
                // Complete or refused: the exchange phases take it from here.
                _ => break,
            }
        }
        if buf.is_full() {
            if buf.capacity() >= full {
                break;
            }
            buf.grow_to((buf.capacity() * 2).min(full));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            late = true;
            break;
        }
        match buf.fill(&mut stream, left).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if error::is_timeout(&e) => {
                late = true;
                break;
            }
            Err(_) => return None,
        }
    }
    Some(FirstHead {
        stream,
        buf,
        headers: head.headers,
        late,
    })
}

async fn serve_conn(
    w: Rc<Worker>,
    first: FirstHead,
    peer: SocketAddr,
    listener: ListenerId,
    proxied: Option<SocketAddr>,
) {
    let mut w = w;
    // Behind PROXY the header's source is the client, for everything that follows; the
    // access log keeps the TCP peer as `peer_addr`.
    let source = proxied.unwrap_or(peer);
    let mut session = Session {
        c: Client::new(first.stream, source, listener),
        r: Scratch::new(&w, listener, peer),
    };
    session.c.buf = first.buf;
    session.c.late = first.late;
    session.r.head.headers = first.headers;
    if proxied.is_some() {
        // A request refused before it parses is logged with this address too.
        session.r.x.client(source, source.ip(), &w.access_log); // log
    }
    loop {
        let config = w.shared.config.clone();
        let slot = w
            .conns
            .register(session.c.stream.fd(), session.c.listener.0);
        let mut conn = Conn::new(session, &w, &config, &slot);
        let end = conn.run().await;
        conn.release();
        session = conn.into_session();
        drop(slot);
        // A reload published a newer generation: carry on there, between two requests, as
        // that generation's listener on the same socket (`End::Switch` is only returned when
        // there is one).
        let next = w.successor.borrow().clone();
        let moved =
            next.and_then(|n| Some((w.shared.listener_in(session.c.listener, &n.shared)?, n)));
        match (end, moved) {
            (End::Switch, Some((listener, next))) => {
                session.c.listener = listener;
                session.r.x.moved(listener);
                w = next;
            }
            _ => {
                // TLS: close_notify, so a client reading to the end sees a clean end.
                session.c.stream.close(config.timeouts.client_send).await;
                return;
            }
        }
    }
}

/// What a client connection owns, whatever config generation serves it: the downstream side
/// and the working memory of its exchanges.
struct Session {
    c: Client,
    r: Scratch,
}

/// Why `Conn::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    /// Between requests on a retired generation: continue on its successor.
    Switch,
}

/// Bytes read while a connection waits for its next request with no buffer of its own.
const IDLE_READ: usize = 1024;

/// One client connection served by one generation: the session, the worker and config of
/// that generation, and the facts of the request in progress that borrow the config.
struct Conn<'a> {
    w: &'a Worker,
    config: &'a Arc<Config>,
    slot: &'a ConnSlot<'a>,
    /// The downstream side: stream, address, request bytes.
    c: Client,
    /// Working memory of the exchange in progress.
    r: Scratch,
    /// The server the request's sticky cookie names, if it is a valid cookie naming one of
    /// the upstream's, and when the cookie was issued (Unix seconds).
    sticky_pref: Option<(usize, u32)>,
    /// `Set-Cookie` value to add to the response (the client is (re)pinned to a server);
    /// empty: none.
    set_cookie: Vec<u8>,
    cookie_nocache: bool,
    /// The response being sent: when its first write began, and its bytes so far
    /// (`limits.min_send_rate`).
    sending: Option<(Instant, u64)>,
    /// Where an idle connection reads, having given its buffers back.
    idle: [u8; IDLE_READ],
    /// The index of the request's route in `config.routes`.
    route: usize,
    /// The request's host (its first `vars_host` bytes) and target, kept for the route's
    /// `response_headers` once the head is gone from the client buffer; empty when unused.
    vars: Vec<u8>,
    vars_host: usize,
}

impl<'a> Conn<'a> {
    fn new(s: Session, w: &'a Worker, config: &'a Arc<Config>, slot: &'a ConnSlot<'a>) -> Conn<'a> {
        Conn {
            w,
            config,
            slot,
            c: s.c,
            r: s.r,
            sticky_pref: None,
            set_cookie: Vec::new(),
            cookie_nocache: false,
            sending: None,
            idle: [0; IDLE_READ],
            route: 0,
            vars: Vec::new(),
            vars_host: 0,
        }
    }

    fn into_session(self) -> Session {
        Session {
            c: self.c,
            r: self.r,
        }
    }
}

impl Conn<'_> {
    async fn run(&mut self) -> End {
        loop {
            match self.read_head().await {
                HeadRead::Ready => {}
                HeadRead::Closed => return End::Closed,
                HeadRead::Switch => return End::Switch,
                HeadRead::Refuse(f) => {
                    self.r.x.refused(self.c.buf.filled()); // metrics
                    self.answer(f, Next::Close).await;
                    self.w.request_done(&mut self.r.x, &self.c.stream); // metrics
                    return End::Closed;
                }
            }
            self.c.served += 1;
            self.sending = None;
            let next = self.exchange().await;
            self.r.release_upstream();
            self.w.request_done(&mut self.r.x, &self.c.stream); // metrics
            if next == Next::Close {
                return End::Closed;
            }
        }
    }

    /// Gives every large buffer back to the core's free list (those that are empty).
    fn release(&mut self) {
        self.c.release();
        self.r.release();
    }

    /// Takes what reading a request head needs (from the free list, or new): a small buffer
    /// that grows with the head. The rest is taken once it is needed: the upstream side once
    /// a server is chosen (`acquire_upstream`).
    fn acquire(&mut self) {
        self.c.acquire();
        self.r.acquire_head();
    }

    /// The client buffer at its full size: the head limit and room for body bytes.
    fn client_buf_full(&self) -> usize {
        self.config.limits.request.max_head + BUF_SLACK
    }

    /// Takes the upstream-side buffers, once a server is chosen.
    pub(super) fn acquire_upstream(&mut self) {
        let limits = &self.config.limits;
        self.r
            .acquire_upstream(UPSTREAM_BUF.max(limits.max_response_head + BUF_SLACK));
    }

    /// This connection ends after the request in flight: the process stops, or a reload
    /// removed its listener (its socket is not served by the next generation).
    fn closing(&self) -> bool {
        self.w.conns.closing() || (self.w.retired.get() && !self.moves_on())
    }

    /// Whether the generation that replaced this retired one serves this connection's
    /// socket, so that the connection can continue there.
    fn moves_on(&self) -> bool {
        self.w.successor.borrow().as_ref().is_some_and(|next| {
            self.w
                .shared
                .listener_in(self.c.listener, &next.shared)
                .is_some()
        })
    }

    async fn read_head(&mut self) -> HeadRead {
        let t = &self.config.timeouts;
        if self.w.retired.get() && self.moves_on() {
            return HeadRead::Switch;
        }
        self.c.buf.compact();
        if self.c.buf.is_empty() {
            if self.closing() {
                return HeadRead::Closed;
            }
            // Idle between requests: no large buffer held, closable at shutdown.
            self.release();
            self.slot.idle();
            let wait = if self.c.served == 0 {
                t.client_header
            } else {
                t.keepalive
            };
            let r = self.c.stream.read(&mut self.idle, wait).await;
            self.slot.busy();
            let n = match r {
                Ok(n) if n > 0 => n,
                _ => return HeadRead::Closed,
            };
            self.acquire();
            self.c.buf.push(&self.idle[..n]);
            // Retired while idle: the request goes to the next generation, or, when its
            // listener was removed, is served here and the connection closes after it.
            if self.w.retired.get() && self.moves_on() {
                return HeadRead::Switch;
            }
        } else {
            self.acquire();
            if std::mem::take(&mut self.c.late) {
                return HeadRead::Refuse(Failure::HeadTimeout);
            }
        }
        let limits = self.config.limits.request.limits();
        let deadline = Instant::now() + t.client_header;
        loop {
            match http1::parse_request(self.c.buf.filled(), &limits, &mut self.r.head) {
                Ok(Status::Complete) => return HeadRead::Ready,
                Ok(Status::Partial) => {
                    if self.c.buf.is_full() {
                        let full = self.client_buf_full();
                        if self.c.buf.capacity() >= full {
                            return HeadRead::Refuse(Failure::Request(
                                RequestError::HeadersTooLarge,
                            ));
                        }
                        // The head outgrew the buffer: twice the size, up to the limit.
                        self.c.buf.grow_to((self.c.buf.capacity() * 2).min(full));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HeadRead::Refuse(Failure::HeadTimeout);
                    }
                    match self.c.buf.fill(&mut self.c.stream, left).await {
                        Ok(0) => return HeadRead::Closed,
                        Ok(_) => {}
                        Err(e) if error::is_timeout(&e) => {
                            return HeadRead::Refuse(Failure::HeadTimeout)
                        }
                        Err(_) => return HeadRead::Closed,
                    }
                }
                Err(e) => {
                    log::debug!("{}: refused request: {e:?}", self.c.peer);
                    return HeadRead::Refuse(Failure::Request(e));
                }
            }
        }
    }

    /// One request: route, attempts, response. The head is in `self.r.head`, parsed from the
    /// start of `self.c.buf`.
    async fn exchange(&mut self) -> Next {
        let buf = self.c.buf.filled();
        let head = &self.r.head;
        let id_header = &self.config.access_log.request_id_header;
        self.r.x.begin(&self.w.access_log, id_header, buf, head); // metrics
        let mut req = Req {
            method: head.method,
            version: head.version,
            keep_alive: head.keep_alive,
            body: head.body,
            expect_continue: head.expect_continue,
            upgrade: head.upgrade.is_some(),
            max_body: None,
        };
        self.c.client_ip = match &self.config.listeners[self.c.listener.0 as usize].real_ip {
            Some(real_ip) if real_ip.trusts(self.c.peer.ip()) => {
                real_client_ip(real_ip, buf, &head.headers).unwrap_or(self.c.peer.ip())
            }
            _ => self.c.peer.ip(),
        };
        self.r
            .x
            .client(self.c.peer, self.c.client_ip, &self.w.access_log); // log: remote_addr, id
        let host = head
            .host
            .map(|s| host_without_port(s.get(buf)))
            .unwrap_or(b"");
        let path = request_path(head.target.get(buf));
        if self.config.listeners[self.c.listener.0 as usize].redirect_https {
            return self
                .redirect_https(&req, host.to_vec(), path.to_vec())
                .await;
        }
        let via = self.config.proxy.via.as_deref();
        if via.is_some_and(|name| http1::via_loop(buf, &head.headers, name)) {
            self.c.buf.consume(head.head_len);
            return self.refuse(Failure::Loop, &req, BodyLeft::Unread).await;
        }
        let Some(ri) = self
            .config
            .routes
            .iter()
            .position(|r| r.matches(self.c.listener, host, path))
        else {
            let head_len = head.head_len;
            self.c.buf.consume(head_len);
            return self.refuse(Failure::NoRoute, &req, BodyLeft::Unread).await;
        };
        self.route = ri;
        let config: &Config = self.config;
        let route = &config.routes[ri];
        let traffic = &route.traffic;
        let Some(up) = route.upstream else {
            return self.answer_return(&req, ri).await;
        };
        req.upgrade = route.upgrade.allow(buf, head);
        req.max_body = traffic.max_body;
        if let (Some(max), RequestBody::Length(n)) = (traffic.max_body, req.body) {
            if n > max {
                // Before any body byte is read: no 100 Continue, the connection closes.
                self.c.buf.consume(head.head_len);
                return self
                    .refuse(Failure::BodyTooLarge, &req, BodyLeft::Unread)
                    .await;
            }
        }
        self.vars.clear();
        self.vars_host = 0;
        if let Some(e) = &traffic.response_headers {
            if e.uses(http1::Var::Host) || e.uses(http1::Var::RequestUri) {
                self.vars.extend_from_slice(host);
                self.vars_host = host.len();
                self.vars.extend_from_slice(head.target.get(buf));
            }
        }
        let upstream = &config.upstreams[up.0 as usize];
        self.balance_facts(upstream);
        let body = self.upstream_request(&req, upstream, traffic);
        self.attempts(up, &req, body).await
    }

    /// What the balancer needs from the request: the server its sticky cookie names (only a
    /// value this key issued names one) and the hash key.
    fn balance_facts(&mut self, upstream: &Upstream) {
        let buf = self.c.buf.filled();
        let head = &self.r.head;
        self.sticky_pref = None;
        self.set_cookie.clear();
        if let Some(st) = &upstream.sticky {
            if let Some(v) = http1::find_cookie(buf, &head.headers, st.cookie.as_bytes()) {
                // A forged value names no server.
                self.sticky_pref = st.key.verify(v).and_then(|(id, issued)| {
                    let i = upstream.servers.iter().position(|s| *s.cookie == *id)?;
                    Some((i, issued))
                });
            }
        }
        self.r.key.clear();
        if let crate::balance::Algorithm::Hash { key, .. } = &upstream.algorithm {
            hash_key(key, buf, head, self.c.client_ip, &mut self.r.key);
        }
    }

    /// Writes the request for the upstream into `r.out` once (retries send the same bytes),
    /// with the body when all of it is buffered, and consumes that from the client buffer.
    fn upstream_request(
        &mut self,
        req: &Req,
        upstream: &Upstream,
        traffic: &Traffic,
    ) -> error::Body {
        if req.body != RequestBody::None || req.upgrade {
            // A body (or a tunnel) streams through the client buffer: its full size.
            let full = self.client_buf_full();
            self.c.buf.grow_to(full);
        }
        let buf = self.c.buf.filled();
        let head = &self.r.head;
        let vars = request_vars(&self.c, head, &self.r.x);
        let body_buffered = buf.len() - head.head_len;
        let replay_len = match req.body {
            RequestBody::None => Some(0),
            RequestBody::Length(n) if n <= body_buffered as u64 => Some(n as usize),
            _ => None,
        };
        if self.r.out.capacity() == 0 {
            // Taken once the head is complete and routed (disjoint from the borrowed head).
            self.r.out = buf::take_vec(4096);
        }
        self.r.out.clear();
        let fwd = http1::RequestForward {
            client_ip: self.c.peer.ip(),
            proto: if self.c.stream.is_tls() {
                http1::Proto::Https
            } else {
                http1::Proto::Http
            },
            default_host: upstream.name.as_bytes(),
            tunnel: req.upgrade,
            via: self.config.proxy.via.as_deref(),
            drop_cookie: upstream
                .sticky
                .as_ref()
                .filter(|st| st.indirect)
                .map(|st| st.cookie.as_bytes()),
            request_id: self.r.x.request_id(), // metrics: set when the access log is on
            prefix: traffic.prefix.as_ref(),
            edits: traffic.request_headers.as_ref().map(|e| (e, &vars)),
        };
        http1::write_request_head(buf, head, &fwd, &mut self.r.out);
        let head_len = head.head_len;
        match replay_len {
            Some(n) => {
                self.r.out.extend_from_slice(&buf[head_len..head_len + n]);
                self.c.buf.consume(head_len + n);
                error::Body::Replayable
            }
            None => {
                self.c.buf.consume(head_len);
                error::Body::Streamed
            }
        }
    }

    /// Answers with the failure's status; the connection goes on when the request was
    /// read completely (and the client and ringlb both keep it alive).
    async fn refuse(&mut self, f: Failure, req: &Req, body: BodyLeft) -> Next {
        let close = !req.keep_alive
            || self.closing()
            || (body == BodyLeft::Unread && req.body != RequestBody::None);
        let next = if close { Next::Close } else { Next::KeepAlive };
        self.answer(f, next).await;
        next
    }

    /// `redirect_https` listeners: 301 to the same host (without port) and target over https,
    /// as nginx `return 301 https://$host$request_uri`. Rare, so the two copies do not matter.
    async fn redirect_https(&mut self, req: &Req, host: Vec<u8>, target: Vec<u8>) -> Next {
        self.c.buf.consume(self.r.head.head_len);
        if host.is_empty() {
            self.answer(Failure::NoHost, Next::Close).await;
            return Next::Close;
        }
        let close = !req.keep_alive || self.closing() || req.body != RequestBody::None;
        let mut location = Vec::with_capacity(8 + host.len() + target.len());
        location.extend_from_slice(b"https://");
        location.extend_from_slice(&host);
        location.extend_from_slice(&target);
        self.r.x.status(301); // metrics
        self.r.acquire_resp();
        self.r.resp.clear();
        http1::write_error(301, close, &[(b"Location", &location)], &mut self.r.resp);
        let sent = self
            .c
            .stream
            .write_all(&self.r.resp, self.config.timeouts.client_send)
            .await;
        if close || sent.is_err() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// A `return` route: its fixed answer, written as the head is still in the buffer. The
    /// connection closes when a request body is left unread.
    async fn answer_return(&mut self, req: &Req, ri: usize) -> Next {
        let config: &Config = self.config;
        let route = &config.routes[ri];
        let Some(ret) = &route.traffic.answer else {
            return self.refuse(Failure::NoRoute, req, BodyLeft::Unread).await;
        };
        let close = !req.keep_alive || self.closing() || req.body != RequestBody::None;
        self.r.x.status(ret.status); // metrics
        self.r.acquire_resp();
        self.r.resp.clear();
        let head = &self.r.head;
        let vars = request_vars(&self.c, head, &self.r.x);
        http1::write_return(
            ret,
            route.traffic.response_headers.as_ref(),
            &vars,
            close,
            req.method == Method::Head,
            &mut self.r.resp,
        );
        self.c.buf.consume(head.head_len);
        let sent = self
            .c
            .stream
            .write_all(&self.r.resp, self.config.timeouts.client_send)
            .await;
        if close || sent.is_err() {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Answers the client for `f`, the one way an error response is written (nothing when
    /// the failure leaves nobody to answer). `next`: whether the response keeps the
    /// connection.
    async fn answer(&mut self, f: Failure, next: Next) {
        let Some((status, extra)) = f.answer() else {
            return;
        };
        self.r.x.status(status); // metrics
        self.r.acquire_resp();
        self.r.resp.clear();
        http1::write_error(status, next == Next::Close, extra, &mut self.r.resp);
        let _ = self
            .c
            .stream
            .write_all(&self.r.resp, self.config.timeouts.client_send)
            .await;
    }

    fn client_send_timeout(&self) -> Duration {
        self.config.timeouts.client_send
    }
}

/// The variables of the request whose head is at the start of `c.buf`, for header templates
/// and `return` answers (`server_name` is not known before a server answers).
fn request_vars<'a>(
    c: &'a Client,
    head: &'a RequestHead,
    x: &'a crate::accesslog::Exchange,
) -> http1::Vars<'a> {
    let buf = c.buf.filled();
    http1::Vars {
        remote_addr: c.client_ip,
        host: head
            .host
            .map(|s| host_without_port(s.get(buf)))
            .unwrap_or(b""),
        request_id: x.request_id().unwrap_or_default(),
        https: c.stream.is_tls(),
        request_uri: head.target.get(buf),
        server_name: b"",
    }
}

/// The client address a trusted proxy reported: the rightmost address in the header(s) that
/// is not itself a trusted proxy (nginx `real_ip_recursive on`). None if there is none.
fn real_client_ip(
    real_ip: &crate::config::RealIp,
    buf: &[u8],
    headers: &[http1::Header],
) -> Option<IpAddr> {
    let mut last = None;
    // Later headers continue the list (RFC 9110 §5.3): walk everything from the right.
    let named = headers
        .iter()
        .rev()
        .filter(|h| h.name.get(buf).eq_ignore_ascii_case(&real_ip.header));
    for h in named {
        for item in h.value.get(buf).rsplit(|&b| b == b',') {
            let ip: IpAddr = std::str::from_utf8(item).ok()?.trim().parse().ok()?;
            last = Some(ip);
            if !real_ip.trusts(ip) {
                return last;
            }
        }
    }
    last
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
    client_ip: IpAddr,
    out: &mut Vec<u8>,
) {
    use crate::balance::HashKey;
    use std::io::Write;
    match key {
        HashKey::RequestUri => out.extend_from_slice(head.target.get(buf)),
        HashKey::RemoteAddr => {
            let _ = write!(out, "{client_ip}");
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
