//! Subscription stanzas (RFC 6121 §3) between a local user and a contact here or elsewhere:
//! the state machine is in [`crate::modules::roster::subscription`]; this routes, stores
//! (within the `[limits]` roster caps) and answers on the user's behalf.

use std::sync::Arc;

use zorg_proto::{Element, ErrorType, StanzaCondition, StanzaError, ns};

use super::{deliver, remote_domain, send_current_from_all, send_unavailable_from_all};
use crate::modules::blocking;
use crate::modules::roster::subscription::{self, SubKind};
use crate::modules::roster::{self, pending};
use crate::server::Server;
use crate::session::Ctx;
use crate::storage::{AccountStore, RosterStore};

/// Whether `jid` is an account that exists here; `None` if it is not served here, or the
/// database could not say.
async fn local_account_exists(server: &Arc<Server>, jid: &str) -> Option<bool> {
    let (_, domain) = jid.rsplit_once('@')?;
    if !server.serves(domain) {
        return None;
    }
    match server.storage.account_exists(jid).await {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            None
        }
    }
}

/// `<presence type='unsubscribed'/>` from `from` to `to` (a bare JID each).
fn unsubscribed(from: &str, to: &str) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", SubKind::Unsubscribed.as_str())
        .with_attr("from", from)
        .with_attr("to", to)
}

/// A subscription stanza from the user of `ctx` to `contact` (RFC 6121 §3, "outbound").
pub(super) async fn outbound_subscription(
    ctx: &mut Ctx<'_>,
    el: Element,
    contact: &str,
    kind: SubKind,
) {
    let server = ctx.server.clone();
    let user = ctx.bare().to_owned();
    if contact == user {
        // Subscribing to oneself means nothing: one's own resources always see each other.
        return;
    }
    if (kind == SubKind::Subscribe || kind == SubKind::Subscribed)
        && let Some(err) = blocking::sender_blocks(ctx, contact).await
    {
        ctx.reply_error(&el, err);
        return;
    }
    let before = match server.storage.roster_item(&user, contact).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
            return;
        }
    };
    // No roster item for an account that does not exist here: the request is answered at once
    // as RFC 6121 §8.5.1 has the contact's server answer it (`unsubscribed`), and a
    // pre-approval has nobody to approve. An item the user already has goes the usual way.
    if before.is_none()
        && matches!(kind, SubKind::Subscribe | SubKind::Subscribed)
        && local_account_exists(&server, contact).await == Some(false)
    {
        if kind == SubKind::Subscribe {
            ctx.to_self.push(unsubscribed(contact, ctx.full()));
        }
        return;
    }
    let (after, fx) = subscription::outbound(before.clone(), contact, kind);
    match roster::apply(&server, &user, before.as_ref(), after, &fx).await {
        Ok(true) => {}
        Ok(false) => {
            ctx.reply_error(&el, roster::roster_full(&server));
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "roster write failed");
            ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
            return;
        }
    }
    // RFC 6121 §3.2.2: unavailable presence goes out while the contact is still subscribed,
    // before the `unsubscribed` that ends the subscription.
    if fx.send_unavailable {
        send_unavailable_from_all(&server, &user, contact).await;
    }
    if fx.route {
        // RFC 6121 §3.1.2: subscription stanzas carry the user's bare JID.
        let mut out = el.clone();
        out.set_attr("from", user.as_str());
        out.set_attr("to", contact);
        route_subscription(&server, out, &user, contact, kind).await;
    }
    if fx.send_presence {
        send_current_from_all(&server, &user, contact).await;
    }
}

/// Hands a subscription stanza from the local account `from` to the contact's server: here, or
/// over federation.
pub async fn route_subscription(
    server: &Arc<Server>,
    stanza: Element,
    from: &str,
    contact: &str,
    kind: SubKind,
) {
    if let Some(domain) = remote_domain(server, contact) {
        crate::federation::send(server, stanza, &domain);
        return;
    }
    let domain = contact.rsplit_once('@').map(|(_, d)| d).unwrap_or(contact);
    if server.serves(domain) && contact.contains('@') {
        Box::pin(inbound_subscription(server, contact, from, kind, stanza)).await;
    }
}

/// A subscription stanza for the local account `owner` from `from` (RFC 6121 §3, "inbound").
pub async fn inbound_subscription(
    server: &Arc<Server>,
    owner: &str,
    from: &str,
    kind: SubKind,
    stanza: Element,
) {
    match server.storage.account_exists(owner).await {
        Ok(true) => {}
        // RFC 6121 §8.5.1: no such user: a subscribe is answered `unsubscribed` on its behalf,
        // every other subscription stanza is ignored. Nothing is stored.
        Ok(false) => {
            if kind == SubKind::Subscribe {
                let reply = unsubscribed(owner, from);
                route_subscription(server, reply, owner, from, SubKind::Unsubscribed).await;
            }
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "account lookup failed");
            return;
        }
    }
    if blocking::blocks(server, owner, from).await {
        return;
    }
    let before = match server.storage.roster_item(owner, from).await {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            return;
        }
    };
    // Kept for a later login: only who asks and a short message (see `pending`).
    let xml = pending::kept(&stanza).to_xml(ns::CLIENT);
    let (after, fx) = subscription::inbound(before.clone(), from, kind, &xml);
    match roster::apply(server, owner, before.as_ref(), after, &fx).await {
        Ok(true) => {}
        Ok(false) => {
            // `[limits] max_pending_subscriptions`: the request cannot be kept, so it is
            // refused, not delivered (a request shown but not kept would be lost at the next
            // login). `resource-constraint`, type wait: the place frees up as the user answers.
            let text = "the contact has too many unanswered subscription requests; try later";
            let err = StanzaError::new(StanzaCondition::ResourceConstraint)
                .with_type(ErrorType::Wait)
                .with_text(text);
            if let Some(reply) = err.reply_to(&stanza) {
                route_error(server, reply, from).await;
            }
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "roster write failed");
            return;
        }
    }
    if fx.deliver {
        deliver(server, stanza, owner, None).await;
    }
    // RFC 6121 §3.1.3 (pre-approved or already subscribed) and Appendix A.3.2: answer on the
    // user's behalf.
    for (reply, kind) in [
        (fx.auto_reply_subscribed, SubKind::Subscribed),
        (fx.auto_reply_unsubscribed, SubKind::Unsubscribed),
    ] {
        if reply {
            let stanza = Element::new("presence", ns::CLIENT)
                .with_attr("type", kind.as_str())
                .with_attr("from", owner)
                .with_attr("to", from);
            route_subscription(server, stanza, owner, from, kind).await;
        }
    }
    if fx.send_presence {
        send_current_from_all(server, owner, from).await;
    }
    if fx.send_unavailable {
        send_unavailable_from_all(server, owner, from).await;
    }
}

/// A presence error to `to` (the bare JID that sent the refused stanza), here or elsewhere.
async fn route_error(server: &Arc<Server>, reply: Element, to: &str) {
    if let Some(domain) = remote_domain(server, to) {
        crate::federation::send(server, reply, &domain);
    } else {
        Box::pin(deliver(server, reply, to, None)).await;
    }
}
