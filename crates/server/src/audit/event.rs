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

pub use super::fields::*;

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
