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
//!   not cut off the whole federation; it still lists every revocation it knew of. It is logged
//!   at warn level at load and every hour;
//! - a CRL must be signed by a trust anchor and numbered, and one numbered lower than a CRL
//!   already seen from its issuer is never used ([`super::crl`]): an older CRL must not bring a
//!   revoked server back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::crl::{self, Crl, Seen, Withheld};
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
    /// Issuers whose CRL on disk is older than one already seen (see [`super::crl`]): their
    /// peers are refused whatever the verifiers say.
    withheld: Vec<Withheld>,
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
        /// How many of those read were refused as older than one already seen (the newer one
        /// stays in use).
        rollbacks: usize,
    },
}

/// The auditor's anchors and CRLs, with verifiers that are swapped whole when a CRL changes.
#[derive(Debug)]
pub struct FederationTrust {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    /// The anchors as certificates: CRL signatures are checked against them.
    anchors: Vec<CertificateDer<'static>>,
    crl_files: Vec<PathBuf>,
    current: RwLock<Arc<Verifiers>>,
    /// Held for a whole reload, so that a reload asked for now waits for one under way.
    book: Mutex<Book>,
    /// CRLs refused as older than one already seen, since start.
    rollbacks: AtomicU64,
}

/// What the reloads share.
#[derive(Debug)]
struct Book {
    /// The stamps at the last reload attempt, successful or not, so that a broken file is
    /// reported once rather than at every poll.
    attempted: Vec<Stamp>,
    /// The CRLs in use, one per issuer.
    loaded: Vec<Crl>,
    /// The highest CRL number seen per issuer, persisted.
    seen: Seen,
}

impl FederationTrust {
    /// Reads the PEM trust anchors and the PEM or DER CRLs and builds the verifiers (aws-lc-rs,
    /// TLS 1.2/1.3 like the rest of the server). `seen_file` keeps the highest CRL number seen
    /// per issuer across restarts (in the data directory). Errors name the file and what is
    /// wrong.
    pub fn load(
        anchors: &[PathBuf],
        crls: &[PathBuf],
        seen_file: &Path,
    ) -> Result<FederationTrust, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let mut anchor_certs = Vec::new();
        for path in anchors {
            let certs = read_pem_certs(path)?;
            for cert in certs {
                roots.add(cert.clone()).map_err(|e| file_err(path, e))?;
                anchor_certs.push(cert);
            }
        }
        if roots.is_empty() {
            let why = "no trust anchor configured; add the auditor's root certificate (PEM) \
                       to [federation] trust_anchors";
            return Err(TlsError::Trust(why.into()));
        }
        let attempted = crls.iter().map(|p| stamp(p)).collect();
        let roots = Arc::new(roots);
        let mut seen = Seen::load(seen_file)?;
        let chosen = crl::select(read_all(crls, &anchor_certs)?, &[], &mut seen);
        if chosen.raised {
            seen.save()?;
        }
        crl::warn_stale(&chosen.crls, now_secs());
        let verifiers = build(&provider, &roots, &chosen.crls, chosen.withheld)?;
        Ok(FederationTrust {
            provider,
            roots,
            anchors: anchor_certs,
            crl_files: crls.to_vec(),
            current: RwLock::new(Arc::new(verifiers)),
            book: Mutex::new(Book {
                attempted,
                loaded: chosen.crls,
                seen,
            }),
            rollbacks: AtomicU64::new(chosen.rollbacks as u64),
        })
    }

    /// How many CRLs were refused since start because one with a higher number had been seen.
    pub fn rollbacks_refused(&self) -> u64 {
        self.rollbacks.load(Ordering::Relaxed)
    }

    /// Logs the CRLs in use that are past their nextUpdate (called hourly).
    pub fn warn_stale_crls(&self) {
        let book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        crl::warn_stale(&book.loaded, now_secs());
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
    /// changes. A CRL older than one already seen is not used (the newer one stays, see
    /// [`super::crl`]) and is logged. Meant to be polled every few seconds; a call while
    /// another runs waits for it.
    pub fn reload_crls(&self) -> Result<Reload, TlsError> {
        let now: Vec<Stamp> = self.crl_files.iter().map(|p| stamp(p)).collect();
        let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
        if book.attempted == now {
            return Ok(Reload::Unchanged);
        }
        book.attempted = now;
        let read = read_all(&self.crl_files, &self.anchors)?;
        let book = &mut *book;
        let chosen = crl::select(read, &book.loaded, &mut book.seen);
        self.rollbacks
            .fetch_add(chosen.rollbacks as u64, Ordering::Relaxed);
        if chosen.raised
            && let Err(e) = book.seen.save()
        {
            // The newer CRL is used all the same (refusing it would keep an older one in use);
            // only the protection across a restart is weaker until the file can be written.
            tracing::error!(error = %e, "could not record the federation CRL numbers seen; \
                after a restart an older CRL could be accepted: make the data directory writable");
        }
        crl::warn_stale(&chosen.crls, now_secs());
        let verifiers = build(&self.provider, &self.roots, &chosen.crls, chosen.withheld)?;
        book.loaded = chosen.crls;
        let crls = verifiers.crl_count;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(verifiers);
        Ok(Reload::Reloaded {
            crls,
            rollbacks: chosen.rollbacks,
        })
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
        // An issuer whose CRL was rolled back: refused whatever the verifiers say (with no CRL
        // left at all they would check no revocation).
        if let Some(w) = withheld_issuer(&verifiers.withheld, chain)
            && matches!(
                verified,
                Ok(())
                    | Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownRevocationStatus
                    ))
            )
        {
            return Err(Refusal::CrlRolledBack {
                domain: claimed_domain.to_owned(),
                issuer: w.issuer_name.clone(),
                number: w.number.clone(),
                seen: w.seen.clone(),
            });
        }
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

/// The withheld issuer that issued a certificate in `chain`, if any.
fn withheld_issuer<'w>(
    withheld: &'w [Withheld],
    chain: &[CertificateDer<'_>],
) -> Option<&'w Withheld> {
    if withheld.is_empty() {
        return None;
    }
    chain.iter().find_map(|c| {
        let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
        let issuer = cert.issuer().as_raw();
        withheld.iter().find(|w| w.issuer == issuer)
    })
}

/// Every CRL of every file, each checked (see [`crl::read`]).
fn read_all(files: &[PathBuf], anchors: &[CertificateDer<'static>]) -> Result<Vec<Crl>, TlsError> {
    let mut all = Vec::new();
    for path in files {
        all.extend(crl::read(path, anchors)?);
    }
    Ok(all)
}

fn now_secs() -> i64 {
    i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX)
}

/// Builds both verifiers from the roots and the chosen CRLs.
fn build(
    provider: &Arc<CryptoProvider>,
    roots: &Arc<RootCertStore>,
    chosen: &[Crl],
    withheld: Vec<Withheld>,
) -> Result<Verifiers, TlsError> {
    let crls: Vec<_> = chosen.iter().map(|c| c.der.clone()).collect();
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
        withheld,
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
