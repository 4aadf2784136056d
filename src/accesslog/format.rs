//! One access log line per exchange, in the `common` or `json` format, appended to a buffer
//! the caller owns. No allocation and no `fmt` machinery: numbers go through `itoa`, text is
//! copied in runs between the bytes that need escaping (the per-request cost is in
//! `benches/metrics.rs`).
//!
//! `common` is the NCSA combined format nginx and Apache write by default, then `key=value`
//! fields (values never contain a space):
//!
//! ```text
//! 127.0.0.1 - - [25/Nov/2026:01:52:01 +0000] "GET /a?b HTTP/1.1" 200 1234 "-" "curl/8.5.0"
//!   rt=0.004 listener=http upstream=app server=app-1 server_addr=127.0.0.1:9001
//!   ut=0.003 attempts=1 rx=78 id=65f1c0de000100000000002a
//! ```
//! (one line). Times are seconds with millisecond resolution; `-` when not applicable. Bytes
//! outside printable ASCII, `"` and `\` are written `\xHH`, as nginx does; in `key=value`
//! fields a space is too, so a line splits on spaces outside the quoted fields.
//!
//! The first field (`remote_addr` in JSON) is the effective client: the address the PROXY
//! protocol header or a trusted `real_ip_header` gave, else the TCP peer. JSON also has the
//! TCP peer as `peer_addr` ("ip:port"); `remote_port` is null when the client's port is not
//! known (an address from `real_ip_header`).
//!
//! `json` is one object per line with the same facts; strings are valid JSON (control bytes
//! and, in a field that is not valid UTF-8, every byte above 0x7f, as `\u00HH`).

use super::Exchange;
use crate::config::Config;
use crate::http1::{write_ip as ip, write_num as num};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn common(out: &mut Vec<u8>, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    ip(out, x.client_ip());
    out.extend_from_slice(b" - - [");
    clf_time(out, x.end_time());
    out.extend_from_slice(b"] \"");
    if x.is_raw() {
        escaped(out, x.target());
    } else {
        escaped(out, x.method());
        out.push(b' ');
        escaped(out, x.target());
        out.push(b' ');
        out.extend_from_slice(x.protocol().as_bytes());
    }
    out.extend_from_slice(b"\" ");
    num(out, u64::from(r.status));
    out.push(b' ');
    num(out, r.sent);
    out.extend_from_slice(b" \"");
    dash_or(out, x.referer(), escaped);
    out.extend_from_slice(b"\" \"");
    dash_or(out, x.user_agent(), escaped);
    out.extend_from_slice(b"\" rt=");
    seconds(out, r.duration_ns, 3);
    out.extend_from_slice(b" listener=");
    dash_or(out, listener_name(x, config).as_bytes(), word);
    out.extend_from_slice(b" upstream=");
    dash_or(out, upstream_name(x, config).as_bytes(), word);
    out.extend_from_slice(b" server=");
    match server(x, config) {
        Some(s) => {
            dash_or(out, s.name.as_bytes(), word);
            out.extend_from_slice(b" server_addr=");
            addr(out, s.addr);
        }
        None => out.extend_from_slice(b"- server_addr=-"),
    }
    out.extend_from_slice(b" ut=");
    match r.upstream_ns {
        Some(ns) => seconds(out, ns, 3),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" attempts=");
    num(out, u64::from(r.attempts));
    out.extend_from_slice(b" rx=");
    num(out, r.received);
    out.extend_from_slice(b" id=");
    dash_or(out, x.request_id().unwrap_or_default(), word);
    out.push(b'\n');
}

pub fn json(out: &mut Vec<u8>, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    out.extend_from_slice(b"{\"time\":\"");
    iso_time(out, x.end_time());
    out.extend_from_slice(b"\",\"remote_addr\":\"");
    ip(out, x.client_ip());
    out.extend_from_slice(b"\",\"remote_port\":");
    match x.client_port() {
        Some(p) => num(out, u64::from(p)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"peer_addr\":\"");
    addr(out, x.peer());
    out.push(b'"');
    out.extend_from_slice(b",\"listener\":");
    json_str(out, listener_name(x, config).as_bytes());
    out.extend_from_slice(b",\"request_id\":");
    json_opt(out, x.request_id());
    out.extend_from_slice(b",\"method\":");
    json_str(out, x.method());
    out.extend_from_slice(b",\"uri\":");
    json_str(out, x.target());
    out.extend_from_slice(b",\"protocol\":");
    json_str(out, x.protocol().as_bytes());
    out.extend_from_slice(b",\"host\":");
    json_str(out, x.host());
    out.extend_from_slice(b",\"status\":");
    num(out, u64::from(r.status));
    out.extend_from_slice(b",\"bytes_sent\":");
    num(out, r.sent);
    out.extend_from_slice(b",\"bytes_received\":");
    num(out, r.received);
    out.extend_from_slice(b",\"request_time\":");
    seconds(out, r.duration_ns, 6);
    out.extend_from_slice(b",\"upstream\":");
    let up = upstream_name(x, config);
    json_opt(out, (!up.is_empty()).then_some(up.as_bytes()));
    match server(x, config) {
        Some(s) => {
            out.extend_from_slice(b",\"server\":");
            json_str(out, s.name.as_bytes());
            out.extend_from_slice(b",\"server_addr\":\"");
            addr(out, s.addr);
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"server\":null,\"server_addr\":null"),
    }
    out.extend_from_slice(b",\"upstream_time\":");
    match r.upstream_ns {
        Some(ns) => seconds(out, ns, 6),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"attempts\":");
    num(out, u64::from(r.attempts));
    out.extend_from_slice(b",\"user_agent\":");
    json_str(out, x.user_agent());
    out.extend_from_slice(b",\"referer\":");
    json_str(out, x.referer());
    out.extend_from_slice(b"}\n");
}

fn listener_name<'c>(x: &Exchange, config: &'c Config) -> &'c str {
    config
        .listeners
        .get(x.listener().0 as usize)
        .map_or("", |l| l.name.as_str())
}

fn upstream_name<'c>(x: &Exchange, config: &'c Config) -> &'c str {
    x.upstream()
        .and_then(|u| config.upstreams.get(u.0 as usize))
        .map_or("", |u| u.name.as_str())
}

fn server<'c>(x: &Exchange, config: &'c Config) -> Option<&'c crate::config::Server> {
    let u = config.upstreams.get(x.upstream()?.0 as usize)?;
    let id = x.server()?;
    u.servers.iter().find(|s| s.id == id)
}

fn dash_or(out: &mut Vec<u8>, v: &[u8], write: fn(&mut Vec<u8>, &[u8])) {
    if v.is_empty() {
        out.push(b'-');
    } else {
        write(out, v);
    }
}

/// `ns` as seconds with `decimals` (3 or 6) digits after the point.
fn seconds(out: &mut Vec<u8>, ns: u64, decimals: u32) {
    let unit = 10u64.pow(9 - decimals);
    let v = (ns + unit / 2) / unit;
    let scale = 10u64.pow(decimals);
    num(out, v / scale);
    out.push(b'.');
    pad(out, v % scale, decimals as usize);
}

/// `v` in decimal, left-padded with zeros to `width` digits.
fn pad(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut b = itoa::Buffer::new();
    let digits = b.format(v).as_bytes();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits);
}

fn addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            ip(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            num(out, u64::from(v4.port()));
        }
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Which bytes each escaping rewrites, as 256-entry tables (one load per byte).
const fn table(space: bool, high: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c == b'"'
            || c == b'\\'
            || c < 0x20
            || c == 0x7f
            || (space && c == b' ')
            || (high && c >= 0x80);
        b += 1;
    }
    t
}
/// nginx: quote, backslash, controls and everything outside ASCII.
const ESCAPED: [bool; 256] = table(false, true);
/// `key=value` values: as nginx, and the space.
const WORD: [bool; 256] = table(true, true);
/// JSON string in a valid UTF-8 field: quote, backslash, controls.
const JSON_UTF8: [bool; 256] = table(false, false);
/// JSON string in a field that is not UTF-8: also every byte above 0x7f.
const JSON_BYTES: [bool; 256] = table(false, true);

/// Copies `v`, writing each byte marked in `special` through `esc`; the runs between them are
/// copied whole.
#[inline]
fn escape_with(out: &mut Vec<u8>, v: &[u8], special: &[bool; 256], esc: impl Fn(&mut Vec<u8>, u8)) {
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        if special[usize::from(b)] {
            out.extend_from_slice(&v[run..i]);
            esc(out, b);
            run = i + 1;
        }
    }
    out.extend_from_slice(&v[run..]);
}

fn hex_escape(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 0xf)],
    ]);
}

/// nginx's escaping for its default log format.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    escape_with(out, v, &ESCAPED, hex_escape);
}

/// A `key=value` value: [`escaped`], and a space as `\x20`.
fn word(out: &mut Vec<u8>, v: &[u8]) {
    escape_with(out, v, &WORD, hex_escape);
}

fn json_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    // Multi-byte characters pass through only when the field is valid UTF-8.
    let table = if v.is_ascii() || std::str::from_utf8(v).is_ok() {
        &JSON_UTF8
    } else {
        &JSON_BYTES
    };
    out.push(b'"');
    escape_with(out, v, table, |out, b| match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(b >> 4)].to_ascii_lowercase(),
            HEX[usize::from(b & 0xf)].to_ascii_lowercase(),
        ]),
    });
    out.push(b'"');
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// UTC civil time: (year, month 1..=12, day, hour, minute, second, millisecond).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Howard Hinnant's days_from_civil, inverted (public domain).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis(),
    )
}

/// `25/Nov/2026:01:52:01 +0000`
fn clf_time(out: &mut Vec<u8>, t: SystemTime) {
    let (y, mo, d, h, mi, s, _) = civil(t);
    pad(out, u64::from(d), 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[(mo - 1) as usize].as_bytes());
    out.push(b'/');
    num(out, y.max(0) as u64);
    for (sep, v) in [(b':', h), (b':', mi), (b':', s)] {
        out.push(sep);
        pad(out, u64::from(v), 2);
    }
    out.extend_from_slice(b" +0000");
}

/// `2026-11-25T01:52:01.123Z`
fn iso_time(out: &mut Vec<u8>, t: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    num(out, y.max(0) as u64);
    for (sep, v) in [(b'-', mo), (b'-', d), (b'T', h), (b':', mi), (b':', s)] {
        out.push(sep);
        pad(out, u64::from(v), 2);
    }
    out.push(b'.');
    pad(out, u64::from(ms), 3);
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_571_521_123);
        assert_eq!(s(|o| iso_time(o, t)), "2026-11-25T01:52:01.123Z");
        assert_eq!(s(|o| clf_time(o, t)), "25/Nov/2026:01:52:01 +0000");
        assert_eq!(s(|o| iso_time(o, UNIX_EPOCH)), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(s(|o| clf_time(o, leap)), "29/Feb/2000:00:00:00 +0000");
    }

    #[test]
    fn seconds_round_to_the_resolution() {
        assert_eq!(s(|o| seconds(o, 3_499_999, 3)), "0.003");
        assert_eq!(s(|o| seconds(o, 3_500_000, 3)), "0.004");
        assert_eq!(s(|o| seconds(o, 12_000_000_000, 3)), "12.000");
        assert_eq!(s(|o| seconds(o, 1_234, 6)), "0.000001");
        assert_eq!(s(|o| seconds(o, 0, 6)), "0.000000");
    }

    #[test]
    fn addresses_and_numbers() {
        assert_eq!(s(|o| ip(o, "10.0.255.7".parse().unwrap())), "10.0.255.7");
        assert_eq!(s(|o| ip(o, "::1".parse().unwrap())), "::1");
        assert_eq!(
            s(|o| addr(o, "127.0.0.1:80".parse().unwrap())),
            "127.0.0.1:80"
        );
        assert_eq!(s(|o| addr(o, "[::1]:8080".parse().unwrap())), "[::1]:8080");
        assert_eq!(s(|o| pad(o, 7, 3)), "007");
        assert_eq!(s(|o| pad(o, 1234, 3)), "1234");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            s(|o| escaped(o, b"a\"b\\c\x01\xff d")),
            "a\\x22b\\x5Cc\\x01\\xFF d"
        );
        assert_eq!(s(|o| word(o, b"a b\"")), "a\\x20b\\x22");
        assert_eq!(
            s(|o| json_str(o, "é\"\\\n".as_bytes())),
            "\"é\\\"\\\\\\u000a\""
        );
        let mut v = Vec::new();
        json_str(&mut v, b"a\xffb");
        assert_eq!(v, b"\"a\\u00ffb\"");
        let parsed: String = serde_json::from_slice(&v).unwrap();
        assert_eq!(parsed, "a\u{ff}b");
    }
}
