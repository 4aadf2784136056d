//! TLS with rustls (ring provider): termination on listeners and TLS to upstream servers.
//!
//! Shape under thread-per-core: every core runs its own handshakes on the connections it
//! accepted; nothing is handed between cores. What the cores share is read-only or swapped
//! whole:
//! - one `rustls::ServerConfig` per TLS listener, behind an `ArcSwap` that a certificate reload
//!   replaces (each handshake loads the current one; handshakes and connections in flight keep
//!   the config they started with, so a reload drops nothing);
//! - one session-ticket encrypter for the whole process (rustls `Ticketer`: random keys,
//!   rotated every 6 hours, accepted for 12), kept across reloads, so a client resumes on
//!   whichever core the kernel hands its next connection to. There is no stateful server
//!   session cache: it would be a lock shared by all cores (rustls' is a Mutex), and tickets
//!   cover TLS 1.3 and the TLS 1.2 clients that support them. The ticketer's key rotation
//!   takes an `RwLock` read per ticket operation (uncontended; written every 6 hours);
//! - one `rustls::ClientConfig` per upstream with `tls`, also behind an `ArcSwap` (reload
//!   re-reads its CA and client certificate). Its client-side session cache is rustls' default
//!   (a Mutex, touched once per new upstream connection; pooled connections skip it).
//!
//! Reload (SIGHUP, admin API) re-reads every certificate, key and CA file, builds everything
//! first and swaps only when all of it loaded: a bad file is an error naming it, and the old
//! certificates keep serving. Only TLS material is reloaded here; listener, route and upstream
//! changes need a restart (or the config reload, when it exists).

pub mod accept;
pub mod certs;
pub mod client;

use crate::config::{Config, ListenerId, ListenerTls, ServerId, TlsVersion};
use arc_swap::ArcSwap;
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

/// Every TLS configuration of the process, shared by all cores.
pub struct Tls {
    ticketer: Arc<dyn ProducesTickets>,
    /// By `ListenerId`; None for plain listeners.
    listeners: Vec<Option<ArcSwap<ServerConfig>>>,
    /// By upstream index; None for upstreams without `tls`.
    upstreams: Vec<Option<Connector>>,
    /// `ServerId` → upstream index.
    server_upstream: Vec<u32>,
}

/// How to open TLS connections to the servers of one upstream.
pub struct Connector {
    config: ArcSwap<ClientConfig>,
    /// `server_name` from the config; None: each server's IP address (no SNI is sent then).
    server_name: Option<ServerName<'static>>,
}

impl Connector {
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.load_full()
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

/// The server configuration of one TLS listener.
pub fn server_config(
    tls: &ListenerTls,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, Vec<FieldError>> {
    let provider = provider();
    let resolver = certs::SniResolver::load(&tls.certs, &provider)?;
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
    Ok(Arc::new(c))
}

/// Checks a listener's TLS section as config validation does (reads the files).
pub fn check_listener(tls: &ListenerTls) -> Vec<FieldError> {
    let ticketer: Arc<dyn ProducesTickets> = Arc::new(NoTickets);
    server_config(tls, ticketer).err().unwrap_or_default()
}

/// Checks an upstream's TLS section as config validation does (reads the files).
pub fn check_upstream(tls: &crate::config::UpstreamTls) -> Vec<FieldError> {
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

type Built = (
    Vec<Option<Arc<ServerConfig>>>,
    Vec<Option<Arc<ClientConfig>>>,
);

impl Tls {
    /// Loads every certificate of `config`. Errors are one line per problem, each naming the
    /// field and the file.
    pub fn new(config: &Config) -> Result<Tls, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot create TLS session ticket keys: {e}"))?;
        Tls::with_ticketer(config, ticketer)
    }

    /// The TLS configs of a reloaded `config`, keeping this process's session-ticket keys so
    /// clients resume across the reload.
    pub fn rebuild(&self, config: &Config) -> Result<Tls, String> {
        Tls::with_ticketer(config, self.ticketer.clone())
    }

    fn with_ticketer(config: &Config, ticketer: Arc<dyn ProducesTickets>) -> Result<Tls, String> {
        let (servers, clients) = build(config, &ticketer)?;
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
                    config: ArcSwap::new(c),
                    server_name: u
                        .tls
                        .as_ref()
                        .and_then(|t| t.server_name.as_deref())
                        .and_then(|n| ServerName::try_from(n.to_string()).ok()),
                }
            }));
        }
        let server_upstream = config
            .upstreams
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.servers.iter().map(move |_| i as u32))
            .collect();
        Ok(Tls {
            listeners: servers.into_iter().map(|s| s.map(ArcSwap::new)).collect(),
            upstreams,
            server_upstream,
            ticketer,
        })
    }

    /// The current server config of a TLS listener; None for a plain one.
    pub fn server(&self, listener: ListenerId) -> Option<Arc<ServerConfig>> {
        self.listeners
            .get(listener.0 as usize)?
            .as_ref()
            .map(|c| c.load_full())
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

    /// Re-reads every certificate, key and CA file of `config` and swaps them in, all or
    /// nothing. Returns how many configs were replaced.
    pub fn reload(&self, config: &Config) -> Result<usize, String> {
        let (servers, clients) = build(config, &self.ticketer)?;
        let mut n = 0;
        for (slot, new) in self.listeners.iter().zip(servers) {
            if let (Some(slot), Some(new)) = (slot, new) {
                slot.store(new);
                n += 1;
            }
        }
        for (slot, new) in self.upstreams.iter().zip(clients) {
            if let (Some(slot), Some(new)) = (slot, new) {
                slot.config.store(new);
                n += 1;
            }
        }
        Ok(n)
    }
}

fn build(config: &Config, ticketer: &Arc<dyn ProducesTickets>) -> Result<Built, String> {
    let mut errors = Vec::new();
    let mut servers = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        servers.push(match &l.tls {
            None => None,
            Some(tls) => match server_config(tls, ticketer.clone()) {
                Ok(c) => Some(c),
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
                Ok(c) => Some(c),
                Err(e) => {
                    errors.extend(e.iter().map(|e| e.at(&format!("upstreams.{}.tls", u.name))));
                    None
                }
            },
        });
    }
    if errors.is_empty() {
        Ok((servers, clients))
    } else {
        Err(errors.join("\n"))
    }
}

/// Reloads the certificates of the running process (SIGHUP, `POST /api/tls/reload`). On error
/// nothing changed and the message names every bad field and file.
pub fn reload(shared: &crate::runtime::Shared) -> Result<(), String> {
    let n = shared.tls.reload(&shared.config)?;
    log::info!("TLS certificates reloaded ({n} configurations)");
    Ok(())
}
