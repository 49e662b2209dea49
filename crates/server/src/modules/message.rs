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
use crate::router::Refused;
use crate::server::Server;
use crate::session::Ctx;
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
///
/// The sender's archive copy is prepared before delivery and queued only once the message was
/// delivered, stored or handed to another server: a message that bounces is archived nowhere.
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
            let Some(sent) = accept(ctx, &mut el).await else {
                return;
            };
            copy_sent(ctx, &el);
            if let Some(p) = sent {
                Box::pin(archiving::commit(ctx.server, p)).await;
            }
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
    let Some(sent) = accept(ctx, &mut el).await else {
        return;
    };
    copy_sent(ctx, &el);
    let server = ctx.server.clone();
    // An error reply to a message carries no payload (RFC 6120 §8.3.1 allows leaving it out,
    // and echoing a body would copy it needlessly): keep only the attributes for it.
    let head = el.without_children();
    let r = deliver_checked(&server, el, &bare, resource.as_deref()).await;
    let stalled = Stalled {
        routing: None,
        bare,
        resource,
        sent,
        head,
        until: tokio::time::Instant::now() + STALL_MAX,
    };
    ctx.sess.stalled = settle(&server, stalled, r, ctx.to_self).await;
}

/// How long a message may wait for room in its recipient's queue before it bounces.
const STALL_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// A message from this session's client that its recipient's session has no room for yet:
/// the recipient is reading more slowly than the sender writes. The sender's session stops
/// reading from its client until the message fits (or [`STALL_MAX`] passes, and it bounces):
/// the flood slows down to the reader's pace, nobody else's messages are crowded out, and the
/// reader is not disconnected for being slow. See [`retry_stalled`].
pub struct Stalled {
    /// The message as it was routed, with its recipient copy and carbon; `None` before the
    /// first attempt.
    routing: Option<Routing>,
    bare: String,
    resource: Option<String>,
    sent: Option<archiving::Prepared>,
    head: Element,
    until: tokio::time::Instant,
}

/// What a message that found its recipient's queue full carries into the next attempt.
struct Routing {
    el: Element,
    carbon: Option<Element>,
    copy: Copy,
}

/// The outcome of an attempt for a message from this session's client: delivered (the
/// sender's archive copy is queued), bounced (the client gets the error), or still waiting.
async fn settle(
    server: &Arc<Server>,
    mut st: Stalled,
    r: Result<(), Undelivered>,
    to_self: &mut Vec<Element>,
) -> Option<Box<Stalled>> {
    let err = match r {
        Ok(()) => {
            if let Some(p) = st.sent {
                Box::pin(archiving::commit(server, p)).await;
            }
            return None;
        }
        Err(Undelivered::Busy(routing)) if tokio::time::Instant::now() < st.until => {
            st.routing = Some(*routing);
            return Some(Box::new(st));
        }
        Err(Undelivered::Busy(_)) => busy(),
        Err(Undelivered::Error(e)) => e,
    };
    if MessageType::of(&st.head) != MessageType::Error {
        audit_bounced(server, &st.head, err.condition).await;
        if let Some(r) = err.reply_to(&st.head) {
            to_self.push(r);
        }
    }
    None
}

/// The session of a stalled message ends: it is delivered, or stored offline when its
/// recipient's sessions are still busy, as a message rerouted from an ended session is.
pub async fn flush_stalled(server: &Arc<Server>, mut st: Box<Stalled>) {
    let Some(Routing { el, carbon, copy }) = st.routing.take() else {
        return;
    };
    let r = route_prepared(
        server,
        el,
        carbon,
        &st.bare,
        st.resource.as_deref(),
        copy,
        true,
    )
    .await;
    let mut nowhere = Vec::new();
    // Nobody reads this session's replies any more; the audit trail records a bounce.
    settle(
        server,
        Stalled {
            until: tokio::time::Instant::now(),
            ..*st
        },
        r,
        &mut nowhere,
    )
    .await;
}

/// Tries a stalled message again (see [`Stalled`]); `Some` while it still waits.
pub async fn retry_stalled(
    server: &Arc<Server>,
    mut st: Box<Stalled>,
    to_self: &mut Vec<Element>,
) -> Option<Box<Stalled>> {
    let Routing { el, carbon, copy } = st.routing.take()?;
    let r = route_prepared(
        server,
        el,
        carbon,
        &st.bare,
        st.resource.as_deref(),
        copy,
        false,
    )
    .await;
    settle(server, *st, r, to_self).await
}

/// The checks every message from a client passes before it goes anywhere: storage that can
/// be written (when archiving), the audit trail's "accepted" record, and the sender's archive
/// copy prepared. `None` when the message was refused (the client has its error).
async fn accept(ctx: &mut Ctx<'_>, el: &mut Element) -> Option<Option<archiving::Prepared>> {
    if ctx.server.config.archive.enabled && ctx.server.storage.is_failing() {
        if MessageType::of(el) != MessageType::Error {
            ctx.reply_error(el, unstored());
        }
        return None;
    }
    if !audit_accepted(ctx.server, el, None).await {
        refuse_unaudited(ctx, el);
        return None;
    }
    let peer = el.attr("to").unwrap_or(ctx.bare()).to_owned();
    match Box::pin(archiving::prepare(ctx.server, ctx.bare(), &peer, true, el)).await {
        Ok(p) => Some(p),
        Err(archiving::Unaudited) => {
            refuse_unaudited(ctx, el);
            None
        }
    }
}

/// The error for a message refused because storage cannot be written at the moment.
pub fn unstored() -> StanzaError {
    StanzaError::new(StanzaCondition::ResourceConstraint).with_text(
        "the server cannot store messages at the moment, so it did not send this one; try again later",
    )
}

/// The error for a message refused because the recipient's session holds all it may queue
/// from this sender: it is reading more slowly than the sender writes.
fn busy() -> StanzaError {
    StanzaError::new(StanzaCondition::ResourceConstraint).with_text(
        "the recipient is not reading messages as fast as you send them; wait and send again",
    )
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

/// Delivers a message whose `from` is set to the local account `bare` (or its `resource`),
/// applying RFC 6121 §8.5.2 / §8.5.3, archiving it (XEP-0313) and storing it offline when
/// nobody can take it. Returns the error to bounce to the sender, if any; a message that
/// bounces is not archived.
pub async fn deliver_local(
    server: &Arc<Server>,
    el: Element,
    bare: &str,
    resource: Option<&str>,
) -> Result<(), StanzaError> {
    match deliver_checked(server, el, bare, resource).await {
        Ok(()) => Ok(()),
        Err(Undelivered::Error(e)) => Err(e),
        Err(Undelivered::Busy(_)) => Err(busy()),
    }
}

/// Why a message was not delivered.
enum Undelivered {
    /// Bounce it with this error.
    Error(StanzaError),
    /// The sessions that should get it have no room for it now (see [`Stalled`]).
    Busy(Box<Routing>),
}

impl From<StanzaError> for Undelivered {
    fn from(e: StanzaError) -> Self {
        Undelivered::Error(e)
    }
}

/// [`deliver_local`], telling a full queue apart from other reasons not to deliver.
async fn deliver_checked(
    server: &Arc<Server>,
    mut el: Element,
    bare: &str,
    resource: Option<&str>,
) -> Result<(), Undelivered> {
    let from = el.attr("from").unwrap_or_default().to_owned();
    if blocking::blocks(server, bare, &from).await {
        // XEP-0191 §3.3: the blocked sender learns only that the service is unavailable.
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable).into());
    }
    // XEP-0359 §4: a stanza-id claimed to be from the recipient's archive cannot come from the
    // sender; remove it so clients never trust a forged one.
    el.retain_children(|c| !(c.is("stanza-id", ns::SID) && c.attr("by") == Some(bare)));
    // Prepared before delivery, so that the stanza-id the recipient sees is the archive's;
    // queued once delivered or stored.
    let archive = if archiving::archivable(&el) {
        match Box::pin(archiving::prepare(server, bare, &from, false, &mut el)).await {
            Ok(Some(p)) => Copy::Prepared(Box::new(p)),
            Ok(None) => Copy::None,
            Err(archiving::Unaudited) => return Err(unaudited().into()),
        }
    } else {
        Copy::None
    };
    route_local(server, el, bare, resource, archive, false).await
}

/// The recipient's archive copy of a message being routed.
enum Copy {
    /// Not archived.
    None,
    /// To be archived once the message is delivered or stored.
    Prepared(Box<archiving::Prepared>),
    /// Archived already under this id (a message rerouted from a session that ended).
    Stored(String),
}

/// Delivery after the checks of [`deliver_local`]: the sessions that should get it, else the
/// offline store (with the archive copy, stored once, when it has one). A message `rerouted`
/// from a session that ended was acknowledged long ago: when the other sessions are busy it
/// goes to the offline store rather than back to its sender.
async fn route_local(
    server: &Arc<Server>,
    mut el: Element,
    bare: &str,
    resource: Option<&str>,
    archive: Copy,
    rerouted: bool,
) -> Result<(), Undelivered> {
    // XEP-0280: the copy for the account's other carbons-enabled sessions, taken before
    // delivery (and only when someone could get one: the common case copies nothing).
    let carbon = (carbons::eligible(&el) && carbons::anyone(server, bare)).then(|| el.clone());
    carbons::strip_private(&mut el);
    route_prepared(server, el, carbon, bare, resource, archive, rerouted).await
}

/// [`route_local`] once the carbon copy is taken (a retry of a stalled message starts here).
async fn route_prepared(
    server: &Arc<Server>,
    mut el: Element,
    carbon: Option<Element>,
    bare: &str,
    resource: Option<&str>,
    archive: Copy,
    rerouted: bool,
) -> Result<(), Undelivered> {
    let ty = MessageType::of(&el);
    // The envelope for the audit records of this delivery (attributes only).
    let audit_head = server.audit.is_enabled().then(|| el.without_children());
    let mut busy_seen = false;
    if let Some(res) = resource {
        if let Some(h) = server.router.session(bare, res) {
            // A full JID that is connected gets the message even without presence.
            match server.router.deliver_checked(&h, el) {
                Ok(()) => {
                    archived(server, archive).await;
                    if let Some(a) = &audit_head {
                        audit_delivered(server, a, &h.full, Delivery::Session).await;
                    }
                    if let Some(c) = &carbon {
                        carbons::received(server, bare, c, &[h.conn_id]);
                    }
                    return Ok(());
                }
                Err((back, Refused::Busy)) if rerouted => el = back,
                Err((el, Refused::Busy)) => {
                    return Err(Undelivered::Busy(Box::new(Routing {
                        el,
                        carbon,
                        copy: archive,
                    })));
                }
                Err((back, Refused::Gone)) => el = back,
            }
        }
        // RFC 6121 §8.5.3.2.1: no such resource.
        match ty {
            MessageType::Normal | MessageType::Chat => {}
            MessageType::Groupchat => {
                return Err(StanzaError::new(StanzaCondition::ServiceUnavailable).into());
            }
            MessageType::Headline | MessageType::Error => return Ok(()),
        }
    }
    let targets = server.router.message_targets(bare);
    if ty == MessageType::Groupchat {
        // RFC 6121 §8.5.2.1.1: groupchat to a bare JID is an error; rooms live elsewhere.
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable).into());
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
        match server.router.deliver_checked(h, copy) {
            Ok(()) => {
                delivered = true;
                if let Some(a) = &audit_head {
                    audit_delivered(server, a, &h.full, Delivery::Session).await;
                }
                if carbon.is_some() {
                    got.push(h.conn_id);
                }
            }
            Err((back, why)) => {
                busy_seen |= why == Refused::Busy;
                if undelivered.is_none() {
                    undelivered = Some(back);
                }
            }
        }
    }
    if delivered {
        archived(server, archive).await;
        if let Some(c) = &carbon {
            carbons::received(server, bare, c, &got);
        }
        return Ok(());
    }
    match undelivered {
        // Sessions that are there but hold all they may from this sender: the sender waits
        // and sends again (the offline store is for accounts nobody is reading).
        Some(el) if busy_seen && !rerouted => Err(Undelivered::Busy(Box::new(Routing {
            el,
            carbon,
            copy: archive,
        }))),
        Some(el) => match ty {
            MessageType::Normal | MessageType::Chat => match archive {
                Copy::Prepared(p) => Box::pin(store_archived(server, bare, *p, &el)).await,
                Copy::Stored(id) => Box::pin(link_offline(server, bare, &id, &el)).await,
                Copy::None => Box::pin(store_offline(server, bare, el)).await,
            }
            .map_err(Undelivered::Error),
            // Headlines are not stored; errors to someone offline are dropped.
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

/// The message was delivered to a session: its archive copy is queued.
async fn archived(server: &Arc<Server>, archive: Copy) {
    if let Copy::Prepared(p) = archive {
        Box::pin(archiving::commit(server, *p)).await;
    }
}

/// Archives a message for `bare`, who has no session to take it, and stores it offline as a
/// pointer to the archive entry: both or neither, durable when this returns `Ok`.
async fn store_archived(
    server: &Arc<Server>,
    bare: &str,
    p: archiving::Prepared,
    el: &Element,
) -> Result<(), StanzaError> {
    let max = server.config.limits.max_offline_per_account;
    let r = archiving::commit_offline(server, p, max).await;
    let r = offline_stored(server, bare, el, r);
    if r.is_ok() {
        audit_delivered(server, el, bare, Delivery::Stored).await;
    }
    r
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
        Err(StorageError::Unavailable) => Err(unstored()),
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
/// archived on its way in; the stanza-id added then says where it is in the archive. When it
/// can go nowhere (the offline store is full), it bounces to its sender and its archive
/// entry is removed: it was acknowledged to the sender as handled, so it is either delivered,
/// stored or reported back, never dropped.
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
    let head = el.without_children();
    let copy = match &archived {
        Some(id) => Copy::Stored(id.clone()),
        None => Copy::None,
    };
    let r = route_local(server, el, &bare, None, copy, true).await;
    if let Err(e) = r.map_err(|u| match u {
        Undelivered::Error(e) => e,
        Undelivered::Busy(_) => busy(),
    }) {
        tracing::info!(
            account = %bare,
            condition = e.condition.as_str(),
            "a message for a session that ended could not be rerouted; it bounces"
        );
        if let Some(id) = archived
            && let Err(e) = server.storage.delete_archived(&bare, &id).await
        {
            tracing::warn!(error = %e, "could not remove a bounced message from the archive");
        }
        if MessageType::of(&head) != MessageType::Error {
            audit_bounced(server, &head, e.condition).await;
            bounce(server, &head, e);
        }
    }
}

/// Sends `err` back to the sender of `el`: a local session or a remote server. Nothing is
/// sent to a local sender who has no session any more (errors are not stored).
pub fn bounce(server: &Arc<Server>, el: &Element, err: StanzaError) {
    let Some(reply) = err.reply_to(el) else {
        return;
    };
    let Some(to) = reply.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    let domain = to.domain().as_str();
    if !server.serves(domain) {
        crate::federation::send(server, reply, domain);
        return;
    }
    let (Some(_), Some(res)) = (to.node(), to.resource()) else {
        return;
    };
    let bare = to.to_bare().to_string();
    if let Some(h) = server.router.session(&bare, res.as_str()) {
        let _ = server.router.deliver(&h, reply);
    }
}

/// XEP-0160: after initial presence with non-negative priority, the stored messages are
/// replayed in order, each with a XEP-0203 delay stamp. The session pages through them (see
/// [`offline_page`]), paced by the client's XEP-0198 acknowledgements when it has enabled
/// them, and a stored message is deleted only once the client acknowledged it (or, without
/// XEP-0198, once it was written to the connection).
pub async fn deliver_offline(ctx: &mut Ctx<'_>) {
    let bare = ctx.bare();
    // Most logins find nothing stored: skip the query unless this account may hold messages.
    let Some(generation) = ctx.server.offline_hints.get(bare).map(|g| *g) else {
        return;
    };
    if ctx.sess.offline.is_none() {
        ctx.sess.offline = Some(OfflineReplay {
            after: 0,
            generation,
            started: false,
        });
    }
}

/// Where a session is in replaying its account's offline messages.
#[derive(Debug, Clone, Copy)]
pub struct OfflineReplay {
    /// The last seq written so far.
    pub after: i64,
    /// The account's offline hint when the replay began (see `Server::offline_hints`).
    generation: u64,
    /// Whether a page was read already.
    started: bool,
}

/// The next page of `bare`'s offline messages after `replay.after`, at most `limit`, each with
/// its seq and a XEP-0203 delay stamp, oldest first; `replay` moves past them. `None` when the
/// replay is over. Unreadable messages are logged and skipped.
pub async fn offline_page(
    server: &Arc<Server>,
    full: &str,
    replay: &mut OfflineReplay,
    limit: u32,
) -> Result<Option<Vec<(i64, Element)>>, StorageError> {
    let bare = full.split_once('/').map_or(full, |(b, _)| b);
    let domain = bare.rsplit_once('@').map_or(bare, |(_, d)| d);
    let page = server
        .storage
        .offline_page(bare, replay.after, limit)
        .await?;
    let Some(last) = page.last_seq else {
        if !replay.started {
            // Nothing stored: forget the account, unless a message was stored since the hint
            // was read. A store bumps the counter only after its insert is committed, so
            // either that insert was visible to the query above or the counter differs now
            // (or the entry is re-created by the bump).
            let g = replay.generation;
            server.offline_hints.remove_if(bare, |_, n| *n == g);
        }
        return Ok(None);
    };
    replay.started = true;
    replay.after = last;
    let mut out = Vec::with_capacity(page.messages.len());
    for m in page.messages {
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
                .with_attr("from", domain)
                .with_attr("stamp", stamp)
                .with_text("Offline Storage"),
        );
        audit_delivered(server, &el, full, Delivery::FromStorage).await;
        out.push((m.seq, el));
    }
    Ok(Some(out))
}
