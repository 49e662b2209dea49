//! DANE-TA (RFC 7671 §5.2) narrows whom a.test talks to: b.test's DNSSEC-signed zone says "my
//! certificates come from this CA". a.test trusts two auditors; an impostor holds a certificate
//! for b.test from the *other* auditor (valid for a.test's trust anchors) and appends the pinned
//! CA's public certificate to its chain. The record matches a certificate in the chain, but that
//! CA did not issue the impostor's certificate: refused, and nothing reaches it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use aws_lc_rs::digest;
use common::TestServer;
use common::fed::{Ca, body, error_of, fed_server, federation, online, s2s_addr};
use dns::{DnsServer, TestZone};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A b.test server with a certificate for b.test from `issuer`, followed in its chain file by
/// the certificate of `appended`; it trusts both auditors, so it accepts a.test. Bob exists.
async fn b_server(issuer: &Ca, appended: &Ca, roots: &[PathBuf]) -> TestServer {
    let cert = issuer.issue("b", &["b.test"]);
    let mut pem = std::fs::read_to_string(&cert.0).unwrap();
    pem.push_str(&appended.issuer.pem());
    std::fs::write(&cert.0, pem).unwrap();
    let b = fed_server("b.test", cert, &roots[0], |c| {
        c.federation.trust_anchors = roots.to_vec();
    })
    .await;
    b.add_user("bob@b.test", "pass").await;
    b
}

/// A signed zone sending a.test to `b`, with a DANE-TA record naming `pinned`'s certificate.
async fn zone_pinning(b: &TestServer, pinned: &Ca) -> DnsServer {
    let port = s2s_addr(b).port();
    let hash = digest::digest(&digest::SHA256, pinned.issuer.der());
    let mut zone = TestZone::new();
    zone.srv("_xmpp-server", "b.test", 10, port, "xmpp.b.test")
        .addr("xmpp.b.test", LOCALHOST)
        .tlsa("xmpp.b.test", port, (2, 0, 1), hash.as_ref().to_vec());
    zone.serve_signed().await
}

/// a.test trusting both auditors, with DANE on, asking `dns`; b.test learns its address.
async fn a_server(auditors: (&Ca, &Ca), dns: &DnsServer, b: &TestServer) -> TestServer {
    let roots = vec![auditors.0.root(), auditors.1.root()];
    let a = fed_server(
        "a.test",
        auditors.0.issue("a", &["a.test"]),
        &roots[0],
        |c| {
            c.federation.trust_anchors = roots.clone();
            c.federation.dns_servers = vec![dns.addr];
            c.federation.dane = true;
            c.federation.dnssec_trust_anchors = Some(dns.anchors.clone());
        },
    )
    .await;
    a.add_user("alice@a.test", "pass").await;
    federation(b).set_host("a.test", s2s_addr(&a));
    a
}

#[tokio::test]
async fn a_dane_ta_record_refuses_a_certificate_its_ca_did_not_issue() {
    let (pinned, other) = (Ca::new("Auditor B"), Ca::new("Auditor A"));
    let roots = [pinned.root(), other.root()];

    // The genuine b.test: its certificate from the pinned CA, the CA in its chain.
    let b = b_server(&pinned, &pinned, &roots).await;
    let dns = zone_pinning(&b, &pinned).await;
    let a = a_server((&other, &pinned), &dns, &b).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello</body></message>")
        .await;
    let m = bob.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    assert_eq!(body(&m), "hello");
    drop((alice, bob));
    a.stop().await;
    b.stop().await;

    // The impostor: a certificate for b.test from the other auditor, and the pinned CA's
    // certificate appended.
    let impostor = b_server(&other, &pinned, &roots).await;
    let dns = zone_pinning(&impostor, &pinned).await;
    let a = a_server((&other, &pinned), &dns, &impostor).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&impostor, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m2'><body>secret</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m2"))
        .await;
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found", "{}", e.to_xml(""));
    assert!(text.contains("matches none of the TLSA records"), "{text}");
    bob.expect_silence(300).await;
    assert_eq!(federation(&a).link_count(), 0);
    a.stop().await;
    impostor.stop().await;
}
