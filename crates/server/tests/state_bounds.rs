//! Every per-account state an attacker can grow has a bound (issue 13, items 7 and 11): the
//! blocklist and archive-preference caches hold only accounts that exist, rosters, pending
//! subscription requests, blocklists and directed presence are capped with the RFC's error,
//! pending requests keep only a few hundred bytes, and a presence is refused when it is too big
//! to be stored and re-sent to every contact.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::transcript::{message_id, presence_from, set_roster, show, until};
use common::{Client, TestServer};
use zorg_proto::{Element, ns};
use zorg_server::storage::{RosterStore, Subscription};

/// Sends a ping to the server and returns every stanza that came before its answer: the
/// session's own replies to what it sent before (those keep their order).
async fn replies(c: &mut Client) -> Vec<Element> {
    c.send("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    until(c, "the ping's answer", |e| {
        e.name() == "iq" && e.attr("id") == Some("sync")
    })
    .await
}

/// The condition and type of an error stanza.
fn error_of(e: &Element) -> (String, String) {
    let ty = e
        .get_child("error", ns::CLIENT)
        .and_then(|err| err.attr("type"));
    (
        common::fed::error_of(e).0,
        ty.unwrap_or_default().to_owned(),
    )
}

async fn users(t: &TestServer, names: &[&str]) {
    for u in names {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}

#[tokio::test]
async fn caches_hold_only_accounts_that_exist() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    let mut alice = t.login("alice", "a").await;
    // Messages to 150 made-up addresses, and one to Bob: each recipient's blocklist and
    // archiving preferences are read on the way.
    for i in 0..150 {
        alice
            .send(&format!(
                "<message to='ghost{i}@localhost' type='chat'><body>hello</body></message>"
            ))
            .await;
    }
    alice
        .send("<message to='bob@localhost' type='chat'><body>hello</body></message>")
        .await;
    let got = replies(&mut alice).await;
    assert_eq!(got.len(), 150, "an error for each made-up address");
    let s = t.server();
    // alice (sender) and bob (recipient) at most; never a made-up address.
    assert!(
        s.blocklists.len() <= 2,
        "{} blocklists cached",
        s.blocklists.len()
    );
    assert!(
        s.archive_prefs.len() <= 2,
        "{} archive preferences cached",
        s.archive_prefs.len()
    );
    assert!(s.blocklists.get("ghost0@localhost").is_none());
    assert!(s.archive_prefs.get("ghost0@localhost").is_none());
    t.stop().await;
}

#[tokio::test]
async fn a_full_roster_refuses_one_more_contact() {
    let t = TestServer::start_with(|c| c.limits.max_roster_items = 10).await;
    users(&t, &["alice"]).await;
    let mut alice = t.login("alice", "a").await;
    for i in 0..11 {
        alice
            .send(&format!(
                "<iq type='set' id='s{i}'><query xmlns='jabber:iq:roster'>\
                 <item jid='c{i}@example.org'/></query></iq>"
            ))
            .await;
    }
    // Changing a contact that is already there is no growth, and is accepted.
    alice
        .send(
            "<iq type='set' id='rename'><query xmlns='jabber:iq:roster'>\
             <item jid='c0@example.org' name='Zero'/></query></iq>",
        )
        .await;
    // A subscription request would add a contact too.
    alice
        .send("<presence type='subscribe' to='c99@example.org' id='sub'/>")
        .await;
    let got = replies(&mut alice).await;
    let answer = |id: &str| {
        got.iter()
            .find(|e| e.attr("id") == Some(id))
            .unwrap_or_else(|| panic!("no answer to {id}:\n{}", show(&got)))
    };
    for i in 0..10 {
        assert_eq!(answer(&format!("s{i}")).attr("type"), Some("result"));
    }
    assert_eq!(answer("rename").attr("type"), Some("result"));
    for id in ["s10", "sub"] {
        let e = answer(id);
        assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
        assert_eq!(
            error_of(e),
            ("not-acceptable".into(), "cancel".into()),
            "RFC 6121 §2.3.3, server-configured limit"
        );
    }
    let (_, items) = t.server().storage.roster("alice@localhost").await.unwrap();
    assert_eq!(items.len(), 10);
    t.stop().await;
}

#[tokio::test]
async fn requests_to_accounts_that_do_not_exist_leave_no_roster_items() {
    let t = TestServer::start().await;
    users(&t, &["alice"]).await;
    let mut alice = t.login("alice", "a").await;
    for i in 0..50 {
        alice
            .send(&format!(
                "<presence type='subscribe' to='ghost{i}@localhost'/>"
            ))
            .await;
    }
    let got = replies(&mut alice).await;
    // RFC 6121 §8.5.1: each is answered `unsubscribed` on the missing account's behalf.
    let denied = got
        .iter()
        .filter(|e| e.name() == "presence" && e.attr("type") == Some("unsubscribed"))
        .count();
    assert_eq!(denied, 50, "{}", show(&got));
    let s = &t.server().storage;
    assert!(
        s.presence_items("alice@localhost")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.roster("alice@localhost").await.unwrap().1.is_empty());
    t.stop().await;
}

#[tokio::test]
async fn pending_requests_are_capped_and_kept_small() {
    let t = TestServer::start_with(|c| {
        c.limits.max_pending_subscriptions = 2;
        // Big requests from local users get past the presence size cap for this test.
        c.limits.max_presence_size = 65_536;
    })
    .await;
    users(&t, &["alice", "u1", "u2", "u3"]).await;
    let big = "x".repeat(40_000);
    for u in ["u1", "u2", "u3"] {
        // Available, so that an error to the bare JID reaches the client.
        let mut c = t.login(u, "r").await;
        c.available().await;
        c.send(&format!(
            "<presence type='subscribe' to='alice@localhost' id='req'><status>hi from {u}</status>\
             <nick xmlns='http://jabber.org/protocol/nick'>{u}</nick>\
             <x xmlns='urn:example:big'>{big}</x></presence>"
        ))
        .await;
        if u == "u3" {
            let e = c
                .expect("the refusal", |e| {
                    e.name() == "presence" && e.attr("type") == Some("error")
                })
                .await;
            assert_eq!(e.attr("from"), Some("alice@localhost"));
            assert_eq!(error_of(&e), ("resource-constraint".into(), "wait".into()));
        } else {
            // Handled (and stored) once the ping is answered.
            replies(&mut c).await;
        }
    }
    // What is stored is small: who asks, the status and the nick.
    let items = t
        .server()
        .storage
        .presence_items("alice@localhost")
        .await
        .unwrap();
    assert_eq!(items.len(), 2);
    for i in &items {
        let xml = i.pending_in_stanza.as_deref().unwrap();
        assert!(xml.len() < 400, "{} bytes kept", xml.len());
    }
    // Alice logs in and gets the two requests, as kept.
    let mut alice = t.login("alice", "a").await;
    alice.available().await;
    let mut u1 = t.login("u1", "r2").await;
    u1.send("<message to='alice@localhost/a' id='after'><body>?</body></message>")
        .await;
    let got = until(&mut alice, "u1's message", |e| message_id(e, "after")).await;
    let requests: Vec<_> = got
        .iter()
        .filter(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .collect();
    assert_eq!(requests.len(), 2, "{}", show(&got));
    for r in requests {
        let from = r.attr("from").unwrap();
        assert!(from == "u1@localhost" || from == "u2@localhost", "{from}");
        let u = &from[..2];
        assert_eq!(
            r.get_child("status", ns::CLIENT).unwrap().text(),
            format!("hi from {u}")
        );
        assert!(!r.has_child("x", "urn:example:big"));
    }
    t.stop().await;
}

#[tokio::test]
async fn a_full_blocklist_refuses_one_more_item() {
    let t = TestServer::start_with(|c| c.limits.max_blocklist_items = 10).await;
    users(&t, &["alice"]).await;
    let mut alice = t.login("alice", "a").await;
    let items: String = (0..9)
        .map(|i| format!("<item jid='b{i}@example.org'/>"))
        .collect();
    let r = alice
        .iq(
            &format!(
                "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>"
            ),
            "b1",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    // Two more would make eleven: refused whole.
    let r = alice
        .iq(
            "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='x@example.org'/>\
             <item jid='y@example.org'/></block></iq>",
            "b2",
        )
        .await;
    assert_eq!(error_of(&r), ("not-acceptable".into(), "cancel".into()));
    // One more fits.
    let r = alice
        .iq(
            "<iq type='set' id='b3'><block xmlns='urn:xmpp:blocking'><item jid='x@example.org'/>\
             </block></iq>",
            "b3",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let list =
        zorg_server::storage::BlocklistStore::blocklist(&t.server().storage, "alice@localhost")
            .await
            .unwrap();
    assert_eq!(list.len(), 10);
    t.stop().await;
}

#[tokio::test]
async fn directed_presence_is_tracked_for_a_bounded_number_of_entities() {
    let t = TestServer::start_with(|c| c.limits.max_directed_presence = 8).await;
    users(&t, &["alice"]).await;
    let mut alice = t.login("alice", "a").await;
    for i in 0..8 {
        alice
            .send(&format!(
                "<presence to='room{i}@example.org/me' id='d{i}'/>"
            ))
            .await;
    }
    // The ninth is refused; again to one already there is fine; an unavailable frees a place.
    alice
        .send("<presence to='room8@example.org/me' id='d8'/>")
        .await;
    alice
        .send("<presence to='room0@example.org/me' id='again'/>")
        .await;
    alice
        .send("<presence to='room1@example.org/me' type='unavailable' id='off'/>")
        .await;
    alice
        .send("<presence to='room9@example.org/me' id='d9'/>")
        .await;
    let got = replies(&mut alice).await;
    let errors: Vec<_> = got
        .iter()
        .filter(|e| e.attr("type") == Some("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", show(&got));
    assert_eq!(errors[0].attr("id"), Some("d8"));
    assert_eq!(
        error_of(errors[0]),
        ("not-acceptable".into(), "cancel".into())
    );
    t.stop().await;
}

#[tokio::test]
async fn a_presence_too_big_to_store_is_refused_and_not_sent() {
    let t = TestServer::start().await;
    users(&t, &["alice", "bob"]).await;
    set_roster(&t, "alice@localhost", "bob@localhost", Subscription::From).await;
    set_roster(&t, "bob@localhost", "alice@localhost", Subscription::To).await;
    let mut alice = t.login("alice", "a").await;
    alice
        .send("<presence><status>on ward 3</status></presence>")
        .await;
    alice
        .expect("own presence", |e| presence_from(e, "alice@localhost/a"))
        .await;
    let mut bob = t.login("bob", "b").await;
    bob.available().await;
    bob.expect("alice's presence", |e| {
        presence_from(e, "alice@localhost/a")
    })
    .await;

    // 5000 bytes of status: over the 4096 default. Refused at once, as broadcast and as
    // directed presence; nothing is reflected or sent.
    let status = "s".repeat(5000);
    alice
        .send(&format!(
            "<presence id='big'><status>{status}</status></presence>"
        ))
        .await;
    alice
        .send(&format!(
            "<presence id='bigd' to='bob@localhost/b'><status>{status}</status></presence>"
        ))
        .await;
    let got = replies(&mut alice).await;
    assert_eq!(got.len(), 2, "{}", show(&got));
    for (e, id) in got.iter().zip(["big", "bigd"]) {
        assert_eq!(e.attr("id"), Some(id));
        assert_eq!(e.attr("type"), Some("error"));
        assert_eq!(
            error_of(e),
            ("policy-violation".into(), "modify".into()),
            "{id}"
        );
    }
    alice
        .send("<message to='bob@localhost/b' id='after'><body>.</body></message>")
        .await;
    let got = until(&mut bob, "alice's message", |e| message_id(e, "after")).await;
    assert!(got.is_empty(), "{}", show(&got));
    // The stored presence is still the one before: a probe brings it.
    let mut bob2 = t.login("bob", "b2").await;
    bob2.available().await;
    let p = bob2
        .expect("alice's presence", |e| {
            presence_from(e, "alice@localhost/a")
        })
        .await;
    assert_eq!(
        p.get_child("status", ns::CLIENT).unwrap().text(),
        "on ward 3"
    );
    t.stop().await;
}
