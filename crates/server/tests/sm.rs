//! XEP-0198 Stream Management: alice on a phone (with SM and resumption) and a desktop, bob on
//! a PC. Acknowledgements both ways, a phone whose connection drops with messages in flight and
//! resumes on a new one, refused and expired resumptions, and the bound on what waits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{Client, TestServer, eventually};
use zorg_proto::{Element, Frame, ns};

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

fn body(e: &Element) -> String {
    e.get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

fn is_sm(name: &'static str) -> impl Fn(&Element) -> bool {
    move |e| e.is(name, ns::SM)
}

fn chat(to: &str, text: &str) -> String {
    format!("<message to='{to}' type='chat'><body>{text}</body></message>")
}

async fn users(t: &TestServer) {
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}

/// Sends `<enable/>` with these attributes and returns the answer; the client's count starts.
async fn enable(c: &mut Client, attrs: &str) -> Element {
    c.send(&format!("<enable xmlns='urn:xmpp:sm:3' {attrs}/>"))
        .await;
    let e = c
        .expect_next("enabled or failed", |e| {
            e.ns() == ns::SM && matches!(e.name(), "enabled" | "failed")
        })
        .await;
    c.handled = 0;
    e
}

/// Logs in `alice/phone` with resumption enabled; returns the client and the token.
async fn phone(t: &TestServer, attrs: &str) -> (Client, String) {
    let mut c = t.login("alice", "phone").await;
    let e = enable(&mut c, attrs).await;
    assert!(e.is("enabled", ns::SM), "{}", e.to_xml(""));
    assert_eq!(e.attr("resume"), Some("true"));
    let id = e.attr("id").expect("a resumption id").to_owned();
    assert!(id.len() >= 16, "an unguessable id: {id}");
    (c, id)
}

/// A new connection for `user` that sends `<resume/>` instead of binding; returns the client
/// and the server's answer.
async fn resume(t: &TestServer, user: &str, previd: &str, h: u32) -> (Client, Element) {
    let mut c = t.authenticate(user).await;
    c.open("localhost").await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
    ))
    .await;
    let r = c.next().await;
    c.handled = h;
    (c, r)
}

/// Binds after the stream restart was already done (after a refused resume).
async fn bind_now(c: &mut Client, resource: &str) {
    c.send(&format!(
        "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
    ))
    .await;
    let r = c.next().await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    c.jid = r
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text())
        .unwrap();
}

/// Waits until `n` messages for alice were stored offline since the server started (the end
/// of a session reroutes in the background, and a login only looks at what is stored).
async fn wait_offline(t: &TestServer, n: u64) {
    eventually("offline storage", || {
        t.server()
            .offline_hints
            .get("alice@localhost")
            .is_some_and(|g| *g >= n)
    })
    .await;
}

fn hibernating(t: &TestServer, resource: &str) -> bool {
    t.server()
        .router
        .session("alice@localhost", resource)
        .is_some_and(|h| h.state.is_hibernating())
}

/// Reads until `n` messages arrived and returns them, answering `<r/>` on the way (requests
/// are also sent by time, so where one falls among the messages is up to timing). Anything
/// else fails the test.
async fn messages(c: &mut Client, n: usize) -> Vec<Element> {
    let mut got = Vec::new();
    while got.len() < n {
        let e = c.next().await;
        if e.is("r", ns::SM) {
            let h = c.handled;
            c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")).await;
        } else {
            assert!(is_message(&e), "expected a message, got {}", e.to_xml(""));
            got.push(e);
        }
    }
    got
}

/// The next stanza that is not an `<r/>`, which must match `f`. A request is also sent by time
/// (two seconds after the first unacknowledged stanza), so on a slow machine one may come
/// between any two stanzas: it is answered, once.
async fn next_past_request(c: &mut Client, what: &str, f: impl Fn(&Element) -> bool) -> Element {
    let mut e = c.next().await;
    if e.is("r", ns::SM) {
        let h = c.handled;
        c.send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>")).await;
        e = c.next().await;
    }
    assert!(f(&e), "expected {what}, got {}", e.to_xml(""));
    e
}

#[tokio::test]
async fn enable_and_acknowledgements_both_ways() {
    let t = TestServer::start().await;
    users(&t).await;
    // Enabling needs a bound resource; the client may bind afterwards.
    let mut alice = t.authenticate("alice").await;
    alice.open("localhost").await;
    let f = alice.features.clone().unwrap();
    assert!(f.has_child("sm", ns::SM), "{}", f.to_xml(""));
    assert!(f.has_child("csi", ns::CSI), "{}", f.to_xml(""));
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = alice.next().await;
    assert!(e.is("failed", ns::SM), "{}", e.to_xml(""));
    assert!(e.has_child("unexpected-request", ns::STANZA_ERRORS));
    bind_now(&mut alice, "phone").await;
    let e = enable(&mut alice, "resume='true'").await;
    assert!(e.is("enabled", ns::SM), "{}", e.to_xml(""));
    assert_eq!(e.attr("max"), Some("300"));
    // Twice is an error.
    alice.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let e = alice.next().await;
    assert!(e.is("failed", ns::SM), "{}", e.to_xml(""));
    assert!(e.has_child("unexpected-request", ns::STANZA_ERRORS));

    // Client to server: three stanzas, then a request; nonzas are not counted.
    alice
        .send(&format!(
            "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><presence/>{}<r xmlns='urn:xmpp:sm:3'/><r xmlns='urn:xmpp:sm:3'/>",
            chat("bob@localhost", "one")
        ))
        .await;
    // The ping's answer and the presence's reflection come first: the session handles what
    // the client sent in order. The message waits offline for bob.
    alice
        .expect_next("the ping's answer", common::is_answer("p1"))
        .await;
    alice
        .expect_next("own presence", |e| e.name() == "presence")
        .await;
    let a = alice.expect_next("an answer", is_sm("a")).await;
    assert_eq!(a.attr("h"), Some("3"), "{}", a.to_xml(""));
    let a = alice.expect_next("another answer", is_sm("a")).await;
    assert_eq!(a.attr("h"), Some("3"));

    // Server to client: bob sends six messages; the server asks for acknowledgements.
    let mut bob = t.login("bob", "pc").await;
    for i in 0..6 {
        bob.send(&chat("alice@localhost/phone", &format!("m{i}")))
            .await;
    }
    let mut got = Vec::new();
    let mut requests = 0;
    while got.len() < 6 || requests == 0 {
        let e = alice.next().await;
        if e.is("r", ns::SM) {
            requests += 1;
            let h = alice.handled;
            alice
                .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
                .await;
        } else {
            assert!(is_message(&e), "{}", e.to_xml(""));
            got.push(body(&e));
        }
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4", "m5"]);

    // Acknowledging more than was sent ends the stream (§4).
    let sent = alice.handled;
    alice
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{}'/>", sent + 2))
        .await;
    loop {
        match alice.frame().await {
            Some(Frame::Stanza(e)) if e.is("error", ns::STREAM) => {
                assert!(e.has_child("undefined-condition", ns::STREAM_ERRORS));
                let too_high = e
                    .get_child("handled-count-too-high", ns::SM)
                    .expect("handled-count-too-high");
                assert_eq!(too_high.attr("h"), Some((sent + 2).to_string().as_str()));
                assert_eq!(too_high.attr("send-count"), Some(sent.to_string().as_str()));
                break;
            }
            // A request by time may still come before the error.
            Some(Frame::Stanza(e)) if e.is("r", ns::SM) => continue,
            other => panic!("expected a stream error, got {other:?}"),
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn resume_after_a_dropped_connection_delivers_everything_once() {
    let t = TestServer::start().await;
    users(&t).await;
    let (mut phone, id) = phone(&t, "resume='true'").await;
    phone
        .send("<presence><priority>5</priority></presence>")
        .await;
    phone
        .expect_next("own presence", |e| e.name() == "presence")
        .await;
    let mut desk = t.login("alice", "desk").await;
    desk.available().await;
    phone
        .expect_next("the desk's presence", |e| {
            e.attr("from") == Some("alice@localhost/desk")
        })
        .await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;

    // Three messages reach the phone; it reads two, the third is still in flight when its
    // connection drops (no closing tag, no acknowledgement).
    for m in ["m1", "m2", "m3"] {
        bob.send(&chat("alice@localhost/phone", m)).await;
    }
    assert_eq!(body(&phone.expect_next("m1", is_message).await), "m1");
    assert_eq!(body(&phone.expect_next("m2", is_message).await), "m2");
    let h = phone.handled;
    drop(phone);
    eventually("hibernation", || hibernating(&t, "phone")).await;

    // Meanwhile bob and the desk keep writing to the phone; nobody is told it went away.
    bob.send(&chat("alice@localhost/phone", "m4")).await;
    desk.send(&chat("alice@localhost/phone", "d1")).await;
    desk.routed().await;
    bob.send(&chat("alice@localhost/phone", "m5")).await;
    // Presence updates wait (only the latest per sender) instead of filling the queue.
    for status in ["a", "b"] {
        bob.send(&format!(
            "<presence to='alice@localhost/phone'><status>{status}</status></presence>"
        ))
        .await;
    }
    bob.routed().await;
    desk.expect_silence(200).await;

    // A new connection resumes with the count the phone had reached.
    let (mut phone, r) = resume(&t, "alice", &id, h).await;
    assert!(r.is("resumed", ns::SM), "{}", r.to_xml(""));
    assert_eq!(r.attr("previd"), Some(id.as_str()));
    assert_eq!(
        r.attr("h"),
        Some("1"),
        "the server handled the phone's presence"
    );
    phone.jid = "alice@localhost/phone".into();
    assert!(!hibernating(&t, "phone"));
    let got = messages(&mut phone, 4).await;
    let from_bob: Vec<_> = got
        .iter()
        .filter(|m| m.attr("from") == Some("bob@localhost/pc"))
        .map(body)
        .collect();
    // bob's are in order and none twice; the desk's was sent from another connection, so
    // where it falls among them is up to timing.
    assert_eq!(from_bob, ["m3", "m4", "m5"], "in order, none twice");
    assert!(got.iter().any(|m| body(m) == "d1"));
    assert!(
        got[0].has_child("delay", ns::DELAY),
        "a retransmission is stamped"
    );
    let p = phone.next().await;
    assert_eq!(p.name(), "presence", "{}", p.to_xml(""));
    assert_eq!(p.get_child("status", ns::CLIENT).unwrap().text(), "b");
    phone.expect_next("an ack request", is_sm("r")).await;
    let h = phone.handled;
    phone
        .send(&format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>"))
        .await;
    phone.expect_silence(300).await;

    // The session goes on with the same full JID and state.
    bob.send(&chat("alice@localhost/phone", "m6")).await;
    assert_eq!(body(&phone.expect_next("m6", is_message).await), "m6");
    phone.send(&chat("bob@localhost", "back")).await;
    let m = bob.expect_next("alice's message", is_message).await;
    assert_eq!(m.attr("from"), Some("alice@localhost/phone"));
    phone.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = next_past_request(&mut phone, "an answer", is_sm("a")).await;
    assert_eq!(
        a.attr("h"),
        Some("2"),
        "the count continues across connections"
    );
    t.stop().await;
}

#[tokio::test]
async fn resume_is_refused_for_foreign_and_unknown_tokens_and_takes_over_an_open_stream() {
    let t = TestServer::start().await;
    users(&t).await;
    let (mut old, id) = phone(&t, "resume='true'").await;

    // bob cannot take alice's session; he may bind instead.
    let (mut bob, r) = resume(&t, "bob", &id, 0).await;
    assert!(r.is("failed", ns::SM), "{}", r.to_xml(""));
    assert!(r.has_child("item-not-found", ns::STANZA_ERRORS));
    bind_now(&mut bob, "pc").await;
    bob.available().await;

    // An unknown token is refused the same way.
    let (_, r) = resume(&t, "alice", "no-such-token", 0).await;
    assert!(r.is("failed", ns::SM), "{}", r.to_xml(""));
    assert!(r.has_child("item-not-found", ns::STANZA_ERRORS));

    // The right token while the old connection is still open: the new one takes over.
    let (mut phone, r) = resume(&t, "alice", &id, 0).await;
    assert!(r.is("resumed", ns::SM), "{}", r.to_xml(""));
    old.expect_stream_error("conflict").await;
    bob.send(&chat("alice@localhost/phone", "after")).await;
    assert_eq!(
        body(&phone.expect_next("a message", is_message).await),
        "after"
    );
    t.stop().await;
}

#[tokio::test]
async fn when_resumption_expires_messages_go_offline_and_requests_get_errors() {
    let t = TestServer::start().await;
    users(&t).await;
    // The client asks for a short wait.
    let (mut phone, _) = phone(&t, "resume='true' max='1'").await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;
    bob.send(&chat("alice@localhost/phone", "m1")).await;
    phone.expect_next("m1", is_message).await;
    drop(phone);
    eventually("hibernation", || hibernating(&t, "phone")).await;
    bob.send(&chat("alice@localhost/phone", "m2")).await;
    bob.send(
        "<iq type='get' id='q1' to='alice@localhost/phone'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    eventually("the end of the session", || {
        t.server()
            .router
            .session("alice@localhost", "phone")
            .is_none()
    })
    .await;
    let e = bob
        .expect_next("an error for the ping", |e| e.attr("id") == Some("q1"))
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    assert_eq!(e.attr("from"), Some("alice@localhost/phone"));

    // At the next login both messages come from offline storage, in order.
    wait_offline(&t, 2).await;
    let mut phone = t.login("alice", "phone").await;
    wait_offline(&t, 2).await;
    phone.available().await;
    let got = messages(&mut phone, 2).await;
    let bodies: Vec<_> = got.iter().map(body).collect();
    assert_eq!(bodies, ["m1", "m2"]);
    assert!(got.iter().all(|m| m.has_child("delay", ns::DELAY)));
    t.stop().await;
}

#[tokio::test]
async fn a_clean_close_ends_the_session_and_moves_unacked_messages_on() {
    let t = TestServer::start().await;
    users(&t).await;
    let (mut phone, id) = phone(&t, "resume='true'").await;
    phone.available().await;
    let mut desk = t.login("alice", "desk").await;
    desk.available().await;
    phone
        .expect_next("the desk's presence", |e| {
            e.attr("from") == Some("alice@localhost/desk")
        })
        .await;
    let mut bob = t.login("bob", "pc").await;
    bob.send(&chat("alice@localhost/phone", "unacked")).await;
    phone.expect_next("the message", is_message).await;
    phone.send("</stream:stream>").await;
    phone.expect_closed().await;
    // No hibernation: the phone is gone, and the desk gets the message the phone did not
    // acknowledge (the session's end announces it first, then moves its queue on).
    let p = desk
        .expect_next("the phone's unavailable presence", |e| {
            e.attr("from") == Some("alice@localhost/phone")
        })
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    let m = desk.expect_next("the rerouted message", is_message).await;
    assert_eq!(body(&m), "unacked");
    assert!(
        t.server()
            .router
            .session("alice@localhost", "phone")
            .is_none()
    );
    let (_, r) = resume(&t, "alice", &id, 1).await;
    assert!(r.is("failed", ns::SM), "{}", r.to_xml(""));
    t.stop().await;
}

#[tokio::test]
async fn binding_the_same_resource_replaces_a_hibernating_session() {
    let t = TestServer::start().await;
    users(&t).await;
    let (mut phone, id) = phone(&t, "resume='true'").await;
    let mut bob = t.login("bob", "pc").await;
    bob.send(&chat("alice@localhost/phone", "m1")).await;
    phone.expect_next("m1", is_message).await;
    drop(phone);
    eventually("hibernation", || hibernating(&t, "phone")).await;
    bob.send(&chat("alice@localhost/phone", "m2")).await;
    bob.routed().await;
    // The user starts over instead of resuming.
    let mut phone = t.login("alice", "phone").await;
    wait_offline(&t, 2).await;
    phone.available().await;
    let got = messages(&mut phone, 2).await;
    let bodies: Vec<_> = got.iter().map(body).collect();
    assert_eq!(bodies, ["m1", "m2"]);
    let (_, r) = resume(&t, "alice", &id, 0).await;
    assert!(r.is("failed", ns::SM), "{}", r.to_xml(""));
    t.stop().await;
}

#[tokio::test]
async fn too_many_unacknowledged_stanzas_close_the_session_and_nothing_is_lost() {
    let t = TestServer::start_with(|c| c.c2s.max_unacked = 10).await;
    users(&t).await;
    let mut phone = t.login("alice", "phone").await;
    let e = enable(&mut phone, "").await;
    assert!(e.is("enabled", ns::SM));
    assert_eq!(e.attr("id"), None, "not resumable unless asked");
    let mut bob = t.login("bob", "pc").await;
    let mut all = String::new();
    for i in 0..12 {
        all.push_str(&chat("alice@localhost/phone", &format!("m{i:02}")));
    }
    bob.send(&all).await;
    // Messages (and a request) arrive until the bound is passed; how many the server wrote
    // before it noticed depends on how they were batched.
    phone
        .stanzas_then_stream_error("policy-violation", 12, |e| {
            is_message(e) || e.is("r", ns::SM)
        })
        .await;
    eventually("the end of the session", || {
        t.server()
            .router
            .session("alice@localhost", "phone")
            .is_none()
    })
    .await;
    wait_offline(&t, 12).await;
    let mut phone = t.login("alice", "phone").await;
    phone.available().await;
    let got = messages(&mut phone, 12).await;
    let bodies: Vec<_> = got.iter().map(body).collect();
    let want: Vec<_> = (0..12).map(|i| format!("m{i:02}")).collect();
    assert_eq!(bodies, want);
    t.stop().await;
}

#[tokio::test]
async fn an_unanswered_ack_request_counts_as_a_dead_connection() {
    let t = TestServer::start_with(|c| {
        c.c2s.ping_timeout = zorg_server::config::DurationStr::from_secs(1);
    })
    .await;
    users(&t).await;
    let (mut phone, id) = phone(&t, "resume='true'").await;
    let mut bob = t.login("bob", "pc").await;
    bob.send(&chat("alice@localhost/phone", "m1")).await;
    phone.expect_next("m1", is_message).await;
    // The phone sits in a dead spot: it reads the request but cannot answer.
    phone.expect_next("an ack request", is_sm("r")).await;
    eventually("hibernation", || hibernating(&t, "phone")).await;
    let (mut phone, r) = resume(&t, "alice", &id, 0).await;
    assert!(r.is("resumed", ns::SM), "{}", r.to_xml(""));
    let got = messages(&mut phone, 1).await;
    assert_eq!(body(&got[0]), "m1", "sent again: it was never acknowledged");
    t.stop().await;
}

#[tokio::test]
async fn malformed_counts_are_refused() {
    let t = TestServer::start().await;
    users(&t).await;
    // A resumption whose count is not a number: refused, and the client may still bind.
    let mut c = t.authenticate("alice").await;
    c.open("localhost").await;
    c.send("<resume xmlns='urn:xmpp:sm:3' previd='x' h='-1'/>")
        .await;
    let e = c.next().await;
    assert!(e.is("failed", ns::SM), "{}", e.to_xml(""));
    assert!(
        e.has_child("bad-request", ns::STANZA_ERRORS),
        "{}",
        e.to_xml("")
    );
    bind_now(&mut c, "phone").await;
    let e = enable(&mut c, "").await;
    assert!(e.is("enabled", ns::SM), "{}", e.to_xml(""));
    // An acknowledgement without a usable count ends the stream with bad-format.
    c.send("<a xmlns='urn:xmpp:sm:3' h='lots'/>").await;
    c.expect_stream_error("bad-format").await;
    t.stop().await;
}
