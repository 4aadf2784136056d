//! TLS with rustls (ring provider): termination on listeners and TLS to upstream servers.
//!
//! Shape under thread-per-core: every core runs its own handshakes on the connections it
//! accepted; nothing is handed between cores. What the cores share is read-only, built once per
//! configuration generation ([`Tls`] lives in the generation):
//! - one `rustls::ServerConfig` per TLS listener; handshakes and connections in flight keep
//!   the config they started with, so a reload drops nothing;
//! - one session-ticket encrypter for the whole process (rustls `Ticketer`: random keys,
//!   rotated every 6 hours, accepted for 12), carried into every new generation, so a client
//!   resumes across a reload and on whichever core the kernel hands its next connection to.
//!   There is no stateful server session cache: it would be a lock shared by all cores
//!   (rustls' is a Mutex), and tickets cover TLS 1.3 and the TLS 1.2 clients that support
//!   them. The ticketer's key rotation takes an `RwLock` read per ticket operation
//!   (uncontended; written every 6 hours);
//! - one `rustls::ClientConfig` per upstream with `tls`. Its client-side session cache is
//!   rustls' default (a Mutex, touched once per new upstream connection; pooled connections
//!   skip it).
//!
//! A config reload ([`Tls::rebuild`]) re-reads every certificate, key and CA file and builds
//! everything before the new generation is published: a bad file is an error naming it, and
//! the old generation keeps serving.
//!
//! Uses `config`, `engine` (streams for the handshake) and `metrics`; names no I/O crate.

pub mod accept;
pub mod certs;
pub mod client;

use crate::config::{Config, ListenerId, ListenerTls, ServerId, TlsVersion};
use crate::metrics::CertificateExpiry;
pub use certs::FieldError;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;

pub const ALPN_HTTP1: &[u8] = b"http/1.1";

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the TLS configs of a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Certificate, key or CA files: one line per problem, each naming the field and file.
    #[error("{}", .0.join("\n"))]
    Files(Vec<String>),
    #[error("cannot create TLS session ticket keys: {0}")]
    Tickets(String),
}

/// Every TLS configuration of the process, shared by all cores.
pub struct Tls {
    ticketer: Arc<dyn ProducesTickets>,
    /// By `ListenerId`; None for plain listeners.
    listeners: Vec<Option<Arc<ServerConfig>>>,
    /// By upstream index; None for upstreams without `tls`.
    upstreams: Vec<Option<Connector>>,
    /// `ServerId` → upstream index.
    server_upstream: Vec<u32>,
    /// `ServerId` → the host name its address came from (`addr = "host:port"`), the name
    /// verified and sent as SNI when the upstream sets no `server_name` (as nginx does with
    /// `proxy_ssl_name` defaulting to the host of `proxy_pass`).
    server_hosts: Vec<Option<ServerName<'static>>>,
    /// Every certificate presented, for the expiry gauge.
    certificates: Vec<CertificateExpiry>,
}

/// How to open TLS connections to the servers of one upstream.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    /// `server_name` from the config; None: each server's IP address (no SNI is sent then).
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The name the server's certificate is verified against, and sent as SNI.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        match &self.server_name {
            Some(n) => n.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The server configuration of one TLS listener, and the validity of its certificates.
pub fn server_config(
    tls: &ListenerTls,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<(Arc<ServerConfig>, Vec<certs::Validity>), Vec<FieldError>> {
    let provider = provider();
    let resolver = certs::SniResolver::load(&tls.certs, &provider)?;
    let validity = resolver.validity().to_vec();
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![FieldError::new("min_version", e.to_string())])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    c.ticketer = ticketer;
    c.session_storage = Arc::new(NoServerSessionStorage {});
    c.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok((Arc::new(c), validity))
}

/// What config validation uses to check TLS sections: it loads every certificate, key and CA
/// file as startup would, so `ringlb check` reports a bad file with its path.
pub struct Files;

impl crate::config::FileCheck for Files {
    fn listener_tls(&self, tls: &ListenerTls) -> Vec<FieldError> {
        let ticketer: Arc<dyn ProducesTickets> = Arc::new(NoTickets);
        server_config(tls, ticketer).err().unwrap_or_default()
    }

    fn upstream_tls(&self, tls: &crate::config::UpstreamTls) -> Vec<FieldError> {
        let mut errors = client::client_config(tls).err().unwrap_or_default();
        if let Some(name) = &tls.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                errors.push(FieldError::new(
                    "server_name",
                    format!("{name:?} is not a DNS name or IP address"),
                ));
            }
        }
        errors
    }
}

/// Validation builds configs only to check them; it needs no ticket keys.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

struct Built {
    servers: Vec<Option<Arc<ServerConfig>>>,
    clients: Vec<Option<Arc<ClientConfig>>>,
    certificates: Vec<CertificateExpiry>,
}

impl Tls {
    /// Loads every certificate of `config`. Errors are one line per problem, each naming the
    /// field and the file.
    pub fn new(config: &Config) -> Result<Tls, TlsError> {
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| TlsError::Tickets(e.to_string()))?;
        Tls::with_ticketer(config, ticketer)
    }

    /// The TLS configs of a reloaded `config`, keeping this process's session-ticket keys so
    /// clients resume across the reload.
    pub fn rebuild(&self, config: &Config) -> Result<Tls, TlsError> {
        Tls::with_ticketer(config, self.ticketer.clone())
    }

    /// The same TLS configs for `config`, whose upstreams are this one's with other servers
    /// (nothing is re-read).
    pub fn with_servers(&self, config: &Config) -> Tls {
        Tls {
            listeners: self.listeners.clone(),
            upstreams: self.upstreams.clone(),
            server_upstream: server_upstream(config),
            server_hosts: server_hosts(config),
            ticketer: self.ticketer.clone(),
            certificates: self.certificates.clone(),
        }
    }

    fn with_ticketer(config: &Config, ticketer: Arc<dyn ProducesTickets>) -> Result<Tls, TlsError> {
        let Built {
            servers,
            clients,
            certificates,
        } = build(config, &ticketer)?;
        let mut upstreams = Vec::new();
        for (u, client) in config.upstreams.iter().zip(clients) {
            upstreams.push(client.map(|c| {
                if u.tls.as_ref().is_some_and(|t| !t.verify) {
                    log::warn!(
                        "upstreams.{}.tls.verify = false: the servers' certificates are not \
                         checked; anyone on the path can impersonate them",
                        u.name
                    );
                }
                Connector {
                    config: c,
                    server_name: u
                        .tls
                        .as_ref()
                        .and_then(|t| t.server_name.as_deref())
                        .and_then(|n| ServerName::try_from(n.to_string()).ok()),
                }
            }));
        }
        Ok(Tls {
            listeners: servers,
            upstreams,
            server_upstream: server_upstream(config),
            server_hosts: server_hosts(config),
            ticketer,
            certificates,
        })
    }

    /// Every certificate of the TLS listeners and the upstreams' client certificates, with
    /// when it expires (one per listener or upstream and file).
    pub fn certificates(&self) -> &[CertificateExpiry] {
        &self.certificates
    }

    /// The current server config of a TLS listener; None for a plain one.
    pub fn server(&self, listener: ListenerId) -> Option<Arc<ServerConfig>> {
        self.listeners.get(listener.0 as usize)?.clone()
    }

    pub fn is_tls(&self, listener: ListenerId) -> bool {
        self.listeners
            .get(listener.0 as usize)
            .is_some_and(Option::is_some)
    }

    /// How to reach `server` with TLS; None when its upstream has no `tls`.
    pub fn upstream(&self, server: ServerId) -> Option<&Connector> {
        let u = *self.server_upstream.get(server.0 as usize)?;
        self.upstreams.get(u as usize)?.as_ref()
    }

    /// What `engine::Stream::connect_upstream` needs to reach `server` at `addr` with TLS:
    /// the client config and the name to verify. None when its upstream has no `tls`.
    pub fn client(
        &self,
        server: ServerId,
        addr: SocketAddr,
    ) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        let c = self.upstream(server)?;
        let name = match (&c.server_name, self.server_hosts.get(server.0 as usize)) {
            (None, Some(Some(host))) => host.clone(),
            _ => c.server_name(addr),
        };
        Some((c.config(), name))
    }
}

/// The upstream of each server, by `ServerId`.
fn server_upstream(config: &Config) -> Vec<u32> {
    config
        .upstreams
        .iter()
        .enumerate()
        .flat_map(|(i, u)| u.servers.iter().map(move |_| i as u32))
        .collect()
}

/// The host name of each server whose address came from one (see `Tls::server_hosts`).
fn server_hosts(config: &Config) -> Vec<Option<ServerName<'static>>> {
    config
        .upstreams
        .iter()
        .flat_map(|u| {
            u.servers
                .iter()
                .map(|s| match u.entries.get(s.entry).map(|e| &e.source) {
                    Some(crate::config::Source::Host { host, .. }) => {
                        ServerName::try_from(host.clone()).ok()
                    }
                    _ => None,
                })
        })
        .collect()
}

fn build(config: &Config, ticketer: &Arc<dyn ProducesTickets>) -> Result<Built, TlsError> {
    let mut errors = Vec::new();
    let mut servers = Vec::new();
    let mut certificates = Vec::new();
    let mut expiry = |listener: &str, upstream: &str, v: certs::Validity| {
        let c = CertificateExpiry {
            listener: listener.to_string(),
            upstream: upstream.to_string(),
            file: v.file,
            subject: v.subject,
            not_after: v.not_after,
        };
        // The same file twice in one place would be a duplicate series.
        if !certificates.contains(&c) {
            certificates.push(c);
        }
    };
    for (i, l) in config.listeners.iter().enumerate() {
        servers.push(match &l.tls {
            None => None,
            Some(tls) => match server_config(tls, ticketer.clone()) {
                Ok((c, validity)) => {
                    for v in validity {
                        expiry(&l.name, "", v);
                    }
                    Some(c)
                }
                Err(e) => {
                    errors.extend(e.iter().map(|e| e.at(&format!("listeners[{i}].tls"))));
                    None
                }
            },
        });
    }
    let mut clients = Vec::new();
    for u in &config.upstreams {
        clients.push(match &u.tls {
            None => None,
            Some(tls) => match client::client_config(tls) {
                Ok((c, validity)) => {
                    if let Some(v) = validity {
                        expiry("", &u.name, v);
                    }
                    Some(c)
                }
                Err(e) => {
                    errors.extend(e.iter().map(|e| e.at(&format!("upstreams.{}.tls", u.name))));
                    None
                }
            },
        });
    }
    if errors.is_empty() {
        Ok(Built {
            servers,
            clients,
            certificates,
        })
    } else {
        Err(TlsError::Files(errors))
    }
}
