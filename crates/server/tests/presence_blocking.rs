//! XEP-0191 §3.1 and presence: a contact the user blocks gets no presence from the user
//! (broadcast, second resource, directed, on disconnect) and the user gets none from it; the
//! block itself sends one unavailable, the unblock brings presence back both ways. Locally and
//! across two federated servers.
//!
//! Negative checks read every stanza up to a barrier: a message from a third account, sent after
//! the act under test, that travels the same queue (see `common::transcript`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::fed::{Ca, online, pair};
use common::transcript::{message_id, presence_from, set_roster as roster, show, until};
use common::{Client, TestServer};
use zorg_proto::{Element, ns};
use zorg_server::storage::Subscription;

fn is_available(e: &Element) -> bool {
    e.name() == "presence" && e.attr("type").is_none()
}

async fn block(c: &mut Client, jid: &str) {
    let r = c
        .iq(
            &format!(
                "<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='{jid}'/>\
                 </block></iq>"
            ),
            "blk",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
}

async fn unblock(c: &mut Client, jid: &str) {
    let r = c
        .iq(
            &format!(
                "<iq type='set' id='unb'><unblock xmlns='urn:xmpp:blocking'><item jid='{jid}'/>\
                 </unblock></iq>"
            ),
            "unb",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
}

/// Carol sends `id` to `to`: the barrier that ends a negative check.
async fn barrier(carol: &mut Client, to: &str, id: &str) {
    carol
        .send(&format!(
            "<message to='{to}' id='{id}' type='chat'><body>barrier</body></message>"
        ))
        .await;
}

/// A ping to the client's server, answered: what the client sent before was handled.
async fn ping(c: &mut Client, server: &str) {
    let r = c
        .iq(
            &format!("<iq type='get' id='png' to='{server}'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "png",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
}

/// Sends a presence and waits for its reflection.
async fn set_presence(c: &mut Client, xml: &str) {
    c.send(xml).await;
    let me = c.jid.clone();
    c.expect("own presence", |e| presence_from(e, &me)).await;
}

/// alice, bob and carol on one server: alice and bob see each other's presence, carol sees
/// alice's; all three online, the initial presence exchanged and read.
async fn three_online(t: &TestServer) -> (Client, Client, Client) {
    for u in ["alice", "bob", "carol"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    roster(t, "alice@localhost", "bob@localhost", Subscription::Both).await;
    roster(t, "bob@localhost", "alice@localhost", Subscription::Both).await;
    roster(t, "alice@localhost", "carol@localhost", Subscription::From).await;
    roster(t, "carol@localhost", "alice@localhost", Subscription::To).await;
    let mut alice = t.login("alice", "a").await;
    let mut bob = t.login("bob", "b").await;
    let mut carol = t.login("carol", "c").await;
    alice.available().await;
    bob.available().await;
    bob.expect("alice's presence", |e| {
        presence_from(e, "alice@localhost/a")
    })
    .await;
    alice
        .expect("bob's presence", |e| presence_from(e, "bob@localhost/b"))
        .await;
    carol.available().await;
    carol
        .expect("alice's presence", |e| {
            presence_from(e, "alice@localhost/a")
        })
        .await;
    (alice, bob, carol)
}

#[tokio::test]
async fn a_blocked_contact_gets_one_unavailable_then_no_presence() {
    let t = TestServer::start().await;
    let (mut alice, mut bob, mut carol) = three_online(&t).await;

    // Alice blocks Bob: Bob is told she is gone, and that is the next thing he reads.
    block(&mut alice, "bob@localhost").await;
    let p = bob.next().await;
    assert!(presence_from(&p, "alice@localhost/a"), "{}", p.to_xml(""));
    assert_eq!(p.attr("type"), Some("unavailable"));

    // Her broadcast, a directed presence and her second resource's initial presence do not
    // reach him.
    set_presence(&mut alice, "<presence><show>away</show></presence>").await;
    alice.send("<presence to='bob@localhost/b'/>").await;
    ping(&mut alice, "localhost").await; // the directed presence was handled
    let mut alice2 = t.login("alice", "a2").await;
    alice2.available().await;
    barrier(&mut carol, "bob@localhost/b", "x1").await;
    let got = until(&mut bob, "carol's barrier", |e| message_id(e, "x1")).await;
    assert!(
        !got.iter().any(|e| e.name() == "presence"),
        "bob got presence from the account that blocks him:\n{}",
        show(&got)
    );

    t.stop().await;
}

#[tokio::test]
async fn a_blocked_contact_gets_nothing_when_the_user_goes_offline() {
    let t = TestServer::start().await;
    let (mut alice, mut bob, mut carol) = three_online(&t).await;
    let mut alice2 = t.login("alice", "a2").await;
    alice2.available().await;
    bob.expect("alice2's presence", |e| {
        presence_from(e, "alice@localhost/a2")
    })
    .await;
    // Her other session hears of the new one before it blocks anyone.
    alice
        .expect_next("alice2's presence", |e| {
            presence_from(e, "alice@localhost/a2")
        })
        .await;
    block(&mut alice, "bob@localhost").await;
    for _ in 0..2 {
        let p = bob.next().await;
        assert_eq!(p.attr("type"), Some("unavailable"), "{}", p.to_xml(""));
    }
    // The unavailable presence when her sessions end does not reach him: Carol, the next
    // contact in the same broadcast, gets hers first, then the barrier goes to Bob.
    drop(alice2);
    carol
        .expect("alice2 gone", |e| {
            presence_from(e, "alice@localhost/a2") && e.attr("type") == Some("unavailable")
        })
        .await;
    drop(alice);
    carol
        .expect("alice gone", |e| {
            presence_from(e, "alice@localhost/a") && e.attr("type") == Some("unavailable")
        })
        .await;
    barrier(&mut carol, "bob@localhost/b", "x2").await;
    let got = until(&mut bob, "carol's barrier", |e| message_id(e, "x2")).await;
    assert!(
        !got.iter().any(|e| e.name() == "presence"),
        "bob got presence at alice's disconnect:\n{}",
        show(&got)
    );
    t.stop().await;
}

#[tokio::test]
async fn the_user_gets_no_presence_from_a_blocked_contact() {
    let t = TestServer::start().await;
    let (mut alice, mut bob, mut carol) = three_online(&t).await;
    block(&mut alice, "bob@localhost").await;
    bob.next().await; // the unavailable, checked above
    // Bob's broadcast, his directed presence and his new resource do not reach Alice, and her
    // new resource's probe learns nothing of him.
    set_presence(&mut bob, "<presence><show>dnd</show></presence>").await;
    bob.send("<presence to='alice@localhost/a'/>").await;
    ping(&mut bob, "localhost").await;
    let mut bob2 = t.login("bob", "b2").await;
    bob2.available().await;
    barrier(&mut carol, "alice@localhost/a", "y1").await;
    let got = until(&mut alice, "carol's barrier", |e| message_id(e, "y1")).await;
    assert!(
        !got.iter().any(|e| e.name() == "presence"),
        "alice got presence from the contact she blocks:\n{}",
        show(&got)
    );
    // Her own presence comes back first; a probe answer would follow it.
    let mut alice2 = t.login("alice", "a2").await;
    alice2.available().await;
    barrier(&mut carol, "alice@localhost/a2", "y2").await;
    let got = until(&mut alice2, "carol's barrier", |e| message_id(e, "y2")).await;
    assert!(
        !got.iter()
            .any(|e| e.attr("from").is_some_and(|f| f.starts_with("bob@"))),
        "a probe answered with the blocked contact's presence:\n{}",
        show(&got)
    );
    t.stop().await;
}

#[tokio::test]
async fn unblocking_brings_presence_back_both_ways() {
    let t = TestServer::start().await;
    let (mut alice, mut bob, _carol) = three_online(&t).await;
    block(&mut alice, "bob@localhost").await;
    bob.next().await;
    set_presence(&mut alice, "<presence><show>away</show></presence>").await;
    set_presence(&mut bob, "<presence><show>dnd</show></presence>").await;

    // XEP-0191 §3.4: Bob gets Alice's current presence; Alice learns Bob's by a probe.
    unblock(&mut alice, "bob@localhost").await;
    let p = bob
        .expect("alice's presence", |e| {
            presence_from(e, "alice@localhost/a")
        })
        .await;
    assert!(is_available(&p), "{}", p.to_xml(""));
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "away");
    let p = alice
        .expect("bob's presence", |e| presence_from(e, "bob@localhost/b"))
        .await;
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "dnd");
    t.stop().await;
}

#[tokio::test]
async fn a_blocked_remote_contact_gets_no_presence_and_unblocking_restores_it() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    a.add_user("carol@a.test", "pass").await;
    roster(&a, "alice@a.test", "bob@b.test", Subscription::Both).await;
    roster(&b, "bob@b.test", "alice@a.test", Subscription::Both).await;
    // Bob first, and his initial presence (broadcast and probe, to nobody yet) handled at
    // a.test before Alice comes: the ping travels the same link after them. Then each gets
    // the other's presence exactly once: Alice's broadcast, and the answer to her probe.
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    ping(&mut bob, "a.test").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .expect("bob's presence", |e| presence_from(e, "bob@b.test/desk"))
        .await;
    bob.expect("alice's presence", |e| {
        presence_from(e, "alice@a.test/phone")
    })
    .await;
    let mut carol = online(&a, "a.test", "carol", "c").await;

    block(&mut alice, "bob@b.test").await;
    let p = bob.next().await;
    assert!(presence_from(&p, "alice@a.test/phone"), "{}", p.to_xml(""));
    assert_eq!(p.attr("type"), Some("unavailable"));

    // Her presence change does not cross to b.test: Carol's message, sent after it over the
    // same link, is the next thing Bob reads.
    set_presence(&mut alice, "<presence><show>away</show></presence>").await;
    barrier(&mut carol, "bob@b.test/desk", "z1").await;
    let got = until(&mut bob, "carol's barrier", |e| message_id(e, "z1")).await;
    assert!(
        !got.iter().any(|e| e.name() == "presence"),
        "bob@b.test got presence from the account that blocks him:\n{}",
        show(&got)
    );

    unblock(&mut alice, "bob@b.test").await;
    let p = bob
        .expect("alice's presence", |e| {
            presence_from(e, "alice@a.test/phone")
        })
        .await;
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "away");
    alice
        .expect("bob's presence, by probe", |e| {
            presence_from(e, "bob@b.test/desk") && is_available(e)
        })
        .await;
    a.stop().await;
    b.stop().await;
}
