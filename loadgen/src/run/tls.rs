//! https:// with rustls (ring provider) over the reactor's TCP sockets.

use std::io;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures_rustls::client::TlsStream;
use futures_rustls::TlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::net::Socket;

/// Everything needed to start a TLS session with the target; built once, shared by cores.
pub struct Client {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Client {
    /// Trusts the CA certificates in `ca`, or nothing at all with `insecure`.
    pub fn new(host: &str, ca: Option<&Path>, insecure: bool) -> anyhow::Result<Client> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let config = match (ca, insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth(),
            (Some(ca), false) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read {}", ca.display()))?;
                for cert in certs {
                    let cert = cert.with_context(|| format!("bad PEM in {}", ca.display()))?;
                    roots
                        .add(cert)
                        .with_context(|| format!("bad certificate in {}", ca.display()))?;
                }
                if roots.is_empty() {
                    bail!("{} holds no certificate", ca.display());
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, false) => bail!("https:// needs --ca FILE or --insecure"),
        };
        let name = ServerName::try_from(host.to_owned())
            .with_context(|| format!("'{host}' is not a TLS server name"))?;
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    pub async fn handshake(&self, tcp: Socket) -> io::Result<TlsStream<Socket>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// `--insecure`: any certificate is accepted, but handshake signatures are still checked, so
/// the TLS work per connection is the same as with a real verifier.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
