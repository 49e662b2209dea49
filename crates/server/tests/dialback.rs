//! XEP-0220 Server Dialback, opt-in with `[federation] dialback = true`: a server whose
//! certificate the receiving server does not trust gets in by dialback, but dialback never
//! vouches for the receiving server (tests/dialback_mitm.rs plays that attack); without dialback
//! on the receiving side the message bounces; forged keys, `<db:verify/>` answers, allow/deny, the cap
//! on pending verifications, and what a server without dialback says to dialback elements.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use common::fed::{
    Ca, body, error_of, fed_server, federation, load_cert, online, raw_tls_to_b, s2s_addr,
};
use common::{Client, TestServer};
use zorg_proto::{Element, Frame, ns};
use zorg_server::config::{Config, DurationStr};

const DB: &str = "jabber:server:dialback";
const FEATURE: &str = "urn:xmpp:features:dialback";

/// A federating server with dialback on, then `tweak`.
async fn db_server(
    domain: &str,
    cert: (PathBuf, PathBuf),
    anchor: &Ca,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    fed_server(domain, cert, &anchor.root(), |c| {
        c.federation.dialback = true;
        tweak(c);
    })
    .await
}

/// a.test (certificate from one auditor) and b.test (from another), each trusting only its
/// own: the certificates refuse each other. `dialback_b` turns dialback on at b.test; `tweak_b`
/// changes b.test's configuration further. Both know each other's address; alice and bob exist.
async fn strangers(
    dialback_b: bool,
    tweak_b: impl FnOnce(&mut Config),
) -> (TestServer, TestServer) {
    let (ca_a, ca_b) = (Ca::new("Auditor A"), Ca::new("Auditor B"));
    let a = db_server("a.test", ca_a.issue("a", &["a.test"]), &ca_a, |_| {}).await;
    let b = fed_server("b.test", ca_b.issue("b", &["b.test"]), &ca_b.root(), |c| {
        c.federation.dialback = dialback_b;
        tweak_b(c);
    })
    .await;
    federation(&a).set_host("b.test", s2s_addr(&b));
    federation(&b).set_host("a.test", s2s_addr(&a));
    a.add_user("alice@a.test", "pass").await;
    b.add_user("bob@b.test", "pass").await;
    (a, b)
}

/// b.test with dialback on (then `tweak`), its certificate from "Auditor", and a "Stranger"
/// CA whose certificates it does not trust: (auditor, stranger, b.test).
async fn b_and_a_stranger(tweak: impl FnOnce(&mut Config)) -> (Ca, Ca, TestServer) {
    let ca = Ca::new("Auditor");
    let stranger = Ca::new("Stranger");
    let b = db_server("b.test", ca.issue("b", &["b.test"]), &ca, tweak).await;
    (ca, stranger, b)
}

/// A certificate chain and key from files `Ca::issue` wrote.
/// A server stream header from `from` to `to` that declares the `db:` prefix.
fn db_header(from: &str, to: &str, id: Option<&str>) -> String {
    let id = id.map(|i| format!(" id='{i}'")).unwrap_or_default();
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}'{id} version='1.0'>"
    )
}

/// A raw server claiming `from`, with a certificate for c.test from `ca`, connected to `b`
/// over direct TLS; its stream (declaring dialback) opened. Gives back the stream ID `b` gave.
async fn raw_dialback(ca: &Ca, b: &TestServer, from: &str) -> (Client, String) {
    let mut c = raw_tls_to_b(ca, b).await;
    c.send(&db_header(from, "b.test", None)).await;
    let id = match c.frame().await {
        Some(Frame::StreamOpen(h)) => h.attr("id").unwrap().to_owned(),
        other => panic!("expected a stream header, got {other:?}"),
    };
    let f = c.next().await;
    assert!(f.is("features", ns::STREAM), "{}", f.to_xml(""));
    c.features = Some(f);
    (c, id)
}

/// The next `<db:NAME/>` on `c`.
async fn db_answer(c: &mut Client, name: &str) -> Element {
    let e = c.next().await;
    assert!(e.is(name, DB), "expected db:{name}, got {}", e.to_xml(""));
    e
}

/// The condition of a dialback error answer.
fn db_error(e: &Element) -> String {
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    let err = e.children().find(|c| c.name() == "error").unwrap();
    let cond = err.children().next().unwrap();
    assert_eq!(cond.ns(), ns::STANZA_ERRORS);
    cond.name().to_owned()
}

/// An address where a server accepts connections and never answers (held until the test ends).
async fn silent_peer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    (addr, hold)
}

#[tokio::test]
async fn dialback_lets_in_a_server_the_receiver_does_not_trust_but_never_vouches_for_the_receiver()
{
    // a.test trusts both auditors, b.test only its own.
    let (ca_a, ca_b) = (Ca::new("Auditor A"), Ca::new("Auditor B"));
    let a = db_server("a.test", ca_a.issue("a", &["a.test"]), &ca_a, |c| {
        c.federation.trust_anchors = vec![ca_a.root(), ca_b.root()];
    })
    .await;
    let b = db_server("b.test", ca_b.issue("b", &["b.test"]), &ca_b, |_| {}).await;
    federation(&a).set_host("b.test", s2s_addr(&b));
    federation(&b).set_host("a.test", s2s_addr(&a));
    a.add_user("alice@a.test", "pass").await;
    b.add_user("bob@b.test", "pass").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    // alice → bob: a.test checks b.test's certificate (fine); b.test does not trust a.test's
    // and offers dialback, verifying the key with a.test.
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello bob</body></message>")
        .await;
    let m = bob.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    assert_eq!(body(&m), "hello bob");
    assert_eq!(federation(&a).link_count(), 1);
    // The link carries more than one stanza.
    alice
        .send("<message to='bob@b.test' type='chat' id='m2'><body>again</body></message>")
        .await;
    let m = bob.expect_next("m2", |e| e.attr("id") == Some("m2")).await;
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    assert_eq!(m.attr("to"), Some("bob@b.test"));
    assert_eq!(body(&m), "again");
    // bob → alice: b.test cannot authenticate a.test as a receiving server (dialback proves
    // only b.test to a.test), so it sends nothing.
    bob.send("<message to='alice@a.test/phone' type='chat' id='r1'><body>hi</body></message>")
        .await;
    let e = bob
        .expect_next("a bounce", |e| e.attr("id") == Some("r1"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(
        text.contains("chains to an untrusted root") && text.contains("dialback cannot stand in"),
        "{text}"
    );
    alice.expect_silence(300).await;
    assert_eq!(federation(&b).link_count(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn without_dialback_at_the_receiving_side_the_message_bounces() {
    let (a, b) = strangers(false, |_| {}).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m1"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(text.contains("chains to an untrusted root"), "{text}");
    bob.expect_silence(300).await;
    assert_eq!(federation(&a).link_count(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_forged_key_is_invalid_and_ends_the_link() {
    let (_, stranger, b) = b_and_a_stranger(|_| {}).await;
    // c.test's authoritative server: a Zorg server with dialback, which made no such key.
    let c = db_server(
        "c.test",
        stranger.issue("c0", &["c.test"]),
        &stranger,
        |_| {},
    )
    .await;
    federation(&b).set_host("c.test", s2s_addr(&c));
    b.add_user("bob@b.test", "pass").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;

    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    let f = raw.features.clone().unwrap();
    assert!(f.has_child("dialback", FEATURE), "{}", f.to_xml(""));
    assert!(
        f.get_child("dialback", FEATURE)
            .unwrap()
            .has_child("errors", FEATURE)
    );
    assert!(
        !f.has_child("mechanisms", ns::SASL),
        "no SASL for an untrusted certificate"
    );
    // Stanzas before dialback are not authorised.
    let forged = "0".repeat(64);
    raw.send(&format!(
        "<db:result from='c.test' to='b.test'>{forged}</db:result>"
    ))
    .await;
    let r = db_answer(&mut raw, "result").await;
    assert_eq!(r.attr("type"), Some("invalid"), "{}", r.to_xml(""));
    assert_eq!(r.attr("from"), Some("b.test"));
    assert_eq!(r.attr("to"), Some("c.test"));
    raw.expect_stream_error("not-authorized").await;
    // A new link claiming c.test cannot send anything before dialback either.
    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    raw.send("<message from='carol@c.test' to='bob@b.test' id='x1'><body>sneaky</body></message>")
        .await;
    bob.expect_silence(300).await;
    raw.expect_stream_error("not-authorized").await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn db_verify_is_valid_for_keys_this_server_made_and_invalid_otherwise() {
    let (ca, stranger, b) = b_and_a_stranger(|_| {}).await;
    b.add_user("bob@b.test", "pass").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    // c.test is played here as a receiving server with a certificate b.test trusts (a receiving
    // server must be authenticated by its certificate: dialback never does that), which does
    // not accept b.test's certificate and offers dialback only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    federation(&b).set_host("c.test", listener.local_addr().unwrap());
    bob.send("<message to='carol@c.test' id='b1'><body>hi carol</body></message>")
        .await;
    let (tcp, _) = listener.accept().await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    assert!(matches!(c.frame().await, Some(Frame::StreamOpen(_))));
    c.send(&db_header("c.test", "b.test", Some("plain1"))).await;
    c.send("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await;
    assert!(c.next().await.is("starttls", ns::TLS));
    c.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    let (chain, key) = load_cert(ca.issue("c", &["c.test"]));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        .accept(c.io)
        .await
        .unwrap();
    let mut c = Client::new(Box::new(tls));
    match c.frame().await {
        Some(Frame::StreamOpen(h)) => {
            assert_eq!(h.attr("from"), Some("b.test"));
            assert_eq!(h.attr("to"), Some("c.test"));
        }
        other => panic!("expected b.test's header, got {other:?}"),
    }
    c.send(&db_header("c.test", "b.test", Some("S1"))).await;
    c.send("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>").await;
    // b.test has no SASL EXTERNAL to use and asks by dialback, with a key for stream S1.
    let req = db_answer(&mut c, "result").await;
    assert_eq!(req.attr("from"), Some("b.test"));
    assert_eq!(req.attr("to"), Some("c.test"));
    assert_eq!(req.attr("type"), None);
    let key = req.text();
    assert_eq!(key.len(), 64, "{key}");

    // As the receiving server, c.test asks b.test (authoritative for b.test) about the key.
    let (mut v, _) = raw_dialback(&stranger, &b, "c.test").await;
    let verify = |id: &str, to: &str, key: &str| {
        format!("<db:verify from='c.test' to='{to}' id='{id}'>{key}</db:verify>")
    };
    v.send(&verify("S1", "b.test", &key)).await;
    let ans = db_answer(&mut v, "verify").await;
    assert_eq!(ans.attr("type"), Some("valid"), "{}", ans.to_xml(""));
    assert_eq!(
        (ans.attr("from"), ans.attr("to"), ans.attr("id")),
        (Some("b.test"), Some("c.test"), Some("S1"))
    );
    // Another stream ID, a changed key, another domain: invalid.
    let mut changed = key.clone();
    changed.replace_range(..1, if key.starts_with('a') { "b" } else { "a" });
    for (id, k) in [("S2", key.as_str()), ("S1", changed.as_str())] {
        v.send(&verify(id, "b.test", k)).await;
        let ans = db_answer(&mut v, "verify").await;
        assert_eq!(ans.attr("type"), Some("invalid"), "{}", ans.to_xml(""));
        assert_eq!(ans.attr("id"), Some(id));
    }
    // A domain not served here: a dialback error, the stream stays.
    v.send(&verify("S1", "elsewhere.test", &key)).await;
    let ans = db_answer(&mut v, "verify").await;
    assert_eq!(db_error(&ans), "item-not-found");
    v.send(&verify("S1", "b.test", &key)).await;
    assert_eq!(
        db_answer(&mut v, "verify").await.attr("type"),
        Some("valid")
    );

    // c.test says valid: b.test's link is up and bob's message arrives.
    c.send("<db:result from='c.test' to='b.test' type='valid'/>")
        .await;
    let m = c
        .expect_next("bob's message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("from"), Some("bob@b.test/desk"));
    assert_eq!(m.attr("to"), Some("carol@c.test"));
    assert_eq!(body(&m), "hi carol");
    assert_eq!(federation(&b).link_count(), 1);
    b.stop().await;
}

#[tokio::test]
async fn allow_and_deny_apply_to_dialback() {
    // b.test denies a.test: a.test's dialback is refused with the certificate, and bounces.
    let (a, b) = strangers(true, |c| c.federation.deny = vec!["a.test".into()]).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m1"))
        .await;
    assert_eq!(error_of(&e).0, "remote-server-not-found");
    // And b.test does not link to a.test either, dialback or not.
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    bob.send("<message to='alice@a.test' id='r1'><body>y</body></message>")
        .await;
    let e = bob
        .expect_next("a bounce", |e| e.attr("id") == Some("r1"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(text.contains("permitted"), "{text}");
    alice.expect_silence(300).await;
    a.stop().await;
    b.stop().await;

    // On one link: a sender domain on the deny list gets a dialback error, the link stays.
    let (ca, stranger, b) = b_and_a_stranger(|c| c.federation.deny = vec!["d.test".into()]).await;
    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    raw.send("<db:result from='d.test' to='b.test'>abc</db:result>")
        .await;
    let r = db_answer(&mut raw, "result").await;
    assert_eq!(db_error(&r), "not-authorized");
    assert_eq!(r.attr("to"), Some("d.test"));
    // No key, or one far too long to be real: not-acceptable.
    for key in [String::new(), "k".repeat(2000)] {
        raw.send(&format!(
            "<db:result from='c.test' to='b.test'>{key}</db:result>"
        ))
        .await;
        assert_eq!(
            db_error(&db_answer(&mut raw, "result").await),
            "not-acceptable"
        );
    }
    // A target not served here: item-not-found.
    raw.send("<db:result from='c.test' to='elsewhere.test'>abc</db:result>")
        .await;
    assert_eq!(
        db_error(&db_answer(&mut raw, "result").await),
        "item-not-found"
    );
    b.stop().await;

    // With an allow list that does not name c.test, its link is refused outright.
    let b = db_server("b.test", ca.issue("b", &["b.test"]), &ca, |c| {
        c.federation.allow = vec!["a.test".into()];
    })
    .await;
    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    let f = raw.features.clone().unwrap();
    assert!(!f.has_child("dialback", FEATURE), "{}", f.to_xml(""));
    raw.expect_stream_error("not-authorized").await;
    b.stop().await;
}

#[tokio::test]
async fn pending_verifications_per_link_are_capped() {
    let (silent, hold) = silent_peer().await;
    let (_, stranger, b) =
        b_and_a_stranger(|c| c.federation.connect_timeout = DurationStr::from_secs(2)).await;
    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    // Sender multiplexing: five domains whose authoritative servers never answer.
    for i in 1..=5 {
        federation(&b).set_host(&format!("d{i}.test"), silent);
    }
    for i in 1..=5 {
        raw.send(&format!(
            "<db:result from='d{i}.test' to='b.test'>k{i}</db:result>"
        ))
        .await;
    }
    // The fifth is refused at once; the four others fail when connect_timeout (2 s) is up.
    let first = db_answer(&mut raw, "result").await;
    assert_eq!(first.attr("to"), Some("d5.test"), "{}", first.to_xml(""));
    assert_eq!(db_error(&first), "resource-constraint");
    let mut timed_out = Vec::new();
    for _ in 1..=4 {
        let r = db_answer(&mut raw, "result").await;
        assert_eq!(db_error(&r), "remote-server-timeout");
        timed_out.push(r.attr("to").unwrap().to_owned());
    }
    timed_out.sort();
    assert_eq!(timed_out, ["d1.test", "d2.test", "d3.test", "d4.test"]);
    hold.abort();
    b.stop().await;
}

#[tokio::test]
async fn without_dialback_dialback_elements_are_refused() {
    let ca = Ca::new("Auditor");
    let stranger = Ca::new("Stranger");
    let b = fed_server("b.test", ca.issue("b", &["b.test"]), &ca.root(), |_| {}).await;
    // A trusted certificate: SASL EXTERNAL is offered, dialback is not; a <db:result/> instead
    // of SASL is not authorised (RFC 6120 §4.9.3.12).
    let (mut raw, _) = raw_dialback(&ca, &b, "c.test").await;
    let f = raw.features.clone().unwrap();
    assert!(f.has_child("mechanisms", ns::SASL));
    assert!(!f.has_child("dialback", FEATURE), "{}", f.to_xml(""));
    raw.send("<db:result from='c.test' to='b.test'>abc</db:result>")
        .await;
    raw.expect_stream_error("not-authorized").await;
    // After SASL EXTERNAL, a <db:result/> is a stanza type this server does not support.
    let (mut raw, _) = raw_dialback(&ca, &b, "c.test").await;
    let authzid = base64::engine::general_purpose::STANDARD.encode("c.test");
    raw.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
    ))
    .await;
    assert!(raw.next().await.is("success", ns::SASL));
    raw.open_s2s("c.test", "b.test").await;
    raw.send("<result xmlns='jabber:server:dialback' from='c.test' to='b.test'>abc</result>")
        .await;
    raw.expect_stream_error("unsupported-stanza-type").await;
    // An untrusted certificate: neither SASL nor dialback, not-authorized.
    let (mut raw, _) = raw_dialback(&stranger, &b, "c.test").await;
    let f = raw.features.clone().unwrap();
    assert!(!f.has_child("dialback", FEATURE) && !f.has_child("mechanisms", ns::SASL));
    raw.expect_stream_error("not-authorized").await;
    b.stop().await;
}
