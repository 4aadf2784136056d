//! ringlb's own endpoints on the admin listener (loopback by default), served by worker 0,
//! off the request path: `/live`, `/ready`, `/metrics` (Prometheus text format 0.0.4).

use crate::http1::{self, Status};
use crate::runtime::io::{self, Listener, Stream};
use crate::runtime::Worker;
use crate::upstream::state::now_ms;
use std::rc::Rc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(w: Rc<Worker>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => io::spawn_detached(handle(w.clone(), stream)),
            Err(e) => {
                log::warn!("admin accept failed: {e}");
                io::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(w: Rc<Worker>, mut s: Stream) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let mut head = http1::RequestHead::new();
    let limits = http1::Limits::default();
    loop {
        match s.read(&mut buf[len..], TIMEOUT).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        match http1::parse_request(&buf[..len], &limits, &mut head) {
            Ok(Status::Complete) => break,
            Ok(Status::Partial) if len < buf.len() => continue,
            _ => {
                let mut out = Vec::new();
                http1::write_error(400, true, &[], &mut out);
                let _ = s.write_all(&out, TIMEOUT).await;
                return;
            }
        }
    }
    let path = head.target.get(&buf[..len]);
    let path = path.split(|&b| b == b'?').next().unwrap_or(path);
    let mut content_type = "text/plain";
    let (status, body) = match path {
        b"/live" => (200, "ok\n".to_string()),
        b"/ready" => ready(&w),
        b"/metrics" if w.shared.metrics.enabled() => {
            content_type = crate::metrics::CONTENT_TYPE;
            (200, crate::metrics::render(&w.shared))
        }
        b"/metrics" => (
            404,
            "metrics are disabled ([metrics] enabled = false)\n".into(),
        ),
        _ => (404, "not found\n".to_string()),
    };
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            http1::reason(status),
            body.len()
        )
        .as_bytes(),
    );
    if head.method != http1::Method::Head {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = s.write_all(&out, TIMEOUT).await;
}

/// 200 when serving; 503 while stopping or when a routed upstream has no usable server.
fn ready(w: &Worker) -> (u16, String) {
    let shared = &w.shared;
    if shared.stopping() {
        return (503, "stopping\n".into());
    }
    let config = &shared.config;
    let now = now_ms();
    for r in &config.routes {
        let u = &config.upstreams[r.upstream.0 as usize];
        if !u.servers.iter().any(|s| shared.state.get(s.id).usable(now)) {
            return (503, format!("upstream {} has no usable server\n", u.name));
        }
    }
    (200, "ready\n".into())
}
