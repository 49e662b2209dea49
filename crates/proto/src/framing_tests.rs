//! Tests of the framing layer: limits, restricted XML, namespaces, round trips.

use super::*;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";

fn parse_all(limits: Limits, input: &[u8]) -> (Vec<Frame>, Option<FramingError>) {
    let mut p = StreamParser::new(limits);
    let mut out = Vec::new();
    let mut data = input;
    loop {
        match p.feed(&mut data) {
            Ok(Some(f)) => out.push(f),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn stanzas(input: &str) -> Vec<Element> {
    let (frames, err) = parse_all(Limits::default(), input.as_bytes());
    assert_eq!(err, None);
    frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Stanza(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn error_of(input: &str) -> FramingError {
    let (_, err) = parse_all(Limits::default(), input.as_bytes());
    err.expect("expected an error")
}

#[test]
fn header_then_stanzas_then_close() {
    let input = format!(
        "{HEADER}<message to='a@b' type='chat'><body>hi &amp; bye</body></message> \
         <iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>"
    );
    let (frames, err) = parse_all(Limits::default(), input.as_bytes());
    assert_eq!(err, None);
    assert_eq!(frames.len(), 4);
    let Frame::StreamOpen(h) = &frames[0] else {
        panic!("no header")
    };
    assert_eq!(h.name, "stream");
    assert_eq!(h.ns, ns::STREAM);
    assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
    assert_eq!(h.attr("to"), Some("localhost"));
    assert_eq!(h.lang(), Some("en"));
    let Frame::Stanza(m) = &frames[1] else {
        panic!()
    };
    assert!(m.is("message", ns::CLIENT));
    assert_eq!(
        m.get_child("body", ns::CLIENT).map(|b| b.text()),
        Some("hi & bye".into())
    );
    let Frame::Stanza(iq) = &frames[2] else {
        panic!()
    };
    assert!(iq.has_child("ping", ns::PING));
    assert!(matches!(frames[3], Frame::StreamClose));
}

#[test]
fn byte_at_a_time_gives_same_result() {
    let input = format!("{HEADER}<message to='a@b'><body>h\u{e9}llo \u{1F600}</body></message>");
    let mut p = StreamParser::new(Limits::default());
    let mut got = Vec::new();
    for b in input.as_bytes() {
        let mut d = std::slice::from_ref(b);
        while let Some(f) = p.feed(&mut d).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got.len(), 2);
    let Frame::Stanza(m) = &got[1] else { panic!() };
    assert_eq!(m.children().next().unwrap().text(), "h\u{e9}llo \u{1F600}");
}

#[test]
fn server_namespace_canonicalised_and_prefixes_resolved() {
    let s = stanzas(
        "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
         xmlns:db='jabber:server:dialback'><message xmlns:x='urn:x'><x:y x:a='1' b='2'/></message>\
         <db:result/>",
    );
    assert!(s[0].is("message", ns::CLIENT));
    let y = s[0].children().next().unwrap();
    assert!(y.is("y", "urn:x"));
    assert_eq!(y.attr_ns("urn:x", "a"), Some("1"));
    assert_eq!(y.attr("b"), Some("2"));
    assert!(s[1].is("result", "jabber:server:dialback"));
}

#[test]
fn round_trip_through_serialiser() {
    let input = format!(
        "{HEADER}<message to='a@b' xml:lang='de'><body>&lt;&gt;&amp;'\"</body>\
         <x xmlns='urn:x' a='&apos;&quot;'><y/></x></message>"
    );
    let s = stanzas(&input);
    let xml = s[0].to_xml(ns::CLIENT);
    let again = stanzas(&format!("{HEADER}{xml}"));
    assert_eq!(s[0], again[0]);
}

#[test]
fn rejects_dtd_entities_pi_comments() {
    for bad in [
        "<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x 'y'>]><stream:stream/>",
        &format!("{HEADER}<message>&x;</message>"),
        &format!("{HEADER}<?pi stuff?>"),
        &format!("{HEADER}<!-- comment -->"),
    ] {
        let e = error_of(bad);
        assert!(
            matches!(
                e,
                FramingError::Restricted(_) | FramingError::NotWellFormed(_)
            ),
            "{bad}: {e:?}"
        );
    }
    assert!(matches!(
        error_of(&format!("{HEADER}<!-- c -->")),
        FramingError::Restricted(_)
    ));
}

#[test]
fn rejects_bad_utf8_and_characters() {
    let mut bad = HEADER.as_bytes().to_vec();
    bad.extend_from_slice(b"<message><body>\xff\xfe</body></message>");
    let (_, e) = parse_all(Limits::default(), &bad);
    assert!(matches!(e, Some(FramingError::NotWellFormed(_))), "{e:?}");
    for bad in [
        format!("{HEADER}<message><body>&#0;</body></message>"),
        format!("{HEADER}<message><body>\u{1}</body></message>"),
        format!("{HEADER}<message><body>&#xFFFE;</body></message>"),
    ] {
        assert!(matches!(error_of(&bad), FramingError::NotWellFormed(_)));
    }
}

#[test]
fn rejects_unbound_and_reserved_prefixes() {
    for bad in [
        format!("{HEADER}<foo:message/>"),
        format!("{HEADER}<message foo:a='1'/>"),
        format!("{HEADER}<message xmlns:xmlns='urn:x'/>"),
        format!("{HEADER}<message xmlns:xml='urn:x'/>"),
        format!("{HEADER}<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>"),
    ] {
        assert!(
            matches!(error_of(&bad), FramingError::BadNamespacePrefix(_)),
            "{bad}"
        );
    }
}

#[test]
fn rejects_empty_prefix_declaration() {
    let bad = format!("{HEADER}<message xmlns:p=''/>");
    assert!(matches!(
        error_of(&bad),
        FramingError::BadNamespacePrefix(_) | FramingError::NotWellFormed(_)
    ));
}

#[test]
fn rejects_duplicate_attributes_after_resolution() {
    let bad = format!("{HEADER}<message xmlns:a='urn:x' xmlns:b='urn:x' a:t='1' b:t='2'/>");
    assert!(matches!(error_of(&bad), FramingError::NotWellFormed(_)));
    let bad = format!("{HEADER}<message t='1' t='2'/>");
    assert!(matches!(error_of(&bad), FramingError::NotWellFormed(_)));
}

#[test]
fn mismatched_tags_and_text_at_stream_level() {
    assert!(matches!(
        error_of(&format!("{HEADER}<a></b>")),
        FramingError::NotWellFormed(_)
    ));
    assert_eq!(
        error_of(&format!("{HEADER} \n\tjunk<a/>")),
        FramingError::TextAtStreamLevel
    );
    // Whitespace keepalives are fine.
    assert!(stanzas(&format!("{HEADER} \n \r\n\t<a/>")).len() == 1);
}

#[test]
fn enforces_stanza_size() {
    let limits = Limits {
        max_stanza_size: 1000,
        ..Limits::default()
    };
    let ok = format!(
        "{HEADER}<message><body>{}</body></message>",
        "x".repeat(900)
    );
    assert_eq!(parse_all(limits, ok.as_bytes()).1, None);
    let big = format!(
        "{HEADER}<message><body>{}</body></message>",
        "x".repeat(1000)
    );
    assert_eq!(
        parse_all(limits, big.as_bytes()).1,
        Some(FramingError::TooLarge(1000))
    );
    // Many small stanzas are fine: the count restarts per stanza.
    let many = format!(
        "{HEADER}{}",
        "<message><body>xxxxxxxxxx</body></message>".repeat(200)
    );
    assert_eq!(parse_all(limits, many.as_bytes()).1, None);
    // An endless attribute value or name fails without completing, as a limit (not as
    // restricted XML: rxml reports its token limit with that condition).
    let endless = format!("{HEADER}<message a='{}", "y".repeat(5000));
    assert_eq!(
        parse_all(limits, endless.as_bytes()).1,
        Some(FramingError::TokenTooLong(1000))
    );
    let endless = format!("{HEADER}<message><{}", "y".repeat(5000));
    assert_eq!(
        parse_all(limits, endless.as_bytes()).1,
        Some(FramingError::TokenTooLong(1000))
    );
}

#[test]
fn enforces_depth_and_attributes() {
    let limits = Limits {
        max_depth: 4,
        max_attributes: 3,
        ..Limits::default()
    };
    const HEADER: &str = "<stream xmlns='jabber:client'>";
    let ok = format!("{HEADER}<a><b><c><d/></c></b></a>");
    assert_eq!(parse_all(limits, ok.as_bytes()).1, None);
    let deep = format!("{HEADER}<a><b><c><d><e/></d></c></b></a>");
    assert_eq!(
        parse_all(limits, deep.as_bytes()).1,
        Some(FramingError::TooDeep(4))
    );
    let attrs = format!("{HEADER}<a w='1' x='1' y='1' z='1'/>");
    assert_eq!(
        parse_all(limits, attrs.as_bytes()).1,
        Some(FramingError::TooManyAttributes(3))
    );
    let header_attrs = "<stream:stream a='1' b='1' c='1' d='1'>";
    assert!(parse_all(limits, header_attrs.as_bytes()).1.is_some());
}

#[test]
fn parses_stored_elements() {
    let el = Element::new("message", ns::CLIENT)
        .with_attr("to", "a@b")
        .with_child(Element::new("x", "urn:x").with_text("t"));
    let xml = el.to_xml(ns::CLIENT);
    assert_eq!(parse_element(&xml, Limits::default()).unwrap(), el);
    assert!(parse_element("<a/><b/>", Limits::default()).is_err());
    assert!(parse_element("<a>", Limits::default()).is_err());
    assert!(parse_element("text", Limits::default()).is_err());
}

#[test]
fn non_xml_fails_fast() {
    let (_, e) = parse_all(Limits::default(), b"GET / HTTP/1.1\r\n");
    assert!(matches!(e, Some(FramingError::NotWellFormed(_))));
    let (_, e) = parse_all(Limits::default(), b"\x16\x03\x01\x02\x00");
    assert!(matches!(e, Some(FramingError::NotWellFormed(_))));
    let (f, e) = parse_all(
        Limits::default(),
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    assert_eq!(e, None);
    assert_eq!(f.len(), 1);
}

#[test]
fn doctype_inside_stream_is_restricted() {
    let e = error_of(&format!("{HEADER}<!DOCTYPE x [<!ENTITY a 'b'>]>"));
    assert!(matches!(e, FramingError::Restricted(_)), "{e:?}");
}

#[test]
fn error_is_sticky() {
    let mut p = StreamParser::new(Limits::default());
    let mut d = format!("{HEADER}<a></b>").into_bytes();
    let mut s = &d[..];
    while let Ok(Some(_)) = p.feed(&mut s) {}
    d.clear();
    let mut s = &b"<ok/>"[..];
    assert!(p.feed(&mut s).is_err());
}

#[test]
fn namespaces_are_shared_not_copied() {
    // Issue 13 item 7: every child inherited its own copy of the namespace. Now the tree's
    // size does not depend on how long the inherited or prefixed namespace is.
    let tree = |uri: &str| {
        let input = format!(
            "{HEADER}<a xmlns='{uri}' xmlns:p='{uri}'>{}</a>",
            "<b p:x='1'/>".repeat(100)
        );
        let s = stanzas(&input);
        assert!(s[0].children().all(|c| c.ns() == uri));
        assert!(s[0].children().all(|c| c.attr_ns(uri, "x") == Some("1")));
        s[0].memory_size()
    };
    let short = tree("urn:a");
    let long = tree(&format!("urn:{}", "a".repeat(1000)));
    // One shared copy of the long name (two declarations), not 200.
    assert!(long < short + 3 * 1024, "{short} vs {long}");
}

#[test]
fn refuses_long_namespace_names() {
    let long = format!("urn:{}", "x".repeat(MAX_NAMESPACE_LEN));
    let ok = format!("urn:{}", "x".repeat(MAX_NAMESPACE_LEN - 4));
    assert_eq!(stanzas(&format!("{HEADER}<a xmlns='{ok}'/>")).len(), 1);
    for bad in [
        format!("{HEADER}<a xmlns='{long}'/>"),
        format!("{HEADER}<a xmlns:p='{long}'/>"),
        format!("<stream:stream xmlns='{long}'>"),
    ] {
        assert_eq!(
            error_of(&bad),
            FramingError::NamespaceTooLong(MAX_NAMESPACE_LEN)
        );
    }
    // Undeclared prefixes and ordinary long attribute values are not namespaces.
    let value = format!("{HEADER}<a x='{long}'/>");
    assert_eq!(stanzas(&value).len(), 1);
}

#[test]
fn enforces_elements_per_stanza() {
    let limits = Limits {
        max_elements: 10,
        ..Limits::default()
    };
    // The stanza counts itself: 1 + 9 children pass, 1 + 10 do not.
    let ok = format!("{HEADER}<a>{}</a>", "<b/>".repeat(9));
    assert_eq!(parse_all(limits, ok.as_bytes()).1, None);
    let many = format!("{HEADER}<a>{}</a>", "<b/>".repeat(10));
    assert_eq!(
        parse_all(limits, many.as_bytes()).1,
        Some(FramingError::TooManyElements(10))
    );
    // The count restarts per stanza, and nested elements count too.
    let each = format!("{HEADER}{}", "<a><b><c/></b></a>".repeat(100));
    assert_eq!(parse_all(limits, each.as_bytes()).1, None);
    let nested = format!("{HEADER}<a>{}</a>", "<b><c/></b>".repeat(5));
    assert_eq!(
        parse_all(limits, nested.as_bytes()).1,
        Some(FramingError::TooManyElements(10))
    );
}

#[test]
fn charges_memory_held_not_only_bytes() {
    let limits = Limits {
        max_stanza_size: 4096,
        max_elements: 100_000,
        ..Limits::default()
    };
    // 1,000 empty children are 4 KB on the wire but over 100 KB as a tree.
    let empty = format!("{HEADER}<a>{}</a>", "<b/>".repeat(1000));
    assert!(empty.len() - HEADER.len() < 4096);
    assert_eq!(
        parse_all(limits, empty.as_bytes()).1,
        Some(FramingError::TooMuchMemory(limits.max_memory()))
    );
    // The same bytes as text are fine.
    let text = format!("{HEADER}<a>{}</a>", "x".repeat(4000));
    assert_eq!(parse_all(limits, text.as_bytes()).1, None);
    // What a parsed stanza holds stays within the budget.
    let some = format!("{HEADER}<a>{}</a>", "<b c='d'/>".repeat(20));
    let (frames, err) = parse_all(limits, some.as_bytes());
    assert_eq!(err, None);
    let Some(Frame::Stanza(el)) = frames.last() else {
        panic!("no stanza")
    };
    assert!(el.memory_size() <= limits.max_memory());
}

#[test]
fn limits_change_between_stanzas() {
    // Before authentication: a small stanza limit; afterwards the full one, on the same stream
    // (dialback) or after a restart (SASL).
    let full = Limits::default();
    let pre = full.before_authentication(8192);
    let mut p = StreamParser::new(pre);
    let mut d = HEADER.as_bytes();
    assert!(matches!(p.feed(&mut d), Ok(Some(Frame::StreamOpen(_)))));
    let big = format!("<message><body>{}</body></message>", "x".repeat(10_000));
    p.set_limits(full);
    let mut d = big.as_bytes();
    assert!(matches!(p.feed(&mut d), Ok(Some(Frame::Stanza(_)))));
    assert_eq!(p.limits(), full);
    let mut p = StreamParser::new(pre);
    let input = format!("{HEADER}{big}");
    let mut d = input.as_bytes();
    let _ = p.feed(&mut d);
    assert_eq!(p.feed(&mut d).err(), Some(FramingError::TooLarge(8192)));
    let many = format!("{HEADER}<a>{}</a>", "<b/>".repeat(300));
    assert_eq!(
        parse_all(pre, many.as_bytes()).1,
        Some(FramingError::TooManyElements(
            crate::limits::PRE_AUTH_MAX_ELEMENTS
        ))
    );
}
