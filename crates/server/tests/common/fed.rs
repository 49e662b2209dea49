//! Federation helpers shared by the s2s and virtual-hosting tests: an auditor's CA made with
//! rcgen, federating test servers, and waiting for timer-driven conditions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use time::{Duration as TimeDuration, OffsetDateTime};
use zorg_proto::{Element, ns};
use zorg_server::config::{Config, DomainConfig, DurationStr};
use zorg_server::federation::Federation;

use super::{Client, TestServer, temp_dir, test_config};

/// An auditor's CA, made in the test.
pub struct Ca {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca {
            issuer,
            dir: temp_dir("ca"),
        }
    }

    /// The root certificate as a PEM file (a trust anchor).
    pub fn root(&self) -> PathBuf {
        let path = self.dir.join("root.crt");
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A server certificate naming `names` (dNSName), both s2s purposes; (chain file, key file).
    pub fn issue(&self, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        self.issue_with(stem, names, |_| {})
    }

    pub fn issue_with(
        &self,
        stem: &str,
        names: &[&str],
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, keyf) = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&keyf, key.serialize_pem()).unwrap();
        (crt, keyf)
    }

    /// A PEM CRL revoking `serials`, written to `path`.
    pub fn write_crl(&self, path: &Path, serials: &[u64]) {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - TimeDuration::minutes(1),
            next_update: now + TimeDuration::days(7),
            crl_number: SerialNumber::from(serials.len() as u64 + 1),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - TimeDuration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).unwrap();
        std::fs::write(path, crl.pem().unwrap()).unwrap();
    }
}

/// A federating server for `domain` with this certificate, trusting `anchor`.
pub async fn fed_server(
    domain: &str,
    cert: (PathBuf, PathBuf),
    anchor: &Path,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let dir = temp_dir("s2s");
    let mut c = test_config(&dir);
    c.domains = vec![DomainConfig {
        name: domain.into(),
        certificate: Some(cert.0),
        key: Some(cert.1),
        ..DomainConfig::default()
    }];
    c.federation.enabled = true;
    c.federation.trust_anchors = vec![anchor.to_path_buf()];
    c.federation.connect_timeout = DurationStr::from_secs(5);
    c.s2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.s2s.direct_tls = vec!["127.0.0.1:0".parse().unwrap()];
    tweak(&mut c);
    TestServer::start_config(c, dir).await
}

pub fn s2s_addr(t: &TestServer) -> SocketAddr {
    t.running.as_ref().unwrap().s2s_addrs[0]
}

/// Two servers that know each other's address.
pub async fn pair(ca: &Ca, b_cert: (PathBuf, PathBuf)) -> (TestServer, TestServer) {
    pair_with(ca, b_cert, |_| {}).await
}

/// [`pair`] with a change to a.test's configuration.
pub async fn pair_with(
    ca: &Ca,
    b_cert: (PathBuf, PathBuf),
    tweak_a: impl FnOnce(&mut Config),
) -> (TestServer, TestServer) {
    let root = ca.root();
    let a = fed_server("a.test", ca.issue("a", &["a.test"]), &root, tweak_a).await;
    let b = fed_server("b.test", b_cert, &root, |_| {}).await;
    federation(&a).set_host("b.test", s2s_addr(&b));
    federation(&b).set_host("a.test", s2s_addr(&a));
    a.add_user("alice@a.test", "pass").await;
    b.add_user("bob@b.test", "pass").await;
    (a, b)
}

/// A raw server "c.test" with a certificate from `ca`, connected to b.test over direct TLS
/// (XEP-0368), its first stream opened.
pub async fn raw_connect(ca: &Ca, b: &TestServer) -> super::Client {
    let mut c = raw_tls_to_b(ca, b).await;
    c.open_s2s("c.test", "b.test").await;
    c
}

/// A certificate chain and key from PEM files.
pub fn load_cert(
    (crt, key): (PathBuf, PathBuf),
) -> (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_file_iter(&crt)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    (
        chain,
        rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap(),
    )
}

/// A raw TLS connection to b.test's first direct TLS s2s port, presenting a certificate for
/// c.test from `ca` (for tests that play a peer server by hand).
pub async fn raw_tls_to_b(ca: &Ca, b: &TestServer) -> super::Client {
    use std::sync::Arc;
    let (chain, key) = load_cert(ca.issue("c", &["c.test"]));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(super::AcceptAny))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let addr = b.running.as_ref().unwrap().s2s_direct_tls_addrs[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("b.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .unwrap();
    super::Client::new(Box::new(tls))
}

pub fn federation(t: &TestServer) -> &Federation {
    t.server().federation.as_deref().unwrap()
}

pub async fn online(t: &TestServer, domain: &str, user: &str, resource: &str) -> Client {
    let mut c = t.login_at(domain, user, resource).await;
    c.available().await;
    c
}

/// The condition and text of an error stanza.
pub fn error_of(e: &Element) -> (String, String) {
    let err = e.get_child("error", ns::CLIENT).expect("an <error/>");
    let cond = err
        .children()
        .find(|c| c.ns() == ns::STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_default();
    let text = err
        .get_child("text", ns::STANZA_ERRORS)
        .map(|t| t.text())
        .unwrap_or_default();
    (cond, text)
}

pub fn body(e: &Element) -> String {
    e.get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

/// alice@a.test/phone and bob@b.test/desk, both online, chat: one message each way.
pub async fn chat(alice: &mut Client, bob: &mut Client) {
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello bob</body></message>")
        .await;
    let m = bob
        .expect_next("alice's message", |e| e.name() == "message")
        .await;
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    assert_eq!(m.attr("type"), Some("chat"));
    assert_eq!(body(&m), "hello bob");

    bob.send(
        "<message to='alice@a.test/phone' type='chat' id='r1'><body>hi alice</body></message>",
    )
    .await;
    let r = alice
        .expect_next("bob's reply", |e| e.name() == "message")
        .await;
    assert_eq!(r.attr("from"), Some("bob@b.test/desk"));
    assert_eq!(body(&r), "hi alice");
}

/// alice@a.test/phone (on `a`) subscribes to bob@b.test/desk, both online; bob approves. Alice
/// sees bob's presence and its change to away, and a second resource of alice, logged in on `a`
/// now, learns it by probe; bob, not subscribed to alice, learns nothing of hers. `remote`:
/// bob is on another server (then the probe goes there from alice's bare JID, and its answer,
/// to the bare JID, reaches each of alice's resources: RFC 6121 §4.3.2, §8.5.2.1.2).
pub async fn subscription_and_presence(
    a: &TestServer,
    alice: &mut Client,
    bob: &mut Client,
    remote: bool,
) {
    alice
        .send("<presence type='subscribe' to='bob@b.test'/>")
        .await;
    let req = bob
        .expect_next("the request", |e| {
            e.name() == "presence" && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(req.attr("from"), Some("alice@a.test"));
    bob.send("<presence type='subscribed' to='alice@a.test'/>")
        .await;
    alice
        .expect_next("the approval", |e| {
            e.name() == "presence"
                && e.attr("type") == Some("subscribed")
                && e.attr("from") == Some("bob@b.test")
        })
        .await;
    // Approval brings bob's current presence to alice.
    let p = alice
        .expect_next("bob's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("bob@b.test/desk")
        })
        .await;
    assert_eq!(p.attr("type"), None, "{}", p.to_xml(""));
    // Later changes are broadcast to the subscriber.
    bob.send("<presence><show>away</show></presence>").await;
    bob.expect_next("own presence", |e| {
        e.name() == "presence" && e.has_child("show", ns::CLIENT)
    })
    .await;
    let p = alice
        .expect_next("bob away", |e| {
            e.name() == "presence"
                && e.attr("from") == Some("bob@b.test/desk")
                && e.has_child("show", ns::CLIENT)
        })
        .await;
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "away");
    // A second resource of alice probes bob at login and learns his presence.
    let mut alice2 = a.login_at("a.test", "alice", "laptop").await;
    alice2.available().await;
    alice
        .expect_next("the laptop's presence", |e| {
            e.name() == "presence" && e.attr("from") == Some("alice@a.test/laptop")
        })
        .await;
    alice2
        .expect_next("bob's presence by probe", |e| {
            e.name() == "presence" && e.attr("from") == Some("bob@b.test/desk")
        })
        .await;
    if remote {
        alice
            .expect_next("bob's presence again, answering the probe", |e| {
                e.name() == "presence"
                    && e.attr("from") == Some("bob@b.test/desk")
                    && e.has_child("show", ns::CLIENT)
            })
            .await;
    }
    // Bob, who has no subscription to alice, does not learn hers from a probe: nothing comes.
    bob.expect_silence(300).await;
    alice.expect_silence(100).await;
    alice2.expect_silence(100).await;
}
