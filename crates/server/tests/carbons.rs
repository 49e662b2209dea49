//! XEP-0280 Message Carbons: alice on a phone and a desktop, bob on one device. The desktop
//! enables carbons and sees what the phone sends and receives; private messages and disabled
//! carbons stay out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{Client, TestServer};
use zorg_proto::{Element, ns};

/// The message forwarded inside a carbon of `kind` ("sent" or "received") for `to`, checking
/// the wrapper (XEP-0280 §6, §7: from the bare JID, to the full JID, the original's type).
fn carbon(e: &Element, kind: &str, to: &str) -> Element {
    assert_eq!(e.name(), "message", "{}", e.to_xml(""));
    assert_eq!(e.attr("from"), Some("alice@localhost"), "{}", e.to_xml(""));
    assert_eq!(e.attr("to"), Some(to), "{}", e.to_xml(""));
    let wrapper = e
        .get_child(kind, ns::CARBONS)
        .unwrap_or_else(|| panic!("no <{kind}/>: {}", e.to_xml("")));
    let inner = wrapper
        .get_child("forwarded", ns::FORWARD)
        .and_then(|f| f.get_child("message", ns::CLIENT))
        .expect("a forwarded message")
        .clone();
    assert_eq!(e.attr("type"), inner.attr("type"));
    inner
}

fn body(e: &Element) -> String {
    e.get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

/// alice/phone (priority 5), alice/desk (priority 0) and bob/pc, all online and done with the
/// presence exchange between alice's two resources.
async fn setup(t: &TestServer) -> (Client, Client, Client) {
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    let mut phone = t.login("alice", "phone").await;
    phone
        .send("<presence><priority>5</priority></presence>")
        .await;
    phone
        .expect_next("own presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone")
        })
        .await;
    let mut desk = t.login("alice", "desk").await;
    desk.available().await;
    phone
        .expect_next("the desk's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("alice@localhost/desk")
        })
        .await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;
    // Carbons are the desk's choice; the phone never enables them.
    let r = desk
        .iq(
            "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            "c1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    // Enabling twice is not an error (§10.1).
    let r = desk
        .iq(
            "<iq type='set' id='c2'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            "c2",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    (phone, desk, bob)
}

#[tokio::test]
async fn the_desktop_sees_what_the_phone_receives_and_sends() {
    let t = TestServer::start().await;
    let (mut phone, mut desk, mut bob) = setup(&t).await;

    // Received, to the phone's full JID: the phone gets it, the desk a carbon.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='m1'><body>BP 120/80</body></message>",
    )
    .await;
    let m = phone.expect_next("bob's message", is_message).await;
    assert_eq!(body(&m), "BP 120/80");
    assert!(m.get_child("received", ns::CARBONS).is_none());
    let c = desk.expect_next("a received carbon", is_message).await;
    let inner = carbon(&c, "received", "alice@localhost/desk");
    assert_eq!(inner.attr("from"), Some("bob@localhost/pc"));
    assert_eq!(inner.attr("to"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("id"), Some("m1"));
    assert_eq!(body(&inner), "BP 120/80");

    // Sent by the phone: bob gets it, the desk a sent carbon.
    phone
        .send("<message to='bob@localhost' type='chat' id='s1'><body>noted</body></message>")
        .await;
    let m = bob.expect_next("alice's reply", is_message).await;
    assert_eq!(body(&m), "noted");
    let c = desk.expect_next("a sent carbon", is_message).await;
    let inner = carbon(&c, "sent", "alice@localhost/desk");
    assert_eq!(inner.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("to"), Some("bob@localhost"));
    assert_eq!(body(&inner), "noted");

    // Sent by the desk (carbons on): bob gets it, and nobody gets a copy. The phone has not
    // enabled carbons, and the desk does not get its own message back.
    desk.send("<message to='bob@localhost' type='chat' id='s2'><body>from desk</body></message>")
        .await;
    assert_eq!(
        body(&bob.expect_next("the desk's message", is_message).await),
        "from desk"
    );
    desk.expect_silence(300).await;
    phone.expect_silence(100).await;
    t.stop().await;
}

#[tokio::test]
async fn to_the_bare_jid_the_resource_left_out_gets_a_carbon() {
    let t = TestServer::start().await;
    let (mut phone, mut desk, mut bob) = setup(&t).await;
    // RFC 6121: the highest priority (the phone) gets a message to the bare JID; the desk,
    // which did not, gets a carbon (§6).
    bob.send("<message to='alice@localhost' type='chat' id='b1'><body>bare</body></message>")
        .await;
    let m = phone.expect_next("the message", is_message).await;
    assert_eq!(body(&m), "bare");
    let c = desk.expect_next("a received carbon", is_message).await;
    let inner = carbon(&c, "received", "alice@localhost/desk");
    assert_eq!(inner.attr("to"), Some("alice@localhost"));
    assert_eq!(body(&inner), "bare");
    // A normal message with a body is copied too; one without a body (a subject only) is not.
    bob.send("<message to='alice@localhost/phone' id='n1'><body>normal</body></message>")
        .await;
    phone.expect_next("n1", is_message).await;
    let c = desk.expect_next("a carbon of n1", is_message).await;
    assert_eq!(
        body(&carbon(&c, "received", "alice@localhost/desk")),
        "normal"
    );
    bob.send("<message to='alice@localhost/phone' id='n2'><subject>x</subject></message>")
        .await;
    phone.expect_next("n2", is_message).await;
    desk.expect_silence(300).await;
    t.stop().await;
}

#[tokio::test]
async fn private_messages_and_disabled_carbons_are_not_copied() {
    let t = TestServer::start().await;
    let (mut phone, mut desk, mut bob) = setup(&t).await;
    // A private message from bob: the phone gets it without <private/>, the desk nothing.
    bob.send("<message to='alice@localhost/phone' type='chat' id='p1'><body>only here</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    let m = phone.expect_next("the private message", is_message).await;
    assert_eq!(body(&m), "only here");
    assert!(
        m.get_child("private", ns::CARBONS).is_none(),
        "<private/> is removed before delivery"
    );
    // A private message from the phone, and one with the no-copy hint.
    phone
        .send("<message to='bob@localhost' type='chat' id='p2'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    phone
        .send("<message to='bob@localhost' type='chat' id='p3'><body>hint</body><no-copy xmlns='urn:xmpp:hints'/></message>")
        .await;
    bob.expect_next("p2", |e| e.attr("id") == Some("p2")).await;
    bob.expect_next("p3", |e| e.attr("id") == Some("p3")).await;
    desk.expect_silence(300).await;

    // The desk disables carbons: nothing more reaches it.
    let r = desk
        .iq(
            "<iq type='set' id='d1'><disable xmlns='urn:xmpp:carbons:2'/></iq>",
            "d1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='m2'><body>later</body></message>",
    )
    .await;
    phone.expect_next("m2", is_message).await;
    phone
        .send("<message to='bob@localhost' type='chat' id='s3'><body>ok</body></message>")
        .await;
    bob.expect_next("s3", |e| e.attr("id") == Some("s3")).await;
    desk.expect_silence(300).await;

    // A get is not how carbons are switched.
    let r = desk
        .iq(
            "<iq type='get' id='g1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
            "g1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    t.stop().await;
}

#[tokio::test]
async fn the_server_announces_carbons() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "pass").await;
    let mut alice = t.login("alice", "phone").await;
    let r = alice
        .iq(
            "<iq type='get' to='localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await;
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert!(
        q.children().any(|f| f.attr("var") == Some(ns::CARBONS)),
        "{}",
        r.to_xml("")
    );
    t.stop().await;
}
