//! XEP-0357 Push Notifications: an account's mobile clients register app servers ("XMPP Push
//! Services"); while the account has no session to take a message, the server publishes a
//! notification to each of them so that the phone wakes up and connects.
//!
//! What leaves the care network is the minimum: `message-count` only. `last-message-sender`
//! only with `[push] include_sender`; a message body never. The app server's publish-options
//! (its credentials, typically) are sent back as given at enable.
//!
//! A burst of messages gives one notification per registration and `[push] min_interval`: the
//! first message notifies at once, those arriving within the interval are counted into one more
//! at its end. An error of type cancel or auth from the app server disables that registration
//! (§7.1), except `remote-server-not-found`, which this server makes up itself when a link fails
//! and says nothing about the app server's wishes.
//!
//! Where the app server lives: a remote JID gets the publish over federation; a local full JID
//! (a connected session acting as app server) through the router, dropped with a log when that
//! session is not connected (a restarting app server must not lose every registration); a local
//! domain or bare JID is no pubsub service, so the publish is answered here as that entity
//! would, with `service-unavailable`, which disables the registration.

mod request;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, ErrorType, StanzaCondition, StanzaError, ns};

use request::{MAX_FORM, bad};
pub use request::{PUBLISH_OPTIONS, Request, SUMMARY};

use crate::server::Server;
use crate::session::Ctx;
use crate::storage::{OfflineStore, PushRegistration, PushStore, new_id};

/// Publishes whose answers are awaited (over all accounts). When full, those older than
/// [`PENDING_TTL`] are forgotten; if none is, the new publish goes out unawaited. Either way an
/// answer that is not awaited is ignored, nothing worse.
const MAX_PENDING: usize = 10_000;
/// After this an unanswered publish is forgotten when room is needed.
const PENDING_TTL: Duration = Duration::from_secs(300);
/// Ids of our publishes start with this, so that other answers are told apart without a lookup.
const ID_PREFIX: &str = "push-";

// ---------------------------------------------------------------------------------------------
// State: bursts (the rate bound) and publishes awaiting an answer

/// Messages that arrived for an account since its last notification.
#[derive(Debug)]
struct Burst {
    waiting: u32,
    /// The last sender's bare JID, kept only with `include_sender`.
    sender: Option<String>,
}

/// A publish sent and not yet answered.
#[derive(Debug)]
struct Pending {
    owner: String,
    service: String,
    node: String,
    sent: Instant,
}

/// Push state shared by the whole server (one per [`Server`]).
#[derive(Debug, Default)]
pub struct PushState {
    /// Accounts with a notification task running: at most one each, which ends when an interval
    /// passes without messages. So the map holds only accounts notified in the last interval.
    bursts: DashMap<String, Burst>,
    /// Our publishes by IQ id, to act on the app server's answer. Bounded by [`MAX_PENDING`].
    pending: DashMap<String, Pending>,
}

impl PushState {
    /// Counts a message for `bare`; true when no task runs for it yet (the caller starts one).
    fn arrive(&self, bare: &str, sender: Option<String>) -> bool {
        match self.bursts.entry(bare.to_owned()) {
            Entry::Occupied(mut e) => {
                let b = e.get_mut();
                b.waiting = b.waiting.saturating_add(1);
                if sender.is_some() {
                    b.sender = sender;
                }
                false
            }
            Entry::Vacant(e) => {
                e.insert(Burst { waiting: 1, sender });
                true
            }
        }
    }

    /// What arrived since the last notification, resetting the count.
    fn take(&self, bare: &str) -> (u32, Option<String>) {
        match self.bursts.get_mut(bare) {
            Some(mut b) => (std::mem::take(&mut b.waiting), b.sender.take()),
            None => (0, None),
        }
    }

    /// Ends the burst if nothing arrived since the last [`PushState::take`].
    fn end_if_quiet(&self, bare: &str) -> bool {
        self.bursts.remove_if(bare, |_, b| b.waiting == 0).is_some()
    }

    fn track(&self, id: String, p: Pending) {
        if self.pending.len() >= MAX_PENDING {
            let now = Instant::now();
            self.pending
                .retain(|_, p| now.duration_since(p.sent) < PENDING_TTL);
            if self.pending.len() >= MAX_PENDING {
                tracing::debug!(
                    "too many unanswered push notifications; this answer is not awaited"
                );
                return;
            }
        }
        self.pending.insert(id, p);
    }

    /// How many publishes await an answer (for tests and metrics).
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// `<enable/>` or `<disable/>` from the account's own client (IQ set to its bare JID).
pub async fn handle_iq(ctx: &mut Ctx<'_>, el: &Element) {
    if !ctx.server.config.push.enabled {
        ctx.reply_error(el, StanzaError::new(StanzaCondition::ServiceUnavailable));
        return;
    }
    if el.attr("type") != Some("set") {
        ctx.reply_error(el, bad("enable and disable are IQ sets"));
        return;
    }
    let Some(p) = el.children().next() else {
        return;
    };
    let req = match Request::parse(p) {
        Ok(r) => r,
        Err(e) => {
            ctx.reply_error(el, e);
            return;
        }
    };
    let server = ctx.server.clone();
    let owner = ctx.bare().to_owned();
    let r = match req {
        Request::Enable {
            service,
            node,
            options,
        } => enable(&server, &owner, service, node, options).await,
        Request::Disable { service, node } => server
            .storage
            .disable_push(&owner, &service, node.as_deref())
            .await
            .map(|_| ())
            .map_err(internal),
    };
    ctx.answer(el, r.map(|()| None));
}

fn internal(e: crate::storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "storing a push registration failed");
    StanzaError::new(StanzaCondition::InternalServerError)
}

async fn enable(
    server: &Arc<Server>,
    owner: &str,
    service: String,
    node: String,
    options: Option<Element>,
) -> Result<(), StanzaError> {
    reachable(server, &service)?;
    let reg = PushRegistration {
        service,
        node,
        options: options.map(|o| o.to_xml(ns::CLIENT)),
    };
    let max = server.config.push.max_registrations;
    let replaced = server
        .storage
        .enable_push(owner, &reg, max)
        .await
        .map_err(internal)?;
    if replaced > 0 {
        tracing::info!(
            replaced,
            "push registration limit reached; the oldest registration was replaced"
        );
    }
    Ok(())
}

/// Whether publishes to `service` could ever leave this server: a remote app server needs
/// federation. Told at enable, rather than found out at every notification.
fn reachable(server: &Server, service: &str) -> Result<(), StanzaError> {
    let domain = Jid::new(service)
        .map(|j| j.domain().to_string())
        .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))?;
    if server.serves(&domain) || server.federation.is_some() {
        Ok(())
    } else {
        Err(StanzaError::new(StanzaCondition::RemoteServerNotFound)
            .with_text("this server does not federate, so it cannot reach that push service"))
    }
}

/// Whether a message is worth waking a phone for: one with a body or an end-to-end encrypted
/// payload, not a chat state, receipt or marker alone.
fn worth_notifying(msg: &Element) -> bool {
    msg.children().any(|c| {
        c.is("body", ns::CLIENT)
            || c.is("encrypted", "eu.siacs.conversations.axolotl")
            || c.is("encrypted", "urn:xmpp:omemo:2")
            || c.is("openpgp", "urn:xmpp:openpgp:0")
    })
}

/// A message for the local account `bare` was kept for later: stored offline (called by
/// `message::store_offline` once the message is durable) or queued for a hibernating
/// session (XEP-0198). Notifies the account's app servers, within the rate bound. Never waits:
/// the storage reads and sends run in a task of their own.
pub fn notify(server: &Arc<Server>, bare: &str, msg: &Element) {
    let config = &server.config.push;
    if !config.enabled || !worth_notifying(msg) {
        return;
    }
    let sender = config
        .include_sender
        .then(|| msg.attr("from").and_then(|f| Jid::new(f).ok()))
        .flatten()
        .map(|j| j.to_bare().to_string());
    if server.push.arrive(bare, sender) {
        tokio::spawn(burst(server.clone(), bare.to_owned()));
    }
}

/// The account's notification task: notifies now, then once per interval while messages keep
/// arriving, then ends.
async fn burst(server: Arc<Server>, bare: String) {
    let interval = server.config.push.min_interval.get();
    let mut shutdown = server.shutdown.clone();
    loop {
        let (count, sender) = server.push.take(&bare);
        let registered = publish_all(&server, &bare, count, sender).await;
        // Without registrations there is nothing to pace: end now, unless a message came in
        // while the registrations were read.
        if !registered && server.push.end_if_quiet(&bare) {
            return;
        }
        if registered {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => {
                    server.push.bursts.remove(&bare);
                    return;
                }
            }
            if server.push.end_if_quiet(&bare) {
                return;
            }
        }
    }
}

/// Publishes to every registration of `bare`; false when it has none.
async fn publish_all(server: &Arc<Server>, bare: &str, count: u32, sender: Option<String>) -> bool {
    let regs = match server.storage.push_registrations(bare).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reading push registrations failed; no notification sent");
            return false;
        }
    };
    if regs.is_empty() {
        return false;
    }
    // "The number of unread or undelivered messages": what is stored, or at least what arrived
    // since the last notification (messages queued for a hibernating session are not stored).
    let stored = server.storage.offline_count(bare).await.unwrap_or(0);
    let count = stored.max(u64::from(count));
    for reg in &regs {
        publish(server, bare, reg, count, sender.as_deref());
    }
    true
}

/// The publish IQ for one registration (§7).
fn publish_iq(
    bare: &str,
    reg: &PushRegistration,
    id: &str,
    count: u64,
    sender: Option<&str>,
) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    let mut summary = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY))
        .with_child(field("message-count", &count.to_string()));
    if let Some(s) = sender {
        summary.push_child(field("last-message-sender", s));
    }
    let mut pubsub = Element::new("pubsub", ns::PUBSUB).with_child(
        Element::new("publish", ns::PUBSUB)
            .with_attr("node", reg.node.as_str())
            .with_child(
                Element::new("item", ns::PUBSUB)
                    .with_child(Element::new("notification", ns::PUSH).with_child(summary)),
            ),
    );
    if let Some(form) = reg.options.as_deref().and_then(stored_form) {
        pubsub.push_child(Element::new("publish-options", ns::PUBSUB).with_child(form));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("from", bare)
        .with_attr("to", reg.service.as_str())
        .with_child(pubsub)
}

/// A stored publish-options form (written by [`handle_iq`], so within [`MAX_FORM`]).
fn stored_form(xml: &str) -> Option<Element> {
    let limits = zorg_proto::Limits {
        max_stanza_size: MAX_FORM * 2,
        max_depth: 8,
        max_attributes: 8,
        max_elements: 1024,
    };
    match zorg_proto::parse_element(xml, limits) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!(error = %e, "a stored publish-options form is unreadable; sent without it");
            None
        }
    }
}

/// Sends one publish (see the module docs for where it goes).
fn publish(
    server: &Arc<Server>,
    bare: &str,
    reg: &PushRegistration,
    count: u64,
    sender: Option<&str>,
) {
    let Ok(to) = Jid::new(&reg.service) else {
        tracing::warn!("a stored push service JID is malformed; skipped");
        return;
    };
    let id = format!("{ID_PREFIX}{}", new_id());
    let iq = publish_iq(bare, reg, &id, count, sender);
    let pending = Pending {
        owner: bare.to_owned(),
        service: reg.service.clone(),
        node: reg.node.clone(),
        sent: Instant::now(),
    };
    let domain = to.domain().as_str();
    if !server.serves(domain) {
        server.push.track(id, pending);
        // Non-blocking: queued on the link, or bounced back to us (handled in `response`).
        crate::federation::send(server, iq, domain);
        return;
    }
    match (to.node(), to.resource()) {
        (Some(_), Some(res)) => {
            let Some(h) = server
                .router
                .session(&to.to_bare().to_string(), res.as_str())
            else {
                tracing::debug!("the local push service is not connected; notification dropped");
                return;
            };
            server.push.track(id.clone(), pending);
            if server.router.deliver(&h, iq).is_err() {
                server.push.pending.remove(&id);
                tracing::debug!("the local push service's queue is full; notification dropped");
            }
        }
        _ => {
            // No local domain or account is a pubsub service: answer as it would.
            server.push.track(id, pending);
            if let Some(reply) = StanzaError::new(StanzaCondition::ServiceUnavailable).reply_to(&iq)
            {
                response(server, bare, &reply);
            }
        }
    }
}

/// The error type and condition of an error stanza.
fn error_of(el: &Element) -> (Option<ErrorType>, String) {
    let Some(err) = el.get_child("error", ns::CLIENT) else {
        return (None, String::new());
    };
    let ty = match err.attr("type") {
        Some("auth") => Some(ErrorType::Auth),
        Some("cancel") => Some(ErrorType::Cancel),
        Some("continue") => Some(ErrorType::Continue),
        Some("modify") => Some(ErrorType::Modify),
        Some("wait") => Some(ErrorType::Wait),
        _ => None,
    };
    let cond = err
        .children()
        .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    (ty, cond)
}

/// An IQ result or error addressed to the local account's bare JID `bare`. When it answers one
/// of our publishes, from the app server it went to, it is handled here and `true` returned;
/// anything else is left to the caller.
pub fn response(server: &Arc<Server>, bare: &str, el: &Element) -> bool {
    let Some(id) = el.attr("id").filter(|i| i.starts_with(ID_PREFIX)) else {
        return false;
    };
    let from = el
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .map(|j| j.to_string())
        .unwrap_or_default();
    // Only the app server the publish went to may answer it: nobody else can disable a
    // registration by guessing an id.
    let Some((_, p)) = server
        .push
        .pending
        .remove_if(id, |_, p| p.owner == bare && p.service == from)
    else {
        return false;
    };
    match el.attr("type") {
        Some("result") => tracing::debug!("push notification accepted"),
        Some("error") => {
            let (ty, condition) = error_of(el);
            let permanent = matches!(ty, Some(ErrorType::Cancel | ErrorType::Auth))
                && condition != StanzaCondition::RemoteServerNotFound.as_str();
            let kind = ty.map(ErrorType::as_str).unwrap_or("none");
            if permanent {
                // Which account and app server is user data: the log says only why.
                tracing::info!(
                    error_type = kind,
                    condition = condition.as_str(),
                    "a push service refused a notification; its registration is disabled"
                );
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = server
                        .storage
                        .disable_push(&p.owner, &p.service, Some(&p.node))
                        .await
                    {
                        tracing::error!(error = %e, "disabling a push registration failed");
                    }
                });
            } else {
                tracing::debug!(
                    error_type = kind,
                    condition = condition.as_str(),
                    "a push service failed a notification; the registration is kept"
                );
            }
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::framing::{Limits, parse_element};

    fn el(xml: &str) -> Element {
        parse_element(xml, Limits::default()).unwrap()
    }

    const OPTS: &str = "<x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

    #[test]
    fn the_notification_says_how_many_and_nothing_else() {
        let reg = PushRegistration {
            service: "push.example".into(),
            node: "n1".into(),
            options: Some(el(OPTS).to_xml(ns::CLIENT)),
        };
        let iq = publish_iq("alice@localhost", &reg, "push-1", 3, None);
        assert_eq!(iq.attr("from"), Some("alice@localhost"));
        assert_eq!(iq.attr("to"), Some("push.example"));
        let pubsub = iq.get_child("pubsub", ns::PUBSUB).unwrap();
        let publish = pubsub.get_child("publish", ns::PUBSUB).unwrap();
        assert_eq!(publish.attr("node"), Some("n1"));
        let form = publish
            .get_child("item", ns::PUBSUB)
            .and_then(|i| i.get_child("notification", ns::PUSH))
            .and_then(|n| n.get_child("x", ns::DATA_FORMS))
            .unwrap();
        let vars: Vec<_> = form.children().filter_map(|f| f.attr("var")).collect();
        assert_eq!(vars, ["FORM_TYPE", "message-count"]);
        let count = form.children().nth(1).unwrap();
        assert_eq!(
            count.get_child("value", ns::DATA_FORMS).unwrap().text(),
            "3"
        );
        let opts = pubsub
            .get_child("publish-options", ns::PUBSUB)
            .and_then(|o| o.get_child("x", ns::DATA_FORMS))
            .unwrap();
        assert_eq!(opts, &el(OPTS));
        let with_sender = publish_iq("alice@localhost", &reg, "push-2", 1, Some("bob@localhost"));
        assert!(
            with_sender
                .to_xml(ns::CLIENT)
                .contains("last-message-sender")
        );
    }

    #[test]
    fn which_messages_wake_a_phone() {
        assert!(worth_notifying(&el(
            "<message xmlns='jabber:client'><body>x</body></message>"
        )));
        assert!(worth_notifying(&el(
            "<message xmlns='jabber:client'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"
        )));
        assert!(!worth_notifying(&el(
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
    }

    #[test]
    fn a_burst_is_counted_and_ends_when_quiet() {
        let s = PushState::default();
        assert!(s.arrive("a@x", None));
        assert!(!s.arrive("a@x", Some("b@x".into())));
        assert_eq!(s.take("a@x"), (2, Some("b@x".into())));
        assert!(!s.arrive("a@x", None));
        assert!(!s.end_if_quiet("a@x"));
        assert_eq!(s.take("a@x"), (1, None));
        assert!(s.end_if_quiet("a@x"));
        assert!(s.arrive("a@x", None));
    }
}
