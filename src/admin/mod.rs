//! ringlb's own endpoints on the admin listener (loopback by default), served by worker 0, off
//! the request path. One request per connection (`Connection: close`).
//!
//! | route                                   | methods                    | token |
//! |-----------------------------------------|----------------------------|-------|
//! | `/live`                                 | GET, HEAD                  | no    |
//! | `/ready`                                | GET, HEAD                  | no    |
//! | `/metrics`                              | GET, HEAD                  | yes   |
//! | `/api/upstreams`                        | GET, HEAD                  | yes   |
//! | `/api/upstreams/{u}`                    | GET, HEAD                  | yes   |
//! | `/api/upstreams/{u}/servers`            | POST (add a server)        | yes   |
//! | `/api/upstreams/{u}/servers/{s}`        | GET, HEAD, POST, PUT, PATCH, DELETE | yes |
//!
//! With `admin.token` set, `/api/*` and `/metrics` require `Authorization: Bearer <token>`
//! (401 otherwise); `/live` and `/ready` stay open for probes. The JSON shapes are in `api.rs`.
//! Errors under `/api` are JSON `{"error": "..."}`.
//!
//! Not reachable from a web page (a browser on the host must not be a way in), checked in this
//! order on every request:
//! 1. `Host` (TCP listener only) must be an IP literal, `localhost` or one of
//!    `admin.allow_hosts`, any port: anything else is 421 Misdirected Request. A page that
//!    rebinds its own name to 127.0.0.1 sends its name as Host, so it cannot read `/api` or
//!    `/metrics`.
//! 2. An `Origin` header not in `admin.allow_origins` (empty by default) is 403: browsers send
//!    it on every cross-origin POST and on CORS reads; curl, probes and scripts do not.
//! 3. The token, then the method (405).
//! 4. A write (POST, PUT, PATCH) must say `Content-Type: application/json` (415 otherwise):
//!    a page can send `text/plain`, form and multipart bodies without a CORS preflight, never
//!    JSON.
//!
//! At most `admin.max_connections` connections are served at once; more are closed at accept.
//! A request head is at most 8 KiB and a body at most 64 KiB (`request.rs`).

mod api;
mod request;

use crate::config::{Admin, AdminListen};
use crate::context::{Shared, Worker};
use crate::engine::{self, Listener, Stream};
use crate::http1::{self, Method};
use crate::state::{now_ms, Event, Reply, ServerChange};
use request::{ReadError, Request};
use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::rc::Rc;
use std::time::Duration;

/// Reading a whole request, and writing the answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin listener (shared with the caller, which may stop its accepts).
pub async fn serve(w: Rc<Worker>, listener: Rc<Listener>) {
    /// One open admin connection, counted until it ends.
    struct Open(Rc<Cell<usize>>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    let open = Rc::new(Cell::new(0));
    let throttle = engine::Throttle::new(Duration::from_secs(10));
    loop {
        match listener.accept_local().await {
            Ok(stream) => {
                let max = w.current.load().config.admin.max_connections;
                if open.get() >= max {
                    // Closed before reading anything (as a listener's max_connections).
                    drop(stream);
                    continue;
                }
                open.set(open.get() + 1);
                let guard = Open(open.clone());
                let w = w.clone();
                engine::spawn_detached(async move {
                    handle(w, stream).await;
                    drop(guard);
                });
            }
            Err(e) => {
                if let Some(skipped) = throttle.allow() {
                    log::warn!("admin accept failed: {e} ({skipped} more since the last line)");
                }
                engine::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(w: Rc<Worker>, mut s: Stream) {
    let mut req = match request::read_head(&mut s, TIMEOUT).await {
        Ok(r) => r,
        Err(ReadError::Closed) => return,
        Err(ReadError::Status(status)) => {
            let mut out = Vec::new();
            http1::write_error(status, true, &[], &mut out);
            let _ = s.write_all(&out, TIMEOUT).await;
            return;
        }
    };
    // The generation in force now, not the one this core started with.
    let shared = w.current.load_full();
    let response = respond(&shared, &mut req, &mut s).await;
    let mut out = Vec::with_capacity(256 + response.body.len());
    response.write(req.method == Method::Head, &mut out);
    if s.write_all(&out, TIMEOUT).await.is_ok() && req.body_unread() {
        request::linger(&mut s).await;
    }
}

/// What a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Live,
    Ready,
    Metrics,
    Upstreams,
    Reload,
    Upstream(String),
    /// `/api/upstreams/{u}/servers`: where servers are added.
    Servers(String),
    Server(String, String),
    /// Under `/api/` but no such route.
    ApiNotFound,
    /// A path segment that is not valid percent-encoded UTF-8.
    BadPath,
    NotFound,
}

impl Target {
    fn parse(path: &[u8]) -> Target {
        match path {
            b"/live" => return Target::Live,
            b"/ready" => return Target::Ready,
            b"/metrics" => return Target::Metrics,
            _ => {}
        }
        let Some(rest) = path.strip_prefix(b"/api/") else {
            return Target::NotFound;
        };
        let rest = rest.strip_suffix(b"/").unwrap_or(rest);
        let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
        let decode = |p: &[u8]| percent_decode(p).filter(|s| !s.is_empty());
        match parts.as_slice() {
            [b"upstreams"] => Target::Upstreams,
            [b"reload"] => Target::Reload,
            [b"upstreams", u] => match decode(u) {
                Some(u) => Target::Upstream(u),
                None => Target::BadPath,
            },
            [b"upstreams", u, b"servers"] => match decode(u) {
                Some(u) => Target::Servers(u),
                None => Target::BadPath,
            },
            [b"upstreams", u, b"servers", s] => match (decode(u), decode(s)) {
                (Some(u), Some(s)) => Target::Server(u, s),
                _ => Target::BadPath,
            },
            _ => Target::ApiNotFound,
        }
    }

    fn protected(&self) -> bool {
        !matches!(self, Target::Live | Target::Ready | Target::NotFound)
    }

    /// The `Allow` value, or None when any method gets the same answer (404).
    fn allow(&self) -> Option<&'static str> {
        match self {
            Target::Server(..) => Some("GET, HEAD, POST, PUT, PATCH, DELETE"),
            Target::Reload | Target::Servers(_) => Some("POST"),
            Target::ApiNotFound | Target::BadPath | Target::NotFound => None,
            _ => Some("GET, HEAD"),
        }
    }
}

/// `%XX` escapes decoded (the `percent-encoding` crate); None for a `%` without two hex digits
/// after it (the crate would keep it as it is) or bytes that are not UTF-8.
fn percent_decode(s: &[u8]) -> Option<String> {
    let escapes_ok = s
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'%')
        .all(|(i, _)| {
            s.get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
    if !escapes_ok {
        return None;
    }
    percent_encoding::percent_decode(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

async fn respond(shared: &Shared, req: &mut Request, s: &mut Stream) -> Response {
    let admin = &shared.config.admin;
    let tcp = matches!(admin.listen, AdminListen::Tcp(_));
    if tcp && !req.host.as_deref().is_none_or(|h| host_allowed(h, admin)) {
        return Response::text(
            421,
            "this Host is not served here; add it to admin.allow_hosts\n".into(),
        );
    }
    if let Some(origin) = &req.origin {
        if !admin
            .allow_origins
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
        {
            return Response::text(
                403,
                "cross-origin requests are refused; see admin.allow_origins\n".into(),
            );
        }
    }
    let target = Target::parse(req.path());
    if target.protected() {
        if let Some(token) = &shared.config.admin.token {
            match authorize(token.as_bytes(), req.authorization.as_deref()) {
                Auth::Granted => {}
                Auth::Missing => {
                    return Response::error(401, "a bearer token is required")
                        .header("WWW-Authenticate", "Bearer realm=\"ringlb\"".into())
                }
                Auth::Invalid => {
                    return Response::error(401, "invalid token").header(
                        "WWW-Authenticate",
                        "Bearer realm=\"ringlb\", error=\"invalid_token\"".into(),
                    )
                }
            }
        }
    }
    let write = matches!(req.method, Method::Post | Method::Put | Method::Patch);
    let read = matches!(req.method, Method::Get | Method::Head);
    let allowed = match target {
        Target::Server(..) => read || write || req.method == Method::Delete,
        Target::Reload | Target::Servers(_) => req.method == Method::Post,
        _ => read,
    };
    if let Some(allow) = target.allow().filter(|_| !allowed) {
        let r = if target.protected() {
            Response::error(405, "method not allowed")
        } else {
            Response::text(405, "method not allowed\n".into())
        };
        return r.header("Allow", allow.into());
    }
    if write && !req.content_type.as_deref().is_some_and(is_json) {
        return Response::error(415, "a change needs Content-Type: application/json");
    }
    match target {
        Target::Live => Response::text(200, "ok\n".into()),
        Target::Ready => {
            let (status, body) = ready(shared);
            Response::text(status, body)
        }
        Target::Metrics if shared.metrics.enabled() => Response {
            content_type: crate::metrics::CONTENT_TYPE,
            ..Response::text(200, crate::metrics::render(&shared.scrape()))
        },
        Target::Metrics => Response::text(
            404,
            "metrics are disabled ([metrics] enabled = false)\n".into(),
        ),
        Target::Upstreams => api::upstreams(shared),
        Target::Reload => reload(shared).await,
        Target::Upstream(u) => api::upstream(shared, &u),
        Target::Server(u, srv) if write => match body(req, s).await {
            Ok(body) => api::change(shared, &u, &srv, &body),
            Err(r) => r,
        },
        Target::Servers(u) => match body(req, s).await {
            Ok(body) => match api::add(shared, &u, &body) {
                Ok(change) => ask(shared, change).await,
                Err(r) => r,
            },
            Err(r) => r,
        },
        Target::Server(u, srv) if req.method == Method::Delete => {
            ask(
                shared,
                ServerChange::Remove {
                    upstream: u,
                    name: srv,
                },
            )
            .await
        }
        Target::Server(u, srv) => api::server(shared, &u, &srv),
        Target::ApiNotFound => Response::error(404, "no such API route"),
        Target::BadPath => Response::error(400, "invalid percent-encoding in the path"),
        Target::NotFound => Response::text(404, "not found\n".into()),
    }
}

/// The request body, or the answer that says why there is none.
async fn body(req: &mut Request, s: &mut Stream) -> Result<Vec<u8>, Response> {
    if req.body_too_large() {
        return Err(Response::error(413, "the body is larger than 64 KiB"));
    }
    req.body(s).await.map_err(|e| match e {
        ReadError::Status(413) => Response::error(413, "the body is larger than 64 KiB"),
        ReadError::Status(status) => Response::error(status, "the request body could not be read"),
        ReadError::Closed => Response::error(400, "the request body was cut short"),
    })
}

/// Asks the control thread to change the servers (it publishes generations) and waits for
/// its answer.
async fn ask(shared: &Shared, change: ServerChange) -> Response {
    let reply = std::sync::Arc::new(Reply::default());
    shared.life.send(Event::Servers(change, reply.clone()));
    if !reply.done.wait_for(&mut 0, TIMEOUT).await {
        return Response::error(504, "the change did not finish in time");
    }
    match reply.get() {
        Some((status, json)) => Response::raw_json(*status, json.clone()),
        None => Response::error(500, "the change was not answered"),
    }
}

/// Asks the control thread to reload the configuration file and waits for the outcome.
async fn reload(shared: &Shared) -> Response {
    let life = &shared.life;
    let done = std::sync::Arc::new(engine::Signal::default());
    life.send(Event::Reload(Some(done.clone())));
    if !done.wait_for(&mut 0, TIMEOUT).await {
        return Response::error(504, "the reload did not finish in time");
    }
    match life.last_reload_error.load_full() {
        None => Response::json(
            200,
            &serde_json::json!({ "reloaded": true, "generation": life.generation() }),
        ),
        Some(e) => Response::error(422, &format!("configuration refused: {e}")),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Auth {
    Granted,
    Missing,
    Invalid,
}

/// Checks an `Authorization` value against `token` (RFC 6750 §2.1: `Bearer <token>`, the
/// scheme case-insensitive).
fn authorize(token: &[u8], header: Option<&[u8]>) -> Auth {
    let Some(value) = header else {
        return Auth::Missing;
    };
    let (scheme, given) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], value[i..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Auth::Missing;
    }
    if constant_time_eq(given, token) {
        Auth::Granted
    } else {
        Auth::Invalid
    }
}

/// Compares in time that depends only on the length of `expected`, so response timing does
/// not reveal how much of a guess was right.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, &e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= usize::from(g ^ e);
    }
    std::hint::black_box(diff) == 0
}

/// `application/json`, parameters (`; charset=utf-8`) allowed.
fn is_json(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// A `Host` value this listener answers for: an IP literal, `localhost`, or one of
/// `admin.allow_hosts`, with any port.
fn host_allowed(host: &[u8], admin: &Admin) -> bool {
    let name = if host.first() == Some(&b'[') {
        // An IPv6 literal: "[::1]" or "[::1]:9901".
        return host.iter().position(|&b| b == b']').is_some_and(|end| {
            std::str::from_utf8(&host[1..end]).is_ok_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
                && (host.len() == end + 1 || port(&host[end + 1..]))
        });
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(i) if port(&host[i..]) => &host[..i],
            Some(_) => return false,
            None => host,
        }
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return false;
    };
    name.parse::<Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || admin
            .allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

/// ":" followed by 1 to 5 digits.
fn port(s: &[u8]) -> bool {
    s.first() == Some(&b':') && (2..=6).contains(&s.len()) && s[1..].iter().all(u8::is_ascii_digit)
}

/// 200 while the process serves: every worker runs and it is not stopping. With
/// `admin.ready_requires`, also 503 while a listed upstream has fewer usable servers than
/// `admin.ready_min_servers` (drained, in maintenance, or down by passive or active checks).
/// No upstream counts by default: one empty upstream must not take every node out at once.
fn ready(shared: &Shared) -> (u16, String) {
    // Handed over: the new process serves the same sockets (this one answers only the admin
    // connections it had accepted).
    if shared.stopping() && !shared.life.handed_over() {
        return (503, "stopping\n".into());
    }
    if !shared.life.serving() {
        return (503, "starting\n".into());
    }
    let config = &shared.config;
    let now = now_ms();
    for r in &config.admin.ready_requires {
        let u = &config.upstreams[r.upstream.0 as usize];
        let usable = u
            .servers
            .iter()
            .filter(|s| shared.state.get(s.id).usable(now))
            .count();
        if usable < r.min_servers {
            return (
                503,
                format!(
                    "upstream {} has {usable} usable servers, fewer than {} \
                     (admin.ready_requires)\n",
                    u.name, r.min_servers
                ),
            );
        }
    }
    (200, "ready\n".into())
}

/// An answer, written with `Connection: close`.
struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Response {
    fn text(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body,
        }
    }

    fn json(status: u16, value: &impl serde::Serialize) -> Response {
        let body = serde_json::to_string(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode: {e}\"}}"));
        Response::raw_json(status, body)
    }

    /// JSON already encoded.
    fn raw_json(status: u16, mut body: String) -> Response {
        body.push('\n');
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }
    }

    fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    fn header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    fn write(&self, head_only: bool, out: &mut Vec<u8>) {
        use std::fmt::Write;
        let mut head = String::with_capacity(256);
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\n",
            self.status,
            http1::reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        out.extend_from_slice(head.as_bytes());
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_targets() {
        assert_eq!(Target::parse(b"/live"), Target::Live);
        assert_eq!(Target::parse(b"/api/upstreams"), Target::Upstreams);
        assert_eq!(Target::parse(b"/api/upstreams/"), Target::Upstreams);
        assert_eq!(
            Target::parse(b"/api/upstreams/app"),
            Target::Upstream("app".into())
        );
        assert_eq!(
            Target::parse(b"/api/upstreams/app/servers/127.0.0.1%3A80"),
            Target::Server("app".into(), "127.0.0.1:80".into())
        );
        assert_eq!(
            Target::parse(b"/api/upstreams/app/servers"),
            Target::Servers("app".into())
        );
        assert_eq!(
            Target::parse(b"/api/upstreams/app/servers/x/y"),
            Target::ApiNotFound
        );
        assert_eq!(Target::parse(b"/api/upstreams//servers/a"), Target::BadPath);
        assert_eq!(Target::parse(b"/api/upstreams/%zz"), Target::BadPath);
        // Where percent-encoding alone would keep a bad escape, the path is still refused.
        for bad in [
            &b"/api/upstreams/a%"[..],
            b"/api/upstreams/a%4",
            b"/api/upstreams/%4g",
        ] {
            assert_eq!(Target::parse(bad), Target::BadPath, "{bad:?}");
        }
        assert_eq!(Target::parse(b"/api/upstreams/%FF"), Target::BadPath);
        assert_eq!(
            Target::parse(b"/api/upstreams/%C3%A9t%c3%a9"),
            Target::Upstream("été".into())
        );
        assert_eq!(Target::parse(b"/api/other"), Target::ApiNotFound);
        assert_eq!(Target::parse(b"/apix"), Target::NotFound);
        assert!(!Target::parse(b"/ready").protected());
        assert!(Target::parse(b"/metrics").protected());
        assert!(Target::parse(b"/api/nope").protected());
    }

    #[test]
    fn hosts_served() {
        let admin = Admin {
            listen: AdminListen::Tcp("127.0.0.1:9901".parse().unwrap()),
            token: None,
            ready_requires: Vec::new(),
            allow_origins: Vec::new(),
            allow_hosts: vec!["lb1.internal".into()],
            max_connections: 64,
        };
        for ok in [
            &b"127.0.0.1"[..],
            b"127.0.0.1:9901",
            b"10.1.2.3:80",
            b"[::1]",
            b"[::1]:9901",
            b"localhost",
            b"LocalHost:1",
            b"lb1.internal:9901",
        ] {
            assert!(host_allowed(ok, &admin), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b"evil.example"[..],
            b"evil.example:9901",
            b"localhost.evil.example",
            b"127.0.0.1.nip.io",
            b"[::1",
            b"[::1]x",
            b"127.0.0.1:",
            b"127.0.0.1:99999999",
            b"admin",
        ] {
            assert!(
                !host_allowed(bad, &admin),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(!is_json(b"text/plain"));
        assert!(!is_json(b"application/jsonx"));
    }

    #[test]
    fn bearer_tokens() {
        let t = b"0123456789abcdef";
        assert_eq!(authorize(t, None), Auth::Missing);
        assert_eq!(authorize(t, Some(b"Basic eDp5")), Auth::Missing);
        assert_eq!(
            authorize(t, Some(b"Bearer 0123456789abcdef")),
            Auth::Granted
        );
        assert_eq!(
            authorize(t, Some(b"bearer  0123456789abcdef")),
            Auth::Granted
        );
        assert_eq!(
            authorize(t, Some(b"Bearer 0123456789abcdeF")),
            Auth::Invalid
        );
        assert_eq!(authorize(t, Some(b"Bearer 0123456789abcde")), Auth::Invalid);
        assert_eq!(
            authorize(t, Some(b"Bearer 0123456789abcdef0")),
            Auth::Invalid
        );
        assert_eq!(authorize(t, Some(b"Bearer")), Auth::Invalid);
    }

    #[test]
    fn responses_close_and_head_has_no_body() {
        let r = Response::error(404, "no upstream named \"x\"").header("Allow", "GET".into());
        let mut out = Vec::new();
        r.write(false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(
            text.contains("Allow: GET\r\nConnection: close\r\n\r\n"),
            "{text}"
        );
        assert!(
            text.ends_with("{\"error\":\"no upstream named \\\"x\\\"\"}\n"),
            "{text}"
        );
        let mut head = Vec::new();
        r.write(true, &mut head);
        assert!(head.ends_with(b"\r\n\r\n"));
    }
}
