//! `RunArgs` validated once into a `Plan`: resolved address, the request bytes, the load model.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::cli::RunArgs;

/// How requests are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Each connection sends its next request as soon as it has room (like wrk).
    Closed,
    /// Requests go out on a fixed timetable at `rate` per second in total (like wrk2);
    /// latency counts from each request's intended send time.
    Open { rate: f64 },
}

/// When measuring stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    KeepAlive,
    /// A new connection (and TLS handshake) for every request.
    PerRequest,
}

pub struct Plan {
    pub addr: SocketAddr,
    pub tls: Option<super::tls::Client>,
    /// One request, head and body, exactly as sent.
    pub request: Box<[u8]>,
    /// The method is HEAD, so responses carry no body.
    pub head_request: bool,
    pub connections: u32,
    pub cores: u16,
    pub pinning: crate::rt::Pinning,
    pub pipeline: u32,
    pub load: Load,
    pub stop: Stop,
    pub warmup: Duration,
    pub timeout: Duration,
    /// Per-interval histograms are kept (for `--interval` lines and `--hdr-log`).
    pub interval: Option<Duration>,
    /// Print a line per interval on stderr.
    pub interval_lines: bool,
    pub hdr_log: Option<std::path::PathBuf>,
    pub reuse: Reuse,
    /// Target as given, for the report.
    pub url: String,
}

/// `scheme://host[:port][/path]` split into parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Url<'a> {
    pub https: bool,
    /// Host as written (brackets kept for IPv6), used for the Host header.
    pub authority: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
}

pub fn parse_url(url: &str) -> anyhow::Result<Url<'_>> {
    let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        bail!("URL '{url}' must start with http:// or https://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("URL '{url}' has no host");
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .with_context(|| format!("URL '{url}': unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, parse_port(url, p)?),
            None if after.is_empty() => (host, default_port),
            None => bail!("URL '{url}': junk after ']'"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(url, p)?),
            None => (authority, default_port),
        }
    };
    Ok(Url {
        https,
        authority,
        host,
        port,
        path,
    })
}

fn parse_port(url: &str, p: &str) -> anyhow::Result<u16> {
    p.parse()
        .with_context(|| format!("URL '{url}': '{p}' is not a port"))
}

impl Plan {
    pub fn from_args(a: &RunArgs) -> anyhow::Result<Plan> {
        let url = parse_url(&a.url)?;
        let addr = (url.host, url.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve '{}'", url.host))?
            .next()
            .with_context(|| format!("'{}' has no address", url.host))?;
        let tls = match (url.https, &a.ca, a.insecure) {
            (false, None, false) => None,
            (false, _, _) => bail!("--ca and --insecure need an https:// URL"),
            (true, ca, insecure) => {
                Some(super::tls::Client::new(url.host, ca.as_deref(), insecure)?)
            }
        };
        let body = match (&a.body, &a.body_file) {
            (Some(b), _) => b.clone().into_bytes(),
            (None, Some(f)) => {
                std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
            }
            (None, None) => Vec::new(),
        };
        let method = a.method.as_str();
        if method.is_empty()
            || !method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            bail!("'{method}' is not a method");
        }
        let reuse = if a.no_keepalive {
            Reuse::PerRequest
        } else {
            Reuse::KeepAlive
        };
        if reuse == Reuse::PerRequest && a.pipeline > 1 {
            bail!("--pipeline needs keep-alive connections (drop --no-keepalive)");
        }
        let request = build_request(method, &url, &a.headers, &body, reuse)?;
        let stop = match (a.requests, a.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) if d.is_zero() => bail!("--duration must be above zero"),
            (None, Some(d)) => Stop::After(d),
            (None, None) => Stop::After(Duration::from_secs(10)),
        };
        if a.interval.is_some_and(|i| i < Duration::from_millis(10)) {
            bail!("--interval must be at least 10ms");
        }
        if a.timeout.is_zero() {
            bail!("--timeout must be above zero");
        }
        let connections = a.connections;
        Ok(Plan {
            addr,
            tls,
            request: request.into_boxed_slice(),
            head_request: method.eq_ignore_ascii_case("HEAD"),
            connections,
            // A core without a connection would only idle.
            cores: a
                .cores
                .count()
                .min(u16::try_from(connections).unwrap_or(u16::MAX)),
            pinning: a.cores.pinning(),
            pipeline: a.pipeline,
            load: a.rate.map_or(Load::Closed, |rate| Load::Open { rate }),
            stop,
            warmup: a.warmup,
            timeout: a.timeout,
            interval: match (a.interval, &a.hdr_log) {
                (Some(i), _) => Some(i),
                (None, Some(_)) => Some(Duration::from_secs(1)),
                (None, None) => None,
            },
            interval_lines: a.interval.is_some(),
            hdr_log: a.hdr_log.clone(),
            reuse,
            url: a.url.clone(),
        })
    }

    /// Connections that core `core` drives: a contiguous run of global indices.
    pub fn connections_of(&self, core: usize) -> std::ops::Range<u32> {
        let (c, n) = (self.connections, u32::from(self.cores));
        let per = c / n;
        let extra = c % n;
        let core = core as u32;
        let start = core * per + core.min(extra);
        start..start + per + u32::from(core < extra)
    }

    /// Measured requests that connection `k` sends under `Stop::Count(n)`.
    pub fn quota_of(&self, k: u32, n: u64) -> u64 {
        let c = u64::from(self.connections);
        n / c + u64::from(u64::from(k) < n % c)
    }
}

fn build_request(
    method: &str,
    url: &Url<'_>,
    headers: &[String],
    body: &[u8],
    reuse: Reuse,
) -> anyhow::Result<Vec<u8>> {
    let mut req = format!("{method} {} HTTP/1.1\r\n", url.path).into_bytes();
    let (mut has_host, mut has_length) = (false, false);
    let mut extra = Vec::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header '{h}' must look like 'Name: value'"))?;
        let name = name.trim();
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b == b':') {
            bail!("header '{h}' has a bad name");
        }
        if value.contains(['\r', '\n']) {
            bail!("header '{h}' has a line break");
        }
        has_host |= name.eq_ignore_ascii_case("host");
        has_length |= name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        extra.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
    }
    if !has_host {
        req.extend_from_slice(format!("Host: {}\r\n", url.authority).as_bytes());
    }
    req.extend_from_slice(&extra);
    let wants_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
    if !has_length && wants_length {
        req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    if reuse == Reuse::PerRequest {
        req.extend_from_slice(b"Connection: close\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/a?b=1").unwrap();
        assert_eq!(
            (u.https, u.host, u.port, u.path),
            (false, "127.0.0.1", 8080, "/a?b=1")
        );
        let u = parse_url("https://example.com").unwrap();
        assert_eq!(
            (u.https, u.host, u.port, u.path),
            (true, "example.com", 443, "/")
        );
        let u = parse_url("http://[::1]:9/").unwrap();
        assert_eq!((u.host, u.port, u.authority), ("::1", 9, "[::1]:9"));
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://x:port/").is_err());
        assert!(parse_url("http:///").is_err());
    }

    #[test]
    fn request_bytes() {
        let u = parse_url("http://h:1/p").unwrap();
        let r = build_request("POST", &u, &["X-A: 1".into()], b"hi", Reuse::PerRequest).unwrap();
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "POST /p HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        assert!(build_request("GET", &u, &["nocolon".into()], b"", Reuse::KeepAlive).is_err());
    }
}
