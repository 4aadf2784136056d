//! The facts of one exchange (request and response), gathered by the proxy as they become
//! known and handed to the counters and the access log when it ends.
//!
//! One `Exchange` per client connection, reused for each request on it: its buffer is
//! allocated once (only when the access log is on) and grows to the longest request line seen,
//! so recording costs no allocation per request in steady state. Runs on the owning core.
//!
//! Call order, per request: [`Exchange::begin`] (head parsed), then [`Exchange::client`] (the
//! client address decided), or [`Exchange::refused`] (head refused); then any of
//! [`Exchange::attempt`], [`Exchange::upstream_time`], [`Exchange::status`], then
//! `Worker::request_done`, which calls [`Exchange::finish`].
//!
//! Two addresses: `peer` is the TCP peer (logged as `peer_addr` in JSON); `client_ip` is the
//! effective client, the address the PROXY protocol header or a trusted `real_ip_header` gave
//! (logged as `remote_addr`, as nginx's realip module and HAProxy's `%ci` do).
//!
//! The request id: a client's `request_id_header` is adopted only when the request came from
//! `access_log.request_id_from` (the sender: the TCP peer, or the PROXY protocol source);
//! otherwise a new id is generated, logged and forwarded instead, as nginx's `$request_id`.

use crate::config::{ListenerId, ServerId, UpstreamId};
use crate::http1::{find_header, RequestHead, Version};
use crate::metrics::{Request, Target};
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

/// Longest request id taken from a request header; a longer one is replaced.
pub const MAX_ID: usize = 64;
/// Longest request line, Host, User-Agent or Referer kept for the log (bytes).
const MAX_FIELD: usize = 4096;
/// Status logged when the client went away before a response was sent (nginx's 499).
pub const CLIENT_CLOSED: u16 = 499;

pub struct Exchange {
    listener: ListenerId,
    /// The TCP peer.
    peer: SocketAddr,
    /// The effective client, and its port when known (the PROXY source's, or the peer's).
    client_ip: IpAddr,
    client_port: Option<u16>,
    /// `id` holds the client's id, not yet adopted (see [`Exchange::client`]).
    offered: bool,
    /// Whether log facts (request line, headers, id) are copied at all.
    logging: bool,
    /// Whether anyone reads the duration (metrics or log on): otherwise the clock is not read.
    timed: bool,
    upstream: Option<UpstreamId>,
    server: Option<ServerId>,
    attempts: u32,
    status: u16,
    upstream_ns: Option<u64>,
    start: Option<Instant>,
    /// Client byte totals at the end of the previous exchange on this connection.
    received_mark: u64,
    sent_mark: u64,
    /// Method, target, Host, User-Agent, Referer, back to back; `ends` are their end offsets.
    text: Vec<u8>,
    ends: [u32; 5],
    version: Version,
    /// The request was refused before it parsed: `text` holds its raw first line as target.
    raw: bool,
    id: [u8; MAX_ID],
    id_len: u8,
    /// When the exchange ended (wall clock), and what it came to: set by `finish`.
    end: SystemTime,
    done: Option<Request>,
}

/// Field positions in `ends`.
const METHOD: usize = 0;
const TARGET: usize = 1;
const HOST: usize = 2;
const AGENT: usize = 3;
const REFERER: usize = 4;

impl Exchange {
    /// Facts for `log` (kept only when it is on) and `counters` (timed only when anyone reads
    /// the duration).
    pub fn new(
        log: &super::Log,
        counters: &crate::metrics::Core,
        listener: ListenerId,
        peer: SocketAddr,
    ) -> Exchange {
        let (logging, counting) = (log.enabled(), counters.enabled());
        Exchange {
            listener,
            peer,
            client_ip: peer.ip(),
            client_port: Some(peer.port()),
            offered: false,
            logging,
            timed: logging || counting,
            upstream: None,
            server: None,
            attempts: 0,
            status: 0,
            upstream_ns: None,
            start: None,
            received_mark: 0,
            sent_mark: 0,
            text: if logging {
                Vec::with_capacity(256)
            } else {
                Vec::new()
            },
            ends: [0; 5],
            version: Version::Http11,
            raw: false,
            id: [0; MAX_ID],
            id_len: 0,
            end: SystemTime::UNIX_EPOCH,
            done: None,
        }
    }

    /// Reused for another connection (a per-core pool keeps these while connections are
    /// idle): its addresses, the generation's switches, and `marks`, the connection's byte
    /// totals at the end of its previous exchange (see [`Exchange::marks`]).
    pub fn rebind(
        &mut self,
        log: &super::Log,
        counters: &crate::metrics::Core,
        listener: ListenerId,
        peer: SocketAddr,
        marks: (u64, u64),
    ) {
        let (logging, counting) = (log.enabled(), counters.enabled());
        self.listener = listener;
        self.peer = peer;
        self.client_ip = peer.ip();
        self.client_port = Some(peer.port());
        self.logging = logging;
        self.timed = logging || counting;
        (self.received_mark, self.sent_mark) = marks;
        self.reset();
    }

    /// The connection's byte totals (received, sent) when its last exchange ended.
    pub fn marks(&self) -> (u64, u64) {
        (self.received_mark, self.sent_mark)
    }

    fn reset(&mut self) {
        self.upstream = None;
        self.server = None;
        self.attempts = 0;
        self.status = 0;
        self.upstream_ns = None;
        self.start = self.timed.then(Instant::now);
        self.text.clear();
        self.ends = [0; 5];
        self.raw = false;
        self.id_len = 0;
        self.offered = false;
        self.done = None;
    }

    /// The request head in `buf` parsed into `head`: the clock starts, and (access log on) the
    /// request line, a few headers and the request id are copied.
    pub fn begin(&mut self, log: &super::Log, id_header: &[u8], buf: &[u8], head: &RequestHead) {
        self.reset();
        if !self.logging {
            return;
        }
        self.version = head.version;
        self.push(METHOD, head.method_span.get(buf));
        self.push(TARGET, head.target.get(buf));
        self.push(HOST, head.host.map(|h| h.get(buf)).unwrap_or_default());
        let hs = &head.headers;
        self.push(
            AGENT,
            find_header(buf, hs, b"user-agent").unwrap_or_default(),
        );
        self.push(
            REFERER,
            find_header(buf, hs, b"referer").unwrap_or_default(),
        );
        match find_header(buf, hs, id_header) {
            Some(id) if valid_id(id) => {
                self.id[..id.len()].copy_from_slice(id);
                self.id_len = id.len() as u8;
                self.offered = true;
            }
            _ => {
                let n = log.generate_id(&mut self.id);
                self.id_len = n as u8;
            }
        }
    }

    /// The proxy decided who the client is: `sender` sent the request (the TCP peer, or the
    /// source the PROXY protocol header gave), `client_ip` is the effective client (`sender`'s,
    /// or what a trusted `real_ip_header` said). The client's request id is adopted only when
    /// `sender` is in `access_log.request_id_from`; otherwise it is replaced by a new one.
    pub fn client(&mut self, sender: SocketAddr, client_ip: IpAddr, log: &super::Log) {
        if !self.logging {
            return;
        }
        self.client_ip = client_ip;
        self.client_port = (client_ip == sender.ip()).then_some(sender.port());
        if self.offered && !log.trusts_request_id(sender.ip()) {
            let n = log.generate_id(&mut self.id);
            self.id_len = n as u8;
        }
        self.offered = false;
    }

    /// The request head was refused (400, 408, 414, 431…): `buf` holds what the client sent;
    /// its first line is logged as the request.
    pub fn refused(&mut self, buf: &[u8]) {
        self.reset();
        if !self.logging {
            return;
        }
        let line = buf
            .split(|&b| b == b'\r' || b == b'\n')
            .next()
            .unwrap_or(buf);
        self.push(METHOD, b"");
        self.push(TARGET, line);
        for f in [HOST, AGENT, REFERER] {
            self.push(f, b"");
        }
        self.raw = true;
    }

    fn push(&mut self, field: usize, bytes: &[u8]) {
        let n = bytes.len().min(MAX_FIELD);
        self.text.extend_from_slice(&bytes[..n]);
        self.ends[field] = self.text.len() as u32;
    }

    fn field(&self, field: usize) -> &[u8] {
        let start = if field == 0 {
            0
        } else {
            self.ends[field - 1] as usize
        };
        self.text
            .get(start..self.ends[field] as usize)
            .unwrap_or_default()
    }

    /// The id to forward upstream as `X-Request-Id`: None when the access log is off (the
    /// request is forwarded as received). Valid after [`Exchange::client`].
    pub fn request_id(&self) -> Option<&[u8]> {
        (self.id_len > 0).then(|| &self.id[..self.id_len as usize])
    }

    /// A server of `upstream` is being tried for this request (again, on a retry).
    #[inline]
    pub fn attempt(&mut self, upstream: UpstreamId, server: ServerId) {
        self.upstream = Some(upstream);
        self.server = Some(server);
        self.attempts += 1;
    }

    /// Routed to `upstream`, before any server is picked (so a 503 without a server still
    /// counts against the upstream).
    #[inline]
    pub fn routed(&mut self, upstream: UpstreamId) {
        self.upstream = Some(upstream);
    }

    /// The server's response head arrived `ns` after the request was written.
    #[inline]
    pub fn upstream_time(&mut self, ns: u64) {
        self.upstream_ns = Some(ns);
    }

    /// The status sent to the client (the last call wins).
    #[inline]
    pub fn status(&mut self, status: u16) {
        self.status = status;
    }

    /// The exchange ended; `received`/`sent` are the client connection's byte totals so far.
    pub fn finish(&mut self, received: u64, sent: u64) -> Request {
        let duration_ns = self
            .start
            .take()
            .map_or(0, |s| s.elapsed().as_nanos() as u64);
        if self.status == 0 {
            self.status = CLIENT_CLOSED;
        }
        let target = match (self.server, self.upstream) {
            (Some(s), _) => Target::Server(s),
            (None, Some(u)) => Target::Upstream(u),
            (None, None) => Target::None,
        };
        let r = Request {
            listener: self.listener,
            upstream: self.upstream,
            target,
            status: self.status,
            attempts: self.attempts,
            duration_ns,
            upstream_ns: self.upstream_ns,
            received: received.saturating_sub(self.received_mark),
            sent: sent.saturating_sub(self.sent_mark),
        };
        self.received_mark = received;
        self.sent_mark = sent;
        if self.logging {
            self.end = SystemTime::now();
        }
        self.done = Some(r);
        r
    }

    /// The connection moved to another generation, where its listener is `listener`.
    pub fn moved(&mut self, listener: ListenerId) {
        self.listener = listener;
    }

    // Read access for the access log.
    pub fn listener(&self) -> ListenerId {
        self.listener
    }
    /// The TCP peer.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The effective client address (PROXY protocol or trusted real_ip), and its port when
    /// known.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }
    pub fn client_port(&self) -> Option<u16> {
        self.client_port
    }
    pub fn upstream(&self) -> Option<UpstreamId> {
        self.upstream
    }
    pub fn server(&self) -> Option<ServerId> {
        self.server
    }
    pub fn method(&self) -> &[u8] {
        self.field(METHOD)
    }
    pub fn target(&self) -> &[u8] {
        self.field(TARGET)
    }
    pub fn host(&self) -> &[u8] {
        self.field(HOST)
    }
    pub fn user_agent(&self) -> &[u8] {
        self.field(AGENT)
    }
    pub fn referer(&self) -> &[u8] {
        self.field(REFERER)
    }
    /// "HTTP/1.1", or "" when the request was refused before it parsed.
    pub fn protocol(&self) -> &'static str {
        match (self.raw, self.version) {
            (true, _) => "",
            (false, Version::Http10) => "HTTP/1.0",
            (false, Version::Http11) => "HTTP/1.1",
        }
    }
    pub fn is_raw(&self) -> bool {
        self.raw
    }
    pub fn end_time(&self) -> SystemTime {
        self.end
    }
    pub fn done(&self) -> Option<&Request> {
        self.done.as_ref()
    }
}

/// A request id from a client is kept only if it is short and has nothing to escape in either
/// log format (visible ASCII without quote or backslash), so it can be logged and forwarded as
/// is and cannot inject into a log line or a header.
fn valid_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .iter()
            .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_clients_are_checked() {
        assert!(valid_id(b"abc-123_XYZ.=+/"));
        assert!(!valid_id(b""));
        assert!(!valid_id(b"a b"));
        assert!(!valid_id(b"a\"b"));
        assert!(!valid_id(b"a\\b"));
        assert!(!valid_id("é".as_bytes()));
        assert!(!valid_id(&[b'a'; MAX_ID + 1]));
        assert!(valid_id(&[b'a'; MAX_ID]));
    }
}
