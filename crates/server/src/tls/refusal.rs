//! Why a peer server's certificate was refused, as a sentence the operator can act on and a short
//! label for the audit log.

use std::fmt;

use rustls::{CertRevocationListError, CertificateError};
use rustls_pki_types::UnixTime;

/// Why a peer server's certificate chain was not accepted for the domain it claims.
///
/// Display is one sentence for the log, naming the domain and what is wrong; [`Refusal::reason`]
/// is a stable short label for audit records and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The peer sent no certificate at all.
    NoCertificate,
    /// The chain does not end in one of `[federation] trust_anchors`.
    UntrustedRoot {
        /// The domain the peer claims.
        domain: String,
    },
    /// A loaded CRL lists the certificate (or one of its issuers).
    Revoked {
        /// The domain the peer claims.
        domain: String,
    },
    /// CRLs are loaded, but none from the issuer of a certificate in the chain, so whether it was
    /// revoked is unknown; we refuse rather than guess.
    UnknownRevocationStatus {
        /// The domain the peer claims.
        domain: String,
    },
    /// The only CRL on disk from the certificate's issuer is older than one this server has
    /// already seen (see `tls::crl`): its revocation status is unknown, so it is refused.
    CrlRolledBack {
        /// The domain the peer claims.
        domain: String,
        /// The CRL's issuer.
        issuer: String,
        /// The number of the CRL in the file.
        number: String,
        /// The highest number seen before.
        seen: String,
    },
    /// A certificate in the chain is past its notAfter.
    Expired {
        /// The domain the peer claims.
        domain: String,
        /// The notAfter that has passed, as "YYYY-MM-DD HH:MM:SS UTC".
        on: String,
    },
    /// A certificate in the chain is not valid yet (or the clock is wrong).
    NotYetValid {
        /// The domain the peer claims.
        domain: String,
        /// The notBefore, as "YYYY-MM-DD HH:MM:SS UTC".
        from: String,
    },
    /// The certificate is not for server-to-server use (its extended key usage lacks
    /// clientAuth for inbound links or serverAuth for outbound ones).
    WrongPurpose {
        /// The domain the peer claims.
        domain: String,
    },
    /// The chain is fine but the end-entity certificate does not name the claimed domain.
    NameMismatch {
        /// The domain the peer claims.
        domain: String,
        /// The names it does carry (dNSName and XmppAddr subjectAltNames).
        names: Vec<String>,
    },
    /// Anything else: malformed, bad signature, unsupported algorithm.
    Invalid {
        /// The domain the peer claims.
        domain: String,
        /// What the verifier said.
        why: String,
    },
}

impl Refusal {
    /// A short stable label: `no-certificate`, `untrusted-root`, `revoked`,
    /// `unknown-revocation-status`, `expired`, `not-yet-valid`, `wrong-purpose`,
    /// `name-mismatch` or `invalid-certificate`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no-certificate",
            Refusal::UntrustedRoot { .. } => "untrusted-root",
            Refusal::Revoked { .. } => "revoked",
            Refusal::UnknownRevocationStatus { .. } | Refusal::CrlRolledBack { .. } => {
                "unknown-revocation-status"
            }
            Refusal::Expired { .. } => "expired",
            Refusal::NotYetValid { .. } => "not-yet-valid",
            Refusal::WrongPurpose { .. } => "wrong-purpose",
            Refusal::NameMismatch { .. } => "name-mismatch",
            Refusal::Invalid { .. } => "invalid-certificate",
        }
    }

    /// Maps a rustls verification error for the chain of `domain` to a refusal.
    pub(super) fn from_rustls(domain: &str, err: rustls::Error) -> Refusal {
        let domain = domain.to_owned();
        let rustls::Error::InvalidCertificate(e) = err else {
            if let rustls::Error::InvalidCertRevocationList(crl) = &err {
                return Refusal::Invalid {
                    why: format!("a loaded CRL is unusable ({})", crl_problem(crl)),
                    domain,
                };
            }
            return Refusal::Invalid {
                domain,
                why: err.to_string(),
            };
        };
        match e {
            CertificateError::UnknownIssuer => Refusal::UntrustedRoot { domain },
            CertificateError::Revoked => Refusal::Revoked { domain },
            CertificateError::UnknownRevocationStatus => {
                Refusal::UnknownRevocationStatus { domain }
            }
            CertificateError::ExpiredContext { not_after, .. } => Refusal::Expired {
                domain,
                on: utc(not_after),
            },
            CertificateError::NotValidYetContext { not_before, .. } => Refusal::NotYetValid {
                domain,
                from: utc(not_before),
            },
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Refusal::WrongPurpose { domain }
            }
            other => Refusal::Invalid {
                domain,
                why: format!("{other:?}"),
            },
        }
    }
}

fn crl_problem(e: &CertRevocationListError) -> String {
    match e {
        CertRevocationListError::BadSignature => "its signature does not verify".to_owned(),
        CertRevocationListError::IssuerInvalidForCrl => {
            "its issuer may not sign CRLs (no cRLSign key usage)".to_owned()
        }
        other => format!("{other:?}"),
    }
}

/// A time as "YYYY-MM-DD HH:MM:SS UTC".
pub(super) fn utc(t: UnixTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{} seconds after 1970", t.as_secs()))
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoCertificate => f.write_str("no certificate presented"),
            Refusal::UntrustedRoot { domain } => {
                write!(f, "certificate for {domain} chains to an untrusted root")
            }
            Refusal::Revoked { domain } => write!(f, "certificate for {domain} was revoked"),
            Refusal::UnknownRevocationStatus { domain } => write!(
                f,
                "certificate for {domain} has unknown revocation status: no loaded CRL is from \
                 its issuer (add the issuer's CRL to [federation] crls)"
            ),
            // No file name: the sentence also reaches users in bounces; the log line of the
            // refused CRL names it.
            Refusal::CrlRolledBack {
                domain,
                issuer,
                number,
                seen,
            } => write!(
                f,
                "certificate for {domain} has unknown revocation status: the CRL of its issuer \
                 {issuer} here is number {number}, older than number {seen} already seen, so it \
                 is not used (copy the auditor's latest CRL to the file in [federation] crls)"
            ),
            Refusal::Expired { domain, on } => {
                write!(f, "certificate for {domain} expired on {on}")
            }
            Refusal::NotYetValid { domain, from } => write!(
                f,
                "certificate for {domain} is not valid before {from} (check this server's clock)"
            ),
            Refusal::WrongPurpose { domain } => write!(
                f,
                "certificate for {domain} is not issued for server authentication (extended key \
                 usage needs serverAuth and clientAuth)"
            ),
            Refusal::NameMismatch { domain, names } if names.is_empty() => write!(
                f,
                "certificate does not name {domain} (it has no DNS or XmppAddr subjectAltName; \
                 the subject common name is not used)"
            ),
            Refusal::NameMismatch { domain, names } => write!(
                f,
                "certificate does not name {domain} (it names {})",
                names.join(", ")
            ),
            Refusal::Invalid { domain, why } => {
                write!(f, "certificate for {domain} is invalid: {why}")
            }
        }
    }
}

impl std::error::Error for Refusal {}
