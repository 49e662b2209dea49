//! XEP-0357 Push Notifications: alice's phone registers an app server; while alice has no
//! session, messages to her make the server publish a notification there. The app server is
//! played by a second account's session (pushapp@localhost/app), or by bob@b.test over
//! federation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::fed::{Ca, online, pair_with};
use common::{Client, TestServer, eventually, eventually_async};
use zorg_proto::{Element, ns};
use zorg_server::config::DurationStr;
use zorg_server::storage::PushStore;

const ALICE: &str = "alice@localhost";
const APP: &str = "pushapp@localhost/app";
const OPTIONS: &str = "<x xmlns='jabber:x:data' type='submit'>\
    <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
    <field var='secret'><value>s3cr3t</value></field></x>";

/// A server whose notifications may follow each other after one second (the default five
/// would make the tests slow), with alice, bob and pushapp.
async fn server(include_sender: bool) -> TestServer {
    let t = TestServer::start_with(|c| {
        c.push.min_interval = DurationStr::from_secs(1);
        c.push.include_sender = include_sender;
    })
    .await;
    for u in ["alice", "bob", "pushapp"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    t
}

/// Sends an IQ set with `payload` and returns the answer.
async fn set(c: &mut Client, id: &str, payload: &str) -> Element {
    c.iq(&format!("<iq type='set' id='{id}'>{payload}</iq>"), id)
        .await
}

/// The condition of an error reply.
fn condition(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    e.get_child("error", ns::CLIENT)
        .and_then(|err| err.children().find(|c| c.ns() == ns::STANZA_ERRORS))
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// alice's registrations as (service, node, has options).
async fn registrations(t: &TestServer, owner: &str) -> Vec<(String, String, bool)> {
    t.server()
        .storage
        .push_registrations(owner)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.service, r.node, r.options.is_some()))
        .collect()
}

fn reg(service: &str, node: &str, options: bool) -> (String, String, bool) {
    (service.to_owned(), node.to_owned(), options)
}

/// alice logs in, enables `service`/`node` (with the secret form), and logs out; returns once
/// the server has no session of hers left.
async fn alice_registers_and_leaves(t: &TestServer, service: &str, node: &str) {
    let mut alice = t.login("alice", "phone").await;
    let r = set(
        &mut alice,
        "e1",
        &format!(
            "<enable xmlns='urn:xmpp:push:0' jid='{service}' node='{node}'>{OPTIONS}</enable>"
        ),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    drop(alice);
    let server = &t.running.as_ref().unwrap().server;
    eventually("alice's session to end", || {
        server.router.sessions(ALICE).is_empty()
    })
    .await;
}

fn is_publish(e: &Element) -> bool {
    e.name() == "iq" && e.attr("type") == Some("set") && e.has_child("pubsub", ns::PUBSUB)
}

/// The summary form of a publish, as (var, value) pairs, after checking the envelope.
fn summary(e: &Element, from: &str, node: &str) -> Vec<(String, String)> {
    assert_eq!(e.attr("from"), Some(from), "{}", e.to_xml(""));
    let pubsub = e.get_child("pubsub", ns::PUBSUB).unwrap();
    let publish = pubsub.get_child("publish", ns::PUBSUB).unwrap();
    assert_eq!(publish.attr("node"), Some(node));
    // The app server's secret comes back as publish-options.
    let opts = pubsub
        .get_child("publish-options", ns::PUBSUB)
        .and_then(|o| o.get_child("x", ns::DATA_FORMS))
        .expect("publish-options");
    assert!(opts.to_xml("").contains("s3cr3t"));
    publish
        .get_child("item", ns::PUBSUB)
        .and_then(|i| i.get_child("notification", ns::PUSH))
        .and_then(|n| n.get_child("x", ns::DATA_FORMS))
        .expect("a summary form")
        .children()
        .map(|f| {
            let v = f
                .get_child("value", ns::DATA_FORMS)
                .map(|v| v.text())
                .unwrap_or_default();
            (f.attr("var").unwrap_or_default().to_owned(), v)
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const SUMMARY: &str = "urn:xmpp:push:summary";

async fn bob_writes(bob: &mut Client, id: &str) {
    bob.send(&format!(
        "<message to='alice@localhost' type='chat' id='{id}'><body>BP 120/80, {id}</body></message>"
    ))
    .await;
}

#[tokio::test]
async fn enable_and_disable_by_jid_and_by_node() {
    const P: &str = "pushapp@localhost/a";
    const Q: &str = "pushapp@localhost/b";
    let t = server(false).await;
    let mut alice = t.login("alice", "phone").await;
    // Without publish-options, and with them; a second node of the same service.
    for (id, payload) in [
        (
            "e1",
            format!("<enable xmlns='urn:xmpp:push:0' jid='{P}' node='n1'/>"),
        ),
        (
            "e2",
            format!("<enable xmlns='urn:xmpp:push:0' jid='{P}' node='n2'>{OPTIONS}</enable>"),
        ),
        (
            "e3",
            format!("<enable xmlns='urn:xmpp:push:0' jid='{Q}' node='n1'/>"),
        ),
    ] {
        let r = set(&mut alice, id, &payload).await;
        assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    }
    assert_eq!(
        registrations(&t, ALICE).await,
        [reg(Q, "n1", false), reg(P, "n2", true), reg(P, "n1", false)]
    );
    // Enabling the same jid and node again replaces its options (§5: the last one wins).
    let r = set(
        &mut alice,
        "e4",
        &format!("<enable xmlns='urn:xmpp:push:0' jid='{P}' node='n1'>{OPTIONS}</enable>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        registrations(&t, ALICE).await,
        [reg(P, "n1", true), reg(Q, "n1", false), reg(P, "n2", true)]
    );

    // jid and node: that one only.
    let r = set(
        &mut alice,
        "d1",
        &format!("<disable xmlns='urn:xmpp:push:0' jid='{P}' node='n2'/>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        registrations(&t, ALICE).await,
        [reg(P, "n1", true), reg(Q, "n1", false)]
    );
    // jid alone: every node of that service.
    set(
        &mut alice,
        "e5",
        &format!("<enable xmlns='urn:xmpp:push:0' jid='{P}' node='n3'/>"),
    )
    .await;
    let r = set(
        &mut alice,
        "d2",
        &format!("<disable xmlns='urn:xmpp:push:0' jid='{P}'/>"),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(registrations(&t, ALICE).await, [reg(Q, "n1", false)]);
    // Disabling what is not enabled is not an error.
    let r = set(
        &mut alice,
        "d3",
        "<disable xmlns='urn:xmpp:push:0' jid='nobody@localhost/x'/>",
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"));

    // Registrations are bounded per account: the one enabled longest ago makes room.
    for i in 0..10 {
        set(
            &mut alice,
            &format!("m{i}"),
            &format!("<enable xmlns='urn:xmpp:push:0' jid='{P}' node='m{i}'/>"),
        )
        .await;
    }
    let regs = registrations(&t, ALICE).await;
    assert_eq!(regs.len(), 10);
    assert!(!regs.contains(&reg(Q, "n1", false)));
    t.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let t = server(false).await;
    let mut alice = t.login("alice", "phone").await;
    let cases = [
        (
            "<enable xmlns='urn:xmpp:push:0' jid='pushapp@localhost/a'/>",
            "bad-request",
        ),
        ("<enable xmlns='urn:xmpp:push:0' node='n'/>", "bad-request"),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='a@b@c' node='n'/>",
            "jid-malformed",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='pushapp@localhost/a' node='n' x='1'/>",
            "bad-request",
        ),
        (
            "<enable xmlns='urn:xmpp:push:0' jid='pushapp@localhost/a' node='n'><x xmlns='jabber:x:data'>\
             <field var='FORM_TYPE'><value>urn:other</value></field></x></enable>",
            "bad-request",
        ),
        ("<disable xmlns='urn:xmpp:push:0'/>", "bad-request"),
        (
            "<disable xmlns='urn:xmpp:push:0' jid='@x'/>",
            "jid-malformed",
        ),
        // Without federation a remote app server could never be reached: said at once.
        (
            "<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'/>",
            "remote-server-not-found",
        ),
    ];
    for (i, (payload, want)) in cases.iter().enumerate() {
        let r = set(&mut alice, &format!("b{i}"), payload).await;
        assert_eq!(condition(&r), *want, "{payload}");
    }
    // A get is not a request XEP-0357 knows.
    let r = alice
        .iq(
            "<iq type='get' id='g1'><enable xmlns='urn:xmpp:push:0' jid='p' node='n'/></iq>",
            "g1",
        )
        .await;
    assert_eq!(condition(&r), "bad-request");
    // Only alice herself may register app servers for her account.
    let mut bob = t.login("bob", "pc").await;
    let r = bob
        .iq(
            "<iq type='set' to='alice@localhost' id='x1'><enable xmlns='urn:xmpp:push:0' jid='bob@localhost/pc' node='n'/></iq>",
            "x1",
        )
        .await;
    assert_eq!(condition(&r), "service-unavailable");
    assert!(registrations(&t, ALICE).await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn the_account_announces_push() {
    let t = server(false).await;
    let mut alice = t.login("alice", "phone").await;
    let r = alice
        .iq(
            "<iq type='get' to='alice@localhost' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d1",
        )
        .await;
    let q = r.get_child("query", ns::DISCO_INFO).expect("disco#info");
    assert!(
        q.children().any(|f| f.attr("var") == Some(ns::PUSH)),
        "{}",
        r.to_xml("")
    );
    t.stop().await;
}

#[tokio::test]
async fn a_message_for_offline_alice_wakes_her_phone_until_the_app_server_refuses() {
    let t = server(false).await;
    let mut app = t.login("pushapp", "app").await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;

    // Bob writes; alice has no session: the app server gets a publish from alice's bare JID
    // that says one message waits, and nothing of the message itself.
    bob_writes(&mut bob, "m1").await;
    let p = app.expect_next("a publish", is_publish).await;
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "1")])
    );
    let xml = p.to_xml("");
    assert!(!xml.contains("BP 120/80"), "{xml}");
    assert!(!xml.contains("bob@localhost"), "{xml}");
    // The app server accepts it; the server stops waiting for the answer.
    let id = p.attr("id").unwrap().to_owned();
    app.send(&format!(
        "<iq type='result' to='alice@localhost' id='{id}'/>"
    ))
    .await;
    let server = &t.running.as_ref().unwrap().server;
    eventually("the answer to be taken", || {
        server.push.pending_count() == 0
    })
    .await;

    // A second message, after the interval: two are waiting now. A transient error (wait)
    // keeps the registration.
    bob_writes(&mut bob, "m2").await;
    let p = app.expect_next("a second publish", is_publish).await;
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "2")])
    );
    let id = p.attr("id").unwrap().to_owned();
    app.send(&format!(
        "<iq type='error' to='alice@localhost' id='{id}'><error type='wait'>\
         <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    eventually("the answer to be taken", || {
        server.push.pending_count() == 0
    })
    .await;
    assert_eq!(registrations(&t, ALICE).await, [reg(APP, "n1", true)]);

    // Someone other than the app server cannot cancel the registration with the id.
    bob_writes(&mut bob, "m3").await;
    let p = app.expect_next("a third publish", is_publish).await;
    let id = p.attr("id").unwrap().to_owned();
    bob.send(&format!(
        "<iq type='error' to='alice@localhost' id='{id}'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    bob.expect_silence(200).await;
    assert_eq!(registrations(&t, ALICE).await, [reg(APP, "n1", true)]);
    // The app server refuses (cancel): the registration is gone.
    app.send(&format!(
        "<iq type='error' to='alice@localhost' id='{id}'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    let storage = server.storage.clone();
    eventually_async("the registration to be removed", || async {
        storage.push_registrations(ALICE).await.unwrap().is_empty()
    })
    .await;
    // So the next message notifies nobody. The wait is part of the test: past the minimum
    // interval (one second here), a notification would be due if anyone were registered.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    bob_writes(&mut bob, "m4").await;
    app.expect_silence(1500).await;

    // All four messages wait for alice, none lost to push.
    let mut alice = t.login("alice", "phone").await;
    alice.available().await;
    for i in 1..=4 {
        let m = alice
            .expect_next("a stored message", |e| e.name() == "message")
            .await;
        assert_eq!(m.attr("id"), Some(format!("m{i}").as_str()));
    }
    t.stop().await;
}

#[tokio::test]
async fn a_burst_gives_one_notification_now_and_one_at_the_end_of_the_interval() {
    let t = server(false).await;
    let mut app = t.login("pushapp", "app").await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    let mut bob = t.login("bob", "pc").await;
    // The first message notifies at once.
    bob_writes(&mut bob, "m1").await;
    let p = app.expect_next("the first publish", is_publish).await;
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "1")])
    );
    // Three more within the interval (one second here) make one more notification at its end,
    // counting all four.
    for i in 2..=4 {
        bob_writes(&mut bob, &format!("m{i}")).await;
    }
    let p = app.expect_next("the second publish", is_publish).await;
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "4")])
    );
    app.expect_silence(1500).await;
    t.stop().await;
}

#[tokio::test]
async fn no_notification_while_alice_is_online() {
    let t = server(false).await;
    let mut app = t.login("pushapp", "app").await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    let mut alice = t.login("alice", "phone").await;
    alice.available().await;
    let mut bob = t.login("bob", "pc").await;
    bob_writes(&mut bob, "m1").await;
    let m = alice
        .expect_next("bob's message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("id"), Some("m1"));
    app.expect_silence(1500).await;
    // A chat state alone, stored while she is away, wakes nobody either.
    drop(alice);
    let server = &t.running.as_ref().unwrap().server;
    eventually("alice's session to end", || {
        server.router.sessions(ALICE).is_empty()
    })
    .await;
    bob.send("<message to='alice@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    app.expect_silence(1500).await;
    t.stop().await;
}

#[tokio::test]
async fn the_sender_is_named_only_when_the_operator_allows_it() {
    let t = server(true).await;
    let mut app = t.login("pushapp", "app").await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    let mut bob = t.login("bob", "pc").await;
    bob_writes(&mut bob, "m1").await;
    let p = app.expect_next("a publish", is_publish).await;
    // The bare JID, and still no body.
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[
            ("FORM_TYPE", SUMMARY),
            ("message-count", "1"),
            ("last-message-sender", "bob@localhost")
        ])
    );
    assert!(!p.to_xml("").contains("BP 120/80"));
    t.stop().await;
}

#[tokio::test]
async fn a_local_domain_is_no_push_service_and_its_registration_goes() {
    let t = server(false).await;
    alice_registers_and_leaves(&t, "localhost", "n1").await;
    let mut bob = t.login("bob", "pc").await;
    bob_writes(&mut bob, "m1").await;
    let storage = t.server().storage.clone();
    eventually_async("the registration to be removed", || async {
        storage.push_registrations(ALICE).await.unwrap().is_empty()
    })
    .await;
    t.stop().await;
}

#[tokio::test]
async fn deleting_the_account_removes_its_registrations() {
    use zorg_server::storage::AccountStore;
    let t = server(false).await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    assert_eq!(registrations(&t, ALICE).await.len(), 1);
    assert!(t.server().storage.delete_account(ALICE).await.unwrap());
    t.add_user(ALICE, "pass").await;
    assert!(registrations(&t, ALICE).await.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn an_app_server_on_another_server_gets_the_publish_over_federation() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair_with(&ca, ca.issue("b", &["b.test"]), |c| {
        c.push.min_interval = DurationStr::from_secs(1);
    })
    .await;
    a.add_user("carol@a.test", "pass").await;
    // bob@b.test/desk plays alice's app server.
    let mut app = online(&b, "b.test", "bob", "desk").await;
    let mut alice = a.login_at("a.test", "alice", "phone").await;
    let r = set(
        &mut alice,
        "e1",
        &format!(
            "<enable xmlns='urn:xmpp:push:0' jid='bob@b.test/desk' node='n1'>{OPTIONS}</enable>"
        ),
    )
    .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    drop(alice);
    let server = &a.running.as_ref().unwrap().server;
    eventually("alice's session to end", || {
        server.router.sessions("alice@a.test").is_empty()
    })
    .await;

    let mut carol = a.login_at("a.test", "carol", "pc").await;
    carol
        .send("<message to='alice@a.test' type='chat' id='m1'><body>hello</body></message>")
        .await;
    let p = app.expect_next("a publish over s2s", is_publish).await;
    assert_eq!(
        summary(&p, "alice@a.test", "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "1")])
    );
    assert!(!p.to_xml("").contains("hello"));
    // The answer travels back and is taken.
    let id = p.attr("id").unwrap().to_owned();
    app.send(&format!("<iq type='result' to='alice@a.test' id='{id}'/>"))
        .await;
    eventually("the answer to be taken", || {
        server.push.pending_count() == 0
    })
    .await;

    // A refusal over s2s disables the registration.
    carol
        .send("<message to='alice@a.test' type='chat' id='m2'><body>again</body></message>")
        .await;
    let p = app.expect_next("a second publish", is_publish).await;
    let id = p.attr("id").unwrap().to_owned();
    app.send(&format!(
        "<iq type='error' to='alice@a.test' id='{id}'><error type='auth'>\
         <forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    ))
    .await;
    let storage = server.storage.clone();
    eventually_async("the registration to be removed", || async {
        storage
            .push_registrations("alice@a.test")
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_message_for_a_hibernating_session_wakes_the_phone() {
    let t = server(false).await;
    let mut app = t.login("pushapp", "app").await;
    alice_registers_and_leaves(&t, APP, "n1").await;
    // alice's phone enables stream management with resumption, then its connection breaks.
    let mut phone = t.login("alice", "phone").await;
    phone
        .send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    phone
        .expect_next("enabled", |e| e.is("enabled", ns::SM))
        .await;
    phone.available().await;
    drop(phone);
    let server = &t.running.as_ref().unwrap().server;
    eventually("the phone to hibernate", || {
        server
            .router
            .sessions(ALICE)
            .iter()
            .all(|h| h.state.is_hibernating())
    })
    .await;
    assert_eq!(
        server.router.sessions(ALICE).len(),
        1,
        "still bound while it hibernates"
    );
    let mut bob = t.login("bob", "pc").await;
    bob_writes(&mut bob, "m1").await;
    let p = app.expect_next("a publish", is_publish).await;
    assert_eq!(
        summary(&p, ALICE, "n1"),
        pairs(&[("FORM_TYPE", SUMMARY), ("message-count", "1")])
    );
    t.stop().await;
}
