//! TLS for client streams: certificates per domain (selected by SNI), a self-signed certificate
//! generated on first start when none is configured, TLS 1.2/1.3 only (rustls with aws-lc-rs),
//! and the channel-binding data SASL needs. [`trust`] holds the federation's trust: the auditor's
//! anchors, its revocation lists and the checks a peer server's certificate must pass.

mod crl;
#[cfg(test)]
mod crl_tests;
pub mod dane;
mod peer_name;
mod refusal;
pub mod s2s;
pub mod trust;
#[cfg(test)]
mod trust_tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why TLS could not be set up. Messages name the file and what to do.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A certificate or key file could not be read or parsed.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// Generating a self-signed certificate failed.
    #[error("could not generate a self-signed certificate for {domain}: {why}")]
    Generate {
        /// The domain.
        domain: String,
        /// What went wrong.
        why: String,
    },
    /// The federation's trust anchors or CRLs cannot be used as configured.
    #[error("federation trust: {0}")]
    Trust(String),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One domain's certificate as loaded.
#[derive(Debug, Clone)]
pub struct DomainCert {
    /// The XMPP domain.
    pub domain: String,
    /// Where the chain was read from.
    pub certificate: PathBuf,
    /// SHA-256 fingerprint of the leaf certificate, colon-separated hex.
    pub fingerprint: String,
    /// Whether it was generated just now.
    pub generated: bool,
    /// The RFC 5929 `tls-server-end-point` value for this certificate.
    pub end_point_hash: Vec<u8>,
    key: Arc<CertifiedKey>,
}

/// Certificates for all served domains and the rustls configuration built from them.
#[derive(Debug, Clone)]
pub struct TlsSetup {
    /// The certificates, in configuration order.
    pub certs: Vec<DomainCert>,
    /// Server configuration for client streams.
    pub server_config: Arc<rustls::ServerConfig>,
    /// Picks the certificate by SNI; shared with the s2s configuration.
    resolver: Arc<SniResolver>,
}

impl TlsSetup {
    /// Loads each domain's certificate, or generates a self-signed one under
    /// `<data_dir>/certs/` when none is configured (and reuses it on later starts).
    pub fn load(
        domains: &[(String, Option<PathBuf>, Option<PathBuf>)],
        data_dir: &Path,
    ) -> Result<TlsSetup, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut certs = Vec::new();
        for (domain, cert, key) in domains {
            let (cert_path, key_path, generated) = match (cert, key) {
                (Some(c), Some(k)) => (c.clone(), k.clone(), false),
                _ => {
                    let dir = data_dir.join("certs");
                    let c = dir.join(format!("{domain}.crt"));
                    let k = dir.join(format!("{domain}.key"));
                    let generated = if c.exists() && k.exists() {
                        false
                    } else {
                        generate_self_signed(domain, &dir, &c, &k)?;
                        true
                    };
                    (c, k, generated)
                }
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
                .map_err(|e| file_err(&cert_path, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| file_err(&cert_path, e))?;
            let Some(leaf) = chain.first().cloned() else {
                return Err(TlsError::File {
                    path: cert_path,
                    why: "no certificate in the file (expected PEM `BEGIN CERTIFICATE`)".into(),
                });
            };
            let key_der =
                PrivateKeyDer::from_pem_file(&key_path).map_err(|e| file_err(&key_path, e))?;
            let signing = provider
                .key_provider
                .load_private_key(key_der)
                .map_err(|e| TlsError::File {
                    path: key_path.clone(),
                    why: format!("unusable private key: {e}"),
                })?;
            let ck = CertifiedKey::new(chain, signing);
            ck.keys_match().map_err(|e| TlsError::File {
                path: key_path.clone(),
                why: format!(
                    "the key does not belong to the certificate {}: {e}",
                    cert_path.display()
                ),
            })?;
            certs.push(DomainCert {
                domain: domain.clone(),
                certificate: cert_path,
                fingerprint: fingerprint(&leaf),
                generated,
                end_point_hash: server_end_point_hash(&leaf),
                key: Arc::new(ck),
            });
        }
        let resolver = SniResolver {
            by_name: certs
                .iter()
                .map(|c| (c.domain.clone(), c.key.clone()))
                .collect(),
            default: certs.first().map(|c| c.key.clone()),
        };
        let resolver = Arc::new(resolver);
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        cfg.alpn_protocols = vec![b"xmpp-client".to_vec()];
        // XEP-0368 direct TLS clients may offer ALPN "xmpp-client"; STARTTLS clients offer none.
        cfg.ignore_client_order = false;
        Ok(TlsSetup {
            certs,
            server_config: Arc::new(cfg),
            resolver,
        })
    }

    /// The certificate of exactly `domain`, if it is served.
    pub fn cert_of(&self, domain: &str) -> Option<&DomainCert> {
        self.certs.iter().find(|c| c.domain == domain)
    }

    /// The certificate of `domain`, or of the first domain.
    pub fn cert_for(&self, domain: &str) -> Option<&DomainCert> {
        self.certs
            .iter()
            .find(|c| c.domain == domain)
            .or_else(|| self.certs.first())
    }
}

#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

fn generate_self_signed(domain: &str, dir: &Path, cert: &Path, key: &Path) -> Result<(), TlsError> {
    let gen_err = |why: String| TlsError::Generate {
        domain: domain.to_owned(),
        why,
    };
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()])
        .map_err(|e| gen_err(e.to_string()))?;
    // Clients show the subject to the user: name the domain, and say what the certificate is.
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, domain);
    dn.push(
        rcgen::DnType::OrganizationName,
        "Zorg self-signed (replace for production)",
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key_pair = rcgen::KeyPair::generate().map_err(|e| gen_err(e.to_string()))?;
    let issued = params
        .self_signed(&key_pair)
        .map_err(|e| gen_err(e.to_string()))?;
    let ck = rcgen::CertifiedKey {
        cert: issued,
        signing_key: key_pair,
    };
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    write_private(key, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, ck.cert.pem()).map_err(|e| file_err(cert, e))?;
    Ok(())
}

/// Writes a secret file readable by the owner only (mode 0600 on Unix).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| file_err(path, e))?;
    f.write_all(data).map_err(|e| file_err(path, e))?;
    f.sync_all().map_err(|e| file_err(path, e))
}

/// SHA-256 fingerprint as `AB:CD:…`.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let d = digest::digest(&digest::SHA256, der.as_ref());
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 5929 §4.1: hash the certificate with its signature's hash function, with SHA-256 in place
/// of MD5 and SHA-1 (and for signature algorithms without a separate hash, such as Ed25519).
pub fn server_end_point_hash(der: &CertificateDer<'_>) -> Vec<u8> {
    let alg = match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, cert)) => {
            let oid = cert.signature_algorithm.algorithm.to_id_string();
            match oid.as_str() {
                // sha384WithRSAEncryption, ecdsa-with-SHA384
                "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
                // sha512WithRSAEncryption, ecdsa-with-SHA512
                "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
                _ => &digest::SHA256,
            }
        }
        Err(_) => &digest::SHA256,
    };
    digest::digest(alg, der.as_ref()).as_ref().to_vec()
}

/// RFC 9266 `tls-exporter` channel binding: only on TLS 1.3, where the exporter is bound to the
/// handshake (on TLS 1.2 it is safe only with extended master secret, which we cannot confirm).
pub fn exporter_binding(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
        .ok()?;
    Some(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("zorg-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generates_once_then_reuses() {
        let dir = tmpdir("gen");
        let doms = vec![("localhost".to_string(), None, None)];
        let a = TlsSetup::load(&doms, &dir).unwrap();
        assert!(a.certs[0].generated);
        assert_eq!(a.certs[0].end_point_hash.len(), 32);
        let b = TlsSetup::load(&doms, &dir).unwrap();
        assert!(!b.certs[0].generated);
        assert_eq!(a.certs[0].fingerprint, b.certs[0].fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("certs/localhost.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tmpdir("missing");
        let doms = vec![(
            "a.example".to_string(),
            Some(dir.join("nope.crt")),
            Some(dir.join("nope.key")),
        )];
        let e = TlsSetup::load(&doms, &dir).unwrap_err().to_string();
        assert!(e.contains("nope.crt"), "{e}");
    }
}
