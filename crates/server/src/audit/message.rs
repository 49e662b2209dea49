//! Audit events for messages: what is recorded of a message (its envelope, size and security
//! labels), never what it says.

use zorg_proto::{Element, StanzaCondition};

use super::event::{Delivery, Event, Label, MAX_LABELS, cut};
use crate::modules::message::MessageType;

/// XEP-0258 security labels.
const SEC_LABEL: &str = "urn:xmpp:sec-label:0";

fn id(el: &Element) -> Option<String> {
    el.attr("id").map(cut)
}

/// A message taken for delivery; `peer` is the server it came from, for federated ones.
pub fn accepted(el: &Element, peer: Option<&str>) -> Event {
    Event::MessageAccepted {
        id: id(el),
        from: el.attr("from").map(cut).unwrap_or_default(),
        to: el.attr("to").map(cut).unwrap_or_default(),
        kind: MessageType::of(el).into(),
        size: u32::try_from(el.approx_size()).unwrap_or(u32::MAX),
        labels: labels(el),
        peer: peer.map(cut),
    }
}

/// A message handed on to `to` (a session's full JID, an account for storage, a remote
/// address for forwarding).
pub fn delivered(el: &Element, to: &str, how: Delivery) -> Event {
    Event::MessageDelivered {
        id: id(el),
        from: el.attr("from").map(cut).unwrap_or_default(),
        to: cut(to),
        how,
    }
}

/// A message that was not delivered; its sender gets `condition`.
pub fn bounced(el: &Element, condition: StanzaCondition) -> Event {
    Event::MessageBounced {
        id: id(el),
        from: el.attr("from").map(cut).unwrap_or_default(),
        to: el.attr("to").map(cut).unwrap_or_default(),
        condition: condition.as_str().to_owned(),
    }
}

/// The security labels of a message: each one's display marking and the namespace of its
/// label content (the labelling scheme).
fn labels(el: &Element) -> Vec<Label> {
    el.children()
        .filter(|c| c.is("securitylabel", SEC_LABEL))
        .take(MAX_LABELS)
        .map(|l| Label {
            marking: l
                .get_child("displaymarking", SEC_LABEL)
                .map(|d| cut(d.text().trim())),
            scheme: l
                .get_child("label", SEC_LABEL)
                .and_then(|x| x.children().next())
                .map(|x| cut(x.ns())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::ns;

    #[test]
    fn a_message_is_recorded_without_its_body() {
        let label = Element::new("securitylabel", SEC_LABEL)
            .with_child(Element::new("displaymarking", SEC_LABEL).with_text("RESTRICTED"))
            .with_child(
                Element::new("label", SEC_LABEL)
                    .with_child(Element::new("esssecuritylabel", "urn:xmpp:sec-label:ess:0")),
            );
        let el = Element::new("message", ns::CLIENT)
            .with_attr("from", "alice@example.org/phone")
            .with_attr("to", "bob@example.org")
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", ns::CLIENT).with_text("the patient in room 4"))
            .with_child(label);
        let ev = accepted(&el, None);
        let json = serde_json::to_string(&ev).unwrap();
        assert!(!json.contains("patient"), "{json}");
        let Event::MessageAccepted {
            labels, size, kind, ..
        } = ev
        else {
            panic!()
        };
        assert_eq!(kind, super::super::event::MessageKind::Chat);
        assert!(size > 20);
        assert_eq!(labels[0].marking.as_deref(), Some("RESTRICTED"));
        assert_eq!(
            labels[0].scheme.as_deref(),
            Some("urn:xmpp:sec-label:ess:0")
        );
    }
}
