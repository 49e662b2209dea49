//! Virtual hosting: one server for a.test and b.test, each with its own certificate chosen by SNI
//! (client and server streams); the stream's `to` decides the domain; traffic between the two
//! domains stays inside the server; outbound links present the sending domain's certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::fed::{
    Ca, body, chat, fed_server, federation, online, s2s_addr, subscription_and_presence,
};
use common::{Client, TestServer, eventually, temp_dir, test_config};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use zorg_server::config::{DomainConfig, DurationStr};

/// The leaf certificate of a PEM chain file.
fn leaf(crt: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(crt)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// The `tls-server-end-point` value of an ECDSA P-256/SHA-256 certificate.
fn sha256(der: &CertificateDer<'_>) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref())
        .as_ref()
        .to_vec()
}

/// Certificates for a.test and b.test from `ca`, each naming only its own domain.
struct Certs {
    a: (PathBuf, PathBuf),
    b: (PathBuf, PathBuf),
}

impl Certs {
    fn new(ca: &Ca) -> Certs {
        Certs {
            a: ca.issue("a", &["a.test"]),
            b: ca.issue("b", &["b.test"]),
        }
    }
}

/// One server hosting a.test (first, so also the default) and b.test, federating and trusting
/// `ca`, with alice@a.test and bob@b.test.
async fn two_domain_server(ca: &Ca, certs: &Certs) -> TestServer {
    let dir = temp_dir("vhost");
    let mut c = test_config(&dir);
    c.domains = [("a.test", &certs.a), ("b.test", &certs.b)]
        .into_iter()
        .map(|(name, (crt, key))| DomainConfig {
            name: name.into(),
            certificate: Some(crt.clone()),
            key: Some(key.clone()),
            ..DomainConfig::default()
        })
        .collect();
    c.federation.enabled = true;
    c.federation.trust_anchors = vec![ca.root()];
    c.federation.connect_timeout = DurationStr::from_secs(5);
    c.s2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.s2s.direct_tls = vec!["127.0.0.1:0".parse().unwrap()];
    let t = TestServer::start_config(c, dir).await;
    t.add_user("alice@a.test", "pass").await;
    t.add_user("bob@b.test", "pass").await;
    t
}

/// Direct TLS to `addr` with this SNI; the peer's leaf certificate and the TLS stream.
async fn tls_with_sni(
    addr: SocketAddr,
    sni: &str,
) -> (
    CertificateDer<'static>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(common::client_tls(&[&rustls::version::TLS13]))
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (cert, tls)
}

#[tokio::test]
async fn each_domain_gets_its_own_certificate_by_sni() {
    let ca = Ca::new("Auditor");
    let certs = Certs::new(&ca);
    let (a_leaf, b_leaf) = (leaf(&certs.a.0), leaf(&certs.b.0));
    assert_ne!(a_leaf, b_leaf);
    let t = two_domain_server(&ca, &certs).await;
    let running = t.running.as_ref().unwrap();
    // Client ports (direct TLS and STARTTLS) and the server-to-server direct TLS port.
    for addr in [t.direct, running.s2s_direct_tls_addrs[0]] {
        let (got, _) = tls_with_sni(addr, "a.test").await;
        assert_eq!(got, a_leaf, "SNI a.test on {addr}");
        let (got, _) = tls_with_sni(addr, "b.test").await;
        assert_eq!(got, b_leaf, "SNI b.test on {addr}");
        // SNI of a domain not served here: the first domain's certificate.
        let (got, _) = tls_with_sni(addr, "other.test").await;
        assert_eq!(got, a_leaf, "unknown SNI on {addr}");
    }
    let bob = Client::connect_starttls(t.starttls, "b.test").await;
    assert_eq!(
        bob.end_point.as_deref(),
        Some(sha256(&b_leaf).as_slice()),
        "STARTTLS with SNI b.test"
    );
    t.stop().await;
}

/// RFC 6120 §4.7.2 and §13.7.1.2: the stream's `to` names the domain; SNI only chooses the
/// certificate the client sees. A client that asked for a.test's certificate may still open a
/// stream to b.test (and log in there); a `to` not served here is `<host-unknown/>`.
#[tokio::test]
async fn the_stream_to_decides_the_domain_not_sni() {
    let ca = Ca::new("Auditor");
    let certs = Certs::new(&ca);
    let t = two_domain_server(&ca, &certs).await;
    let (got, tls) = tls_with_sni(t.direct, "a.test").await;
    assert_eq!(got, leaf(&certs.a.0));
    let mut bob = Client::new(Box::new(tls));
    // Channel binding to the certificate actually presented (a.test's), not the stream's domain.
    bob.end_point = Some(sha256(&got));
    bob.open("b.test").await;
    bob.auth_scram(
        "bob",
        "pass",
        common::Scram::Sha256,
        Some("tls-server-end-point"),
    )
    .await
    .expect("bob logs in to b.test over a.test's certificate");
    let jid = bob.bind_at("b.test", Some("desk")).await;
    assert_eq!(jid, "bob@b.test/desk");
    // alice@a.test does not exist in b.test.
    let (_, tls) = tls_with_sni(t.direct, "a.test").await;
    let mut wrong = Client::new(Box::new(tls));
    wrong.open("b.test").await;
    assert_eq!(
        wrong
            .auth_scram("alice", "pass", common::Scram::Sha256, None)
            .await,
        Err("not-authorized".into())
    );

    let (_, tls) = tls_with_sni(t.direct, "a.test").await;
    let mut c = Client::new(Box::new(tls));
    c.send(&common::header("c.test")).await;
    c.expect_stream_error("host-unknown").await;
    t.stop().await;
}

/// alice@a.test and bob@b.test on one server: messages, subscription and presence flow without
/// a single server-to-server link, although federation is on and b.test and a.test have hosts
/// entries pointing at a listener elsewhere.
#[tokio::test]
async fn two_hosted_domains_talk_without_federation_links() {
    let ca = Ca::new("Auditor");
    let certs = Certs::new(&ca);
    let t = two_domain_server(&ca, &certs).await;
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    federation(&t).set_host("a.test", elsewhere.local_addr().unwrap());
    federation(&t).set_host("b.test", elsewhere.local_addr().unwrap());
    let mut alice = online(&t, "a.test", "alice", "phone").await;
    let mut bob = online(&t, "b.test", "bob", "desk").await;

    chat(&mut alice, &mut bob).await;
    subscription_and_presence(&t, &mut alice, &mut bob, false).await;

    // A link to the hosts entry would still be waiting for its stream header (connect_timeout
    // is 5 s), so it would be counted here.
    assert_eq!(federation(&t).link_count(), 0);
    drop(elsewhere);
    t.stop().await;
}

/// Outbound links from a.test and from b.test to c.test on another server: each presents its own
/// domain's certificate, which names only that domain, so c.test accepts each link for its
/// domain (a wrong certificate would be refused as a name mismatch). And c.test's links back
/// reach both domains: inbound SNI picks the certificate c.test checks for each name.
#[tokio::test]
async fn links_from_each_hosted_domain_present_its_own_certificate() {
    let ca = Ca::new("Auditor");
    let certs = Certs::new(&ca);
    let t = two_domain_server(&ca, &certs).await;
    let root = ca.root();
    let c = fed_server("c.test", ca.issue("c", &["c.test"]), &root, |_| {}).await;
    c.add_user("carol@c.test", "pass").await;
    federation(&t).set_host("c.test", s2s_addr(&c));
    federation(&c).set_host("a.test", s2s_addr(&t));
    federation(&c).set_host("b.test", s2s_addr(&t));
    let mut alice = online(&t, "a.test", "alice", "phone").await;
    let mut bob = online(&t, "b.test", "bob", "desk").await;
    let mut carol = online(&c, "c.test", "carol", "home").await;

    for (who, from) in [
        (&mut alice, "alice@a.test/phone"),
        (&mut bob, "bob@b.test/desk"),
    ] {
        who.send("<message to='carol@c.test' type='chat'><body>hi carol</body></message>")
            .await;
        let m = carol
            .expect_next("a message from a hosted domain", |e| {
                e.name() == "message" && e.attr("from") == Some(from)
            })
            .await;
        assert_eq!(body(&m), "hi carol", "{}", m.to_xml(""));
    }
    // One outbound link per domain pair: a.test→c.test and b.test→c.test.
    assert_eq!(federation(&t).link_count(), 2);

    carol
        .send("<message to='alice@a.test' type='chat'><body>to alice</body></message>")
        .await;
    carol
        .send("<message to='bob@b.test' type='chat'><body>to bob</body></message>")
        .await;
    let m = alice
        .expect_next("carol's message", |e| e.name() == "message")
        .await;
    assert_eq!(
        (m.attr("from"), body(&m).as_str()),
        (Some("carol@c.test/home"), "to alice")
    );
    let m = bob
        .expect_next("carol's message", |e| e.name() == "message")
        .await;
    assert_eq!(
        (m.attr("from"), body(&m).as_str()),
        (Some("carol@c.test/home"), "to bob")
    );
    eventually("c.test has a link to each hosted domain", || {
        federation(&c).link_count() == 2
    })
    .await;
    t.stop().await;
    c.stop().await;
}
