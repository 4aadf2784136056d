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
    /// Nothing buffered and nothing known to be readable: wait as an idle connection.
    Idle,
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
pub fn serve(
    w: Rc<Worker>,
    client: Stream,
    peer: SocketAddr,
    listener: ListenerId,
    proxied: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> {
    Contained {
        worker: w.clone(),
        fut: serve_conn(w, client, peer, listener, proxied),
    }
}

/// A connection's future with its panics contained: a panic while polling it is logged and
/// counted, and the connection ends (dropped with the task). A struct, not an `async` block
/// around `catch_unwind`, which would hold the connection's future twice.
struct Contained<F> {
    worker: Rc<Worker>,
    fut: F,
}

impl<F: std::future::Future<Output = ()>> std::future::Future for Contained<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        // SAFETY: `fut` is pinned with `self` (structural pinning): it is never moved out of
        // `self` nor handed out unpinned, and `Contained` has no Drop or Unpin of its own.
        let (worker, fut) = unsafe {
            let this = self.get_unchecked_mut();
            (&this.worker, std::pin::Pin::new_unchecked(&mut this.fut))
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                worker.panics.set(worker.panics.get() + 1);
                log::error!(
                    "worker {}: a connection task panicked; connection closed",
                    worker.index
                );
                std::task::Poll::Ready(())
            }
        }
    }
}

/// A connection's life: it waits for bytes holding only its [`Client`] (no buffer, no
/// exchange state: a few hundred bytes of task), and serves them with the machinery of
/// exchanges — kilobytes of task state and the [`Scratch`] memory — taken for as long as it
/// is busy and given back when it waits again (nginx frees an idle connection's buffers the
/// same way). A reload moves it to the newest generation between requests.
///
/// Not an `async fn`: its arguments would be stored twice in the task (as arguments and as
/// the locals they move into), and this future is what an idle connection is.
fn serve_conn(
    mut w: Rc<Worker>,
    stream: Stream,
    peer: SocketAddr,
    listener: ListenerId,
    proxied: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> {
    // Behind PROXY the header's source is the client, for everything that follows; the
    // access log keeps the TCP peer as `peer_addr`.
    let mut c = Client::new(stream, peer, proxied, listener);
    let mut marks = client::Marks::default();
    async move {
        loop {
            let config = w.shared.config.clone();
            let slot = w.conns.register(c.stream.fd(), c.listener.0);
            let end = loop {
                if c.buf.is_empty() {
                    if closing(&w, c.listener) {
                        break End::Closed;
                    }
                    if w.retired.get() {
                        break End::Switch;
                    }
                    // Idle between requests: closable at shutdown. Not before the first: it
                    // was accepted here, so it is answered here (a graceful stop or a binary
                    // upgrade waits for it).
                    if c.served > 0 {
                        slot.idle();
                    }
                    let t = &config.timeouts;
                    let wait = if c.served == 0 {
                        t.client_header
                    } else {
                        t.keepalive
                    };
                    let woke = c.stream.wait_readable(wait).await;
                    slot.busy();
                    if woke.is_err() {
                        break End::Closed;
                    }
                    if w.retired.get() && moves_on(&w, c.listener) {
                        // The bytes wait in the socket for the next generation.
                        break End::Switch;
                    }
                    // Boxed: a head being read holds its state only while it is read.
                    if !Box::pin(gather_head(&mut c, &config)).await {
                        break End::Closed;
                    }
                }
                let (peer, proxied) = c.addresses();
                let scratch = client::take_scratch(&w, c.listener, peer, proxied, &marks);
                // Boxed: the exchange phases' task state exists only while the connection is busy.
                let (end, client, scratch) = Box::pin(busy(&w, &config, c, scratch)).await;
                c = client;
                marks = client::give_scratch(scratch);
                match end {
                    End::Idle => {}
                    end => break end,
                }
            };
            drop(slot);
            // A reload published a newer generation: carry on there, between two requests, as
            // that generation's listener on the same socket (`End::Switch` is only returned
            // when there is one).
            // No local of this is held across the close, the largest state of this future.
            let Some((listener, next)) = successor(&w, end, c.listener) else {
                // TLS: close_notify, so a client reading to the end sees a clean end.
                let send = config.timeouts.client_send;
                drop(config);
                c.stream.close(send).await;
                return;
            };
            c.listener = listener;
            w = next;
        }
    }
}

/// Where a connection that ended with `end` goes on: the newer generation and its listener
/// on the same socket (`End::Switch` is only returned when there is one).
fn successor(w: &Worker, end: End, listener: ListenerId) -> Option<(ListenerId, Rc<Worker>)> {
    if end != End::Switch {
        return None;
    }
    let next = w.successor.borrow().clone()?;
    Some((w.shared.listener_in(listener, &next.shared)?, next))
}

/// This connection ends after the request in flight (or now, when idle): the process stops,
/// or a reload removed its listener (its socket is not served by the next generation).
fn closing(w: &Worker, listener: ListenerId) -> bool {
    w.conns.closing() || (w.retired.get() && !moves_on(w, listener))
}

/// Whether the generation that replaced this retired one serves the connection's socket
/// (its `listener` here), so that the connection can continue there.
fn moves_on(w: &Worker, listener: ListenerId) -> bool {
    w.successor
        .borrow()
        .as_ref()
        .is_some_and(|next| w.shared.listener_in(listener, &next.shared).is_some())
}

/// Reads a request head into the client buffer, holding nothing else: until the bytes hold
/// an empty line (the head's end, as far as a scan can tell; the exchange phases parse it),
/// the head limit, or `client_header` passes (then `late`: answered 408). A connection that
/// trickles a head (slowloris) costs its buffer and its small task only. False: the client
/// closed, failed, or sent nothing.
async fn gather_head(c: &mut Client, config: &Config) -> bool {
    let full = config.limits.request.max_head + BUF_SLACK;
    let deadline = crate::engine::now() + config.timeouts.client_header;
    c.acquire();
    loop {
        let left = deadline.saturating_duration_since(crate::engine::now());
        if left.is_zero() {
            c.late = true;
            return !c.buf.is_empty();
        }
        match c.buf.fill(&mut c.stream, left).await {
            // The client ended its side mid-head: the parser says what it sent was (an
            // invalid head is answered 400 before the close).
            Ok(0) => return !c.buf.is_empty(),
            Ok(_) => {}
            Err(e) if error::is_timeout(&e) => {
                c.late = true;
                // Nothing at all (woken for a stale readiness or a record without data):
                // an idle connection's end, not a late head.
                return !c.buf.is_empty();
            }
            Err(_) => return false,
        }
        if http1::head_end_seen(c.buf.filled()) {
            return true;
        }
        if c.buf.is_full() {
            if c.buf.capacity() >= full {
                // At the limit: the exchange phases refuse it (431).
                return true;
            }
            c.buf.grow_to((c.buf.capacity() * 2).min(full));
        }
    }
}

/// Serves requests until the connection has nothing more to read (idle), closes, or must
/// move to a newer generation.
async fn busy(w: &Worker, config: &Arc<Config>, c: Client, r: Scratch) -> (End, Client, Scratch) {
    let mut conn = Conn::new(c, r, w, config);
    let end = conn.run().await;
    conn.release();
    let (c, r) = conn.into_parts();
    (end, c, r)
}

/// Why `Conn::run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Closed,
    /// Between requests on a retired generation: continue on its successor.
    Switch,
    /// Between requests with nothing buffered: wait for bytes without the exchange state.
    Idle,
}

/// One client connection served by one generation: the session, the worker and config of
/// that generation, and the facts of the request in progress that borrow the config.
struct Conn<'a> {
    w: &'a Worker,
    config: &'a Arc<Config>,
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
    /// The index of the request's route in `config.routes`.
    route: usize,
    /// The request's host (its first `vars_host` bytes) and target, kept for the route's
    /// `response_headers` once the head is gone from the client buffer; empty when unused.
    vars: Vec<u8>,
    vars_host: usize,
}

impl<'a> Conn<'a> {
    fn new(c: Client, r: Scratch, w: &'a Worker, config: &'a Arc<Config>) -> Conn<'a> {
        Conn {
            w,
            config,
            c,
            r,
            sticky_pref: None,
            set_cookie: Vec::new(),
            cookie_nocache: false,
            sending: None,
            route: 0,
            vars: Vec::new(),
            vars_host: 0,
        }
    }

    fn into_parts(self) -> (Client, Scratch) {
        (self.c, self.r)
    }
}

impl Conn<'_> {
    async fn run(&mut self) -> End {
        loop {
            match self.read_head().await {
                HeadRead::Ready => {}
                HeadRead::Closed => return End::Closed,
                HeadRead::Switch => return End::Switch,
                HeadRead::Idle => return End::Idle,
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

    async fn read_head(&mut self) -> HeadRead {
        let t = &self.config.timeouts;
        if self.w.retired.get() && moves_on(self.w, self.c.listener) {
            return HeadRead::Switch;
        }
        self.c.buf.compact();
        if self.c.buf.is_empty() {
            // The wait for the next request happens outside, without the exchange state.
            return HeadRead::Idle;
        }
        self.acquire();
        if std::mem::take(&mut self.c.late) {
            return HeadRead::Refuse(Failure::HeadTimeout);
        }
        let limits = self.config.limits.request.limits();
        let deadline = crate::engine::now() + t.client_header;
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
                    let left = deadline.saturating_duration_since(crate::engine::now());
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
        self.r.client_ip = match &self.config.listeners[self.c.listener.0 as usize].real_ip {
            Some(real_ip) if real_ip.trusts(self.c.peer.ip()) => {
                real_client_ip(real_ip, buf, &head.headers).unwrap_or(self.c.peer.ip())
            }
            _ => self.c.peer.ip(),
        };
        self.r
            .x
            .client(self.c.peer, self.r.client_ip, &self.w.access_log); // log: remote_addr, id
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
            hash_key(key, buf, head, self.r.client_ip, &mut self.r.key);
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
        let vars = request_vars(&self.c, self.r.client_ip, head, &self.r.x);
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
            || closing(self.w, self.c.listener)
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
        let close =
            !req.keep_alive || closing(self.w, self.c.listener) || req.body != RequestBody::None;
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
        let close =
            !req.keep_alive || closing(self.w, self.c.listener) || req.body != RequestBody::None;
        self.r.x.status(ret.status); // metrics
        self.r.acquire_resp();
        self.r.resp.clear();
        let head = &self.r.head;
        let vars = request_vars(&self.c, self.r.client_ip, head, &self.r.x);
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
    client_ip: IpAddr,
    head: &'a RequestHead,
    x: &'a crate::accesslog::Exchange,
) -> http1::Vars<'a> {
    let buf = c.buf.filled();
    http1::Vars {
        remote_addr: client_ip,
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
