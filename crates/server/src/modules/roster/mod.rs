//! RFC 6121 §2: roster get (with versioning, §2.6), roster set and remove, roster pushes to
//! interested resources. The subscription rules are in [`subscription`].

pub mod pending;
pub mod subscription;

use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::modules::{iq_result, presence, push_to_interested};
use crate::server::Server;
use crate::session::Ctx;
use crate::storage::types::RosterCaps;
use crate::storage::{RosterItem, RosterStore, StorageError};
use subscription::{Effects, SubKind};

/// Longest name or group name accepted, in bytes (RFC 6121 §2.1.2.4 suggests a limit).
const MAX_TEXT: usize = 1023;
/// Most groups on one item.
const MAX_GROUPS: usize = 64;

/// The `<item/>` element for a roster result or push.
pub fn item_element(item: &RosterItem) -> Element {
    let mut e = Element::new("item", ns::ROSTER)
        .with_attr("jid", item.jid.as_str())
        .with_attr("subscription", item.subscription.as_str());
    if let Some(n) = &item.name {
        e.set_attr("name", n.as_str());
    }
    if item.ask {
        e.set_attr("ask", "subscribe");
    }
    if item.approved {
        e.set_attr("approved", "true");
    }
    for g in &item.groups {
        e.push_child(Element::new("group", ns::ROSTER).with_text(g.as_str()));
    }
    e
}

/// Sends a roster push (RFC 6121 §2.1.6) to every interested resource of `owner`.
pub fn push(server: &Arc<Server>, owner: &str, ver: u64, item: Element) {
    let query = Element::new("query", ns::ROSTER)
        .with_attr("ver", ver.to_string())
        .with_child(item);
    push_to_interested(server, owner, &query);
}

/// The per-account roster caps of `[limits]`.
pub fn caps(server: &Server) -> RosterCaps {
    RosterCaps {
        visible: server.config.limits.max_roster_items,
        hidden: server.config.limits.max_pending_subscriptions,
    }
}

/// The error for a roster that is full (`[limits] max_roster_items`). RFC 6121 §2.3.3 answers
/// a roster set beyond a server-configured limit with `not-acceptable`; the type is `cancel`
/// because no change to the same request helps, only removing other contacts first.
pub fn roster_full(server: &Server) -> StanzaError {
    let max = server.config.limits.max_roster_items;
    StanzaError::new(StanzaCondition::NotAcceptable)
        .with_type(zorg_proto::ErrorType::Cancel)
        .with_text(format!(
            "your roster is full ({max} contacts); remove contacts you no longer need first"
        ))
}

/// Stores the result of a subscription transition and pushes what the user sees. `Ok(false)`
/// when storing it would pass a roster cap ([`caps`]): then nothing changed.
pub async fn apply(
    server: &Arc<Server>,
    owner: &str,
    before: Option<&RosterItem>,
    after: Option<RosterItem>,
    fx: &Effects,
) -> Result<bool, StorageError> {
    match after {
        Some(item) if !fx.delete => {
            if fx.store || fx.push {
                let caps = caps(server);
                let Some(ver) = server
                    .storage
                    .put_roster_item_within(owner, &item, caps)
                    .await?
                else {
                    return Ok(false);
                };
                if fx.push && item.visible {
                    push(server, owner, ver, item_element(&item));
                }
            }
        }
        _ => {
            if let Some(b) = before
                && let Some(ver) = server.storage.remove_roster_item(owner, &b.jid).await?
                && b.visible
            {
                push(server, owner, ver, removed(&b.jid));
            }
        }
    }
    Ok(true)
}

fn removed(jid: &str) -> Element {
    Element::new("item", ns::ROSTER)
        .with_attr("jid", jid)
        .with_attr("subscription", "remove")
}

/// Roster get and set from the client.
pub async fn handle_iq(ctx: &mut Ctx<'_>, el: Element) {
    let Some(q) = el.get_child("query", ns::ROSTER) else {
        return;
    };
    let owner = ctx.bare().to_owned();
    let server = ctx.server.clone();
    match el.attr("type") {
        Some("get") => {
            ctx.sess.handle.state.set_interested();
            let (ver, items) = match server.storage.roster(&owner).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "roster read failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                    return;
                }
            };
            let ver_s = ver.to_string();
            if q.attr("ver") == Some(ver_s.as_str()) {
                // RFC 6121 §2.6.3: the client is up to date; changes come as pushes.
                ctx.to_self.push(iq_result(&el, None));
                return;
            }
            let mut r = Element::new("query", ns::ROSTER).with_attr("ver", ver_s);
            for i in &items {
                r.push_child(item_element(i));
            }
            ctx.to_self.push(iq_result(&el, Some(r)));
        }
        Some("set") => {
            let req = match parse_set(q) {
                Ok(r) => r,
                Err(e) => {
                    ctx.reply_error(&el, e);
                    return;
                }
            };
            if req.jid == owner {
                ctx.reply_error(
                    &el,
                    StanzaError::new(StanzaCondition::NotAllowed)
                        .with_text("you cannot add yourself to your roster"),
                );
                return;
            }
            let before = match server.storage.roster_item(&owner, &req.jid).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "roster read failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                    return;
                }
            };
            let r = if req.remove {
                remove(&server, &owner, before).await
            } else {
                let mut item = before.unwrap_or_default();
                item.jid = req.jid;
                item.name = req.name;
                item.groups = req.groups;
                item.visible = true;
                let caps = caps(&server);
                match server
                    .storage
                    .put_roster_item_within(&owner, &item, caps)
                    .await
                {
                    Ok(Some(ver)) => {
                        push(&server, &owner, ver, item_element(&item));
                        Ok(())
                    }
                    Ok(None) => Err(roster_full(&server)),
                    Err(e) => Err(e.into()),
                }
            };
            match r {
                Ok(()) => ctx.to_self.push(iq_result(&el, None)),
                Err(e) => ctx.reply_error(&el, e),
            }
        }
        _ => ctx.reply_error(&el, StanzaError::new(StanzaCondition::BadRequest)),
    }
}

impl From<StorageError> for StanzaError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage failed");
        StanzaError::new(StanzaCondition::InternalServerError)
    }
}

/// RFC 6121 §2.5.2: delete and push the removal, then cancel both subscription directions
/// with the contact, wherever it is served (here or over federation).
async fn remove(
    server: &Arc<Server>,
    owner: &str,
    before: Option<RosterItem>,
) -> Result<(), StanzaError> {
    let Some(item) = before.filter(|i| i.visible) else {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    };
    let (unsubscribe, unsubscribed) = subscription::on_remove(&item);
    if let Some(ver) = server.storage.remove_roster_item(owner, &item.jid).await? {
        push(server, owner, ver, removed(&item.jid));
    }
    // RFC 6121 §3.2.2: unavailable first, while the contact is still subscribed.
    if item.subscription.has_from() {
        presence::send_unavailable_from_all(server, owner, &item.jid).await;
    }
    for (send, kind) in [
        (unsubscribe, SubKind::Unsubscribe),
        (unsubscribed, SubKind::Unsubscribed),
    ] {
        if send {
            let stanza = Element::new("presence", ns::CLIENT)
                .with_attr("type", kind.as_str())
                .with_attr("from", owner)
                .with_attr("to", item.jid.as_str());
            presence::route_subscription(server, stanza, owner, &item.jid, kind).await;
        }
    }
    Ok(())
}

struct SetRequest {
    jid: String,
    name: Option<String>,
    groups: Vec<String>,
    remove: bool,
}

/// Validates a roster set (RFC 6121 §2.3.3).
fn parse_set(q: &Element) -> Result<SetRequest, StanzaError> {
    let bad = |t: &str| StanzaError::new(StanzaCondition::BadRequest).with_text(t.to_owned());
    let mut items = q.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(bad("a roster set carries exactly one item"));
    };
    let jid = item.attr("jid").ok_or_else(|| bad("item without jid"))?;
    let jid = Jid::new(jid).map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))?;
    if jid.resource().is_some() {
        return Err(bad("roster items are bare JIDs"));
    }
    let remove = item.attr("subscription") == Some("remove");
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > MAX_TEXT) {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable).with_text("name too long"));
    }
    let mut groups: Vec<String> = Vec::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text();
        if g.is_empty() || g.len() > MAX_TEXT {
            return Err(StanzaError::new(StanzaCondition::NotAcceptable)
                .with_text("empty or too long group name"));
        }
        if groups.contains(&g) {
            return Err(bad("duplicate group"));
        }
        groups.push(g);
    }
    if groups.len() > MAX_GROUPS {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable).with_text("too many groups"));
    }
    Ok(SetRequest {
        jid: jid.to_string(),
        name,
        groups,
        remove,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Subscription;

    fn q(items: &str) -> Element {
        let xml = format!("<iq><query xmlns='jabber:iq:roster'>{items}</query></iq>");
        let iq = zorg_proto::parse_element(&xml, zorg_proto::Limits::default()).unwrap();
        iq.children().next().unwrap().clone()
    }

    #[test]
    fn set_validation() {
        let r = parse_set(&q(
            "<item jid='Bob@Example.org' name='Bob'><group>A</group></item>",
        ))
        .unwrap();
        assert_eq!(r.jid, "bob@example.org");
        assert_eq!(r.groups, vec!["A"]);
        assert!(!r.remove);
        assert!(parse_set(&q("<item jid='a@b'/><item jid='c@d'/>")).is_err());
        assert!(parse_set(&q("")).is_err());
        assert!(parse_set(&q("<item jid='a@b/r'/>")).is_err());
        assert!(
            parse_set(&q(
                "<item jid='a@b'><group>x</group><group>x</group></item>"
            ))
            .is_err()
        );
        assert!(parse_set(&q("<item jid='a@b'><group></group></item>")).is_err());
        assert!(
            parse_set(&q("<item jid='a@b' subscription='remove'/>"))
                .unwrap()
                .remove
        );
    }

    #[test]
    fn item_xml() {
        let item = RosterItem {
            jid: "a@b".into(),
            name: Some("A".into()),
            subscription: Subscription::To,
            ask: true,
            groups: vec!["g".into()],
            visible: true,
            ..Default::default()
        };
        assert_eq!(
            item_element(&item).to_xml(ns::ROSTER),
            "<item jid='a@b' subscription='to' name='A' ask='subscribe'><group>g</group></item>"
        );
    }
}
