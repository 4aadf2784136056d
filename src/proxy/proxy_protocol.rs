//! PROXY protocol (HAProxy's v1 text and v2 binary headers): the client address as an L4
//! balancer in front of ringlb saw it, and the same for servers behind ringlb.
//! Parsing and encoding are the `ppp` crate's.

use super::Conn;
use crate::config::ProxyProtocol;
use crate::engine::Stream;
use ppp::v2::{Builder, Command, Protocol, Version};
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::Instant;

impl Conn<'_> {
    /// Reads the PROXY header that must open the connection. Returns the client's address
    /// (the connection's own peer for `UNKNOWN`/`LOCAL`), or None when the header is missing,
    /// invalid or late: the connection is then closed without a response, as HAProxy does.
    pub(super) async fn read_proxy_header(&mut self) -> Option<SocketAddr> {
        let deadline = Instant::now() + self.config.timeouts.client_header;
        loop {
            let parsed = HeaderResult::parse(self.c.buf.filled());
            if !parsed.is_incomplete() {
                let (len, source) = match parsed {
                    HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
                    HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h.addresses)),
                    HeaderResult::V1(Err(e)) => {
                        log::debug!("{}: invalid PROXY v1 header: {e}", self.c.peer);
                        return None;
                    }
                    HeaderResult::V2(Err(e)) => {
                        log::debug!("{}: invalid PROXY v2 header: {e}", self.c.peer);
                        return None;
                    }
                };
                self.c.buf.consume(len);
                return Some(source.unwrap_or(self.c.peer));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.c.buf.is_full() {
                return None;
            }
            match self.c.buf.fill(&mut self.c.stream, left).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Writes the PROXY header for this client to a new upstream connection.
    pub(super) async fn send_proxy_header(
        &self,
        up: &mut Stream,
        version: ProxyProtocol,
    ) -> std::io::Result<()> {
        let source = SocketAddr::new(self.c.client_ip, self.c.peer.port());
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
