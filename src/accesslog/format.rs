//! One access log line per exchange, in the `common` or `json` format, appended to a buffer
//! the caller owns, without allocating: numbers go through `itoa`, JSON strings through
//! serde_json, and the date is formatted by jiff once per second per core ([`Dates`]) and copied
//! into that second's lines (the per-request cost is in `benches/metrics.rs`).
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
//! `json` is one object per line with the same facts; strings are escaped by serde_json, and a
//! field that is not valid UTF-8 is read as Latin-1 (each byte the character of its value).

use super::Exchange;
use crate::config::Config;
use crate::http1::{write_ip as ip, write_num as num};
use jiff::Timestamp;
use serde::Serializer as _;
use std::fmt::{self, Write as _};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn common(out: &mut Vec<u8>, dates: &mut Dates, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    ip(out, x.client_ip());
    out.extend_from_slice(b" - - [");
    dates.clf(out, x.end_time());
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

pub fn json(out: &mut Vec<u8>, dates: &mut Dates, x: &Exchange, config: &Config) {
    let Some(r) = x.done() else { return };
    out.extend_from_slice(b"{\"time\":\"");
    dates.iso(out, x.end_time());
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

/// Which bytes an escaping rewrites, as a 256-entry table (one load per byte): quote,
/// backslash, controls, everything outside ASCII, and the space if `space`.
const fn table(space: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c == b'"' || c == b'\\' || c < 0x20 || c >= 0x7f || (space && c == b' ');
        b += 1;
    }
    t
}
/// nginx: quote, backslash, controls and everything outside ASCII.
const ESCAPED: [bool; 256] = table(false);
/// `key=value` values: as nginx, and the space.
const WORD: [bool; 256] = table(true);

/// Copies `v`, writing each byte marked in `special` as `\xHH`; the runs between them are
/// copied whole.
#[inline]
fn hex_escaped(out: &mut Vec<u8>, v: &[u8], special: &[bool; 256]) {
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        if special[usize::from(b)] {
            out.extend_from_slice(&v[run..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            run = i + 1;
        }
    }
    out.extend_from_slice(&v[run..]);
}

/// nginx's escaping for its default log format.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    hex_escaped(out, v, &ESCAPED);
}

/// A `key=value` value: [`escaped`], and a space as `\x20`.
fn word(out: &mut Vec<u8>, v: &[u8]) {
    hex_escaped(out, v, &WORD);
}

fn json_opt(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// `v` as a JSON string, escaped by serde_json straight into `out`. A field that is not valid
/// UTF-8 (obs-text in a request line) is read as Latin-1, each byte the character U+0000 to
/// U+00FF of its value: the value a consumer parses is the one the `\u00HH` escapes of earlier
/// versions gave.
fn json_str(out: &mut Vec<u8>, v: &[u8]) {
    let mut ser = serde_json::Serializer::new(out);
    // Writing into a `Vec` does not fail, and neither does a string.
    let _ = match std::str::from_utf8(v) {
        Ok(s) => ser.serialize_str(s),
        Err(_) => ser.collect_str(&Latin1(v)),
    };
}

/// Bytes read as Latin-1.
struct Latin1<'a>(&'a [u8]);

impl fmt::Display for Latin1<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An ASCII run is valid UTF-8 as it is; a byte above 0x7f is one two-byte character.
        let ascii = |run| std::str::from_utf8(run).map_err(|_| fmt::Error);
        let mut rest = self.0;
        while let Some(i) = rest.iter().position(|b| !b.is_ascii()) {
            f.write_str(ascii(&rest[..i])?)?;
            f.write_char(char::from(rest[i]))?;
            rest = &rest[i + 1..];
        }
        f.write_str(ascii(rest)?)
    }
}

/// The dates of one core's lines, formatted by jiff once per second and copied into every
/// line of that second. Runs on the owning core.
#[derive(Default)]
pub struct Dates {
    clf: Second,
    iso: Second,
}

/// `pattern` (jiff's `strftime`) formatted for the Unix second `at`.
#[derive(Default)]
struct Second {
    at: Option<u64>,
    text: [u8; 32],
    len: usize,
}

impl Second {
    fn get(&mut self, at: u64, pattern: &str) -> &[u8] {
        if self.at != Some(at) {
            // Past jiff's range (it ends in 9999) its last instant.
            let t = i64::try_from(at)
                .ok()
                .and_then(|s| Timestamp::from_second(s).ok())
                .unwrap_or(Timestamp::MAX);
            let mut w = &mut self.text[..];
            // The patterns below fit `text`; jiff's `strftime` does not fail.
            let _ = write!(w, "{}", t.strftime(pattern));
            let left = w.len();
            self.len = self.text.len() - left;
            self.at = Some(at);
        }
        &self.text[..self.len]
    }
}

impl Dates {
    /// `25/Nov/2026:01:52:01 +0000`
    fn clf(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = since_epoch(t);
        out.extend_from_slice(self.clf.get(d.as_secs(), "%d/%b/%Y:%H:%M:%S +0000"));
    }

    /// `2026-11-25T01:52:01.123Z`
    fn iso(&mut self, out: &mut Vec<u8>, t: SystemTime) {
        let d = since_epoch(t);
        out.extend_from_slice(self.iso.get(d.as_secs(), "%Y-%m-%dT%H:%M:%S"));
        out.push(b'.');
        pad(out, u64::from(d.subsec_millis()), 3);
        out.push(b'Z');
    }
}

/// A clock set before 1970 logs the epoch.
fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(mut f: impl FnMut(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    /// (Unix milliseconds, JSON time, common time); in order, so one `Dates` crosses seconds,
    /// days, months and years.
    const INSTANTS: [(u64, &str, &str); 12] = [
        (0, "1970-01-01T00:00:00.000Z", "01/Jan/1970:00:00:00 +0000"),
        (
            999,
            "1970-01-01T00:00:00.999Z",
            "01/Jan/1970:00:00:00 +0000",
        ),
        (
            951_782_400_000,
            "2000-02-29T00:00:00.000Z",
            "29/Feb/2000:00:00:00 +0000",
        ),
        (
            946_684_799_999,
            "1999-12-31T23:59:59.999Z",
            "31/Dec/1999:23:59:59 +0000",
        ),
        (
            946_684_800_000,
            "2000-01-01T00:00:00.000Z",
            "01/Jan/2000:00:00:00 +0000",
        ),
        (
            1_483_228_799_500,
            "2016-12-31T23:59:59.500Z",
            "31/Dec/2016:23:59:59 +0000",
        ),
        (
            1_483_228_800_001,
            "2017-01-01T00:00:00.001Z",
            "01/Jan/2017:00:00:00 +0000",
        ),
        (
            1_709_210_096_789,
            "2024-02-29T12:34:56.789Z",
            "29/Feb/2024:12:34:56 +0000",
        ),
        (
            1_795_571_521_123,
            "2026-11-25T01:52:01.123Z",
            "25/Nov/2026:01:52:01 +0000",
        ),
        // 2100 is not a leap year.
        (
            4_107_542_399_000,
            "2100-02-28T23:59:59.000Z",
            "28/Feb/2100:23:59:59 +0000",
        ),
        (
            4_107_542_400_000,
            "2100-03-01T00:00:00.000Z",
            "01/Mar/2100:00:00:00 +0000",
        ),
        // Past jiff's range: its last instant.
        (
            300_000_000_000_000,
            "9999-12-30T22:00:00.000Z",
            "30/Dec/9999:22:00:00 +0000",
        ),
    ];

    #[test]
    fn dates_at_known_instants() {
        let mut kept = Dates::default();
        for (ms, iso, clf) in INSTANTS {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(s(|o| Dates::default().iso(o, t)), iso, "{ms}");
            assert_eq!(s(|o| Dates::default().clf(o, t)), clf, "{ms}");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            kept.iso(&mut a, t);
            kept.clf(&mut b, t);
            assert_eq!((a, b), (iso.as_bytes().to_vec(), clf.as_bytes().to_vec()));
        }
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(s(|o| Dates::default().iso(o, before)), INSTANTS[0].1);
    }

    #[test]
    fn a_date_is_formatted_once_per_second() {
        let mut d = Dates::default();
        let t = UNIX_EPOCH + Duration::from_millis(1_795_571_521_123);
        let mut o = Vec::new();
        d.iso(&mut o, t);
        d.clf(&mut o, t);
        // Marks the cached text: lines of the same second copy it, the next second replaces it.
        d.iso.text[0] = b'X';
        d.clf.text[0] = b'X';
        let later = t + Duration::from_millis(800);
        assert_eq!(s(|o| d.iso(o, later)), "X026-11-25T01:52:01.923Z");
        assert_eq!(s(|o| d.clf(o, later)), "X5/Nov/2026:01:52:01 +0000");
        let next = t + Duration::from_millis(877);
        assert_eq!(s(|o| d.iso(o, next)), "2026-11-25T01:52:02.000Z");
        assert_eq!(s(|o| d.clf(o, next)), "25/Nov/2026:01:52:02 +0000");
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
        assert_eq!(s(|o| json_str(o, "é\"\\\n".as_bytes())), r#""é\"\\\n""#);
    }

    #[test]
    fn json_strings_parse_as_before() {
        // Each field and the bytes the hand-written escaping wrote for it (before serde_json):
        // the parsed values are the same.
        let before: [(&[u8], &str); 3] = [
            (
                b"GET /caf\xe9?q=\"x\"\\ \x01\x7f\xc3\xa9 end",
                r#""GET /caf\u00e9?q=\"x\"\\ \u0001\u007f\u00c3\u00a9 end""#,
            ),
            ("é\"\\\n\x7f\t".as_bytes(), r#""é\"\\\u000a\u007f\u0009""#),
            (b"\xff\xfe\x80\x9b", r#""\u00ff\u00fe\u0080\u009b""#),
        ];
        for (field, old) in before {
            let mut new = Vec::new();
            json_str(&mut new, field);
            let new: String = serde_json::from_slice(&new).unwrap();
            assert_eq!(new, serde_json::from_str::<String>(old).unwrap());
        }
        // Every byte, in a field that is not UTF-8: Latin-1.
        let all: Vec<u8> = (0..=255).collect();
        let mut v = Vec::new();
        json_str(&mut v, &all);
        let parsed: String = serde_json::from_slice(&v).unwrap();
        assert_eq!(
            parsed,
            all.iter().map(|&b| char::from(b)).collect::<String>()
        );
    }
}
