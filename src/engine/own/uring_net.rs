//! TCP on the io_uring reactor: a listener and a stream, with the same interface as the epoll
//! ones in `net` (`AsyncRead`/`AsyncWrite`, so futures-rustls runs over them unchanged).
//!
//! A handle holds its descriptor and its [`Token`] in the reactor; every operation asks the
//! reactor (see `uring` for who owns what while the kernel works). Dropping a handle hands the
//! descriptor to the reactor, which cancels what is in flight and closes it after the last
//! completion. The handle closes the descriptor itself only when the reactor is already gone
//! (core teardown), when nothing can be in flight.
//!
//! Timeouts are kept on the stream, as in `net`, and bound each wait of an operation; they come
//! from the executor's timer heap (no kernel timer). A read that times out leaves the multishot
//! receive armed (its bytes wait for the next read); a write or flush that times out cancels the
//! send in flight and fails the stream's later writes.

use super::exec::{self, OpTimer, Timeout};
use super::uring::Token;
use futures_lite::{AsyncRead, AsyncWrite};
use socket2::SockRef;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "operation timed out")
}

/// The descriptor of a live handle, for socket2's calls.
fn sock_ref(fd: &RawFd) -> SockRef<'_> {
    // SAFETY: `fd` is open for as long as the handle that lends it lives (the handle closes
    // it, or hands it to the reactor, only in its Drop), and the borrow is tied to the handle.
    SockRef::from(unsafe { &*(fd as *const RawFd as *const BorrowedFd<'_>) })
}

/// Sets or clears O_NONBLOCK.
fn set_blocking(fd: RawFd, blocking: bool) -> io::Result<()> {
    sock_ref(&fd).set_nonblocking(!blocking)
}

/// A connected TCP socket owned by the current core.
pub(crate) struct TcpStream {
    fd: RawFd,
    token: Token,
    read_timeout: Timeout,
    write_timeout: Timeout,
    read_timer: OpTimer,
    write_timer: OpTimer,
}

impl TcpStream {
    /// Takes a connected descriptor (its ownership).
    fn from_fd(fd: RawFd) -> io::Result<TcpStream> {
        let token = match exec::with_uring(|r| r.add_stream(fd)) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: we own `fd` and nothing was submitted for it.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        Ok(TcpStream {
            fd,
            token,
            read_timeout: Timeout::none(),
            write_timeout: Timeout::none(),
            read_timer: OpTimer::default(),
            write_timer: OpTimer::default(),
        })
    }

    /// Connects within `timeout`: a nonblocking connect, then POLLOUT on the ring and SO_ERROR.
    pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        let (sock, pending) = super::begin_connect(addr)?;
        let s = TcpStream::from_fd(sock.into_raw_fd())?;
        if pending {
            let mut timer = OpTimer::default();
            poll_fn(|cx| {
                let r = exec::with_uring(|r| r.poll_connect(s.token, cx.waker()));
                if r.is_pending() && timer.expired(Some(timeout), cx.waker()) {
                    return Poll::Ready(Err(timed_out()));
                }
                r
            })
            .await?;
            if let Some(e) = sock_ref(&s.fd).take_error()? {
                return Err(e);
            }
        }
        // io_uring waits for the socket itself; a blocking descriptor keeps the kernel from
        // ever answering EAGAIN to one of its operations.
        set_blocking(s.fd, true)?;
        Ok(s)
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) {
        self.read_timeout.set(t);
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) {
        self.write_timeout.set(t);
    }

    pub(crate) fn set_nodelay(&self, on: bool) -> io::Result<()> {
        sock_ref(&self.fd).set_nodelay(on)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        sock_ref(&self.fd)
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not a TCP/IP socket"))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_ref(&self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not a TCP/IP socket"))
    }

    /// Waits for bytes (or end of stream, Ok(0)) and copies them without consuming them.
    /// No timeout of its own: the caller bounds it.
    pub(crate) async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| exec::with_uring(|r| r.poll_read(self.token, buf, cx.waker(), true))).await
    }

    /// Waits until a read finds bytes or the end of stream, reading nothing: the multishot
    /// receive keeps filling ring buffers meanwhile, so this only looks at what it queued.
    /// TimedOut past the read timeout (the stream's own timer).
    /// A poll function, not an `async fn`, for the same reason as the epoll engine's.
    pub(crate) fn poll_wait_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = exec::with_uring(|r| r.poll_read(self.token, &mut [0u8; 1], cx.waker(), true));
        if r.is_pending() {
            if self.read_timer.expired(self.read_timeout.get(), cx.waker()) {
                return Poll::Ready(Err(timed_out()));
            }
        } else {
            self.read_timer.reset();
        }
        r.map(|r| r.map(drop))
    }

    /// True when nothing is waiting to be read: no bytes received by the ring (nor, when its
    /// receive is not armed, waiting in the socket), no end of stream, no error.
    pub(crate) fn is_quiet(&self) -> bool {
        match exec::with_uring(|r| r.is_quiet(self.token)) {
            None => return false,
            // The armed receive brings whatever arrives to the ring (at the next loop pass at
            // the latest, as an epoll edge would): no syscall for the pool's check per request.
            Some(false) => return true,
            Some(true) => {}
        }
        let mut one = 0u8;
        // SAFETY: recv(2) into a live one-byte buffer on our own descriptor; MSG_PEEK leaves the
        // byte queued and MSG_DONTWAIT returns at once whatever the descriptor's mode.
        let n = unsafe {
            libc::recv(
                self.fd,
                (&mut one as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        let token = self.token;
        if !exec::try_with_uring(|r| r.close(token)) {
            // SAFETY: the reactor (and its ring) is gone, so no operation can be in flight on
            // our descriptor; we own it.
            unsafe { libc::close(self.fd) };
        }
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = exec::with_uring(|r| r.poll_read(this.token, buf, cx.waker(), false));
        if r.is_pending() {
            if this.read_timer.expired(this.read_timeout.get(), cx.waker()) {
                return Poll::Ready(Err(timed_out()));
            }
        } else {
            this.read_timer.reset();
        }
        r
    }
}

impl TcpStream {
    /// A write or flush is pending: within the write timeout, or TimedOut (and the send in
    /// flight is cancelled).
    fn write_wait<T>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if r.is_pending() {
            if self
                .write_timer
                .expired(self.write_timeout.get(), cx.waker())
            {
                let token = self.token;
                exec::with_uring(|r| r.abort_send(token));
                return Poll::Ready(Err(timed_out()));
            }
        } else {
            self.write_timer.reset();
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
        let r = exec::with_uring(|r| r.poll_write(this.token, buf, cx.waker()));
        this.write_wait(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = exec::with_uring(|r| r.poll_flush(this.token, cx.waker()));
        this.write_wait(cx, r)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        Poll::Ready(match sock_ref(&self.fd).shutdown(Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

/// A listening socket owned by the current core.
pub(crate) struct TcpListener {
    fd: RawFd,
    token: Token,
}

impl TcpListener {
    /// Takes over a socket bound and listening elsewhere; must run on the owning core.
    pub(crate) fn from_std(l: std::net::TcpListener) -> io::Result<TcpListener> {
        l.set_nonblocking(false)?;
        let fd = l.into_raw_fd();
        let token = match exec::with_uring(|r| r.add_listener(fd)) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: we own `fd` and nothing was submitted for it.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        };
        Ok(TcpListener { fd, token })
    }

    /// The next accepted stream, TCP or Unix (the admin listener's), without its address.
    pub(crate) async fn accept_any(&self) -> io::Result<TcpStream> {
        loop {
            let fd =
                poll_fn(|cx| exec::with_uring(|r| r.poll_accept(self.token, cx.waker()))).await;
            match fd {
                Ok(fd) => return TcpStream::from_fd(fd),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        // Bounded: each turn returns, or skips one connection the peer reset while queued.
        for _ in 0..64 {
            let s = self.accept_any().await?;
            match s.peer_addr() {
                Ok(peer) => return Ok((s, peer)),
                // Reset before we looked: next one.
                Err(_) => continue,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "connections reset while queued",
        ))
    }

    /// Accepts what is already queued (at most `MAX_QUEUED`), without waiting.
    pub(crate) fn accept_queued(&self) -> Vec<(TcpStream, SocketAddr)> {
        let mut ready = exec::with_uring(|r| r.take_accepted(self.token));
        ready.extend(self.drain());
        ready
            .into_iter()
            .filter_map(|fd| {
                let s = TcpStream::from_fd(fd).ok()?;
                let peer = s.peer_addr().ok()?;
                Some((s, peer))
            })
            .collect()
    }

    /// Stops accepting: once the multishot accept has posted its last completion, what the
    /// kernel still queues for this socket is accepted into the listener's queue, where
    /// [`TcpListener::accept_any`] and [`TcpListener::accept_queued`] find it. After this,
    /// the socket's new connections wake the other processes' accepts only (a binary upgrade
    /// shares the socket): none waits behind a wake-up this one consumed.
    pub(crate) async fn stop_accepting(&self) {
        poll_fn(|cx| exec::with_uring(|r| r.stop_accept(self.token, cx.waker()))).await;
        for fd in self.drain() {
            exec::with_uring(|r| r.push_accepted(self.token, fd));
        }
    }

    /// Accepts (nonblocking, at most `MAX_QUEUED`) what the kernel queued for this socket.
    fn drain(&self) -> Vec<RawFd> {
        const MAX_QUEUED: usize = 65_536;
        let mut out = Vec::new();
        // This drain must not wait; the listener is about to close.
        if set_blocking(self.fd, false).is_err() {
            return out;
        }
        for _ in 0..MAX_QUEUED {
            // SAFETY: accept4 on our listening descriptor with null address pointers; a
            // returned descriptor is a new socket we own.
            let c = unsafe {
                libc::accept4(
                    self.fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if c < 0 {
                let e = io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) {
                    continue;
                }
                break;
            }
            out.push(c);
        }
        out
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        sock_ref(&self.fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener is not TCP/IP"))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let token = self.token;
        if !exec::try_with_uring(|r| r.close(token)) {
            // SAFETY: the reactor is gone, so nothing is in flight on our descriptor.
            unsafe { libc::close(self.fd) };
        }
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}
