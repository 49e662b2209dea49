//! Stanzas for local accounts that do not come from a local session: from other servers over
//! inbound links, and the error replies this server generates for stanzas it could not deliver.
//! They go through the same delivery as local stanzas (`message::deliver_local`,
//! `presence::deliver`, the subscription state machine), with `from` already stamped.

use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError};

use super::route_any;
use crate::modules::message::{
    MessageType, audit_accepted, audit_bounced, deliver_local, unaudited,
};
use crate::modules::roster::subscription::SubKind;
use crate::modules::{blocking, iq_result, presence};
use crate::server::Server;

/// Delivers a stanza whose `to` is served here and whose `from` is set.
pub async fn route(server: &Arc<Server>, el: Element) {
    let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    match el.name() {
        "message" => message(server, el, &to).await,
        "presence" => presence(server, el, &to).await,
        _ => iq(server, el, &to).await,
    }
}

/// Answers `stanza` with an error from its recipient, routed back to its sender; nothing for
/// errors (RFC 6120 §8.3.1) and IQ results, which are not requests.
pub fn bounce(server: &Arc<Server>, stanza: Element, cond: StanzaCondition, text: &str) {
    let ty = stanza.attr("type");
    if ty == Some("error") || (stanza.name() == "iq" && ty == Some("result")) {
        tracing::debug!(
            condition = cond.as_str(),
            "undeliverable error or result dropped"
        );
        return;
    }
    let Some(reply) = StanzaError::new(cond).with_text(text).reply_to(&stanza) else {
        return;
    };
    // Spawned: the caller may be inside a link's or a session's handler, and delivery may wait
    // on storage (offline messages).
    let server = server.clone();
    tokio::spawn(async move {
        if stanza.name() == "message" {
            crate::modules::message::audit_bounced(&server, &stanza, cond).await;
        }
        route_any(&server, reply).await
    });
}

/// Sends an error reply to a stanza received for a local account.
async fn reply_error(server: &Arc<Server>, stanza: &Element, err: StanzaError) {
    if let Some(reply) = err.reply_to(stanza) {
        Box::pin(route_any(server, reply)).await;
    }
}

async fn message(server: &Arc<Server>, el: Element, to: &Jid) {
    let ty = MessageType::of(&el);
    if to.node().is_none() {
        // Nothing here reads messages sent to the server itself.
        if matches!(ty, MessageType::Chat | MessageType::Normal) {
            reply_error(server, &el, StanzaCondition::ServiceUnavailable.into()).await;
        }
        return;
    }
    let bare = to.to_bare().to_string();
    let resource = to.resource().map(|r| r.to_string());
    let head = el.without_children();
    // From another organisation's server, or an error this server generated itself.
    let peer = el
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .map(|f| f.domain().to_string())
        .filter(|d| !server.serves(d));
    if !audit_accepted(server, &el, peer.as_deref()).await {
        if ty != MessageType::Error {
            reply_error(server, &head, unaudited()).await;
        }
        return;
    }
    if let Err(err) = deliver_local(server, el, &bare, resource.as_deref()).await
        && ty != MessageType::Error
    {
        audit_bounced(server, &head, err.condition).await;
        reply_error(server, &head, err).await;
    }
}

async fn presence(server: &Arc<Server>, el: Element, to: &Jid) {
    if to.node().is_none() {
        return;
    }
    let Some(from) = el.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let owner = to.to_bare().to_string();
    let contact = from.to_bare().to_string();
    let ty = el.attr("type").map(str::to_owned);
    if let Some(kind) = ty.as_deref().and_then(SubKind::parse) {
        presence::inbound_subscription(server, &owner, &contact, kind, el).await;
        return;
    }
    if ty.as_deref() == Some("probe") {
        presence::answer_probe(server, &owner, &from.to_string()).await;
        return;
    }
    let resource = to.resource().map(|r| r.to_string());
    presence::deliver(server, el, &owner, resource.as_deref()).await;
}

async fn iq(server: &Arc<Server>, el: Element, to: &Jid) {
    let request = matches!(el.attr("type"), Some("get" | "set"));
    let from = el.attr("from").unwrap_or_default().to_owned();
    let bare = to.to_bare().to_string();
    match (to.node(), to.resource()) {
        (Some(_), Some(res)) => {
            let blocked = blocking::blocks(server, &bare, &from).await;
            let session = server.router.session(&bare, res.as_str());
            let undelivered = match session {
                Some(h) if !blocked => server.router.deliver(&h, el).err(),
                _ => Some(el),
            };
            if let Some(el) = undelivered
                && request
            {
                reply_error(server, &el, StanzaCondition::ServiceUnavailable.into()).await;
            }
        }
        // The server answers for itself and, on their behalf, for its accounts' bare JIDs: the
        // same public queries a local client may ask (disco, ping, time, version).
        (None, None) if request => {
            let r = crate::modules::public_server_query(server, &el)
                .unwrap_or_else(|| Err(StanzaCondition::ServiceUnavailable.into()));
            answer(server, &el, r).await;
        }
        (Some(_), None) if request => {
            let r = if blocking::blocks(server, &bare, &from).await {
                Err(StanzaCondition::ServiceUnavailable.into())
            } else {
                crate::modules::public_account_query(server, &el, &bare).await
            };
            answer(server, &el, r).await;
        }
        _ if request => {
            reply_error(server, &el, StanzaCondition::ServiceUnavailable.into()).await;
        }
        // XEP-0357: a remote app server answering a notification sent on the account's behalf
        // (or our own bounce of it). Other answers to a bare JID have nobody waiting for them.
        (Some(_), None) => {
            crate::modules::push::response(server, &bare, &el);
        }
        _ => {}
    }
}

/// Answers a request from a remote entity: a result with the payload, or the error.
async fn answer(server: &Arc<Server>, iq: &Element, r: Result<Option<Element>, StanzaError>) {
    match r {
        Ok(payload) => Box::pin(route_any(server, iq_result(iq, payload))).await,
        Err(e) => reply_error(server, iq, e).await,
    }
}
