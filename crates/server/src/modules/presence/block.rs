//! What blocking and unblocking do to presence (XEP-0191 §3.3, §3.4): a contact the user
//! blocks gets unavailable presence once, then nothing; a contact the user unblocks gets the
//! user's current presence again, and the user learns the contact's by a probe. Both only for
//! contacts "allowed to receive presence notifications" (XEP-0191), i.e. with a subscription in
//! that direction; every other delivery is checked in [`super::deliver`].

use std::sync::Arc;

use zorg_proto::jid::Jid;

use super::{probe, send_current_from_all, unavailable_from_all};
use crate::modules::blocking;
use crate::server::Server;
use crate::session::SessionData;
use crate::storage::{RosterItem, RosterStore};

/// The address among `contact`'s (a bare JID) that the blocklist item `item` names: the
/// contact itself for a bare JID or domain item, one resource for a full JID or domain/resource
/// item; `None` if the item is about someone else.
fn address_of(item: &str, contact: &str) -> Option<String> {
    if blocking::matches(item, contact) {
        return Some(contact.to_owned());
    }
    let (bare, resource) = item.split_once('/')?;
    let domain = contact.rsplit_once('@').map_or(contact, |(_, d)| d);
    (bare == contact || bare == domain).then(|| format!("{contact}/{resource}"))
}

/// The user's roster items, or none when they cannot be read (logged).
async fn items(server: &Arc<Server>, owner: &str) -> Vec<RosterItem> {
    match server.storage.presence_items(owner).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "reading the roster after a block or unblock failed");
            Vec::new()
        }
    }
}

/// After `owner` blocked `added` (and the blocklist cache was invalidated): unavailable presence
/// from each available resource to each subscribed contact the items name, and to the entities
/// this session (`sess`) sent directed presence to, which then leave its directed set (their
/// unavailable must not be sent again when it ends). Directed presence from `owner`'s other
/// sessions is not reachable from here: those get nothing more from a blocked entity either.
pub async fn on_block(server: &Arc<Server>, owner: &str, added: &[String], sess: &mut SessionData) {
    if added.is_empty() {
        return;
    }
    let mut sent = Vec::new();
    for item in items(server, owner).await {
        if !(item.visible && item.subscription.has_from()) {
            continue;
        }
        for a in added {
            if let Some(addr) = address_of(a, &item.jid)
                && !sent.contains(&addr)
            {
                unavailable_from_all(server, owner, &addr, false).await;
                sent.push(addr);
            }
        }
    }
    let directed: Vec<String> = sess
        .directed
        .iter()
        .filter(|to| added.iter().any(|a| blocking::matches(a, to)))
        .cloned()
        .collect();
    for to in directed {
        sess.directed.remove(&to);
        if !sent.contains(&to) {
            let p = zorg_proto::Element::new("presence", zorg_proto::ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", sess.handle.full.as_str())
                .with_attr("to", to.as_str());
            super::send_presence(server, p, &to, false).await;
        }
    }
}

/// After `owner` unblocked `removed` (and the blocklist cache was invalidated): the user's
/// current presence to each contact with a subscription from the user that the items named
/// and that no remaining item blocks, and a probe of each such contact the user is subscribed
/// to, answered to every available resource of the user.
pub async fn on_unblock(server: &Arc<Server>, owner: &str, removed: &[String]) {
    if removed.is_empty() {
        return;
    }
    let mut probes = Vec::new();
    for item in items(server, owner).await {
        if !item.visible || !removed.iter().any(|r| address_of(r, &item.jid).is_some()) {
            continue;
        }
        if item.subscription.has_from() && !blocking::blocks(server, owner, &item.jid).await {
            send_current_from_all(server, owner, &item.jid).await;
        }
        if item.subscription.has_to() {
            probes.push(item.jid);
        }
    }
    let sessions: Vec<_> = server
        .router
        .sessions(owner)
        .into_iter()
        .filter(|h| h.state.is_available())
        .collect();
    let Some(first) = sessions.first() else {
        return;
    };
    for contact in &probes {
        if Jid::new(contact).is_ok_and(|j| !server.serves(j.domain().as_str())) {
            // One probe from the bare JID; the answer comes to every available resource.
            probe(server, owner, &first.full, contact).await;
            continue;
        }
        for h in &sessions {
            for p in probe(server, owner, &h.full, contact).await {
                let _ = server.router.deliver(h, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::address_of;

    #[test]
    fn which_address_an_item_names() {
        let c = "bob@b.example";
        assert_eq!(address_of("bob@b.example", c).as_deref(), Some(c));
        assert_eq!(address_of("b.example", c).as_deref(), Some(c));
        assert_eq!(
            address_of("bob@b.example/phone", c).as_deref(),
            Some("bob@b.example/phone")
        );
        assert_eq!(
            address_of("b.example/phone", c).as_deref(),
            Some("bob@b.example/phone")
        );
        assert_eq!(address_of("eve@b.example", c), None);
        assert_eq!(address_of("c.example", c), None);
        assert_eq!(address_of("eve@b.example/phone", c), None);
    }
}
