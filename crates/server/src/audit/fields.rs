//! The typed fields of audit events ([`super::event::Event`]): who acted, reasons, kinds and
//! references, each a closed enum or a small struct, and [`cut`] for strings from the network.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The longest string field kept from the network, in bytes; longer values are cut at a
/// character boundary and end with "…".
pub const MAX_FIELD: usize = 256;

/// Security labels kept per message (XEP-0258 allows one; more is hostile).
pub const MAX_LABELS: usize = 4;

/// An Ed25519 signature over the chain up to and including record `covers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the last record covered (the one just before the checkpoint).
    pub covers: u64,
    /// That record's hash, hexadecimal.
    pub head: String,
    /// The signing key's public key, base64 (32 bytes).
    pub key: String,
    /// The signature over [`Checkpoint::signed_bytes`], base64.
    pub signature: String,
}

impl Checkpoint {
    /// What is signed: a fixed label, the count, the head hash and the checkpoint's time.
    pub fn signed_bytes(covers: u64, head: &str, time: &str) -> Vec<u8> {
        format!("zorg audit checkpoint v1\n{covers}\n{head}\n{time}\n").into_bytes()
    }
}

/// Who did an administrative act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Actor {
    /// The server itself (a background task, a start-up step).
    Server,
    /// An operator at the command line.
    Cli {
        /// The operating-system user that ran `zorg`.
        os_user: String,
        /// The host it ran on.
        host: String,
    },
    /// An account, over XMPP (e.g. XEP-0077 in-band registration or password change).
    Account {
        /// The account (or the JID that asked).
        jid: String,
        /// From where.
        ip: IpAddr,
    },
}

/// SASL mechanisms (RFC 6120 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthMechanism {
    /// SCRAM-SHA-1.
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    /// SCRAM-SHA-1-PLUS.
    #[serde(rename = "SCRAM-SHA-1-PLUS")]
    ScramSha1Plus,
    /// SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-256-PLUS.
    #[serde(rename = "SCRAM-SHA-256-PLUS")]
    ScramSha256Plus,
    /// PLAIN over TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// EXTERNAL (a TLS client certificate).
    #[serde(rename = "EXTERNAL")]
    External,
}

impl From<crate::sasl::Mechanism> for AuthMechanism {
    fn from(m: crate::sasl::Mechanism) -> Self {
        use crate::sasl::Mechanism as M;
        match m {
            M::ScramSha1 => Self::ScramSha1,
            M::ScramSha1Plus => Self::ScramSha1Plus,
            M::ScramSha256 => Self::ScramSha256,
            M::ScramSha256Plus => Self::ScramSha256Plus,
            M::Plain => Self::Plain,
            M::External => Self::External,
        }
    }
}

/// Why authentication failed: the RFC 6120 §6.5 condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthFailure {
    /// The client aborted.
    Aborted,
    /// The account is disabled.
    AccountDisabled,
    /// The credentials have expired.
    CredentialsExpired,
    /// TLS was needed.
    EncryptionRequired,
    /// Bad base64.
    IncorrectEncoding,
    /// Bad authorization identity.
    InvalidAuthzid,
    /// Unknown or unoffered mechanism.
    InvalidMechanism,
    /// Bad mechanism syntax.
    MalformedRequest,
    /// Mechanism too weak.
    MechanismTooWeak,
    /// Wrong credentials (or unknown account, or failed channel binding).
    NotAuthorized,
    /// Too many failures (rate limit) or a server problem.
    TemporaryAuthFailure,
}

impl From<crate::sasl::SaslFailure> for AuthFailure {
    fn from(f: crate::sasl::SaslFailure) -> Self {
        use crate::sasl::SaslFailure as F;
        match f {
            F::Aborted => Self::Aborted,
            F::AccountDisabled => Self::AccountDisabled,
            F::CredentialsExpired => Self::CredentialsExpired,
            F::EncryptionRequired => Self::EncryptionRequired,
            F::IncorrectEncoding => Self::IncorrectEncoding,
            F::InvalidAuthzid => Self::InvalidAuthzid,
            F::InvalidMechanism => Self::InvalidMechanism,
            F::MalformedRequest => Self::MalformedRequest,
            F::MechanismTooWeak => Self::MechanismTooWeak,
            F::NotAuthorized => Self::NotAuthorized,
            F::TemporaryAuthFailure => Self::TemporaryAuthFailure,
        }
    }
}

/// What changed about an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountChange {
    /// The password (and so the stored SCRAM keys).
    Password,
}

/// RFC 6121 message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// chat
    Chat,
    /// error
    Error,
    /// groupchat
    Groupchat,
    /// headline
    Headline,
    /// normal (or no type)
    Normal,
}

impl From<crate::modules::message::MessageType> for MessageKind {
    fn from(t: crate::modules::message::MessageType) -> Self {
        use crate::modules::message::MessageType as T;
        match t {
            T::Chat => Self::Chat,
            T::Error => Self::Error,
            T::Groupchat => Self::Groupchat,
            T::Headline => Self::Headline,
            T::Normal => Self::Normal,
        }
    }
}

/// A XEP-0258 security label as carried by a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The display marking (e.g. "CONFIDENTIAL"), cut to [`MAX_FIELD`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marking: Option<String>,
    /// The namespace of the label's content (e.g. an ESS or FHIR label scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
}

/// How a message reached its recipient (or the next server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Written to the queue of a connected session.
    Session,
    /// Stored for an account with no session (XEP-0160 offline storage).
    Stored,
    /// Written from offline storage to a session at its login.
    FromStorage,
    /// Handed to the link to the recipient's server.
    Forwarded,
}

/// Why archive entries were deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveDeletion {
    /// The account was deleted.
    AccountDeleted,
    /// They were older than `[archive] expiry`.
    Expired,
}

/// Who opened a server-to-server link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The peer connected to us.
    Inbound,
    /// We connected to the peer.
    Outbound,
}

/// How a peer server proved its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkAuth {
    /// Its certificate chains to the auditor's root (SASL EXTERNAL, XEP-0178).
    Certificate,
    /// XEP-0220 dialback (DNS control only), where `[federation] dialback` allows it.
    Dialback,
}

/// Why a server-to-server link was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkRefusal {
    /// No certificate was presented.
    NoCertificate,
    /// The chain does not end in an auditor's root.
    UntrustedRoot,
    /// A CRL lists the certificate.
    Revoked,
    /// No CRL from the issuer is loaded.
    UnknownRevocationStatus,
    /// Past notAfter.
    Expired,
    /// Before notBefore.
    NotYetValid,
    /// Not for server use.
    WrongPurpose,
    /// The certificate does not name the domain.
    NameMismatch,
    /// Malformed or badly signed.
    InvalidCertificate,
    /// Refused by `[federation]` allow/deny lists.
    NotAllowed,
    /// The DANE TLSA records do not match.
    DaneMismatch,
    /// Dialback did not prove the domain.
    Dialback,
    /// The peer's SASL EXTERNAL request was wrong.
    BadSasl,
    /// The peer did not accept our certificate.
    PeerRefused,
    /// The peer could not be found or reached.
    Unreachable,
    /// The link did not come up in time.
    Timeout,
    /// Anything else the link code reports.
    Other,
}

impl LinkRefusal {
    /// The audit reason for a refusal label of the TLS and federation code
    /// ([`crate::tls::trust::Refusal::reason`] and the link failures).
    pub fn from_label(label: &str) -> Self {
        match label {
            "no-certificate" => Self::NoCertificate,
            "untrusted-root" => Self::UntrustedRoot,
            "revoked" => Self::Revoked,
            "unknown-revocation-status" => Self::UnknownRevocationStatus,
            "expired" => Self::Expired,
            "not-yet-valid" => Self::NotYetValid,
            "wrong-purpose" => Self::WrongPurpose,
            "name-mismatch" => Self::NameMismatch,
            "invalid-certificate" => Self::InvalidCertificate,
            "not-allowed" => Self::NotAllowed,
            "dane-mismatch" => Self::DaneMismatch,
            l if l.starts_with("dialback") => Self::Dialback,
            "timeout" => Self::Timeout,
            "peer-refused" => Self::PeerRefused,
            "not-found" | "unreachable" => Self::Unreachable,
            _ => Self::Other,
        }
    }
}

/// A certificate named by its issuer and serial number (what a CRL revokes by).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRef {
    /// Serial number, hexadecimal.
    pub serial: String,
    /// Issuer distinguished name.
    pub issuer: String,
}

impl CertRef {
    /// The end-entity certificate of a chain, if it parses.
    pub fn of(chain: &[rustls_pki_types::CertificateDer<'_>]) -> Option<CertRef> {
        let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
        Some(CertRef {
            serial: cert.raw_serial_as_string().replace(':', ""),
            issuer: cut(&cert.issuer().to_string()),
        })
    }
}

/// Which key changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    /// A data key of the message store (AES-256).
    DataKey,
    /// The key-encryption key that wraps the data keys.
    KeyEncryptionKey,
    /// The Ed25519 key that signs audit checkpoints.
    AuditSigningKey,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChange {
    /// Made.
    Created,
    /// A new one took over; the old one still decrypts until re-encryption ends.
    Rotated,
    /// A different key than at the last start is in use.
    Replaced,
}

/// The administrative commands that are audited as such (account and key changes have their
/// own events as well).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCommand {
    /// `zorg user add`
    UserAdd,
    /// `zorg user del`
    UserDelete,
    /// `zorg user passwd`
    UserPassword,
    /// `zorg user list`: a read of the account list.
    UserList,
    /// `zorg keys status`
    KeysStatus,
    /// `zorg keys rotate`
    KeysRotate,
    /// `zorg keys generate`
    KeysGenerate,
    /// `zorg audit verify`
    AuditVerify,
}

/// Export formats of `zorg audit export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// The records as stored, one JSON object per line.
    Jsonl,
    /// A FHIR R4 Bundle of AuditEvent resources.
    Fhir,
}

impl Actor {
    /// The operator running this command-line process.
    pub fn cli() -> Actor {
        let os_user = std::env::var("SUDO_USER")
            .or_else(|_| std::env::var("USER"))
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        Actor::Cli {
            os_user: cut(&os_user),
            host: cut(&host),
        }
    }

    pub(crate) fn account(&self) -> Option<&str> {
        match self {
            Actor::Account { jid, .. } => Some(jid),
            _ => None,
        }
    }
}

/// `s` cut to at most [`MAX_FIELD`] bytes at a character boundary, marked with "…" when cut.
pub fn cut(s: &str) -> String {
    if s.len() <= MAX_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_FIELD - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
