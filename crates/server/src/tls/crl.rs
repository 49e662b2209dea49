//! The auditor's revocation lists as this server reads them, and the rule that keeps an older
//! list from bringing a revoked server back.
//!
//! A CRL is only as good as it is recent: copying last month's CRL over this week's would
//! un-revoke every certificate revoked in between. RFC 5280 §5.2.3 gives each CRL a number that
//! grows with every CRL its issuer makes, so this server
//! - refuses a CRL that is not signed by one of the trust anchors (checked here, before its
//!   number may count: a forged CRL with a huge number would otherwise lock out every later
//!   genuine one) or that carries no number (it cannot be ordered, so it cannot be trusted not
//!   to be older; `zorg ca crl` always numbers its CRLs);
//! - remembers the highest number seen per issuer in a file of the data directory
//!   ([`Seen`]), at start and at every reload, so that a restart does not forget it;
//! - never uses a CRL numbered lower than that: at a reload the newer CRL already loaded stays
//!   in use; at start, with nothing newer loaded, the issuer is *withheld*: every peer it issued
//!   a certificate to is refused until the latest CRL is back. Fail closed, because starting
//!   with the older CRL would accept exactly the servers revoked since, and refusing to start
//!   would take local messaging down over a federation file; the refusals and the log say what
//!   to do.
//!
//! A CRL past its nextUpdate is still used (see [`super::trust`]) but logged at warn level, at
//! load and every hour, so that an auditor's missing CRL does not go unnoticed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use serde::{Deserialize, Serialize};
use x509_parser::num_bigint::BigUint;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{TlsError, file_err};

/// One CRL as loaded: signed by a trust anchor, with a number.
#[derive(Clone, Debug)]
pub(super) struct Crl {
    pub(super) der: CertificateRevocationListDer<'static>,
    /// The issuer's Name, DER: what certificates' issuer fields are compared with.
    pub(super) issuer: Vec<u8>,
    /// The issuer as text, for the log.
    pub(super) issuer_name: String,
    /// The cRLNumber.
    pub(super) number: BigUint,
    /// nextUpdate, seconds since 1970, if the CRL has one.
    pub(super) next_update: Option<i64>,
    /// The file it came from.
    pub(super) file: PathBuf,
}

/// An issuer whose only CRL on disk is older than one already seen, while no newer one is
/// loaded (at start): its peers are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Withheld {
    pub(super) issuer: Vec<u8>,
    pub(super) issuer_name: String,
    pub(super) number: String,
    pub(super) seen: String,
}

/// Reads the CRLs of `path` (PEM, one or more, or a single DER CRL) and checks each: it parses,
/// is signed by one of `anchors` and carries a CRL number. Errors name the file and what to do.
pub(super) fn read(path: &Path, anchors: &[CertificateDer<'static>]) -> Result<Vec<Crl>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e))?;
    let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(path, e))?
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if ders.is_empty() {
        return Err(file_err(
            path,
            "no CRL in the file (expected `BEGIN X509 CRL`)",
        ));
    }
    ders.into_iter()
        .map(|der| parse(path, der, anchors))
        .collect()
}

fn parse(
    path: &Path,
    der: CertificateRevocationListDer<'static>,
    anchors: &[CertificateDer<'static>],
) -> Result<Crl, TlsError> {
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| file_err(path, format!("not a valid CRL: {e}")))?;
    let issuer_name = crl.issuer().to_string();
    signed_by_anchor(&crl, anchors).map_err(|why| file_err(path, why))?;
    let Some(number) = crl.crl_number().cloned() else {
        let why = format!(
            "the CRL of {issuer_name} has no CRL number (RFC 5280 §5.2.3), so it cannot be told \
             from an older one; ask the auditor for a CRL made with `zorg ca crl`"
        );
        return Err(file_err(path, why));
    };
    let issuer = crl.issuer().as_raw().to_vec();
    let next_update = crl.next_update().map(|t| t.timestamp());
    Ok(Crl {
        der,
        issuer,
        issuer_name,
        number,
        next_update,
        file: path.to_owned(),
    })
}

/// Whether a trust anchor of the CRL's issuer name signed it.
fn signed_by_anchor(
    crl: &CertificateRevocationList<'_>,
    anchors: &[CertificateDer<'static>],
) -> Result<(), String> {
    let issuer = crl.issuer();
    let mut named = false;
    for der in anchors {
        let Ok((_, anchor)) = X509Certificate::from_der(der.as_ref()) else {
            continue;
        };
        if anchor.subject().as_raw() != issuer.as_raw() {
            continue;
        }
        named = true;
        if crl.verify_signature(anchor.public_key()).is_ok() {
            return Ok(());
        }
    }
    if named {
        Err(format!(
            "the CRL's signature does not verify with the key of the trust anchor {issuer} \
             (a damaged or forged file, or a CRL of another CA with the same name); get the \
             CRL from the auditor again"
        ))
    } else {
        Err(format!(
            "the CRL is issued by {issuer}, which is not one of [federation] trust_anchors; \
             configure only the auditor root's CRLs"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The highest numbers seen

/// The highest CRL number seen per issuer, kept in a JSON file (mode 0600) in the data
/// directory and replaced atomically, so that neither a restart nor a crash forgets it.
#[derive(Debug)]
pub(super) struct Seen {
    path: PathBuf,
    by_issuer: BTreeMap<String, Entry>,
}

/// The file's shape: `{"version": 1, "issuers": {"<SHA-256 of the issuer Name, hex>":
/// {"issuer": "CN=…", "crl_number": "7"}}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenFile {
    version: u32,
    issuers: BTreeMap<String, Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// For people reading the file.
    issuer: String,
    /// Decimal.
    crl_number: String,
}

fn issuer_key(issuer: &[u8]) -> String {
    digest::digest(&digest::SHA256, issuer)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Seen {
    /// Reads the file at `path`; a missing file means no CRL was seen yet. A file that cannot be
    /// read or parsed is an error: starting without it would accept any older CRL.
    pub(super) fn load(path: &Path) -> Result<Seen, TlsError> {
        let by_issuer = match std::fs::read(path) {
            Ok(bytes) => {
                let file: SeenFile = serde_json::from_slice(&bytes).map_err(|e| {
                    file_err(
                        path,
                        format!(
                            "cannot read the CRL numbers seen so far ({e}); it protects against \
                             older CRLs: restore it from a backup, or delete it only once the \
                             CRL files hold the auditor's latest CRLs"
                        ),
                    )
                })?;
                file.issuers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(file_err(path, e)),
        };
        Ok(Seen {
            path: path.to_owned(),
            by_issuer,
        })
    }

    /// The highest number seen for this issuer.
    fn highest(&self, issuer: &[u8]) -> Option<BigUint> {
        let e = self.by_issuer.get(&issuer_key(issuer))?;
        BigUint::parse_bytes(e.crl_number.as_bytes(), 10)
    }

    /// Records `crl`'s number if it is the highest so far; whether anything changed.
    fn raise(&mut self, crl: &Crl) -> bool {
        if self.highest(&crl.issuer).is_some_and(|h| h >= crl.number) {
            return false;
        }
        let entry = Entry {
            issuer: crl.issuer_name.clone(),
            crl_number: crl.number.to_string(),
        };
        self.by_issuer.insert(issuer_key(&crl.issuer), entry);
        true
    }

    /// Writes the file: a temporary file, flushed, renamed over the old one.
    pub(super) fn save(&self) -> Result<(), TlsError> {
        use std::io::Write;
        let file = SeenFile {
            version: 1,
            issuers: self.by_issuer.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| file_err(&self.path, e))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| file_err(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| file_err(&tmp, e))?;
        f.sync_all().map_err(|e| file_err(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| file_err(&self.path, e))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            // The rename is durable only once the directory is.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Choosing what to use

/// What [`select`] chose from the CRLs read.
#[derive(Debug, Default)]
pub(super) struct Selection {
    /// One CRL per issuer: the newest read, or the one already loaded if what was read is older.
    pub(super) crls: Vec<Crl>,
    /// Issuers whose CRL on disk is older than one seen, with nothing newer loaded.
    pub(super) withheld: Vec<Withheld>,
    /// How many CRLs were refused as older than one already seen.
    pub(super) rollbacks: usize,
    /// Whether `seen` changed (and should be saved).
    pub(super) raised: bool,
}

/// Chooses the CRLs to use from those just `read`, given those loaded before (`previous`) and
/// the numbers `seen` so far (raised here), and logs every CRL it does not use and why.
pub(super) fn select(read: Vec<Crl>, previous: &[Crl], seen: &mut Seen) -> Selection {
    // The newest read per issuer; two CRLs of one issuer side by side (the same file twice, or
    // an old one left in a bundle) would otherwise leave the choice to the verifier.
    let mut newest: Vec<Crl> = Vec::new();
    for crl in read {
        match newest.iter_mut().find(|c| c.issuer == crl.issuer) {
            None => newest.push(crl),
            Some(kept) => {
                let (older, newer) = if crl.number > kept.number {
                    (std::mem::replace(kept, crl), &*kept)
                } else {
                    (crl, &*kept)
                };
                if older.number != newer.number {
                    tracing::warn!(issuer = %older.issuer_name, file = %older.file.display(),
                        number = %older.number, newer = %newer.number, newer_file = %newer.file.display(),
                        "an older federation CRL is ignored beside a newer one of the same issuer; \
                         remove it from the file or from [federation] crls");
                }
            }
        }
    }
    let mut out = Selection::default();
    for crl in newest {
        let highest = seen.highest(&crl.issuer);
        let Some(highest) = highest.filter(|h| crl.number < *h) else {
            out.raised |= seen.raise(&crl);
            out.crls.push(crl);
            continue;
        };
        out.rollbacks += 1;
        let kept = previous
            .iter()
            .find(|p| p.issuer == crl.issuer && p.number >= crl.number);
        if let Some(kept) = kept {
            tracing::error!(issuer = %crl.issuer_name, file = %crl.file.display(),
                number = %crl.number, seen = %highest, in_use = %kept.number,
                "federation CRL refused: it is older than one already seen (an older CRL was \
                 copied over a newer one, by mistake or to bring a revoked server back); the \
                 newer CRL stays in use. Copy the auditor's latest CRL to the file");
            out.crls.push(kept.clone());
        } else {
            tracing::error!(issuer = %crl.issuer_name, file = %crl.file.display(),
                number = %crl.number, seen = %highest,
                "federation CRL refused: it is older than one this server has already seen (an \
                 older CRL was copied over a newer one, by mistake or to bring a revoked server \
                 back); every peer whose certificate this issuer signed is refused until the \
                 auditor's latest CRL is in the file");
            out.withheld.push(Withheld {
                issuer: crl.issuer.clone(),
                issuer_name: crl.issuer_name.clone(),
                number: crl.number.to_string(),
                seen: highest.to_string(),
            });
        }
    }
    out
}

/// Logs, at warn level, every CRL in `crls` past its nextUpdate at `now` (seconds since 1970).
pub(super) fn warn_stale(crls: &[Crl], now: i64) {
    for crl in crls {
        if let Some(next) = crl.next_update.filter(|n| *n < now) {
            let since = super::refusal::utc(rustls_pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(u64::try_from(next).unwrap_or(0)),
            ));
            tracing::warn!(issuer = %crl.issuer_name, file = %crl.file.display(), number = %crl.number,
                next_update = %since,
                "federation CRL is past its next update: it is still used, but certificates \
                 revoked since are not known here; copy the auditor's latest CRL to the file");
        }
    }
}
