//! Capabilities, one module each, and the one place that says which IQ payload goes where.
//!
//! An IQ get/set that no module claims is answered with `service-unavailable` (RFC 6120
//! §8.4). The order of the list in [`account_iq`] and [`server_iq`] is the dispatch order.

/// XEP-0191: Blocking Command.
pub mod blocking;
/// XEP-0280: Message Carbons.
pub mod carbons;
/// XEP-0352: Client State Indication.
pub mod csi;
/// XEP-0030 Service Discovery and XEP-0115 Entity Capabilities for the server and accounts.
pub mod disco;
/// XEP-0313: Message Archive Management (with XEP-0308 corrections and XEP-0424 retractions).
pub mod mam;
/// RFC 6121 messages, XEP-0160 offline storage, XEP-0359 stanza ids.
pub mod message;
/// XEP-0199 ping, XEP-0202 entity time, XEP-0092 software version.
pub mod ping_time_version;
/// RFC 6121 presence: broadcast, probes, directed presence, subscriptions.
pub mod presence;
/// XEP-0357: Push Notifications.
pub mod push;
/// XEP-0077: In-Band Registration (and password change).
pub mod register;
/// RFC 6121 roster management and the subscription state machine.
pub mod roster;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use std::sync::Arc;

use crate::server::Server;
use crate::session::Ctx;

/// Where a stanza from a local client is addressed, from the server's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No `to`, or the sender's own bare JID: the server answers for the account.
    OwnAccount,
    /// A domain served here.
    Server(String),
    /// Another local account's bare JID.
    LocalBare(String),
    /// A local full JID (which may be the sender's own other resource).
    LocalFull {
        /// Bare part.
        bare: String,
        /// Resource.
        resource: String,
    },
    /// A JID at a domain not served here.
    Remote(String),
}

/// Classifies `to` for the session in `ctx`.
pub fn target(ctx: &Ctx<'_>, to: &Option<Jid>) -> Target {
    let Some(to) = to else {
        return Target::OwnAccount;
    };
    let domain = to.domain().as_str();
    if !ctx.server.serves(domain) {
        return Target::Remote(domain.to_owned());
    }
    let bare = to.to_bare().to_string();
    match (to.node(), to.resource()) {
        (None, _) => Target::Server(domain.to_owned()),
        (Some(_), None) if bare == ctx.bare() => Target::OwnAccount,
        (Some(_), None) => Target::LocalBare(bare),
        (Some(_), Some(r)) => Target::LocalFull {
            bare,
            resource: r.to_string(),
        },
    }
}

/// A Unix-millisecond time as an XEP-0082 date-time (for XEP-0203 delay stamps and MAM).
pub fn datetime(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Builds an empty `result` reply to an IQ (id kept, addresses swapped).
pub fn iq_result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = iq.attr("to") {
        r.set_attr("from", to);
    }
    if let Some(from) = iq.attr("from") {
        r.set_attr("to", from);
    }
    if let Some(p) = payload {
        r.push_child(p);
    }
    r
}

/// Sends `payload` in an IQ set to every interested resource of `owner` (roster pushes,
/// RFC 6121 §2.1.6; blocklist pushes, XEP-0191 §3.2). Replies from clients are not awaited.
pub fn push_to_interested(server: &crate::server::Server, owner: &str, payload: &Element) {
    for h in server.router.sessions(owner) {
        if h.state.is_interested() {
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push-{}", &crate::storage::new_id()[..8]))
                .with_attr("to", h.full.as_str())
                .with_child(payload.clone());
            let _ = server.router.deliver(&h, iq);
        }
    }
}

/// Handles an IQ from the client of `ctx` (RFC 6120 §8.2.3, RFC 6121 §8.5).
pub async fn iq_from_client(ctx: &mut Ctx<'_>, el: Element, to: Option<Jid>) {
    let ty = el.attr("type").unwrap_or("");
    let request = matches!(ty, "get" | "set");
    if !request && !matches!(ty, "result" | "error") {
        ctx.reply_error(
            &el,
            StanzaError::new(StanzaCondition::BadRequest)
                .with_text("IQ type must be get, set, result or error"),
        );
        return;
    }
    if el.attr("id").is_none() {
        if request {
            ctx.reply_error(
                &el,
                StanzaError::new(StanzaCondition::BadRequest).with_text("IQ without id"),
            );
        }
        return;
    }
    if request && el.child_count() != 1 {
        ctx.reply_error(
            &el,
            StanzaError::new(StanzaCondition::BadRequest)
                .with_text("an IQ get or set carries exactly one payload"),
        );
        return;
    }
    match target(ctx, &to) {
        Target::OwnAccount => {
            if request {
                account_iq(ctx, el, true).await;
            } else if !push::response(ctx.server, ctx.bare(), &el) {
                iq_response_to_server(ctx, &el);
            }
        }
        Target::Server(_) => {
            if request {
                server_iq(ctx, el).await;
            } else {
                iq_response_to_server(ctx, &el);
            }
        }
        Target::LocalBare(bare) => {
            if !request {
                // XEP-0357: a local app server answering a notification sent on `bare`'s
                // behalf. Other answers to a bare JID have nobody waiting for them.
                push::response(ctx.server, &bare, &el);
                return;
            }
            if blocking::blocks(ctx.server, &bare, ctx.full()).await {
                ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
                return;
            }
            if let Some(err) = blocking::sender_blocks(ctx, &bare).await {
                ctx.reply_error(&el, err);
                return;
            }
            account_iq_for_other(ctx, el, &bare).await;
        }
        Target::LocalFull { bare, resource } => {
            if blocking::blocks(ctx.server, &bare, ctx.full()).await {
                if request {
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
                }
                return;
            }
            match ctx.server.router.session(&bare, &resource) {
                Some(h) => {
                    if let Err(el) = ctx.server.router.deliver(&h, el)
                        && request
                    {
                        ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
                    }
                }
                None if request => {
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
                }
                None => {}
            }
        }
        // Requests, results and errors alike go over the link to the remote domain.
        Target::Remote(domain) => {
            let contact = to.map(|j| j.to_bare().to_string()).unwrap_or_default();
            if let Some(err) = blocking::sender_blocks(ctx, &contact).await {
                if request {
                    ctx.reply_error(&el, err);
                }
                return;
            }
            crate::federation::send(ctx.server, el, &domain);
        }
    }
}

/// A result or error from the client to the server: answers to our pings and roster pushes.
fn iq_response_to_server(ctx: &mut Ctx<'_>, el: &Element) {
    if let (Some((id, _)), Some(got)) = (&ctx.sess.pending_ping, el.attr("id"))
        && id == got
    {
        ctx.sess.pending_ping = None;
    }
}

fn payload(el: &Element) -> Option<&Element> {
    el.children().next()
}

/// IQs the server answers for the sender's own account (`to` absent or the own bare JID).
async fn account_iq(ctx: &mut Ctx<'_>, el: Element, _own: bool) {
    let Some(p) = payload(&el) else { return };
    let ty = el.attr("type").unwrap_or("");
    match (p.ns(), p.name(), ty) {
        // RFC 6121 §2: roster get/set.
        (ns::ROSTER, "query", _) => roster::handle_iq(ctx, el).await,
        // XEP-0191: blocklist get, block, unblock.
        (ns::BLOCKING, _, _) => blocking::handle_iq(ctx, el).await,
        // XEP-0030 for the account itself.
        (ns::DISCO_INFO, "query", "get") => {
            let info = disco::account_info(&ctx.server.config, &el);
            ctx.answer(&el, info.map(Some));
        }
        (ns::DISCO_ITEMS, "query", "get") => ctx.answer(&el, Ok(Some(disco::account_items()))),
        // XEP-0280: carbons for this session.
        (ns::CARBONS, "enable", _) => carbons::handle_iq(ctx, &el, true),
        (ns::CARBONS, "disable", _) => carbons::handle_iq(ctx, &el, false),
        // XEP-0313: archive queries, preferences and metadata.
        (ns::MAM, _, _) => Box::pin(mam::handle_iq(ctx, el)).await,
        // XEP-0357: push notification registrations.
        (ns::PUSH, _, _) => push::handle_iq(ctx, &el).await,
        // XEP-0199: some clients ping their own bare JID.
        (ns::PING, "ping", "get") => ctx.to_self.push(iq_result(&el, None)),
        // XEP-0077: password change and account removal (no `to` or the own account).
        (ns::REGISTER, "query", _) => register::handle_bound(ctx, el).await,
        // RFC 3921 session establishment, a no-op kept for old clients.
        (ns::SESSION, "session", "set") => ctx.to_self.push(iq_result(&el, None)),
        _ => ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable)),
    }
}

/// IQs addressed to another local account's bare JID, answered by the server on its behalf.
async fn account_iq_for_other(ctx: &mut Ctx<'_>, el: Element, bare: &str) {
    let r = public_account_query(ctx.server, &el, bare).await;
    ctx.answer(&el, r);
}

/// What anyone, local or remote, may ask the server about an account's bare JID (the server
/// answers on the account's behalf, RFC 6121 §8.5.1): disco#info of an existing account. Other
/// requests, and requests about an account that does not exist, are `service-unavailable`
/// (§8.5.1: the same answer either way, so that accounts cannot be probed).
pub async fn public_account_query(
    server: &Arc<Server>,
    el: &Element,
    bare: &str,
) -> Result<Option<Element>, StanzaError> {
    let ty = el.attr("type").unwrap_or("");
    match payload(el).map(|p| (p.ns(), p.name(), ty)) {
        Some((ns::DISCO_INFO, "query", "get")) if disco::account_exists(server, bare).await => {
            disco::account_info(&server.config, el).map(Some)
        }
        _ => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
    }
}

/// What anyone, local or remote, may ask a served domain, answered without session state:
/// disco (XEP-0030, XEP-0115), ping (XEP-0199), time (XEP-0202), version (XEP-0092). `None` when
/// `el` is none of these. The result is the payload of the IQ result (none for a ping).
pub fn public_server_query(
    server: &Server,
    el: &Element,
) -> Option<Result<Option<Element>, StanzaError>> {
    let p = payload(el)?;
    let ty = el.attr("type").unwrap_or("");
    Some(match (p.ns(), p.name(), ty) {
        (ns::DISCO_INFO, "query", "get") => disco::server_info(server, el).map(Some),
        (ns::DISCO_ITEMS, "query", "get") => disco::server_items(el).map(Some),
        (ns::PING, "ping", "get") => Ok(None),
        (ns::TIME, "time", "get") => Ok(Some(ping_time_version::time())),
        // Answers only when enabled.
        (ns::VERSION, "query", "get") => ping_time_version::version(&server.config).map(Some),
        _ => return None,
    })
}

/// IQs addressed to a served domain.
async fn server_iq(ctx: &mut Ctx<'_>, el: Element) {
    if let Some(r) = public_server_query(ctx.server, &el) {
        ctx.answer(&el, r);
        return;
    }
    let Some(p) = payload(&el) else { return };
    let ty = el.attr("type").unwrap_or("");
    match (p.ns(), p.name(), ty) {
        // XEP-0077 addressed to the server.
        (ns::REGISTER, "query", _) => register::handle_bound(ctx, el).await,
        (ns::SESSION, "session", "set") => ctx.to_self.push(iq_result(&el, None)),
        _ => ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable)),
    }
}
