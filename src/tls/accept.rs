//! The TLS handshake of an accepted connection, run on the core that accepted it before the
//! proxy sees the connection. Bounded as a whole by `timeouts.client_header`.

use crate::config::{ListenerId, Timeouts};
use crate::engine::Stream;
use crate::metrics;
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
    match stream.peek_byte(t.client_header).await {
        Ok(Some(TLS_HANDSHAKE)) => {}
        Ok(Some(b)) if b.is_ascii_alphabetic() => {
            log::info!("{peer}: plain HTTP on a TLS listener; answered 400");
            if stream.write_all(PLAIN_HTTP, t.client_send).await.is_ok() {
                // Read what is queued so the close is a FIN, not a reset that could discard
                // the answer before the client reads it.
                let mut sink = [0u8; 4096];
                let _ = stream
                    .read(&mut sink, std::time::Duration::from_millis(1))
                    .await;
            }
            return None;
        }
        Ok(Some(_)) => {
            log::info!("{peer}: TLS handshake failed: not a TLS handshake record");
            return None;
        }
        Ok(None) => return None,
        Err(e) => {
            log::info!("{peer}: TLS handshake failed: {e}");
            return None;
        }
    }
    match stream.accept_tls(config, t.client_header).await {
        Ok(tls) => {
            metrics.tls_handshake(listener, true);
            Some(tls)
        }
        Err(e) => {
            metrics.tls_handshake(listener, false);
            log::info!("{peer}: TLS handshake failed: {e}");
            None
        }
    }
}
