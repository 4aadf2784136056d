//! TLS end to end: termination (SNI, versions, ALPN, X-Forwarded-Proto), bad input, session
//! resumption across cores, certificate reload, upstream TLS (verification, mTLS, pooling)
//! and configuration errors. Certificates are made at test time with rcgen.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind, RootCertStore, StreamOwned};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::{temp_path, Backend, Ringlb};

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem_path: PathBuf,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        let pem_path = temp_path(&format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Ca {
            cert,
            key,
            pem_path,
        }
    }

    fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |_| {})
    }

    fn issue_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        edit(&mut p);
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let leaf = Leaf {
            der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_path: temp_path("cert.pem"),
            key_path: temp_path("key.pem"),
        };
        leaf.write();
        leaf
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

struct Leaf {
    der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl Leaf {
    fn write(&self) {
        std::fs::write(&self.cert_path, &self.cert_pem).unwrap();
        std::fs::write(&self.key_path, &self.key_pem).unwrap();
    }

    fn toml(&self) -> String {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            self.cert_path.display(),
            self.key_path.display()
        )
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: RootCertStore) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn client_config_versions(
    roots: RootCertStore,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// DNS names in the subjectAltName of a DER certificate.
fn sans(der: &[u8]) -> Vec<String> {
    let der = CertificateDer::from(der.to_vec());
    let ee = webpki::EndEntityCert::try_from(&der).unwrap();
    ee.valid_dns_names().map(str::to_string).collect()
}

// ---------------------------------------------------------------------------------------------
// A blocking HTTPS client

struct Https {
    tls: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Https {
    fn connect(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>) -> std::io::Result<Https> {
        Https::connect_after(addr, b"", sni, config)
    }

    /// Like `connect`, with `prefix` sent in clear before the handshake (a PROXY header, as
    /// an L4 balancer sends it).
    fn connect_after(
        addr: SocketAddr,
        prefix: &[u8],
        sni: &str,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<Https> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        if !prefix.is_empty() {
            tcp.write_all(prefix)?;
        }
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Https {
            tls,
            buf: Vec::new(),
        })
    }

    /// Sends `bytes` inside TLS; the response, or None when the connection closed first.
    fn try_exchange(&mut self, bytes: &[u8]) -> Option<Resp> {
        self.tls.write_all(bytes).ok()?;
        self.tls.flush().ok()?;
        let mut tmp = [0u8; 16384];
        while !self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match self.tls.read(&mut tmp) {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => return None,
            }
        }
        Some(self.response())
    }

    fn peer_cert(&self) -> Vec<u8> {
        self.tls.conn.peer_certificates().unwrap()[0].to_vec()
    }

    fn get(&mut self, path: &str, host: &str) -> Resp {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.tls.write_all(req.as_bytes()).unwrap();
        self.tls.flush().unwrap();
        self.response()
    }

    fn response(&mut self) -> Resp {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill();
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while self.buf.len() < end + len {
            self.fill();
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Resp { status, head, body }
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 16384];
        let n = self.tls.read(&mut tmp).expect("read response");
        assert!(n > 0, "connection closed before a full response");
        self.buf.extend_from_slice(&tmp[..n]);
    }
}

// ---------------------------------------------------------------------------------------------
// A TLS backend: rustls server over std TcpStream, one thread per connection

struct TlsBackend {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl TlsBackend {
    /// Serves `200 tls-backend client_cert=yes|no` on keep-alive connections. `client_ca`:
    /// require a client certificate signed by it.
    fn start(leaf: &Leaf, client_ca: Option<&Ca>) -> TlsBackend {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
        };
        let config = Arc::new(builder.with_single_cert(leaf.chain(), leaf.key()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counter = conns.clone();
        thread::spawn(move || {
            for tcp in listener.incoming().map_while(Result::ok) {
                let config = config.clone();
                let counter = counter.clone();
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = StreamOwned::new(conn, tcp);
                    let mut buf = Vec::new();
                    let mut tmp = [0u8; 4096];
                    let mut counted = false;
                    loop {
                        let n = match tls.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if !counted {
                            counted = true;
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        buf.extend_from_slice(&tmp[..n]);
                        while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            buf.drain(..i + 4);
                            let body = format!(
                                "tls-backend client_cert={} xfp={}",
                                if tls.conn.peer_certificates().is_some() {
                                    "yes"
                                } else {
                                    "no"
                                },
                                head.lines()
                                    .find_map(|l| l.strip_prefix("x-forwarded-proto: "))
                                    .unwrap_or("-")
                            );
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if tls.write_all(resp.as_bytes()).is_err() {
                                return;
                            }
                            let _ = tls.flush();
                        }
                    }
                });
            }
        });
        TlsBackend { addr, conns }
    }
}

// ---------------------------------------------------------------------------------------------
// Configs

const HEAD: &str = "[runtime]\nworkers = 1\nshutdown_grace = \"2s\"\n\
[admin]\nlisten = \"127.0.0.1:0\"\n[timeouts]\nclient_header = \"1s\"\n";

/// One TLS listener `https` (with `tls_table`) and one plain listener `http`, both routed to
/// upstream `app` at `backend`.
fn tls_config(head: &str, tls_table: &str, backend: SocketAddr) -> String {
    format!(
        "{head}\
         [[listeners]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\ntls = {tls_table}\n\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"https\"\nupstream = \"app\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{backend}\"\n"
    )
}

/// A plain listener routed to upstream `app` whose servers speak TLS (`tls_table`).
fn upstream_tls_config(tls_table: &str, backend: SocketAddr) -> String {
    format!(
        "{HEAD}\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [upstreams.app]\ntls = {tls_table}\n\
         [[upstreams.app.servers]]\naddr = \"{backend}\"\n"
    )
}

fn check(config: &str) -> (bool, String) {
    let path = temp_path("check.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(support::RINGLB)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads until the peer closes; true if it closed within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let deadline = Instant::now() + limit;
    let mut tmp = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut tmp) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Termination

/// A TLS listener with certificates for `a.test` (the default) and `*.b.test`, in front of
/// one backend.
fn two_certificates(ca: &Ca) -> (Backend, Ringlb) {
    let a = ca.issue(&["a.test"]);
    let b = ca.issue(&["*.b.test"]);
    let backend = Backend::start("app1", &[]);
    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}, {}] }}", a.toml(), b.toml()),
        backend.addr,
    ));
    (backend, lb)
}

#[test]
fn sni_picks_the_certificate_and_requests_reach_the_backend_as_https() {
    let ca = Ca::new("sni");
    let (_backend, lb) = two_certificates(&ca);
    let https = lb.listeners[0];
    let config = Arc::new(client_config(ca.roots()));

    let mut c = Https::connect(https, "a.test", config.clone()).unwrap();
    assert_eq!(sans(&c.peer_cert()), ["a.test"]);
    assert_eq!(c.tls.conn.alpn_protocol(), None, "no ALPN offered");
    let r = c.get("/echo", "a.test");
    assert_eq!(r.status, 200);
    let echoed = r.text().to_lowercase();
    assert!(
        echoed.contains("x-forwarded-proto: https"),
        "backend saw: {echoed}"
    );
    // Keep-alive over TLS: a second request on the same connection.
    assert_eq!(c.get("/echo", "a.test").status, 200);

    let c = Https::connect(https, "x.b.test", config.clone()).unwrap();
    assert_eq!(sans(&c.peer_cert()), ["*.b.test"]);

    // A wildcard covers one label only; an unknown name gets the default (first) certificate,
    // which the client then rejects for the name: the handshake fails on the client side.
    for name in ["y.x.b.test", "unknown.test"] {
        let err = Https::connect(https, name, config.clone())
            .err()
            .unwrap_or_else(|| panic!("{name}: the default certificate must not verify"));
        assert!(
            err.to_string().contains("not valid for name")
                && err.to_string().contains("DnsName(\"a.test\")"),
            "{name}: {err}"
        );
    }

    // ALPN: http/1.1 is chosen among what the client offers.
    let mut alpn = client_config(ca.roots());
    alpn.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let c = Https::connect(https, "a.test", Arc::new(alpn)).unwrap();
    assert_eq!(c.tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    // The plain listener beside it still speaks HTTP, and says so.
    let mut plain = support::Client::connect(lb.listeners[1]);
    plain.send(b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    let r = plain.response();
    assert_eq!(r.status, 200);
    assert!(r
        .text()
        .to_lowercase()
        .contains("x-forwarded-proto: http\r\n"));
}

#[test]
fn unknown_or_missing_sni_gets_the_default_certificate() {
    let ca = Ca::new("default");
    let (_backend, lb) = two_certificates(&ca);
    // No SNI at all (as clients connecting by IP address): the first certificate.
    let mut config = client_config(ca.roots());
    config.enable_sni = false;
    let c = Https::connect(lb.listeners[0], "a.test", Arc::new(config)).unwrap();
    assert_eq!(
        sans(&c.peer_cert()),
        ["a.test"],
        "no SNI: the first certificate"
    );
}

#[test]
fn min_version_13_refuses_a_tls12_client_and_12_accepts_it() {
    let ca = Ca::new("versions");
    let a = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let tls12 = Arc::new(client_config_versions(
        ca.roots(),
        &[&rustls::version::TLS12],
    ));

    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}], min_version = \"1.3\" }}", a.toml()),
        backend.addr,
    ));
    let err = Https::connect(lb.listeners[0], "a.test", tls12.clone())
        .err()
        .expect("a TLS 1.2-only client must be refused");
    assert!(err.to_string().contains("ProtocolVersion"), "{err}");
    let c = Https::connect(
        lb.listeners[0],
        "a.test",
        Arc::new(client_config(ca.roots())),
    )
    .unwrap();
    assert_eq!(
        c.tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    drop(lb);

    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", a.toml()),
        backend.addr,
    ));
    let mut c = Https::connect(lb.listeners[0], "a.test", tls12).unwrap();
    assert_eq!(
        c.tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(c.get("/", "a.test").status, 200);
}

#[test]
fn tls_11_and_older_are_refused() {
    let ca = Ca::new("old");
    let a = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", a.toml()),
        backend.addr,
    ));
    let run = |flag: &str| {
        std::process::Command::new("openssl")
            .args(["s_client", "-connect", &lb.listeners[0].to_string()])
            .args([
                flag,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
                "-servername",
                "a.test",
            ])
            .stdin(std::process::Stdio::null())
            .output()
    };
    let Ok(out) = run("-tls1_1") else {
        println!("NOTE: openssl is not installed; TLS 1.1 refusal not checked");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("no protocols available") || text.contains("unknown option") {
        println!("NOTE: this openssl cannot offer TLS 1.1; refusal not checked:\n{text}");
        return;
    }
    assert!(
        !out.status.success(),
        "TLS 1.1 handshake succeeded:\n{text}"
    );
    assert!(
        text.contains("alert protocol version") || text.contains("Cipher is (NONE)"),
        "{text}"
    );
    // The same openssl does complete a TLS 1.2 handshake, so the refusal above is about the
    // version.
    let out = run("-tls1_2").unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TLSv1.2"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn plain_http_truncated_hello_and_garbage_get_a_clean_close() {
    let ca = Ca::new("bad");
    let a = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", a.toml()),
        backend.addr,
    ));
    let https = lb.listeners[0];

    // Plain HTTP: an HTTP 400 saying so, then close.
    let reply = support::exchange_raw(https, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("plain HTTP request was sent to HTTPS port"));

    // A truncated ClientHello: closed once timeouts.client_header (1s) is over, not held.
    let mut s = TcpStream::connect(https).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03])
        .unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );

    // Silence: the same timeout.
    let mut s = TcpStream::connect(https).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));

    // A TLS record type but garbage inside: closed at once (an alert, then FIN).
    let mut s = TcpStream::connect(https).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert!(t.elapsed() < Duration::from_millis(800));

    // Binary garbage: closed.
    let mut s = TcpStream::connect(https).unwrap();
    s.write_all(&[0, 1, 2, 3]).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));

    // The process is unharmed.
    let mut c = Https::connect(https, "a.test", Arc::new(client_config(ca.roots()))).unwrap();
    assert_eq!(c.get("/", "a.test").status, 200);
}

/// The value of the series `name{labels}` in a scrape, 0 when absent.
fn series(text: &str, name_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_labels)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn failed_handshakes_are_counted_by_reason_not_logged() {
    const PROBES: usize = 150;
    let ca = Ca::new("flood");
    let a = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", a.toml()),
        backend.addr,
    ));
    let https = lb.listeners[0];
    for _ in 0..PROBES {
        let reply = support::exchange_raw(https, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
        assert!(reply.starts_with(b"HTTP/1.1 400"));
    }
    for _ in 0..PROBES {
        let mut s = TcpStream::connect(https).unwrap();
        s.write_all(&[0, 1, 2, 3]).unwrap();
        assert!(closed_within(&mut s, Duration::from_secs(5)));
    }
    let mut s = TcpStream::connect(https).unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));

    let text = lb.admin_get("/metrics").text();
    let failures = "ringlb_tls_handshake_failures_total{listener=\"https\",reason=";
    assert_eq!(
        series(&text, &format!("{failures}\"plain_http\"}}")),
        PROBES as u64,
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("{failures}\"not_tls\"}}")),
        PROBES as u64
    );
    assert_eq!(series(&text, &format!("{failures}\"error\"}}")), 1);

    // Not one log line for them (RUST_LOG=info): drain what was written.
    let mut lines = Vec::new();
    while let Some(l) = lb.proc.next_line(Duration::from_millis(300)) {
        lines.push(l);
    }
    let noisy: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("TLS handshake") || l.contains("plain HTTP"))
        .collect();
    assert!(
        noisy.is_empty(),
        "{} lines, e.g. {:?}",
        noisy.len(),
        noisy.first()
    );
}

#[test]
fn plain_listener_redirects_to_https() {
    let backend = Backend::start("app1", &[]);
    let config = format!(
        "{HEAD}\
         [[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\nredirect_https = true\n\
         [[listeners]]\nname = \"other\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"other\"\nupstream = \"app\"\n\
         [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{}\"\n",
        backend.addr
    );
    let lb = Ringlb::start(&config);
    let mut c = support::Client::connect(lb.listeners[0]);
    c.send(b"GET /x/y?z=1 HTTP/1.1\r\nHost: a.test:8080\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://a.test/x/y?z=1"));
    // Keep-alive survives a redirect.
    c.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert_eq!(c.response().header("location"), Some("https://a.test/"));
    assert_eq!(backend.stats().0, 0, "nothing reached the backend");
}

// ---------------------------------------------------------------------------------------------
// Resumption and reload

#[test]
fn sessions_resume_across_two_workers() {
    let ca = Ca::new("resume");
    let a = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let head = HEAD.replace("workers = 1", "workers = 2");
    let lb = Ringlb::start(&tls_config(
        &head,
        &format!("{{ certs = [{}] }}", a.toml()),
        backend.addr,
    ));
    // SO_REUSEPORT spreads connections by their 4-tuple: over 10 connections both workers
    // take some (all on one is a 2^-9 chance), so a ticket issued by one worker is presented
    // to the other.
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = Arc::new(client_config_versions(ca.roots(), versions));
        let mut kinds = Vec::new();
        for _ in 0..10 {
            let mut c = Https::connect(lb.listeners[0], "a.test", config.clone()).unwrap();
            // The request also reads the TLS 1.3 tickets the server sends after the handshake.
            assert_eq!(c.get("/", "a.test").status, 200);
            kinds.push(c.tls.conn.handshake_kind().unwrap());
        }
        assert_eq!(kinds[0], HandshakeKind::Full);
        assert!(
            kinds[1..].iter().all(|k| *k == HandshakeKind::Resumed),
            "{versions:?}: {kinds:?}"
        );
    }
}

#[test]
fn sighup_reloads_certificates_without_dropping_connections() {
    let ca = Ca::new("reload");
    let first = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let lb = Ringlb::start(&tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", first.toml()),
        backend.addr,
    ));
    // A fresh client config per connection: a resumed session would show the certificate of
    // the session it resumes.
    let config = || Arc::new(client_config(ca.roots()));
    let mut old = Https::connect(lb.listeners[0], "a.test", config()).unwrap();
    assert_eq!(old.peer_cert(), first.der);
    assert_eq!(old.get("/", "a.test").status, 200);

    // A new certificate and key in the same files.
    let second = ca.issue(&["a.test", "new.test"]);
    std::fs::copy(&second.cert_path, &first.cert_path).unwrap();
    std::fs::copy(&second.key_path, &first.key_path).unwrap();
    lb.proc.signal(libc::SIGHUP);
    lb.proc
        .wait_line(Duration::from_secs(5), |l| l.contains("reloaded"))
        .expect("reload logged");
    let c = Https::connect(lb.listeners[0], "a.test", config()).unwrap();
    assert_eq!(
        c.peer_cert(),
        second.der,
        "new connections get the new certificate"
    );
    assert_eq!(
        old.get("/", "a.test").status,
        200,
        "the old connection lives on"
    );

    // A broken key: the reload fails naming the file, the current certificate keeps serving.
    std::fs::write(&first.key_path, "not a key").unwrap();
    lb.proc.signal(libc::SIGHUP);
    let line = lb
        .proc
        .wait_line(Duration::from_secs(5), |l| {
            l.contains("listeners[0].tls.certs[0].key")
        })
        .expect("failed reload logged");
    assert!(
        line.contains(&first.key_path.display().to_string()),
        "{line}"
    );
    let c = Https::connect(lb.listeners[0], "a.test", config()).unwrap();
    assert_eq!(c.peer_cert(), second.der);
    assert_eq!(old.get("/", "a.test").status, 200);
}

#[test]
fn a_tls_listener_added_by_reload_serves_its_certificate() {
    let ca = Ca::new("added");
    let leaf = ca.issue(&["a.test"]);
    let backend = Backend::start("app1", &[]);
    let text = tls_config(
        HEAD,
        &format!("{{ certs = [{}] }}", leaf.toml()),
        backend.addr,
    );
    // Only the plain listener at first.
    let plain = format!(
        "{HEAD}[[listeners]]\nname = \"http\"\nlisten = \"127.0.0.1:0\"\n\
         [[routes]]\nlistener = \"http\"\nupstream = \"app\"\n\
         [upstreams.app]\n[[upstreams.app.servers]]\naddr = \"{}\"\n",
        backend.addr
    );
    let lb = Ringlb::start(&plain);
    let http = lb.addr();
    support::rewrite(&lb, &text);
    let https = support::sighup_reload(&lb, "https").expect("the TLS listener");
    let mut c = Https::connect(https, "a.test", Arc::new(client_config(ca.roots()))).unwrap();
    assert_eq!(c.peer_cert(), leaf.der);
    assert_eq!(c.get("/", "a.test").status, 200);
    // The plain listener kept its socket (port 0, same name) and serves on.
    assert_eq!(lb.get("/").status, 200);
    assert_eq!(lb.addr(), http);
}

// ---------------------------------------------------------------------------------------------
// Upstream TLS

#[test]
fn upstream_tls_verifies_the_server_and_pools_connections() {
    let ca = Ca::new("up");
    let other = Ca::new("other");
    let good = TlsBackend::start(&ca.issue(&["backend.test"]), None);
    let forged = TlsBackend::start(&other.issue(&["backend.test"]), None);
    let expired = TlsBackend::start(
        &ca.issue_with(&["backend.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }),
        None,
    );
    let verify = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem_path.display()
    );

    let lb = Ringlb::start(&upstream_tls_config(&verify, good.addr));
    for _ in 0..3 {
        let r = lb.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "tls-backend client_cert=no xfp=http");
    }
    assert_eq!(
        good.conns.load(Ordering::SeqCst),
        1,
        "the TLS connection is pooled and reused"
    );
    drop(lb);

    for (backend, why) in [
        (&forged, "UnknownIssuer"),
        (&expired, "certificate expired"),
    ] {
        let lb = Ringlb::start(&upstream_tls_config(&verify, backend.addr));
        assert_eq!(lb.get("/").status, 502);
        let line = lb
            .proc
            .wait_line(Duration::from_secs(2), |l| {
                l.contains("TLS handshake with upstream")
            })
            .expect("logged");
        assert!(line.contains(why), "{line}");
        assert_eq!(backend.conns.load(Ordering::SeqCst), 0, "no request sent");
    }

    // The wrong name is refused too.
    let wrong_name = format!(
        "{{ ca = \"{}\", server_name = \"other.test\" }}",
        ca.pem_path.display()
    );
    let lb = Ringlb::start(&upstream_tls_config(&wrong_name, good.addr));
    assert_eq!(lb.get("/").status, 502);
    drop(lb);

    // verify = false accepts the forged certificate, with a warning at start.
    let lb = Ringlb::start(&upstream_tls_config("{ verify = false }", forged.addr));
    assert_eq!(lb.get("/").status, 200);
    assert!(lb
        .proc
        .wait_line(Duration::from_secs(2), |l| l.contains("verify = false"))
        .is_some());
}

#[test]
fn upstream_mutual_tls_presents_the_client_certificate() {
    let ca = Ca::new("mtls");
    let backend = TlsBackend::start(&ca.issue(&["backend.test"]), Some(&ca));
    let client = ca.issue(&["ringlb.test"]);
    let with_cert = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\", client_cert = \"{}\", client_key = \"{}\" }}",
        ca.pem_path.display(),
        client.cert_path.display(),
        client.key_path.display()
    );
    let lb = Ringlb::start(&upstream_tls_config(&with_cert, backend.addr));
    let r = lb.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "tls-backend client_cert=yes xfp=http");
    drop(lb);

    let without = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem_path.display()
    );
    let lb = Ringlb::start(&upstream_tls_config(&without, backend.addr));
    assert_eq!(lb.get("/").status, 502);
}

#[test]
fn https_end_to_end_forwards_https_to_a_tls_backend() {
    let ca = Ca::new("e2e");
    let front = ca.issue(&["a.test"]);
    let backend = TlsBackend::start(&ca.issue(&["backend.test"]), None);
    let config = format!(
        "{HEAD}\
         [[listeners]]\nname = \"https\"\nlisten = \"127.0.0.1:0\"\ntls = {{ certs = [{}] }}\n\
         [[routes]]\nlistener = \"https\"\nupstream = \"app\"\n\
         [upstreams.app]\ntls = {{ ca = \"{}\", server_name = \"backend.test\" }}\n\
         [[upstreams.app.servers]]\naddr = \"{}\"\n",
        front.toml(),
        ca.pem_path.display(),
        backend.addr
    );
    let lb = Ringlb::start(&config);
    let mut c = Https::connect(
        lb.listeners[0],
        "a.test",
        Arc::new(client_config(ca.roots())),
    )
    .unwrap();
    for _ in 0..3 {
        let r = c.get("/", "a.test");
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.text(), "tls-backend client_cert=no xfp=https");
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

#[test]
fn bad_certificates_are_errors_naming_the_field_and_the_file() {
    let ca = Ca::new("errors");
    let a = ca.issue(&["a.test"]);
    let b = ca.issue(&["b.test"]);
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();

    let missing = "/nonexistent/x.pem";
    let (ok, err) = check(&tls_config(
        HEAD,
        &format!(
            "{{ certs = [{}, {{ cert = \"{missing}\", key = \"{}\" }}] }}",
            a.toml(),
            a.key_path.display()
        ),
        backend,
    ));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "listeners[0].tls.certs[1].cert: cannot read {missing}: No such file"
        )),
        "{err}"
    );

    // A key that belongs to another certificate.
    let (ok, err) = check(&tls_config(
        HEAD,
        &format!(
            "{{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            a.cert_path.display(),
            b.key_path.display()
        ),
        backend,
    ));
    assert!(!ok);
    assert!(
        err.contains("listeners[0].tls.certs[0].key: the key in")
            && err.contains("does not match the certificate"),
        "{err}"
    );

    // Not PEM at all.
    let junk = temp_path("junk.pem");
    std::fs::write(&junk, "hello").unwrap();
    let (ok, err) = check(&tls_config(
        HEAD,
        &format!(
            "{{ certs = [{{ cert = \"{}\", key = \"{}\" }}], min_version = \"1.1\" }}",
            junk.display(),
            a.key_path.display()
        ),
        backend,
    ));
    assert!(!ok);
    assert!(err.contains("listeners[0].tls.min_version"), "{err}");
    let (ok, err) = check(&tls_config(
        HEAD,
        &format!(
            "{{ certs = [{{ cert = \"{}\", key = \"{}\" }}] }}",
            junk.display(),
            a.key_path.display()
        ),
        backend,
    ));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "listeners[0].tls.certs[0].cert: no certificate (BEGIN CERTIFICATE) in {}",
            junk.display()
        )),
        "{err}"
    );

    // Upstream: verification needs a CA; mTLS needs both halves.
    let (ok, err) = check(&upstream_tls_config(
        "{ server_name = \"x.test\" }",
        backend,
    ));
    assert!(!ok);
    assert!(err.contains("upstreams.app.tls.ca: required"), "{err}");
    let (ok, err) = check(&upstream_tls_config(
        &format!(
            "{{ verify = false, client_cert = \"{}\" }}",
            a.cert_path.display()
        ),
        backend,
    ));
    assert!(!ok);
    assert!(
        err.contains("upstreams.app.tls.client_key: required"),
        "{err}"
    );

    // The same errors stop `ringlb run` before it serves.
    let path = temp_path("bad-run.toml");
    std::fs::write(
        &path,
        tls_config(
            HEAD,
            &format!("{{ certs = [{{ cert = \"{missing}\", key = \"{missing}\" }}] }}"),
            backend,
        ),
    )
    .unwrap();
    let out = std::process::Command::new(support::RINGLB)
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listeners[0].tls.certs[0].key: cannot read"),
        "{err}"
    );
    let (ok, _) = check(&tls_config(
        HEAD,
        &format!("{{ certs = [{}, {}] }}", a.toml(), b.toml()),
        backend,
    ));
    assert!(ok);
}

#[test]
fn health_checks_use_tls_and_verify_the_server() {
    let ca = Ca::new("hc");
    let other = Ca::new("hc-other");
    let good = TlsBackend::start(&ca.issue(&["backend.test"]), None);
    let forged = TlsBackend::start(&other.issue(&["backend.test"]), None);
    let verify = format!(
        "{{ ca = \"{}\", server_name = \"backend.test\" }}",
        ca.pem_path.display()
    );
    let checks = "[upstreams.app.health_check]\npath = \"/health\"\ninterval = \"1s\"\n\
                  timeout = \"1s\"\nrise = 1\nfall = 1\n";
    for (backend, up) in [(&good, true), (&forged, false)] {
        let lb = Ringlb::start(&(upstream_tls_config(&verify, backend.addr) + checks));
        let health = if up {
            "\"health\":\"up\""
        } else {
            "\"health\":\"down\""
        };
        // The first check's verdict (a loaded machine may take a while for a handshake).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut state = lb.admin_get("/api/upstreams/app").text();
        while !(state.contains(health) && (!up || state.contains("\"ok\":true")))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
            state = lb.admin_get("/api/upstreams/app").text();
        }
        assert!(state.contains(health), "{state}");
        if up {
            assert!(
                state.contains("\"ok\":true") && state.contains("\"status\":200"),
                "{state}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol on a TLS listener: before the handshake, never inside it

/// A TLS listener with `proxy_protocol = true` (and `extra` listener lines), a JSON access
/// log at `log`, in front of `backend`.
fn proxied_tls(ca: &Ca, backend: SocketAddr, extra: &str, log: &std::path::Path) -> Ringlb {
    let leaf = ca.issue(&["a.test"]);
    let head = format!(
        "{HEAD}[access_log]\nformat = \"json\"\npath = \"{}\"\n",
        log.display()
    );
    Ringlb::start(&tls_config(
        &head,
        &format!(
            "{{ certs = [{}] }}\nproxy_protocol = true\n{extra}",
            leaf.toml()
        ),
        backend,
    ))
}

const PROXY_V1: &[u8] = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n";

#[test]
fn proxy_header_before_the_handshake_names_the_client() {
    let ca = Ca::new("pp");
    let backend = Backend::start("app1", &[]);
    let log = temp_path("pp.json");
    let lb = proxied_tls(&ca, backend.addr, "", &log);
    let config = Arc::new(client_config(ca.roots()));
    // v1, as HAProxy `send-proxy` and most L4 balancers send it.
    let mut c = Https::connect_after(lb.listeners[0], PROXY_V1, "a.test", config.clone())
        .expect("handshake after a PROXY header");
    let r = c.get("/echo", "a.test");
    assert_eq!(r.status, 200);
    let echoed = r.text().to_lowercase();
    assert!(
        echoed.contains("x-forwarded-for: 203.0.113.9"),
        "backend saw: {echoed}"
    );
    // v2 (AWS NLB, GCP), IPv6.
    let v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (
            "[2001:db8::7]:4000".parse::<SocketAddr>().unwrap(),
            "[2001:db8::1]:443".parse::<SocketAddr>().unwrap(),
        ),
    )
    .build()
    .unwrap();
    let mut c = Https::connect_after(lb.listeners[0], &v2, "a.test", config).unwrap();
    let echoed = c.get("/echo", "a.test").text().to_lowercase();
    assert!(echoed.contains("x-forwarded-for: 2001:db8::7"), "{echoed}");
    // The access log names the PROXY source.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 2 || Instant::now() > deadline {
            break text;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains("\"remote_addr\":\"203.0.113.9\""),
        "access log: {text}"
    );
    assert!(text.contains("2001:db8::7"), "access log: {text}");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn a_proxy_header_inside_tls_is_not_honoured() {
    let ca = Ca::new("pp-inside");
    let backend = Backend::start("app1", &[]);
    let log = temp_path("pp-inside.json");
    let lb = proxied_tls(&ca, backend.addr, "", &log);
    let config = Arc::new(client_config(ca.roots()));
    let forged =
        b"PROXY TCP4 8.8.4.4 127.0.0.1 5555 443\r\nGET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n";
    // A TLS client straight to the port, choosing its address inside TLS: no PROXY header
    // came first, so the connection ends before any request is served.
    let served = Https::connect(lb.listeners[0], "a.test", config.clone())
        .ok()
        .and_then(|mut c| c.try_exchange(forged));
    assert!(
        served.is_none(),
        "served: {:?}",
        served.map(|r| (r.status, r.text()))
    );
    // Through the balancer (PROXY first), a second header inside TLS is just bad HTTP.
    let mut c = Https::connect_after(lb.listeners[0], PROXY_V1, "a.test", config).unwrap();
    let r = c.try_exchange(forged);
    let status = r.as_ref().map(|r| r.status);
    assert!(
        status.is_none() || status == Some(400),
        "{:?}",
        r.map(|r| r.text())
    );
    assert_eq!(backend.stats().0, 0, "no request reached the backend");
    let _ = std::fs::remove_file(&log);
}

#[test]
fn peers_outside_proxy_protocol_from_are_closed_and_counted() {
    let ca = Ca::new("pp-from");
    let backend = Backend::start("app1", &[]);
    let log = temp_path("pp-from.json");
    let lb = proxied_tls(
        &ca,
        backend.addr,
        "proxy_protocol_from = [\"10.0.0.0/8\"]",
        &log,
    );
    let config = Arc::new(client_config(ca.roots()));
    // 127.0.0.1 is not a listed balancer: closed, whatever it sends.
    assert!(Https::connect_after(lb.listeners[0], PROXY_V1, "a.test", config).is_err());
    let mut s = TcpStream::connect(lb.listeners[0]).unwrap();
    s.write_all(PROXY_V1).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)));
    assert_eq!(backend.stats().0, 0);
    let text = lb.admin_get("/metrics").text();
    assert_eq!(
        series(
            &text,
            "ringlb_connections_refused_total{listener=\"https\",reason=\"proxy_protocol_from\"}"
        ),
        2,
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

/// A server given by host name (`addr = "localhost:PORT"`) is verified against that name,
/// and it is sent as SNI, when the upstream sets no `server_name` (nginx's `proxy_ssl_name`
/// defaults to the host of `proxy_pass` the same way); a certificate for another name fails.
#[test]
fn upstream_tls_verifies_a_named_server_against_its_host_name() {
    let ca = Ca::new("up");
    let right = TlsBackend::start(&ca.issue(&["localhost"]), None);
    let wrong = TlsBackend::start(&ca.issue(&["other.test"]), None);
    let verify = format!("{{ ca = \"{}\" }}", ca.pem_path.display());
    let named = |port: u16| {
        upstream_tls_config(&verify, "127.0.0.1:1".parse().unwrap()).replace(
            "addr = \"127.0.0.1:1\"",
            &format!("addr = \"localhost:{port}\""),
        )
    };
    let lb = Ringlb::start(&named(right.addr.port()));
    let r = lb.get("/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "tls-backend client_cert=no xfp=http");
    drop(lb);
    let lb = Ringlb::start(&named(wrong.addr.port()));
    assert_eq!(lb.get("/").status, 502);
}
