//! A connection to the target: plain TCP or TLS, one closed enum (no `Box<dyn>` per I/O).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::client::TlsStream;

use super::plan::Plan;
use crate::rt::{self, TcpStream};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Connects (and shakes hands) within the plan's timeout.
    pub async fn open(plan: &Plan) -> io::Result<Stream> {
        let tcp = rt::connect(plan.addr, plan.timeout).await?;
        let _ = rt::set_nodelay(&tcp);
        match &plan.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => {
                let handshake = tls.handshake(tcp);
                let timeout = async {
                    rt::sleep(plan.timeout).await;
                    Err(io::ErrorKind::TimedOut.into())
                };
                futures_lite::future::or(handshake, timeout)
                    .await
                    .map(|s| Stream::Tls(Box::new(s)))
            }
        }
    }
}

impl Stream {
    /// Reads what has arrived, waiting until something has (see `rt::read`).
    pub async fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => rt::read(s, buf).await,
            Stream::Tls(s) => futures_lite::AsyncReadExt::read(s.as_mut(), buf).await,
        }
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
