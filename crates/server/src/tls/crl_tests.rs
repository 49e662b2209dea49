//! Tests of the CRL rules ([`super::crl`]): an older CRL never brings a revoked certificate back,
//! at a reload or across a restart; CRLs without a number or not signed by a trust anchor are
//! refused; a CRL past its next update still revokes.

use std::path::{Path, PathBuf};

use rcgen::SigningKey;
use time::Duration;

use super::trust::{FederationTrust, PeerRole, Reload};
use super::trust_tests::{BOTH, Ca, check, dns, scratch, trust};

const WEEK: Duration = Duration::days(7);

/// Writes a CRL of `ca` numbered `number` revoking `serials` to `path` (replacing the file, as
/// an operator's `mv` would).
fn write_crl(ca: &Ca, path: &Path, number: u64, serials: &[u64]) {
    let pem = ca.crl_numbered(number, serials, WEEK).pem().unwrap();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn reason(t: &FederationTrust, leaf: &rustls_pki_types::CertificateDer<'_>, d: &str) -> String {
    check(t, PeerRole::Outbound, leaf, d)
        .map(|()| "accepted".to_owned())
        .unwrap_or_else(|r| r.reason().to_owned())
}

#[test]
fn an_older_crl_copied_over_a_newer_one_is_refused_and_the_newer_one_stays() {
    let dir = scratch("crl-rollback");
    let ca = Ca::new("Auditor");
    let crl = dir.join("auditor.crl");
    write_crl(&ca, &crl, 1, &[]);
    let t = trust(&dir, &ca, std::slice::from_ref(&crl));
    let revoked = ca.issue(7, vec![dns("x.example")]);
    assert_eq!(reason(&t, &revoked, "x.example"), "accepted");

    // The auditor revokes serial 7 in CRL number 2.
    write_crl(&ca, &crl, 2, &[7]);
    assert_eq!(
        t.reload_crls().unwrap(),
        Reload::Reloaded {
            crls: 1,
            rollbacks: 0
        }
    );
    assert_eq!(reason(&t, &revoked, "x.example"), "revoked");

    // Someone copies CRL number 1 back: refused, and number 2 stays in use.
    write_crl(&ca, &crl, 1, &[]);
    assert_eq!(
        t.reload_crls().unwrap(),
        Reload::Reloaded {
            crls: 1,
            rollbacks: 1
        }
    );
    assert_eq!(t.rollbacks_refused(), 1);
    for role in BOTH {
        let r = check(&t, role, &revoked, "x.example").unwrap_err();
        assert_eq!(r.to_string(), "certificate for x.example was revoked");
    }
    // The next genuine CRL is taken, and it still revokes serial 7.
    write_crl(&ca, &crl, 3, &[7, 8]);
    assert_eq!(
        t.reload_crls().unwrap(),
        Reload::Reloaded {
            crls: 1,
            rollbacks: 0
        }
    );
    assert_eq!(
        reason(&t, &ca.issue(8, vec![dns("y.example")]), "y.example"),
        "revoked"
    );
    assert_eq!(t.rollbacks_refused(), 1);
}

#[test]
fn across_a_restart_an_older_crl_withholds_its_issuer_until_the_latest_is_back() {
    let dir = scratch("crl-restart");
    let (ca, other) = (Ca::new("Auditor"), Ca::new("Second auditor"));
    let (crl, other_crl) = (dir.join("auditor.crl"), dir.join("second.crl"));
    write_crl(&ca, &crl, 5, &[7]);
    write_crl(&other, &other_crl, 1, &[]);
    let roots = [
        ca.write_root(&dir, "a.crt"),
        other.write_root(&dir, "b.crt"),
    ];
    let files = [crl.clone(), other_crl.clone()];
    let seen = dir.join("seen.json");
    drop(FederationTrust::load(&roots, &files, &seen).unwrap());
    let text = std::fs::read_to_string(&seen).unwrap();
    assert!(text.contains("\"5\"") && text.contains("Auditor"), "{text}");

    // While the server is stopped, CRL number 4 (which does not list serial 7) is copied back.
    write_crl(&ca, &crl, 4, &[]);
    let t = FederationTrust::load(&roots, &files, &seen).unwrap();
    assert_eq!(t.rollbacks_refused(), 1);
    let revoked = ca.issue(7, vec![dns("x.example")]);
    let fine = ca.issue(9, vec![dns("y.example")]);
    for (leaf, domain) in [(&revoked, "x.example"), (&fine, "y.example")] {
        for role in BOTH {
            let r = check(&t, role, leaf, domain).unwrap_err();
            assert_eq!(r.reason(), "unknown-revocation-status");
            let text = r.to_string();
            assert!(
                text.contains("is number 4, older than number 5 already seen")
                    && text.contains("latest CRL"),
                "{text}"
            );
        }
    }
    // The other auditor's peers are not affected.
    let theirs = other.issue(1, vec![dns("z.example")]);
    assert_eq!(reason(&t, &theirs, "z.example"), "accepted");
    // The seen number stays 5: number 4 did not lower it.
    assert!(std::fs::read_to_string(&seen).unwrap().contains("\"5\""));

    // The latest CRL comes back: the issuer's peers are checked again as usual.
    write_crl(&ca, &crl, 6, &[7]);
    assert!(matches!(
        t.reload_crls().unwrap(),
        Reload::Reloaded { rollbacks: 0, .. }
    ));
    assert_eq!(reason(&t, &revoked, "x.example"), "revoked");
    assert_eq!(reason(&t, &fine, "y.example"), "accepted");
}

#[test]
fn with_only_one_crl_configured_a_rollback_at_start_still_refuses() {
    // No CRL at all would be left for the verifiers, which then check no revocation: the
    // withheld issuer must be refused all the same.
    let dir = scratch("crl-only-one");
    let ca = Ca::new("Auditor");
    let crl = dir.join("auditor.crl");
    write_crl(&ca, &crl, 2, &[7]);
    drop(trust(&dir, &ca, std::slice::from_ref(&crl)));
    write_crl(&ca, &crl, 1, &[]);
    let t = trust(&dir, &ca, std::slice::from_ref(&crl));
    assert_eq!(t.verifiers().crl_count, 0);
    let revoked = ca.issue(7, vec![dns("x.example")]);
    assert_eq!(
        reason(&t, &revoked, "x.example"),
        "unknown-revocation-status"
    );
}

#[test]
fn two_crls_of_one_issuer_side_by_side_the_newer_is_used() {
    let dir = scratch("crl-two");
    let ca = Ca::new("Auditor");
    let (old, new) = (dir.join("old.crl"), dir.join("new.crl"));
    write_crl(&ca, &new, 2, &[7]);
    write_crl(&ca, &old, 1, &[]);
    let t = trust(&dir, &ca, &[old.clone(), new.clone()]);
    assert_eq!(t.verifiers().crl_count, 1);
    assert_eq!(
        reason(&t, &ca.issue(7, vec![dns("x.example")]), "x.example"),
        "revoked"
    );
    // In one PEM file too, newer first.
    let both = dir.join("both.crl");
    let pem = std::fs::read_to_string(&new).unwrap() + &std::fs::read_to_string(&old).unwrap();
    std::fs::write(&both, pem).unwrap();
    let t = trust(&scratch("crl-two-b"), &ca, &[both]);
    assert_eq!(
        reason(&t, &ca.issue(7, vec![dns("x.example")]), "x.example"),
        "revoked"
    );
}

#[test]
fn a_crl_past_its_next_update_still_revokes() {
    let dir = scratch("crl-stale");
    let ca = Ca::new("Auditor");
    let crl = dir.join("auditor.crl");
    let pem = ca
        .crl_numbered(1, &[7], Duration::minutes(-1))
        .pem()
        .unwrap();
    std::fs::write(&crl, pem).unwrap();
    let t = trust(&dir, &ca, std::slice::from_ref(&crl));
    t.warn_stale_crls();
    assert_eq!(
        reason(&t, &ca.issue(7, vec![dns("x.example")]), "x.example"),
        "revoked"
    );
    assert_eq!(
        reason(&t, &ca.issue(8, vec![dns("y.example")]), "y.example"),
        "accepted"
    );
}

#[test]
fn a_crl_not_signed_by_a_trust_anchor_is_refused_and_its_number_never_counts() {
    let dir = scratch("crl-forged");
    let ca = Ca::new("Auditor");
    let crl = dir.join("auditor.crl");
    write_crl(&ca, &crl, 1, &[7]);
    let t = trust(&dir, &ca, std::slice::from_ref(&crl));
    // Another key under the same name, with a huge number: not loaded, at start or at a reload.
    let forger = Ca::new("Auditor");
    write_crl(&forger, &crl, u64::MAX, &[]);
    let err = t.reload_crls().unwrap_err().to_string();
    assert!(
        err.contains("auditor.crl") && err.contains("signature does not verify"),
        "{err}"
    );
    assert_eq!(
        reason(&t, &ca.issue(7, vec![dns("x.example")]), "x.example"),
        "revoked"
    );
    let root = ca.write_root(&dir, "root.crt");
    let seen = dir.join("seen.json");
    let err = FederationTrust::load(
        std::slice::from_ref(&root),
        std::slice::from_ref(&crl),
        &seen,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("signature does not verify"), "{err}");
    // Its number was never recorded: the auditor's CRL number 2 is still taken.
    write_crl(&ca, &crl, 2, &[7]);
    assert!(matches!(
        t.reload_crls().unwrap(),
        Reload::Reloaded { rollbacks: 0, .. }
    ));
    assert!(
        !std::fs::read_to_string(&seen)
            .unwrap()
            .contains(&u64::MAX.to_string())
    );

    // A CRL from a CA that is not a trust anchor.
    write_crl(&Ca::new("Stranger"), &crl, 3, &[]);
    let err = FederationTrust::load(&[root], &[crl], &seen)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not one of [federation] trust_anchors"),
        "{err}"
    );
}

/// DER: a tag, a length and the content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n @ 0..=127 => out.push(n as u8),
        n @ 128..=255 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// A CRL without extensions (so without a number), properly signed by `ca`: RFC 5280 requires
/// the number, but other tools than `zorg ca` may leave it out.
fn unnumbered_crl(ca: &Ca) -> Vec<u8> {
    let (_, root) = x509_parser::parse_x509_certificate(ca.issuer.der()).unwrap();
    assert_eq!(ca.issuer.key().algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    // ecdsa-with-SHA256
    let alg = tlv(
        0x30,
        &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
    );
    let tbs = tlv(
        0x30,
        &[
            tlv(0x02, &[1]),
            alg.clone(),
            root.subject().as_raw().to_vec(),
            tlv(0x17, b"250101000000Z"),
            tlv(0x17, b"491231000000Z"),
        ]
        .concat(),
    );
    let signature = ca.issuer.key().sign(&tbs).unwrap();
    let bits = [&[0u8][..], &signature].concat();
    tlv(0x30, &[tbs, alg, tlv(0x03, &bits)].concat())
}

#[test]
fn a_crl_without_a_number_is_refused() {
    let dir = scratch("crl-unnumbered");
    let ca = Ca::new("Auditor");
    let crl: PathBuf = dir.join("auditor.crl");
    std::fs::write(&crl, unnumbered_crl(&ca)).unwrap();
    let root = ca.write_root(&dir, "root.crt");
    let err = FederationTrust::load(&[root], &[crl], &dir.join("seen.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("auditor.crl") && err.contains("has no CRL number"),
        "{err}"
    );
}

#[test]
fn a_damaged_record_of_the_numbers_seen_refuses_to_start() {
    let dir = scratch("crl-seen-damaged");
    let ca = Ca::new("Auditor");
    let crl = dir.join("auditor.crl");
    write_crl(&ca, &crl, 1, &[]);
    let seen = dir.join("seen.json");
    std::fs::write(&seen, b"{ not json").unwrap();
    let root = ca.write_root(&dir, "root.crt");
    let err = FederationTrust::load(&[root], &[crl], &seen)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("seen.json") && err.contains("older CRLs"),
        "{err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::remove_file(&seen).unwrap();
        drop(trust(&dir, &ca, &[dir.join("auditor.crl")]));
        let mode = std::fs::metadata(&seen).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
