//! Fuzz target for the framing layer: arbitrary bytes, fed in arbitrary chunks, must never
//! panic, must respect the limits, every stanza that comes out must serialise and parse back
//! to the same element, and the memory the parser holds must stay within a small multiple of
//! the bytes it has read (issue 13 item 7: a 230 KB stanza once held 1.6 GB, because every
//! element copied its namespace; no crash, no timeout, so only this oracle would have told).
#![no_main]

use std::alloc::System;

use cap::Cap;
use libfuzzer_sys::fuzz_target;
use zorg_proto::{Frame, Limits, StreamParser, ns, parse_element};

/// Counts the bytes this process holds; a wrapper around the system allocator, no unsafe here.
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes the parser may hold per byte read: the worst real case is an empty element (`<b/>`,
/// 4 bytes) as a tree node of about 100 bytes, twice that in a vector that has just grown.
const HELD_PER_BYTE: usize = 64;

/// What the parser holds whatever it reads: rxml's token buffer, the namespace table, stacks.
const HELD_FIXED: usize = 64 * 1024;

fn limits() -> Limits {
    // Written with `..` so that the target also builds against an older zorg-proto, to check
    // that the oracle catches what that one did.
    #[allow(clippy::needless_update)]
    Limits {
        max_stanza_size: 4096,
        max_depth: 16,
        max_attributes: 16,
        ..Limits::default()
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so that boundaries fall everywhere.
    let Some((&chunk, rest)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 64) + 1;
    let base = ALLOC.allocated();
    let mut read = 0;
    let mut p = StreamParser::new(limits());
    for piece in rest.chunks(chunk) {
        let mut d = piece;
        loop {
            let before = d.len();
            let r = p.feed(&mut d);
            read += before - d.len();
            // While the stanza that came out (if any) is still held.
            let held = ALLOC.allocated().saturating_sub(base);
            assert!(
                held <= HELD_PER_BYTE * read + HELD_FIXED,
                "the parser holds {held} bytes after reading {read}"
            );
            match r {
                Ok(Some(Frame::Stanza(el))) => {
                    let xml = el.to_xml(ns::CLIENT);
                    #[allow(clippy::needless_update)]
                    let again = parse_element(&xml, Limits { max_stanza_size: 1 << 20, ..limits() })
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
