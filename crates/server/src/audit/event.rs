//! The audit events: one closed enum, every field typed, never a message body or a password.
//!
//! Each variant is one kind of act a NEN 7513 inspector asks about: who (an account, a peer
//! server, an operator at the command line), did what (the variant), to whose data (the JIDs
//! named), when (the record's time), from where (an IP address). `docs/audit.md` maps the
//! fields to RFC 3881 and FHIR AuditEvent; [`super::fhir`] does it in code.
//!
//! Strings that come from the network (message ids, label markings) are cut to
//! [`MAX_FIELD`] bytes, so that one record stays small whatever a client sends.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The longest string field kept from the network, in bytes; longer values are cut at a
/// character boundary and end with "…".
pub const MAX_FIELD: usize = 256;

/// Security labels kept per message (XEP-0258 allows one; more is hostile).
pub const MAX_LABELS: usize = 4;

/// One audited act.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The server started (RFC 3881: Application Activity / Application Start).
    ServerStarted {
        /// The Zorg version.
        version: String,
        /// The domains served.
        domains: Vec<String>,
        /// SHA-256 of the configuration file, or of the embedded defaults without one.
        config_sha256: String,
    },
    /// The server stopped in order (a crash leaves no such record).
    ServerStopped {},
    /// The configuration differs from the one of the previous start.
    ConfigChanged {
        /// SHA-256 of the configuration before.
        previous_sha256: String,
        /// SHA-256 of the configuration now.
        config_sha256: String,
    },
    /// A key was created, rotated or replaced.
    KeyChanged {
        /// Which key.
        key: KeyKind,
        /// What happened to it.
        change: KeyChange,
        /// The key's public identifier (a fingerprint or id; never the key).
        id: String,
        /// Who did it.
        by: Actor,
    },
    /// A client authenticated (RFC 3881: User Authentication / Login).
    AuthSucceeded {
        /// The account.
        account: String,
        /// The SASL mechanism.
        mechanism: AuthMechanism,
        /// The client's address.
        ip: IpAddr,
    },
    /// A client failed to authenticate.
    AuthFailed {
        /// The account the client named, when it named a valid one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// The SASL mechanism, when the client chose an offered one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mechanism: Option<AuthMechanism>,
        /// The client's address.
        ip: IpAddr,
        /// The RFC 6120 §6.5 condition sent back.
        reason: AuthFailure,
    },
    /// A resource was bound (a session began) or a session was resumed (XEP-0198).
    SessionBound {
        /// The session's full JID.
        session: String,
        /// The client's address.
        ip: IpAddr,
        /// True for a XEP-0198 resumption of an earlier session.
        #[serde(default)]
        resumed: bool,
    },
    /// A session ended for good.
    SessionUnbound {
        /// The session's full JID.
        session: String,
    },
    /// An account was created.
    AccountCreated {
        /// The account.
        account: String,
        /// Who created it.
        by: Actor,
    },
    /// An account's credentials were changed.
    AccountChanged {
        /// The account.
        account: String,
        /// What changed.
        change: AccountChange,
        /// Who changed it.
        by: Actor,
    },
    /// An account and everything stored for it were deleted.
    AccountDeleted {
        /// The account.
        account: String,
        /// Who deleted it.
        by: Actor,
    },
    /// The server took a message for delivery (from a local client or a peer server).
    MessageAccepted {
        /// The `id` attribute, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Sender (full JID).
        from: String,
        /// Addressee as written.
        to: String,
        /// The message type.
        kind: MessageKind,
        /// Size of the stanza as received, in bytes (its body is never recorded).
        size: u32,
        /// XEP-0258 security labels carried.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        labels: Vec<Label>,
        /// The peer server it came from, for messages from another organisation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
    },
    /// A message was handed to a recipient's session, stored for them, written from storage at
    /// their login, or passed to the link to another server.
    MessageDelivered {
        /// The `id` attribute, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Sender.
        from: String,
        /// Who got it (a full JID for a session, bare for storage).
        to: String,
        /// How.
        how: Delivery,
    },
    /// A message was not delivered and its sender got an error.
    MessageBounced {
        /// The `id` attribute, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Sender.
        from: String,
        /// Addressee.
        to: String,
        /// The RFC 6120 §8.3.3 condition (`service-unavailable`, `remote-server-not-found` …).
        condition: String,
    },
    /// Someone read a message archive (XEP-0313): a read of personal data.
    ArchiveQueried {
        /// Who asked (full JID).
        by: String,
        /// Whose archive.
        archive: String,
        /// The conversation partner filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        with: Option<String>,
        /// Start of the time range asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        /// End of the time range asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<String>,
        /// Messages returned.
        results: u32,
    },
    /// A message in an archive was replaced by a tombstone (XEP-0424).
    ArchiveRetracted {
        /// Whose archive.
        archive: String,
        /// Who retracted (the author).
        by: String,
        /// The retracted message's id as the author named it.
        message: String,
    },
    /// Archived messages were deleted.
    ArchiveDeleted {
        /// Whose archive, or the domain for retention.
        archive: String,
        /// Why.
        reason: ArchiveDeletion,
        /// How many entries went.
        count: u64,
    },
    /// A link with another organisation's server came up.
    S2sAccepted {
        /// The peer's domain.
        peer: String,
        /// Our domain on the link.
        local: String,
        /// Who dialled.
        direction: Direction,
        /// How the peer proved its name.
        method: LinkAuth,
        /// The peer's IP address, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<IpAddr>,
        /// The peer's certificate, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<CertRef>,
    },
    /// A link with another server was refused.
    S2sRefused {
        /// The domain the peer claimed (or the one we tried).
        peer: String,
        /// Our domain on the link.
        local: String,
        /// Who dialled.
        direction: Direction,
        /// Why, as a stable label (`untrusted-root`, `revoked`, `expired`, `name-mismatch` …).
        reason: LinkRefusal,
        /// The peer's IP address, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip: Option<IpAddr>,
        /// The peer's certificate, when it sent one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<CertRef>,
    },
    /// An operator ran a command on the server's data.
    AdminAction {
        /// Who.
        by: Actor,
        /// Which command.
        action: AdminCommand,
        /// What it acted on (an account, a file), if anything.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// Audit records were exported: a read of the audit trail itself.
    AuditExported {
        /// Who.
        by: Actor,
        /// The account filter.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// Start of the range.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
        /// End of the range.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        /// `jsonl` or `fhir`.
        format: ExportFormat,
        /// Records written.
        records: u64,
    },
    /// Old segments of the audit log were deleted by `[audit] retention`. The chain continues
    /// from `through_hash`, which `zorg audit verify` accepts as the start of what is left.
    AuditPruned {
        /// The last sequence number deleted.
        through_seq: u64,
        /// The hash of that record.
        through_hash: String,
        /// Segment files deleted.
        segments: u32,
    },
    /// A torn last line (a crash in the middle of a write) was cut off when the log was opened.
    AuditRepaired {
        /// Bytes removed from the end of the segment.
        truncated_bytes: u64,
    },
    /// A signed checkpoint over every record before it.
    Checkpoint(Checkpoint),
}

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

impl Event {
    /// The accounts (bare JIDs) whose data this event concerns or who acted: what
    /// `zorg audit export --account` selects on.
    pub fn accounts(&self) -> Vec<&str> {
        fn bare(j: &str) -> &str {
            j.split_once('/').map_or(j, |(b, _)| b)
        }
        let mut v: Vec<&str> = match self {
            Event::AuthSucceeded { account, .. } => vec![account],
            Event::AuthFailed { account, .. } => account.iter().map(String::as_str).collect(),
            Event::SessionBound { session, .. } | Event::SessionUnbound { session } => {
                vec![session]
            }
            Event::AccountCreated { account, by, .. }
            | Event::AccountChanged { account, by, .. }
            | Event::AccountDeleted { account, by } => {
                let mut v = vec![account.as_str()];
                v.extend(by.account());
                v
            }
            Event::MessageAccepted { from, to, .. }
            | Event::MessageDelivered { from, to, .. }
            | Event::MessageBounced { from, to, .. } => vec![from, to],
            Event::ArchiveQueried { by, archive, .. }
            | Event::ArchiveRetracted { archive, by, .. } => {
                vec![by, archive]
            }
            Event::ArchiveDeleted { archive, .. } => vec![archive],
            Event::AdminAction { by, target, .. } => {
                let mut v: Vec<&str> = target.iter().map(String::as_str).collect();
                v.extend(by.account());
                v
            }
            Event::KeyChanged { by, .. } => by.account().into_iter().collect(),
            Event::AuditExported { by, account, .. } => {
                let mut v: Vec<&str> = account.iter().map(String::as_str).collect();
                v.extend(by.account());
                v
            }
            Event::ServerStarted { .. }
            | Event::ServerStopped {}
            | Event::ConfigChanged { .. }
            | Event::S2sAccepted { .. }
            | Event::S2sRefused { .. }
            | Event::AuditPruned { .. }
            | Event::AuditRepaired { .. }
            | Event::Checkpoint(_) => Vec::new(),
        };
        for j in &mut v {
            *j = bare(j);
        }
        v
    }

    /// The event's name as written in the log (`message_accepted` …).
    pub fn name(&self) -> &'static str {
        match self {
            Event::ServerStarted { .. } => "server_started",
            Event::ServerStopped {} => "server_stopped",
            Event::ConfigChanged { .. } => "config_changed",
            Event::KeyChanged { .. } => "key_changed",
            Event::AuthSucceeded { .. } => "auth_succeeded",
            Event::AuthFailed { .. } => "auth_failed",
            Event::SessionBound { .. } => "session_bound",
            Event::SessionUnbound { .. } => "session_unbound",
            Event::AccountCreated { .. } => "account_created",
            Event::AccountChanged { .. } => "account_changed",
            Event::AccountDeleted { .. } => "account_deleted",
            Event::MessageAccepted { .. } => "message_accepted",
            Event::MessageDelivered { .. } => "message_delivered",
            Event::MessageBounced { .. } => "message_bounced",
            Event::ArchiveQueried { .. } => "archive_queried",
            Event::ArchiveRetracted { .. } => "archive_retracted",
            Event::ArchiveDeleted { .. } => "archive_deleted",
            Event::S2sAccepted { .. } => "s2s_accepted",
            Event::S2sRefused { .. } => "s2s_refused",
            Event::AdminAction { .. } => "admin_action",
            Event::AuditExported { .. } => "audit_exported",
            Event::AuditPruned { .. } => "audit_pruned",
            Event::AuditRepaired { .. } => "audit_repaired",
            Event::Checkpoint(_) => "checkpoint",
        }
    }
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

    fn account(&self) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_name_and_typed_fields() {
        let e = Event::AuthFailed {
            account: Some("alice@example.org".into()),
            mechanism: Some(AuthMechanism::ScramSha256Plus),
            ip: "127.0.0.1".parse().unwrap(),
            reason: AuthFailure::NotAuthorized,
        };
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(
            j,
            r#"{"event":"auth_failed","account":"alice@example.org","mechanism":"SCRAM-SHA-256-PLUS","ip":"127.0.0.1","reason":"not-authorized"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), e);
        assert!(j.contains(&format!("\"{}\"", e.name())));
        // A field nobody defined is refused: the set of events and fields is closed.
        let extra = j.replace("\"reason\"", "\"note\":\"x\",\"reason\"");
        assert!(serde_json::from_str::<Event>(&extra).is_err());
    }

    #[test]
    fn accounts_are_bare() {
        let e = Event::MessageDelivered {
            id: None,
            from: "a@x/phone".into(),
            to: "b@y/desk".into(),
            how: Delivery::Session,
        };
        assert_eq!(e.accounts(), ["a@x", "b@y"]);
    }

    #[test]
    fn long_strings_are_cut_on_a_character_boundary() {
        let s = "é".repeat(300);
        let c = cut(&s);
        assert!(c.len() <= MAX_FIELD && c.ends_with('…'));
        assert_eq!(cut("short"), "short");
    }
}
