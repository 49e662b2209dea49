//! What goes into an account's archive, on the message path: which messages (XEP-0313 §7 and
//! XEP-0334 hints), the stanza-id the recipient sees (XEP-0359), corrections (XEP-0308) linked
//! to their original, and retractions (XEP-0424) that turn the original into a tombstone.

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, ns};

use crate::modules::message::MessageType;
use crate::server::Server;
use crate::storage::RosterStore;
use crate::storage::archive::{NewEntry, PrefMode, Retraction};

/// Payloads that make a message worth keeping even without a body: receipts, markers,
/// retractions, corrections and end-to-end encrypted content.
fn keeps(c: &Element) -> bool {
    matches!(
        (c.ns(), c.name()),
        (ns::RECEIPTS, "received")
            | (ns::MARKERS, "received" | "displayed" | "acknowledged")
            | (ns::RETRACT, "retract")
            | (ns::FASTEN, "apply-to")
            | (ns::CORRECT, "replace")
            | (ns::HINTS, "store")
            | ("eu.siacs.conversations.axolotl", "encrypted")
            | ("urn:xmpp:omemo:2", "encrypted")
            | ("urn:xmpp:openpgp:0", "openpgp")
            | ("jabber:x:encrypted", "x")
    )
}

/// Whether `el` is archived at all: chat and normal messages with a body or one of the payloads
/// above, unless the sender asked for `no-store` / `no-permanent-store` (XEP-0334). Chat states
/// alone, headlines, errors, group chat and carbons are not.
pub fn archivable(el: &Element) -> bool {
    if !matches!(MessageType::of(el), MessageType::Chat | MessageType::Normal) {
        return false;
    }
    let mut keep = false;
    for c in el.children() {
        if c.is("no-store", ns::HINTS)
            || c.is("no-permanent-store", ns::HINTS)
            || (c.ns() == ns::CARBONS && matches!(c.name(), "sent" | "received"))
            || c.is("result", ns::MAM)
        {
            return false;
        }
        keep |= c.is("body", ns::CLIENT) || keeps(c);
    }
    keep
}

/// A new archive id: the time in milliseconds (12 hex digits) and 64 random bits (16 hex
/// digits). Ids of one account sort by time, which keeps the archive's id index written at its
/// end; they are opaque to clients all the same.
pub fn archive_id(stamp_unix_ms: i64) -> String {
    let mut r = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut r).is_err() {
        // As `new_id`: continuing without randomness is worse than stopping.
        panic!("the system random number generator failed");
    }
    format!(
        "{:012x}{:016x}",
        stamp_unix_ms.max(0),
        u64::from_be_bytes(r)
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Whether `owner` keeps messages with `with_bare` (their preferences, or the server's default).
async fn wanted(server: &Arc<Server>, owner: &str, with_bare: &str) -> bool {
    let prefs = super::prefs(server, owner).await;
    match prefs.listed(with_bare) {
        Some(decided) => decided,
        None => match prefs.default {
            PrefMode::Always => true,
            PrefMode::Never => false,
            // The one case that needs storage: only for accounts that chose `roster`.
            PrefMode::Roster => matches!(
                server.storage.roster_item(owner, with_bare).await,
                Ok(Some(item)) if item.visible
            ),
        },
    }
}

/// A message's entry for one archive, made before the message is delivered (the recipient's
/// copy carries the entry's stanza-id) and queued once the outcome is known: a message that
/// bounces is archived nowhere.
pub struct Prepared {
    entry: NewEntry,
    /// XEP-0424: the retraction this message applies, recorded in the audit trail already.
    retraction: Option<Retraction>,
}

impl Prepared {
    /// The entry's stanza-id in its archive.
    pub fn id(&self) -> &str {
        &self.entry.id
    }
}

/// The audit trail refused the record of a retraction: the message must be refused.
#[derive(Debug, Clone, Copy)]
pub struct Unaudited;

/// Prepares `owner`'s archive entry for a message if it qualifies; `peer` is the other party's
/// JID. For an incoming message, adds the `<stanza-id/>` the recipient's clients use to find it
/// in the archive. A retraction (XEP-0424) is recorded in the audit trail here, before the
/// message goes anywhere, and refused (`Err`) when it cannot be.
pub async fn prepare(
    server: &Arc<Server>,
    owner: &str,
    peer: &str,
    outgoing: bool,
    el: &mut Element,
) -> Result<Option<Prepared>, Unaudited> {
    if !server.config.archive.enabled || !archivable(el) {
        return Ok(None);
    }
    let Ok(peer) = Jid::new(peer) else {
        return Ok(None);
    };
    let with_bare = peer.to_bare().to_string();
    if !wanted(server, owner, &with_bare).await {
        return Ok(None);
    }
    let retraction = match retraction_target(el) {
        None => None,
        Some((target, version)) => {
            let by = if outgoing { owner } else { with_bare.as_str() };
            let ev = crate::audit::Event::ArchiveRetracted {
                archive: owner.to_owned(),
                by: by.to_owned(),
                message: crate::audit::event::cut(&target),
            };
            if server.audit.record(ev).await.is_err() {
                return Err(Unaudited);
            }
            let retraction_id = el.attr("id").map(str::to_owned);
            Some(Retraction {
                owner: owner.to_owned(),
                with_bare: with_bare.clone(),
                outgoing,
                target,
                tombstone: Box::new(move |original| {
                    tombstone(original, version, retraction_id.as_deref())
                }),
            })
        }
    };
    let stamp = now_ms();
    let id = archive_id(stamp);
    if !outgoing {
        el.push_child(
            Element::new("stanza-id", ns::SID)
                .with_attr("id", id.as_str())
                .with_attr("by", owner),
        );
    }
    let origin_id = el
        .get_child("origin-id", ns::SID)
        .and_then(|o| o.attr("id"))
        .map(str::to_owned);
    let corrects = el
        .get_child("replace", ns::CORRECT)
        .and_then(|r| r.attr("id"))
        .map(str::to_owned);
    let entry = NewEntry {
        owner: owner.to_owned(),
        id,
        stamp_unix_ms: stamp,
        with_bare,
        with_resource: peer.resource().map(|r| r.to_string()).unwrap_or_default(),
        outgoing,
        msg_id: el.attr("id").map(str::to_owned),
        origin_id,
        corrects,
        stanza: el.to_xml(ns::CLIENT),
    };
    Ok(Some(Prepared { entry, retraction }))
}

/// Queues a prepared entry (the message was delivered, or went elsewhere, e.g. to another
/// server) and applies its retraction.
pub async fn commit(server: &Arc<Server>, p: Prepared) {
    if let Err(e) = server.storage.archive(p.entry).await {
        tracing::error!(error = %e, "archiving a message failed");
        return;
    }
    apply_retraction(server, p.retraction).await;
}

/// Archives a prepared entry for an owner who is offline and stores it for them, both or
/// neither; durable when this returns `Ok`.
pub async fn commit_offline(
    server: &Arc<Server>,
    p: Prepared,
    max: u32,
) -> Result<(), crate::storage::StorageError> {
    server.storage.store_offline_archived(p.entry, max).await?;
    apply_retraction(server, p.retraction).await;
    Ok(())
}

async fn apply_retraction(server: &Arc<Server>, r: Option<Retraction>) {
    if let Some(r) = r
        && let Err(e) = server.storage.retract(r).await
    {
        tracing::error!(error = %e, "applying a retraction to the archive failed");
    }
}

/// Archives a message in `owner`'s archive at once if it qualifies (see [`prepare`]). Returns
/// the archive id when archived; `Err` when a retraction could not be audited.
pub async fn archive(
    server: &Arc<Server>,
    owner: &str,
    peer: &str,
    outgoing: bool,
    el: &mut Element,
) -> Result<Option<String>, Unaudited> {
    let Some(p) = prepare(server, owner, peer, outgoing, el).await? else {
        return Ok(None);
    };
    let id = p.id().to_owned();
    commit(server, p).await;
    Ok(Some(id))
}

/// The id a XEP-0424 retraction refers to, and the namespace version it uses.
fn retraction_target(el: &Element) -> Option<(String, &'static str)> {
    if let Some(r) = el.get_child("retract", ns::RETRACT) {
        return r.attr("id").map(|id| (id.to_owned(), ns::RETRACT));
    }
    let a = el.get_child("apply-to", ns::FASTEN)?;
    a.has_child("retract", ns::RETRACT_0)
        .then(|| a.attr("id").map(|id| (id.to_owned(), ns::RETRACT_0)))?
}

/// The tombstone of an archived message (XEP-0424 §Tombstones): the envelope (from, to, type,
/// id) and the ids stay; the body and every other payload are gone. `None` if the stored
/// stanza cannot be read (it is then left as it is and the error logged).
pub fn tombstone(original: &str, version: &str, retraction_id: Option<&str>) -> Option<String> {
    let el = match crate::storage::parse_stored(original) {
        Ok(el) => el,
        Err(e) => {
            tracing::error!(error = %e, "an archived message to retract is unreadable");
            return None;
        }
    };
    let mut t = el.without_children();
    let stamp = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut retracted = Element::new("retracted", version).with_attr("stamp", stamp);
    if let Some(id) = retraction_id {
        retracted.set_attr("id", id);
    }
    if let Some(o) = el.get_child("origin-id", ns::SID) {
        retracted.push_child(o.clone());
    }
    t.push_child(retracted);
    for c in el.children().filter(|c| c.is("stanza-id", ns::SID)) {
        t.push_child(c.clone());
    }
    Some(t.to_xml(ns::CLIENT))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn el(xml: &str) -> Element {
        zorg_proto::parse_element(xml, zorg_proto::Limits::default()).unwrap()
    }

    #[test]
    fn archive_ids_sort_by_time_and_differ() {
        let a = archive_id(1_795_428_000_000);
        let b = archive_id(1_795_428_000_001);
        assert_eq!(a.len(), 28);
        assert!(a < b);
        assert_ne!(archive_id(5), archive_id(5));
    }

    #[test]
    fn what_is_archived() {
        let yes = [
            "<message type='chat'><body>hi</body></message>",
            "<message><body>normal</body></message>",
            "<message type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>",
            "<message type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>",
            "<message type='chat'><retract xmlns='urn:xmpp:message-retract:1' id='1'/></message>",
            "<message type='chat'><store xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>",
        ];
        for x in yes {
            assert!(archivable(&el(x)), "{x}");
        }
        let no = [
            "<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message type='headline'><body>news</body></message>",
            "<message type='error'><body>x</body></message>",
            "<message type='groupchat'><body>x</body></message>",
            "<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>",
            "<message><received xmlns='urn:xmpp:carbons:2'/></message>",
            "<message type='chat'><request xmlns='urn:xmpp:receipts'/></message>",
        ];
        for x in no {
            assert!(!archivable(&el(x)), "{x}");
        }
    }

    #[test]
    fn retraction_targets_in_both_versions() {
        assert_eq!(
            retraction_target(&el(
                "<message><retract xmlns='urn:xmpp:message-retract:1' id='o1'/></message>"
            )),
            Some(("o1".into(), ns::RETRACT))
        );
        assert_eq!(
            retraction_target(&el("<message><apply-to xmlns='urn:xmpp:fasten:0' id='o2'>\
                 <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>")),
            Some(("o2".into(), ns::RETRACT_0))
        );
        assert_eq!(
            retraction_target(&el(
                "<message><apply-to xmlns='urn:xmpp:fasten:0' id='o3'/></message>"
            )),
            None
        );
        // Without an id there is nothing to retract.
        assert_eq!(
            retraction_target(&el(
                "<message><retract xmlns='urn:xmpp:message-retract:1'/></message>"
            )),
            None
        );
        assert_eq!(
            retraction_target(&el("<message><apply-to xmlns='urn:xmpp:fasten:0'>\
                 <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>")),
            None
        );
    }

    #[test]
    fn a_tombstone_keeps_the_envelope_and_ids_and_nothing_else() {
        let t = tombstone(
            "<message xmlns='jabber:client' from='a@x/p' to='b@x' type='chat' id='m1'>\
             <body>the secret dose</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='b@x'/>\
             <fallback xmlns='urn:xmpp:fallback:0'/></message>",
            ns::RETRACT,
            Some("r1"),
        )
        .unwrap();
        assert!(!t.contains("secret"));
        assert!(!t.contains("fallback"));
        let t = el(&t);
        assert_eq!(t.attr("from"), Some("a@x/p"));
        assert_eq!(t.attr("id"), Some("m1"));
        let r = t.get_child("retracted", ns::RETRACT).unwrap();
        assert_eq!(r.attr("id"), Some("r1"));
        assert!(r.attr("stamp").is_some());
        assert!(r.has_child("origin-id", ns::SID));
        assert!(t.has_child("stanza-id", ns::SID));
        assert_eq!(tombstone("<message", ns::RETRACT, None), None);
    }
}
