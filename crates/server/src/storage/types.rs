//! Plain data types shared by the storage traits and the modules that use them.
//!
//! These types carry no behaviour beyond small helpers; the rules that change them live in the
//! modules (SASL in `crate::sasl`, the RFC 6121 subscription state machine in
//! `crate::modules::roster`).

/// The hash function of a SCRAM credential (RFC 5802 with SHA-1, RFC 7677 with SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The name used in the database and in the SASL mechanism name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SHA-1",
            ScramHash::Sha256 => "SHA-256",
        }
    }
}

/// One SCRAM credential as stored: never the password, only what RFC 5802 §3 lets a server keep.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramRecord {
    /// Which hash function the keys were made with.
    pub hash: ScramHash,
    /// The random salt (16 bytes when we make it).
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramRecord {
    // Keys are secrets: never print them, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramRecord")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// The subscription attribute of a roster item (RFC 6121 §2.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Subscription {
    /// Neither side receives the other's presence.
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    /// Both directions.
    Both,
}

impl Subscription {
    /// The attribute value on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// Parses the wire/database form; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    /// Whether the user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// Whether the contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
}

/// One roster item with the full server-side subscription state of RFC 6121 Appendix A.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterItem {
    /// The contact's bare JID, normalised.
    pub jid: String,
    /// The user's name for the contact.
    pub name: Option<String>,
    /// Established subscription directions.
    pub subscription: Subscription,
    /// "Pending Out": the user asked to subscribe and the contact has not answered (`ask='subscribe'`).
    pub ask: bool,
    /// "Pending In": the contact asked to subscribe to the user and the user has not answered.
    pub pending_in: bool,
    /// Pre-approval (RFC 6121 §3.4): a later subscribe from the contact is approved at once.
    pub approved: bool,
    /// Whether the item is in the user's roster as the user sees it. An item that exists only to
    /// remember a pending inbound request (state "None + Pending In" without a roster entry) is
    /// `false`, is not returned in roster results and is not pushed.
    pub visible: bool,
    /// Roster groups, in the order given by the client.
    pub groups: Vec<String>,
    /// The stanza (serialised XML) of a pending inbound subscription request, kept so that it can be
    /// delivered again at the user's next login (RFC 6121 §3.1.3).
    pub pending_in_stanza: Option<String>,
}

/// Per-account caps on stored roster items (`[limits] max_roster_items` and
/// `max_pending_subscriptions`), checked inside the write's transaction so that concurrent writes
/// cannot overshoot them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterCaps {
    /// Most visible items: the roster as the user sees it.
    pub visible: u32,
    /// Most hidden items: requests from contacts not in the roster, kept until answered.
    pub hidden: u32,
}
