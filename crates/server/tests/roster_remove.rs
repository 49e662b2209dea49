//! RFC 6121 §2.5.2: removing a contact from the roster cancels the subscriptions both ways
//! with the contact, wherever it is: `unsubscribe` if the user had one to the contact,
//! `unsubscribed` if the contact had one to the user (after unavailable presence, §3.2.2), so
//! that the contact's server does not keep a subscription the user no longer has.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::fed::{Ca, online, pair};
use common::transcript::{message_id, presence_from, set_roster as roster, show, until};
use common::{Client, TestServer};
use zorg_proto::{Element, ns};
use zorg_server::storage::{RosterStore, Subscription};

/// Removes `jid` from the roster. Presence of contacts answering the user's initial presence
/// may still be on its way and arrive before the result; nothing else may.
async fn remove(c: &mut Client, jid: &str) {
    c.send(&format!(
        "<iq type='set' id='rm'><query xmlns='jabber:iq:roster'>\
         <item jid='{jid}' subscription='remove'/></query></iq>"
    ))
    .await;
    let mut before = Vec::new();
    let r = loop {
        let e = c.next().await;
        if e.name() == "iq" && e.attr("id") == Some("rm") {
            break e;
        }
        before.push(e);
    };
    assert!(
        before
            .iter()
            .all(|e| e.name() == "presence" && e.attr("type").is_none()),
        "{}",
        show(&before)
    );
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
}

fn of_type<'a>(got: &'a [Element], from: &str, ty: &str) -> Option<&'a Element> {
    got.iter()
        .find(|e| presence_from(e, from) && e.attr("type") == Some(ty))
}

async fn subscription_of(t: &TestServer, owner: &str, contact: &str) -> Option<Subscription> {
    let item = t
        .server()
        .storage
        .roster_item(owner, contact)
        .await
        .unwrap();
    item.map(|i| i.subscription)
}

/// What the contact reads after the user removed it, up to the user's next message (sent
/// after the removal's result, so after everything the removal sent): both cancellations,
/// the unavailable before the `unsubscribed`, and the contact's roster push.
fn assert_cancelled(got: &[Element], user_bare: &str, user_full: &str) {
    let unsub = of_type(got, user_bare, "unsubscribe");
    let unsubd = of_type(got, user_bare, "unsubscribed");
    assert!(unsub.is_some(), "no unsubscribe:\n{}", show(got));
    assert!(unsubd.is_some(), "no unsubscribed:\n{}", show(got));
    let pos = |ty: &str| {
        got.iter()
            .position(|e| presence_from(e, user_full) && e.attr("type") == Some(ty))
    };
    let unavailable = pos("unavailable").expect("unavailable presence");
    let cancelled = got
        .iter()
        .position(|e| presence_from(e, user_bare) && e.attr("type") == Some("unsubscribed"))
        .unwrap();
    assert!(unavailable < cancelled, "{}", show(got));
    let pushed = got.iter().any(|e| {
        e.get_child("query", ns::ROSTER)
            .and_then(|q| q.get_child("item", ns::ROSTER))
            .is_some_and(|i| {
                i.attr("jid") == Some(user_bare) && i.attr("subscription") == Some("none")
            })
    });
    assert!(
        pushed,
        "no roster push of the ended subscription:\n{}",
        show(got)
    );
}

#[tokio::test]
async fn removing_a_remote_contact_cancels_both_subscriptions_over_federation() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    roster(&a, "alice@a.test", "bob@b.test", Subscription::Both).await;
    roster(&b, "bob@b.test", "alice@a.test", Subscription::Both).await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    bob.iq(
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        "r",
    )
    .await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    bob.expect("alice's presence", |e| {
        presence_from(e, "alice@a.test/phone")
    })
    .await;

    remove(&mut alice, "bob@b.test").await;
    alice
        .send("<message to='bob@b.test/desk' id='after' type='chat'><body>bye</body></message>")
        .await;
    let got = until(&mut bob, "alice's message", |e| message_id(e, "after")).await;
    assert_cancelled(&got, "alice@a.test", "alice@a.test/phone");
    // b.test keeps no subscription either way.
    assert_eq!(
        subscription_of(&b, "bob@b.test", "alice@a.test").await,
        Some(Subscription::None)
    );
    assert_eq!(
        subscription_of(&a, "alice@a.test", "bob@b.test").await,
        None
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn removing_a_remote_contact_sends_only_the_cancellation_that_applies() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    b.add_user("dave@b.test", "pass").await;
    // Alice sees Dave's presence (to), Dave does not see hers.
    roster(&a, "alice@a.test", "dave@b.test", Subscription::To).await;
    roster(&b, "dave@b.test", "alice@a.test", Subscription::From).await;
    let mut dave = online(&b, "b.test", "dave", "d").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    remove(&mut alice, "dave@b.test").await;
    alice
        .send("<message to='dave@b.test/d' id='after' type='chat'><body>bye</body></message>")
        .await;
    let got = until(&mut dave, "alice's message", |e| message_id(e, "after")).await;
    assert!(
        of_type(&got, "alice@a.test", "unsubscribe").is_some(),
        "{}",
        show(&got)
    );
    assert!(
        of_type(&got, "alice@a.test", "unsubscribed").is_none(),
        "{}",
        show(&got)
    );
    assert_eq!(
        subscription_of(&b, "dave@b.test", "alice@a.test").await,
        Some(Subscription::None)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn removing_a_local_contact_cancels_both_subscriptions() {
    let t = TestServer::start().await;
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    roster(&t, "alice@localhost", "bob@localhost", Subscription::Both).await;
    roster(&t, "bob@localhost", "alice@localhost", Subscription::Both).await;
    let mut bob = t.login("bob", "b").await;
    bob.iq(
        "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>",
        "r",
    )
    .await;
    bob.available().await;
    let mut alice = t.login("alice", "a").await;
    alice.available().await;
    bob.expect("alice's presence", |e| {
        presence_from(e, "alice@localhost/a")
    })
    .await;
    remove(&mut alice, "bob@localhost").await;
    alice
        .send("<message to='bob@localhost/b' id='after' type='chat'><body>bye</body></message>")
        .await;
    let got = until(&mut bob, "alice's message", |e| message_id(e, "after")).await;
    assert_cancelled(&got, "alice@localhost", "alice@localhost/a");
    assert_eq!(
        subscription_of(&t, "bob@localhost", "alice@localhost").await,
        Some(Subscription::None)
    );
    t.stop().await;
}
