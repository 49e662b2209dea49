//! Memory the framing layer holds, measured by the allocator rather than by the parser's own
//! accounting: the attack of issue 13 item 7 (one long `xmlns`, then tens of thousands of empty
//! children) must stay within the stanza's memory budget, and real stanzas must fit in it.
//!
//! One global allocator counts every byte of this test binary, so the tests take turns.

use std::alloc::System;
use std::sync::{Mutex, MutexGuard};

use cap::Cap;
use zorg_proto::limits::{MAX_NAMESPACE_LEN, MEMORY_PER_BYTE};
use zorg_proto::{Element, Frame, FramingError, Limits, StreamParser};

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/// What [`feed`] saw.
struct Fed {
    err: Option<FramingError>,
    stanzas: Vec<Element>,
    /// Most bytes held at once, sampled after every read.
    peak: usize,
    /// Bytes the stanzas hold once the parser is gone.
    retained: usize,
}

/// Parses `input` in 4 KiB reads as the server does, counting bytes held above what was
/// allocated before.
fn feed(limits: Limits, input: &[u8]) -> Fed {
    let base = ALLOC.allocated();
    let mut peak = 0;
    let mut p = StreamParser::new(limits);
    let mut stanzas = Vec::new();
    let mut err = None;
    'reads: for chunk in input.chunks(4096) {
        let mut d = chunk;
        loop {
            let r = p.feed(&mut d);
            peak = peak.max(ALLOC.allocated().saturating_sub(base));
            match r {
                Ok(Some(Frame::Stanza(el))) => stanzas.push(el),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break 'reads;
                }
            }
        }
    }
    drop(p);
    let retained = ALLOC.allocated().saturating_sub(base)
        - stanzas.capacity() * std::mem::size_of::<Element>();
    Fed {
        err,
        stanzas,
        peak,
        retained,
    }
}

/// The attack: one element declaring a namespace of `ns_len` bytes, then `children` empty
/// children that inherit it.
fn attack(ns_len: usize, children: usize) -> Vec<u8> {
    let mut s = String::from(HEADER);
    s.push_str("<a xmlns='urn:");
    s.push_str(&"x".repeat(ns_len - 4));
    s.push_str("'>");
    for _ in 0..children {
        s.push_str("<b/>");
    }
    s.push_str("</a>");
    s.into_bytes()
}

/// What the parser itself may hold between stanzas (rxml's token buffer, the namespace table,
/// scopes): a constant, whatever the input.
const PARSER_OVERHEAD: usize = 64 * 1024;

#[test]
fn the_reported_attack_is_refused_at_the_namespace() {
    let _g = serial();
    // As reported: a 32,000-byte xmlns and 50,000 empty children, about 230 KB.
    let input = attack(32_000, 50_000);
    assert!(input.len() < Limits::default().max_stanza_size);
    let Fed { err, peak, .. } = feed(Limits::default(), &input);
    assert_eq!(err, Some(FramingError::NamespaceTooLong(MAX_NAMESPACE_LEN)));
    assert!(peak < 2 * PARSER_OVERHEAD, "held {peak} bytes");
}

#[test]
fn many_children_of_a_long_namespace_hit_the_element_cap() {
    let _g = serial();
    let limits = Limits::default();
    let input = attack(MAX_NAMESPACE_LEN, 60_000);
    assert!(input.len() < limits.max_stanza_size);
    let Fed { err, peak, .. } = feed(limits, &input);
    assert_eq!(
        err,
        Some(FramingError::TooManyElements(limits.max_elements))
    );
    // Each child holds its tree node and name, never its own copy of the namespace
    // (10,000 copies of 1 KiB would be 10 MB).
    assert!(
        peak < limits.max_memory() + PARSER_OVERHEAD,
        "held {peak} bytes for {} bytes of input",
        input.len()
    );
}

#[test]
fn memory_held_is_charged_even_under_the_element_cap() {
    let _g = serial();
    let limits = Limits {
        max_elements: 1_000_000,
        ..Limits::default()
    };
    let input = attack(MAX_NAMESPACE_LEN, 60_000);
    let Fed { err, peak, .. } = feed(limits, &input);
    assert_eq!(err, Some(FramingError::TooMuchMemory(limits.max_memory())));
    assert!(
        peak < limits.max_memory() + PARSER_OVERHEAD,
        "held {peak} bytes, budget {}",
        limits.max_memory()
    );
    // Attributes are charged too.
    let mut s = String::from(HEADER);
    s.push_str("<a>");
    for _ in 0..2500 {
        s.push_str(
            "<b a='' b='' c='' d='' e='' f='' g='' h='' i='' j='' k='' l='' m='' n='' o='' p=''/>",
        );
    }
    assert!(s.len() < limits.max_stanza_size);
    let Fed { err, peak, .. } = feed(limits, s.as_bytes());
    assert_eq!(err, Some(FramingError::TooMuchMemory(limits.max_memory())));
    assert!(peak < limits.max_memory() + PARSER_OVERHEAD, "held {peak}");
}

#[test]
fn four_streams_of_the_attack_hold_little_before_authentication() {
    let _g = serial();
    let limits = Limits::default().before_authentication(8192);
    let base = ALLOC.allocated();
    let mut parsers: Vec<StreamParser> = (0..4).map(|_| StreamParser::new(limits)).collect();
    let input = attack(MAX_NAMESPACE_LEN, 50_000);
    let mut peak = 0;
    for p in &mut parsers {
        let mut d = &input[..];
        while let Ok(Some(_)) = p.feed(&mut d) {}
        peak = peak.max(ALLOC.allocated().saturating_sub(base));
    }
    assert!(
        parsers
            .iter_mut()
            .all(|p| p.feed(&mut &b"<c/>"[..]).is_err()),
        "every stream fails"
    );
    // Four streams, each at most its (small) pre-authentication budget.
    let bound = 4 * (limits.max_memory() + PARSER_OVERHEAD);
    assert!(peak < bound, "held {peak} bytes, bound {bound}");
}

/// Stanzas that real clients and servers send, element-dense ones especially.
fn real_stanzas() -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    let mut s = String::from("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>");
    for i in 0..2000 {
        s.push_str(&format!("<item jid='spam{i}@example.net'/>"));
    }
    s.push_str("</block></iq>");
    v.push(("blocklist", s));
    let mut s = String::from(
        "<iq type='result' id='d1' from='conference.example.org'>\
         <query xmlns='http://jabber.org/protocol/disco#items'>",
    );
    for i in 0..2000 {
        s.push_str(&format!(
            "<item jid='room{i}@conference.example.org' name='Room {i}'/>"
        ));
    }
    s.push_str("</query></iq>");
    v.push(("disco#items", s));
    let mut s = String::from(
        "<iq type='result' id='i1'><query xmlns='http://jabber.org/protocol/disco#info'><identity category='client' type='phone' name='Conversations'/>",
    );
    for i in 0..60 {
        s.push_str(&format!("<feature var='urn:xmpp:feature:{i}'/>"));
    }
    s.push_str("</query></iq>");
    v.push(("disco#info", s));
    let mut s = String::from(
        "<iq type='set' id='p1'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>",
    );
    for i in 0..500 {
        s.push_str(&format!("<conference jid='room{i}@conference.example.org' autojoin='true' name='Room {i}'><nick>alice</nick></conference>"));
    }
    s.push_str("</storage></query></iq>");
    v.push(("bookmarks (XEP-0048)", s));
    let key = "BQ3bV1n8hHpu0sL0mPz5Z2xTq9c8w2E4f6g7h8i9j0kLmN";
    let mut s = format!(
        "<iq type='set' id='o1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='urn:xmpp:omemo:2:bundles'><item id='123'><bundle xmlns='urn:xmpp:omemo:2'>\
         <spk id='1'>{key}</spk><spks>{key}{key}</spks><ik>{key}</ik><prekeys>"
    );
    for i in 0..100 {
        s.push_str(&format!("<pk id='{i}'>{key}</pk>"));
    }
    s.push_str("</prekeys></bundle></item></publish></pubsub></iq>");
    v.push(("OMEMO bundle", s));
    let mut s = String::from(
        "<iq type='set' id='f1'><query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'>",
    );
    for i in 0..40 {
        s.push_str(&format!(
            "<field var='muc#roomconfig_option{i}' type='text-single'><value>value {i}</value></field>"
        ));
    }
    s.push_str("</x></query></iq>");
    v.push(("data form", s));
    let mut s = String::new();
    for i in 0..50 {
        s.push_str(&format!(
            "<message to='alice@example.org/phone' id='m{i}'><result xmlns='urn:xmpp:mam:2' queryid='q' id='a{i}'>\
             <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2025-01-01T10:00:00Z'/>\
             <message xmlns='jabber:client' from='bob@example.org/laptop' to='alice@example.org' type='chat' id='x{i}'>\
             <body>See you at the ward meeting at ten, bring the charts.</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='o{i}'/><active xmlns='http://jabber.org/protocol/chatstates'/>\
             <markable xmlns='urn:xmpp:chat-markers:0'/></message></forwarded></result></message>"
        ));
    }
    v.push(("MAM results", s));
    v.push((
        "message with a 1 KB body",
        format!(
            "<message to='bob@example.org' type='chat' id='m1'><body>{}</body>\
             <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>",
            "Lorem ipsum dolor sit amet. ".repeat(36)
        ),
    ));
    v
}

#[test]
fn real_stanzas_fit_the_memory_budget_and_the_accounting_is_honest() {
    let _g = serial();
    let limits = Limits {
        max_stanza_size: 1 << 20,
        ..Limits::default()
    };
    for (what, xml) in real_stanzas() {
        let input = format!("{HEADER}{xml}");
        let Fed {
            err,
            stanzas,
            peak,
            retained,
        } = feed(limits, input.as_bytes());
        assert_eq!(err, None, "{what}");
        let charged: usize = stanzas.iter().map(Element::memory_size).sum();
        let wire = xml.len();
        let ratio = charged as f64 / wire as f64;
        println!(
            "{what:26} {wire:7} bytes  charged {charged:8}  ×{ratio:.1}  allocator peak {peak}"
        );
        // Scaled up to the size limit it would still fit the budget.
        assert!(ratio < MEMORY_PER_BYTE as f64, "{what}: ×{ratio:.1}");
        // The parser's accounting (what it charges) covers what the allocator sees held.
        assert!(
            retained <= charged,
            "{what}: allocator {retained} > charged {charged}"
        );
    }
}
