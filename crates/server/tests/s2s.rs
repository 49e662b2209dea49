//! Server-to-server links: two Zorg servers on loopback, certificates from a CA made here with
//! rcgen, SASL EXTERNAL both ways; bounces when the peer is down or silent; a forged `from` on
//! an inbound link; idle links, caps, three servers. Certificate refusals: tests/s2s_trust.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::fed::{
    Ca, body, chat, error_of, fed_server, federation, online, pair, pair_with, raw_connect,
    s2s_addr, subscription_and_presence,
};
use common::{Client, TestServer, eventually};
use rustls::pki_types::ServerName;
use zorg_proto::ns;
use zorg_server::config::DurationStr;

#[tokio::test]
async fn alice_and_bob_chat_across_two_servers() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;

    chat(&mut alice, &mut bob).await;
    // One outbound link each way.
    assert_eq!(federation(&a).link_count(), 1);
    assert_eq!(federation(&b).link_count(), 1);

    // An IQ and its result travel too: bob pings a.test.
    let res = bob
        .iq(
            "<iq type='get' to='a.test' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p1",
        )
        .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", res.to_xml(""));
    assert_eq!(res.attr("from"), Some("a.test"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn the_server_answers_remote_queries_for_itself_and_its_accounts() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    // disco#info of the remote server: its identity and features (XEP-0030).
    let r = bob
        .iq("<iq type='get' to='a.test' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d1")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    assert_eq!(r.attr("from"), Some("a.test"));
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    let identity = q.get_child("identity", ns::DISCO_INFO).unwrap();
    assert_eq!(identity.attr("category"), Some("server"));
    assert!(q.children().any(|f| f.attr("var") == Some(ns::PING)));
    // Entity time (XEP-0202).
    let r = bob
        .iq(
            "<iq type='get' to='a.test' id='t1'><time xmlns='urn:xmpp:time'/></iq>",
            "t1",
        )
        .await;
    assert!(r.get_child("time", ns::TIME).is_some(), "{}", r.to_xml(""));
    // An account's bare JID: the server answers on its behalf.
    let r = bob
        .iq("<iq type='get' to='alice@a.test' id='d2'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>", "d2")
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", r.to_xml(""));
    assert_eq!(r.attr("from"), Some("alice@a.test"));
    let q = r.get_child("query", ns::DISCO_INFO).unwrap();
    assert_eq!(
        q.get_child("identity", ns::DISCO_INFO)
            .unwrap()
            .attr("category"),
        Some("account")
    );
    // An account that does not exist, and a query nobody answers, look the same.
    for (id, to, payload) in [
        (
            "d3",
            "nobody@a.test",
            "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        ),
        ("v1", "alice@a.test", "<query xmlns='jabber:iq:version'/>"),
        ("r1", "a.test", "<query xmlns='jabber:iq:roster'/>"),
    ] {
        let r = bob
            .iq(
                &format!("<iq type='get' to='{to}' id='{id}'>{payload}</iq>"),
                id,
            )
            .await;
        assert_eq!(r.attr("type"), Some("error"), "{}", r.to_xml(""));
        assert_eq!(error_of(&r).0, "service-unavailable", "{}", r.to_xml(""));
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn stanzas_for_a_peer_that_is_down_are_bounced() {
    let ca = Ca::new("Auditor");
    let root = ca.root();
    // An address where nobody listens: bound (so the port stays taken) but not listening, so
    // connections to it are refused. Held until the test ends.
    let dead = tokio::net::TcpSocket::new_v4().unwrap();
    dead.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let a = fed_server("a.test", ca.issue("a", &["a.test"]), &root, |c| {
        c.federation.hosts.insert("b.test".into(), dead_addr);
    })
    .await;
    a.add_user("alice@a.test", "pass").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    for i in 1..=3 {
        alice
            .send(&format!(
                "<message to='bob@b.test' id='m{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    alice
        .send("<iq type='get' to='b.test' id='q1'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let e = alice
            .expect_next("a bounce", |e| e.attr("type") == Some("error"))
            .await;
        assert_eq!(
            error_of(&e).0,
            "remote-server-not-found",
            "{}",
            e.to_xml("")
        );
        ids.push(e.attr("id").unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["m1", "m2", "m3", "q1"]);
    // RFC 6120 §8.3.1: errors and IQ results are never answered with an error.
    alice
        .send("<message to='bob@b.test' type='error' id='e1'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
        .await;
    alice
        .send("<iq to='bob@b.test/x' type='result' id='r1'/>")
        .await;
    alice.expect_silence(500).await;
    // (A domain DNS knows nothing of: tests/discovery.rs.)
    // XEP-0191: a blocked remote contact is refused here, before any link is tried.
    let r = alice
        .iq("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='dave@b.test'/></block></iq>", "b1")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    alice
        .send("<message to='dave@b.test' id='d1'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("a refusal", |e| e.attr("id") == Some("d1"))
        .await;
    assert_eq!(error_of(&e).0, "not-acceptable");
    a.stop().await;
}

#[tokio::test]
async fn a_silent_peer_times_out_and_the_queue_bounces() {
    let ca = Ca::new("Auditor");
    let root = ca.root();
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let a = fed_server("a.test", ca.issue("a", &["a.test"]), &root, |c| {
        c.federation.hosts.insert("b.test".into(), silent_addr);
        c.federation.connect_timeout = DurationStr::from_secs(1);
    })
    .await;
    a.add_user("alice@a.test", "pass").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>1</body></message>")
        .await;
    alice
        .send("<message to='bob@b.test' id='m2'><body>2</body></message>")
        .await;
    for id in ["m1", "m2"] {
        let e = alice
            .expect_next("a bounce", |e| e.attr("id") == Some(id))
            .await;
        assert_eq!(error_of(&e).0, "remote-server-timeout", "{}", e.to_xml(""));
    }
    hold.abort();
    a.stop().await;
}

/// [`raw_connect`] with a trusted certificate, then SASL EXTERNAL and the restarted stream.
async fn raw_peer(ca: &Ca, b: &TestServer) -> Client {
    let mut c = raw_connect(ca, b).await;
    let f = c.features.clone().unwrap();
    let mechs = f.get_child("mechanisms", ns::SASL).expect("SASL offered");
    assert_eq!(
        mechs.children().next().map(|m| m.text()).as_deref(),
        Some("EXTERNAL")
    );
    let authzid = base64::engine::general_purpose::STANDARD.encode("c.test");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
    ))
    .await;
    let ok = c.next().await;
    assert!(ok.is("success", ns::SASL), "{}", ok.to_xml(""));
    c.open_s2s("c.test", "b.test").await;
    c
}

#[tokio::test]
async fn inbound_link_delivers_and_a_forged_from_is_invalid_from() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    let mut c = raw_peer(&ca, &b).await;
    c.send("<message from='carol@c.test/x' to='bob@b.test' id='c1'><body>from c</body></message>")
        .await;
    let m = bob
        .expect_next("carol's message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("from"), Some("carol@c.test/x"));
    assert_eq!(body(&m), "from c");
    // The link is authenticated for c.test: a.test's users cannot be spoken for.
    c.send("<message from='mallory@a.test' to='bob@b.test' id='f1'><body>forged</body></message>")
        .await;
    c.expect_stream_error("invalid-from").await;
    bob.expect_silence(300).await;

    // And a stanza for a domain b.test does not host ends the link with host-unknown.
    let mut c = raw_peer(&ca, &b).await;
    c.send(
        "<message from='carol@c.test' to='dave@elsewhere.test' id='h1'><body>x</body></message>",
    )
    .await;
    c.expect_stream_error("host-unknown").await;

    // Nobody may open a link in the name of a domain b.test serves itself.
    let addr = b.running.as_ref().unwrap().s2s_direct_tls_addrs[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(common::client_tls(&[&rustls::version::TLS13]))
        .connect(ServerName::try_from("b.test").unwrap(), tcp)
        .await
        .unwrap();
    let mut c = Client::new(Box::new(tls));
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='b.test' to='b.test' version='1.0'>").await;
    c.expect_stream_error("invalid-from").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn bad_sasl_external_requests_are_refused() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let sasl = "xmlns='urn:ietf:params:xml:ns:xmpp-sasl'";
    let bad = [
        // Authorisation for another domain than the stream's `from` (c.test).
        format!(
            "<auth {sasl} mechanism='EXTERNAL'>{}</auth>",
            b64(b"a.test")
        ),
        format!("<auth {sasl} mechanism='EXTERNAL'>!!not base64!!</auth>"),
        // Valid base64 of bytes that are not UTF-8.
        format!(
            "<auth {sasl} mechanism='EXTERNAL'>{}</auth>",
            b64(&[0xff, 0xfe])
        ),
    ];
    for req in bad {
        let mut c = raw_connect(&ca, &b).await;
        c.send(&req).await;
        let f = c.next().await;
        assert!(
            f.is("failure", ns::SASL) && f.has_child("invalid-authzid", ns::SASL),
            "{req}: {}",
            f.to_xml("")
        );
        c.expect_stream_error("not-authorized").await;
    }
    // A mechanism that is not offered is one the peer may not use.
    let mut c = raw_connect(&ca, &b).await;
    c.send(&format!(
        "<auth {sasl} mechanism='PLAIN'>{}</auth>",
        b64(b"\0c.test\0x")
    ))
    .await;
    let f = c.next().await;
    assert!(
        f.has_child("invalid-mechanism", ns::SASL),
        "{}",
        f.to_xml("")
    );
    c.expect_stream_error("not-authorized").await;
    // Not an <auth/> at all: the stream error alone, no SASL <failure/> (RFC 6120 §4.9.3.12).
    let mut c = raw_connect(&ca, &b).await;
    c.send("<iq type='get' id='x' from='c.test' to='b.test'/>")
        .await;
    c.expect_stream_error("not-authorized").await;
    // The listener is unharmed: a correct request still succeeds.
    raw_peer(&ca, &b).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn subscription_and_presence_across_servers() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;

    subscription_and_presence(&a, &mut alice, &mut bob, true).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn idle_links_close_and_reopen_when_needed() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair_with(&ca, ca.issue("b", &["b.test"]), |c| {
        // Below the configurable minimum: tests do not validate the config.
        c.federation.idle_timeout = DurationStr::from_secs(1);
    })
    .await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>one</body></message>")
        .await;
    bob.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(federation(&a).link_count(), 1);
    eventually("the idle link is closed", || {
        federation(&a).link_count() == 0
    })
    .await;
    alice
        .send("<message to='bob@b.test' id='m2'><body>two</body></message>")
        .await;
    let m = bob.expect_next("m2", |e| e.attr("id") == Some("m2")).await;
    assert_eq!(body(&m), "two");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn unauthenticated_inbound_links_are_capped_and_timed_out() {
    use tokio::io::AsyncReadExt;
    let ca = Ca::new("Auditor");
    let root = ca.root();
    let b = fed_server("b.test", ca.issue("b", &["b.test"]), &root, |c| {
        c.limits.max_unauthenticated = 1;
        c.limits.pre_auth_timeout = DurationStr::from_secs(1);
    })
    .await;
    let addr = s2s_addr(&b);
    let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
    eventually("the first connection holds the only permit", || {
        federation(&b).unauthenticated.available_permits() == 0
    })
    .await;
    // The cap is taken by the silent first connection: the second is closed at once.
    let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(common::WAIT, second.read(&mut buf))
        .await
        .expect("the second connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // The first says nothing and is cut off after pre_auth_timeout.
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    // Bounded by WAIT, not by a tight upper limit: a loaded machine is slower, not wrong. The
    // lower bound shows it was the timeout that ended it, not the cap.
    tokio::time::timeout(common::WAIT, first.read_to_end(&mut got))
        .await
        .expect("the silent connection is cut off")
        .unwrap_or(0);
    assert!(start.elapsed() >= std::time::Duration::from_millis(700));
    b.stop().await;
}

#[tokio::test]
async fn three_servers_one_link_per_domain_pair() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let c = fed_server("c.test", ca.issue("c", &["c.test"]), &ca.root(), |_| {}).await;
    for (from, to, domain) in [(&a, &c, "c.test"), (&c, &a, "a.test"), (&c, &b, "b.test")] {
        federation(from).set_host(domain, s2s_addr(to));
    }
    federation(&b).set_host("c.test", s2s_addr(&c));
    c.add_user("carol@c.test", "pass").await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    let mut carol = online(&c, "c.test", "carol", "tab").await;
    for to in ["bob@b.test", "carol@c.test"] {
        alice
            .send(&format!(
                "<message to='{to}' id='to-{to}'><body>hello</body></message>"
            ))
            .await;
    }
    bob.expect_next("alice's message", |e| {
        e.attr("from") == Some("alice@a.test/phone")
    })
    .await;
    carol
        .expect_next("alice's message", |e| {
            e.attr("from") == Some("alice@a.test/phone")
        })
        .await;
    carol
        .send("<message to='bob@b.test' id='c2b'><body>hi bob</body></message>")
        .await;
    let m = bob
        .expect_next("carol's message", |e| e.attr("id") == Some("c2b"))
        .await;
    assert_eq!(m.attr("from"), Some("carol@c.test/tab"));
    assert_eq!(
        federation(&a).link_count(),
        2,
        "a.test → b.test and a.test → c.test"
    );
    assert_eq!(federation(&c).link_count(), 1, "c.test → b.test");
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn starttls_port_requires_tls_and_tolerates_a_header_without_from() {
    let ca = Ca::new("Auditor");
    let b = fed_server("b.test", ca.issue("b", &["b.test"]), &ca.root(), |_| {}).await;
    let tcp = tokio::net::TcpStream::connect(s2s_addr(&b)).await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    // RFC 6120 §4.7.1: 'from' is only a SHOULD before TLS.
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='b.test' version='1.0'>").await;
    assert!(matches!(
        c.frame().await,
        Some(zorg_proto::Frame::StreamOpen(_))
    ));
    let f = c.next().await;
    let tls = f.get_child("starttls", ns::TLS).expect("STARTTLS offered");
    assert!(tls.has_child("required", ns::TLS));
    // Anything but <starttls/> ends the stream.
    c.send("<message from='x@c.test' to='bob@b.test'/>").await;
    c.expect_stream_error("policy-violation").await;
    b.stop().await;
}

#[tokio::test]
async fn a_message_for_an_offline_remote_user_is_stored_and_delivered_at_login() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='o1'><body>while you were out</body></message>")
        .await;
    // b.test stored it, so there is no bounce to come.
    eventually("b.test to store the message", || {
        b.server()
            .offline_hints
            .get("bob@b.test")
            .is_some_and(|n| *n >= 1)
    })
    .await;
    alice.expect_silence(100).await;
    let mut bob = b.login_at("b.test", "bob", "desk").await;
    bob.available().await;
    let m = bob
        .expect_next("the stored message", |e| e.attr("id") == Some("o1"))
        .await;
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    assert_eq!(body(&m), "while you were out");
    assert!(m.has_child("delay", "urn:xmpp:delay"), "{}", m.to_xml(""));
    a.stop().await;
    b.stop().await;
}
