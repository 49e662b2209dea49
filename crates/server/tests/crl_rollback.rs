//! An older CRL never brings a revoked server back (RFC 5280 §5.2.3 CRL numbers): b.test's
//! certificate is revoked by the auditor's CRL number 2; someone copies CRL number 1 (which does
//! not list it) over the file a.test reads. At the reload and after a restart, a.test still
//! refuses b.test, and the bounce says what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::fed::{Ca, error_of, federation, online, s2s_addr};
use common::{TestServer, temp_dir, test_config};
use rcgen::SerialNumber;
use zorg_server::config::{Config, DomainConfig, DurationStr};

/// a.test's configuration, with its data in `dir`, reading the CRL at `crl` and finding b.test
/// at `b`.
fn a_config(ca: &Ca, dir: &Path, crl: &Path, b: std::net::SocketAddr) -> Config {
    let mut c = test_config(dir);
    let cert = ca.issue("a", &["a.test"]);
    c.domains = vec![DomainConfig {
        name: "a.test".into(),
        certificate: Some(cert.0),
        key: Some(cert.1),
        ..DomainConfig::default()
    }];
    c.federation.enabled = true;
    c.federation.trust_anchors = vec![ca.root()];
    c.federation.crls = vec![crl.to_path_buf()];
    c.federation.connect_timeout = DurationStr::from_secs(5);
    c.federation.hosts.insert("b.test".into(), b);
    c.s2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.s2s.direct_tls = vec!["127.0.0.1:0".parse().unwrap()];
    c
}

/// Replaces `to` with a copy of `from` in one step, as `cp` then `mv` would.
fn copy_over(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// Alice sends to bob; the bounce's text.
async fn bounce_text(a: &TestServer, id: &str) -> String {
    let mut alice = online(a, "a.test", "alice", id).await;
    alice
        .send(&format!(
            "<message to='bob@b.test' type='chat' id='{id}'><body>for bob</body></message>"
        ))
        .await;
    let e = alice
        .expect_next("a bounce", |e| e.attr("id") == Some(id))
        .await;
    assert_eq!(e.attr("type"), Some("error"), "{}", e.to_xml(""));
    let (cond, text) = error_of(&e);
    assert_eq!(cond, "remote-server-not-found", "{}", e.to_xml(""));
    text
}

#[tokio::test]
async fn an_older_crl_copied_over_the_current_one_does_not_bring_a_revoked_server_back() {
    let ca = Ca::new("Auditor");
    // The auditor's two CRLs, as files an operator (or an intruder) has lying around.
    let (older, newer): (PathBuf, PathBuf) = (ca.dir.join("crl-1.crl"), ca.dir.join("crl-2.crl"));
    ca.write_crl(&older, &[]); // number 1
    ca.write_crl(&newer, &[4242]); // number 2: b.test revoked
    let current = ca.dir.join("auditor.crl");
    copy_over(&newer, &current);

    let b_cert = ca.issue_with("b", &["b.test"], |p| {
        p.serial_number = Some(SerialNumber::from(4242u64));
    });
    let b = common::fed::fed_server("b.test", b_cert, &ca.root(), |_| {}).await;
    b.add_user("bob@b.test", "pass").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    let dir = temp_dir("crl-rollback");
    let a =
        TestServer::start_config(a_config(&ca, &dir, &current, s2s_addr(&b)), dir.clone()).await;
    a.add_user("alice@a.test", "pass").await;

    // b.test is revoked.
    let text = bounce_text(&a, "m1").await;
    assert!(
        text.contains("certificate for b.test was revoked"),
        "{text}"
    );

    // CRL number 1 is copied over number 2, and a.test reloads now (the 5-second poll may get
    // there first; either way the reload is over when this returns).
    copy_over(&older, &current);
    let _ = federation(&a).reload_crls_now();
    assert_eq!(federation(&a).trust.rollbacks_refused(), 1);
    let text = bounce_text(&a, "m2").await;
    assert!(
        text.contains("certificate for b.test was revoked"),
        "the newer CRL stays in use: {text}"
    );

    // Across a restart, with only the older CRL on disk: b.test is still refused, and the
    // refusal says why and what to do.
    let mut a = a;
    a.running.take().unwrap().shutdown().await;
    let a =
        TestServer::start_config(a_config(&ca, &dir, &current, s2s_addr(&b)), dir.clone()).await;
    assert_eq!(federation(&a).trust.rollbacks_refused(), 1);
    let text = bounce_text(&a, "m3").await;
    assert!(
        text.contains("has unknown revocation status")
            && text.contains("is number 1, older than number 2 already seen")
            && text.contains("latest CRL"),
        "{text}"
    );

    // The auditor's latest CRL is put back: b.test is refused as revoked again, plainly.
    copy_over(&newer, &current);
    let _ = federation(&a).reload_crls_now();
    let text = bounce_text(&a, "m4").await;
    assert!(
        text.contains("certificate for b.test was revoked"),
        "{text}"
    );

    // Nothing ever reached bob.
    bob.expect_silence(300).await;
    a.stop().await;
    b.stop().await;
}
