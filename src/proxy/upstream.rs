//! The attempt phase: pick a server, get a connection, send the request, read the response
//! head; then hand over to the response phase.

use super::body::BodyEnd;
use super::error::{is_timeout, Failure};
use super::{Conn, Next, Req};
use crate::balance::{self, PickCtx, ServerView};
use crate::config::{Server, Upstream, UpstreamId};
use crate::http1::{self, ResponseBody, Status, Version};
use crate::runtime::io::Stream;
use crate::upstream::state::{now_ms, ServerState, StateTable};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Passive health defaults, as nginx (`max_fails=1 fail_timeout=10s`).
const MAX_FAILS: u32 = 1;
const FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on servers tried for one request.
const MAX_TRIES: usize = 16;
/// More informational (1xx) responses than this before the final one is a hostile server.
const MAX_INFORMATIONAL: usize = 16;
const EWMA_DECAY_NS: u64 = 10_000_000_000;

/// The servers of one upstream as a balancer sees them, with the servers this request has
/// already tried excluded.
struct View<'a> {
    upstream: &'a Upstream,
    table: &'a StateTable,
    now: u64,
    tried: u128,
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
        !tried && self.state(i).usable(self.now)
    }

    fn backup(&self, i: usize) -> bool {
        self.upstream.servers[i].backup
    }

    fn weight(&self, i: usize) -> u32 {
        let st = self.state(i);
        let weight = st.weight.load(Relaxed);
        match self.upstream.slow_start {
            Some(window) => {
                let since = self.now.saturating_sub(st.up_since_ms.load(Relaxed));
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
    /// Failed before any response byte; `retry`: another server may be tried.
    Failed { failure: Failure, retry: bool },
    /// The client failed or went away while sending its body: close without answering.
    ClientGone,
    /// The client sent an invalid or too slow body: answer with this status and close.
    ClientError(u16),
}

impl Conn<'_> {
    pub(super) async fn attempts(&mut self, up: UpstreamId, req: &Req, replayable: bool) -> Next {
        let config = self.config.clone();
        let upstream = &config.upstreams[up.0 as usize];
        let mut tried: u128 = 0;
        let mut last = Failure::NoServer;
        let mut body_pending = !replayable;
        self.x.routed(up); // metrics
        for _ in 0..upstream.servers.len().min(MAX_TRIES) {
            let Some(i) = self.pick(up, upstream, tried) else {
                break;
            };
            if i < 128 {
                tried |= 1u128 << i;
            }
            let server = &upstream.servers[i];
            self.x.attempt(up, server.id); // metrics
            let state = self.w.shared.state.get(server.id);
            let _active = state.begin();
            match self.attempt(server, state, req, replayable).await {
                Attempt::Done(next) => return next,
                Attempt::ClientGone => return Next::Close,
                Attempt::ClientError(status) => {
                    self.send_error(status, true).await;
                    return Next::Close;
                }
                Attempt::Failed { failure, retry } => {
                    if failure.is_server_fault()
                        && state.record_failure(now_ms(), MAX_FAILS, FAIL_TIMEOUT)
                    {
                        log::warn!(
                            "server {} ({}) of upstream {} marked down for {:?}: {failure:?}",
                            server.name,
                            server.addr,
                            upstream.name,
                            FAIL_TIMEOUT
                        );
                    }
                    last = failure;
                    if !replayable {
                        // The body was (partly) consumed from the client: it cannot be sent
                        // again, and the connection cannot be resynchronised.
                        body_pending = true;
                        break;
                    }
                    if !retry {
                        break;
                    }
                }
            }
        }
        self.refuse(last, req, body_pending).await
    }

    fn pick(&self, up: UpstreamId, upstream: &Upstream, tried: u128) -> Option<usize> {
        let view = View {
            upstream,
            table: &self.w.shared.state,
            now: now_ms(),
            tried,
        };
        let ctx = PickCtx {
            client_ip: self.peer.ip(),
            key: (!self.key.is_empty()).then_some(&self.key[..]),
        };
        let mut balancers = self.w.balancers.borrow_mut();
        balancers.get_mut(up.0 as usize)?.pick(&view, &ctx)
    }

    /// One server: a pooled connection (retried once on a fresh one if found dead before any
    /// response byte) or a new one.
    async fn attempt(
        &mut self,
        server: &Server,
        state: &ServerState,
        req: &Req,
        replayable: bool,
    ) -> Attempt {
        let t = self.config.timeouts;
        let idempotent = req.method.is_idempotent();
        let mut allow_pooled = true;
        loop {
            let pooled = if allow_pooled {
                self.w.pool.borrow_mut().take(server.id)
            } else {
                None
            };
            let reused = pooled.is_some();
            let mut up = match pooled {
                Some(s) => s,
                None => match Stream::connect(server.addr, t.upstream_connect).await {
                    Ok(s) => {
                        self.w.pool.borrow_mut().opened += 1;
                        s
                    }
                    Err(e) => {
                        log::debug!("connect to {} failed: {e}", server.addr);
                        // Nothing was sent: always safe to try another server.
                        return Attempt::Failed {
                            failure: Failure::from_io(&e),
                            retry: true,
                        };
                    }
                },
            };
            self.w.metrics.upstream_conn(server.id, reused); // metrics
            let sent_at = Instant::now();
            if let Err(e) = up.write_all(&self.out, t.upstream_send).await {
                if reused && replayable {
                    allow_pooled = false;
                    continue;
                }
                return Attempt::Failed {
                    failure: Failure::from_io(&e),
                    retry: idempotent,
                };
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
                    Err(BodyEnd::Upstream(f)) => {
                        return Attempt::Failed {
                            failure: f,
                            retry: false,
                        }
                    }
                }
            }
            match self.read_response_head(&mut up, req).await {
                Ok(()) => {
                    let latency = sent_at.elapsed().as_nanos() as u64;
                    self.x.upstream_time(latency); // metrics
                    observe_latency(state, latency);
                    state.record_success();
                    return Attempt::Done(self.respond(up, server, req).await);
                }
                Err(HeadFail::Closed { any_byte: false }) if reused && replayable => {
                    // The server closed an idle pooled connection as we reused it.
                    allow_pooled = false;
                }
                Err(HeadFail::Closed { any_byte }) => {
                    return Attempt::Failed {
                        failure: Failure::Upstream,
                        retry: !any_byte && idempotent,
                    }
                }
                Err(HeadFail::Timeout) => {
                    return Attempt::Failed {
                        failure: Failure::UpstreamTimeout,
                        retry: false,
                    }
                }
                Err(HeadFail::Bad) => {
                    return Attempt::Failed {
                        failure: Failure::BadResponse,
                        retry: false,
                    }
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
    async fn respond(&mut self, mut up: Stream, server: &Server, req: &Req) -> Next {
        let closing = self.w.conns.closing();
        let rbody = self.rhead.body;
        if self.rhead.status == 101 {
            // Tunnels are not supported yet: a 101 we did not ask for is a protocol error.
            log::warn!(
                "upstream {} answered 101; tunnels are not supported",
                server.addr
            );
            self.send_error(502, true).await;
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
            set_cookie: None,
            nocache: false,
        };
        http1::write_response_head(self.ubuf.filled(), &self.rhead, &fwd, &mut self.resp);
        self.x.status(self.rhead.status); // metrics
        self.ubuf.consume(self.rhead.head_len);
        let upstream_reusable = self.rhead.keep_alive;
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
