//! Finding peers through DNS (RFC 6120 §3.2, XEP-0368) and pinning them with DANE (RFC 7673):
//! a.test knows b.test only through a DNS server on loopback that serves a test zone, signed
//! where DANE is tested. b.test reaches a.test through `[federation.hosts]`, so replies travel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/dns.rs"]
mod dns;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use aws_lc_rs::digest;
use common::TestServer;
use common::fed::{Ca, body, chat, error_of, fed_server, federation, online, s2s_addr};
use dns::{DnsServer, TestZone};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use zorg_server::config::Config;
use zorg_server::tls::dane;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// b.test, tweaked, with bob; and its certificate's DER.
async fn server_b(ca: &Ca, tweak: impl FnOnce(&mut Config)) -> (TestServer, Vec<u8>) {
    server_b_with_chain(ca, false, tweak).await
}

/// [`server_b`], presenting the root after its certificate when `chain` (as `zorg ca issue`'s
/// files do, and as DANE-TA needs: RFC 7671 §5.2.2).
async fn server_b_with_chain(
    ca: &Ca,
    chain: bool,
    tweak: impl FnOnce(&mut Config),
) -> (TestServer, Vec<u8>) {
    let cert = ca.issue("b", &["b.test"]);
    if chain {
        let mut pem = std::fs::read_to_string(&cert.0).unwrap();
        pem.push_str(&ca.issuer.pem());
        std::fs::write(&cert.0, pem).unwrap();
    }
    let der = first_der(&cert.0);
    let b = fed_server("b.test", cert, &ca.root(), tweak).await;
    b.add_user("bob@b.test", "pass").await;
    (b, der)
}

/// a.test asking `dns`, with alice; b.test learns a.test's address.
async fn server_a(ca: &Ca, dns: &DnsServer, b: &TestServer, dane: bool) -> TestServer {
    let anchors: PathBuf = dns.anchors.clone();
    let a = fed_server("a.test", ca.issue("a", &["a.test"]), &ca.root(), |c| {
        c.federation.dns_servers = vec![dns.addr];
        if dane {
            c.federation.dane = true;
            c.federation.dnssec_trust_anchors = Some(anchors);
        }
    })
    .await;
    a.add_user("alice@a.test", "pass").await;
    federation(b).set_host("a.test", s2s_addr(&a));
    a
}

fn direct_addr(t: &TestServer) -> SocketAddr {
    t.running.as_ref().unwrap().s2s_direct_tls_addrs[0]
}

/// A port where nothing listens: a socket bound to port 0 and never listening, so the port stays
/// taken (nobody else can start listening there) and connections to it are refused. Keep the
/// socket until the test ends.
fn dead_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// Alice and bob chat over the link a.test found; then both servers stop.
async fn chat_works(a: TestServer, b: TestServer) {
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    chat(&mut alice, &mut bob).await;
    a.stop().await;
    b.stop().await;
}

/// Alice's message to bob comes back with `remote-server-not-found`; gives the error text.
async fn bounced(a: TestServer, b: Option<TestServer>) -> String {
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>secret</body></message>")
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some("m1"))
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found", "{}", e.to_xml(""));
    assert!(body(&e).is_empty(), "the body is not echoed");
    assert_eq!(federation(&a).link_count(), 0, "the failed link is gone");
    a.stop().await;
    if let Some(b) = b {
        b.stop().await;
    }
    text
}

#[tokio::test]
async fn an_xmpp_server_srv_record_leads_to_the_starttls_port() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    let dns = TestZone::new()
        .srv(
            "_xmpp-server",
            "b.test",
            10,
            s2s_addr(&b).port(),
            "xmpp.b.test",
        )
        .addr("xmpp.b.test", LOCALHOST)
        .serve()
        .await;
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
}

#[tokio::test]
async fn an_xmpps_server_srv_record_leads_to_direct_tls() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // Only the direct TLS port is published: the link must speak TLS from the first byte.
    let dns = TestZone::new()
        .srv(
            "_xmpps-server",
            "b.test",
            10,
            direct_addr(&b).port(),
            "xmpp.b.test",
        )
        .addr("xmpp.b.test", LOCALHOST)
        .serve()
        .await;
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
}

#[tokio::test]
async fn targets_are_tried_in_priority_order_until_one_answers() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // The preferred targets are dead (one has no address at all); the last one works.
    let (_dead1, port1) = dead_port();
    let (_dead2, port2) = dead_port();
    let dns = TestZone::new()
        .srv("_xmpps-server", "b.test", 1, port1, "dead.b.test")
        .srv("_xmpp-server", "b.test", 2, 5269, "noaddress.b.test")
        .srv("_xmpp-server", "b.test", 3, port2, "dead.b.test")
        .srv(
            "_xmpp-server",
            "b.test",
            9,
            s2s_addr(&b).port(),
            "xmpp.b.test",
        )
        .addr("dead.b.test", LOCALHOST)
        .addr("xmpp.b.test", LOCALHOST)
        .serve()
        .await;
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
}

#[tokio::test]
async fn an_address_that_does_not_answer_leaves_time_for_the_next_target() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // A listener that never accepts, its backlog full: further SYNs are dropped, so a connect
    // to it hangs (as to a host that drops packets) instead of being refused.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let hole = socket.listen(1).unwrap();
    let hole_addr = hole.local_addr().unwrap();
    // Fill the backlog: connect until one connection hangs (a connect on loopback completes
    // in microseconds while there is room; bounded in count).
    let mut fillers = Vec::new();
    let mut pending = None;
    for _ in 0..16 {
        let mut connect = tokio::spawn(tokio::net::TcpStream::connect(hole_addr));
        match tokio::time::timeout(std::time::Duration::from_millis(500), &mut connect).await {
            Ok(done) => fillers.push(done.unwrap().unwrap()),
            Err(_) => {
                pending = Some(connect);
                break;
            }
        }
    }
    let pending = pending.expect("the listener's backlog fills up");
    let dns = TestZone::new()
        .srv("_xmpp-server", "b.test", 1, hole_addr.port(), "hole.b.test")
        .srv(
            "_xmpp-server",
            "b.test",
            2,
            s2s_addr(&b).port(),
            "xmpp.b.test",
        )
        .addr("hole.b.test", LOCALHOST)
        .addr("xmpp.b.test", LOCALHOST)
        .serve()
        .await;
    // connect_timeout is 5 s here: the hole may take a third of it, then b.test answers.
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
    drop(hole);
    drop(fillers);
    pending.abort();
}

#[tokio::test]
async fn a_domain_without_srv_records_is_reached_on_its_address_at_5269() {
    let ca = Ca::new("Auditor");
    // 5269 is the standard port, so b.test needs a loopback address of its own.
    let own: SocketAddr = "127.0.0.89:5269".parse().unwrap();
    let (b, _) = server_b(&ca, |c| c.s2s.listen = vec![own]).await;
    let dns = TestZone::new().addr("b.test", own.ip()).serve().await;
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
}

#[tokio::test]
async fn a_domain_dns_does_not_know_is_not_found() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    let dns = TestZone::new().serve().await;
    let a = server_a(&ca, &dns, &b, false).await;
    let text = bounced(a, Some(b)).await;
    assert!(text.contains("b.test has no address"), "{text}");
}

#[tokio::test]
async fn an_srv_target_of_dot_means_no_service() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // An address exists, but the SRV record says: no server-to-server service here.
    let dns = TestZone::new()
        .srv("_xmpp-server", "b.test", 0, 0, ".")
        .addr("b.test", LOCALHOST)
        .serve()
        .await;
    let a = server_a(&ca, &dns, &b, false).await;
    let text = bounced(a, Some(b)).await;
    assert!(
        text.contains("offers no XMPP server-to-server service"),
        "{text}"
    );
}

/// A signed zone publishing b.test's targets with a TLSA record made from `tlsa(cert DER)`.
async fn signed_zone(b: &TestServer, usage: (u8, u8, u8), data: Vec<u8>, bogus: bool) -> DnsServer {
    let port = s2s_addr(b).port();
    let mut zone = TestZone::new();
    zone.srv("_xmpp-server", "b.test", 10, port, "xmpp.b.test")
        .addr("xmpp.b.test", LOCALHOST)
        .tlsa("xmpp.b.test", port, usage, data);
    if bogus {
        zone.serve_with_foreign_anchor().await
    } else {
        zone.serve_signed().await
    }
}

#[tokio::test]
async fn dane_ee_record_matching_the_certificate_lets_the_link_up() {
    let ca = Ca::new("Auditor");
    let (b, der) = server_b(&ca, |_| {}).await;
    let spki = dane::spki_sha256(&der).unwrap();
    let dns = signed_zone(&b, (3, 1, 1), spki, false).await;
    let a = server_a(&ca, &dns, &b, true).await;
    chat_works(a, b).await;
}

#[tokio::test]
async fn dane_ta_record_naming_the_auditor_root_lets_the_link_up() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b_with_chain(&ca, true, |_| {}).await;
    let root = digest::digest(&digest::SHA256, ca.issuer.der())
        .as_ref()
        .to_vec();
    let dns = signed_zone(&b, (2, 0, 1), root.clone(), false).await;
    let a = server_a(&ca, &dns, &b, true).await;
    chat_works(a, b).await;

    // A server that does not send the root cannot be matched against a DANE-TA record.
    let (b, _) = server_b_with_chain(&ca, false, |_| {}).await;
    let dns = signed_zone(&b, (2, 0, 1), root, false).await;
    let a = server_a(&ca, &dns, &b, true).await;
    let text = bounced(a, Some(b)).await;
    assert!(text.contains("matches none of the TLSA records"), "{text}");
}

#[tokio::test]
async fn a_wrong_tlsa_record_refuses_the_link() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // The hash of another key: b.test's certificate is from the auditor and names b.test, but
    // DNS pins something else.
    let other = first_der(&ca.issue("b-other", &["b.test"]).0);
    let dns = signed_zone(&b, (3, 1, 1), dane::spki_sha256(&other).unwrap(), false).await;
    let a = server_a(&ca, &dns, &b, true).await;
    let text = bounced(a, Some(b)).await;
    assert!(text.contains("matches none of the TLSA records"), "{text}");
}

/// The first certificate of a PEM chain file, DER.
fn first_der(path: &std::path::Path) -> Vec<u8> {
    let mut certs = CertificateDer::pem_file_iter(path).unwrap();
    certs.next().unwrap().unwrap().to_vec()
}

#[tokio::test]
async fn a_bogus_dnssec_answer_refuses_the_link() {
    let ca = Ca::new("Auditor");
    let (b, der) = server_b(&ca, |_| {}).await;
    // Records that would match, signed with a key the resolver does not trust.
    let spki = dane::spki_sha256(&der).unwrap();
    let dns = signed_zone(&b, (3, 1, 1), spki, true).await;
    let a = server_a(&ca, &dns, &b, true).await;
    let text = bounced(a, Some(b)).await;
    assert!(text.contains("DNSSEC validation failed"), "{text}");
}

#[tokio::test]
async fn without_dane_tlsa_records_are_not_consulted() {
    let ca = Ca::new("Auditor");
    let (b, _) = server_b(&ca, |_| {}).await;
    // A wrong record in a signed zone, but a.test does not validate: the auditor's chain alone
    // decides, as documented for dane = false.
    let dns = signed_zone(&b, (3, 1, 1), vec![0; 32], false).await;
    let a = server_a(&ca, &dns, &b, false).await;
    chat_works(a, b).await;
}
