//! XEP-0352 Client State Indication: alice's phone goes to the background; bob (on a PC and a
//! tablet) keeps sending presence and chat states, which wait, until a real message or
//! `<active/>` brings them, in order and with presence squashed per sender.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{Client, TestServer};
use zorg_proto::{Element, Frame, ns};

fn status(e: &Element) -> String {
    e.get_child("status", ns::CLIENT)
        .map(|s| s.text())
        .unwrap_or_default()
}

fn presence(text: &str) -> String {
    format!("<presence to='alice@localhost/phone'><status>{text}</status></presence>")
}

const COMPOSING: &str = "<message to='alice@localhost/phone' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>";

/// A short name for what arrived: `p:<from resource>:<status>` for presence,
/// `m:<body>` for a message with a body (`cs` for any message without one).
fn describe(e: &Element) -> String {
    let from = e
        .attr("from")
        .and_then(|f| f.rsplit_once('/'))
        .map(|(_, r)| r)
        .unwrap_or_default();
    match e.name() {
        "presence" => format!("p:{from}:{}", status(e)),
        "message" => match e.get_child("body", ns::CLIENT) {
            Some(b) => format!("m:{}", b.text()),
            None => "cs".into(),
        },
        other => other.to_owned(),
    }
}

async fn next_n(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(describe(&c.next().await));
    }
    out
}

async fn setup(t: &TestServer) -> (Client, Client, Client) {
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    let mut alice = t.login("alice", "phone").await;
    alice.available().await;
    let pc = t.login("bob", "pc").await;
    let tab = t.login("bob", "tab").await;
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    // An IQ goes through at once, and proves the nonza was handled.
    alice.routed().await;
    (alice, pc, tab)
}

#[tokio::test]
async fn inactive_holds_presence_and_chat_states_until_a_message() {
    let t = TestServer::start().await;
    let (mut alice, mut pc, mut tab) = setup(&t).await;
    pc.send(&presence("one")).await;
    pc.routed().await;
    tab.send(&presence("tab")).await;
    tab.routed().await;
    pc.send(COMPOSING).await;
    pc.send(&presence("two")).await;
    pc.routed().await;
    alice.expect_silence(300).await;

    // A message with a body goes out at once, after what was held: the PC's first presence
    // was replaced by its latest.
    pc.send("<message to='alice@localhost/phone' type='chat'><body>BP?</body></message>")
        .await;
    assert_eq!(
        next_n(&mut alice, 4).await,
        ["p:tab:tab", "cs", "p:pc:two", "m:BP?"]
    );
    alice.expect_silence(200).await;

    // Receipts are not held either.
    tab.send("<message to='alice@localhost/phone'><received xmlns='urn:xmpp:receipts' id='x'/></message>")
        .await;
    assert_eq!(next_n(&mut alice, 1).await, ["cs"]);
    t.stop().await;
}

#[tokio::test]
async fn active_flushes_and_stops_holding() {
    let t = TestServer::start().await;
    let (mut alice, mut pc, _tab) = setup(&t).await;
    pc.send(&presence("away")).await;
    pc.send(COMPOSING).await;
    pc.routed().await;
    alice.expect_silence(300).await;
    alice.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    assert_eq!(next_n(&mut alice, 2).await, ["p:pc:away", "cs"]);
    pc.send(&presence("back")).await;
    assert_eq!(next_n(&mut alice, 1).await, ["p:pc:back"]);
    t.stop().await;
}

#[tokio::test]
async fn held_stanzas_are_not_counted_by_stream_management() {
    let t = TestServer::start().await;
    let (mut alice, mut pc, _tab) = setup(&t).await;
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    alice
        .expect_next("enabled", |e| e.is("enabled", ns::SM))
        .await;
    pc.send(&presence("held")).await;
    pc.routed().await;
    // Acknowledging one stanza is one too many: the held presence was not sent.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    match alice.frame().await {
        Some(Frame::Stanza(e)) if e.is("error", ns::STREAM) => {
            let too_high = e.get_child("handled-count-too-high", ns::SM).unwrap();
            assert_eq!(too_high.attr("send-count"), Some("0"));
        }
        other => panic!("expected only a stream error, got {other:?}"),
    }
    t.stop().await;
}
