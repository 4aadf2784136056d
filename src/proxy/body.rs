//! Body streaming in both directions, by the message's framing. Never buffers a whole body:
//! at most one buffer of bytes is in flight.

use super::error::{is_timeout, Bad, Cause, Failure};
use super::{Conn, Next};
use crate::engine::Stream;
use crate::http1::{ChunkedDecoder, RequestBody, ResponseBody};
use std::time::{Duration, Instant};

impl Conn<'_> {
    /// Copies the request body from the client (buffered bytes first) to the upstream.
    /// `max`: the route's `client_max_body_size`; a chunked body whose data outgrows it stops
    /// before the bytes that pass the limit are sent ([`Failure::BodyTooLarge`]). A declared
    /// length over it never reaches here (refused before the attempt).
    pub(super) async fn send_body(
        &mut self,
        up: &mut Stream,
        body: RequestBody,
        max: Option<u64>,
    ) -> Result<(), Failure> {
        let t = self.config.timeouts;
        match body {
            RequestBody::None => Ok(()),
            RequestBody::Length(mut left) => {
                while left > 0 {
                    if self.c.buf.is_empty() {
                        self.fill_client().await?;
                    }
                    let n = (self.c.buf.len() as u64).min(left) as usize;
                    up.write_all(&self.c.buf.filled()[..n], t.upstream_send)
                        .await
                        .map_err(|e| Failure::server_io(&e, Failure::BodySend))?;
                    self.c.buf.consume(n);
                    left -= n as u64;
                }
                Ok(())
            }
            RequestBody::Chunked => {
                let mut dec = ChunkedDecoder::new();
                let mut data = 0u64;
                loop {
                    if self.c.buf.is_empty() {
                        self.fill_client().await?;
                    }
                    let p = dec
                        .advance(self.c.buf.filled(), &mut |r| data += r.len() as u64)
                        .map_err(|_| Failure::BodyInvalid)?;
                    if max.is_some_and(|m| data > m) {
                        return Err(Failure::BodyTooLarge);
                    }
                    if p.consumed > 0 {
                        up.write_all(&self.c.buf.filled()[..p.consumed], t.upstream_send)
                            .await
                            .map_err(|e| Failure::server_io(&e, Failure::BodySend))?;
                        self.c.buf.consume(p.consumed);
                    }
                    if p.done {
                        return Ok(());
                    }
                    if p.consumed == 0 {
                        // The decoder needs more bytes than are buffered to move on.
                        if self.c.buf.is_full() {
                            return Err(Failure::BodyInvalid);
                        }
                        self.fill_client().await?;
                    }
                }
            }
        }
    }

    async fn fill_client(&mut self) -> Result<(), Failure> {
        match self
            .c
            .buf
            .fill(&mut self.c.stream, self.config.timeouts.client_body)
            .await
        {
            Ok(0) => Err(Failure::ClientGone),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Failure::BodyTimeout),
            Err(_) => Err(Failure::ClientGone),
        }
    }

    async fn fill_upstream(&mut self, up: &mut Stream) -> Result<usize, Failure> {
        match self
            .r
            .ubuf
            .fill(up, self.config.timeouts.upstream_read)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) => Err(Failure::server_io(&e, Failure::ResponseCut)),
        }
    }

    async fn send_resp(&mut self) -> Result<(), Failure> {
        let Some(timeout) = self.send_budget(self.r.resp.len()) else {
            self.r.resp.clear();
            return Err(Failure::SlowReader);
        };
        let r = self.c.stream.write_all(&self.r.resp, timeout).await;
        self.r.resp.clear();
        r.map_err(|e| {
            if is_timeout(&e) && timeout < self.client_send_timeout() {
                Failure::SlowReader
            } else {
                Failure::ClientGone
            }
        })
    }

    /// The time the next write of `n` response bytes may take: `timeouts.client_send`, and no
    /// more than what keeps the response at `limits.min_send_rate` on average after its first
    /// `client_send` (nginx has `send_timeout` per write only; a client reading a few bytes
    /// now and then would otherwise hold the server connection, and its `max_conns` slot, as
    /// long as it likes). None: the time is up.
    fn send_budget(&mut self, n: usize) -> Option<Duration> {
        let per_write = self.client_send_timeout();
        let Some(rate) = self.config.limits.min_send_rate else {
            return Some(per_write);
        };
        let (started, sent) = self.sending.get_or_insert((Instant::now(), 0));
        *sent += n as u64;
        let allowed = per_write + Duration::from_secs_f64(*sent as f64 / rate as f64);
        let left = allowed.saturating_sub(started.elapsed());
        (!left.is_zero()).then(|| left.min(per_write))
    }

    /// Sends `self.r.resp` (the response head) and the body after it. The first body bytes
    /// ride in the same write as the head.
    pub(super) async fn relay_body(
        &mut self,
        up: &mut Stream,
        body: ResponseBody,
        dechunk: bool,
    ) -> Result<(), Failure> {
        match body {
            ResponseBody::None => self.send_resp().await,
            ResponseBody::Length(mut left) => loop {
                let n = (self.r.ubuf.len() as u64).min(left) as usize;
                self.r.resp.extend_from_slice(&self.r.ubuf.filled()[..n]);
                self.r.ubuf.consume(n);
                left -= n as u64;
                self.send_resp().await?;
                if left == 0 {
                    return Ok(());
                }
                if self.fill_upstream(up).await? == 0 {
                    return Err(Failure::ResponseCut(Cause::Error));
                }
            },
            ResponseBody::UntilClose => loop {
                let n = self.r.ubuf.len();
                self.r.resp.extend_from_slice(self.r.ubuf.filled());
                self.r.ubuf.consume(n);
                self.send_resp().await?;
                if self.fill_upstream(up).await? == 0 {
                    return Ok(());
                }
            },
            ResponseBody::Chunked => {
                let mut dec = ChunkedDecoder::new();
                // Until the head is sent, a body found invalid can still be answered with 502.
                let mut head_sent = false;
                loop {
                    let input = self.r.ubuf.filled();
                    let resp = &mut self.r.resp;
                    let p = if dechunk {
                        dec.advance(input, &mut |r| resp.extend_from_slice(&input[r]))
                    } else {
                        dec.advance(input, &mut |_| {})
                    };
                    let Ok(p) = p else {
                        let f = Failure::BadResponse(Bad::Chunked);
                        if !head_sent {
                            self.answer(f, Next::Close).await;
                        }
                        return Err(f);
                    };
                    let input = self.r.ubuf.filled();
                    if !dechunk {
                        self.r.resp.extend_from_slice(&input[..p.consumed]);
                    }
                    self.r.ubuf.consume(p.consumed);
                    if !self.r.resp.is_empty() {
                        self.send_resp().await?;
                        head_sent = true;
                    }
                    if p.done {
                        return Ok(());
                    }
                    if p.consumed == 0 && self.r.ubuf.is_full() {
                        return Err(Failure::BadResponse(Bad::Chunked));
                    }
                    if self.fill_upstream(up).await? == 0 {
                        return Err(Failure::ResponseCut(Cause::Error));
                    }
                }
            }
        }
    }
}
