//! The narrow I/O layer: everything ringlb needs from its async runtime (accept, connect, read,
//! write, timers, spawn) and nothing else. glommio is no longer actively maintained; the HTTP,
//! balancing and config code never name it, so replacing it means rewriting this file and the
//! executor setup in `runtime/mod.rs` only.

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::time::Duration;

/// A TCP connection owned by the current core.
pub struct Stream {
    inner: TcpStream,
    /// Bytes read and written so far (metrics and access log: bytes per exchange).
    received: u64,
    sent: u64,
}

impl Stream {
    fn new(inner: TcpStream) -> Stream {
        // Small request/response heads must not wait for Nagle.
        let _ = inner.set_nodelay(true);
        Stream {
            inner,
            received: 0,
            sent: 0,
        }
    }

    /// Connects within `timeout` (io::ErrorKind::TimedOut past it).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        match TcpStream::connect_timeout(addr, timeout).await {
            Ok(s) => Ok(Stream::new(s)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads at most `buf.len()` bytes; Ok(0) is end of stream. Fails with TimedOut when
    /// nothing arrives within `timeout`.
    pub async fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.inner.set_read_timeout(Some(timeout))?;
        let n = self.inner.read(buf).await?;
        self.received += n as u64;
        Ok(n)
    }

    /// Waits until at least one byte can be read, without consuming it.
    pub async fn readable(&mut self, timeout: Duration) -> io::Result<bool> {
        self.inner.set_read_timeout(Some(timeout))?;
        let mut one = [0u8; 1];
        Ok(self.inner.peek(&mut one).await? > 0)
    }

    /// Writes all of `buf`; each write must make progress within `timeout`.
    pub async fn write_all(&mut self, buf: &[u8], timeout: Duration) -> io::Result<()> {
        self.inner.set_write_timeout(Some(timeout))?;
        self.inner.write_all(buf).await?;
        self.sent += buf.len() as u64;
        Ok(())
    }

    /// Bytes read from this connection so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Bytes written to this connection so far (by completed `write_all`s).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Ends the read side now, from outside the task that reads: a pending read returns 0.
    /// Used to close idle keep-alive connections at shutdown.
    pub fn shutdown_read_fd(fd: RawFd) {
        // SAFETY: shutdown(2) on a descriptor only changes socket state; a stale or reused
        // descriptor number at worst fails with EBADF/ENOTSOCK, which we ignore.
        unsafe {
            libc::shutdown(fd, libc::SHUT_RD);
        }
    }

    pub fn fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.peer_addr()?)
    }
}

/// A listening socket owned by the current core (one per core per configured listener, all
/// bound with SO_REUSEPORT so the kernel spreads connections over the cores).
pub struct Listener {
    inner: TcpListener,
    /// glommio's listener does not expose its descriptor; kept from `from_std`.
    fd: RawFd,
}

impl Listener {
    /// Takes over a socket bound and listening on another thread. Must run on the owning core.
    pub fn from_std(l: std::net::TcpListener) -> Listener {
        let fd = l.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own (just released by `into_raw_fd`).
        let inner = unsafe { TcpListener::from_raw_fd(fd) };
        Listener { inner, fd }
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let s = self.inner.accept().await?;
        let peer = s.peer_addr()?;
        Ok((Stream::new(s), peer))
    }

    /// Accepts what is already queued, without waiting, so that connections the kernel
    /// completed before shutdown are served rather than reset when the socket closes.
    pub fn accept_queued(&self) -> Vec<(Stream, SocketAddr)> {
        let mut out = Vec::new();
        let fd = self.fd;
        // SAFETY: fcntl on our listening descriptor. glommio leaves it blocking (io_uring
        // does not need O_NONBLOCK); the drain below must not wait.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        loop {
            // SAFETY: accept4 on our listening descriptor with null address pointers; a
            // returned descriptor is a new socket we own.
            let c = unsafe {
                libc::accept4(
                    fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                )
            };
            if c < 0 {
                break;
            }
            // SAFETY: `c` is a connected socket we own.
            let s = unsafe { TcpStream::from_raw_fd(c) };
            match s.peer_addr() {
                Ok(peer) => out.push((Stream::new(s), peer)),
                Err(_) => continue,
            }
        }
        out
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }
}

/// A task on the current core. Dropping it cancels the task; `detach` lets it run on.
pub type Task<T> = glommio::Task<T>;

pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(fut)
}

pub fn spawn_detached(fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(fut).detach();
}

pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Yields to other tasks on this core.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
}
