//! PROXY protocol (HAProxy's v1 text and v2 binary headers): the client address as an L4
//! balancer in front of ringlb saw it, and the same for servers behind ringlb.
//! Parsing and encoding are the `ppp` crate's.
//!
//! The header is read from the raw TCP stream before a TLS handshake, never from inside TLS
//! (nginx `listen ... ssl proxy_protocol`, HAProxy `accept-proxy`): an L4 balancer sends it
//! first, and a header inside TLS would let any TLS client choose its own address.

use super::Conn;
use crate::config::ProxyProtocol;
use crate::engine::Stream;
use ppp::v2::{Builder, Command, Protocol, Version};
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The largest PROXY header accepted: v1 is at most 107 bytes; v2 is 16 bytes, the
/// addresses and TLVs (cloud balancers add a few dozen bytes of TLVs).
const MAX_HEADER: usize = 1024;

/// How long to wait before looking again at a header that arrived in part (the sender put it
/// in more than one segment: rare, balancers send it in one).
const PARTIAL_WAIT: Duration = Duration::from_millis(10);

/// Reads the PROXY header (v1 or v2) that must open a connection, from the raw TCP stream and
/// before anything else (a TLS handshake included), within `timeout`. Returns the client's
/// address (the connection's own peer for `UNKNOWN`/`LOCAL`), or None when the header is
/// missing, invalid or late: the connection is then closed without a response, as HAProxy
/// `accept-proxy` and nginx `listen ... proxy_protocol` do.
///
/// The header is peeked first and then exactly its bytes are consumed, so what follows it (a
/// TLS ClientHello, or the request) stays queued for the next reader.
pub async fn read_header(
    stream: &mut Stream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<SocketAddr> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::debug!("{peer}: no complete PROXY header within {timeout:?}");
            return None;
        }
        let n = match stream.peek(&mut buf, left).await {
            Ok(n) if n > 0 => n,
            _ => return None,
        };
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_incomplete() {
            if n == MAX_HEADER {
                log::debug!("{peer}: PROXY header longer than {MAX_HEADER} bytes");
                return None;
            }
            if n == seen {
                crate::engine::sleep(PARTIAL_WAIT).await;
            }
            seen = n;
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h.addresses)),
            HeaderResult::V1(Err(e)) => {
                log::debug!("{peer}: invalid PROXY v1 header: {e}");
                return None;
            }
            HeaderResult::V2(Err(e)) => {
                log::debug!("{peer}: invalid PROXY v2 header: {e}");
                return None;
            }
        };
        let len = len.min(n);
        stream.read_exact(&mut buf[..len], left).await.ok()?;
        return Some(source.unwrap_or(peer));
    }
}

impl Conn<'_> {
    /// Writes the PROXY header for this client to a new upstream connection.
    pub(super) async fn send_proxy_header(
        &self,
        up: &mut Stream,
        version: ProxyProtocol,
    ) -> std::io::Result<()> {
        let source = SocketAddr::new(self.r.client_ip, self.c.peer.port());
        let destination = self.c.stream.local_addr()?;
        let header = match version {
            ProxyProtocol::V1 => ppp::v1::Addresses::from((source, destination))
                .to_string()
                .into_bytes(),
            ProxyProtocol::V2 => Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (source, destination),
            )
            .build()?,
        };
        up.write_all(&header, self.config.timeouts.upstream_send)
            .await
    }
}

fn v1_source(a: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v1::Addresses::Tcp4(ip) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v1::Addresses::Tcp6(ip) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(a: &ppp::v2::Addresses) -> Option<SocketAddr> {
    match a {
        ppp::v2::Addresses::IPv4(ip) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v2::Addresses::IPv6(ip) => {
            Some(SocketAddr::new(ip.source_address.into(), ip.source_port))
        }
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    }
}
