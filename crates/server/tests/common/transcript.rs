//! Strict transcript steps for negative checks: read *every* stanza up to a barrier, so that a
//! test can say what did not arrive. The barrier must travel the same queue as what it rules
//! out: a stanza routed to the client by another party, sent after the act under test has
//! completed (a session's own replies, such as a ping answer, may overtake routed stanzas).

use zorg_proto::Element;
use zorg_server::storage::{RosterItem, RosterStore, Subscription};

use super::{Client, TestServer};

/// Reads stanzas until one matches `barrier` and returns the ones before it, in order; skips
/// nothing. Panics after 200 stanzas or when a read times out.
pub async fn until(c: &mut Client, what: &str, barrier: impl Fn(&Element) -> bool) -> Vec<Element> {
    let mut before = Vec::new();
    for _ in 0..200 {
        let e = c.next().await;
        if barrier(&e) {
            return before;
        }
        before.push(e);
    }
    panic!("no {what} within 200 stanzas");
}

/// Whether `e` is a presence from `from` (a full or bare JID).
pub fn presence_from(e: &Element, from: &str) -> bool {
    e.name() == "presence" && e.attr("from") == Some(from)
}

/// Whether `e` is a message with this id.
pub fn message_id(e: &Element, id: &str) -> bool {
    e.name() == "message" && e.attr("id") == Some(id)
}

/// The stanzas, serialised, for assertion messages.
pub fn show(stanzas: &[Element]) -> String {
    stanzas
        .iter()
        .map(|e| e.to_xml(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stores `owner`'s roster item for `contact` directly (the handshake is tested elsewhere).
pub async fn set_roster(t: &TestServer, owner: &str, contact: &str, subscription: Subscription) {
    let item = RosterItem {
        jid: contact.into(),
        subscription,
        visible: true,
        ..Default::default()
    };
    t.server()
        .storage
        .put_roster_item(owner, &item)
        .await
        .unwrap();
}
