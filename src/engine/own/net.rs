//! Nonblocking TCP on the reactor: a listener and a stream.
//!
//! Every operation tries its syscall first and waits for an edge only on EAGAIN. A receive
//! that returns fewer bytes than asked drained the socket (stream sockets hand over all they
//! hold), so the read flag is cleared without the EAGAIN receive that would prove it, unless
//! the peer's end of stream was seen (it would produce no further edge); nginx does the same
//! on epoll. Likewise a short send means the send buffer is full.
//!
//! Timeouts are kept on the stream and bound each wait
//! of an operation, so they bound TLS reads and writes over the stream the same way.

use super::epoll::{Dir, Interest, Registration, Source};
use super::exec::{self, OpTimer, Timeout};
use futures_lite::{AsyncRead, AsyncWrite};
use socket2::Socket;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "operation timed out")
}

/// A connected TCP socket owned by the current core.
pub(crate) struct TcpStream {
    // Declared first: dropped (slot freed) before the descriptor closes.
    reg: Registration,
    sock: std::net::TcpStream,
    read_timeout: Timeout,
    write_timeout: Timeout,
    read_timer: OpTimer,
    write_timer: OpTimer,
}

impl TcpStream {
    fn new(sock: std::net::TcpStream) -> io::Result<TcpStream> {
        let reg = exec::with_epoll(|r| r.register(sock.as_raw_fd(), Interest::Stream))?;
        Ok(TcpStream {
            reg,
            sock,
            read_timeout: Timeout::none(),
            write_timeout: Timeout::none(),
            read_timer: OpTimer::default(),
            write_timer: OpTimer::default(),
        })
    }

    /// Connects within `timeout`: nonblocking connect, then the first writable edge and
    /// SO_ERROR say how it went.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let (sock, pending) = super::begin_connect(addr)?;
        let s = TcpStream::new(sock.into())?;
        if pending {
            s.reg.source().clear(Dir::Write);
            let mut timer = OpTimer::default();
            poll_fn(|cx| {
                if s.reg.source().ready(Dir::Write) {
                    return Poll::Ready(Ok(()));
                }
                if timer.expired(Some(timeout), cx.waker()) {
                    return Poll::Ready(Err(timed_out()));
                }
                s.reg.source().wait(Dir::Write, cx.waker());
                Poll::Pending
            })
            .await?;
            if let Some(e) = s.sock.take_error()? {
                return Err(e);
            }
        }
        Ok(s)
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) {
        self.read_timeout.set(t);
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) {
        self.write_timeout.set(t);
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock.set_nodelay(on)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.peer_addr()
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Waits for bytes (or end of stream, Ok(0)) and copies them without consuming them.
    /// No timeout of its own: the caller bounds it.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            poll_op(self.reg.source(), cx, Dir::Read, None, || {
                self.sock.peek(buf)
            })
        })
        .await
    }

    /// Waits until a read should find bytes or the end of stream, reading nothing: an idle
    /// connection waits here with no buffer. Readiness an edge reported while waiting is taken
    /// as it is (no syscall); a flag carried over from earlier (a read that filled its buffer
    /// exactly leaves it set) is checked with a peek first, so a drained socket is not
    /// reported readable. TimedOut past the read timeout (the stream's own timer: no timer
    /// future is kept in the waiting task).
    /// A poll function, not an `async fn`: the idle connection's task holds the future that
    /// calls it, so it is a few bytes (`carried` starts true and is the wait's only state).
    pub(crate) fn poll_wait_readable(
        &mut self,
        cx: &mut Context<'_>,
        carried: &mut bool,
    ) -> Poll<io::Result<()>> {
        let src = self.reg.source();
        let ready = src.hup()
            || (src.ready(Dir::Read)
                && (!*carried
                    || match self.sock.peek(&mut [0u8; 1]) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            src.clear(Dir::Read);
                            false
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
                        _ => true,
                    }));
        if ready {
            self.read_timer.reset();
            return Poll::Ready(Ok(()));
        }
        *carried = false;
        if self.read_timer.expired(self.read_timeout.get(), cx.waker()) {
            return Poll::Ready(Err(timed_out()));
        }
        src.wait(Dir::Read, cx.waker());
        Poll::Pending
    }

    /// True when nothing is waiting to be read: no end of stream seen and no read readiness
    /// left since a read drained the socket (edges that come later are seen at the next loop
    /// pass, as they would be by a wait). Only a readiness flag carried over is checked with a
    /// peek (one syscall).
    pub(crate) fn is_quiet(&self) -> bool {
        let src = self.reg.source();
        if src.hup() {
            return false;
        }
        if !src.ready(Dir::Read) {
            return true;
        }
        match self.sock.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                src.clear(Dir::Read);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let timer = Some((&mut this.read_timer, this.read_timeout.get()));
        let mut sock = &this.sock;
        let r = poll_op(this.reg.source(), cx, Dir::Read, timer, || sock.read(buf));
        if let Poll::Ready(Ok(n)) = r {
            let src = this.reg.source();
            if n > 0 && n < buf.len() && !src.hup() {
                src.clear(Dir::Read);
            }
        }
        r
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // std sends with MSG_NOSIGNAL: a closed peer is EPIPE, not SIGPIPE.
        let timer = Some((&mut this.write_timer, this.write_timeout.get()));
        let mut sock = &this.sock;
        let r = poll_op(this.reg.source(), cx, Dir::Write, timer, || sock.write(buf));
        if let Poll::Ready(Ok(n)) = r {
            if n < buf.len() {
                this.reg.source().clear(Dir::Write);
            }
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.sock.shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// Runs `op` while `dir` is ready; on EAGAIN waits for the next edge, within `timer`'s
/// timeout when given.
fn poll_op<T>(
    src: &Source,
    cx: &mut Context<'_>,
    dir: Dir,
    mut timer: Option<(&mut OpTimer, Option<Duration>)>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    // Bounded: each turn returns, or clears the flag (which only `park` sets), or was EINTR.
    for _ in 0..8 {
        if !src.ready(dir) {
            if let Some((timer, timeout)) = timer.as_mut() {
                if timer.expired(*timeout, cx.waker()) {
                    return Poll::Ready(Err(timed_out()));
                }
            }
            src.wait(dir, cx.waker());
            return Poll::Pending;
        }
        match op() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.clear(dir),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => {
                if let Some((timer, _)) = timer {
                    timer.reset();
                }
                return Poll::Ready(r);
            }
        }
    }
    // EINTR eight times in a row: come back through the run queue.
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// A listening socket owned by the current core.
pub(crate) struct TcpListener {
    reg: Registration,
    sock: Socket,
}

impl TcpListener {
    /// Takes over a socket bound and listening elsewhere; must run on the owning core.
    pub(crate) fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(true)?;
        let sock = Socket::from(l);
        let reg = exec::with_epoll(|r| r.register(sock.as_raw_fd(), Interest::Listen))?;
        Ok(TcpListener { reg, sock })
    }

    /// One accept4 (nonblocking, close-on-exec); WouldBlock when the queue is empty. The
    /// peer's address is None on a Unix socket (the admin listener's).
    fn try_accept(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let (s, addr) = self
            .sock
            .accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
        Ok((TcpStream::new(s.into())?, addr.as_socket()))
    }

    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = self.accept_any().await?;
        let peer = peer.ok_or_else(|| io::Error::other("accepted a socket that is not TCP/IP"))?;
        Ok((s, peer))
    }

    /// Accepts on a TCP or a Unix socket; the peer's address when it has one.
    pub(crate) async fn accept_any(&self) -> io::Result<(TcpStream, Option<SocketAddr>)> {
        let src = self.reg.source();
        poll_fn(|cx| {
            for _ in 0..8 {
                if !src.ready(Dir::Read) {
                    src.wait(Dir::Read, cx.waker());
                    return Poll::Pending;
                }
                match self.try_accept() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => src.clear(Dir::Read),
                    // Interrupted, or a connection reset while it was queued: next one.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                        ) => {}
                    r => return Poll::Ready(r),
                }
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// Accepts what is already queued (at most `MAX_QUEUED`), without waiting.
    pub(crate) fn accept_queued(&self) -> Vec<(TcpStream, SocketAddr)> {
        const MAX_QUEUED: usize = 65_536;
        let mut out = Vec::new();
        for _ in 0..MAX_QUEUED {
            match self.try_accept() {
                Ok((s, Some(peer))) => out.push((s, peer)),
                Ok((_, None)) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                // Empty, or out of descriptors: stop draining.
                Err(_) => break,
            }
        }
        out
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener is not TCP/IP"))
    }
}
