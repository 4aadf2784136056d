//! TCP sockets of whichever engine runs the current core: one variant per engine, so an
//! operation on a socket costs one predictable branch (a core runs one engine for its life).

use super::own;
use super::own::exec::Kind;
use futures_lite::{AsyncRead, AsyncWrite};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub(super) enum TcpStream {
    Epoll(own::net::TcpStream),
    Uring(own::uring_net::TcpStream),
}

impl TcpStream {
    pub(super) async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        match own::exec::current() {
            Some(Kind::Uring) => Ok(TcpStream::Uring(
                own::uring_net::TcpStream::connect(addr, timeout).await?,
            )),
            Some(Kind::Epoll) => Ok(TcpStream::Epoll(
                own::net::TcpStream::connect(addr, timeout).await?,
            )),
            None => Err(not_on_a_core()),
        }
    }

    pub(super) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpStream::Epoll(s) => s.set_nodelay(on),
            TcpStream::Uring(s) => s.set_nodelay(on),
        }
    }

    pub(super) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            TcpStream::Epoll(s) => {
                s.set_read_timeout(t);
                Ok(())
            }
            TcpStream::Uring(s) => {
                s.set_read_timeout(t);
                Ok(())
            }
        }
    }

    pub(super) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            TcpStream::Epoll(s) => {
                s.set_write_timeout(t);
                Ok(())
            }
            TcpStream::Uring(s) => {
                s.set_write_timeout(t);
                Ok(())
            }
        }
    }

    /// Waits for bytes and copies them without consuming them; no timeout (neither engine
    /// applies the read timeout to a peek).
    pub(super) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            TcpStream::Epoll(s) => s.peek(buf).await,
            TcpStream::Uring(s) => s.peek(buf).await,
        }
    }

    /// Waits until a read should find bytes or the end of stream, reading nothing, within
    /// the read timeout.
    /// `carried`: true on the first poll of a wait (see the epoll engine's).
    pub(super) fn poll_wait_readable(
        &mut self,
        cx: &mut std::task::Context<'_>,
        carried: &mut bool,
    ) -> std::task::Poll<io::Result<()>> {
        match self {
            TcpStream::Epoll(s) => s.poll_wait_readable(cx, carried),
            TcpStream::Uring(s) => s.poll_wait_readable(cx),
        }
    }

    pub(super) fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Epoll(s) => s.peer_addr(),
            TcpStream::Uring(s) => s.peer_addr(),
        }
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpStream::Epoll(s) => s.local_addr(),
            TcpStream::Uring(s) => s.local_addr(),
        }
    }

    /// True when nothing is waiting to be read: no bytes and no end of stream (see
    /// `Stream::is_quiet`). Each engine answers from what its reactor saw, and asks the socket
    /// only when that cannot tell.
    pub(super) fn is_quiet(&self) -> bool {
        match self {
            TcpStream::Epoll(s) => s.is_quiet(),
            TcpStream::Uring(s) => s.is_quiet(),
        }
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            TcpStream::Epoll(s) => s.fd(),
            TcpStream::Uring(s) => s.fd(),
        }
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TcpStream::Epoll(s) => Pin::new(s).poll_read(cx, buf),
            TcpStream::Uring(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TcpStream::Epoll(s) => Pin::new(s).poll_write(cx, buf),
            TcpStream::Uring(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpStream::Epoll(s) => Pin::new(s).poll_flush(cx),
            TcpStream::Uring(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TcpStream::Epoll(s) => Pin::new(s).poll_close(cx),
            TcpStream::Uring(s) => Pin::new(s).poll_close(cx),
        }
    }
}

pub(super) enum TcpListener {
    Epoll(own::net::TcpListener),
    Uring(own::uring_net::TcpListener),
}

impl TcpListener {
    /// Takes over a socket bound and listening on another thread, for the current core's
    /// engine. Must run on the owning core.
    pub(super) fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        match own::exec::current() {
            Some(Kind::Uring) => Ok(TcpListener::Uring(own::uring_net::TcpListener::from_std(
                l,
            )?)),
            Some(Kind::Epoll) => Ok(TcpListener::Epoll(own::net::TcpListener::from_std(l)?)),
            None => Err(not_on_a_core()),
        }
    }

    /// Takes over a Unix stream socket bound and listening on another thread (the admin
    /// listener's): every engine accepts, reads and writes on it as on a TCP socket, whose
    /// address-family-specific calls fail cleanly on it. Must run on the owning core.
    pub(super) fn from_std_unix(l: std::os::unix::net::UnixListener) -> io::Result<TcpListener> {
        let fd = std::os::fd::OwnedFd::from(l);
        TcpListener::from_std(std::net::TcpListener::from(fd))
    }

    /// Accepts without asking for the peer's address (a Unix socket's peers have none).
    pub(super) async fn accept_local(&self) -> io::Result<TcpStream> {
        match self {
            TcpListener::Epoll(l) => Ok(TcpStream::Epoll(l.accept_any().await?.0)),
            TcpListener::Uring(l) => Ok(TcpStream::Uring(l.accept_any().await?)),
        }
    }

    pub(super) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match self {
            TcpListener::Epoll(l) => {
                let (s, peer) = l.accept().await?;
                Ok((TcpStream::Epoll(s), peer))
            }
            TcpListener::Uring(l) => {
                let (s, peer) = l.accept().await?;
                Ok((TcpStream::Uring(s), peer))
            }
        }
    }

    /// Stops accepting (see `uring_net::TcpListener::stop_accepting`). epoll and glommio
    /// accept only when asked, so they have nothing in flight to stop.
    pub(super) async fn stop_accepting(&self) {
        if let TcpListener::Uring(l) = self {
            l.stop_accepting().await;
        }
    }

    /// Accepts what is already queued, without waiting.
    pub(super) fn accept_queued(&self) -> Vec<(TcpStream, SocketAddr)> {
        match self {
            TcpListener::Epoll(l) => l
                .accept_queued()
                .into_iter()
                .map(|(s, peer)| (TcpStream::Epoll(s), peer))
                .collect(),
            TcpListener::Uring(l) => l
                .accept_queued()
                .into_iter()
                .map(|(s, peer)| (TcpStream::Uring(s), peer))
                .collect(),
        }
    }

    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpListener::Epoll(l) => l.local_addr(),
            TcpListener::Uring(l) => l.local_addr(),
        }
    }
}

/// Sockets belong to an engine core: made anywhere else, they are refused.
fn not_on_a_core() -> io::Error {
    io::Error::other("no engine core runs on this thread")
}
