//! Body streaming in both directions, by the message's framing. Never buffers a whole body:
//! at most one buffer of bytes is in flight.

use super::error::{is_timeout, Failure};
use super::Conn;
use crate::engine::Stream;
use crate::http1::{self, ChunkedDecoder, RequestBody, ResponseBody};

/// Why a body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyEnd {
    /// The client closed or reset.
    Client,
    ClientTimeout,
    /// The client's chunked framing is invalid.
    ClientInvalid,
    /// The upstream failed, closed early, or sent invalid framing.
    Upstream(Failure),
}

impl Conn<'_> {
    /// Copies the request body from the client (buffered bytes first) to the upstream.
    pub(super) async fn send_body(
        &mut self,
        up: &mut Stream,
        body: RequestBody,
    ) -> Result<(), BodyEnd> {
        let t = self.config.timeouts;
        match body {
            RequestBody::None => Ok(()),
            RequestBody::Length(mut left) => {
                while left > 0 {
                    if self.cbuf.is_empty() {
                        self.fill_client().await?;
                    }
                    let n = (self.cbuf.len() as u64).min(left) as usize;
                    up.write_all(&self.cbuf.filled()[..n], t.upstream_send)
                        .await
                        .map_err(|e| BodyEnd::Upstream(Failure::from_io(&e)))?;
                    self.cbuf.consume(n);
                    left -= n as u64;
                }
                Ok(())
            }
            RequestBody::Chunked => {
                let mut dec = ChunkedDecoder::new();
                loop {
                    if self.cbuf.is_empty() {
                        self.fill_client().await?;
                    }
                    let p = dec
                        .advance(self.cbuf.filled(), &mut |_| {})
                        .map_err(|_| BodyEnd::ClientInvalid)?;
                    if p.consumed > 0 {
                        up.write_all(&self.cbuf.filled()[..p.consumed], t.upstream_send)
                            .await
                            .map_err(|e| BodyEnd::Upstream(Failure::from_io(&e)))?;
                        self.cbuf.consume(p.consumed);
                    }
                    if p.done {
                        return Ok(());
                    }
                    if p.consumed == 0 {
                        // The decoder needs more bytes than are buffered to move on.
                        if self.cbuf.is_full() {
                            return Err(BodyEnd::ClientInvalid);
                        }
                        self.fill_client().await?;
                    }
                }
            }
        }
    }

    async fn fill_client(&mut self) -> Result<(), BodyEnd> {
        match self
            .cbuf
            .fill(&mut self.client, self.config.timeouts.client_body)
            .await
        {
            Ok(0) => Err(BodyEnd::Client),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(BodyEnd::ClientTimeout),
            Err(_) => Err(BodyEnd::Client),
        }
    }

    async fn fill_upstream(&mut self, up: &mut Stream) -> Result<usize, BodyEnd> {
        match self.ubuf.fill(up, self.config.timeouts.upstream_read).await {
            Ok(n) => Ok(n),
            Err(e) => Err(BodyEnd::Upstream(Failure::from_io(&e))),
        }
    }

    async fn send_resp(&mut self) -> Result<(), BodyEnd> {
        let r = self
            .client
            .write_all(&self.resp, self.client_send_timeout())
            .await;
        self.resp.clear();
        r.map_err(|_| BodyEnd::Client)
    }

    /// Sends `self.resp` (the response head) and the body after it. The first body bytes
    /// ride in the same write as the head.
    pub(super) async fn relay_body(
        &mut self,
        up: &mut Stream,
        body: ResponseBody,
        dechunk: bool,
    ) -> Result<(), BodyEnd> {
        match body {
            ResponseBody::None => self.send_resp().await,
            ResponseBody::Length(mut left) => loop {
                let n = (self.ubuf.len() as u64).min(left) as usize;
                self.resp.extend_from_slice(&self.ubuf.filled()[..n]);
                self.ubuf.consume(n);
                left -= n as u64;
                self.send_resp().await?;
                if left == 0 {
                    return Ok(());
                }
                if self.fill_upstream(up).await? == 0 {
                    return Err(BodyEnd::Upstream(Failure::Upstream));
                }
            },
            ResponseBody::UntilClose => loop {
                let n = self.ubuf.len();
                self.resp.extend_from_slice(self.ubuf.filled());
                self.ubuf.consume(n);
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
                    let input = self.ubuf.filled();
                    let resp = &mut self.resp;
                    let p = if dechunk {
                        dec.advance(input, &mut |r| resp.extend_from_slice(&input[r]))
                    } else {
                        dec.advance(input, &mut |_| {})
                    };
                    let Ok(p) = p else {
                        if !head_sent {
                            self.resp.clear();
                            http1::write_error(502, true, &[], &mut self.resp);
                            self.send_resp().await?;
                        }
                        return Err(BodyEnd::Upstream(Failure::BadResponse));
                    };
                    let input = self.ubuf.filled();
                    if !dechunk {
                        self.resp.extend_from_slice(&input[..p.consumed]);
                    }
                    self.ubuf.consume(p.consumed);
                    if !self.resp.is_empty() {
                        self.send_resp().await?;
                        head_sent = true;
                    }
                    if p.done {
                        return Ok(());
                    }
                    if p.consumed == 0 && self.ubuf.is_full() {
                        return Err(BodyEnd::Upstream(Failure::BadResponse));
                    }
                    if self.fill_upstream(up).await? == 0 {
                        return Err(BodyEnd::Upstream(Failure::Upstream));
                    }
                }
            }
        }
    }
}
