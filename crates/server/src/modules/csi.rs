//! XEP-0352 Client State Indication: a client in the background says `<inactive/>`, and the
//! server holds back what does not need to wake the device (presence updates, chat states)
//! until it says `<active/>` or something important arrives.
//!
//! What is held: presence broadcasts (available and unavailable; only the latest per sender
//! full JID is kept, §6 "squashing"), and messages that carry nothing but chat states
//! (XEP-0085) and routing decoration. Everything else (bodies, receipts, markers, encrypted
//! payloads, subscription requests, IQs, errors) goes out at once, after the held stanzas, so
//! that a sender's stanzas keep their order. The buffer is bounded: when full it is flushed.
//!
//! Held stanzas have not been sent: Stream Management does not count them until they are.

use zorg_proto::{Element, ns};

/// Most stanzas held for one inactive session; one more flushes them all.
pub const MAX_HELD: usize = 64;

/// CSI state of a session: inactive, with what is held back. A session that never sent
/// `<inactive/>` has none (`Option<Box<Csi>>` in the session).
#[derive(Debug, Default)]
pub struct Csi {
    /// The client said `<inactive/>` (and not `<active/>` since).
    pub inactive: bool,
    /// Held stanzas, oldest first. Boxed as they arrive from the router and as the XEP-0198
    /// queue keeps them: moving a box on costs no copy of the element.
    #[allow(clippy::vec_box)]
    held: Vec<Box<Element>>,
}

impl Csi {
    /// Offers a stanza for the client. `Ok(())`: held back (check [`Csi::is_full`]).
    /// `Err(el)`: it must be written now, after whatever [`Csi::take`] returns.
    pub fn offer(&mut self, el: Box<Element>) -> Result<(), Box<Element>> {
        if !self.inactive || !can_hold(&el) {
            return Err(el);
        }
        if el.name() == "presence" {
            // Only the latest presence of each sender matters.
            let from = el.attr("from");
            self.held
                .retain(|h| !(h.name() == "presence" && h.attr("from") == from));
        }
        self.held.push(el);
        Ok(())
    }

    /// Whether the buffer reached its bound (flush it).
    pub fn is_full(&self) -> bool {
        self.held.len() >= MAX_HELD
    }

    /// Whether anything is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Everything held, oldest first, to be written now.
    #[allow(clippy::vec_box)]
    pub fn take(&mut self) -> Vec<Box<Element>> {
        std::mem::take(&mut self.held)
    }
}

/// Whether `el` may wait while the client is inactive.
pub fn can_hold(el: &Element) -> bool {
    match el.name() {
        "presence" => matches!(el.attr("type"), None | Some("unavailable")),
        "message" => message_can_wait(el),
        _ => false,
    }
}

/// A message that carries only chat states (possibly inside a carbon) and decoration.
fn message_can_wait(el: &Element) -> bool {
    if el.attr("type") == Some("error") {
        return false;
    }
    // XEP-0280 carbons wrap the message that matters.
    if let Some(inner) = el
        .children()
        .find(|c| c.ns() == ns::CARBONS && matches!(c.name(), "received" | "sent"))
        .and_then(|c| c.get_child("forwarded", ns::FORWARD))
        .and_then(|f| f.get_child("message", ns::CLIENT))
    {
        return message_can_wait(inner);
    }
    let mut chat_state = false;
    for c in el.children() {
        match c.ns() {
            ns::CHATSTATES => chat_state = true,
            // Decoration that is not worth waking a phone for on its own.
            ns::SID | ns::DELAY | ns::HINTS => {}
            ns::CLIENT if c.name() == "thread" => {}
            _ => return false,
        }
    }
    chat_state
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::framing::{Limits, parse_element};

    fn el(xml: &str) -> Box<Element> {
        Box::new(parse_element(xml, Limits::default()).unwrap())
    }

    #[test]
    fn what_may_wait() {
        let wait = [
            "<presence xmlns='jabber:client' from='a@x/1'/>",
            "<presence xmlns='jabber:client' from='a@x/1' type='unavailable'/>",
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='chat'><thread>t</thread><paused xmlns='http://jabber.org/protocol/chatstates'/><no-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></received></message>",
        ];
        for m in wait {
            assert!(can_hold(&el(m)), "{m}");
        }
        let now = [
            "<presence xmlns='jabber:client' from='a@x' type='subscribe'/>",
            "<message xmlns='jabber:client' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts' id='1'/></message>",
            "<message xmlns='jabber:client'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>",
            "<message xmlns='jabber:client' type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client'/>",
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><body>x</body></message></forwarded></received></message>",
            "<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
        ];
        for m in now {
            assert!(!can_hold(&el(m)), "{m}");
        }
    }

    #[test]
    fn active_sessions_hold_nothing() {
        let mut c = Csi::default();
        assert!(
            c.offer(el("<presence xmlns='jabber:client' from='a@x/1'/>"))
                .is_err()
        );
    }

    #[test]
    fn presence_is_squashed_per_sender_and_order_kept() {
        let mut c = Csi {
            inactive: true,
            ..Csi::default()
        };
        for xml in [
            "<presence xmlns='jabber:client' from='a@x/1' id='1'/>",
            "<presence xmlns='jabber:client' from='b@x/1' id='2'/>",
            "<message xmlns='jabber:client' from='a@x/1'><gone xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<presence xmlns='jabber:client' from='a@x/1' id='3' type='unavailable'/>",
        ] {
            c.offer(el(xml)).unwrap();
        }
        let body = el("<message xmlns='jabber:client' from='a@x/1'><body>x</body></message>");
        let urgent = c.offer(body).unwrap_err();
        assert_eq!(urgent.name(), "message");
        let ids: Vec<_> = c
            .take()
            .iter()
            .map(|e| (e.name().to_owned(), e.attr("id").map(str::to_owned)))
            .collect();
        assert_eq!(
            ids,
            [
                ("presence".to_owned(), Some("2".to_owned())),
                ("message".to_owned(), None),
                ("presence".to_owned(), Some("3".to_owned())),
            ]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut c = Csi {
            inactive: true,
            ..Csi::default()
        };
        for i in 0..MAX_HELD {
            c.offer(el(&format!(
                "<presence xmlns='jabber:client' from='a@x/{i}'/>"
            )))
            .unwrap();
        }
        assert!(c.is_full());
        assert_eq!(c.take().len(), MAX_HELD);
    }
}
