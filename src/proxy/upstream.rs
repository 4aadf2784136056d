//! The attempt phase: pick a server, get a connection, send the request, read the response
//! head; then hand over to the response phase.

use super::client::Tried;
use super::error::{self, is_timeout, Bad, Cause, Failure, Side};
use super::queue::Slot;
use super::{BodyLeft, Conn, Next, Req};
use crate::balance::{self, PickCtx, ServerView};
use crate::config::{Config, Server, Upstream, UpstreamId};
use crate::engine::{self, Stream};
use crate::http1::{self, ResponseBody, Status, Version};
use crate::state::{now_ms, ServerState, StateTable};
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
    pub(super) tried: &'a Tried,
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
        let tried = self.tried.contains(i);
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
    /// Failed before a response reached the client: whether another server may be tried is
    /// [`error::retry`]'s decision.
    Failed(Failure),
}

impl<'a> Conn<'a> {
    /// The attempt phase: up to `tries` servers, each picked by the balancer (or the sticky
    /// cookie first), waiting in the upstream's queue when every usable server is full.
    pub(super) async fn attempts(&mut self, up: UpstreamId, req: &Req, body: error::Body) -> Next {
        let config: &'a Config = self.config;
        let upstream = &config.upstreams[up.0 as usize];
        let policy = upstream.next_upstream;
        // For `retry_timeout` only: the core's loop-pass time is precise enough.
        let started = crate::engine::now();
        self.r.tried.reset(upstream.servers.len());
        let mut last = Failure::NoServer;
        let mut left = match body {
            error::Body::Replayable => BodyLeft::Read,
            error::Body::Streamed => BodyLeft::Unread,
        };
        self.r.x.routed(up); // metrics
        for made in 1..=upstream.tries {
            let pinned = if made == 1 {
                self.sticky_slot(up, upstream)
            } else {
                None
            };
            let slot = match pinned.or_else(|| self.pick_slot(up, upstream)) {
                Some(slot) => slot,
                None => match upstream.queue {
                    Some(q) if self.all_busy(upstream) => {
                        match self.wait_for_slot(up, upstream, q).await {
                            Ok(slot) => slot,
                            Err(f) => return self.refuse(f, req, left).await,
                        }
                    }
                    _ => break,
                },
            };
            let i = slot.index;
            self.r.tried.insert(i);
            let facts = error::Attempts {
                idempotent: req.method.is_idempotent(),
                body,
                made,
                tries: upstream.tries,
                in_time: upstream.retry_timeout.is_none_or(|t| started.elapsed() < t),
                alternative: self.alternative_exists(upstream),
            };
            let server = &upstream.servers[i];
            self.r.x.attempt(up, server.id); // metrics
            if let Some(st) = &upstream.sticky {
                let repin = self.sticky_pref.map(|(p, _)| p) != Some(i);
                self.set_cookie.clear();
                if repin {
                    let now = u32::try_from(crate::state::unix_secs()).unwrap_or(u32::MAX);
                    let tls = self.c.stream.is_tls();
                    st.set_cookie(&server.cookie, now, tls, &mut self.set_cookie);
                }
                self.cookie_nocache = repin && st.nocache;
            }
            // A listed status is only worth reporting as a failure when it can be retried.
            let status_retry = if facts.another_allowed() && facts.resendable(&policy) {
                StatusRetry::Allowed
            } else {
                StatusRetry::No
            };
            let f = match self
                .attempt(upstream, server, req, body, status_retry)
                .await
            {
                Attempt::Done(next) => return next,
                Attempt::Failed(f) => f,
            };
            drop(slot);
            match f.side() {
                Side::Client => {
                    // The client failed while sending its body: the connection cannot be
                    // resynchronised, whatever is answered.
                    self.answer(f, Next::Close).await;
                    return Next::Close;
                }
                Side::Server => self.passive_failure(upstream, server, f),
                Side::Proxy => {}
            }
            if let Failure::Status(code) = f {
                log::debug!(
                    "server {} of upstream {} answered {code}: trying another",
                    server.name,
                    upstream.name
                );
            }
            if matches!(f, Failure::BodySend(_)) {
                // Part of the body was consumed from the client.
                left = BodyLeft::Unread;
            }
            last = f;
            if !error::retry(f, &policy, &facts) {
                break;
            }
        }
        self.refuse(last, req, left).await
    }

    /// The server the sticky cookie names, with a slot, if it may take the request: usable,
    /// or draining but up for a session it had before the drain began (a cookie issued
    /// earlier; the issue time is under the MAC, so no client can claim an older one). A
    /// backup server's cookie counts only while backups serve: no primary is usable.
    fn sticky_slot(&self, up: UpstreamId, upstream: &'a Upstream) -> Option<Slot<'a>> {
        let (i, issued) = self.sticky_pref?;
        let server = upstream.servers.get(i)?;
        let st = self.w.shared.state.get(server.id);
        let now = now_ms();
        let existing_session = |since: u64| u64::from(issued) <= since;
        let eligible =
            st.usable(now) || (st.up(now) && st.drain_since().is_some_and(existing_session));
        if !eligible || (server.backup && self.primary_usable(upstream)) {
            return None;
        }
        self.take_slot(up, upstream, i)
    }

    /// Whether a primary (non-backup) server could take a request now.
    fn primary_usable(&self, upstream: &'a Upstream) -> bool {
        let view = self.view(upstream);
        (0..view.len()).any(|i| !view.backup(i) && view.usable(i))
    }

    /// Passive health (nginx `max_fails` / `fail_timeout`): counts the failure kinds the
    /// upstream's `next_upstream` lists; an invalid response is logged and counted in a metric
    /// either way.
    fn passive_failure(&self, upstream: &Upstream, server: &Server, f: Failure) {
        let state = self.w.shared.state.get(server.id);
        if let Failure::BadResponse(bad) = f {
            self.w.shared.metrics.invalid_response(server.id);
            // A client can ask for a route that answers badly at will: one line per 10 s per
            // core, with the count; the metric has every one.
            thread_local! {
                static THROTTLE: engine::Throttle = const {
                    engine::Throttle::new(Duration::from_secs(10))
                };
            }
            if let Some(skipped) = THROTTLE.with(engine::Throttle::allow) {
                log::warn!(
                    "server {} ({}) of upstream {} sent an invalid response ({bad:?}); \
                     {skipped} more invalid responses on this core since the last line",
                    server.name,
                    server.addr,
                    upstream.name,
                );
            }
        }
        let now = now_ms();
        if f.counts_against_server(&upstream.next_upstream)
            && state.record_failure(now, server.max_fails, server.fail_timeout)
        {
            crate::state::log_change(
                module_path!(),
                log::Level::Warn,
                &upstream.name,
                server,
                state,
                now,
                format_args!(
                    " for {:?}: {} failures in {:?} (max_fails, fail_timeout), the last {f:?}",
                    server.fail_timeout, server.max_fails, server.fail_timeout
                ),
            );
        }
    }

    /// The servers of `upstream` as the balancer sees them for this request.
    pub(super) fn view(&self, upstream: &'a Upstream) -> View<'_> {
        View {
            upstream,
            table: &self.w.shared.state,
            now: now_ms(),
            tried: &self.r.tried,
        }
    }

    /// Whether a server not yet tried could take the request (without moving any balancer).
    fn alternative_exists(&self, upstream: &'a Upstream) -> bool {
        let view = self.view(upstream);
        (0..view.len()).any(|i| view.usable(i))
    }

    pub(super) fn pick(&self, up: UpstreamId, upstream: &'a Upstream) -> Option<usize> {
        let view = self.view(upstream);
        let ctx = PickCtx {
            client_ip: self.r.client_ip,
            key: (!self.r.key.is_empty()).then_some(&self.r.key[..]),
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
        req: &Req,
        body: error::Body,
        status_retry: StatusRetry,
    ) -> Attempt {
        let t = self.config.timeouts;
        let state = self.w.shared.state.get(server.id);
        let replayable = body == error::Body::Replayable;
        self.acquire_upstream();
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
                        return Attempt::Failed(Failure::server_io(&e, Failure::Connect));
                    }
                },
            };
            if let (Some(v), false) = (upstream.send_proxy_protocol, reused) {
                if let Err(e) = self.send_proxy_header(&mut up, v).await {
                    return Attempt::Failed(Failure::server_io(&e, Failure::Connect));
                }
            }
            self.w.metrics.upstream_conn(server.id, reused); // metrics
            let sent_at = Instant::now();
            if let Err(e) = up.write_all(&self.r.out, t.upstream_send).await {
                if reused && replayable {
                    allow_pooled = false;
                    continue;
                }
                return Attempt::Failed(Failure::server_io(&e, Failure::NoResponse));
            }
            if !replayable {
                if req.expect_continue && req.version == Version::Http11 && self.c.buf.is_empty() {
                    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
                    if self
                        .c
                        .stream
                        .write_all(CONTINUE, t.client_send)
                        .await
                        .is_err()
                    {
                        return Attempt::Failed(Failure::ClientGone);
                    }
                }
                if let Err(f) = self.send_body(&mut up, req.body, req.max_body).await {
                    return Attempt::Failed(f);
                }
            }
            match self.read_response_head(&mut up, req).await {
                Ok(()) => {
                    let latency = sent_at.elapsed().as_nanos() as u64;
                    self.r.x.upstream_time(latency); // metrics
                    observe_latency(state, latency);
                    let status = self.r.rhead.status;
                    if upstream.next_upstream.status_fails(status) {
                        // The server answered, but with a status the operator counts as a
                        // failure (backends' 503 honoured).
                        let f = Failure::Status(status);
                        if status_retry == StatusRetry::Allowed {
                            return Attempt::Failed(f);
                        }
                        self.passive_failure(upstream, server, f);
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
                    return Attempt::Failed(Failure::NoResponse(Cause::Error))
                }
                Err(HeadFail::Closed { any_byte: true }) => {
                    return Attempt::Failed(Failure::BadResponse(Bad::Truncated))
                }
                Err(HeadFail::Bad(bad)) => return Attempt::Failed(Failure::BadResponse(bad)),
                Err(HeadFail::Timeout) => {
                    return Attempt::Failed(Failure::NoResponse(Cause::Timeout))
                }
                Err(HeadFail::Client) => return Attempt::Failed(Failure::ClientGone),
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
        self.r.ubuf.consume(self.r.ubuf.len());
        let mut any_byte = false;
        let mut informational = 0;
        loop {
            match http1::parse_response(
                self.r.ubuf.filled(),
                &limits,
                req.method,
                &mut self.r.rhead,
            ) {
                Ok(Status::Complete) => {
                    let status = self.r.rhead.status;
                    if !(100..200).contains(&status) || status == 101 {
                        return Ok(());
                    }
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(HeadFail::Bad(Bad::TooManyInformational));
                    }
                    if req.version == Version::Http11 {
                        self.r.resp.clear();
                        let fwd = http1::ResponseForward {
                            keep_alive: true,
                            client_version: Version::Http11,
                            dechunk: false,
                            set_cookie: None,
                            nocache: false,
                            edits: None,
                        };
                        http1::write_response_head(
                            self.r.ubuf.filled(),
                            &self.r.rhead,
                            &fwd,
                            &mut self.r.resp,
                        );
                        if self
                            .c
                            .stream
                            .write_all(&self.r.resp, t.client_send)
                            .await
                            .is_err()
                        {
                            return Err(HeadFail::Client);
                        }
                    }
                    self.r.ubuf.consume(self.r.rhead.head_len);
                    self.r.ubuf.compact();
                }
                Ok(Status::Partial) => {
                    if self.r.ubuf.is_full() {
                        return Err(HeadFail::Bad(Bad::Head));
                    }
                    match self.r.ubuf.fill(up, t.upstream_read).await {
                        Ok(0) => return Err(HeadFail::Closed { any_byte }),
                        Ok(_) => any_byte = true,
                        Err(e) if is_timeout(&e) => return Err(HeadFail::Timeout),
                        Err(_) => return Err(HeadFail::Closed { any_byte }),
                    }
                }
                Err(e) => {
                    log::debug!("invalid response head from upstream: {e:?}");
                    return Err(HeadFail::Bad(Bad::Head));
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
        let closing = super::closing(self.w, self.c.listener);
        let rbody = self.r.rhead.body;
        if self.r.rhead.status == 101 {
            if !req.upgrade {
                // A 101 we did not ask for is a protocol error.
                let f = Failure::BadResponse(Bad::UnaskedUpgrade);
                self.passive_failure(upstream, server, f);
                self.answer(f, Next::Close).await;
                return Next::Close;
            }
            self.r.resp.clear();
            let fwd = http1::ResponseForward {
                keep_alive: true,
                client_version: req.version,
                dechunk: false,
                set_cookie: (!self.set_cookie.is_empty()).then_some(&self.set_cookie[..]),
                nocache: false,
                edits: None,
            };
            http1::write_response_head(self.r.ubuf.filled(), &self.r.rhead, &fwd, &mut self.r.resp);
            self.r.ubuf.consume(self.r.rhead.head_len);
            self.tunnel(&mut up).await;
            return Next::Close;
        }
        let dechunk = rbody == ResponseBody::Chunked && req.version == Version::Http10;
        let keep_alive =
            req.keep_alive && !closing && rbody != ResponseBody::UntilClose && !dechunk;
        self.r.resp.clear();
        let config: &Config = self.config;
        let edits = config.routes[self.route].traffic.response_headers.as_ref();
        let (host, uri) = self.vars.split_at(self.vars_host.min(self.vars.len()));
        let vars = http1::Vars {
            remote_addr: self.r.client_ip,
            host,
            request_id: self.r.x.request_id().unwrap_or_default(),
            https: self.c.stream.is_tls(),
            request_uri: uri,
            server_name: server.name.as_bytes(),
        };
        let fwd = http1::ResponseForward {
            keep_alive,
            client_version: req.version,
            dechunk,
            set_cookie: (!self.set_cookie.is_empty()).then_some(&self.set_cookie[..]),
            nocache: self.cookie_nocache,
            edits: edits.map(|e| (e, &vars)),
        };
        http1::write_response_head(self.r.ubuf.filled(), &self.r.rhead, &fwd, &mut self.r.resp);
        self.r.x.status(self.r.rhead.status); // metrics
        self.r.ubuf.consume(self.r.rhead.head_len);
        let upstream_reusable = self.r.rhead.keep_alive && upstream.send_proxy_protocol.is_none();
        match self.relay_body(&mut up, rbody, dechunk).await {
            Ok(()) => {
                if upstream_reusable && self.r.ubuf.is_empty() {
                    self.w.pool.borrow_mut().put(server.id, up);
                }
                if keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            Err(f) => {
                match f {
                    Failure::BadResponse(_) => self.passive_failure(upstream, server, f),
                    Failure::ResponseCut(_) => {
                        log::debug!("response body from {} cut short: {f:?}", server.addr)
                    }
                    _ => {}
                }
                Next::Close
            }
        }
    }
}

/// How reading a response head failed.
enum HeadFail {
    Closed { any_byte: bool },
    Timeout,
    Bad(Bad),
    Client,
}

/// Whether a response status listed in `next_upstream` may be discarded for a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatusRetry {
    Allowed,
    No,
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
