//! `Via` (RFC 9110 §7.6.3): the name ringlb adds to forwarded requests, and the loop check.
//!
//! A request whose Via already lists ringlb's own name as a `received-by` has been through
//! this proxy before: forwarding it again would go round until a limit breaks it. The caller
//! answers it with 508 (Loop Detected, RFC 5842 §7.2) instead.

use super::{is_tchar, list, Header, Name};

/// A name ringlb can write as Via `received-by`: a token (RFC 9110 §7.6.3 `pseudonym`; a host
/// name fits), at most 255 bytes.
pub fn is_via_name(name: &[u8]) -> bool {
    !name.is_empty() && name.len() <= 255 && name.iter().all(|&b| is_tchar(b))
}

/// Whether a Via field of `headers` has an element received by `name` (ASCII
/// case-insensitive). Elements are `received-protocol RWS received-by [RWS comment]`; a comma
/// inside a comment splits it into elements whose second word is not `name` in practice (and
/// at worst the sender's own request is refused).
pub fn via_loop(buf: &[u8], headers: &[Header], name: &[u8]) -> bool {
    headers
        .iter()
        .filter(|h| Name::of(h.name.get(buf)) == Name::Via)
        .flat_map(|h| list(h.value.get(buf)))
        .any(|element| received_by(element).eq_ignore_ascii_case(name))
}

/// The second word of a Via element (its `received-by`); empty when there is none.
fn received_by(element: &[u8]) -> &[u8] {
    let mut words = element
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty());
    match (words.next(), words.next()) {
        (Some(_), Some(by)) if by.iter().all(|&b| is_tchar(b) || b == b':') => by,
        _ => &[],
    }
}
