//! Stream negotiation: STARTTLS, direct TLS, every SASL mechanism, binding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::{Client, Scram, TestServer};
use zorg_proto::{Frame, ns};

#[tokio::test]
async fn scram_sha256_and_sha1_with_and_without_channel_binding() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "secret").await;
    for (hash, binding) in [
        (Scram::Sha256, None),
        (Scram::Sha1, None),
        (Scram::Sha256, Some("tls-exporter")),
        (Scram::Sha256, Some("tls-server-end-point")),
        (Scram::Sha1, Some("tls-exporter")),
        (Scram::Sha1, Some("tls-server-end-point")),
    ] {
        let mut c = Client::connect_starttls(t.starttls, "localhost").await;
        let mechs = c.mechanisms();
        assert_eq!(
            mechs,
            vec![
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256",
                "SCRAM-SHA-1-PLUS",
                "SCRAM-SHA-1"
            ],
            "PLAIN is off by default"
        );
        let cb = c
            .features
            .as_ref()
            .unwrap()
            .get_child("sasl-channel-binding", ns::SASL_CB)
            .unwrap()
            .clone();
        assert_eq!(
            cb.child_count(),
            2,
            "XEP-0440 lists both binding types on TLS 1.3"
        );
        c.auth_scram("alice", "secret", hash, binding)
            .await
            .unwrap_or_else(|e| panic!("{hash:?} {binding:?}: {e}"));
        let jid = c.bind(Some("desk")).await;
        assert_eq!(jid, "alice@localhost/desk");
    }
    t.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_fail_alike() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert_eq!(
        c.auth_scram("alice", "wrong", Scram::Sha256, None).await,
        Err("not-authorized".into())
    );
    assert_eq!(
        c.auth_scram("nobody", "secret", Scram::Sha256, None).await,
        Err("not-authorized".into())
    );
    // The third failure on one stream closes it.
    assert_eq!(
        c.auth_scram("alice", "wrong", Scram::Sha1, None).await,
        Err("not-authorized".into())
    );
    c.expect_stream_error("not-authorized").await;
    t.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_limited_per_address_and_account_never_locking_the_account() {
    let t = TestServer::start_with(|c| {
        c.limits.login_failures_per_ip_account = 2;
        c.limits.login_failures_per_account = 2;
    })
    .await;
    t.add_user("alice@localhost", "secret").await;
    for _ in 0..2 {
        let mut c = Client::connect_starttls_from("127.0.0.2", t.starttls, "localhost").await;
        assert!(
            c.auth_scram("alice", "wrong", Scram::Sha256, None)
                .await
                .is_err()
        );
    }
    // From that address even the right password is refused for a while, unchecked…
    let mut c = Client::connect_starttls_from("127.0.0.2", t.starttls, "localhost").await;
    assert_eq!(
        c.auth_scram("alice", "secret", Scram::Sha256, None).await,
        Err("temporary-auth-failure".into())
    );
    // …but the account is not locked: from elsewhere the right password gets in.
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    c.auth_scram("alice", "secret", Scram::Sha256, None)
        .await
        .unwrap();
    // Other accounts are not affected.
    t.add_user("bob@localhost", "pw").await;
    let mut c = Client::connect_starttls_from("127.0.0.2", t.starttls, "localhost").await;
    c.auth_scram("bob", "pw", Scram::Sha256, None)
        .await
        .unwrap();
    t.stop().await;
}

#[tokio::test]
async fn plain_only_when_enabled() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert_eq!(
        c.auth_plain("alice", "secret").await,
        Err("invalid-mechanism".into())
    );
    t.stop().await;

    let t = TestServer::start_with(|c| c.c2s.allow_plain = true).await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(c.mechanisms().contains(&"PLAIN".to_string()));
    assert_eq!(
        c.auth_plain("alice", "nope").await,
        Err("not-authorized".into())
    );
    c.auth_plain("alice", "secret").await.unwrap();
    c.bind(None).await;
    assert!(
        c.jid.starts_with("alice@localhost/"),
        "server generated a resource: {}",
        c.jid
    );
    t.stop().await;
}

#[tokio::test]
async fn direct_tls_and_tls12() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_direct(t.direct, "localhost").await;
    c.auth_scram("alice", "secret", Scram::Sha256, Some("tls-exporter"))
        .await
        .unwrap();
    c.bind(Some("d")).await;
    // TLS 1.2: no tls-exporter (RFC 9266), tls-server-end-point still works.
    let mut c =
        Client::connect_starttls_versions(t.starttls, "localhost", &[&rustls::version::TLS12])
            .await;
    let cb = c
        .features
        .as_ref()
        .unwrap()
        .get_child("sasl-channel-binding", ns::SASL_CB)
        .unwrap()
        .clone();
    assert_eq!(cb.child_count(), 1);
    c.auth_scram(
        "alice",
        "secret",
        Scram::Sha256,
        Some("tls-server-end-point"),
    )
    .await
    .unwrap();
    t.stop().await;
}

#[tokio::test]
async fn channel_binding_mismatch_fails() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    c.exporter = Some(vec![0u8; 32]);
    assert_eq!(
        c.auth_scram("alice", "secret", Scram::Sha256, Some("tls-exporter"))
            .await,
        Err("not-authorized".into())
    );
    t.stop().await;
}

#[tokio::test]
async fn resource_conflict_replaces_old_session() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "pass").await;
    let mut a = t.login("alice", "phone").await;
    let _b = t.login("alice", "phone").await;
    a.expect_stream_error("conflict").await;
    t.stop().await;
}

#[tokio::test]
async fn bound_features_and_session() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "pass").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    c.auth_scram("alice", "pass", Scram::Sha256, None)
        .await
        .unwrap();
    c.open("localhost").await;
    let f = c.features.clone().unwrap();
    for (n, ns) in [
        ("bind", ns::BIND),
        ("session", ns::SESSION),
        ("ver", ns::ROSTER_VER),
        ("sub", ns::PRE_APPROVAL),
        ("c", ns::CAPS),
        ("limits", ns::STREAM_LIMITS),
    ] {
        assert!(f.has_child(n, ns), "missing {n}: {}", f.to_xml(""));
    }
    let max = f
        .get_child("limits", ns::STREAM_LIMITS)
        .unwrap()
        .get_child("max-bytes", ns::STREAM_LIMITS)
        .unwrap()
        .text();
    assert_eq!(max, "262144");
    // Stanzas before binding are refused.
    c.send("<message to='bob@localhost'><body>x</body></message>")
        .await;
    c.expect_stream_error("not-authorized").await;
    t.stop().await;
}

#[tokio::test]
async fn host_unknown_and_bad_namespace_and_version() {
    let t = TestServer::start().await;
    for (hdr, cond) in [
        (common::header("other.example"), "host-unknown"),
        ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>".to_string(), "invalid-namespace"),
        ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>".to_string(), "invalid-namespace"),
        ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>".to_string(), "unsupported-version"),
    ] {
        let tcp = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
        let mut c = Client::new(Box::new(tcp));
        c.send(&hdr).await;
        c.expect_stream_error(cond).await;
    }
    t.stop().await;
}

#[tokio::test]
async fn see_other_host_redirects() {
    let t =
        TestServer::start_with(|c| c.c2s.see_other_host = "xmpp2.example.net:5222".into()).await;
    let tcp = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    c.send(&common::header("localhost")).await;
    c.expect_stream_error("see-other-host").await;
    t.stop().await;
}

#[tokio::test]
async fn stanza_before_starttls_is_refused() {
    let t = TestServer::start().await;
    let tcp = tokio::net::TcpStream::connect(t.starttls).await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    c.send(&common::header("localhost")).await;
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>")
        .await;
    assert!(matches!(c.frame().await, Some(Frame::StreamOpen(_))));
    c.expect_next("features offering only STARTTLS", |e| {
        e.is("features", ns::STREAM)
            && e.has_child("starttls", ns::TLS)
            && e.children().count() == 1
    })
    .await;
    c.expect_stream_error("policy-violation").await;
    t.stop().await;
}

#[tokio::test]
async fn repeated_failures_are_rate_limited_per_address() {
    let t = TestServer::start_with(|c| c.limits.login_failures_per_ip = 3).await;
    t.add_user("alice@localhost", "secret").await;
    for user in ["u1", "u2", "u3"] {
        let mut c = Client::connect_starttls(t.starttls, "localhost").await;
        assert_eq!(
            c.auth_scram(user, "guess", Scram::Sha256, None).await,
            Err("not-authorized".into())
        );
    }
    // This address has used its allowance: even a good login must wait.
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert_eq!(
        c.auth_scram("alice", "secret", Scram::Sha256, None).await,
        Err("temporary-auth-failure".into())
    );
    t.stop().await;
}
