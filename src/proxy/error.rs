//! Why an exchange failed, which side failed, and whether another server may be tried.
//! The mapping to a status code lives in exactly one function, [`Failure::status`].

use std::io;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No route matched the request (404).
    NoRoute,
    /// The request's Via already names ringlb: it came round a forwarding loop (508).
    Loop,
    /// Every server of the upstream is down, draining or already tried (503).
    NoServer,
    /// Connection refused, unreachable, reset before a response byte (502).
    Upstream,
    /// Connect or response timed out (504).
    UpstreamTimeout,
    /// The response head was malformed, too large, or its framing ambiguous (502).
    BadResponse,
    /// ringlb itself ran out of descriptors, socket buffers or memory (503): not the server's
    /// fault, so it does not count against the server's passive health.
    Local,
}

impl Failure {
    pub fn status(self) -> u16 {
        match self {
            Failure::NoRoute => 404,
            Failure::Loop => 508,
            Failure::NoServer | Failure::Local => 503,
            Failure::Upstream | Failure::BadResponse => 502,
            Failure::UpstreamTimeout => 504,
        }
    }

    pub fn from_io(e: &io::Error) -> Failure {
        if matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        ) {
            Failure::Local
        } else if is_timeout(e) {
            Failure::UpstreamTimeout
        } else {
            Failure::Upstream
        }
    }

    /// Counts against the server's passive health (nginx `max_fails`): the server, not the
    /// request, is at fault.
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            Failure::Upstream | Failure::UpstreamTimeout | Failure::BadResponse
        )
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}
