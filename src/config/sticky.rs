//! Sticky cookie values: keyed, so a client can neither read a server's identity out of one
//! nor forge one for a server it was never sent to.
//!
//! A value is 40 hex digits: the server's id (8 bytes), the issue time (4 bytes, Unix
//! seconds) and a MAC of both (8 bytes). The id is `HMAC-SHA256(secret, "id" upstream server)`
//! truncated: opaque without the secret (the server name defaults to its address, which an
//! unkeyed hash gave away to anyone who hashed candidate addresses), and the same on every
//! node that shares the secret. The MAC is `HMAC-SHA256(secret, "mac" id time)` truncated:
//! the issue time cannot be changed, so a draining server can tell the sessions it had before
//! the drain began (issued earlier) from new ones. 64-bit tags: a forgery is a 2^-64 guess per
//! request, online.
//!
//! The secret is `sticky.secret` when set (stable across restarts and nodes), else one drawn
//! once per process at the first load and kept by every later load (SIGHUP), so sessions
//! survive reloads but not a restart.

use ring::hmac;
use std::sync::OnceLock;

/// Hex digits of a cookie value: id, issue time, MAC.
const ID_HEX: usize = 16;
const TIME_HEX: usize = 8;
const MAC_HEX: usize = 16;
pub const VALUE_LEN: usize = ID_HEX + TIME_HEX + MAC_HEX;

/// The key of a sticky cookie (HMAC-SHA256). Debug shows no key material.
#[derive(Clone)]
pub struct CookieKey(hmac::Key);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// The key for `secret`, or for this process's secret when None.
    pub fn new(secret: Option<&[u8]>) -> CookieKey {
        let key = match secret {
            Some(s) => hmac::Key::new(hmac::HMAC_SHA256, s),
            None => hmac::Key::new(hmac::HMAC_SHA256, process_secret()),
        };
        CookieKey(key)
    }

    /// The opaque id of `server` in `upstream`: 16 hex digits.
    pub fn server_id(&self, upstream: &str, server: &str) -> Box<[u8]> {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"id\0");
        ctx.update(upstream.as_bytes());
        ctx.update(b"\0");
        ctx.update(server.as_bytes());
        let tag = ctx.sign();
        let mut out = Vec::with_capacity(ID_HEX);
        hex(&tag.as_ref()[..ID_HEX / 2], &mut out);
        out.into()
    }

    fn mac(&self, id: &[u8], issued: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"mac\0");
        ctx.update(id);
        ctx.update(issued);
        ctx.sign()
    }

    /// Appends the value naming server `id`, issued at `issued` (Unix seconds).
    pub fn issue(&self, id: &[u8], issued: u32, out: &mut Vec<u8>) {
        let mut time = Vec::with_capacity(TIME_HEX);
        hex(&issued.to_be_bytes(), &mut time);
        let tag = self.mac(id, &time);
        out.extend_from_slice(id);
        out.extend_from_slice(&time);
        hex(&tag.as_ref()[..MAC_HEX / 2], out);
    }

    /// The server id and issue time of a value this key issued; None for anything else.
    /// The MAC is compared in constant time.
    pub fn verify<'v>(&self, value: &'v [u8]) -> Option<(&'v [u8], u32)> {
        if value.len() != VALUE_LEN || !value.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let (id, rest) = value.split_at(ID_HEX);
        let (time, mac) = rest.split_at(TIME_HEX);
        let mut expected = Vec::with_capacity(MAC_HEX);
        hex(&self.mac(id, time).as_ref()[..MAC_HEX / 2], &mut expected);
        if !constant_time_eq(&expected, mac) {
            return None;
        }
        let issued = u32::from_str_radix(std::str::from_utf8(time).ok()?, 16).ok()?;
        Some((id, issued))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

/// 32 random bytes drawn once per process: the key of sticky cookies without `secret`.
fn process_secret() -> &'static [u8] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut s = [0u8; 32];
        if ring::rand::SystemRandom::new().fill(&mut s).is_err() {
            // getrandom(2) does not fail on Linux 3.17+ once the pool is ready; should it,
            // a secret from the clock and pid is still unknown to clients, if weaker.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let seed = format!("{t}/{}", std::process::id());
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes()), b"s");
            s.copy_from_slice(tag.as_ref());
        }
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_verify_only_with_their_key_and_unchanged() {
        let k = CookieKey::new(Some(b"0123456789abcdef"));
        let id = k.server_id("app", "s1");
        assert_eq!(id.len(), ID_HEX);
        assert_ne!(id, k.server_id("app", "s2"));
        assert_ne!(id, k.server_id("other", "s1"));
        let mut v = Vec::new();
        k.issue(&id, 1_700_000_000, &mut v);
        assert_eq!(v.len(), VALUE_LEN);
        assert_eq!(k.verify(&v), Some((&id[..], 1_700_000_000)));
        // Another key (another node's or another process's secret) does not accept it.
        assert_eq!(CookieKey::new(Some(b"another-secret-16")).verify(&v), None);
        // The same secret does: nodes that share it share sessions.
        assert!(CookieKey::new(Some(b"0123456789abcdef"))
            .verify(&v)
            .is_some());
        // An earlier issue time cannot be claimed.
        let mut older = v.clone();
        older[ID_HEX..ID_HEX + TIME_HEX].copy_from_slice(b"00000001");
        assert_eq!(k.verify(&older), None);
        for bad in [&b""[..], b"zz", &v[..VALUE_LEN - 1]] {
            assert_eq!(k.verify(bad), None);
        }
        // Without a configured secret, one per process.
        let p = CookieKey::new(None);
        assert_eq!(
            p.server_id("app", "s1"),
            CookieKey::new(None).server_id("app", "s1")
        );
        assert_ne!(p.server_id("app", "s1"), id);
    }
}
