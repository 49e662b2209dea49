//! Times the framing layer on a typical 1 KB chat message, parsed a million times on one
//! stream (the path every stanza takes), and counts the bytes it allocates per message. Uses
//! only the API that older versions had too, so the same file measures before and after a
//! change (with `cap` as a dev-dependency):
//!
//! ```sh
//! cargo run --release -p zorg-proto --example framing_speed [COUNT]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::time::Instant;

use cap::Cap;
use zorg_proto::{Frame, Limits, StreamParser};

/// Counts what is allocated (the `stats` feature adds a counter; no unsafe here).
#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' xml:lang='en'>";

fn message() -> String {
    format!(
        "<message from='alice@example.org/phone' to='bob@example.org' type='chat' \
         id='8f2a1c3e-5b7d-4e90-a1b2-c3d4e5f6a7b8' xml:lang='en'>\
         <body>{}</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='8f2a1c3e-5b7d-4e90-a1b2-c3d4e5f6a7b8'/>\
         <request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/>\
         <active xmlns='http://jabber.org/protocol/chatstates'/>\
         <encryption xmlns='urn:xmpp:eme:0' namespace='urn:xmpp:omemo:2'/>\
         <store xmlns='urn:xmpp:hints'/></message>",
        "The patient in room 12 asks for the results of this morning; ".repeat(12)
    )
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("COUNT is a number"))
        .unwrap_or(1_000_000);
    let msg = message();
    let mut p = StreamParser::new(Limits::default());
    let mut d = HEADER.as_bytes();
    assert!(matches!(p.feed(&mut d), Ok(Some(Frame::StreamOpen(_)))));
    // Reads of 4 KiB, as the server does: several messages per read.
    let per_read = (4096 / msg.len()).max(1);
    let chunk = msg.repeat(per_read);
    let mut parsed = 0;
    let mut children = 0;
    let started = Instant::now();
    let allocated = ALLOC.total_allocated();
    while parsed < count {
        let mut d = chunk.as_bytes();
        while let Some(f) = p.feed(&mut d).expect("parses") {
            if let Frame::Stanza(el) = f {
                children += el.child_count();
                parsed += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let per_message = (ALLOC.total_allocated() - allocated) / parsed;
    println!(
        "{parsed} messages of {} bytes in {secs:.2} s: {:.0} ns each, {:.0} MB/s, \
         {per_message} bytes allocated each ({children} children)",
        msg.len(),
        secs * 1e9 / parsed as f64,
        (parsed * msg.len()) as f64 / secs / 1e6
    );
}
