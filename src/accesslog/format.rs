//! One access log line per exchange, in the `common` or `json` format, appended to a buffer
//! the caller owns. No allocation: numbers and dates are written with `write!` into the buffer.
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
//! `json` is one object per line with the same facts; strings are valid JSON (control bytes
//! and, in a field that is not valid UTF-8, every byte above 0x7f, as `\u00HH`).

use crate::config::Config;
use crate::metrics::Exchange;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn common(out: &mut Vec<u8>, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    let _ = write!(out, "{} - - [", x.peer().ip());
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
    let _ = write!(out, "\" {} {} \"", r.status, r.sent);
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
            let _ = write!(out, " server_addr={}", s.addr);
        }
        None => out.extend_from_slice(b"- server_addr=-"),
    }
    out.extend_from_slice(b" ut=");
    match r.upstream_ns {
        Some(ns) => seconds(out, ns, 3),
        None => out.push(b'-'),
    }
    let _ = write!(out, " attempts={} rx={} id=", r.attempts, r.received);
    dash_or(out, x.request_id().unwrap_or_default(), word);
    out.push(b'\n');
}

pub fn json(out: &mut Vec<u8>, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    out.extend_from_slice(b"{\"time\":\"");
    iso_time(out, x.end_time());
    let peer = x.peer();
    let _ = write!(
        out,
        "\",\"remote_addr\":\"{}\",\"remote_port\":{},\"listener\":",
        peer.ip(),
        peer.port()
    );
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
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_sent\":{},\"bytes_received\":{},\"request_time\":",
        r.status, r.sent, r.received
    );
    seconds(out, r.duration_ns, 6);
    out.extend_from_slice(b",\"upstream\":");
    let up = upstream_name(x, config);
    json_opt(out, (!up.is_empty()).then_some(up.as_bytes()));
    match server(x, config) {
        Some(s) => {
            out.extend_from_slice(b",\"server\":");
            json_str(out, s.name.as_bytes());
            let _ = write!(out, ",\"server_addr\":\"{}\"", s.addr);
        }
        None => out.extend_from_slice(b",\"server\":null,\"server_addr\":null"),
    }
    out.extend_from_slice(b",\"upstream_time\":");
    match r.upstream_ns {
        Some(ns) => seconds(out, ns, 6),
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(out, ",\"attempts\":{},\"user_agent\":", r.attempts);
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
    let _ = write!(
        out,
        "{}.{:0width$}",
        v / scale,
        v % scale,
        width = decimals as usize
    );
}

/// nginx's escaping for its default log format.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}

/// A `key=value` value: [`escaped`], and a space as `\x20`.
fn word(out: &mut Vec<u8>, v: &[u8]) {
    for &b in v {
        if b == b' ' {
            out.extend_from_slice(b"\\x20");
        } else {
            escaped(out, std::slice::from_ref(&b));
        }
    }
}

fn json_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    let utf8 = std::str::from_utf8(v).is_ok();
    out.push(b'"');
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            0x80.. if !utf8 => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
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
    let _ = write!(
        out,
        "{d:02}/{}/{y}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[(mo - 1) as usize]
    );
}

/// `2026-11-25T01:52:01.123Z`
fn iso_time(out: &mut Vec<u8>, t: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    let _ = write!(out, "{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z");
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
