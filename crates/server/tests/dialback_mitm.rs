//! With `[federation] dialback = true`, a.test must still authenticate the server it sends to.
//! Dialback (XEP-0220) proves the *originating* server to the receiving one, never the other way:
//! a man in the middle that answers for b.test, offers dialback and says `type='valid'` to any
//! key has proved nothing. Here it is played by hand, with a self-signed certificate (reached
//! through `[federation.hosts]`), with a certificate from a CA a.test does not trust (reached
//! through DNS), and with a DANE-TA record whose CA it appends to its own chain: no stanza
//! reaches it, alice's message bounces with the reason, and the refusal is in the audit log. A
//! partner outside the federation whose DNSSEC-signed zone pins its key (DANE-EE) is reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dns.rs"]
#[allow(dead_code)]
mod dns;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use aws_lc_rs::digest;
use common::fed::{Ca, error_of, fed_server, federation, load_cert, online, s2s_addr};
use common::{Client, TestServer, temp_dir};
use dns::{DnsServer, TestZone};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
use tokio::net::TcpListener;
use zorg_proto::{Frame, ns};
use zorg_server::audit::Event;
use zorg_server::audit::event::{Direction, LinkAuth, LinkRefusal};
use zorg_server::audit::log;
use zorg_server::config::Config;
use zorg_server::tls::dane;

const DB: &str = "jabber:server:dialback";
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A server stream header from b.test to a.test that declares the `db:` prefix.
fn db_header(id: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='b.test' to='a.test' id='{id}' version='1.0'>"
    )
}

/// A self-signed certificate for b.test, both s2s purposes: (chain file, key file).
fn self_signed_b() -> (PathBuf, PathBuf) {
    let mut params = CertificateParams::new(vec!["b.test".into()]).unwrap();
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = temp_dir("mitm");
    let (crt, keyf) = (dir.join("b.crt"), dir.join("b.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&keyf, key.serialize_pem()).unwrap();
    (crt, keyf)
}

/// The man in the middle: takes one connection on `listener`, does STARTTLS with `cert`, then
/// plays along with whatever comes: answers a stream with dialback offered and every
/// `<db:result/>` with `type='valid'`. Gives back the names of the elements it received after
/// TLS; it stops at the first `<message/>` (a leak) or when a.test hangs up.
async fn man_in_the_middle(listener: TcpListener, cert: (PathBuf, PathBuf)) -> Vec<String> {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut c = Client::new(Box::new(tcp));
    assert!(matches!(c.frame().await, Some(Frame::StreamOpen(_))));
    c.send(&db_header("plain1")).await;
    c.send("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await;
    assert!(c.next().await.is("starttls", ns::TLS));
    c.send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    let (chain, key) = load_cert(cert);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let Ok(tls) = tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        .accept(c.io)
        .await
    else {
        return vec!["(no TLS)".into()];
    };
    let mut c = Client::new(Box::new(tls));
    let mut got = Vec::new();
    while let Some(frame) = c.frame().await {
        match frame {
            Frame::StreamOpen(_) => {
                got.push("stream".to_owned());
                c.send(&db_header("S1")).await;
                c.send("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>").await;
            }
            Frame::Stanza(el) if el.is("result", DB) => {
                got.push("db:result".to_owned());
                c.send("<db:result from='b.test' to='a.test' type='valid'/>")
                    .await;
            }
            Frame::Stanza(el) => {
                got.push(el.name().to_owned());
                if el.name() == "message" {
                    break;
                }
            }
            Frame::StreamClose => break,
        }
    }
    got
}

/// a.test from `ca` with dialback on, then `tweak`; alice exists.
async fn a_with_dialback(ca: &Ca, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let a = fed_server("a.test", ca.issue("a", &["a.test"]), &ca.root(), |c| {
        c.federation.dialback = true;
        tweak(c);
    })
    .await;
    a.add_user("alice@a.test", "pass").await;
    a
}

/// A zone sending peers of b.test to port `port` on loopback (STARTTLS).
fn zone_to(port: u16) -> TestZone {
    let mut zone = TestZone::new();
    zone.srv("_xmpp-server", "b.test", 10, port, "xmpp.b.test")
        .addr("xmpp.b.test", LOCALHOST);
    zone
}

/// a.test from `ca` with dialback and DANE on, asking the signed zone `dns`.
async fn a_with_dane(ca: &Ca, dns: &DnsServer) -> TestServer {
    a_with_dialback(ca, |c| {
        c.federation.dns_servers = vec![dns.addr];
        c.federation.dane = true;
        c.federation.dnssec_trust_anchors = Some(dns.anchors.clone());
    })
    .await
}

/// Alice sends a message to bob@b.test; the man in the middle must receive nothing, and the
/// message bounces. Gives the bounce's text.
async fn no_stanza_reaches(a: &TestServer, mitm: tokio::task::JoinHandle<Vec<String>>) -> String {
    let mut alice = online(a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>for bob only</body></message>")
        .await;
    let got = mitm.await.unwrap();
    assert!(got.is_empty(), "the man in the middle received {got:?}");
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m1"))
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found", "{}", e.to_xml(""));
    text
}

/// Waits (bounded) until a.test's audit log has an outbound refusal of b.test for `reason`.
async fn refusal_audited(a: &TestServer, reason: LinkRefusal) {
    let dir = a.server().config.audit_dir();
    common::eventually("the refusal in the audit log", || {
        log::records(&dir).unwrap().iter().any(|r| {
            matches!(&r.event, Event::S2sRefused { peer, direction: Direction::Outbound, reason: got, .. }
                if peer == "b.test" && *got == reason)
        })
    })
    .await;
}

#[tokio::test]
async fn a_man_in_the_middle_with_a_self_signed_certificate_gets_no_stanza() {
    let ca = Ca::new("Auditor");
    let a = a_with_dialback(&ca, |_| {}).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    federation(&a).set_host("b.test", listener.local_addr().unwrap());
    let mitm = tokio::spawn(man_in_the_middle(listener, self_signed_b()));

    let text = no_stanza_reaches(&a, mitm).await;
    assert!(
        text.contains("certificate for b.test chains to an untrusted root")
            && text.contains("dialback cannot stand in for the certificate of b.test"),
        "{text}"
    );
    refusal_audited(&a, LinkRefusal::UntrustedRoot).await;
    assert_eq!(federation(&a).link_count(), 0);
    a.stop().await;
}

#[tokio::test]
async fn a_man_in_the_middle_found_through_dns_with_another_cas_certificate_gets_no_stanza() {
    let (ca, stranger) = (Ca::new("Auditor"), Ca::new("Stranger"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dns = zone_to(port).serve().await;
    let a = a_with_dialback(&ca, |c| c.federation.dns_servers = vec![dns.addr]).await;
    let mitm = tokio::spawn(man_in_the_middle(
        listener,
        stranger.issue("b", &["b.test"]),
    ));

    let text = no_stanza_reaches(&a, mitm).await;
    assert!(
        text.contains("chains to an untrusted root") && text.contains("dialback cannot stand in"),
        "{text}"
    );
    refusal_audited(&a, LinkRefusal::UntrustedRoot).await;
    a.stop().await;
}

#[tokio::test]
async fn a_dane_ta_record_does_not_vouch_for_a_chain_that_merely_contains_its_ca() {
    // b.test's signed zone pins the CA that issues b.test's certificates (DANE-TA). The man in
    // the middle has only a self-signed certificate, and appends that CA's public certificate.
    let (ca, partner_ca) = (Ca::new("Auditor"), Ca::new("Partner CA"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pinned = digest::digest(&digest::SHA256, partner_ca.issuer.der());
    let mut zone = zone_to(port);
    zone.tlsa("xmpp.b.test", port, (2, 0, 1), pinned.as_ref().to_vec());
    let dns = zone.serve_signed().await;
    let a = a_with_dane(&ca, &dns).await;
    let forged = self_signed_b();
    let mut pem = std::fs::read_to_string(&forged.0).unwrap();
    pem.push_str(&partner_ca.issuer.pem());
    std::fs::write(&forged.0, pem).unwrap();
    let mitm = tokio::spawn(man_in_the_middle(listener, forged));

    let text = no_stanza_reaches(&a, mitm).await;
    assert!(text.contains("matches none of the TLSA records"), "{text}");
    refusal_audited(&a, LinkRefusal::DaneMismatch).await;
    a.stop().await;
}

#[tokio::test]
async fn a_partner_outside_the_federation_whose_dnssec_zone_pins_its_key_is_reached_by_dialback() {
    // b.test's certificate comes from its own CA, which a.test does not trust, but b.test's
    // signed zone pins its key (DANE-EE): with dialback and DANE on, a.test sends to it, and
    // b.test (which does not trust a.test's auditor either) accepts a.test by dialback.
    let (ca, partner_ca) = (Ca::new("Auditor"), Ca::new("Partner CA"));
    let b_cert = partner_ca.issue("b", &["b.test"]);
    let b_der = load_cert(b_cert.clone()).0[0].to_vec();
    let b = fed_server("b.test", b_cert, &partner_ca.root(), |c| {
        c.federation.dialback = true;
    })
    .await;
    b.add_user("bob@b.test", "pass").await;
    let port = s2s_addr(&b).port();
    let mut zone = zone_to(port);
    let spki = dane::spki_sha256(&b_der).unwrap();
    zone.tlsa("xmpp.b.test", port, (3, 1, 1), spki);
    let dns = zone.serve_signed().await;
    let a = a_with_dane(&ca, &dns).await;
    federation(&b).set_host("a.test", s2s_addr(&a));
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello partner</body></message>")
        .await;
    let m = bob
        .expect_next("alice's message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    let dir = a.server().config.audit_dir();
    common::eventually("the accepted link in the audit log", || {
        log::records(&dir).unwrap().iter().any(|r| {
            matches!(&r.event, Event::S2sAccepted { peer, direction: Direction::Outbound, method: LinkAuth::Dialback, .. }
                if peer == "b.test")
        })
    })
    .await;
    drop(alice);
    a.stop().await;
    b.stop().await;
}
