//! Sockets of one core: a listener and a stream (plain TCP, or TLS over it with rustls).
//! Every timeout is per operation and given by the caller.

use super::sleep;
use super::tcp::{TcpListener, TcpStream};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_rustls::{client, server, TlsAcceptor, TlsConnector};
use rustls_pki_types::ServerName;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// A TCP connection owned by the current core, plain or TLS. Timeouts are set on the TCP
/// socket, so they bound TLS reads and writes the same way.
pub struct Stream {
    inner: Inner,
    /// Bytes read and written so far (metrics and access log: bytes per exchange).
    received: u64,
    sent: u64,
}

enum Inner {
    Plain(TcpStream),
    /// Boxed: a rustls connection is over a kilobyte, and most streams are plain.
    Server(Box<server::TlsStream<TcpStream>>),
    Client(Box<client::TlsStream<TcpStream>>),
}

impl Inner {
    fn tcp(&self) -> &TcpStream {
        match self {
            Inner::Plain(s) => s,
            Inner::Server(t) => t.get_ref().0,
            Inner::Client(t) => t.get_ref().0,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Inner::Plain(s) => s,
            Inner::Server(t) => t.get_mut().0,
            Inner::Client(t) => t.get_mut().0,
        }
    }
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Server(t) => Pin::new(&mut **t).poll_read(cx, buf),
            Inner::Client(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Server(t) => Pin::new(&mut **t).poll_write(cx, buf),
            Inner::Client(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Server(t) => Pin::new(&mut **t).poll_flush(cx),
            Inner::Client(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_close(cx),
            Inner::Server(t) => Pin::new(&mut **t).poll_close(cx),
            Inner::Client(t) => Pin::new(&mut **t).poll_close(cx),
        }
    }
}

/// `fut`, or TimedOut once `deadline` passes. Not an `async fn`: that would hold `fut` twice
/// (as its argument and inside the race), and an idle connection waits in this future.
fn within<T>(
    deadline: Instant,
    fut: impl Future<Output = io::Result<T>>,
) -> impl Future<Output = io::Result<T>> {
    futures_lite::future::or(fut, async move {
        sleep(deadline.saturating_duration_since(super::now())).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "timed out"))
    })
}

impl Stream {
    fn new(inner: TcpStream) -> Stream {
        // Small request/response heads must not wait for Nagle.
        let _ = inner.set_nodelay(true);
        Stream {
            inner: Inner::Plain(inner),
            received: 0,
            sent: 0,
        }
    }

    /// Connects within `timeout` (io::ErrorKind::TimedOut past it).
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Stream> {
        Ok(Stream::new(
            TcpStream::connect_timeout(addr, timeout).await?,
        ))
    }

    /// Connects to an upstream server, with TLS when `tls` gives a client config and the name
    /// to verify; `timeout` bounds the TCP connect and the TLS handshake together (as nginx
    /// `proxy_connect_timeout`). A failed handshake (untrusted or expired certificate, wrong
    /// name) is logged here and returned as an error of kind InvalidData or ConnectionAborted.
    pub async fn connect_upstream(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    ) -> io::Result<Stream> {
        let deadline = super::now() + timeout;
        let plain = Stream::connect(addr, timeout).await?;
        let Some((config, name)) = tls else {
            return Ok(plain);
        };
        let Inner::Plain(tcp) = plain.inner else {
            unreachable!("connect returns a plain stream")
        };
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let connector = TlsConnector::from(config);
        // Boxed: a TLS handshake's state is kilobytes, and it would otherwise be part of every
        // client connection's task, TLS or not, for its whole life.
        match Box::pin(within(deadline, connector.connect(name, tcp))).await {
            Ok(t) => Ok(Stream {
                inner: Inner::Client(Box::new(t)),
                received: 0,
                sent: 0,
            }),
            Err(e) => {
                // Once per request while a server's TLS is broken: throttled per core.
                thread_local! {
                    static THROTTLE: super::Throttle = const {
                        super::Throttle::new(Duration::from_secs(10))
                    };
                }
                if let Some(skipped) = THROTTLE.with(super::Throttle::allow) {
                    log::warn!(
                        "TLS handshake with upstream server {addr} failed: {e} \
                         ({skipped} more failures on this core since the last line)"
                    );
                }
                Err(e)
            }
        }
    }

    /// Runs the server side of a TLS handshake on an accepted connection, within `timeout`
    /// as a whole.
    pub async fn accept_tls(
        self,
        config: Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> io::Result<Stream> {
        let deadline = super::now() + timeout;
        let Inner::Plain(tcp) = self.inner else {
            return Err(io::Error::other("TLS is already established"));
        };
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        // Boxed, as in `connect_upstream`: only a connection in its handshake holds that state.
        let t = Box::pin(within(deadline, TlsAcceptor::from(config).accept(tcp))).await?;
        Ok(Stream {
            inner: Inner::Server(Box::new(t)),
            received: 0,
            sent: 0,
        })
    }

    /// Whether this connection speaks TLS.
    pub fn is_tls(&self) -> bool {
        !matches!(self.inner, Inner::Plain(_))
    }

    /// The first byte the peer sent, without consuming it (None: closed before sending).
    pub async fn peek_byte(&mut self, timeout: Duration) -> io::Result<Option<u8>> {
        let deadline = super::now() + timeout;
        let tcp = self.inner.tcp();
        let mut one = [0u8; 1];
        let n = within(deadline, tcp.peek(&mut one)).await?;
        Ok((n > 0).then_some(one[0]))
    }

    /// The bytes the peer sent so far, up to `buf.len()`, without consuming them (Ok(0):
    /// closed before sending). Plain TCP only: a PROXY header is read before any TLS. Waits
    /// for the first byte; returns at once when some are queued.
    pub async fn peek(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        let deadline = super::now() + timeout;
        let tcp = self.inner.tcp();
        within(deadline, tcp.peek(buf)).await
    }

    /// Reads exactly `buf.len()` bytes (bytes already seen through [`Stream::peek`]), all
    /// within `timeout`.
    pub async fn read_exact(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<()> {
        let deadline = super::now() + timeout;
        let mut at = 0;
        while at < buf.len() {
            let left = deadline.saturating_duration_since(super::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            match self.read(&mut buf[at..], left).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => at += n,
            }
        }
        Ok(())
    }

    /// Reads at most `buf.len()` bytes; Ok(0) is end of stream. Fails with TimedOut when
    /// nothing arrives within `timeout`. A TLS peer that closes without close_notify is end
    /// of stream too, as nginx treats it (many servers and clients never send it).
    pub async fn read(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.inner.tcp().set_read_timeout(Some(timeout))?;
        let n = match self.inner.read(buf).await {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && self.is_tls() => 0,
            r => r?,
        };
        self.received += n as u64;
        Ok(n)
    }

    /// Waits until at least one byte can be read, without consuming it. For TLS, decrypted
    /// bytes already buffered count, and so does any TLS record on the socket (a record may
    /// turn out to carry no data, e.g. a TLS 1.3 session ticket).
    pub async fn readable(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.tls_buffered()? > 0 {
            return Ok(true);
        }
        let deadline = super::now() + timeout;
        let tcp = self.inner.tcp();
        let mut one = [0u8; 1];
        let n = within(deadline, tcp.peek(&mut one)).await?;
        Ok(n > 0)
    }

    /// Waits until the next read should find something (bytes, or the end of the stream, or
    /// an error), reading nothing and holding no buffer: how an idle keep-alive connection
    /// waits for its next request. Cheaper than [`Stream::readable`]: on epoll the readiness
    /// edge is enough, with no peek. May rarely wake for a read that then waits (a stale
    /// readiness flag, or a TLS record that carries no data). TimedOut past `timeout`.
    pub fn wait_readable(&mut self, timeout: Duration) -> WaitReadable<'_> {
        let early = match self.tls_buffered() {
            Ok(0) => self
                .inner
                .tcp_mut()
                .set_read_timeout(Some(timeout))
                .err()
                .map(Err),
            Ok(_) => Some(Ok(())),
            Err(e) => Some(Err(e)),
        };
        WaitReadable {
            tcp: self.inner.tcp_mut(),
            early,
            carried: true,
        }
    }

    /// Decrypted bytes a TLS connection holds, ready to read (0 for plain TCP).
    fn tls_buffered(&mut self) -> io::Result<usize> {
        let state = match &mut self.inner {
            Inner::Plain(_) => return Ok(0),
            Inner::Server(t) => t.get_mut().1.process_new_packets(),
            Inner::Client(t) => t.get_mut().1.process_new_packets(),
        };
        state
            .map(|s| s.plaintext_bytes_to_read())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes all of `buf`; each write must make progress within `timeout`. TLS records are
    /// flushed to the socket before this returns.
    pub async fn write_all(&mut self, buf: &[u8], timeout: Duration) -> io::Result<()> {
        self.inner.tcp().set_write_timeout(Some(timeout))?;
        self.inner.write_all(buf).await?;
        self.sent += buf.len() as u64;
        if self.is_tls() {
            self.inner.flush().await?;
        }
        Ok(())
    }

    /// Ends the connection politely: TLS sends close_notify (clients that read to the end of
    /// the stream see a clean end instead of a truncation error). Plain TCP needs nothing; the
    /// descriptor closes on drop either way.
    pub async fn close(&mut self, timeout: Duration) {
        if self.is_tls() {
            let _ = self.inner.tcp().set_write_timeout(Some(timeout));
            let _ = self.inner.close().await;
        }
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

    /// True when nothing is waiting to be read: no bytes and no end of stream. An idle
    /// keep-alive connection that fails this carries bytes no request asked for (a server that
    /// sent more than it framed), or was closed by the server; reusing it would hand those bytes
    /// to the next client as its response.
    pub fn is_quiet(&self) -> bool {
        self.inner.tcp().is_quiet()
    }

    pub fn fd(&self) -> RawFd {
        self.inner.tcp().as_raw_fd()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.tcp().peer_addr()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.tcp().local_addr()
    }
}

/// [`Stream::wait_readable`]'s future: what an idle connection's task holds while it waits,
/// so it is kept to a reference and two flags (an `async fn` would copy its arguments into
/// each nested future).
pub struct WaitReadable<'a> {
    tcp: &'a mut TcpStream,
    /// Decided before waiting: TLS bytes already decrypted, or an error.
    early: Option<io::Result<()>>,
    carried: bool,
}

impl Future for WaitReadable<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(r) = this.early.take() {
            return Poll::Ready(r);
        }
        this.tcp.poll_wait_readable(cx, &mut this.carried)
    }
}

/// A listening socket owned by the current core (one per core per configured listener, all
/// bound with SO_REUSEPORT so the kernel spreads connections over the cores), or the admin
/// listener's Unix socket.
///
/// A Unix socket is served through each engine's TCP types: their accept, reads, writes and
/// timeouts do not depend on the address family. What is TCP's fails cleanly on it: `peer_addr` and
/// `local_addr` return an error, `TCP_NODELAY` is not set; [`Listener::accept_local`] is the
/// accept to use.
pub struct Listener {
    inner: TcpListener,
}

impl Listener {
    /// Takes over a socket bound and listening on another thread. Must run on the owning core.
    /// Panics if the engine cannot watch it (epoll_ctl out of memory or watches).
    pub fn from_std(l: std::net::TcpListener) -> Listener {
        let inner = TcpListener::from_std(l)
            .unwrap_or_else(|e| panic!("cannot watch a listening socket: {e}"));
        Listener { inner }
    }

    /// Takes over a Unix stream socket bound and listening on another thread (see the type's
    /// doc). Must run on the owning core.
    /// Panics if the engine cannot watch it, as [`Listener::from_std`].
    pub fn from_std_unix(l: std::os::unix::net::UnixListener) -> Listener {
        let inner = TcpListener::from_std_unix(l)
            .unwrap_or_else(|e| panic!("cannot watch a listening socket: {e}"));
        Listener { inner }
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (s, peer) = self.inner.accept().await?;
        Ok((Stream::new(s), peer))
    }

    /// Accepts without asking for the peer's address: the accept for a Unix socket, whose
    /// peers have none.
    pub async fn accept_local(&self) -> io::Result<Stream> {
        let s = self.inner.accept_local().await?;
        Ok(Stream::new(s))
    }

    /// Stops accepting from the kernel: once this returns, no accept of this core is in
    /// flight on the socket, so a wake-up for a new connection goes to another process that
    /// shares it (a binary upgrade), not to an accept being cancelled here. What was accepted
    /// meanwhile is queued: [`Listener::accept`] and [`Listener::accept_queued`] return it.
    pub async fn stop_accepting(&self) {
        self.inner.stop_accepting().await
    }

    /// Accepts what is already queued, without waiting, so that connections the kernel
    /// completed before shutdown are served rather than reset when the socket closes.
    pub fn accept_queued(&self) -> Vec<(Stream, SocketAddr)> {
        self.inner
            .accept_queued()
            .into_iter()
            .map(|(s, peer)| (Stream::new(s), peer))
            .collect()
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}
