//! What is kept of a subscription request that waits for the user's answer (RFC 6121 §3.1.3
//! rule 4), and delivered again at each of the user's logins until answered.
//!
//! RFC 6121 asks to keep "the complete presence stanza ... including any extended content".
//! Beyond that, and on purpose: a stanza may be up to `[limits] max_stanza_size` (256 KiB by
//! default), anyone may send one, and each is read back at every login; so only what a client
//! shows for a request is kept: who asks, a status text (the request's message) and an XEP-0172
//! nickname, each cut to a few hundred bytes.

use zorg_proto::{Element, ns};

/// XEP-0172: User Nickname.
const NICK: &str = "http://jabber.org/protocol/nick";
/// Longest status text kept, in bytes (cut at a character boundary).
pub const MAX_STATUS: usize = 1024;
/// Longest nickname kept, in bytes.
pub const MAX_NICK: usize = 256;

/// The request as kept and delivered again: `type`, `from` and `to`, the first `<status/>` and
/// the first XEP-0172 `<nick/>`, each cut to its limit; nothing else.
pub fn kept(request: &Element) -> Element {
    let mut p = Element::new("presence", ns::CLIENT).with_attr("type", "subscribe");
    for a in ["from", "to"] {
        if let Some(v) = request.attr(a) {
            p.set_attr(a, v);
        }
    }
    for (name, ns, max) in [("status", ns::CLIENT, MAX_STATUS), ("nick", NICK, MAX_NICK)] {
        if let Some(c) = request.get_child(name, ns) {
            let text = c.text();
            p.push_child(Element::new(name, ns).with_text(cut(&text, max)));
        }
    }
    p
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        zorg_proto::parse_element(xml, zorg_proto::Limits::default()).unwrap()
    }

    #[test]
    fn keeps_who_asks_a_status_and_a_nick_only() {
        let big = "x".repeat(100_000);
        let req = parse(&format!(
            "<presence xmlns='jabber:client' type='subscribe' id='s1' from='eve@x' to='a@y'>\
             <status>please add me</status><status>second</status>\
             <nick xmlns='{NICK}'>Eve</nick>\
             <x xmlns='urn:example:big'>{big}</x></presence>"
        ));
        assert_eq!(
            kept(&req).to_xml(ns::CLIENT),
            format!(
                "<presence type='subscribe' from='eve@x' to='a@y'><status>please add me</status>\
                 <nick xmlns='{NICK}'>Eve</nick></presence>"
            )
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        // 'é' is two bytes: 600 of them are 1200 bytes, cut to 1024 (512 characters).
        let status = "é".repeat(600);
        let nick = "n".repeat(1000);
        let req = parse(&format!(
            "<presence xmlns='jabber:client' type='subscribe' from='eve@x'>\
             <status>{status}</status><nick xmlns='{NICK}'>{nick}</nick></presence>"
        ));
        let k = kept(&req);
        let s = k.get_child("status", ns::CLIENT).unwrap().text();
        assert_eq!(s, "é".repeat(512));
        assert_eq!(k.get_child("nick", NICK).unwrap().text().len(), MAX_NICK);
        assert!(k.to_xml(ns::CLIENT).len() < MAX_STATUS + MAX_NICK + 200);
        assert_eq!(cut("aé", 2), "a");
    }
}
