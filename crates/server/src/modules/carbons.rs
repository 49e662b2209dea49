//! XEP-0280 Message Carbons: a session that enables carbons gets a copy of every instant
//! message its account sends or receives on its other sessions, so that a nurse's phone and
//! desktop show the same conversation.
//!
//! Eligible messages (§6, the XEP's suggested rules): type `chat`, and type `normal` with a
//! body. Never groupchat, headline or error messages, nor a message that is itself a carbon.
//! `<private xmlns='urn:xmpp:carbons:2'/>` (§8) and `<no-copy xmlns='urn:xmpp:hints'/>`
//! (XEP-0334) keep a message from being copied; the receiving side removes `<private/>` before
//! delivery.

use std::sync::Arc;

use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::modules::message::MessageType;
use crate::router::SessionHandle;
use crate::server::Server;
use crate::session::Ctx;

/// `<enable/>` or `<disable/>` from the session's own client (§4, §5). Repeated requests are
/// answered with a result, as §10.1 asks.
pub fn handle_iq(ctx: &mut Ctx<'_>, el: &Element, enable: bool) {
    if el.attr("type") != Some("set") {
        ctx.reply_error(el, StanzaError::new(StanzaCondition::BadRequest));
        return;
    }
    ctx.sess.handle.state.set_carbons(enable);
    ctx.answer(el, Ok(None));
}

/// Whether `el` is copied at all (ignoring who would receive the copies).
pub fn eligible(el: &Element) -> bool {
    let kind_ok = match MessageType::of(el) {
        MessageType::Chat => true,
        MessageType::Normal => el.has_child("body", ns::CLIENT),
        _ => false,
    };
    kind_ok
        && !el.children().any(|c| {
            (c.ns() == ns::CARBONS && matches!(c.name(), "private" | "received" | "sent"))
                || c.is("no-copy", ns::HINTS)
        })
}

/// Removes `<private/>` from a message about to be delivered to its recipient (§8 SHOULD).
pub fn strip_private(el: &mut Element) {
    if el.has_child("private", ns::CARBONS) {
        el.retain_children(|c| !c.is("private", ns::CARBONS));
    }
}

/// Copies a message the account `bare` received to its carbons-enabled sessions that did not
/// get the original (`delivered` holds their connection ids).
pub fn received(server: &Arc<Server>, bare: &str, original: &Element, delivered: &[u64]) {
    let targets = server
        .router
        .carbon_targets(bare, |s| delivered.contains(&s.conn_id));
    send(server, "received", bare, original, &targets);
}

/// Copies a message the session `sender` sent to the account's other carbons-enabled
/// sessions (whether or not the sender enabled carbons itself, §7).
pub fn sent(server: &Arc<Server>, sender: &SessionHandle, original: &Element) {
    let targets = server
        .router
        .carbon_targets(&sender.bare, |s| s.conn_id == sender.conn_id);
    send(server, "sent", &sender.bare, original, &targets);
}

/// Whether anyone could get a carbon of a message of `bare` (cheap: no allocation).
pub fn anyone(server: &Server, bare: &str) -> bool {
    server.router.has_carbons(bare)
}

fn send(
    server: &Arc<Server>,
    kind: &str,
    bare: &str,
    original: &Element,
    targets: &[Arc<SessionHandle>],
) {
    for t in targets {
        let mut copy =
            Element::new("message", ns::CLIENT)
                .with_attr("from", bare)
                .with_attr("to", t.full.as_str())
                .with_child(Element::new(kind, ns::CARBONS).with_child(
                    Element::new("forwarded", ns::FORWARD).with_child(original.clone()),
                ));
        if let Some(ty) = original.attr("type") {
            copy.set_attr("type", ty);
        }
        // A full queue closes that session (see Router::deliver); nothing else to do here.
        let _ = server.router.deliver(t, copy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::framing::{Limits, parse_element};

    fn msg(xml: &str) -> Element {
        parse_element(xml, Limits::default()).unwrap()
    }

    #[test]
    fn which_messages_are_copied() {
        let yes = [
            "<message xmlns='jabber:client' type='chat'><body>x</body></message>",
            "<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client'><body>x</body></message>",
            "<message xmlns='jabber:client' type='normal'><body>x</body></message>",
        ];
        for m in yes {
            assert!(eligible(&msg(m)), "{m}");
        }
        let no = [
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>",
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>",
            "<message xmlns='jabber:client' type='error'><body>x</body></message>",
            "<message xmlns='jabber:client'><subject>x</subject></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
            "<message xmlns='jabber:client' type='chat'><sent xmlns='urn:xmpp:carbons:2'/></message>",
        ];
        for m in no {
            assert!(!eligible(&msg(m)), "{m}");
        }
    }

    #[test]
    fn private_is_removed_and_the_rest_kept() {
        let mut m = msg(
            "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
        );
        strip_private(&mut m);
        assert!(!m.has_child("private", ns::CARBONS));
        assert!(m.has_child("body", ns::CLIENT));
    }
}
