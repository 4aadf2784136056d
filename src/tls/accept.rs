//! The TLS handshake of an accepted connection, run as its own task on the core that accepted
//! it, before the proxy sees the connection. Bounded as a whole by `timeouts.client_header`.

use crate::config::ListenerId;
use crate::runtime::io::Stream;
use crate::runtime::Worker;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What nginx answers to plain HTTP on an HTTPS port.
const PLAIN_HTTP: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Content-Length: 50\r\nConnection: close\r\n\r\nThe plain HTTP request was sent to HTTPS port.\r\n\r\n";

pub async fn serve(
    w: Rc<Worker>,
    mut stream: Stream,
    peer: SocketAddr,
    listener: ListenerId,
    config: Arc<ServerConfig>,
) {
    let t = w.shared.config.timeouts;
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
            return;
        }
        Ok(Some(_)) => {
            log::info!("{peer}: TLS handshake failed: not a TLS handshake record");
            return;
        }
        Ok(None) => return,
        Err(e) => {
            log::info!("{peer}: TLS handshake failed: {e}");
            return;
        }
    }
    match stream.accept_tls(config, t.client_header).await {
        Ok(tls) => {
            w.metrics.tls_handshake(listener, true);
            crate::proxy::serve(w, tls, peer, listener).await
        }
        Err(e) => {
            w.metrics.tls_handshake(listener, false);
            log::info!("{peer}: TLS handshake failed: {e}");
        }
    }
}
