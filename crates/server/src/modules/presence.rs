//! Presence (RFC 6121 §4): initial presence with probes, broadcast to subscribers, directed
//! presence, unavailable on disconnect; and the routing of subscription requests (§3) through
//! the state machine in [`crate::modules::roster::subscription`].

use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::modules::roster;
use crate::modules::roster::subscription::{self, SubKind};
use crate::modules::{Target, blocking, message, target};
use crate::server::Server;
use crate::session::{Ctx, SessionData};
use crate::storage::RosterStore;

/// Priority of an available presence (RFC 6121 §4.7.2.3); absent or invalid = 0.
fn priority(el: &Element) -> i32 {
    el.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i32>().ok())
        .map(|p| p.clamp(-128, 127))
        .unwrap_or(0)
}

/// A presence from the client of `ctx`.
pub async fn from_client(ctx: &mut Ctx<'_>, mut el: Element, to: Option<Jid>) {
    let ty = el.attr("type").map(str::to_owned);
    if let Some(kind) = ty.as_deref().and_then(SubKind::parse) {
        let Some(to) = to else {
            ctx.reply_error(
                &el,
                StanzaError::new(StanzaCondition::BadRequest)
                    .with_text("subscription requests need a 'to'"),
            );
            return;
        };
        let contact = to.to_bare().to_string();
        outbound_subscription(ctx, el, &contact, kind).await;
        return;
    }
    match ty.as_deref() {
        None | Some("unavailable") => {}
        // Probes come from servers, not clients; errors to presence are only relayed.
        Some("probe") => return,
        Some("error") => {
            if let Some(to) = to {
                relay_directed(ctx, el, &to, false).await;
            }
            return;
        }
        Some(_) => {
            ctx.reply_error(
                &el,
                StanzaError::new(StanzaCondition::BadRequest).with_text("unknown presence type"),
            );
            return;
        }
    }
    let available = ty.is_none();
    match to {
        None => {
            if available {
                broadcast_available(ctx, el).await;
            } else {
                el.remove_attr("to");
                broadcast_unavailable(ctx.server, ctx.sess, el, true).await;
            }
        }
        Some(to) => relay_directed(ctx, el, &to, available).await,
    }
}

/// Directed presence (RFC 6121 §4.6) or a presence error, to one entity.
async fn relay_directed(ctx: &mut Ctx<'_>, el: Element, to: &Jid, available: bool) {
    let t = target(ctx, &Some(to.clone()));
    // Nothing to do for presence to the server.
    if matches!(t, Target::Server(_))
        || blocking::blocks(ctx.server, ctx.bare(), &to.to_string()).await
    {
        return;
    }
    track_directed(ctx, &el, to, available);
    match t {
        Target::OwnAccount => deliver(ctx.server, el, ctx.bare(), None).await,
        Target::LocalBare(b) => deliver(ctx.server, el, &b, None).await,
        Target::LocalFull { bare, resource } => {
            deliver(ctx.server, el, &bare, Some(&resource)).await;
        }
        Target::Remote(domain) => crate::federation::send(ctx.server, el, &domain),
        Target::Server(_) => {}
    }
}

/// Remembers who got directed available presence, to send them unavailable at the end.
fn track_directed(ctx: &mut Ctx<'_>, el: &Element, to: &Jid, available: bool) {
    let key = to.to_string();
    if el.attr("type") != Some("error") {
        if available {
            ctx.sess.directed.insert(key);
        } else {
            ctx.sess.directed.remove(&key);
        }
    }
}

/// Delivers a presence stanza (with `from` set) to a local account: to one resource, or to
/// all available resources for a bare JID (RFC 6121 §8.5.2.1.2). Blocked senders are dropped.
pub async fn deliver(server: &Arc<Server>, el: Element, bare: &str, resource: Option<&str>) {
    if blocking::blocks(server, bare, el.attr("from").unwrap_or_default()).await {
        return;
    }
    match resource {
        Some(r) => {
            if let Some(h) = server.router.session(bare, r) {
                let _ = server.router.deliver(&h, el);
            }
        }
        None => {
            for h in server.router.sessions(bare) {
                if h.state.is_available() {
                    let _ = server.router.deliver(&h, el.clone());
                }
            }
        }
    }
}

async fn broadcast_available(ctx: &mut Ctx<'_>, mut el: Element) {
    let server = ctx.server.clone();
    let prio = priority(&el);
    el.remove_attr("to");
    let initial = !ctx.sess.initial_presence;
    ctx.sess.handle.state.set_presence(Some((el.clone(), prio)));
    ctx.sess.initial_presence = true;
    let bare = ctx.bare().to_owned();
    let full = ctx.full().to_owned();
    // One read for the broadcast, the probes and the pending requests below.
    let items = match server.storage.presence_items(&bare).await {
        Ok(items) => items,
        Err(e) => {
            tracing::error!(error = %e, "reading the roster for a presence broadcast failed");
            Vec::new()
        }
    };
    // RFC 6121 §4.2.2 / §4.4.2: to every contact with a subscription from the user.
    for item in items
        .iter()
        .filter(|i| i.visible && i.subscription.has_from())
    {
        let mut p = el.clone();
        p.set_attr("to", item.jid.as_str());
        send_to_contact(&server, p, &item.jid).await;
    }
    // …and to all of the user's available resources, including this one.
    for h in server.router.sessions(&bare) {
        if h.state.is_available() {
            let mut p = el.clone();
            p.set_attr("to", h.full.as_str());
            if h.conn_id == ctx.sess.handle.conn_id {
                ctx.to_self.push(p);
            } else {
                let _ = server.router.deliver(&h, p);
            }
        }
    }
    if !initial {
        return;
    }
    // RFC 6121 §4.2.2: probe contacts the user is subscribed to. Local contacts answer at once
    // with the presence of each available resource; remote ones get a probe from the bare JID.
    for item in items
        .iter()
        .filter(|i| i.visible && i.subscription.has_to())
    {
        if blocking::blocks(&server, &bare, &item.jid).await
            || blocking::blocks(&server, &item.jid, &bare).await
        {
            continue;
        }
        if let Some(domain) = remote_domain(&server, &item.jid) {
            let probe = Element::new("presence", ns::CLIENT)
                .with_attr("type", "probe")
                .with_attr("from", bare.as_str())
                .with_attr("to", item.jid.as_str());
            crate::federation::send(&server, probe, &domain);
            continue;
        }
        for h in server.router.sessions(&item.jid) {
            if let Some(mut p) = h.state.presence() {
                p.set_attr("from", h.full.as_str());
                p.set_attr("to", full.as_str());
                ctx.to_self.push(p);
            }
        }
    }
    // RFC 6121 §3.1.3: subscription requests that arrived while the user was offline.
    for item in items.iter().filter(|i| i.pending_in) {
        if let Some(xml) = &item.pending_in_stanza
            && let Ok(p) = zorg_proto::parse_element(xml, server.limits)
        {
            ctx.to_self.push(p);
        }
    }
    // XEP-0160: offline messages go to the first available resource with priority ≥ 0.
    if prio >= 0 {
        message::deliver_offline(ctx).await;
    }
}

/// The domain of `jid` if it is not served here (the stanza goes over federation).
fn remote_domain(server: &Server, jid: &str) -> Option<String> {
    let j = Jid::new(jid).ok()?;
    let domain = j.domain().as_str();
    (!server.serves(domain)).then(|| domain.to_owned())
}

/// Sends a presence from a local user to a contact's bare JID, here or over federation.
async fn send_to_contact(server: &Arc<Server>, p: Element, contact: &str) {
    if let Some(domain) = remote_domain(server, contact) {
        crate::federation::send(server, p, &domain);
        return;
    }
    let domain = contact.rsplit_once('@').map(|(_, d)| d).unwrap_or(contact);
    if server.serves(domain) && contact.contains('@') {
        deliver(server, p, contact, None).await;
    }
}

/// RFC 6121 §4.3.2: a probe from `prober` (a remote or local full or bare JID) for the local
/// account `owner` is answered with the presence of each available resource, but only when the
/// prober has a subscription to it ("from" or "both") and is not blocked.
pub async fn answer_probe(server: &Arc<Server>, owner: &str, prober: &str) {
    let Ok(p) = Jid::new(prober) else { return };
    let contact = p.to_bare().to_string();
    let subscribed = match server.storage.roster_item(owner, &contact).await {
        Ok(Some(item)) => item.subscription.has_from(),
        Ok(None) => false,
        Err(e) => {
            tracing::error!(error = %e, "roster read for a presence probe failed");
            false
        }
    };
    if !subscribed || blocking::blocks(server, owner, prober).await {
        return;
    }
    send_current_from_all(server, owner, prober).await;
}

/// Unavailable presence from a session: to subscribers, directed-presence targets and the
/// user's available resources (RFC 6121 §4.5.2). `to_self` includes the session itself.
async fn broadcast_unavailable(
    server: &Arc<Server>,
    sess: &mut SessionData,
    mut el: Element,
    to_self: bool,
) {
    let was_available = sess.handle.state.is_available() || sess.initial_presence;
    sess.handle.state.set_presence(None);
    sess.initial_presence = false;
    el.set_attr("type", "unavailable");
    el.set_attr("from", sess.handle.full.as_str());
    let bare = sess.handle.bare.clone();
    if was_available {
        if let Ok(items) = server.storage.presence_items(&bare).await {
            for item in items
                .iter()
                .filter(|i| i.visible && i.subscription.has_from())
            {
                sess.directed.remove(&item.jid);
                let mut p = el.clone();
                p.set_attr("to", item.jid.as_str());
                send_to_contact(server, p, &item.jid).await;
            }
        }
        for h in server.router.sessions(&bare) {
            if h.state.is_available() || (to_self && h.conn_id == sess.handle.conn_id) {
                let mut p = el.clone();
                p.set_attr("to", h.full.as_str());
                let _ = server.router.deliver(&h, p);
            }
        }
    }
    for to in std::mem::take(&mut sess.directed) {
        if let Ok(j) = Jid::new(&to) {
            let mut p = el.clone();
            p.set_attr("to", to.as_str());
            let res = j.resource().map(|r| r.to_string());
            let b = j.to_bare().to_string();
            if server.serves(j.domain().as_str()) {
                deliver(server, p, &b, res.as_deref()).await;
            } else {
                crate::federation::send(server, p, j.domain().as_str());
            }
        }
    }
}

/// The session ended without unavailable presence: send it on the client's behalf.
pub async fn on_disconnect(server: &Arc<Server>, sess: &mut SessionData) {
    if sess.initial_presence || !sess.directed.is_empty() {
        let el = Element::new("presence", ns::CLIENT);
        broadcast_unavailable(server, sess, el, false).await;
    }
}

/// Unavailable presence from every available resource of `owner` to `contact` (after the
/// contact lost its subscription or was blocked).
pub async fn send_unavailable_from_all(server: &Arc<Server>, owner: &str, contact: &str) {
    for h in server.router.sessions(owner) {
        if h.state.is_available() {
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", h.full.as_str())
                .with_attr("to", contact);
            send_unblocked(server, p, contact).await;
        }
    }
}

/// Current presence of every available resource of `owner` to `contact` (after approval).
async fn send_current_from_all(server: &Arc<Server>, owner: &str, contact: &str) {
    for h in server.router.sessions(owner) {
        if let Some(mut p) = h.state.presence() {
            p.set_attr("from", h.full.as_str());
            p.set_attr("to", contact);
            send_unblocked(server, p, contact).await;
        }
    }
}

async fn send_unblocked(server: &Arc<Server>, p: Element, contact: &str) {
    let Ok(j) = Jid::new(contact) else { return };
    if !server.serves(j.domain().as_str()) {
        crate::federation::send(server, p, j.domain().as_str());
        return;
    }
    if j.node().is_none() {
        return;
    }
    let res = j.resource().map(|r| r.to_string());
    deliver(server, p, &j.to_bare().to_string(), res.as_deref()).await;
}

/// A subscription stanza from the user of `ctx` to `contact` (RFC 6121 §3, "outbound").
async fn outbound_subscription(ctx: &mut Ctx<'_>, el: Element, contact: &str, kind: SubKind) {
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
    let (after, fx) = subscription::outbound(before.clone(), contact, kind);
    if let Err(e) = roster::apply(&server, &user, before.as_ref(), after, &fx).await {
        tracing::error!(error = %e, "roster write failed");
        ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
        return;
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

/// Hands a subscription stanza to the contact's server: here, or over federation.
async fn route_subscription(
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
    match crate::storage::AccountStore::account_exists(&server.storage, owner).await {
        Ok(true) => {}
        // RFC 6121 §3.1.3: no such user: the stanza is dropped (a subscribe gets no answer).
        _ => return,
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
    let xml = stanza.to_xml(ns::CLIENT);
    let (after, fx) = subscription::inbound(before.clone(), from, kind, &xml);
    if let Err(e) = roster::apply(server, owner, before.as_ref(), after, &fx).await {
        tracing::error!(error = %e, "roster write failed");
        return;
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
