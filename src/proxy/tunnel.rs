//! `101 Switching Protocols`: the client and upstream connections become a byte tunnel
//! (WebSocket) until either side closes or both stay silent for `timeouts.tunnel`.
//!
//! One task serves both directions: it waits until either side is readable (a peek, which
//! consumes nothing, so the losing wait can be dropped safely), then moves what arrived.
//! A write that blocks holds the other direction, which is the backpressure a tunnel wants.
//! The request's `Active` guard lives in `attempts` for the whole tunnel, so least_conn and
//! max_conns count it.

use super::Conn;
use crate::engine::Stream;
use futures_lite::future;
use std::io;

enum Side {
    Client,
    Upstream,
}

impl Conn<'_> {
    /// Runs the tunnel; the response head (`self.r.resp`) is sent first. Returns when done.
    pub(super) async fn tunnel(&mut self, up: &mut Stream) {
        let t = self.config.timeouts;
        // Bytes that came after the heads belong to the tunnel already.
        let n = self.r.ubuf.len();
        self.r.resp.extend_from_slice(self.r.ubuf.filled());
        self.r.ubuf.consume(n);
        if self
            .c
            .stream
            .write_all(&self.r.resp, t.client_send)
            .await
            .is_err()
        {
            return;
        }
        if !self.c.buf.is_empty() {
            if up
                .write_all(self.c.buf.filled(), t.upstream_send)
                .await
                .is_err()
            {
                return;
            }
            let n = self.c.buf.len();
            self.c.buf.consume(n);
        }
        loop {
            let client = &mut self.c.stream;
            let upstream = &mut *up;
            let side: io::Result<(Side, bool)> = future::or(
                async {
                    client
                        .readable(t.tunnel)
                        .await
                        .map(|open| (Side::Client, open))
                },
                async {
                    upstream
                        .readable(t.tunnel)
                        .await
                        .map(|open| (Side::Upstream, open))
                },
            )
            .await;
            let moved = match side {
                Ok((_, false)) | Err(_) => return,
                Ok((Side::Client, true)) => {
                    relay(&mut self.c.stream, up, &mut self.c.buf, t.upstream_send).await
                }
                Ok((Side::Upstream, true)) => {
                    relay(up, &mut self.c.stream, &mut self.r.ubuf, t.client_send).await
                }
            };
            if moved.is_err() {
                return;
            }
        }
    }
}

/// Reads what `from` has (it is readable) and writes it all to `to`.
async fn relay(
    from: &mut Stream,
    to: &mut Stream,
    buf: &mut super::buf::Buf,
    write_timeout: std::time::Duration,
) -> io::Result<()> {
    // Readable was just reported: this read does not wait long.
    let n = buf.fill(from, std::time::Duration::from_secs(5)).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    to.write_all(buf.filled(), write_timeout).await?;
    let len = buf.len();
    buf.consume(len);
    Ok(())
}
