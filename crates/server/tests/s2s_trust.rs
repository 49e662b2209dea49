//! Server-to-server trust: peers whose certificates come from another CA, name another domain,
//! have expired or are revoked while the server runs are refused, with the reason in the
//! bounce; a revocation also ends links that are already open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::eventually;
use common::fed::{Ca, body, error_of, federation, online, pair, pair_with, raw_connect};
use rcgen::SerialNumber;
use time::{Duration as TimeDuration, OffsetDateTime};
use zorg_proto::ns;

#[tokio::test]
async fn certificate_from_another_ca_is_refused_and_the_message_bounces() {
    let ca = Ca::new("Auditor");
    let stranger = Ca::new("Stranger");
    let (a, b) = pair(&ca, stranger.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>secret</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.name() == "message")
        .await;
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(e.attr("id"), Some("m1"));
    assert_eq!(e.attr("from"), Some("bob@b.test"));
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(text.contains("chains to an untrusted root"), "{text}");
    assert!(body(&e).is_empty(), "the body is not echoed");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn certificate_not_naming_the_domain_is_refused() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["c.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.name() == "message")
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(text.contains("does not name b.test"), "{text}");
    assert!(text.contains("c.test"), "{text}");
    assert_eq!(federation(&a).link_count(), 0, "the refused link is gone");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn inbound_peer_without_a_trusted_certificate_gets_no_sasl() {
    let ca = Ca::new("Auditor");
    let stranger = Ca::new("Stranger");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    // c.test presents a certificate from a CA b.test does not trust.
    let mut c = raw_connect(&stranger, &b).await;
    let f = c.features.clone().unwrap();
    assert!(!f.has_child("mechanisms", ns::SASL), "{}", f.to_xml(""));
    c.expect_stream_error("not-authorized").await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let ca = Ca::new("Auditor");
    let expired = ca.issue_with("b", &["b.test"], |p| {
        p.not_before = OffsetDateTime::now_utc() - TimeDuration::days(30);
        p.not_after = OffsetDateTime::now_utc() - TimeDuration::days(1);
    });
    let (a, b) = pair(&ca, expired).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>x</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m1"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(text.contains("certificate for b.test expired on"), "{text}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_certificate_revoked_while_running_ends_the_open_link_and_new_ones_are_refused() {
    let ca = Ca::new("Auditor");
    let crl = ca.dir.join("auditor.crl");
    ca.write_crl(&crl, &[]);
    let b_cert = ca.issue_with("b", &["b.test"], |p| {
        p.serial_number = Some(SerialNumber::from(4242u64));
    });
    let crl_path = crl.clone();
    // The link would stay open for the default idle_timeout (10 minutes) if nothing closed it.
    let (a, b) = pair_with(&ca, b_cert, move |c| {
        c.federation.crls = vec![crl_path];
    })
    .await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>before</body></message>")
        .await;
    bob.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    // And a link the other way: b.test -> a.test, inbound at a.test.
    bob.send("<message to='alice@a.test' id='r1'><body>reply</body></message>")
        .await;
    alice
        .expect_next("r1", |e| e.attr("id") == Some("r1"))
        .await;
    assert_eq!(federation(&b).link_count(), 1);
    // The auditor revokes b.test; a.test picks the CRL up while running (polled every 5 s).
    // Wait for the swap itself rather than a fixed time, so that a loaded machine cannot make
    // this flaky; 60 s is only the limit.
    let before = federation(&a).trust.verifiers();
    ca.write_crl(&crl, &[4242]);
    assert_eq!(federation(&a).link_count(), 1);
    eventually("the CRL is reloaded and both open links closed", || {
        !std::sync::Arc::ptr_eq(&before, &federation(&a).trust.verifiers())
            && federation(&a).link_count() == 0
            && federation(&b).link_count() == 0
    })
    .await;
    // b.test cannot link again: a.test refuses its certificate, and bob's message bounces.
    bob.send("<message to='alice@a.test' id='r2'><body>again</body></message>")
        .await;
    let e = bob
        .expect_next("a bounce", |e| e.attr("id") == Some("r2"))
        .await;
    assert_eq!(
        error_of(&e).0,
        "remote-server-not-found",
        "{}",
        e.to_xml("")
    );
    alice
        .send("<message to='bob@b.test' id='m2'><body>after</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m2"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found");
    assert!(
        text.contains("certificate for b.test was revoked"),
        "{text}"
    );
    bob.expect_silence(200).await;
    a.stop().await;
    b.stop().await;
}
