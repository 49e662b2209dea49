//! RFC 6121 between two accounts: roster, subscription handshake, presence, messages to bare,
//! full and offline JIDs, strangers, blocking.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{TestServer, eventually};
use zorg_proto::{Element, ns};

fn is_presence_from<'a>(from: &'a str) -> impl Fn(&Element) -> bool + 'a {
    move |e| e.name() == "presence" && e.attr("from") == Some(from)
}

fn is_roster_push(jid: &'static str, sub: &'static str) -> impl Fn(&Element) -> bool {
    move |e| {
        e.name() == "iq"
            && e.attr("type") == Some("set")
            && e.get_child("query", ns::ROSTER)
                .and_then(|q| q.get_child("item", ns::ROSTER))
                .is_some_and(|i| i.attr("jid") == Some(jid) && i.attr("subscription") == Some(sub))
    }
}

/// Waits until `bare` has no session left (a dropped connection ends its session in the
/// background).
async fn offline(t: &TestServer, bare: &str) {
    eventually(&format!("{bare} to be offline"), || {
        t.server().router.sessions(bare).is_empty()
    })
    .await;
}

async fn users(t: &TestServer) {
    for u in ["alice", "bob", "carol"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}

#[tokio::test]
async fn subscription_handshake_roster_and_presence() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut bob = t.login("bob", "b").await;

    // Both fetch their rosters (and so get pushes), then go online.
    let r = alice
        .iq(
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
            "r1",
        )
        .await;
    assert_eq!(
        r.get_child("query", ns::ROSTER).unwrap().attr("ver"),
        Some("0")
    );
    bob.iq(
        "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        "r1",
    )
    .await;
    alice.available().await;
    bob.available().await;

    // Alice adds Bob and asks for his presence.
    alice.iq("<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' name='Bob'><group>Ward 3</group></item></query></iq>", "r2").await;
    alice
        .expect_next("push none", is_roster_push("bob@localhost", "none"))
        .await;
    alice
        .send("<presence to='bob@localhost' type='subscribe'/>")
        .await;
    let push = alice
        .expect_next("push ask", is_roster_push("bob@localhost", "none"))
        .await;
    let item = push
        .get_child("query", ns::ROSTER)
        .unwrap()
        .get_child("item", ns::ROSTER)
        .unwrap();
    assert_eq!(item.attr("ask"), Some("subscribe"));

    // Bob gets the request from Alice's bare JID and approves it.
    let req = bob
        .expect_next("subscribe", |e| {
            e.name() == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(req.attr("from"), Some("alice@localhost"));
    bob.send("<presence to='alice@localhost' type='subscribed'/>")
        .await;
    bob.expect_next("push from", is_roster_push("alice@localhost", "from"))
        .await;
    // Bob's approval gives Alice his presence; he learns nothing of hers (she did not approve).
    bob.expect_silence(200).await;

    // Alice sees the approval, her roster says "to", and she receives Bob's presence.
    alice
        .expect_next("push to", is_roster_push("bob@localhost", "to"))
        .await;
    alice
        .expect_next("subscribed", |e| e.attr("type") == Some("subscribed"))
        .await;
    alice
        .expect_next("bob's presence", is_presence_from("bob@localhost/b"))
        .await;

    // Bob changes his status: Alice sees it.
    bob.send("<presence><show>away</show><status>in surgery</status></presence>")
        .await;
    bob.expect_next("own away", is_presence_from("bob@localhost/b"))
        .await;
    let p = alice
        .expect_next("away", is_presence_from("bob@localhost/b"))
        .await;
    assert_eq!(
        p.get_child("show", ns::CLIENT).map(|s| s.text()),
        Some("away".into())
    );

    // Roster versioning: an up-to-date client gets an empty result.
    let r = alice
        .iq(
            "<iq type='get' id='r3'><query xmlns='jabber:iq:roster'/></iq>",
            "r3",
        )
        .await;
    let q = r.get_child("query", ns::ROSTER).unwrap();
    let ver = q.attr("ver").unwrap().to_owned();
    let item = q.get_child("item", ns::ROSTER).unwrap();
    assert_eq!(item.attr("subscription"), Some("to"));
    assert_eq!(item.attr("name"), Some("Bob"));
    assert_eq!(
        item.get_child("group", ns::ROSTER).unwrap().text(),
        "Ward 3"
    );
    let r = alice
        .iq(
            &format!("<iq type='get' id='r4'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>"),
            "r4",
        )
        .await;
    assert!(r.get_child("query", ns::ROSTER).is_none());

    // Bob disconnects: Alice gets unavailable presence.
    drop(bob);
    let p = alice
        .expect_next("unavailable", is_presence_from("bob@localhost/b"))
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));

    // A new session of Bob's: Alice sees it; Bob, having subscription "from" only, does not
    // get Alice's presence (he never subscribed).
    let mut bob2 = t.login("bob", "b2").await;
    bob2.available().await;
    alice
        .expect_next("bob2 presence", is_presence_from("bob@localhost/b2"))
        .await;
    bob2.expect_silence(300).await;

    // Alice removes Bob: both directions end; Bob keeps the item with subscription "none"
    // (RFC 6121 §2.5.2) and is told by an unsubscribe (Alice was subscribed to him).
    alice.iq("<iq type='set' id='r5'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>", "r5").await;
    alice
        .expect_next("remove push", is_roster_push("bob@localhost", "remove"))
        .await;
    // Bob's server ends his subscription "from" Alice: she is told he is gone.
    let p = alice
        .expect_next("bob unavailable", is_presence_from("bob@localhost/b2"))
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    bob2.expect_next("unsubscribe", |e| {
        e.name() == "presence"
            && e.attr("type") == Some("unsubscribe")
            && e.attr("from") == Some("alice@localhost")
    })
    .await;
    let r = bob2
        .iq(
            "<iq type='get' id='r6'><query xmlns='jabber:iq:roster'/></iq>",
            "r6",
        )
        .await;
    let q = r.get_child("query", ns::ROSTER).unwrap();
    let item = q.get_child("item", ns::ROSTER).unwrap();
    assert_eq!(item.attr("subscription"), Some("none"), "{}", q.to_xml(""));
    alice.expect_silence(200).await;
    bob2.expect_silence(200).await;
    t.stop().await;
}

#[tokio::test]
async fn subscription_request_waits_for_offline_contact_and_pre_approval() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    alice.available().await;
    alice.send("<presence to='carol@localhost' type='subscribe'><status>Dr. Alice, cardiology</status></presence>").await;
    alice.routed().await;
    // Carol logs in later and receives the stored request on initial presence.
    let mut carol = t.login("carol", "c").await;
    carol.available().await;
    let req = carol
        .expect_next("stored subscribe", |e| e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(req.attr("from"), Some("alice@localhost"));
    assert_eq!(
        req.get_child("status", ns::CLIENT).unwrap().text(),
        "Dr. Alice, cardiology"
    );

    // Pre-approval: Carol approves Bob before he asks; his request is then answered at once.
    carol
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    carol.routed().await;
    let mut bob = t.login("bob", "b").await;
    bob.available().await;
    bob.send("<presence to='carol@localhost' type='subscribe'/>")
        .await;
    bob.expect_next("auto subscribed", |e| {
        e.attr("type") == Some("subscribed") && e.attr("from") == Some("carol@localhost")
    })
    .await;
    bob.expect_next("carol's presence", is_presence_from("carol@localhost/c"))
        .await;
    // The pre-approved request is answered for Carol, not shown to her; Alice's request is
    // still pending, so nobody sees anyone's presence yet.
    carol.expect_silence(200).await;
    alice.expect_silence(200).await;
    bob.expect_silence(200).await;
    t.stop().await;
}

#[tokio::test]
async fn messages_to_bare_full_and_offline() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut bob1 = t.login("bob", "one").await;
    let mut bob2 = t.login("bob", "two").await;
    bob1.send("<presence><priority>5</priority></presence>")
        .await;
    bob1.expect_next("own", is_presence_from("bob@localhost/one"))
        .await;
    // A second resource comes online: its presence goes to every available resource of the
    // account, itself included (RFC 6121 §4.2.2). (The first one's presence is not sent to it:
    // the RFC does not ask for it, though some servers do.)
    bob2.send("<presence><priority>1</priority></presence>")
        .await;
    bob2.expect_next("own", is_presence_from("bob@localhost/two"))
        .await;
    bob1.expect_next("the second resource", is_presence_from("bob@localhost/two"))
        .await;

    // To the bare JID: the highest priority resource; strangers reach each other.
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hello bob</body></message>")
        .await;
    let m = bob1.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(m.attr("from"), Some("alice@localhost/a"));
    assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "hello bob");
    // To a full JID: exactly that resource, even the lower-priority one.
    alice
        .send("<message to='bob@localhost/two' type='chat' id='m2'><body>to two</body></message>")
        .await;
    bob2.expect_next("m2", |e| e.attr("id") == Some("m2")).await;
    // Full JID of a resource that does not exist: treated as bare.
    alice
        .send("<message to='bob@localhost/gone' type='chat' id='m3'><body>x</body></message>")
        .await;
    bob1.expect_next("m3", |e| e.attr("id") == Some("m3")).await;
    // A forged `from` is refused with a stream error.
    // (tested in hostile.rs)

    // Unknown account: service-unavailable.
    alice
        .send("<message to='nobody@localhost' type='chat' id='m4'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("error", |e| e.attr("id") == Some("m4"))
        .await;
    assert_eq!(e.attr("type"), Some("error"));
    assert!(
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZA_ERRORS)
    );
    // Remote domain without federation: remote-server-not-found.
    alice
        .send("<message to='x@elsewhere.example' id='m5'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("error", |e| e.attr("id") == Some("m5"))
        .await;
    assert!(
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("remote-server-not-found", ns::STANZA_ERRORS)
    );

    // Carol is offline: messages are stored and delivered in order at her next login.
    for i in 0..5 {
        alice.send(&format!("<message to='carol@localhost' type='chat' id='o{i}'><body>offline {i}</body></message>")).await;
    }
    // Headlines are not stored.
    alice
        .send("<message to='carol@localhost' type='headline' id='h'><body>news</body></message>")
        .await;
    // Stored, not bounced: the next thing Alice gets is the answer to her ping.
    alice.routed().await;
    let mut carol = t.login("carol", "c").await;
    carol.available().await;
    for i in 0..5 {
        let m = carol
            .expect_next("offline", |e| e.name() == "message")
            .await;
        assert_eq!(m.attr("id"), Some(format!("o{i}").as_str()));
        let delay = m.get_child("delay", ns::DELAY).expect("XEP-0203 delay");
        assert_eq!(delay.attr("from"), Some("localhost"));
        assert!(delay.attr("stamp").unwrap().ends_with('Z'));
        let sid = m
            .get_child("stanza-id", ns::SID)
            .expect("XEP-0359 stanza-id");
        assert_eq!(sid.attr("by"), Some("carol@localhost"));
    }
    carol.expect_silence(300).await;
    // Delivered once: the next login gets nothing.
    drop(carol);
    offline(&t, "carol@localhost").await;
    let mut carol = t.login("carol", "c2").await;
    carol.available().await;
    carol.expect_silence(300).await;
    // That empty login let the server forget that Carol had stored messages; a new one while
    // she is offline again must still reach her at the next login.
    drop(carol);
    offline(&t, "carol@localhost").await;
    alice
        .send("<message to='carol@localhost' type='chat' id='o5'><body>again</body></message>")
        .await;
    alice.routed().await;
    let mut carol = t.login("carol", "c3").await;
    carol.available().await;
    carol
        .expect_next("o5", |e| e.attr("id") == Some("o5"))
        .await;
    carol.expect_silence(200).await;
    t.stop().await;
}

#[tokio::test]
async fn blocking_command() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut bob = t.login("bob", "b").await;
    alice.available().await;
    bob.available().await;
    let r = alice
        .iq(
            "<iq type='get' id='b1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
            "b1",
        )
        .await;
    assert_eq!(
        r.get_child("blocklist", ns::BLOCKING)
            .unwrap()
            .child_count(),
        0
    );
    alice.iq("<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>", "b2").await;
    alice
        .expect_next("block push", |e| {
            e.attr("type") == Some("set") && e.has_child("block", ns::BLOCKING)
        })
        .await;
    let r = alice
        .iq(
            "<iq type='get' id='b3'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
            "b3",
        )
        .await;
    let items: Vec<_> = r
        .get_child("blocklist", ns::BLOCKING)
        .unwrap()
        .children()
        .map(|i| i.attr("jid").unwrap().to_owned())
        .collect();
    assert_eq!(items, vec!["bob@localhost"]);

    // Bob's messages do not reach Alice; he gets service-unavailable.
    bob.send("<message to='alice@localhost' id='x1' type='chat'><body>hi</body></message>")
        .await;
    let e = bob
        .expect_next("error", |e| e.attr("id") == Some("x1"))
        .await;
    assert!(
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZA_ERRORS)
    );
    // Alice cannot message Bob while she blocks him.
    alice
        .send("<message to='bob@localhost' id='x2' type='chat'><body>hi</body></message>")
        .await;
    let e = alice
        .expect_next("error", |e| e.attr("id") == Some("x2"))
        .await;
    let err = e.get_child("error", ns::CLIENT).unwrap();
    assert!(err.has_child("not-acceptable", ns::STANZA_ERRORS));
    assert!(err.has_child("blocked", ns::BLOCKING_ERRORS));
    alice.expect_silence(200).await;

    bob.expect_silence(200).await;

    // Unblock all; messages flow again.
    alice
        .iq(
            "<iq type='set' id='b4'><unblock xmlns='urn:xmpp:blocking'/></iq>",
            "b4",
        )
        .await;
    alice
        .expect_next("unblock push", |e| {
            e.attr("type") == Some("set") && e.has_child("unblock", ns::BLOCKING)
        })
        .await;
    bob.send("<message to='alice@localhost' id='x3' type='chat'><body>hi again</body></message>")
        .await;
    alice
        .expect_next("x3", |e| e.attr("id") == Some("x3"))
        .await;
    alice.expect_silence(200).await;
    bob.expect_silence(200).await;
    t.stop().await;
}

#[tokio::test]
async fn disco_ping_time_version() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let r = alice.iq("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d1").await;
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    let feats: Vec<_> = q.children().filter_map(|c| c.attr("var")).collect();
    for f in [ns::PING, ns::BLOCKING, ns::TIME, ns::DISCO_ITEMS, ns::SID] {
        assert!(feats.contains(&f), "{f} missing: {feats:?}");
    }
    assert!(!feats.contains(&ns::VERSION), "XEP-0092 is off by default");
    let id = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("server"), Some("im"))
    );
    let r = alice.iq("<iq type='get' id='d2' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>", "d2").await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = alice.iq("<iq type='get' id='d3' to='bob@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d3").await;
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert_eq!(
        q.get_child("identity", ns::DISCO_INFO)
            .unwrap()
            .attr("category"),
        Some("account")
    );
    let r = alice
        .iq(
            "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let r = alice
        .iq(
            "<iq type='get' id='t1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
            "t1",
        )
        .await;
    assert!(
        r.get_child("time", ns::TIME)
            .unwrap()
            .get_child("utc", ns::TIME)
            .unwrap()
            .text()
            .ends_with('Z')
    );
    let r = alice
        .iq(
            "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
            "v1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    // Unknown payloads: service-unavailable.
    let r = alice
        .iq(
            "<iq type='get' id='u1' to='localhost'><query xmlns='urn:unknown'/></iq>",
            "u1",
        )
        .await;
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("service-unavailable", ns::STANZA_ERRORS)
    );
    // IQ to an offline full JID: service-unavailable.
    let r = alice
        .iq(
            "<iq type='get' id='u2' to='bob@localhost/none'><ping xmlns='urn:xmpp:ping'/></iq>",
            "u2",
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    t.stop().await;

    let t = TestServer::start_with(|c| c.modules.version = true).await;
    t.add_user("alice@localhost", "pass").await;
    let mut alice = t.login("alice", "a").await;
    let r = alice
        .iq(
            "<iq type='get' id='v1' to='localhost'><query xmlns='jabber:iq:version'/></iq>",
            "v1",
        )
        .await;
    assert_eq!(
        r.get_child("query", ns::VERSION)
            .unwrap()
            .get_child("name", ns::VERSION)
            .unwrap()
            .text(),
        "Zorg"
    );
    t.stop().await;
}

#[tokio::test]
async fn iq_between_clients_and_server_ping_of_idle_client() {
    let t = TestServer::start_with(|c| {
        c.c2s.idle_timeout = zorg_server::config::DurationStr::from_secs(1);
        c.c2s.ping_timeout = zorg_server::config::DurationStr::from_secs(1);
    })
    .await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut bob = t.login("bob", "b").await;
    alice
        .send("<iq type='get' id='q1' to='bob@localhost/b'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let q = bob.expect_next("iq", |e| e.attr("id") == Some("q1")).await;
    assert_eq!(q.attr("from"), Some("alice@localhost/a"));
    bob.send("<iq type='result' id='q1' to='alice@localhost/a'/>")
        .await;
    alice
        .expect_next("result", |e| {
            e.attr("id") == Some("q1") && e.attr("type") == Some("result")
        })
        .await;
    // Both idle: the server pings them. Alice answers and stays; Bob stays silent and is
    // closed with connection-timeout.
    let ping = alice
        .expect_next("server ping", |e| e.has_child("ping", ns::PING))
        .await;
    assert_eq!(ping.attr("from"), Some("localhost"));
    let id = ping.attr("id").unwrap().to_owned();
    alice
        .send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
        .await;
    bob.expect_next("server ping", |e| e.has_child("ping", ns::PING))
        .await;
    bob.expect_stream_error("connection-timeout").await;
    // Alice is still served. She has been idle again while Bob timed out, so another server
    // ping may come before the answer (how many depends on timing): she answers each.
    alice
        .send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let r = loop {
        let e = alice.next().await;
        if e.attr("from") == Some("localhost") && e.has_child("ping", ns::PING) {
            let id = e.attr("id").unwrap();
            alice
                .send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
                .await;
            continue;
        }
        break e;
    };
    assert!(common::is_answer("p2")(&r), "{}", r.to_xml(""));
    assert_eq!(r.attr("type"), Some("result"));
    t.stop().await;
}

#[tokio::test]
async fn directed_presence_and_unavailable_on_disconnect() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut carol = t.login("carol", "c").await;
    alice.available().await;
    carol.available().await;
    // Alice has no subscription with Carol; directed presence reaches her anyway…
    alice
        .send("<presence to='carol@localhost/c'><status>on call</status></presence>")
        .await;
    let p = carol
        .expect_next("directed", is_presence_from("alice@localhost/a"))
        .await;
    assert_eq!(p.get_child("status", ns::CLIENT).unwrap().text(), "on call");
    // …and when Alice's connection drops, Carol is told she is gone.
    drop(alice);
    let p = carol
        .expect_next("unavailable", is_presence_from("alice@localhost/a"))
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    carol.expect_silence(200).await;
    t.stop().await;
}

#[tokio::test]
async fn whitespace_keepalive_is_sent_when_quiet() {
    let t = TestServer::start_with(|c| {
        c.c2s.whitespace_keepalive = zorg_server::config::DurationStr::from_secs(1);
    })
    .await;
    users(&t).await;
    let mut alice = t.login("alice", "a").await;
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    // The interval (one second) is what is under test; the bound is the usual one.
    let n = tokio::time::timeout(common::WAIT, alice.io.read(&mut buf))
        .await
        .expect("a keepalive")
        .unwrap();
    assert!(
        n > 0 && buf[..n].iter().all(|b| *b == b' '),
        "{:?}",
        &buf[..n]
    );
    t.stop().await;
}
