//! Why an exchange failed: which side failed, what kind, and what follows from it.
//!
//! [`Failure`] is the one failure type of a proxied exchange. Three functions decide everything
//! that depends on it, and nothing else in the proxy chooses a status or a verdict:
//! - [`Failure::answer`]: the client's status (and extra headers), or nothing when the client
//!   is gone;
//! - [`Failure::counts_against_server`]: the passive-health verdict (nginx `max_fails`);
//! - [`retry`]: whether another server may be tried, a pure function of the failure, the
//!   request and the policy.
//!
//! Passive health counts exactly the failure kinds listed in the upstream's `next_upstream`,
//! as nginx counts the kinds listed in `proxy_next_upstream`: `error` and `timeout` by
//! default. An invalid response (`invalid_header`) is not listed by default because a client
//! can provoke it at will: one route that answers with broken framing would otherwise let
//! anyone mark every server down by asking for it `max_fails` times.

use crate::config::NextUpstream;
use crate::http1::RequestError;
use std::io;

/// Extra header fields of an error response.
pub type Fields = &'static [(&'static [u8], &'static [u8])];

/// Which side of the exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client (downstream): an invalid or too slow request, or gone.
    Client,
    /// ringlb itself: no route, no server, a full queue, out of descriptors.
    Proxy,
    /// The server (upstream).
    Server,
}

/// How an I/O step with a server failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Refused, reset, closed, unreachable.
    Error,
    Timeout,
}

/// What was wrong with a server's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// A malformed, too large or ambiguously framed head (`http1::ResponseError`).
    Head,
    /// The connection closed in the middle of the head.
    Truncated,
    /// More informational (1xx) responses than a server sends in good faith.
    TooManyInformational,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnaskedUpgrade,
    /// Invalid chunked framing in the body.
    Chunked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The request head is invalid or over a limit: http1's verdict carries the status.
    Request(RequestError),
    /// The request head did not arrive within `client_header`.
    HeadTimeout,
    /// The request body stalled past `client_body`.
    BodyTimeout,
    /// The request body's chunked framing is invalid.
    BodyInvalid,
    /// The request body is larger than the route's `client_max_body_size` (declared by
    /// Content-Length, or counted while a chunked body streams).
    BodyTooLarge,
    /// The client closed or reset: there is nobody to answer.
    ClientGone,
    /// The client read the response slower than `limits.min_send_rate` allows: the
    /// connection is closed (its server slot freed) without an answer.
    SlowReader,
    /// No route matched the request.
    NoRoute,
    /// A `redirect_https` listener got a request without a Host.
    NoHost,
    /// The request's Via already names ringlb: it came round a forwarding loop.
    Loop,
    /// Every server of the upstream is down, draining, at `max_conns` or already tried.
    NoServer,
    /// The upstream's queue holds `size` requests already.
    QueueFull,
    /// The wait in the upstream's queue passed its timeout.
    QueueTimeout,
    /// ringlb ran out of descriptors, socket buffers or memory: not the server's fault.
    Local,
    /// The connection to the server could not be opened (nothing was sent).
    Connect(Cause),
    /// The request was (maybe partly) sent; no response byte arrived.
    NoResponse(Cause),
    /// The request body could not be sent to the server completely.
    BodySend(Cause),
    /// The server's response was not valid HTTP/1.1.
    BadResponse(Bad),
    /// The server answered with a status listed in `next_upstream` (e.g. 503).
    Status(u16),
    /// The response body stopped after its head was sent: the client connection is closed.
    ResponseCut(Cause),
}

impl Failure {
    /// A failed I/O step with a server, or [`Failure::Local`] when the error is ringlb's own
    /// (EMFILE, ENFILE, ENOBUFS, ENOMEM).
    pub fn server_io(e: &io::Error, kind: fn(Cause) -> Failure) -> Failure {
        if matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        ) {
            Failure::Local
        } else if is_timeout(e) {
            kind(Cause::Timeout)
        } else {
            kind(Cause::Error)
        }
    }

    pub fn side(self) -> Side {
        use Failure::*;
        match self {
            Request(_) | HeadTimeout | BodyTimeout | BodyInvalid | BodyTooLarge | ClientGone
            | SlowReader => Side::Client,
            NoRoute | NoHost | Loop | NoServer | QueueFull | QueueTimeout | Local => Side::Proxy,
            Connect(_) | NoResponse(_) | BodySend(_) | BadResponse(_) | Status(_)
            | ResponseCut(_) => Side::Server,
        }
    }

    /// The answer the client gets: a status and extra header fields; None when nothing can be
    /// sent (the client is gone, or response bytes already reached it).
    pub fn answer(self) -> Option<(u16, Fields)> {
        use Failure::*;
        const RETRY_AFTER: &[(&[u8], &[u8])] = &[(b"Retry-After", b"1")];
        let status = match self {
            ClientGone | SlowReader | ResponseCut(_) => return None,
            Request(e) => e.status(),
            HeadTimeout | BodyTimeout => 408,
            BodyInvalid | NoHost => 400,
            BodyTooLarge => 413,
            NoRoute => 404,
            Loop => 508,
            QueueFull | QueueTimeout => return Some((503, RETRY_AFTER)),
            NoServer | Local => 503,
            Connect(Cause::Timeout) | NoResponse(Cause::Timeout) | BodySend(Cause::Timeout) => 504,
            Connect(Cause::Error)
            | NoResponse(Cause::Error)
            | BodySend(Cause::Error)
            | BadResponse(_) => 502,
            // Only a retry discards such a response; when none is left, the status stands
            // for the failure (nginx answers 502 too once `proxy_next_upstream` ran out).
            Status(_) => 502,
        };
        Some((status, &[]))
    }

    /// Counts against the server's passive health: the kinds the upstream's `next_upstream`
    /// lists (see the module docs for why an invalid response is opt-in).
    pub fn counts_against_server(self, policy: &NextUpstream) -> bool {
        use Failure::*;
        match self {
            Connect(c) | NoResponse(c) | BodySend(c) => match c {
                Cause::Error => policy.error,
                Cause::Timeout => policy.timeout,
            },
            BadResponse(_) => policy.invalid_header,
            Status(code) => policy.status_fails(code),
            _ => false,
        }
    }
}

/// Whether the request body can be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body, or all of it is buffered: another attempt writes the same bytes.
    Replayable,
    /// Streamed from the client as it arrives: once started, it cannot be sent again.
    Streamed,
}

/// The request and the attempts so far, as the retry decision needs them.
#[derive(Clone, Copy, Debug)]
pub struct Attempts {
    pub idempotent: bool,
    pub body: Body,
    /// Attempts made, this one included.
    pub made: usize,
    /// `tries` of the upstream.
    pub tries: usize,
    /// Still inside the upstream's `retry_timeout`.
    pub in_time: bool,
    /// A server not yet tried could take the request.
    pub alternative: bool,
}

impl Attempts {
    /// Whether the same request bytes may be sent to another server at all (nginx: not for
    /// non-idempotent methods unless `non_idempotent`, never for a streamed body).
    pub fn resendable(&self, policy: &NextUpstream) -> bool {
        self.body == Body::Replayable && (self.idempotent || policy.non_idempotent)
    }

    /// Whether there is room for another attempt at all.
    pub fn another_allowed(&self) -> bool {
        self.made < self.tries && self.in_time && self.alternative
    }
}

/// Whether failure `f` of an attempt lets the request go to another server (nginx
/// `proxy_next_upstream`): a connect failure when its kind is listed; no response when also
/// the request may be resent; a listed status always (it is only reported as a failure when a
/// retry is possible); never once the body was partly sent or the response was invalid.
pub fn retry(f: Failure, policy: &NextUpstream, a: &Attempts) -> bool {
    let listed = |c: Cause| match c {
        Cause::Error => policy.error,
        Cause::Timeout => policy.timeout,
    };
    let by_kind = match f {
        Failure::Connect(c) => listed(c),
        Failure::Local => policy.error,
        Failure::NoResponse(c) => listed(c) && a.resendable(policy),
        Failure::Status(_) => true,
        _ => false,
    };
    by_kind && a.another_allowed()
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts() -> Attempts {
        Attempts {
            idempotent: true,
            body: Body::Replayable,
            made: 1,
            tries: 3,
            in_time: true,
            alternative: true,
        }
    }

    #[test]
    fn connect_failures_retry_when_listed() {
        let p = NextUpstream::default();
        assert!(retry(Failure::Connect(Cause::Error), &p, &attempts()));
        assert!(retry(Failure::Connect(Cause::Timeout), &p, &attempts()));
        let only_error = NextUpstream {
            timeout: false,
            ..p
        };
        assert!(!retry(
            Failure::Connect(Cause::Timeout),
            &only_error,
            &attempts()
        ));
        // Connecting sends nothing: a POST may go elsewhere too.
        let post = Attempts {
            idempotent: false,
            body: Body::Streamed,
            ..attempts()
        };
        assert!(retry(Failure::Connect(Cause::Error), &p, &post));
    }

    #[test]
    fn no_response_retries_only_resendable_requests() {
        let p = NextUpstream::default();
        let f = Failure::NoResponse(Cause::Error);
        assert!(retry(f, &p, &attempts()));
        let post = Attempts {
            idempotent: false,
            ..attempts()
        };
        assert!(!retry(f, &p, &post));
        let anything = NextUpstream {
            non_idempotent: true,
            ..p
        };
        assert!(retry(f, &anything, &post));
        let streamed = Attempts {
            body: Body::Streamed,
            ..attempts()
        };
        assert!(!retry(f, &anything, &streamed));
    }

    #[test]
    fn never_after_a_partial_body_or_an_invalid_response() {
        let p = NextUpstream {
            invalid_header: true,
            non_idempotent: true,
            ..NextUpstream::default()
        };
        assert!(!retry(Failure::BodySend(Cause::Error), &p, &attempts()));
        assert!(!retry(Failure::BadResponse(Bad::Head), &p, &attempts()));
        assert!(!retry(Failure::ClientGone, &p, &attempts()));
    }

    #[test]
    fn no_retry_past_tries_time_or_servers() {
        let p = NextUpstream::default();
        let f = Failure::Connect(Cause::Error);
        let last = Attempts {
            made: 3,
            ..attempts()
        };
        assert!(!retry(f, &p, &last));
        let late = Attempts {
            in_time: false,
            ..attempts()
        };
        assert!(!retry(f, &p, &late));
        let alone = Attempts {
            alternative: false,
            ..attempts()
        };
        assert!(!retry(f, &p, &alone));
    }

    #[test]
    fn one_status_mapping() {
        let status = |f: Failure| f.answer().map(|(s, _)| s);
        assert_eq!(
            status(Failure::Request(RequestError::UriTooLong)),
            Some(414)
        );
        assert_eq!(status(Failure::HeadTimeout), Some(408));
        assert_eq!(status(Failure::BodyTimeout), Some(408));
        assert_eq!(status(Failure::BodyInvalid), Some(400));
        assert_eq!(status(Failure::BodyTooLarge), Some(413));
        assert_eq!(status(Failure::NoRoute), Some(404));
        assert_eq!(status(Failure::Loop), Some(508));
        assert_eq!(status(Failure::NoServer), Some(503));
        assert_eq!(status(Failure::Local), Some(503));
        assert_eq!(status(Failure::Connect(Cause::Error)), Some(502));
        assert_eq!(status(Failure::Connect(Cause::Timeout)), Some(504));
        assert_eq!(status(Failure::NoResponse(Cause::Timeout)), Some(504));
        assert_eq!(status(Failure::BadResponse(Bad::Chunked)), Some(502));
        assert_eq!(status(Failure::ClientGone), None);
        assert_eq!(status(Failure::SlowReader), None);
        assert_eq!(status(Failure::ResponseCut(Cause::Error)), None);
        let (s, extra) = Failure::QueueFull.answer().expect("answered");
        assert_eq!((s, extra.len()), (503, 1));
    }

    #[test]
    fn passive_health_counts_only_listed_server_failures() {
        let p = NextUpstream::default();
        assert!(Failure::Connect(Cause::Error).counts_against_server(&p));
        assert!(Failure::NoResponse(Cause::Timeout).counts_against_server(&p));
        // A client can ask for a broken route at will: opt-in only.
        assert!(!Failure::BadResponse(Bad::Head).counts_against_server(&p));
        let strict = NextUpstream {
            invalid_header: true,
            ..p
        };
        assert!(Failure::BadResponse(Bad::Head).counts_against_server(&strict));
        // Not the server's doing.
        for f in [
            Failure::Local,
            Failure::NoServer,
            Failure::ClientGone,
            Failure::BodyTimeout,
            Failure::QueueFull,
        ] {
            assert!(!f.counts_against_server(&strict), "{f:?}");
            assert_ne!(f.side(), Side::Server, "{f:?}");
        }
        assert!(!Failure::Status(503).counts_against_server(&p));
        let with_503 = NextUpstream {
            http_503: true,
            ..p
        };
        assert!(Failure::Status(503).counts_against_server(&with_503));
    }
}
