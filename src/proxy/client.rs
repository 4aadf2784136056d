//! The two halves of what a client connection owns: the downstream side ([`Client`]) and the
//! working memory of its exchanges ([`Scratch`]). Both outlive a configuration generation (a
//! connection moves to the next one between requests) and give their large buffers back to
//! the core's free list while the connection is idle.

use super::buf::{self, Buf};
use crate::accesslog::Exchange;
use crate::config::ListenerId;
use crate::context::Worker;
use crate::engine::Stream;
use crate::http1::{RequestHead, ResponseHead};
use std::net::{IpAddr, SocketAddr};

/// The first buffer of a request head. Most heads fit (browsers send 0.5 to 2 KiB); a larger
/// one doubles it up to the head limit as it arrives, so a connection that has sent part of a
/// head holds little more than what it sent.
pub(super) const HEAD_START: usize = 2048;

/// The downstream side of one connection.
pub(super) struct Client {
    pub(super) stream: Stream,
    /// The client: the TCP peer, or the source a PROXY header gave.
    pub(super) peer: SocketAddr,
    /// The TCP peer when a PROXY header gave another source (boxed: rare, and the idle
    /// connection's task holds this struct).
    pub(super) tcp_peer: Option<Box<SocketAddr>>,
    pub(super) listener: ListenerId,
    /// Client bytes: the request head, then body bytes and pipelined requests.
    pub(super) buf: Buf,
    /// Requests served so far (the first waits `client_header`, later ones `keepalive`).
    pub(super) served: u64,
    /// The head being read was late (`client_header` passed before it was complete).
    pub(super) late: bool,
}

impl Client {
    /// No buffer is taken before the first bytes arrive.
    /// `proxied`: the source a PROXY header gave, if any.
    pub(super) fn new(
        stream: Stream,
        peer: SocketAddr,
        proxied: Option<SocketAddr>,
        listener: ListenerId,
    ) -> Client {
        let (peer, tcp_peer) = match proxied {
            Some(source) if source != peer => (source, Some(Box::new(peer))),
            _ => (peer, None),
        };
        Client {
            stream,
            peer,
            tcp_peer,
            listener,
            buf: Buf::empty(),
            served: 0,
            late: false,
        }
    }

    /// The TCP peer, and the PROXY header's source when it differs.
    pub(super) fn addresses(&self) -> (SocketAddr, Option<SocketAddr>) {
        match &self.tcp_peer {
            Some(tcp) => (**tcp, Some(self.peer)),
            None => (self.peer, None),
        }
    }

    pub(super) fn release(&mut self) {
        self.buf.release();
    }

    /// A buffer for the start of a request head: small; it grows with the head.
    pub(super) fn acquire(&mut self) {
        self.buf.ensure(HEAD_START);
    }
}

/// Working memory of one exchange, reused by the next on the same connection.
pub(super) struct Scratch {
    /// Upstream bytes of the current attempt.
    pub(super) ubuf: Buf,
    pub(super) head: RequestHead,
    pub(super) rhead: ResponseHead,
    /// The request as written to the upstream (head, plus the body when replayable).
    pub(super) out: Vec<u8>,
    /// Bytes for the client (response heads, error responses, decoded chunks).
    pub(super) resp: Vec<u8>,
    /// Hash key of the current request, for hash balancing.
    pub(super) key: Vec<u8>,
    /// The servers of the upstream this request tried.
    pub(super) tried: Tried,
    /// Facts of the current exchange, for the counters and the access log.
    pub(super) x: Exchange,
    /// The client's address: the peer's, or the one a trusted proxy reported (real_ip,
    /// PROXY). Set as each exchange begins (here, not in the idle connection's [`Client`]).
    pub(super) client_ip: IpAddr,
}

impl Scratch {
    pub(super) fn new(w: &Worker, listener: ListenerId, peer: SocketAddr) -> Scratch {
        let x = Exchange::new(&w.access_log, &w.metrics, listener, peer);
        Scratch {
            ubuf: Buf::empty(),
            head: RequestHead {
                headers: Vec::new(),
                ..RequestHead::new()
            },
            rhead: ResponseHead {
                headers: Vec::new(),
                ..ResponseHead::new()
            },
            out: Vec::new(),
            resp: Vec::new(),
            client_ip: peer.ip(),
            key: Vec::new(),
            tried: Tried::default(),
            x,
        }
    }

    /// Gives the large buffers back (those that are empty).
    pub(super) fn release(&mut self) {
        self.release_upstream();
        buf::give_headers(std::mem::take(&mut self.head.headers));
    }

    /// Gives back what only an exchange with a server needs (at its end).
    pub(super) fn release_upstream(&mut self) {
        self.ubuf.release();
        buf::give_vec(std::mem::take(&mut self.out));
        buf::give_vec(std::mem::take(&mut self.resp));
        buf::give_headers(std::mem::take(&mut self.rhead.headers));
    }

    /// What parsing a request head needs.
    pub(super) fn acquire_head(&mut self) {
        if self.head.headers.capacity() == 0 {
            self.head.headers = buf::take_headers();
        }
    }

    /// The buffer of what goes to the client (responses, error answers).
    pub(super) fn acquire_resp(&mut self) {
        if self.resp.capacity() == 0 {
            self.resp = buf::take_vec(4096);
        }
    }

    /// What an exchange with a chosen server needs: the upstream buffer (`upstream_size`
    /// bytes) and the response head.
    pub(super) fn acquire_upstream(&mut self, upstream_size: usize) {
        self.ubuf.ensure(upstream_size);
        self.acquire_resp();
        if self.rhead.headers.capacity() == 0 {
            self.rhead.headers = buf::take_headers();
        }
    }
}

/// What a connection keeps of its [`Scratch`] while idle: its byte totals (received, sent)
/// when its last exchange ended, for the next exchange's byte counts.
pub(super) type Marks = (u64, u64);

/// Scratch memory of busy connections, kept per core while their connections are idle.
const POOLED: usize = 256;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Scratch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Working memory for a connection that has bytes to serve: a pooled one (its buffers and
/// vectors kept) or a new one. `proxied`: the PROXY header's source, when there was one.
pub(super) fn take_scratch(
    w: &Worker,
    listener: ListenerId,
    peer: SocketAddr,
    proxied: Option<SocketAddr>,
    marks: &Marks,
) -> Scratch {
    let r = SCRATCH.with(|p| p.borrow_mut().pop()).map(|mut r| {
        r.x.rebind(&w.access_log, &w.metrics, listener, peer, *marks);
        r
    });
    let mut r = r.unwrap_or_else(|| {
        let mut r = Scratch::new(w, listener, peer);
        r.x.rebind(&w.access_log, &w.metrics, listener, peer, *marks);
        r
    });
    r.client_ip = proxied.unwrap_or(peer).ip();
    if let Some(source) = proxied {
        // A request refused before it parses is logged with this address too.
        r.x.client(source, source.ip(), &w.access_log); // log
    }
    r
}

/// Gives `r` back to the pool as its connection goes idle; what the connection keeps.
pub(super) fn give_scratch(r: Scratch) -> Marks {
    let marks = r.x.marks();
    SCRATCH.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOLED {
            p.push(r);
        }
    });
    marks
}

/// The servers of one upstream a request has tried: a bit per server index, sized to the
/// upstream (any number of servers). Reused per connection: no allocation in steady state.
#[derive(Default)]
pub(super) struct Tried {
    bits: Vec<u64>,
}

impl Tried {
    /// Empty, for an upstream of `servers` servers.
    pub(super) fn reset(&mut self, servers: usize) {
        self.bits.clear();
        self.bits.resize(servers.div_ceil(64), 0);
    }

    pub(super) fn insert(&mut self, i: usize) {
        if let Some(w) = self.bits.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    pub(super) fn contains(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_covers_any_number_of_servers() {
        let mut t = Tried::default();
        t.reset(1000);
        for i in [0, 63, 64, 127, 128, 999] {
            assert!(!t.contains(i));
            t.insert(i);
            assert!(t.contains(i));
        }
        assert!(!t.contains(500));
        t.reset(3);
        assert!(!t.contains(0));
        // Out of range is never tried (and never panics).
        t.insert(5000);
        assert!(!t.contains(5000));
    }
}
