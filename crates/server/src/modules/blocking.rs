//! XEP-0191: Blocking Command. The blocklist is stored per account and cached in memory, since
//! every routed stanza checks it.

use std::sync::Arc;

use zorg_proto::jid::Jid;
use zorg_proto::{Element, ErrorType, StanzaCondition, StanzaError, ns};

use crate::cache::Loaded;
use crate::modules::{iq_result, presence, push_to_interested};
use crate::server::Server;
use crate::session::Ctx;
use crate::storage::{AccountStore, BlocklistStore};

/// Whether `item` (a blocklist entry) matches `candidate` (a full or bare JID), with the
/// XEP-0016 §2.1 rules XEP-0191 refers to: full JID, bare JID, domain, or domain/resource.
pub fn matches(item: &str, candidate: &str) -> bool {
    if item == candidate {
        return true;
    }
    let (bare, resource) = match candidate.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (candidate, None),
    };
    let domain = bare.rsplit_once('@').map(|(_, d)| d).unwrap_or(bare);
    item == bare
        || item == domain
        || resource
            .is_some_and(|r| item.strip_prefix(domain).and_then(|s| s.strip_prefix('/')) == Some(r))
}

/// The blocklist of the local account `owner`: cached for accounts that exist; an address
/// nobody has (a message to a made-up JID) reads storage and is not kept, and a failed read is
/// used once (as empty) and not kept either.
async fn list(server: &Arc<Server>, owner: &str) -> Arc<Vec<String>> {
    let load = async {
        let none = || Loaded {
            value: Vec::new(),
            cache: false,
        };
        match server.storage.account_exists(owner).await {
            Ok(true) => {}
            Ok(false) => return none(),
            Err(e) => {
                tracing::error!(error = %e, "reading a blocklist failed; treating it as empty for now");
                return none();
            }
        }
        match server.storage.blocklist(owner).await {
            Ok(value) => Loaded { value, cache: true },
            Err(e) => {
                tracing::error!(error = %e, "reading a blocklist failed; treating it as empty for now");
                none()
            }
        }
    };
    // Boxed: a storage future is large, and this sits on the message path of every session.
    server.blocklists.get_or_load(owner, Box::pin(load)).await
}

/// Whether the local account `owner` blocks `candidate`. An `owner` not served here has no
/// blocklist here.
pub async fn blocks(server: &Arc<Server>, owner: &str, candidate: &str) -> bool {
    if candidate.is_empty() {
        return false;
    }
    let domain = owner.rsplit_once('@').map(|(_, d)| d);
    if !domain.is_some_and(|d| server.serves(d)) {
        return false;
    }
    list(server, owner)
        .await
        .iter()
        .any(|i| matches(i, candidate))
}

/// XEP-0191 §3.3: a stanza from the user to an entity the user blocks is refused with
/// `not-acceptable` and `<blocked/>`.
pub async fn sender_blocks(ctx: &Ctx<'_>, to: &str) -> Option<StanzaError> {
    if blocks(ctx.server, ctx.bare(), to).await {
        Some(
            StanzaError::new(StanzaCondition::NotAcceptable)
                .with_type(ErrorType::Cancel)
                .with_app(Element::new("blocked", ns::BLOCKING_ERRORS))
                .with_text("you have blocked this contact; unblock them first"),
        )
    } else {
        None
    }
}

fn items_of(el: &Element) -> Result<Vec<String>, StanzaError> {
    let mut out = Vec::new();
    for item in el.children().filter(|c| c.is("item", ns::BLOCKING)) {
        let Some(j) = item.attr("jid") else {
            return Err(StanzaError::new(StanzaCondition::BadRequest).with_text("item without jid"));
        };
        match Jid::new(j) {
            Ok(j) => out.push(j.to_string()),
            Err(_) => return Err(StanzaError::new(StanzaCondition::JidMalformed)),
        }
    }
    Ok(out)
}

fn push(server: &Arc<Server>, owner: &str, name: &str, items: &[String]) {
    let mut payload = Element::new(name, ns::BLOCKING);
    for i in items {
        payload.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", i.as_str()));
    }
    push_to_interested(server, owner, &payload);
}

/// Blocklist get (`<blocklist/>`), `<block/>` and `<unblock/>`.
pub async fn handle_iq(ctx: &mut Ctx<'_>, el: Element) {
    let Some(p) = el.children().next() else {
        return;
    };
    let owner = ctx.bare().to_owned();
    let server = ctx.server.clone();
    match (el.attr("type"), p.name()) {
        (Some("get"), "blocklist") => {
            // Asking for the blocklist makes the resource interested in blocklist pushes.
            ctx.sess.handle.state.set_interested();
            let mut r = Element::new("blocklist", ns::BLOCKING);
            for i in list(&server, &owner).await.iter() {
                r.push_child(Element::new("item", ns::BLOCKING).with_attr("jid", i.as_str()));
            }
            ctx.to_self.push(iq_result(&el, Some(r)));
        }
        (Some("set"), "block") => {
            let items = match items_of(p) {
                Ok(i) if !i.is_empty() => i,
                Ok(_) => {
                    ctx.reply_error(
                        &el,
                        StanzaError::new(StanzaCondition::BadRequest)
                            .with_text("block needs at least one item"),
                    );
                    return;
                }
                Err(e) => {
                    ctx.reply_error(&el, e);
                    return;
                }
            };
            let max = server.config.limits.max_blocklist_items;
            match server.storage.block_within(&owner, &items, max).await {
                Ok(Some(added)) => {
                    server.blocklists.invalidate(&owner);
                    ctx.to_self.push(iq_result(&el, None));
                    push(&server, &owner, "block", &items);
                    // XEP-0191 §3.3: the blocked contact gets unavailable presence, then none.
                    presence::block::on_block(&server, &owner, &added, ctx.sess).await;
                }
                Ok(None) => {
                    // `[limits] max_blocklist_items`; as for a full roster (RFC 6121 §2.3.3),
                    // `not-acceptable`, type cancel: only unblocking others first helps.
                    let text = format!(
                        "your blocklist holds at most {max} items; unblock some first, or block \
                         a whole domain"
                    );
                    let err = StanzaError::new(StanzaCondition::NotAcceptable)
                        .with_type(ErrorType::Cancel)
                        .with_text(text);
                    ctx.reply_error(&el, err);
                }
                Err(e) => {
                    tracing::error!(error = %e, "block failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                }
            }
        }
        (Some("set"), "unblock") => {
            let items = match items_of(p) {
                Ok(i) => i,
                Err(e) => {
                    ctx.reply_error(&el, e);
                    return;
                }
            };
            match server.storage.unblock(&owner, &items).await {
                Ok(removed) => {
                    server.blocklists.invalidate(&owner);
                    ctx.to_self.push(iq_result(&el, None));
                    // An empty unblock means "all" and is pushed as such.
                    push(
                        &server,
                        &owner,
                        "unblock",
                        if items.is_empty() { &[] } else { &removed },
                    );
                    // XEP-0191 §3.4: presence flows again, both ways.
                    presence::block::on_unblock(&server, &owner, &removed).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "unblock failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                }
            }
        }
        _ => ctx.reply_error(&el, StanzaError::new(StanzaCondition::BadRequest)),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn matching_rules() {
        assert!(matches("a@x", "a@x/r"));
        assert!(matches("a@x/r", "a@x/r"));
        assert!(!matches("a@x/r", "a@x/s"));
        assert!(matches("x", "a@x/r"));
        assert!(matches("x/r", "a@x/r"));
        assert!(!matches("x/r", "a@x/s"));
        assert!(!matches("a@x", "b@x"));
        assert!(!matches("a@x", "a@xy"));
        assert!(!matches("y", "a@x"));
        assert!(matches("x", "x"));
    }
}
