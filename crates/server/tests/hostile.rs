//! Hostile input: every bad stream gets the RFC 6120 stream error and closes only itself.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::{Client, TestServer, eventually};
use tokio::io::AsyncReadExt;
use zorg_proto::ns;

/// Sends `bad` on a bound session and expects `condition`; a bystander session keeps working.
async fn bad_input(t: &TestServer, bad: &[u8], condition: &str) {
    let mut bystander = t.login("bob", "by").await;
    let mut c = t.login("alice", "evil").await;
    c.send_bytes(bad).await.unwrap();
    c.expect_stream_error(condition).await;
    let r = bystander
        .iq(
            "<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "alive",
        )
        .await;
    assert_eq!(
        r.attr("type"),
        Some("result"),
        "bystander unaffected after {condition}"
    );
}

async fn server() -> TestServer {
    let t = TestServer::start_with(|c| {
        c.limits.max_stanza_size = 8192;
        c.limits.max_depth = 8;
        c.limits.max_attributes = 8;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    t.add_user("bob@localhost", "pass").await;
    t
}

#[tokio::test]
async fn restricted_xml_is_refused() {
    let t = server().await;
    bad_input(&t, b"<!DOCTYPE x [<!ENTITY a 'b'>]>", "restricted-xml").await;
    bad_input(&t, b"<?php echo 1; ?>", "restricted-xml").await;
    bad_input(&t, b"<!-- comment -->", "restricted-xml").await;
    bad_input(
        &t,
        b"<message><body>&lol;</body></message>",
        "restricted-xml",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn malformed_xml_and_encoding() {
    let t = server().await;
    bad_input(
        &t,
        b"<message><body>\xc3\x28</body></message>",
        "not-well-formed",
    )
    .await;
    bad_input(
        &t,
        b"<message><body>&#0;</body></message>",
        "not-well-formed",
    )
    .await;
    bad_input(
        &t,
        b"<message><body>\x01</body></message>",
        "not-well-formed",
    )
    .await;
    bad_input(&t, b"<message></iq>", "not-well-formed").await;
    bad_input(&t, b"<foo:message xmlns:bar='x'/>", "bad-namespace-prefix").await;
    bad_input(&t, b"not xml at all<", "bad-format").await;
    t.stop().await;
}

#[tokio::test]
async fn limits_on_size_depth_attributes() {
    let t = server().await;
    let big = format!(
        "<message to='bob@localhost'><body>{}</body></message>",
        "x".repeat(9000)
    );
    bad_input(&t, big.as_bytes(), "policy-violation").await;
    let deep = format!("<message>{}", "<a>".repeat(20));
    bad_input(&t, deep.as_bytes(), "policy-violation").await;
    let attrs: String = (0..20).map(|i| format!(" a{i}='1'")).collect();
    bad_input(
        &t,
        format!("<message{attrs}/>").as_bytes(),
        "policy-violation",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn wrong_stanzas_and_addresses() {
    let t = server().await;
    bad_input(
        &t,
        b"<message from='bob@localhost/x' to='alice@localhost'/>",
        "invalid-from",
    )
    .await;
    bad_input(&t, b"<hello/>", "unsupported-stanza-type").await;
    bad_input(
        &t,
        b"<message xmlns='urn:other'/>",
        "unsupported-stanza-type",
    )
    .await;
    // Stanza-level problems get stanza errors and the stream goes on.
    let mut c = t.login("alice", "a").await;
    c.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let e = c.next().await;
    assert!(
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("bad-request", ns::STANZA_ERRORS)
    );
    let r = c.iq("<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>", "two").await;
    assert!(
        r.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("bad-request", ns::STANZA_ERRORS)
    );
    let r = c
        .iq(
            "<iq type='bogus' id='t' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "t",
        )
        .await;
    assert_eq!(r.attr("type"), Some("error"));
    c.send("<message to='not a jid@@' id='j'><body>x</body></message>")
        .await;
    let e = c
        .expect_next("jid error", |e| e.attr("id") == Some("j"))
        .await;
    assert!(
        e.get_child("error", ns::CLIENT)
            .unwrap()
            .has_child("jid-malformed", ns::STANZA_ERRORS)
    );
    let r = c
        .iq(
            "<iq type='get' id='ok' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "ok",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    t.stop().await;
}

#[tokio::test]
async fn pre_auth_timeout_and_unauthenticated_cap() {
    let t = TestServer::start_with(|c| {
        c.limits.pre_auth_timeout = zorg_server::config::DurationStr::from_secs(1);
        c.limits.max_unauthenticated = 2;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    // Two silent connections take both permits.
    let mut s1 = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let _s2 = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let permits = || t.server().unauthenticated.available_permits();
    eventually("both permits taken", || permits() == 0).await;
    // A third is closed at once.
    let mut s3 = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(common::WAIT, s3.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "third unauthenticated connection refused");
    // The silent ones are dropped after the pre-auth timeout…
    let n = tokio::time::timeout(common::WAIT, s1.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "silent connection closed");
    eventually("both permits given back", || permits() == 2).await;
    // …and a real client gets in again; once bound it no longer counts.
    let _a = t.login("alice", "a").await;
    let _b = t.login("alice", "b").await;
    let _c = t.login("alice", "c").await;
    t.stop().await;
}

#[tokio::test]
async fn read_rate_is_limited_without_dropping_data() {
    let t = TestServer::start_with(|c| {
        c.limits.max_stanza_size = 4096;
        c.limits.read_rate = 4096;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    let mut c = t.login("alice", "a").await;
    // ~20 KiB of pings: the first 4 KiB pass at once, the rest at 4 KiB/s.
    let ping = "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>";
    let n = 20 * 1024 / ping.len();
    let started = Instant::now();
    c.send(&ping.repeat(n)).await;
    for _ in 0..n {
        let r = tokio::time::timeout(Duration::from_secs(15), c.next())
            .await
            .expect("throttled, not dropped");
        assert_eq!(r.attr("type"), Some("result"));
    }
    // A functional check that throttling happens at all, with a wide margin (expected ~4 s).
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "not throttled: {:?}",
        started.elapsed()
    );
    t.stop().await;
}

#[tokio::test]
async fn garbage_before_tls_and_during_handshake() {
    let t = server().await;
    // Not XML at all on the STARTTLS port.
    let tcp = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    c.expect_stream_error("not-well-formed").await;
    // Random bytes on the direct-TLS port: the TLS handshake fails and the server goes on.
    let mut tcp = tokio::net::TcpStream::connect(t.direct).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    // The server gives up on the handshake: at most an alert, then the connection ends.
    let mut buf = [0u8; 64];
    tokio::time::timeout(common::WAIT, async {
        while let Ok(n) = tcp.read(&mut buf).await
            && n > 0
        {}
    })
    .await
    .expect("the server closes a connection whose handshake failed");
    let mut ok = t.login("alice", "after").await;
    let r = ok
        .iq(
            "<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "p",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    t.stop().await;
}
