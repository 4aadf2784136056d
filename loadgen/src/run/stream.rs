//! A connection to the target: plain TCP or TLS, one closed enum (no `Box<dyn>` per I/O).

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;

use super::net::{Net, Socket};
use super::plan::Plan;
use super::watchdog::Alarm;

pub enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream<Socket>>),
}

impl Stream {
    /// Connects (and shakes hands) within the plan's timeout, watched by `alarm`.
    pub async fn open(plan: &Plan, net: &Rc<Net>, alarm: &Alarm) -> io::Result<Stream> {
        alarm.arm(net.clock.now() + plan.timeout.as_nanos() as u64);
        let open = async {
            let tcp = Socket::connect(net, plan.addr).await?;
            match &plan.tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => Ok(Stream::Tls(Box::new(tls.handshake(tcp).await?))),
            }
        };
        let rung = async {
            alarm.rung().await;
            Err(io::ErrorKind::TimedOut.into())
        };
        let r = futures_lite::future::or(open, rung).await;
        alarm.disarm();
        r
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}
