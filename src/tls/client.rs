//! TLS to upstream servers: the rustls client configuration of an upstream.

use super::certs::{self, FieldError};
use super::{provider, ALPN_HTTP1};
use crate::config::UpstreamTls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// Builds the client configuration of one upstream from its `tls` section, with the validity
/// of its client certificate if it has one.
pub fn client_config(
    tls: &UpstreamTls,
) -> Result<(Arc<ClientConfig>, Option<certs::Validity>), Vec<FieldError>> {
    let provider = provider();
    let mut errors = Vec::new();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| vec![FieldError::new("ca", e.to_string())])?;
    let verifier: Arc<dyn ServerCertVerifier> = if tls.verify {
        match roots(tls) {
            Ok(roots) => {
                match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                {
                    Ok(v) => v,
                    Err(e) => return Err(vec![FieldError::new("ca", e.to_string())]),
                }
            }
            Err(e) => {
                errors.push(e);
                Arc::new(AcceptAny(provider.clone()))
            }
        }
    } else {
        Arc::new(AcceptAny(provider.clone()))
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut validity = None;
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some(pair) => match certs::load_pair(pair, "client_cert", "client_key", &provider) {
            Ok(loaded) => match certs::Validity::read(&pair.cert, &loaded.chain)
                .map_err(|e| FieldError::new("client_cert", e))
                .and_then(|v| {
                    validity = Some(v);
                    builder
                        .with_client_auth_cert(loaded.chain, loaded.key_der)
                        .map_err(|e| FieldError::new("client_key", e.to_string()))
                }) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    return Err(errors);
                }
            },
            Err(e) => {
                errors.extend(e);
                return Err(errors);
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok((Arc::new(config), validity))
}

fn roots(tls: &UpstreamTls) -> Result<RootCertStore, FieldError> {
    let Some(ca) = &tls.ca else {
        return Err(FieldError::new(
            "ca",
            "required when verify = true (no system trust store is loaded); set the CA file \
             that signed the servers' certificates, or verify = false",
        ));
    };
    let certs = certs::load_certs(ca).map_err(|m| FieldError::new("ca", m))?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| {
            FieldError::new(
                "ca",
                format!("not a usable CA certificate in {}: {e}", ca.display()),
            )
        })?;
    }
    Ok(roots)
}

/// `verify = false`: any certificate is accepted, but the handshake signatures are still
/// checked (the peer must hold the key of the certificate it presents).
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
