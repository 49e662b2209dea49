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

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, ErrorType, StanzaCondition, StanzaError, ns};

use crate::server::Server;
use crate::session::Ctx;
use crate::storage::{OfflineStore, PushRegistration, PushStore, new_id};

/// FORM_TYPE of the form an app server asks to get back with every publish (§5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// FORM_TYPE of the summary inside a notification (§7).
pub const SUMMARY: &str = "urn:xmpp:push:summary";

/// RFC 7622 §3.1: three parts of at most 1023 bytes and two separators.
const MAX_JID: usize = 3071;
/// A node is an opaque token from the app server; real ones are tens of bytes.
const MAX_NODE: usize = 1024;
/// The serialised publish-options form, stored per registration and sent with each publish.
const MAX_FORM: usize = 4096;
/// Fields in a publish-options form, and values per field.
const MAX_FIELDS: usize = 32;
const MAX_VALUES: usize = 16;
/// Publishes whose answers are awaited (over all accounts). Beyond this the oldest answers are
/// forgotten first: an answer that comes too late is then ignored, nothing worse.
const MAX_PENDING: usize = 10_000;
/// After this an unanswered publish is forgotten when room is needed.
const PENDING_TTL: Duration = Duration::from_secs(300);
/// Ids of our publishes start with this, so that other answers are told apart without a lookup.
const ID_PREFIX: &str = "push-";

// ---------------------------------------------------------------------------------------------
// The protocol: <enable/> and <disable/> (§5, §6)

/// A request from the account's own client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `<enable jid node>` with an optional publish-options form.
    Enable {
        /// The app server's JID, normalised.
        service: String,
        /// The node it provisioned.
        node: String,
        /// The sanitised publish-options form (`<x type='submit'>` with fields and values only).
        options: Option<Element>,
    },
    /// `<disable jid [node]>`: without node, every node of that app server.
    Disable {
        /// The app server's JID, normalised.
        service: String,
        /// One node, or all.
        node: Option<String>,
    },
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::BadRequest).with_text(text)
}

/// Refuses attributes other than `allowed` (namespaced ones included).
fn only_attrs(el: &Element, allowed: &[&str]) -> Result<(), StanzaError> {
    match el
        .attrs()
        .iter()
        .find(|a| !a.ns.is_empty() || !allowed.contains(&a.name.as_str()))
    {
        Some(_) => Err(bad(&format!("unknown attribute on <{}/>", el.name()))),
        None => Ok(()),
    }
}

fn service_jid(el: &Element) -> Result<String, StanzaError> {
    let raw = el
        .attr("jid")
        .ok_or_else(|| bad("the 'jid' attribute of the push service is required"))?;
    if raw.len() > MAX_JID {
        return Err(StanzaError::new(StanzaCondition::JidMalformed));
    }
    Jid::new(raw)
        .map(|j| j.to_string())
        .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))
}

fn node_attr(el: &Element) -> Result<Option<String>, StanzaError> {
    match el.attr("node") {
        None => Ok(None),
        Some("") => Err(bad("the 'node' attribute is empty")),
        Some(n) if n.len() > MAX_NODE => Err(bad("the 'node' attribute is too long")),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

/// Checks a publish-options form and rebuilds it from its fields and values only, so that what
/// is stored and sent on is exactly what was checked (no labels, no instructions, no extras).
fn publish_options(x: &Element) -> Result<Element, StanzaError> {
    only_attrs(x, &["type"])?;
    if !matches!(x.attr("type"), None | Some("submit")) {
        return Err(bad("publish-options must be a form of type 'submit'"));
    }
    let mut out = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    let mut form_type = None;
    let mut fields = 0;
    for f in x.children() {
        if !f.is("field", ns::DATA_FORMS) {
            return Err(bad("publish-options may hold only fields"));
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(bad("too many publish-options fields"));
        }
        only_attrs(f, &["var", "type", "label"])?;
        let var = f
            .attr("var")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("a publish-options field needs a 'var'"))?;
        let mut field = Element::new("field", ns::DATA_FORMS).with_attr("var", var);
        let mut values = 0;
        for v in f.children() {
            if !v.is("value", ns::DATA_FORMS) || v.child_count() != 0 || !v.attrs().is_empty() {
                return Err(bad("a publish-options field may hold only text values"));
            }
            values += 1;
            if values > MAX_VALUES {
                return Err(bad("too many values in a publish-options field"));
            }
            if var == "FORM_TYPE" {
                form_type = Some(v.text());
            }
            field.push_child(Element::new("value", ns::DATA_FORMS).with_text(v.text()));
        }
        out.push_child(field);
    }
    if form_type.as_deref() != Some(PUBLISH_OPTIONS) {
        return Err(bad(
            "the form's FORM_TYPE must be http://jabber.org/protocol/pubsub#publish-options",
        ));
    }
    if out.to_xml(ns::CLIENT).len() > MAX_FORM {
        return Err(bad("the publish-options form is too large"));
    }
    Ok(out)
}

impl Request {
    /// Parses the payload of an IQ set: `<enable/>` or `<disable/>` in `urn:xmpp:push:0`.
    pub fn parse(el: &Element) -> Result<Request, StanzaError> {
        match (el.ns(), el.name()) {
            (ns::PUSH, "enable") => {
                only_attrs(el, &["jid", "node"])?;
                let service = service_jid(el)?;
                // The schema (§11) requires a node; without one the app server could not tell
                // its devices apart.
                let node = node_attr(el)?.ok_or_else(|| bad("the 'node' attribute is required"))?;
                let mut options = None;
                for c in el.children() {
                    if !c.is("x", ns::DATA_FORMS) || options.is_some() {
                        return Err(bad("<enable/> may hold one publish-options form only"));
                    }
                    options = Some(publish_options(c)?);
                }
                Ok(Request::Enable {
                    service,
                    node,
                    options,
                })
            }
            (ns::PUSH, "disable") => {
                only_attrs(el, &["jid", "node"])?;
                if el.child_count() != 0 {
                    return Err(bad("<disable/> has no children"));
                }
                Ok(Request::Disable {
                    service: service_jid(el)?,
                    node: node_attr(el)?,
                })
            }
            _ => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        }
    }

    /// The request as an element (for clients and tests).
    pub fn to_element(&self) -> Element {
        match self {
            Request::Enable {
                service,
                node,
                options,
            } => {
                let mut e = Element::new("enable", ns::PUSH)
                    .with_attr("jid", service.as_str())
                    .with_attr("node", node.as_str());
                if let Some(o) = options {
                    e.push_child(o.clone());
                }
                e
            }
            Request::Disable { service, node } => {
                let mut e = Element::new("disable", ns::PUSH).with_attr("jid", service.as_str());
                if let Some(n) = node {
                    e.set_attr("node", n.as_str());
                }
                e
            }
        }
    }
}

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
    let r =
        match req {
            Request::Enable {
                service,
                node,
                options,
            } => {
                if let Err(e) = reachable(&server, &service) {
                    ctx.reply_error(el, e);
                    return;
                }
                let reg = PushRegistration {
                    service,
                    node,
                    options: options.map(|o| o.to_xml(ns::CLIENT)),
                };
                let max = server.config.push.max_registrations;
                server.storage.enable_push(&owner, &reg, max).await.map(|n| {
                if n > 0 {
                    tracing::info!(
                        replaced = n,
                        "push registration limit reached; the oldest registration was replaced"
                    );
                }
            })
            }
            Request::Disable { service, node } => server
                .storage
                .disable_push(&owner, &service, node.as_deref())
                .await
                .map(|_| ()),
        };
    match r {
        Ok(()) => ctx.answer(el, Ok(None)),
        Err(e) => {
            tracing::error!(error = %e, "storing a push registration failed");
            ctx.reply_error(el, StanzaError::new(StanzaCondition::InternalServerError));
        }
    }
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

    fn cond(xml: &str) -> StanzaCondition {
        Request::parse(&el(xml)).unwrap_err().condition
    }

    const OPTS: &str = "<x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

    #[test]
    fn enable_and_disable_round_trip() {
        for xml in [
            "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'/>"
                .to_owned(),
            format!("<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>{OPTS}</enable>"),
            "<disable xmlns='urn:xmpp:push:0' jid='push-5.client.example'/>".to_owned(),
            "<disable xmlns='urn:xmpp:push:0' jid='a@push.example/r' node='n'/>".to_owned(),
        ] {
            let parsed = Request::parse(&el(&xml)).unwrap();
            assert_eq!(parsed.to_element(), el(&xml), "{xml}");
            assert_eq!(Request::parse(&parsed.to_element()).unwrap(), parsed);
        }
    }

    #[test]
    fn enable_keeps_the_form_and_normalises_the_jid() {
        let r = Request::parse(&el(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='Push.Example' node='n'>{OPTS}</enable>"
        )))
        .unwrap();
        let Request::Enable {
            service, options, ..
        } = r
        else {
            panic!("not an enable");
        };
        assert_eq!(service, "push.example");
        let form = options.unwrap();
        assert_eq!(form, el(OPTS));
        // A form without a type, with labels, is accepted and stored without them.
        let r = Request::parse(&el(
            "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='token' label='Token'><value>t</value></field></x></enable>",
        ))
        .unwrap();
        let Request::Enable { options, .. } = r else {
            panic!("not an enable");
        };
        let form = options.unwrap();
        assert_eq!(form.attr("type"), Some("submit"));
        assert!(form.children().all(|f| f.attr("label").is_none()));
    }

    #[test]
    fn bad_input_is_refused() {
        use StanzaCondition::{BadRequest, JidMalformed};
        let cases = [
            ("<enable xmlns='urn:xmpp:push:0' node='n'/>", BadRequest),
            ("<enable xmlns='urn:xmpp:push:0' jid='p'/>", BadRequest),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node=''/>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n' extra='1'/>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='@bad' node='n'/>",
                JidMalformed,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='' node='n'/>",
                JidMalformed,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><foo/></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>urn:other</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='form'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field><value>v</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='a'><value><b/></value></field></x></enable>",
                BadRequest,
            ),
            ("<disable xmlns='urn:xmpp:push:0'/>", BadRequest),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='p' node='n' x='y'/>",
                BadRequest,
            ),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='p'><x/></disable>",
                BadRequest,
            ),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='a@b@c'/>",
                JidMalformed,
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(cond(xml), want, "{xml}");
        }
        // Sizes are bounded.
        let long = "n".repeat(MAX_NODE + 1);
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='{long}'/>"
            )),
            BadRequest
        );
        let long = format!("{}.example", "a".repeat(MAX_JID));
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='{long}' node='n'/>"
            )),
            JidMalformed
        );
        let many: String = (0..=MAX_FIELDS)
            .map(|i| format!("<field var='f{i}'><value>v</value></field>"))
            .collect();
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 {many}</x></enable>"
            )),
            BadRequest
        );
        let big = "v".repeat(MAX_FORM);
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='big'><value>{big}</value></field></x></enable>"
            )),
            BadRequest
        );
    }

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
