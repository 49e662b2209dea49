//! Namespace names shared, not copied, between the elements and attributes that carry them.
//!
//! Why: every element of a parsed tree has a namespace, and most inherit it from an ancestor.
//! Copying the URI into each element let a 230 KB stanza (one 32,000-byte `xmlns` and 50,000 empty
//! children) hold 1.6 GB. A [`Namespace`] is a handle instead: a `&'static str` for the namespaces
//! XMPP software sends every day (no allocation, no shared counter to contend on between threads),
//! and a reference-counted string for the others, allocated once per declaration or, through the
//! parser's [`Interner`], once per stream.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::ns;

/// A namespace URI ("" for none), cheap to clone and compare.
#[derive(Clone)]
pub struct Namespace(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Namespace {
    /// No namespace (unqualified attributes, elements outside any default namespace).
    pub const NONE: Namespace = Namespace(Repr::Static(""));

    /// A namespace from a constant: never allocates.
    pub const fn from_static(uri: &'static str) -> Namespace {
        Namespace(Repr::Static(uri))
    }

    /// The namespace URI.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// `jabber:server` as `jabber:client` (see [`ns::canonical`]), without allocating.
    pub(crate) fn canonical(self) -> Namespace {
        if self.as_str() == ns::SERVER {
            Namespace::from_static(ns::CLIENT)
        } else {
            self
        }
    }

    /// Whether both handles point to the same string (so it is held once).
    pub(crate) fn shares(&self, other: &Namespace) -> bool {
        match (&self.0, &other.0) {
            (Repr::Static(_), Repr::Static(_)) => true,
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Heap bytes this handle added when it was made: 0 for a static name, the shared string
    /// otherwise (an upper bound for clones, which share it).
    pub(crate) fn heap_size(&self) -> usize {
        match &self.0 {
            Repr::Static(_) => 0,
            // Two reference counts precede the bytes.
            Repr::Shared(s) => crate::limits::heap_cost(s.len() + 16),
        }
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Namespace::NONE
    }
}

impl From<&str> for Namespace {
    /// Looks the name up among the well-known namespaces first, so that building elements from
    /// constants allocates nothing.
    fn from(uri: &str) -> Namespace {
        match well_known(uri) {
            Some(s) => Namespace::from_static(s),
            None => Namespace(Repr::Shared(Arc::from(uri))),
        }
    }
}

impl From<String> for Namespace {
    fn from(uri: String) -> Namespace {
        Namespace::from(uri.as_str())
    }
}

impl Deref for Namespace {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Namespace {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Namespace {
    fn eq(&self, other: &Namespace) -> bool {
        match (&self.0, &other.0) {
            (Repr::Shared(a), Repr::Shared(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl Eq for Namespace {}

impl PartialEq<str> for Namespace {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Namespace {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<Namespace> for &str {
    fn eq(&self, other: &Namespace) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Debug for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most distinct namespaces one stream's interner keeps. A client stream uses a few dozen, most
/// of them well-known; past this, further ones are allocated per declaration (and charged to
/// the stanza's memory budget), so a hostile stream cannot grow the table.
const INTERNED_MAX: usize = 32;

/// Most bytes of namespace text one stream's interner keeps (real ones are 10 to 60 bytes).
const INTERNED_MAX_BYTES: usize = 4096;

/// One stream's table of namespaces that are not well-known: a name declared again in a later
/// stanza (`<x xmlns='urn:example:foo'/>` in every message) is shared instead of allocated anew.
#[derive(Default)]
pub(crate) struct Interner {
    table: Vec<Arc<str>>,
    bytes: usize,
}

impl Interner {
    /// The shared handle for `uri`, and the heap bytes it newly cost (0 when shared).
    pub(crate) fn intern(&mut self, uri: &str) -> (Namespace, usize) {
        if let Some(s) = well_known(uri) {
            return (Namespace::from_static(s), 0);
        }
        if let Some(a) = self.table.iter().find(|a| &***a == uri) {
            return (Namespace(Repr::Shared(a.clone())), 0);
        }
        let a: Arc<str> = Arc::from(uri);
        let ns = Namespace(Repr::Shared(a.clone()));
        let cost = ns.heap_size();
        if self.table.len() < INTERNED_MAX && self.bytes + uri.len() <= INTERNED_MAX_BYTES {
            self.bytes += uri.len();
            self.table.push(a);
        }
        (ns, cost)
    }
}

/// The static copy of `uri` if it is one of the namespaces XMPP software sends all the time.
fn well_known(uri: &str) -> Option<&'static str> {
    macro_rules! table {
        ($($c:path),* ; $($l:literal),* $(,)?) => {
            match uri {
                "" => Some(""),
                $($c => Some($c),)*
                $($l => Some($l),)*
                _ => None,
            }
        };
    }
    table!(
        ns::CLIENT, ns::SERVER, ns::STREAM, ns::XML, ns::STREAM_ERRORS, ns::STANZA_ERRORS,
        ns::TLS, ns::SASL, ns::BIND, ns::SESSION, ns::ROSTER, ns::ROSTER_VER, ns::PRE_APPROVAL,
        ns::DISCO_INFO, ns::DISCO_ITEMS, ns::CAPS, ns::VERSION, ns::TIME, ns::PING, ns::BLOCKING,
        ns::BLOCKING_ERRORS, ns::REGISTER, ns::REGISTER_FEATURE, ns::SID, ns::DELAY,
        ns::DATA_FORMS, ns::SERVER_INFO, ns::STREAM_LIMITS, ns::SASL_CB, ns::CARBONS, ns::FORWARD,
        ns::HINTS, ns::MAM, ns::MAM_EXTENDED, ns::RSM, ns::RECEIPTS, ns::MARKERS, ns::CORRECT,
        ns::RETRACT, ns::RETRACT_0, ns::FASTEN, ns::FALLBACK, ns::PUSH, ns::PUBSUB, ns::SM,
        ns::CSI, ns::CHATSTATES;
        // Not used by the server itself, but on the wire in most stanzas of today's clients.
        "jabber:server:dialback",
        "urn:xmpp:features:dialback",
        "http://jabber.org/protocol/pubsub#event",
        "http://jabber.org/protocol/pubsub#owner",
        "http://jabber.org/protocol/pubsub#errors",
        "http://jabber.org/protocol/muc",
        "http://jabber.org/protocol/muc#user",
        "http://jabber.org/protocol/muc#admin",
        "http://jabber.org/protocol/muc#owner",
        "http://jabber.org/protocol/nick",
        "http://jabber.org/protocol/commands",
        "jabber:x:conference",
        "jabber:x:oob",
        "jabber:iq:private",
        "jabber:iq:last",
        "storage:bookmarks",
        "vcard-temp",
        "vcard-temp:x:update",
        "urn:ietf:params:xml:ns:vcard-4.0",
        "eu.siacs.conversations.axolotl",
        "urn:xmpp:omemo:2",
        "urn:xmpp:eme:0",
        "urn:xmpp:occupant-id:0",
        "urn:xmpp:reactions:0",
        "urn:xmpp:reply:0",
        "urn:xmpp:bookmarks:1",
        "urn:xmpp:mds:displayed:0",
        "urn:xmpp:avatar:data",
        "urn:xmpp:avatar:metadata",
        "urn:xmpp:http:upload:0",
        "urn:xmpp:idle:1",
        "urn:xmpp:jingle:1",
        "urn:xmpp:jingle-message:0",
        "urn:xmpp:jingle:apps:rtp:1",
        "urn:xmpp:jingle:transports:ice-udp:1",
        "urn:xmpp:hashes:2",
        "urn:xmpp:sce:1",
        "urn:xmpp:styling:0",
        "urn:xmpp:message-moderate:1",
        "urn:xmpp:sasl:2",
        "urn:xmpp:bind:0",
        "urn:xmpp:fast:0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_names_are_static_and_others_shared() {
        let (a, cost) = Interner::default().intern(ns::CLIENT);
        assert!(matches!(a.0, Repr::Static(_)));
        assert_eq!(cost, 0);
        assert_eq!(a, ns::CLIENT);
        let mut i = Interner::default();
        let (x, cost) = i.intern("urn:example:x");
        assert!(cost > 0);
        let (y, again) = i.intern("urn:example:x");
        assert_eq!(again, 0, "a second declaration is shared");
        let (Repr::Shared(xa), Repr::Shared(ya)) = (&x.0, &y.0) else {
            panic!("not shared")
        };
        assert!(Arc::ptr_eq(xa, ya));
        assert_eq!(x, Namespace::from("urn:example:x"));
        assert_ne!(x, Namespace::NONE);
        assert!(Namespace::NONE.is_empty());
        assert_eq!(Namespace::from(ns::SERVER).canonical(), ns::CLIENT);
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut i = Interner::default();
        for n in 0..1000 {
            let _ = i.intern(&format!("urn:example:{n}"));
        }
        assert_eq!(i.table.len(), INTERNED_MAX);
        let mut i = Interner::default();
        for n in 0..1000 {
            let _ = i.intern(&format!("urn:example:{n}:{}", "x".repeat(500)));
        }
        assert!(i.bytes <= INTERNED_MAX_BYTES);
        // Past the bound every declaration is still answered, just not kept.
        let (n, cost) = i.intern("urn:example:late");
        assert_eq!(n, "urn:example:late");
        assert!(cost > 0);
    }
}
