//! Nothing acknowledged is lost: every message a client was told the server handled is
//! delivered, stored or bounced back to its sender, never dropped. Alice and bob, with
//! XEP-0198 acknowledgements, against offline stores that fill up, sessions that end with
//! messages queued, storage that cannot be written for a while and a damaged database file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Client, TestServer};
use zorg_proto::{Element, ns};
use zorg_server::storage::OfflineStore;

const ALICE: &str = "alice@localhost";

async fn users(t: &TestServer) {
    for u in ["alice", "bob", "carol"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}

/// Sends `<enable/>` (no resumption) and reads `<enabled/>`; the client's count starts.
async fn enable_sm(c: &mut Client) {
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = c.next().await;
    assert!(e.is("enabled", ns::SM), "{}", e.to_xml(""));
    c.handled = 0;
}

/// Waits (bounded) until `f` holds, polling what the server exposes.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A message's `id` attribute.
fn id(e: &Element) -> String {
    e.attr("id").unwrap_or_default().to_owned()
}

/// Reads until `want` messages arrived, answering the server's `<r/>` with the client's count
/// while what it acknowledged is below `ack_below`; returns the messages and the last `h` sent.
async fn read_messages(c: &mut Client, want: usize, ack_below: u32) -> (Vec<Element>, u32) {
    let mut msgs = Vec::new();
    let mut acked = 0;
    while msgs.len() < want {
        let e = c.next().await;
        if std::env::var("ZORG_TEST_TRACE").is_ok() {
            eprintln!("[{}] {}", c.jid, e.to_xml(""));
        }
        if e.is("r", ns::SM) {
            if acked < ack_below {
                acked = c.handled;
                c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{acked}'/>"))
                    .await;
            }
        } else if e.name() == "message" {
            msgs.push(e);
        }
    }
    (msgs, acked)
}

#[tokio::test]
async fn an_sm_login_with_800_stored_messages_gets_each_once_and_rows_go_only_when_acknowledged() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut bob = t.login("bob", "pc").await;
    for i in 0..800 {
        bob.send(&format!(
            "<message to='{ALICE}' type='chat' id='m{i}'><body>dose {i}</body></message>"
        ))
        .await;
    }
    bob.iq(
        "<iq type='get' id='s'><ping xmlns='urn:xmpp:ping'/></iq>",
        "s",
    )
    .await;
    let db = &t.server().storage;
    assert_eq!(db.offline_count(ALICE).await.unwrap(), 800);

    // Alice's phone: acknowledges only the first hundred or so, reads 300, then loses its
    // connection. The replay is paced (it stops at the window) and never cut off.
    let mut phone = t.login("alice", "phone").await;
    enable_sm(&mut phone).await;
    phone.send("<presence/>").await;
    let (first, acked) = read_messages(&mut phone, 300, 100).await;
    let ids: Vec<String> = first.iter().map(id).collect();
    let expected: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, expected, "in order, each once");
    // Handled stanzas: alice's own presence first, then messages.
    let acked_msgs = acked as usize - 1;
    assert!(
        (100..300).contains(&acked_msgs),
        "acknowledged {acked_msgs}"
    );
    let held = db.offline_count(ALICE).await.unwrap() as usize;
    assert!(
        held >= 800 - acked_msgs,
        "{held} stored: only acknowledged rows may go"
    );
    drop(phone);
    until("the phone's session ended", || async {
        t.server().router.sessions(ALICE).is_empty()
    })
    .await;
    // What was acknowledged is gone; what was written but not acknowledged is still stored.
    until("acknowledged rows deleted", || async {
        db.offline_count(ALICE).await.unwrap() as usize == 800 - acked_msgs
    })
    .await;

    // Again, acknowledging everything: exactly the rest, once each.
    let mut phone = t.login("alice", "phone").await;
    enable_sm(&mut phone).await;
    phone.send("<presence/>").await;
    let (rest, _) = read_messages(&mut phone, 800 - acked_msgs, u32::MAX).await;
    let ids: Vec<String> = rest.iter().map(id).collect();
    let expected: Vec<String> = (acked_msgs..800).map(|i| format!("m{i}")).collect();
    assert_eq!(ids, expected);
    for m in &rest {
        assert!(m.has_child("delay", ns::DELAY), "{}", m.to_xml(""));
    }
    // Nothing more: the next stanza after a ping is its answer (or an <r/> to answer).
    phone
        .send("<iq type='get' id='end'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let e = phone.next().await;
        if e.is("r", ns::SM) {
            let h = phone.handled;
            phone
                .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
                .await;
            continue;
        }
        assert_eq!(e.attr("id"), Some("end"), "{}", e.to_xml(""));
        break;
    }
    phone.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let h = phone.handled;
    phone
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
        .await;
    until("every row deleted", || async {
        db.offline_count(ALICE).await.unwrap() == 0
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn a_message_to_a_full_offline_store_bounces_and_is_archived_nowhere() {
    let t = TestServer::start_with(|c| c.limits.max_offline_per_account = 5).await;
    users(&t).await;
    let mut bob = t.login("bob", "pc").await;
    for i in 0..20 {
        bob.send(&format!(
            "<message to='{ALICE}' type='chat' id='m{i}'><body>dose {i}</body></message>"
        ))
        .await;
    }
    let mut bounced = Vec::new();
    for _ in 5..20 {
        let e = bob.next().await;
        assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
        assert!(
            e.get_child("error", ns::CLIENT)
                .unwrap()
                .has_child("service-unavailable", ns::STANZA_ERRORS),
            "{}",
            e.to_xml("")
        );
        bounced.push(id(&e));
    }
    let expected: Vec<String> = (5..20).map(|i| format!("m{i}")).collect();
    assert_eq!(bounced, expected);
    bob.iq(
        "<iq type='get' id='s'><ping xmlns='urn:xmpp:ping'/></iq>",
        "s",
    )
    .await;
    // Five stored, each archived once on either side; the fifteen bounced ones nowhere.
    let (items, _) = common::mam::query(&mut bob, "qb", "").await;
    let ids: Vec<String> = items.iter().map(|(_, m)| id(m)).collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"]);
    let mut alice = t.login("alice", "desk").await;
    let (items, _) = common::mam::query(&mut alice, "qa", "").await;
    let ids: Vec<String> = items.iter().map(|(_, m)| id(m)).collect();
    assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"]);
    t.stop().await;
}

/// What bob reads while he sends: the server's acknowledgements of his messages, its requests
/// for his (answered), and bounces (collected, each once).
async fn bob_reads(bob: &mut Client, bounced: &mut BTreeSet<String>) -> Option<u32> {
    let e = bob.next().await;
    if e.is("a", ns::SM) {
        return Some(e.attr("h").unwrap().parse().unwrap());
    }
    if e.is("r", ns::SM) {
        let h = bob.handled;
        bob.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
            .await;
    } else {
        assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
        assert!(bounced.insert(id(&e)), "bounced twice: {}", e.to_xml(""));
    }
    None
}

#[tokio::test]
async fn messages_queued_for_a_session_that_ends_are_stored_or_bounced_never_dropped() {
    // A small offline store, so that most of what alice's session held must bounce.
    let t = TestServer::start_with(|c| c.limits.max_offline_per_account = 20).await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    enable_sm(&mut alice).await;
    alice.available().await;
    let mut bob = t.login("bob", "pc").await;
    enable_sm(&mut bob).await;
    // Alice reads nothing and acknowledges nothing; bob sends in batches and waits for the
    // server to acknowledge each.
    const N: usize = 400;
    let mut bounced = BTreeSet::new();
    for batch in 0..N / 50 {
        for i in batch * 50..(batch + 1) * 50 {
            bob.send(&format!(
                "<message to='{ALICE}/desk' type='chat' id='m{i}'><body>dose {i}</body></message>"
            ))
            .await;
        }
        bob.send("<r xmlns='urn:xmpp:sm:3'/>").await;
        while bob_reads(&mut bob, &mut bounced).await != Some((batch as u32 + 1) * 50) {}
    }
    assert!(
        bounced.is_empty(),
        "alice's session took them all: {bounced:?}"
    );
    // Her connection breaks: her session ends, and what it held (written but not
    // acknowledged) goes to her offline store or back to bob.
    drop(alice);
    let db = &t.server().storage;
    loop {
        let stored = db.offline_count(ALICE).await.unwrap() as usize;
        if bounced.len() + stored == N {
            break;
        }
        bob_reads(&mut bob, &mut bounced).await;
    }
    let mut alice = t.login("alice", "desk").await;
    alice.send("<presence/>").await;
    let mut stored = BTreeSet::new();
    while stored.len() < 20 {
        let e = alice.next().await;
        if e.name() == "message" {
            assert!(stored.insert(id(&e)), "delivered twice: {}", e.to_xml(""));
        }
    }
    assert!(stored.is_disjoint(&bounced));
    assert_eq!(
        stored.len() + bounced.len(),
        N,
        "each message stored or bounced"
    );
    // Alice's archive holds what she can still get, not what bounced back to bob.
    let (items, _) = common::mam::query(&mut alice, "qa", "").await;
    let archived: BTreeSet<String> = items.iter().map(|(_, m)| id(m)).collect();
    assert_eq!(archived, stored, "bounced messages left in her archive");
    t.stop().await;
}
