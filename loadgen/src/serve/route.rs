//! Which answer a request gets, decided from its method and path alone (no I/O).

use std::time::Duration;

use crate::http::request::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: the instance's health status.
    Health,
    /// `POST /control/health/<code>`: switch the instance's health status.
    SetHealth(u16),
    /// `GET /stats`: the instance's counters as JSON.
    Stats,
    /// `/ws` with `Upgrade: websocket`: 101, then a raw byte echo.
    WebSocket,
    /// Everything else, shaped by the behaviour options.
    Normal(Normal),
    /// A special path with a bad argument, or the wrong method for a control path.
    Bad(u16),
}

/// The answer to an ordinary request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Normal {
    /// `/status/<code>` overrides `--status`.
    pub status: Option<u16>,
    pub body: BodyChoice,
    /// `/delay/<ms>`, on top of `--delay`.
    pub delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyChoice {
    /// The request body if there is one, else `--body-size` bytes or `<name>\n`.
    Default,
    /// `/echo`: the raw request head.
    RequestHead,
    /// `/size/<bytes>`.
    Size(u64),
}

pub fn route(method: Method, path: &[u8], websocket: bool) -> Route {
    let normal = Normal {
        status: None,
        body: BodyChoice::Default,
        delay: Duration::ZERO,
    };
    if let Some(code) = path.strip_prefix(b"/control/health/") {
        return match (method, number(code)) {
            (Method::Post | Method::Put, Some(c @ 200..=599)) => Route::SetHealth(c as u16),
            (Method::Post | Method::Put, _) => Route::Bad(400),
            _ => Route::Bad(405),
        };
    }
    if let Some(code) = path.strip_prefix(b"/status/") {
        return match number(code) {
            Some(c @ 200..=599) => Route::Normal(Normal {
                status: Some(c as u16),
                ..normal
            }),
            _ => Route::Bad(400),
        };
    }
    if let Some(ms) = path.strip_prefix(b"/delay/") {
        return match number(ms) {
            Some(ms) if ms <= 3_600_000 => Route::Normal(Normal {
                delay: Duration::from_millis(ms),
                ..normal
            }),
            _ => Route::Bad(400),
        };
    }
    if let Some(n) = path.strip_prefix(b"/size/") {
        return match number(n) {
            Some(n) => Route::Normal(Normal {
                body: BodyChoice::Size(n),
                ..normal
            }),
            None => Route::Bad(400),
        };
    }
    match path {
        b"/health" => Route::Health,
        b"/stats" => Route::Stats,
        b"/ws" if websocket => Route::WebSocket,
        b"/echo" => Route::Normal(Normal {
            body: BodyChoice::RequestHead,
            ..normal
        }),
        _ => Route::Normal(normal),
    }
}

/// A decimal number of at most 15 digits.
fn number(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 15 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_paths() {
        assert_eq!(route(Method::Get, b"/health", false), Route::Health);
        assert_eq!(
            route(Method::Post, b"/control/health/503", false),
            Route::SetHealth(503)
        );
        assert_eq!(
            route(Method::Get, b"/control/health/503", false),
            Route::Bad(405)
        );
        assert_eq!(
            route(Method::Post, b"/control/health/99", false),
            Route::Bad(400)
        );
        assert_eq!(
            route(Method::Get, b"/ws", false),
            Route::Normal(Normal {
                status: None,
                body: BodyChoice::Default,
                delay: Duration::ZERO
            })
        );
        assert_eq!(route(Method::Get, b"/ws", true), Route::WebSocket);
        let Route::Normal(n) = route(Method::Get, b"/delay/25", false) else {
            panic!()
        };
        assert_eq!(n.delay, Duration::from_millis(25));
        let Route::Normal(n) = route(Method::Get, b"/status/204", false) else {
            panic!()
        };
        assert_eq!(n.status, Some(204));
        let Route::Normal(n) = route(Method::Head, b"/size/7", false) else {
            panic!()
        };
        assert_eq!(n.body, BodyChoice::Size(7));
        assert_eq!(route(Method::Get, b"/size/x", false), Route::Bad(400));
    }
}
