//! XEP-0313 Message Archive Management with alice on two devices and bob: paging through the
//! archive both ways, offline messages that are archived once and delivered once, corrections
//! and retractions as MAM shows them, receipts and markers, preferences and metadata.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::TestServer;
use common::mam::{body, query, rsm, stanza_id, users, with_bob};
use zorg_proto::ns;

#[tokio::test]
async fn paging_through_1000_messages_forward_and_backward() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    // 500 each way: alice's archive holds both directions.
    for i in 0..500 {
        bob.send(&format!(
            "<message to='alice@localhost/desk' type='chat' id='b{i}'><body>from bob {i}</body></message>"
        ))
        .await;
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='a{i}'><body>from alice {i}</body></message>"
            ))
            .await;
    }
    for _ in 0..500 {
        alice
            .expect_next("bob's message", |e| e.name() == "message")
            .await;
    }
    // A sender's archive copy is queued once its message was delivered or stored: a ping
    // answered after alice's last message says that all of hers were.
    alice
        .iq(
            "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>",
            "sync",
        )
        .await;
    t.server().storage.flush_archive().await;

    // Forward, 100 a page: every message once, in the order sent, the last page complete.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let set = if after.is_empty() {
            "<set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set>".to_owned()
        } else {
            format!(
                "<set xmlns='http://jabber.org/protocol/rsm'><max>100</max><after>{after}</after></set>"
            )
        };
        let (items, fin) = query(
            &mut alice,
            &format!("f{pages}"),
            &format!("{}{set}", with_bob()),
        )
        .await;
        pages += 1;
        assert_eq!(rsm(&fin, "count").as_deref(), Some("1000"));
        assert_eq!(
            rsm(&fin, "first").as_deref(),
            items.first().map(|i| i.0.as_str())
        );
        assert_eq!(
            rsm(&fin, "first").map(|_| fin
                .get_child("set", ns::RSM)
                .unwrap()
                .get_child("first", ns::RSM)
                .unwrap()
                .attr("index")
                .unwrap()
                .to_owned()),
            Some((seen.len()).to_string())
        );
        after = rsm(&fin, "last").unwrap();
        seen.extend(items.into_iter().map(|(_, m)| body(&m).unwrap()));
        if fin.attr("complete") == Some("true") {
            break;
        }
        assert!(pages < 20);
    }
    assert_eq!(pages, 10);
    assert_eq!(seen.len(), 1000);
    // The two sessions run side by side, so only each direction's own order is fixed.
    for who in ["bob", "alice"] {
        let mine: Vec<_> = seen.iter().filter(|b| b.contains(who)).cloned().collect();
        let sent: Vec<_> = (0..500).map(|i| format!("from {who} {i}")).collect();
        assert_eq!(mine, sent);
    }

    // Backward from the end, 300 a page (capped at 250): newest page first, each page in order.
    let mut back: Vec<String> = Vec::new();
    let mut before = String::new();
    loop {
        let set = format!(
            "<set xmlns='http://jabber.org/protocol/rsm'><max>300</max><before>{before}</before></set>"
        );
        let (items, fin) = query(&mut alice, "b", &format!("{}{set}", with_bob())).await;
        assert!(items.len() <= 250);
        let mut page: Vec<String> = items.iter().map(|(_, m)| body(m).unwrap()).collect();
        page.extend(back);
        back = page;
        before = rsm(&fin, "first").unwrap();
        if fin.attr("complete") == Some("true") {
            break;
        }
    }
    assert_eq!(back, seen);

    // flip-page: the newest 3, newest first.
    let (items, fin) = query(
        &mut alice,
        "flip",
        "<set xmlns='http://jabber.org/protocol/rsm'><max>3</max><before/></set><flip-page/>",
    )
    .await;
    let bodies: Vec<_> = items.iter().map(|(_, m)| body(m).unwrap()).collect();
    let newest: Vec<_> = seen.iter().rev().take(3).cloned().collect();
    assert_eq!(bodies, newest);
    assert_eq!(rsm(&fin, "last").as_deref(), Some(items[0].0.as_str()));

    // An unknown paging id is item-not-found.
    let e = alice
        .iq(
            "<iq type='set' id='nf'><query xmlns='urn:xmpp:mam:2'>\
             <set xmlns='http://jabber.org/protocol/rsm'><after>no-such-id</after></set></query></iq>",
            "nf",
        )
        .await;
    assert!(e.to_xml("").contains("item-not-found"), "{}", e.to_xml(""));
    t.stop().await;
}

#[tokio::test]
async fn offline_messages_are_archived_once_delivered_once_with_the_archive_ids() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut bob = t.login("bob", "pc").await;
    for i in 0..3 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='o{i}'><body>while away {i}</body></message>"
        ))
        .await;
    }
    // Nothing bounced: the messages are stored.
    bob.routed().await;

    let mut phone = t.login("alice", "phone").await;
    phone.available().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = phone
            .expect_next("an offline message", |e| {
                e.name() == "message" && body(e).is_some()
            })
            .await;
        assert!(m.has_child("delay", ns::DELAY));
        got.push((stanza_id(&m, "alice@localhost"), body(&m).unwrap()));
    }
    assert_eq!(
        got.iter().map(|g| g.1.as_str()).collect::<Vec<_>>(),
        ["while away 0", "while away 1", "while away 2"]
    );
    phone.expect_silence(300).await;

    // The archive holds each once, under the ids the client saw.
    let (items, fin) = query(&mut phone, "q", "").await;
    assert_eq!(rsm(&fin, "count").as_deref(), Some("3"));
    let archived: Vec<_> = items
        .iter()
        .map(|(id, m)| (id.clone(), body(m).unwrap()))
        .collect();
    assert_eq!(archived, got);

    // A second login gets nothing again.
    let mut desk = t.login("alice", "desk").await;
    desk.available().await;
    desk.expect_silence(300).await;
    t.stop().await;
}

#[tokio::test]
async fn corrections_and_retractions_as_the_archive_shows_them() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    bob.send(
        "<message to='alice@localhost/desk' type='chat' id='m1'><body>give 50 mg</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>",
    )
    .await;
    bob.send(
        "<message to='alice@localhost/desk' type='chat' id='m2'><body>give 5 mg</body>\
         <replace xmlns='urn:xmpp:message-correct:0' id='m1'/></message>",
    )
    .await;
    bob.send(
        "<message to='alice@localhost/desk' type='chat' id='m3'><body>wrong patient</body>\
         <origin-id xmlns='urn:xmpp:sid:0' id='o3'/></message>",
    )
    .await;
    for _ in 0..3 {
        alice
            .expect_next("bob's message", |e| e.name() == "message")
            .await;
    }
    // Mallory-style: alice may not retract bob's message in her own archive.
    alice
        .send("<message to='bob@localhost' type='chat' id='r0'><retract xmlns='urn:xmpp:message-retract:1' id='o3'/></message>")
        .await;
    // Handled (and archived) before bob's retraction below is sent.
    alice
        .iq(
            "<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>",
            "sync",
        )
        .await;
    bob.send(
        "<message to='alice@localhost/desk' type='chat' id='r1'>\
         <retract xmlns='urn:xmpp:message-retract:1' id='o3'/>\
         <fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:message-retract:1'/>\
         <body>/me retracted a message</body></message>",
    )
    .await;
    alice
        .expect_next("bob's retraction", |e| e.name() == "message")
        .await;
    t.server().storage.flush_archive().await;
    let (items, _) = query(&mut alice, "q", with_bob()).await;
    let ids: Vec<_> = items
        .iter()
        .map(|(_, m)| m.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m1", "m2", "m3", "r0", "r1"]);
    // The correction is archived with the id of the message it corrects.
    assert_eq!(body(&items[1].1).as_deref(), Some("give 5 mg"));
    assert_eq!(
        items[1]
            .1
            .get_child("replace", ns::CORRECT)
            .unwrap()
            .attr("id"),
        Some("m1")
    );
    // The retracted message is a tombstone: no body, a <retracted/> with its origin-id.
    let tomb = &items[2].1;
    assert_eq!(body(tomb), None, "{}", tomb.to_xml(""));
    let r = tomb.get_child("retracted", ns::RETRACT).expect("retracted");
    assert_eq!(r.attr("id"), Some("r1"));
    assert!(r.has_child("origin-id", ns::SID));
    assert!(!tomb.to_xml("").contains("wrong patient"));
    // The retraction itself is kept, with its fallback (XEP-0428).
    assert!(items[4].1.has_child("fallback", ns::FALLBACK));
    // Alice's own attempt changed nothing of bob's in her archive.
    assert_eq!(body(&items[0].1).as_deref(), Some("give 50 mg"));

    // Retracting a corrected message removes the corrections' content too.
    bob.send(
        "<message to='alice@localhost/desk' type='chat' id='r2'>\
         <retract xmlns='urn:xmpp:message-retract:1' id='o1'/><body>retracted</body></message>",
    )
    .await;
    alice
        .expect_next("the retraction", |e| e.name() == "message")
        .await;
    // Bob's session has applied the retraction to both archives when it answers this.
    bob.iq(
        "<iq type='get' id='sync2'><ping xmlns='urn:xmpp:ping'/></iq>",
        "sync2",
    )
    .await;
    t.server().storage.flush_archive().await;
    let (items, _) = query(&mut alice, "q2", with_bob()).await;
    assert_eq!(body(&items[0].1), None);
    assert_eq!(body(&items[1].1), None, "the correction is gone too");
    // Bob's own archive shows the same.
    let (items, _) = query(&mut bob, "qb", "").await;
    assert_eq!(body(&items[0].1), None);
    assert_eq!(body(&items[2].1), None);
    t.stop().await;
}

#[tokio::test]
async fn receipts_and_markers_are_archived_chat_states_are_not() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    bob.send("<message to='alice@localhost/desk' type='chat' id='m1'><body>hi</body><request xmlns='urn:xmpp:receipts'/><markable xmlns='urn:xmpp:chat-markers:0'/></message>").await;
    alice.expect_next("hi", |e| body(e).is_some()).await;
    alice.send("<message to='bob@localhost/pc' type='chat' id='x1'><received xmlns='urn:xmpp:receipts' id='m1'/></message>").await;
    alice.send("<message to='bob@localhost/pc' type='chat' id='x2'><displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/></message>").await;
    alice.send("<message to='bob@localhost/pc' type='chat' id='x3'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>").await;
    for _ in 0..3 {
        bob.expect_next("alice's receipts and state", |e| e.name() == "message")
            .await;
    }
    t.server().storage.flush_archive().await;
    let (items, _) = query(&mut alice, "q", "").await;
    let ids: Vec<_> = items
        .iter()
        .map(|(_, m)| m.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m1", "x1", "x2"]);
    t.stop().await;
}

#[tokio::test]
async fn preferences_metadata_form_and_disco() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    let p = alice
        .iq(
            "<iq type='get' id='p1'><prefs xmlns='urn:xmpp:mam:2'/></iq>",
            "p1",
        )
        .await;
    assert_eq!(
        p.get_child("prefs", ns::MAM).unwrap().attr("default"),
        Some("always")
    );
    let p = alice
        .iq(
            "<iq type='set' id='p2'><prefs xmlns='urn:xmpp:mam:2' default='always'>\
             <never><jid>bob@localhost</jid></never></prefs></iq>",
            "p2",
        )
        .await;
    assert_eq!(p.attr("type"), Some("result"));
    bob.send("<message to='alice@localhost/desk' type='chat'><body>not kept</body></message>")
        .await;
    let m = alice
        .expect_next("bob's message", |e| body(e).is_some())
        .await;
    assert!(
        !m.has_child("stanza-id", ns::SID),
        "not archived, so no archive id"
    );
    t.server().storage.flush_archive().await;
    let (items, _) = query(&mut alice, "q", "").await;
    assert!(items.is_empty());
    // Bob's own archive still has it (his preferences are his).
    let (items, _) = query(&mut bob, "qb", "").await;
    assert_eq!(items.len(), 1);

    let md = bob
        .iq(
            "<iq type='get' id='md'><metadata xmlns='urn:xmpp:mam:2'/></iq>",
            "md",
        )
        .await;
    let md = md.get_child("metadata", ns::MAM).unwrap();
    assert_eq!(
        md.get_child("start", ns::MAM).unwrap().attr("id"),
        Some(items[0].0.as_str())
    );
    let form = bob
        .iq(
            "<iq type='get' id='fm'><query xmlns='urn:xmpp:mam:2'/></iq>",
            "fm",
        )
        .await;
    assert!(form.to_xml("").contains("before-id"));
    let info = bob
        .iq(
            "<iq type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
            "d",
        )
        .await
        .to_xml("");
    for f in [
        "urn:xmpp:mam:2",
        "urn:xmpp:mam:2#extended",
        "urn:xmpp:message-retract:1#tombstone",
    ] {
        assert!(info.contains(f), "{f} in {info}");
    }
    // Extended fields: ids and after-id.
    let ext = format!(
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
         <value>urn:xmpp:mam:2</value></field><field var='ids'><value>{}</value></field></x>",
        items[0].0
    );
    let (got, _) = query(&mut bob, "ids", &ext).await;
    assert_eq!(got.len(), 1);
    t.stop().await;
}
