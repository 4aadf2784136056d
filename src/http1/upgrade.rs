//! Which protocol upgrades (RFC 9110 §7.8) reach a server: only those the route allows.
//!
//! An upgrade that is forwarded and accepted (101) turns the connection into a byte tunnel
//! that ringlb no longer parses or routes. For `h2c` that is request smuggling: every later
//! HTTP/2 stream on the tunnel bypasses the path rules that picked the route. So `Upgrade` is
//! forwarded only when every protocol it offers is on the route's list (`websocket` by
//! default); otherwise the request goes on as plain HTTP/1.1, without Upgrade,
//! HTTP2-Settings or their Connection tokens, and a 101 the server sends anyway is refused.

use super::{is_tchar, list, trim, RequestHead};

/// Protocol names (lowercase, without a version) a route lets a client upgrade to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrades(Box<[Box<[u8]>]>);

impl Default for Upgrades {
    /// `websocket` only.
    fn default() -> Self {
        Upgrades::new([&b"websocket"[..]])
    }
}

impl Upgrades {
    /// `names` are stored lowercase; [`is_protocol_name`] is the caller's to check.
    pub fn new<'n>(names: impl IntoIterator<Item = &'n [u8]>) -> Upgrades {
        Upgrades(
            names
                .into_iter()
                .map(|n| n.to_ascii_lowercase().into_boxed_slice())
                .collect(),
        )
    }

    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|n| &**n)
    }

    /// Whether the request's upgrade is forwarded: it asks for one (HTTP/1.1, Connection
    /// lists `upgrade`, an Upgrade field) and [`Upgrades::allows`] its Upgrade value.
    pub fn allow(&self, buf: &[u8], head: &RequestHead) -> bool {
        head.upgrade.is_some_and(|u| self.allows(u.get(buf)))
    }

    /// Whether every protocol an Upgrade value offers (`name["/"version]`, a list in
    /// preference order) is allowed, matched by name, ASCII case-insensitive. Empty list
    /// elements are ignored (RFC 9110 §5.6.1); a value offering nothing is not allowed. A
    /// list that mixes an allowed protocol with another is refused whole: ringlb cannot
    /// tell which one the server will pick.
    pub fn allows(&self, value: &[u8]) -> bool {
        let mut offered = false;
        for p in list(value).filter(|p| !p.is_empty()) {
            let name = p.split(|&b| b == b'/').next().map_or(p, trim);
            if !self.0.iter().any(|a| name.eq_ignore_ascii_case(a)) {
                return false;
            }
            offered = true;
        }
        offered
    }
}

/// A protocol name as an allow-list holds it: a token without `/` (RFC 9110 §7.8).
pub fn is_protocol_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| is_tchar(b) && b != b'/')
}
