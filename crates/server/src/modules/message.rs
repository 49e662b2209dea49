//! Messages (RFC 6121 §5 and §8.5): routing by type to bare and full JIDs, XEP-0160 offline
//! storage with XEP-0203 delay stamps, and XEP-0359 stanza ids on what is stored.
//!
//! Messages from JIDs not in the recipient's roster are delivered: care professionals must be
//! able to reach people they have never talked to. Only a block (XEP-0191) stops them.

use std::sync::Arc;

use time::OffsetDateTime;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::audit::{self, event::Delivery};
use crate::modules::mam::archiving;
use crate::modules::{Target, blocking, carbons, target};
use crate::server::Server;
use crate::session::{AfterFlush, Ctx};
use crate::storage::{AccountStore, OfflineStore, StorageError, new_id};

/// The message `type`, with unknown or missing values read as `normal` (RFC 6121 §5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// One-to-one chat.
    Chat,
    /// Error report.
    Error,
    /// Group chat (not served locally yet).
    Groupchat,
    /// Alert or notification; never stored.
    Headline,
    /// Standalone message.
    Normal,
}

impl MessageType {
    /// The type of `el`.
    pub fn of(el: &Element) -> MessageType {
        match el.attr("type") {
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            _ => MessageType::Normal,
        }
    }
}

/// A message from the client of `ctx`.
pub async fn from_client(ctx: &mut Ctx<'_>, mut el: Element, to: Option<Jid>) {
    let (bare, resource) = match target(ctx, &to) {
        Target::OwnAccount => (ctx.bare().to_owned(), None),
        Target::LocalBare(b) => (b, None),
        Target::LocalFull { bare, resource } => (bare, Some(resource)),
        Target::Server(_) => {
            // Nothing here reads messages sent to the server itself.
            if matches!(
                MessageType::of(&el),
                MessageType::Chat | MessageType::Normal
            ) {
                ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
            }
            return;
        }
        Target::Remote(domain) => {
            let contact = to.map(|j| j.to_bare().to_string()).unwrap_or_default();
            if let Some(err) = blocking::sender_blocks(ctx, &contact).await {
                if MessageType::of(&el) != MessageType::Error {
                    ctx.reply_error(&el, err);
                }
                return;
            }
            if !audit_accepted(ctx.server, &el, None).await {
                refuse_unaudited(ctx, &el);
                return;
            }
            copy_sent(ctx, &el);
            archive_sent(ctx, &mut el).await;
            if ctx.server.audit.is_enabled() {
                let to = el.attr("to").unwrap_or_default().to_owned();
                audit_delivered(ctx.server, &el, &to, Delivery::Forwarded).await;
            }
            crate::federation::send(ctx.server, el, &domain);
            return;
        }
    };
    if let Some(err) = blocking::sender_blocks(ctx, &bare).await {
        if MessageType::of(&el) != MessageType::Error {
            ctx.reply_error(&el, err);
        }
        return;
    }
    if !audit_accepted(ctx.server, &el, None).await {
        refuse_unaudited(ctx, &el);
        return;
    }
    copy_sent(ctx, &el);
    archive_sent(ctx, &mut el).await;
    let server = ctx.server.clone();
    // An error reply to a message carries no payload (RFC 6120 §8.3.1 allows leaving it out,
    // and echoing a body would copy it needlessly): keep only the attributes for it.
    let head = el.without_children();
    if let Err(err) = deliver_local(&server, el, &bare, resource.as_deref()).await
        && MessageType::of(&head) != MessageType::Error
    {
        audit_bounced(&server, &head, err.condition).await;
        ctx.reply_error(&head, err);
    }
}

/// NEN 7513: records `el` as taken for delivery. `false` when the audit log refuses it: the
/// message must then not be delivered. `peer` is the server it came from, if any.
pub async fn audit_accepted(server: &Arc<Server>, el: &Element, peer: Option<&str>) -> bool {
    !server.audit.is_enabled()
        || server
            .audit
            .record(audit::message::accepted(el, peer))
            .await
            .is_ok()
}

/// Records that `el` was handed on to `to`. A refusal here comes after the act; the audit
/// handle logs it, and the next message is refused.
async fn audit_delivered(server: &Arc<Server>, el: &Element, to: &str, how: Delivery) {
    if server.audit.is_enabled() {
        let _ = server
            .audit
            .record(audit::message::delivered(el, to, how))
            .await;
    }
}

/// Records that `el` bounced with `condition`.
pub async fn audit_bounced(server: &Arc<Server>, el: &Element, condition: StanzaCondition) {
    if server.audit.is_enabled() {
        let _ = server
            .audit
            .record(audit::message::bounced(el, condition))
            .await;
    }
}

/// The error for a message refused because it could not be audited.
pub fn unaudited() -> StanzaError {
    StanzaError::new(StanzaCondition::InternalServerError)
        .with_text("the server cannot record messages at the moment, so it did not send this one; try again later")
}

fn refuse_unaudited(ctx: &mut Ctx<'_>, el: &Element) {
    if MessageType::of(el) != MessageType::Error {
        ctx.reply_error(el, unaudited());
    }
}

/// XEP-0280: copies of what this session sends, for the account's other carbons-enabled
/// sessions.
fn copy_sent(ctx: &Ctx<'_>, el: &Element) {
    if carbons::eligible(el) && carbons::anyone(ctx.server, ctx.bare()) {
        carbons::sent(ctx.server, &ctx.sess.handle, el);
    }
}

/// XEP-0313: what the account sends goes into its own archive (the recipient's archive is
/// written on delivery).
async fn archive_sent(ctx: &Ctx<'_>, el: &mut Element) {
    let peer = el.attr("to").unwrap_or(ctx.bare()).to_owned();
    Box::pin(archiving::archive(ctx.server, ctx.bare(), &peer, true, el)).await;
}

/// Delivers a message whose `from` is set to the local account `bare` (or its `resource`),
/// applying RFC 6121 §8.5.2 / §8.5.3, archiving it (XEP-0313) and storing it offline when
/// nobody can take it. Returns the error to bounce to the sender, if any.
pub async fn deliver_local(
    server: &Arc<Server>,
    mut el: Element,
    bare: &str,
    resource: Option<&str>,
) -> Result<(), StanzaError> {
    let from = el.attr("from").unwrap_or_default().to_owned();
    if blocking::blocks(server, bare, &from).await {
        // XEP-0191 §3.3: the blocked sender learns only that the service is unavailable.
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    // XEP-0359 §4: a stanza-id claimed to be from the recipient's archive cannot come from the
    // sender; remove it so clients never trust a forged one.
    el.retain_children(|c| !(c.is("stanza-id", ns::SID) && c.attr("by") == Some(bare)));
    // Archived before delivery, so that the stanza-id the recipient sees is the archive's.
    let archived = if archiving::archivable(&el) {
        Box::pin(archiving::archive(server, bare, &from, false, &mut el))
            .await
            .map(|(id, _)| id)
    } else {
        None
    };
    route_local(server, el, bare, resource, archived).await
}

/// Delivery after the checks and archiving of [`deliver_local`]. `archived` is the message's id
/// in `bare`'s archive, if it was archived: then an offline copy points at the archive entry
/// instead of storing the message twice.
async fn route_local(
    server: &Arc<Server>,
    mut el: Element,
    bare: &str,
    resource: Option<&str>,
    archived: Option<String>,
) -> Result<(), StanzaError> {
    let ty = MessageType::of(&el);
    // The envelope for the audit records of this delivery (attributes only).
    let audit_head = server.audit.is_enabled().then(|| el.without_children());
    // XEP-0280: the copy for the account's other carbons-enabled sessions, taken before
    // delivery (and only when someone could get one: the common case copies nothing).
    let carbon = (carbons::eligible(&el) && carbons::anyone(server, bare)).then(|| el.clone());
    carbons::strip_private(&mut el);
    if let Some(res) = resource {
        if let Some(h) = server.router.session(bare, res) {
            // A full JID that is connected gets the message even without presence.
            match server.router.deliver(&h, el) {
                Ok(()) => {
                    if let Some(a) = &audit_head {
                        audit_delivered(server, a, &h.full, Delivery::Session).await;
                    }
                    if let Some(c) = &carbon {
                        carbons::received(server, bare, c, &[h.conn_id]);
                    }
                    return Ok(());
                }
                Err(back) => el = back,
            }
        }
        // RFC 6121 §8.5.3.2.1: no such resource.
        match ty {
            MessageType::Normal | MessageType::Chat => {}
            MessageType::Groupchat => {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
            }
            MessageType::Headline | MessageType::Error => return Ok(()),
        }
    }
    let targets = server.router.message_targets(bare);
    if ty == MessageType::Groupchat {
        // RFC 6121 §8.5.2.1.1: groupchat to a bare JID is an error; rooms live elsewhere.
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    let n = targets.len();
    let mut delivered = false;
    // Who got the original, for carbons (empty, and unallocated, without them).
    let mut got = Vec::new();
    let mut undelivered = Some(el);
    for (i, h) in targets.iter().enumerate() {
        let Some(cur) = undelivered.take() else { break };
        let copy = if i + 1 < n {
            let c = cur.clone();
            undelivered = Some(cur);
            c
        } else {
            cur
        };
        match server.router.deliver(h, copy) {
            Ok(()) => {
                delivered = true;
                if let Some(a) = &audit_head {
                    audit_delivered(server, a, &h.full, Delivery::Session).await;
                }
                if carbon.is_some() {
                    got.push(h.conn_id);
                }
            }
            Err(back) => {
                if undelivered.is_none() {
                    undelivered = Some(back);
                }
            }
        }
    }
    if delivered && let Some(c) = &carbon {
        carbons::received(server, bare, c, &got);
    }
    match undelivered {
        Some(el) if !delivered => match ty {
            MessageType::Normal | MessageType::Chat => match archived {
                Some(id) => Box::pin(link_offline(server, bare, &id, &el)).await,
                None => Box::pin(store_offline(server, bare, el)).await,
            },
            // Headlines are not stored; errors to someone offline are dropped.
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Queues the archived message `id` for `bare`, who has no session to take it: stored once, in
/// the archive, and durable when this returns `Ok`.
async fn link_offline(
    server: &Arc<Server>,
    bare: &str,
    id: &str,
    el: &Element,
) -> Result<(), StanzaError> {
    let max = server.config.limits.max_offline_per_account;
    let r = server.storage.link_offline(bare, id, max).await;
    let r = offline_stored(server, bare, el, r);
    if r.is_ok() {
        audit_delivered(server, el, bare, Delivery::Stored).await;
    }
    r
}

/// Maps the result of storing an offline message, and notes the account as holding some.
fn offline_stored(
    server: &Arc<Server>,
    bare: &str,
    el: &Element,
    r: Result<(), StorageError>,
) -> Result<(), StanzaError> {
    match r {
        Ok(()) => {
            // After the insert is committed (see deliver_offline).
            let mut n = server.offline_hints.entry(bare.to_owned()).or_insert(0);
            *n = n.wrapping_add(1);
            // XEP-0357: wake the account's phones (never waits; see push::notify).
            crate::modules::push::notify(server, bare, el);
            Ok(())
        }
        Err(StorageError::QuotaExceeded) => {
            Err(StanzaError::new(StanzaCondition::ServiceUnavailable)
                .with_text("the recipient is offline and their offline storage is full"))
        }
        Err(StorageError::NotFound) => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        Err(e) => {
            tracing::error!(error = %e, "storing an offline message failed");
            Err(StanzaError::new(StanzaCondition::InternalServerError))
        }
    }
}

/// Stores a message for an account with no session to take it (XEP-0160), adding a
/// stanza-id (XEP-0359). Durable when this returns `Ok`. For messages that are not archived.
pub async fn store_offline(
    server: &Arc<Server>,
    bare: &str,
    mut el: Element,
) -> Result<(), StanzaError> {
    match server.storage.account_exists(bare).await {
        Ok(true) => {}
        Ok(false) => return Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        Err(e) => {
            tracing::error!(error = %e, "offline storage lookup failed");
            return Err(StanzaError::new(StanzaCondition::InternalServerError));
        }
    }
    let id = new_id();
    el.push_child(
        Element::new("stanza-id", ns::SID)
            .with_attr("id", id.as_str())
            .with_attr("by", bare),
    );
    let stamp = OffsetDateTime::now_utc();
    let ms = (stamp.unix_timestamp_nanos() / 1_000_000) as i64;
    let xml = el.to_xml(ns::CLIENT);
    let max = server.config.limits.max_offline_per_account;
    let r = server.storage.push_offline(bare, &id, &xml, ms, max).await;
    let r = offline_stored(server, bare, &el, r);
    if r.is_ok() {
        audit_delivered(server, &el, bare, Delivery::Stored).await;
    }
    r
}

/// A message that was queued for a session that ended before writing it: deliver it to the
/// account's other resources or store it, as if sent to the bare JID. It was checked and
/// archived on its way in; the stanza-id added then says where it is in the archive.
pub async fn reroute_undelivered(server: &Arc<Server>, el: Element) {
    let Some(bare) = el
        .attr("to")
        .and_then(|t| Jid::new(t).ok())
        .map(|j| j.to_bare().to_string())
    else {
        return;
    };
    let archived = el
        .children()
        .find(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(bare.as_str()))
        .and_then(|c| c.attr("id"))
        .map(str::to_owned);
    if let Err(e) = route_local(server, el, &bare, None, archived).await {
        tracing::debug!(
            condition = e.condition.as_str(),
            "undelivered message could not be rerouted"
        );
    }
}

/// XEP-0160: after initial presence with non-negative priority, write stored messages in
/// order, each with a XEP-0203 delay stamp; they are deleted once written.
pub async fn deliver_offline(ctx: &mut Ctx<'_>) {
    let bare = ctx.bare().to_owned();
    // Most logins find nothing stored: skip the query unless this account may hold messages.
    let Some(generation) = ctx.server.offline_hints.get(&bare).map(|g| *g) else {
        return;
    };
    let msgs = match ctx.server.storage.offline_messages(&bare).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "reading offline messages failed; they stay stored");
            return;
        }
    };
    let Some(last) = msgs.last().map(|m| m.seq) else {
        // Nothing stored: forget the account, unless a message was stored since the hint was
        // read. A store bumps the counter only after its insert is committed, so either that
        // insert was visible to the query above or the counter differs now (or the entry is
        // re-created by the bump).
        ctx.server
            .offline_hints
            .remove_if(&bare, |_, g| *g == generation);
        return;
    };
    let domain = ctx.domain().to_owned();
    for m in msgs {
        let mut el = match crate::storage::parse_stored(&m.stanza) {
            Ok(el) => el,
            Err(e) => {
                tracing::error!(error = %e, id = %m.id, "stored offline message is unreadable; skipped");
                continue;
            }
        };
        let stamp = crate::modules::datetime(m.stamp_unix_ms);
        el.push_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", domain.as_str())
                .with_attr("stamp", stamp)
                .with_text("Offline Storage"),
        );
        audit_delivered(ctx.server, &el, ctx.full(), Delivery::FromStorage).await;
        ctx.to_self.push(el);
    }
    ctx.after_flush.push(AfterFlush::DeleteOffline(last));
}
