//! Presence (RFC 6121 §4): initial presence with probes, broadcast to subscribers, directed
//! presence, unavailable on disconnect; the routing of subscription requests (§3) through the
//! state machine in [`crate::modules::roster::subscription`] is in [`subscribe`], and what
//! blocking and unblocking a contact do to presence (XEP-0191 §3.3, §3.4) in [`block`].
//!
//! XEP-0191 §3.1: a contact the user blocks gets no presence from the user, and the user gets
//! none from it. Every delivery here checks both sides: [`deliver`] drops a presence the
//! recipient blocks, and one whose local sender blocks the recipient's resource; presence to a
//! remote contact is checked against the contact's bare JID before it leaves.

pub mod block;
pub mod subscribe;

use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, ErrorType, StanzaCondition, StanzaError, ns};

use crate::modules::roster::pending;
use crate::modules::roster::subscription::SubKind;
use crate::modules::{Target, blocking, message, target};
use crate::server::Server;
use crate::session::{Ctx, SessionData};
use crate::storage::RosterStore;

pub use subscribe::{inbound_subscription, route_subscription};

/// Priority of an available presence (RFC 6121 §4.7.2.3); absent or invalid = 0.
fn priority(el: &Element) -> i32 {
    el.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i32>().ok())
        .map(|p| p.clamp(-128, 127))
        .unwrap_or(0)
}

/// The refusal of a presence bigger than `[limits] max_presence_size`. `policy-violation`
/// (RFC 6120 §8.3.3.15, "violated some local service policy", which the `<text/>` may state)
/// rather than `not-acceptable` (§8.3.3.12, a request that does not meet the recipient's
/// criteria): the stanza is a valid presence that any contact could accept, refused only by
/// the operator's size policy. Type `modify`: the same presence, smaller, is accepted.
fn too_big(max: usize) -> StanzaError {
    StanzaError::new(StanzaCondition::PolicyViolation)
        .with_type(ErrorType::Modify)
        .with_text(format!(
            "presence is limited to {max} bytes here, as it is sent to every contact; send a \
             shorter status or fewer extensions"
        ))
}

/// A presence from the client of `ctx`.
pub async fn from_client(ctx: &mut Ctx<'_>, mut el: Element, to: Option<Jid>) {
    // Checked first, for every kind: a session's presence is stored and re-sent to each contact
    // and each probe, so its size is multiplied; subscription requests are routed and stored.
    let max = ctx.server.config.limits.max_presence_size;
    if el.to_xml(ns::CLIENT).len() > max {
        ctx.reply_error(&el, too_big(max));
        return;
    }
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
        subscribe::outbound_subscription(ctx, el, &contact, kind).await;
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
    if let Err(e) = track_directed(ctx, &el, to, available) {
        ctx.reply_error(&el, e);
        return;
    }
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

/// Remembers who got directed available presence, to send them unavailable at the end; at
/// most `[limits] max_directed_presence` entities per session (each is a JID of up to 3 KiB
/// held for the session's life), refused beyond that.
fn track_directed(
    ctx: &mut Ctx<'_>,
    el: &Element,
    to: &Jid,
    available: bool,
) -> Result<(), StanzaError> {
    if el.attr("type") == Some("error") {
        return Ok(());
    }
    let key = to.to_string();
    if !available {
        ctx.sess.directed.remove(&key);
        return Ok(());
    }
    let max = ctx.server.config.limits.max_directed_presence;
    if ctx.sess.directed.len() >= max as usize && !ctx.sess.directed.contains(&key) {
        return Err(StanzaError::new(StanzaCondition::NotAcceptable)
            .with_type(ErrorType::Cancel)
            .with_text(format!(
                "this session already sent presence to {max} entities outside the roster; \
                 send unavailable presence to some of them first"
            )));
    }
    ctx.sess.directed.insert(key);
    Ok(())
}

/// Delivers a presence stanza (with `from` set) to a local account: to one resource, or to
/// all available resources for a bare JID (RFC 6121 §8.5.2.1.2). XEP-0191: dropped if the
/// recipient blocks the sender, or for each resource the (local) sender blocks.
pub async fn deliver(server: &Arc<Server>, el: Element, bare: &str, resource: Option<&str>) {
    deliver_checked(server, el, bare, resource, true).await;
}

/// [`deliver`], with the sender's side of blocking checked or not: not only for the
/// unavailable presence that XEP-0191 §3.3 sends to a contact the user has just blocked.
async fn deliver_checked(
    server: &Arc<Server>,
    el: Element,
    bare: &str,
    resource: Option<&str>,
    sender_side: bool,
) {
    let from = el.attr("from").unwrap_or_default().to_owned();
    if blocking::blocks(server, bare, &from).await {
        return;
    }
    let sender = from.split_once('/').map_or(from.as_str(), |(b, _)| b);
    let targets = match resource {
        Some(r) => server.router.session(bare, r).into_iter().collect(),
        None => server
            .router
            .sessions(bare)
            .into_iter()
            .filter(|h| h.state.is_available())
            .collect::<Vec<_>>(),
    };
    for h in targets {
        if sender_side && blocking::blocks(server, sender, &h.full).await {
            continue;
        }
        let _ = server.router.deliver(&h, el.clone());
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
        send_to_contact(&server, p, &bare, &item.jid).await;
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
        ctx.to_self
            .extend(probe(&server, &bare, &full, &item.jid).await);
    }
    // RFC 6121 §3.1.3: subscription requests that arrived while the user was offline (only
    // what [`pending::kept`] keeps, also of requests stored before it kept less).
    for item in items.iter().filter(|i| i.pending_in) {
        if let Some(xml) = &item.pending_in_stanza
            && let Ok(p) = zorg_proto::parse_element(xml, server.limits)
        {
            ctx.to_self.push(pending::kept(&p));
        }
    }
    // XEP-0160: offline messages go to the first available resource with priority ≥ 0.
    if prio >= 0 {
        message::deliver_offline(ctx).await;
    }
}

/// Probes `contact` for the resource `full` of the local account `user` (RFC 6121 §4.3): a
/// remote contact gets a probe from the user's bare JID and answers later; a local one's
/// available resources are returned at once, for `full`. Nothing when either side blocks the
/// other (XEP-0191 §3.1).
async fn probe(server: &Arc<Server>, user: &str, full: &str, contact: &str) -> Vec<Element> {
    if blocking::blocks(server, user, contact).await {
        return Vec::new();
    }
    if let Some(domain) = remote_domain(server, contact) {
        let probe = Element::new("presence", ns::CLIENT)
            .with_attr("type", "probe")
            .with_attr("from", user)
            .with_attr("to", contact);
        crate::federation::send(server, probe, &domain);
        return Vec::new();
    }
    let mut out = Vec::new();
    if blocking::blocks(server, contact, full).await {
        return out;
    }
    for h in server.router.sessions(contact) {
        if blocking::blocks(server, user, &h.full).await {
            continue;
        }
        if let Some(mut p) = h.state.presence() {
            p.set_attr("from", h.full.as_str());
            p.set_attr("to", full);
            out.push(p);
        }
    }
    out
}

/// The domain of `jid` if it is not served here (the stanza goes over federation).
fn remote_domain(server: &Server, jid: &str) -> Option<String> {
    let j = Jid::new(jid).ok()?;
    let domain = j.domain().as_str();
    (!server.serves(domain)).then(|| domain.to_owned())
}

/// Sends a presence from the local account `user` to a contact's bare JID, here or over
/// federation; not to a contact the user blocks (XEP-0191 §3.1).
async fn send_to_contact(server: &Arc<Server>, p: Element, user: &str, contact: &str) {
    if let Some(domain) = remote_domain(server, contact) {
        // A remote contact's resources are not known here: the bare JID decides.
        if !blocking::blocks(server, user, contact).await {
            crate::federation::send(server, p, &domain);
        }
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
                send_to_contact(server, p, &bare, &item.jid).await;
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
        let mut p = el.clone();
        p.set_attr("to", to.as_str());
        send_presence(server, p, &to, true).await;
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
/// contact lost its subscription); not to a contact `owner` blocks, who had it at the block.
pub async fn send_unavailable_from_all(server: &Arc<Server>, owner: &str, contact: &str) {
    unavailable_from_all(server, owner, contact, true).await;
}

async fn unavailable_from_all(server: &Arc<Server>, owner: &str, contact: &str, check: bool) {
    for h in server.router.sessions(owner) {
        if h.state.is_available() {
            let p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", h.full.as_str())
                .with_attr("to", contact);
            send_presence(server, p, contact, check).await;
        }
    }
}

/// Current presence of every available resource of `owner` to `contact` (after approval or
/// unblocking), unless `owner` blocks `contact`.
async fn send_current_from_all(server: &Arc<Server>, owner: &str, contact: &str) {
    for h in server.router.sessions(owner) {
        if let Some(mut p) = h.state.presence() {
            p.set_attr("from", h.full.as_str());
            p.set_attr("to", contact);
            send_presence(server, p, contact, true).await;
        }
    }
}

/// Sends a presence from a local account (its `from`) to `to`, a JID here or elsewhere.
/// `check`: XEP-0191, not to an entity the sender blocks.
async fn send_presence(server: &Arc<Server>, p: Element, to: &str, check: bool) {
    let Ok(j) = Jid::new(to) else { return };
    if !server.serves(j.domain().as_str()) {
        let sender = p.attr("from").and_then(|f| Jid::new(f).ok());
        let sender = sender.map(|s| s.to_bare().to_string()).unwrap_or_default();
        if !check || !blocking::blocks(server, &sender, to).await {
            crate::federation::send(server, p, j.domain().as_str());
        }
        return;
    }
    if j.node().is_none() {
        return;
    }
    let res = j.resource().map(|r| r.to_string());
    deliver_checked(server, p, &j.to_bare().to_string(), res.as_deref(), check).await;
}
