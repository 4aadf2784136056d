//! The attempt phase: pick a server, get a connection, send the request, read the response
//! head; then hand over to the response phase.

use super::body::BodyEnd;
use super::error::{is_timeout, Failure};
use super::queue::QueueEnd;
use super::{Conn, Next, Req};
use crate::balance::{self, PickCtx, ServerView};
use crate::config::{Config, Server, Upstream, UpstreamId};
use crate::engine::Stream;
use crate::http1::{self, ResponseBody, Status, Version};
use crate::state::{now_ms, Active, AdminState, ServerState, StateTable};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// More informational (1xx) responses than this before the final one is a hostile server.
const MAX_INFORMATIONAL: usize = 16;
const EWMA_DECAY_NS: u64 = 10_000_000_000;

/// The servers of one upstream as a balancer sees them, with the servers this request has
/// already tried excluded.
pub(super) struct View<'a> {
    pub(super) upstream: &'a Upstream,
    pub(super) table: &'a StateTable,
    pub(super) now: u64,
    pub(super) tried: u128,
}

impl View<'_> {
    fn state(&self, i: usize) -> &ServerState {
        self.table.get(self.upstream.servers[i].id)
    }
}

impl ServerView for View<'_> {
    fn len(&self) -> usize {
        self.upstream.servers.len()
    }

    fn usable(&self, i: usize) -> bool {
        let tried = i < 128 && self.tried & (1u128 << i) != 0;
        let st = self.state(i);
        let full = self.upstream.servers[i]
            .max_conns
            .is_some_and(|max| st.active.load(Relaxed) >= max);
        !tried && !full && st.usable(self.now)
    }

    fn backup(&self, i: usize) -> bool {
        self.upstream.servers[i].backup
    }

    fn weight(&self, i: usize) -> u32 {
        let st = self.state(i);
        let weight = st.weight.load(Relaxed);
        match self.upstream.slow_start {
            Some(window) => {
                // Back from a passive failure counts as newly up, like a passed check.
                let up_since = st
                    .up_since_ms
                    .load(Relaxed)
                    .max(st.down_until_ms.load(Relaxed));
                let since = self.now.saturating_sub(up_since);
                balance::slow_start_weight(weight, Duration::from_millis(since), window)
            }
            None => weight,
        }
    }

    fn active(&self, i: usize) -> u32 {
        self.state(i).active.load(Relaxed)
    }

    fn ewma_ns(&self, i: usize) -> u64 {
        self.state(i).ewma_ns.load(Relaxed)
    }
}

/// How one attempt at one server ended.
enum Attempt {
    /// A response (or a failure after the client saw response bytes) was handled.
    Done(Next),
    /// Failed before a response reached the client; whether another server may be tried
    /// depends on how far it got.
    Failed(Failed),
    /// The client failed or went away while sending its body: close without answering.
    ClientGone,
    /// The client sent an invalid or too slow body: answer with this status and close.
    ClientError(u16),
}

impl<'a> Conn<'a> {
    pub(super) async fn attempts(&mut self, up: UpstreamId, req: &Req, replayable: bool) -> Next {
        let config: &'a Config = self.config;
        let upstream = &config.upstreams[up.0 as usize];
        let policy = upstream.next_upstream;
        let resendable = replayable && (req.method.is_idempotent() || policy.non_idempotent);
        let started = Instant::now();
        let mut tried: u128 = 0;
        let mut last = Failure::NoServer;
        let mut body_pending = !replayable;
        self.x.routed(up); // metrics
        for n in 0..upstream.tries {
            let pinned = if n == 0 {
                self.sticky_slot(upstream)
            } else {
                None
            };
            let (i, _active) = match pinned.or_else(|| self.pick_slot(up, upstream, tried)) {
                Some(slot) => slot,
                None => match upstream.queue {
                    Some(q) if self.all_busy(upstream, tried) => {
                        match self.wait_for_slot(up, upstream, q, tried).await {
                            Ok(slot) => slot,
                            Err(end) => return self.queue_refused(end, req, body_pending).await,
                        }
                    }
                    _ => break,
                },
            };
            if i < 128 {
                tried |= 1u128 << i;
            }
            let in_time = |t: Option<Duration>| t.is_none_or(|t| started.elapsed() < t);
            let may_retry = n + 1 < upstream.tries
                && in_time(upstream.retry_timeout)
                && self.alternative_exists(upstream, tried);
            let server = &upstream.servers[i];
            self.x.attempt(up, server.id); // metrics
            let state = self.w.shared.state.get(server.id);
            if let Some(st) = &upstream.sticky {
                let repin = self.sticky_pref != Some(i);
                self.set_cookie = server.set_cookie.as_deref().filter(|_| repin);
                self.cookie_nocache = repin && st.nocache;
            }
            let retry_status = may_retry && resendable;
            let failed = match self
                .attempt(upstream, server, state, req, replayable, retry_status)
                .await
            {
                Attempt::Done(next) => return next,
                Attempt::ClientGone => return Next::Close,
                Attempt::ClientError(status) => {
                    self.send_error(status, true).await;
                    return Next::Close;
                }
                Attempt::Failed(f) => f,
            };
            let failure = failed.failure();
            match failed {
                Failed::Status(code) => log::debug!(
                    "server {} of upstream {} answered {code}: trying another",
                    server.name,
                    upstream.name
                ),
                _ => self.passive_failure(upstream, server, state, failure),
            }
            last = failure;
            let timeout = failure == Failure::UpstreamTimeout;
            let allowed_by_policy = if timeout {
                policy.timeout
            } else {
                policy.error
            };
            let retry = match failed {
                Failed::Connect(_) => allowed_by_policy,
                Failed::NoResponse(_) => allowed_by_policy && resendable,
                Failed::Status(_) => true,
                Failed::BodySend(_) | Failed::BadResponse => false,
            };
            if matches!(failed, Failed::BodySend(_)) {
                // The body was partly consumed from the client: the connection cannot be
                // resynchronised.
                body_pending = true;
            }
            if !(retry && may_retry) {
                break;
            }
        }
        self.refuse(last, req, body_pending).await
    }

    /// The server the sticky cookie names, with a slot, if it may take the request: usable,
    /// or draining but up (draining servers keep their existing sessions).
    fn sticky_slot(&self, upstream: &'a Upstream) -> Option<(usize, Active<'a>)> {
        let i = self.sticky_pref?;
        let server = upstream.servers.get(i)?;
        let st = self.w.shared.state.get(server.id);
        let now = now_ms();
        let eligible = st.usable(now) || (st.admin() == AdminState::Drain && st.up(now));
        if !eligible {
            return None;
        }
        st.try_begin(server.max_conns).map(|a| (i, a))
    }

    /// 503 with Retry-After: the queue was full, or the wait timed out.
    async fn queue_refused(&mut self, end: QueueEnd, req: &Req, body_pending: bool) -> Next {
        let why = match end {
            QueueEnd::Full => "full",
            QueueEnd::Timeout => "timeout",
        };
        log::debug!("{}: queue {why}: 503", self.peer);
        let close = !req.keep_alive
            || self.w.conns.closing()
            || (body_pending && req.body != http1::RequestBody::None);
        self.send_error_with(503, close, &[(b"Retry-After", b"1")])
            .await;
        if close {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Passive health (nginx `max_fails` / `fail_timeout`).
    fn passive_failure(
        &self,
        upstream: &Upstream,
        server: &Server,
        state: &ServerState,
        failure: Failure,
    ) {
        if failure.is_server_fault()
            && state.record_failure(now_ms(), server.max_fails, server.fail_timeout)
        {
            log::warn!(
                "server {} ({}) of upstream {} marked down for {:?}: {failure:?}",
                server.name,
                server.addr,
                upstream.name,
                server.fail_timeout
            );
        }
    }

    /// Whether a server not yet tried could take the request (without moving any balancer).
    fn alternative_exists(&self, upstream: &Upstream, tried: u128) -> bool {
        let view = View {
            upstream,
            table: &self.w.shared.state,
            now: now_ms(),
            tried,
        };
        (0..view.len()).any(|i| view.usable(i))
    }

    pub(super) fn pick(&self, up: UpstreamId, upstream: &Upstream, tried: u128) -> Option<usize> {
        let view = View {
            upstream,
            table: &self.w.shared.state,
            now: now_ms(),
            tried,
        };
        let ctx = PickCtx {
            client_ip: self.client_ip,
            key: (!self.key.is_empty()).then_some(&self.key[..]),
        };
        self.w.refresh_balancers();
        let mut balancers = self.w.balancers.borrow_mut();
        balancers.get_mut(up.0 as usize)?.pick(&view, &ctx)
    }

    /// One server: a pooled connection (retried once on a fresh one if found dead before any
    /// response byte) or a new one.
    async fn attempt(
        &mut self,
        upstream: &Upstream,
        server: &Server,
        state: &ServerState,
        req: &Req,
        replayable: bool,
        retry_status: bool,
    ) -> Attempt {
        let t = self.config.timeouts;
        // A PROXY header belongs to one client: such connections are never shared.
        let mut allow_pooled = upstream.send_proxy_protocol.is_none();
        loop {
            let pooled = if allow_pooled {
                // A pooled connection with unread bytes or a close pending is not reused.
                let pooled = self.w.pool.borrow_mut().take(server.id);
                pooled.filter(Stream::is_quiet)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(s) => s,
                None => match Stream::connect_upstream(
                    server.addr,
                    t.upstream_connect,
                    self.w.shared.tls.client(server.id, server.addr),
                )
                .await
                {
                    Ok(s) => {
                        self.w.pool.borrow_mut().opened += 1;
                        s
                    }
                    Err(e) => {
                        log::debug!("connect to {} failed: {e}", server.addr);
                        return Attempt::Failed(Failed::Connect(Failure::from_io(&e)));
                    }
                },
            };
            if let (Some(v), false) = (upstream.send_proxy_protocol, reused) {
                if let Err(e) = self.send_proxy_header(&mut up, v).await {
                    return Attempt::Failed(Failed::Connect(Failure::from_io(&e)));
                }
            }
            self.w.metrics.upstream_conn(server.id, reused); // metrics
            let sent_at = Instant::now();
            if let Err(e) = up.write_all(&self.out, t.upstream_send).await {
                if reused && replayable {
                    allow_pooled = false;
                    continue;
                }
                return Attempt::Failed(Failed::NoResponse(Failure::from_io(&e)));
            }
            if !replayable {
                if req.expect_continue && req.version == Version::Http11 && self.cbuf.is_empty() {
                    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
                    if self
                        .client
                        .write_all(CONTINUE, t.client_send)
                        .await
                        .is_err()
                    {
                        return Attempt::ClientGone;
                    }
                }
                match self.send_body(&mut up, req.body).await {
                    Ok(()) => {}
                    Err(BodyEnd::Client) => return Attempt::ClientGone,
                    Err(BodyEnd::ClientTimeout) => return Attempt::ClientError(408),
                    Err(BodyEnd::ClientInvalid) => return Attempt::ClientError(400),
                    Err(BodyEnd::Upstream(f)) => return Attempt::Failed(Failed::BodySend(f)),
                }
            }
            match self.read_response_head(&mut up, req).await {
                Ok(()) => {
                    let latency = sent_at.elapsed().as_nanos() as u64;
                    self.x.upstream_time(latency); // metrics
                    observe_latency(state, latency);
                    let status = self.rhead.status;
                    if upstream.next_upstream.status_fails(status) {
                        // The server answered, but with a status the operator counts as a
                        // failure (backends' 503 honoured).
                        self.passive_failure(upstream, server, state, Failure::Upstream);
                        if retry_status {
                            return Attempt::Failed(Failed::Status(status));
                        }
                    } else {
                        state.record_success();
                    }
                    return Attempt::Done(self.respond(up, upstream, server, req).await);
                }
                Err(HeadFail::Closed { any_byte: false }) if reused && replayable => {
                    // The server closed an idle pooled connection as we reused it.
                    allow_pooled = false;
                }
                Err(HeadFail::Closed { any_byte: false }) => {
                    return Attempt::Failed(Failed::NoResponse(Failure::Upstream))
                }
                Err(HeadFail::Closed { any_byte: true }) | Err(HeadFail::Bad) => {
                    return Attempt::Failed(Failed::BadResponse)
                }
                Err(HeadFail::Timeout) => {
                    return Attempt::Failed(Failed::NoResponse(Failure::UpstreamTimeout))
                }
                Err(HeadFail::Client) => return Attempt::ClientGone,
            }
        }
    }

    /// Reads the final response head into `ubuf`/`rhead`, relaying informational (1xx)
    /// responses to HTTP/1.1 clients on the way.
    async fn read_response_head(&mut self, up: &mut Stream, req: &Req) -> Result<(), HeadFail> {
        let t = self.config.timeouts;
        let limits = http1::Limits {
            max_head: self.config.limits.max_response_head,
            ..http1::Limits::default()
        };
        self.ubuf.consume(self.ubuf.len());
        let mut any_byte = false;
        let mut informational = 0;
        loop {
            match http1::parse_response(self.ubuf.filled(), &limits, req.method, &mut self.rhead) {
                Ok(Status::Complete) => {
                    let status = self.rhead.status;
                    if !(100..200).contains(&status) || status == 101 {
                        return Ok(());
                    }
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(HeadFail::Bad);
                    }
                    if req.version == Version::Http11 {
                        self.resp.clear();
                        let fwd = http1::ResponseForward {
                            keep_alive: true,
                            client_version: Version::Http11,
                            dechunk: false,
                            set_cookie: None,
                            nocache: false,
                        };
                        http1::write_response_head(
                            self.ubuf.filled(),
                            &self.rhead,
                            &fwd,
                            &mut self.resp,
                        );
                        if self
                            .client
                            .write_all(&self.resp, t.client_send)
                            .await
                            .is_err()
                        {
                            return Err(HeadFail::Client);
                        }
                    }
                    self.ubuf.consume(self.rhead.head_len);
                    self.ubuf.compact();
                }
                Ok(Status::Partial) => {
                    if self.ubuf.is_full() {
                        return Err(HeadFail::Bad);
                    }
                    match self.ubuf.fill(up, t.upstream_read).await {
                        Ok(0) => return Err(HeadFail::Closed { any_byte }),
                        Ok(_) => any_byte = true,
                        Err(e) if is_timeout(&e) => return Err(HeadFail::Timeout),
                        Err(_) => return Err(HeadFail::Closed { any_byte }),
                    }
                }
                Err(e) => {
                    log::warn!("invalid response head from upstream: {e:?}");
                    return Err(HeadFail::Bad);
                }
            }
        }
    }

    /// The response phase: head and body to the client; the connection back to the pool
    /// when the exchange was clean.
    async fn respond(
        &mut self,
        mut up: Stream,
        upstream: &Upstream,
        server: &Server,
        req: &Req,
    ) -> Next {
        let closing = self.w.conns.closing();
        let rbody = self.rhead.body;
        if self.rhead.status == 101 {
            if !req.upgrade {
                // A 101 we did not ask for is a protocol error.
                log::warn!(
                    "upstream {} answered 101 without an Upgrade request",
                    server.addr
                );
                self.send_error(502, true).await;
                return Next::Close;
            }
            self.resp.clear();
            let fwd = http1::ResponseForward {
                keep_alive: true,
                client_version: req.version,
                dechunk: false,
                set_cookie: self.set_cookie,
                nocache: false,
            };
            http1::write_response_head(self.ubuf.filled(), &self.rhead, &fwd, &mut self.resp);
            self.ubuf.consume(self.rhead.head_len);
            self.tunnel(&mut up).await;
            return Next::Close;
        }
        let dechunk = rbody == ResponseBody::Chunked && req.version == Version::Http10;
        let keep_alive =
            req.keep_alive && !closing && rbody != ResponseBody::UntilClose && !dechunk;
        self.resp.clear();
        let fwd = http1::ResponseForward {
            keep_alive,
            client_version: req.version,
            dechunk,
            set_cookie: self.set_cookie,
            nocache: self.cookie_nocache,
        };
        http1::write_response_head(self.ubuf.filled(), &self.rhead, &fwd, &mut self.resp);
        self.x.status(self.rhead.status); // metrics
        self.ubuf.consume(self.rhead.head_len);
        let upstream_reusable = self.rhead.keep_alive && upstream.send_proxy_protocol.is_none();
        match self.relay_body(&mut up, rbody, dechunk).await {
            Ok(()) => {
                if upstream_reusable && self.ubuf.is_empty() {
                    self.w.pool.borrow_mut().put(server.id, up);
                }
                if keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            Err(end) => {
                if let BodyEnd::Upstream(f) = end {
                    log::debug!("response body from {} cut short: {f:?}", server.addr);
                }
                Next::Close
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Failed {
    /// Nothing was sent: connect failed.
    Connect(Failure),
    /// The request was (maybe partly) sent; no response byte arrived.
    NoResponse(Failure),
    /// The request body could not be sent completely: never retried.
    BodySend(Failure),
    /// Response bytes arrived but were not a valid response: never retried.
    BadResponse,
    /// A response status listed in `next_upstream` (e.g. 503), discarded for a retry.
    Status(u16),
}

impl Failed {
    fn failure(self) -> Failure {
        match self {
            Failed::Connect(f) | Failed::NoResponse(f) | Failed::BodySend(f) => f,
            Failed::BadResponse => Failure::BadResponse,
            Failed::Status(_) => Failure::Upstream,
        }
    }
}

enum HeadFail {
    Closed { any_byte: bool },
    Timeout,
    Bad,
    Client,
}

fn observe_latency(state: &ServerState, sample_ns: u64) {
    let now = now_ms();
    let prev = state.ewma_ns.load(Relaxed);
    let prev_at = state.ewma_at_ms.load(Relaxed);
    let elapsed_ns = now.saturating_sub(prev_at).saturating_mul(1_000_000);
    let next = if prev == 0 {
        sample_ns
    } else {
        balance::ewma_next(prev, sample_ns, elapsed_ns, EWMA_DECAY_NS)
    };
    state.ewma_ns.store(next.max(1), Relaxed);
    state.ewma_at_ms.store(now, Relaxed);
}
