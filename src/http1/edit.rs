//! What a route changes in the messages it forwards, compiled once at config time and applied
//! while a head is written: header edits (`set`, `add`, `remove`) whose values are templates of
//! literal bytes and variables, the path prefix rewrite, and fixed answers (`return`).
//!
//! Expanding a template writes into the caller's buffer: no allocation per request.

use super::rewrite::{field_start, ip, num};
use super::{is_tchar, Name};
use std::net::IpAddr;

/// A variable a template may name, as nginx spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// The client address (after `real_ip`).
    RemoteAddr,
    /// The request's Host without port (empty when absent).
    Host,
    /// The request id (`access_log`; empty when the access log is off).
    RequestId,
    /// `http` or `https`: how the client reached ringlb.
    Scheme,
    /// The request target as received, query included.
    RequestUri,
    /// The name of the server that answered (response side only).
    ServerName,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::RemoteAddr => "remote_addr",
            Var::Host => "host",
            Var::RequestId => "request_id",
            Var::Scheme => "scheme",
            Var::RequestUri => "request_uri",
            Var::ServerName => "server_name",
        }
    }

    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "remote_addr" => Var::RemoteAddr,
            "host" => Var::Host,
            "request_id" => Var::RequestId,
            "scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "server_name" => Var::ServerName,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(Box<[u8]>),
    Var(Var),
}

/// Literal bytes and variables, e.g. `https://example.com$request_uri`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

impl Template {
    /// The text it was compiled from (`$$` for a literal `$`): for `ringlb check --dump`.
    pub fn source(&self) -> String {
        let mut out = String::new();
        for p in self.parts.iter() {
            match p {
                Part::Lit(b) => out.push_str(&String::from_utf8_lossy(b).replace('$', "$$")),
                Part::Var(v) => {
                    out.push('$');
                    out.push_str(v.name());
                }
            }
        }
        out
    }
}

/// The values of the variables for one exchange (borrowed from its buffers).
#[derive(Clone, Copy, Debug)]
pub struct Vars<'a> {
    pub remote_addr: IpAddr,
    pub host: &'a [u8],
    pub request_id: &'a [u8],
    pub https: bool,
    pub request_uri: &'a [u8],
    pub server_name: &'a [u8],
}

impl Template {
    /// `$name` is a variable (letters and `_`), `$$` a literal `$`. Refuses CR, LF, NUL and
    /// other control bytes but HTAB (a field value, RFC 9110 §5.5), an unknown variable and a
    /// `$` followed by nothing.
    pub fn parse(text: &str) -> Result<Template, String> {
        if let Some(b) = text
            .bytes()
            .find(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
        {
            return Err(format!("control byte 0x{b:02x} is not allowed in a value"));
        }
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.extend_from_slice(&rest.as_bytes()[..i]);
            let after = &rest[i + 1..];
            if let Some(more) = after.strip_prefix('$') {
                lit.push(b'$');
                rest = more;
                continue;
            }
            let end = after
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..end];
            let var = Var::from_name(name).ok_or_else(|| {
                format!(
                    "unknown variable ${name}; known: $remote_addr, $host, $request_id, \
                     $scheme, $request_uri, $server_name (write $$ for a literal $)"
                )
            })?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit).into()));
            }
            parts.push(Part::Var(var));
            rest = &after[end..];
        }
        lit.extend_from_slice(rest.as_bytes());
        if !lit.is_empty() {
            parts.push(Part::Lit(lit.into()));
        }
        Ok(Template {
            parts: parts.into(),
        })
    }

    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// Appends the expanded value to `out`.
    pub fn write(&self, vars: &Vars, out: &mut Vec<u8>) {
        for p in self.parts.iter() {
            match p {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(Var::RemoteAddr) => ip(out, vars.remote_addr),
                Part::Var(Var::Host) => out.extend_from_slice(vars.host),
                Part::Var(Var::RequestId) => out.extend_from_slice(vars.request_id),
                Part::Var(Var::Scheme) => {
                    out.extend_from_slice(if vars.https { b"https" } else { b"http" })
                }
                Part::Var(Var::RequestUri) => out.extend_from_slice(vars.request_uri),
                Part::Var(Var::ServerName) => out.extend_from_slice(vars.server_name),
            }
        }
    }
}

/// Why a header name cannot be edited: None when it can. Framing fields (Content-Length,
/// Transfer-Encoding) are written from the framing ringlb parsed, and a changed one would let
/// the next hop read the body differently (request smuggling); hop-by-hop fields (Connection,
/// Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, HTTP2-Settings, Expect) belong to each
/// connection and ringlb manages its own; Host chose the route and is what the server's
/// virtual host sees; X-Forwarded-For, X-Forwarded-Proto, Via and X-Request-Id ringlb writes
/// itself, once.
pub fn refused_name(name: &str) -> Option<&'static str> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Some("is not a header name (a token: letters, digits, !#$%&'*+-.^_`|~)");
    }
    match Name::of(name.as_bytes()) {
        Name::ContentLength | Name::TransferEncoding => {
            Some("is a framing header: ringlb writes it from the framing it parsed")
        }
        Name::Connection
        | Name::KeepAlive
        | Name::ProxyConnection
        | Name::Te
        | Name::Trailer
        | Name::Upgrade
        | Name::Http2Settings
        | Name::Expect => Some("is a hop-by-hop header: ringlb manages it per connection"),
        Name::Host => Some("chose the route; ringlb forwards it as received"),
        Name::XForwardedFor | Name::XForwardedProto | Name::Via | Name::XRequestId => {
            Some("is written by ringlb itself")
        }
        Name::Cookie | Name::Other => None,
    }
}

/// Header edits of one direction: received fields named in `set` or `remove` are dropped,
/// then every `set` and `add` field is appended in config order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub fields: Box<[Field]>,
    pub remove: Box<[Box<[u8]>]>,
}

/// One `set` or `add` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Box<[u8]>,
    pub value: Template,
    /// `Set` also drops the received fields of that name.
    pub edit: Edit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    Set,
    Add,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.remove.is_empty()
    }

    /// A received field with this name is not forwarded.
    pub fn drops(&self, name: &[u8]) -> bool {
        self.remove.iter().any(|r| r.eq_ignore_ascii_case(name))
            || self
                .fields
                .iter()
                .any(|f| f.edit == Edit::Set && f.name.eq_ignore_ascii_case(name))
    }

    pub fn uses(&self, var: Var) -> bool {
        self.fields.iter().any(|f| f.value.uses(var))
    }

    /// Appends the `set` and `add` fields.
    pub fn write(&self, vars: &Vars, out: &mut Vec<u8>) {
        for f in self.fields.iter() {
            field_start(out, &f.name);
            f.value.write(vars, out);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The path prefix a route replaces before forwarding (`strip_prefix` → `rewrite_prefix`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixRewrite {
    pub strip: Box<[u8]>,
    pub replace: Box<[u8]>,
}

impl PrefixRewrite {
    /// Writes `path` (origin-form, query included) with the prefix replaced; a path left
    /// empty, or starting with `?`, gets a `/` first. A path without the prefix is written as
    /// it is.
    pub fn write(&self, path: &[u8], out: &mut Vec<u8>) {
        let Some(rest) = path.strip_prefix(&*self.strip) else {
            out.extend_from_slice(path);
            return;
        };
        out.extend_from_slice(&self.replace);
        let ends_in_slash = self.replace.last() == Some(&b'/');
        match rest.first() {
            None | Some(b'?') if !ends_in_slash => out.push(b'/'),
            Some(b'/') if ends_in_slash => {
                out.extend_from_slice(&rest[1..]);
                return;
            }
            _ => {}
        }
        out.extend_from_slice(rest);
    }
}

/// A fixed answer of a route (nginx `return`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub status: u16,
    pub location: Option<Template>,
    pub body: Box<[u8]>,
}

/// Writes the answer of a `return` route: status line, Location, the route's response header
/// edits, Content-Type when there is a body, Content-Length (none for 204 and 304),
/// `Connection: close` when `close`, and the body (none to a HEAD request).
pub fn write_return(
    r: &Return,
    edits: Option<&HeaderEdits>,
    vars: &Vars,
    close: bool,
    head_request: bool,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    num(out, u64::from(r.status));
    out.push(b' ');
    out.extend_from_slice(super::reason(r.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(l) = &r.location {
        field_start(out, b"Location");
        l.write(vars, out);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(e) = edits {
        e.write(vars, out);
    }
    if !matches!(r.status, 204 | 304) {
        if !r.body.is_empty() {
            out.extend_from_slice(b"Content-Type: text/plain\r\n");
        }
        field_start(out, b"Content-Length");
        num(out, r.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request && !matches!(r.status, 204 | 304) {
        out.extend_from_slice(&r.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            remote_addr: IpAddr::from([10, 0, 0, 1]),
            host: b"h.example",
            request_id: b"id1",
            https: true,
            request_uri: b"/a?b",
            server_name: b"s1",
        }
    }

    fn expand(t: &str) -> String {
        let mut out = Vec::new();
        Template::parse(t).expect("valid").write(&vars(), &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn templates_expand_literals_and_variables() {
        assert_eq!(expand("plain"), "plain");
        assert_eq!(
            expand("$scheme://$host$request_uri"),
            "https://h.example/a?b"
        );
        assert_eq!(
            expand("$remote_addr-$request_id-$server_name"),
            "10.0.0.1-id1-s1"
        );
        assert_eq!(expand("$$5 $$"), "$5 $");
        assert_eq!(expand(""), "");
    }

    #[test]
    fn templates_refuse_unknown_variables_and_control_bytes() {
        assert!(Template::parse("$nope").is_err());
        assert!(Template::parse("$").is_err());
        assert!(Template::parse("a\r\nX: b").is_err());
        assert!(Template::parse("a\0").is_err());
        assert!(Template::parse("a\tb").is_ok());
    }

    #[test]
    fn names_refused() {
        for n in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Host",
            "Upgrade",
            "X-Forwarded-For",
            "a b",
            "",
            "a:b",
        ] {
            assert!(refused_name(n).is_some(), "{n}");
        }
        assert!(refused_name("X-Frame-Options").is_none());
    }

    #[test]
    fn prefix_rewrite_keeps_the_query() {
        let rw = |strip: &str, replace: &str, path: &str| {
            let r = PrefixRewrite {
                strip: strip.as_bytes().into(),
                replace: replace.as_bytes().into(),
            };
            let mut out = Vec::new();
            r.write(path.as_bytes(), &mut out);
            String::from_utf8(out).expect("utf8")
        };
        assert_eq!(rw("/api", "/v2", "/api/users?x=1"), "/v2/users?x=1");
        assert_eq!(rw("/api", "/v2", "/api"), "/v2/");
        assert_eq!(rw("/api", "", "/api/users"), "/users");
        assert_eq!(rw("/api", "", "/api?q"), "/?q");
        assert_eq!(rw("/api/", "/", "/api/x"), "/x");
        assert_eq!(rw("/api", "/v2/", "/api/x"), "/v2/x");
        assert_eq!(rw("/api", "/v2", "/other"), "/other");
    }

    #[test]
    fn return_answers() {
        let r = Return {
            status: 301,
            location: Some(Template::parse("https://e.com$request_uri").expect("valid")),
            body: Box::default(),
        };
        let mut out = Vec::new();
        write_return(&r, None, &vars(), false, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 301 Moved Permanently\r\nLocation: https://e.com/a?b\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let r = Return {
            status: 204,
            location: None,
            body: Box::default(),
        };
        out.clear();
        write_return(&r, None, &vars(), true, false, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        );
    }
}
