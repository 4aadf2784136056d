//! The TLS handshake of an accepted connection, run on the core that accepted it before the
//! proxy sees the connection. Bounded as a whole by `timeouts.client_header`.
//!
//! A failed handshake is counted (`ringlb_tls_handshake_failures_total{listener,reason}`) and
//! logged at debug only: any client can fail handshakes at will (scanners, plain-HTTP probes),
//! so an info line per failure would let one client flood the log. nginx logs them at `info`
//! (below its default `error` level); HAProxy counts them and logs nothing by default.

use crate::config::{ListenerId, Timeouts};
use crate::engine::Stream;
use crate::metrics::{self, TlsFailure};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What nginx answers to plain HTTP on an HTTPS port.
const PLAIN_HTTP: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 50\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to HTTPS port.\r\n\r\n";

/// The TLS stream, or None when the handshake failed (answered and logged here).
pub async fn handshake(
    mut stream: Stream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    t: &Timeouts,
    metrics: &metrics::Core,
    listener: ListenerId,
) -> Option<Stream> {
    let failed = |reason: TlsFailure| metrics.tls_handshake(listener, Err(reason));
    match stream.peek_byte(t.client_header).await {
        Ok(Some(TLS_HANDSHAKE)) => {}
        Ok(Some(b)) if b.is_ascii_alphabetic() => {
            failed(TlsFailure::PlainHttp);
            log::debug!("{peer}: plain HTTP on a TLS listener; answered 400");
            if stream.write_all(PLAIN_HTTP, t.client_send).await.is_ok() {
                // Read what is queued so the close is a FIN, not a reset that could discard
                // the answer before the client reads it.
                // On the heap: an array here would be part of every connection's task.
                let mut sink = vec![0u8; 4096];
                let _ = stream
                    .read(&mut sink, std::time::Duration::from_millis(1))
                    .await;
            }
            return None;
        }
        Ok(Some(_)) => {
            failed(TlsFailure::NotTls);
            log::debug!("{peer}: TLS handshake failed: not a TLS handshake record");
            return None;
        }
        Ok(None) => {
            failed(TlsFailure::Closed);
            return None;
        }
        Err(e) => {
            failed(reason(&e));
            log::debug!("{peer}: TLS handshake failed: {e}");
            return None;
        }
    }
    match stream.accept_tls(config, t.client_header).await {
        Ok(tls) => {
            metrics.tls_handshake(listener, Ok(()));
            Some(tls)
        }
        Err(e) => {
            failed(reason(&e));
            log::debug!("{peer}: TLS handshake failed: {e}");
            None
        }
    }
}

fn reason(e: &std::io::Error) -> TlsFailure {
    use std::io::ErrorKind::*;
    match e.kind() {
        TimedOut => TlsFailure::Timeout,
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => TlsFailure::Closed,
        _ => TlsFailure::Error,
    }
}
