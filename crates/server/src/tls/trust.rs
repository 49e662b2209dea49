//! The federation's trust: the auditor's root certificates (`[federation] trust_anchors`), its
//! revocation lists (`[federation] crls`, re-read when they change) and the check every peer
//! server's certificate must pass before a link carries stanzas.
//!
//! Revocation policy, chosen for a closed healthcare federation where a wrong "yes" is worse than
//! a link that waits for an operator:
//! - the whole chain is checked, not only the end entity (no `only_check_end_entity_revocation`),
//!   so revoking a compromised intermediate cuts off everything under it;
//! - an unknown status is a refusal (no `allow_unknown_revocation_status`): once CRLs are
//!   configured, every issuer in a chain must have one loaded. Without any CRL configured,
//!   revocation is not checked at all;
//! - a CRL past its nextUpdate is still used (rustls's default): a late CRL from the auditor must
//!   not cut off the whole federation; it still lists every revocation it knew of.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};

use super::peer_name::presented_names;
pub use super::refusal::Refusal;
use super::{TlsError, file_err};

/// Which side of the link the peer is on; it decides the extended key usage its certificate
/// needs (RFC 5280): clientAuth when it connected to us, serverAuth when we connected to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer opened the link (it is the TLS client).
    Inbound,
    /// We opened the link (the peer is the TLS server).
    Outbound,
}

/// The verifiers built from the anchors and one generation of CRLs. Links keep the `Arc` they
/// started with, so a reload never changes a running link.
#[derive(Debug)]
pub struct Verifiers {
    /// For inbound links: a client certificate is mandatory and must chain to an anchor.
    pub inbound: Arc<dyn ClientCertVerifier>,
    /// For outbound links. It checks the name with webpki's rules, which know no XmppAddr:
    /// the s2s client accepts a name mismatch from it and relies on [`FederationTrust::check_peer`].
    pub outbound: Arc<WebPkiServerVerifier>,
    /// How many CRLs this generation holds.
    pub crl_count: usize,
}

/// A file's modification time and length, `None` when it could not be read.
type Stamp = Option<(SystemTime, u64)>;

/// What [`FederationTrust::reload_crls`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// No CRL file changed since the last attempt.
    Unchanged,
    /// The CRLs were re-read; new links use them.
    Reloaded {
        /// How many CRLs are now loaded.
        crls: usize,
    },
}

/// The auditor's anchors and CRLs, with verifiers that are swapped whole when a CRL changes.
#[derive(Debug)]
pub struct FederationTrust {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    crl_files: Vec<PathBuf>,
    current: RwLock<Arc<Verifiers>>,
    /// The stamps at the last reload attempt, successful or not, so that a broken file is
    /// reported once rather than at every poll.
    attempted: Mutex<Vec<Stamp>>,
}

impl FederationTrust {
    /// Reads the PEM trust anchors and the PEM or DER CRLs and builds the verifiers (aws-lc-rs,
    /// TLS 1.2/1.3 like the rest of the server). Errors name the file and what is wrong.
    pub fn load(anchors: &[PathBuf], crls: &[PathBuf]) -> Result<FederationTrust, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for path in anchors {
            let certs = read_pem_certs(path)?;
            for cert in certs {
                roots.add(cert).map_err(|e| file_err(path, e))?;
            }
        }
        if roots.is_empty() {
            let why = "no trust anchor configured; add the auditor's root certificate (PEM) \
                       to [federation] trust_anchors";
            return Err(TlsError::Trust(why.into()));
        }
        let stamps = crls.iter().map(|p| stamp(p)).collect();
        let roots = Arc::new(roots);
        let verifiers = build(&provider, &roots, crls)?;
        Ok(FederationTrust {
            provider,
            roots,
            crl_files: crls.to_vec(),
            current: RwLock::new(Arc::new(verifiers)),
            attempted: Mutex::new(stamps),
        })
    }

    /// The verifiers new links should use.
    pub fn verifiers(&self) -> Arc<Verifiers> {
        // A poisoned lock still holds a complete Arc: writers only ever swap it.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the CRL files if any changed (modification time or length) since the last
    /// attempt, and swaps the verifiers. On error the previous verifiers stay in use and the
    /// error says which file and why; the same broken file is not reported again until it
    /// changes. Meant to be polled every few seconds.
    pub fn reload_crls(&self) -> Result<Reload, TlsError> {
        let now: Vec<Stamp> = self.crl_files.iter().map(|p| stamp(p)).collect();
        {
            let mut attempted = self
                .attempted
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *attempted == now {
                return Ok(Reload::Unchanged);
            }
            *attempted = now;
        }
        let verifiers = build(&self.provider, &self.roots, &self.crl_files)?;
        let crls = verifiers.crl_count;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(verifiers);
        Ok(Reload::Reloaded { crls })
    }

    /// Checks a peer's certificate chain (leaf first) at time `now`: it must chain to a trust
    /// anchor with the extended key usage `role` needs, none of it may be revoked by the loaded
    /// CRLs, and the leaf must name `claimed_domain` (see [`super::peer_name`]).
    pub fn check_peer(
        &self,
        role: PeerRole,
        chain: &[CertificateDer<'_>],
        claimed_domain: &str,
        now: UnixTime,
    ) -> Result<(), Refusal> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Refusal::NoCertificate);
        };
        let verifiers = self.verifiers();
        let verified = match role {
            PeerRole::Inbound => verifiers
                .inbound
                .verify_client_cert(leaf, intermediates, now)
                .map(drop),
            PeerRole::Outbound => {
                // Any syntactically valid name: the chain is checked before the name, and a
                // name error (the only one possible after the chain passed) is ignored.
                let name = ServerName::try_from(claimed_domain.to_owned())
                    .unwrap_or_else(|_| ServerName::from(std::net::Ipv4Addr::UNSPECIFIED));
                match verifiers
                    .outbound
                    .verify_server_cert(leaf, intermediates, &name, &[], now)
                {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName
                        | rustls::CertificateError::NotValidForNameContext { .. },
                    )) => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        verified.map_err(|e| Refusal::from_rustls(claimed_domain, e))?;
        let names = presented_names(leaf.as_ref()).map_err(|why| Refusal::Invalid {
            domain: claimed_domain.to_owned(),
            why,
        })?;
        if names.iter().any(|n| n.matches(claimed_domain)) {
            return Ok(());
        }
        Err(Refusal::NameMismatch {
            domain: claimed_domain.to_owned(),
            names: names.iter().map(|n| n.text().to_owned()).collect(),
        })
    }
}

/// Builds both verifiers from the roots and the CRL files as they are now.
fn build(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    crl_files: &[PathBuf],
) -> Result<Verifiers, TlsError> {
    let mut crls = Vec::new();
    for path in crl_files {
        crls.extend(read_crls(path)?);
    }
    let crl_count = crls.len();
    // Each CRL was parsed with its file name already; what is left here is unexpected.
    let built = |e: rustls::server::VerifierBuilderError| TlsError::Trust(e.to_string());
    let inbound = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls.clone())
        .build()
        .map_err(built)?;
    let outbound = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(built)?;
    Ok(Verifiers {
        inbound,
        outbound,
        crl_count,
    })
}

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        let why = "no certificate in the file (expected PEM `BEGIN CERTIFICATE`)";
        return Err(file_err(path, why));
    }
    Ok(certs)
}

/// The CRLs in a file: PEM (`BEGIN X509 CRL`, one or more) or a single DER CRL. Each is parsed
/// here so that a broken file is reported with its name.
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let crls: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(path, e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(file_err(
            path,
            "no CRL in the file (expected `BEGIN X509 CRL`)",
        ));
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl.as_ref())
            .map_err(|e| file_err(path, format!("not a valid CRL: {e}")))?;
    }
    Ok(crls)
}
