//! Fuzz target for the framing layer: arbitrary bytes, fed in arbitrary chunks, must never
//! panic, must respect the limits, and every stanza that comes out must serialise and parse
//! back to the same element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zorg_proto::{Frame, Limits, StreamParser, ns, parse_element};

const LIMITS: Limits = Limits {
    max_stanza_size: 4096,
    max_depth: 16,
    max_attributes: 16,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so that boundaries fall everywhere.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 64) + 1;
    let mut p = StreamParser::new(LIMITS);
    for piece in rest.chunks(chunk) {
        let mut d = piece;
        loop {
            match p.feed(&mut d) {
                Ok(Some(Frame::Stanza(el))) => {
                    let xml = el.to_xml(ns::CLIENT);
                    let again = parse_element(&xml, Limits { max_stanza_size: 1 << 20, ..LIMITS })
                        .expect("a parsed stanza serialises to XML that parses");
                    assert_eq!(again, el, "round trip changed the element");
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
