//! PEM files → rustls keys and certificates, with errors that name the file; certificate
//! choice by SNI.

use crate::config::CertKey;
pub use crate::config::FieldError;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Every certificate in a PEM file, in file order (leaf first, then intermediates).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(&pem) {
        match item {
            Ok(c) => out.push(c),
            Err(e) => return Err(format!("invalid PEM in {}: {e}", path.display())),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no certificate (BEGIN CERTIFICATE) in {}",
            path.display()
        ));
    }
    Ok(out)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("no private key (BEGIN PRIVATE KEY) in {}", path.display())
        }
        e => format!("invalid PEM in {}: {e}", path.display()),
    })
}

/// A certificate chain with its key, checked to belong together.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: PrivateKeyDer<'static>,
}

/// Loads `pair`; `prefix` names the pair in errors (`certs[0]`, or `` for an upstream's
/// client certificate whose fields are `client_cert` / `client_key`).
pub fn load_pair(
    pair: &CertKey,
    cert_field: &str,
    key_field: &str,
    provider: &CryptoProvider,
) -> Result<Loaded, Vec<FieldError>> {
    let chain = load_certs(&pair.cert).map_err(|m| FieldError::new(cert_field, m));
    let key_der = load_key(&pair.key).map_err(|m| FieldError::new(key_field, m));
    let (chain, key_der) = match (chain, key_der) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => return Err(c.err().into_iter().chain(k.err()).collect()),
    };
    let signer = provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| {
            vec![FieldError::new(
                key_field,
                format!(
                    "unsupported private key in {}: {e} (RSA, ECDSA P-256/P-384 and Ed25519 \
                     are supported)",
                    pair.key.display()
                ),
            )]
        })?;
    let key = CertifiedKey::new(chain.clone(), signer);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(vec![FieldError::new(
                key_field,
                format!(
                    "the key in {} does not match the certificate in {}",
                    pair.key.display(),
                    pair.cert.display()
                ),
            )])
        }
        Err(e) => {
            return Err(vec![FieldError::new(
                cert_field,
                format!("invalid certificate in {}: {e}", pair.cert.display()),
            )])
        }
    }
    Ok(Loaded {
        key: Arc::new(key),
        chain,
        key_der,
    })
}

/// DNS names of a certificate's subjectAltName extension, lowercase (`*.b.test` included).
pub fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("{e:?}"))?;
    Ok(ee
        .valid_dns_names()
        .map(|n| n.to_ascii_lowercase())
        .collect())
}

/// What the expiry gauge shows of a leaf certificate: its subject common name (empty when it
/// has none) and its notAfter in Unix seconds.
pub fn leaf_validity(cert: &CertificateDer<'_>) -> Result<(String, i64), String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, TeletexStringRef, Utf8StringRef};
    use x509_cert::der::{Decode, Tag, Tagged};
    let cert = x509_cert::Certificate::from_der(cert).map_err(|e| e.to_string())?;
    let tbs = &cert.tbs_certificate;
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
    let not_after = i64::try_from(not_after).map_err(|_| format!("notAfter {not_after} s"))?;
    let cn = tbs
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == x509_cert::der::oid::db::rfc4519::CN)
        .and_then(|atv| {
            let v = &atv.value;
            match v.tag() {
                Tag::Utf8String => v
                    .decode_as::<Utf8StringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                Tag::PrintableString => v
                    .decode_as::<PrintableStringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                Tag::Ia5String => v
                    .decode_as::<Ia5StringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                Tag::TeletexString => v
                    .decode_as::<TeletexStringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string()),
                _ => None,
            }
        })
        .unwrap_or_default();
    Ok((cn, not_after))
}

/// Chooses the certificate by the client's SNI: an exact SAN first, then a wildcard SAN
/// (`*.b.test` covers exactly one more label, as RFC 6125), else the first certificate. Where
/// two certificates name the same host, the earlier one in the list wins.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    /// For each certificate, in config order: its file, subject CN and notAfter.
    validity: Vec<Validity>,
}

/// A certificate file with what [`leaf_validity`] read from its leaf.
#[derive(Clone, Debug)]
pub struct Validity {
    pub file: String,
    pub subject: String,
    pub not_after: i64,
}

impl Validity {
    /// Reads the leaf of `chain`, loaded from `file`; the error names the file.
    pub fn read(file: &Path, chain: &[CertificateDer<'_>]) -> Result<Validity, String> {
        let leaf = chain
            .first()
            .ok_or_else(|| format!("no certificate in {}", file.display()))?;
        let (subject, not_after) = leaf_validity(leaf).map_err(|e| {
            format!(
                "cannot read the validity of the certificate in {}: {e}",
                file.display()
            )
        })?;
        Ok(Validity {
            file: file.display().to_string(),
            subject,
            not_after,
        })
    }
}

impl SniResolver {
    pub fn load(
        pairs: &[CertKey],
        provider: &CryptoProvider,
    ) -> Result<SniResolver, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        let mut validity = Vec::new();
        for (i, pair) in pairs.iter().enumerate() {
            let loaded = match load_pair(
                pair,
                &format!("certs[{i}].cert"),
                &format!("certs[{i}].key"),
                provider,
            ) {
                Ok(l) => l,
                Err(e) => {
                    errors.extend(e);
                    continue;
                }
            };
            let names = match dns_names(&loaded.chain[0]) {
                Ok(n) => n,
                Err(e) => {
                    errors.push(FieldError::new(
                        format!("certs[{i}].cert"),
                        format!(
                            "cannot parse the certificate in {}: {e}",
                            pair.cert.display()
                        ),
                    ));
                    continue;
                }
            };
            match Validity::read(&pair.cert, &loaded.chain) {
                Ok(v) => validity.push(v),
                Err(e) => {
                    errors.push(FieldError::new(format!("certs[{i}].cert"), e));
                    continue;
                }
            }
            for name in names {
                match name.strip_prefix("*.") {
                    Some(rest) => wildcard
                        .entry(rest.to_string())
                        .or_insert_with(|| loaded.key.clone()),
                    None => exact.entry(name).or_insert_with(|| loaded.key.clone()),
                };
            }
            default.get_or_insert(loaded.key);
        }
        if pairs.is_empty() {
            errors.push(FieldError::new(
                "certs",
                "at least one certificate is required",
            ));
        }
        match default {
            Some(default) if errors.is_empty() => Ok(SniResolver {
                exact,
                wildcard,
                default,
                validity,
            }),
            _ => Err(errors),
        }
    }

    /// Each certificate's file, subject and notAfter, in config order.
    pub fn validity(&self) -> &[Validity] {
        &self.validity
    }

    /// The certificate for `sni` (None: no SNI sent).
    pub fn pick(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = sni else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k;
            }
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str], tag: &str) -> CertKey {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = std::env::temp_dir();
        let base = format!("ringlb-unit-{}-{tag}", std::process::id());
        let pair = CertKey {
            cert: dir.join(format!("{base}.crt")),
            key: dir.join(format!("{base}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    #[test]
    fn sni_exact_then_wildcard_then_default() {
        let pairs = [
            pair(&["a.test"], "a"),
            pair(&["*.b.test", "c.test"], "b"),
            pair(&["a.test", "d.test"], "d"),
        ];
        let provider = rustls::crypto::ring::default_provider();
        let r = SniResolver::load(&pairs, &provider).unwrap();
        let a = r.pick(Some("a.test")).clone();
        let b = r.pick(Some("c.test")).clone();
        let d = r.pick(Some("d.test")).clone();
        assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &d));
        // The first certificate naming a host wins; names compare without case.
        assert!(Arc::ptr_eq(r.pick(Some("A.Test")), &a));
        assert!(Arc::ptr_eq(r.pick(Some("x.b.test")), &b));
        assert!(Arc::ptr_eq(r.pick(Some("x.b.test.")), &b));
        // A wildcard covers exactly one label: not the apex, not deeper names.
        assert!(Arc::ptr_eq(r.pick(Some("b.test")), &a));
        assert!(Arc::ptr_eq(r.pick(Some("y.x.b.test")), &a));
        assert!(Arc::ptr_eq(r.pick(Some("other.test")), &a));
        assert!(Arc::ptr_eq(r.pick(None), &a));
    }

    #[test]
    fn mismatched_key_and_missing_files_name_the_field_and_file() {
        let a = pair(&["a.test"], "mm-a");
        let b = pair(&["b.test"], "mm-b");
        let provider = rustls::crypto::ring::default_provider();
        let crossed = CertKey {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let missing = CertKey {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let errors = SniResolver::load(&[crossed, missing], &provider).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|e| e.at("tls")).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("tls.certs[0].key: the key in"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("tls.certs[1].cert: cannot read /nonexistent/c.pem"));
        assert!(lines[2].starts_with("tls.certs[1].key: cannot read /nonexistent/k.pem"));
    }

    #[test]
    fn leaf_validity_reads_common_name_and_not_after() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Ä site");
        p.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = p.self_signed(&key).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(
            leaf_validity(cert.der()),
            Ok(("Ä site".to_string(), 1_936_742_400))
        );
        // No common name: an empty subject label, the date still read.
        let mut p = rcgen::CertificateParams::new(vec!["b.test".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.not_after = rcgen::date_time_ymd(2060, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        assert_eq!(
            leaf_validity(cert.der()),
            Ok((String::new(), 2_840_140_800))
        );
        assert!(leaf_validity(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])).is_err());
    }
}
