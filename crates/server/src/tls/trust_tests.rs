//! Tests of [`super::trust`]: an auditor CA made here with rcgen, certificates issued by it and by
//! a stranger, CRLs written before and after loading.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, OtherNameValue,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::{Duration, OffsetDateTime};

use super::trust::{FederationTrust, PeerRole, Refusal, Reload};

/// A scratch directory, empty, unique to the test.
pub(super) fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("zorg-trust-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(super) struct Ca {
    pub(super) issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(super) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// Writes the root certificate as PEM into `dir`.
    pub(super) fn write_root(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).unwrap();
        path
    }

    /// A server certificate with `sans`, both s2s purposes, serial `serial`.
    pub(super) fn issue(&self, serial: u64, sans: Vec<SanType>) -> CertificateDer<'static> {
        self.issue_with(serial, sans, |_| {})
    }

    pub(super) fn issue_with(
        &self,
        serial: u64,
        sans: Vec<SanType>,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.subject_alt_names = sans;
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &self.issuer).unwrap().der().clone()
    }

    /// A CRL revoking `serials`, number 1, next update in a week.
    fn crl(&self, serials: &[u64]) -> rcgen::CertificateRevocationList {
        self.crl_numbered(1, serials, Duration::days(7))
    }

    /// A CRL with this number revoking `serials`, next update `next` from now.
    pub(super) fn crl_numbered(
        &self,
        number: u64,
        serials: &[u64],
        next: Duration,
    ) -> rcgen::CertificateRevocationList {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            // Before the next update, also for one already past.
            this_update: now + next.min(Duration::ZERO) - Duration::minutes(2),
            next_update: now + next,
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap()
    }
}

pub(super) fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn xmpp_addr(name: &str) -> SanType {
    let oid = vec![1, 3, 6, 1, 5, 5, 7, 8, 5];
    SanType::OtherName((oid, OtherNameValue::Utf8String(name.to_owned())))
}

/// Trust in `ca` alone, with the given CRL files; the CRL numbers seen go to `dir/seen.json`.
pub(super) fn trust(dir: &std::path::Path, ca: &Ca, crls: &[PathBuf]) -> FederationTrust {
    let root = ca.write_root(dir, "root.crt");
    FederationTrust::load(&[root], crls, &dir.join("seen.json")).unwrap()
}

pub(super) fn check(
    t: &FederationTrust,
    role: PeerRole,
    leaf: &CertificateDer<'_>,
    domain: &str,
) -> Result<(), Refusal> {
    t.check_peer(role, std::slice::from_ref(leaf), domain, UnixTime::now())
}

pub(super) const BOTH: [PeerRole; 2] = [PeerRole::Inbound, PeerRole::Outbound];

/// A scratch directory, an auditor CA and trust in it without CRLs.
fn setup(tag: &str) -> (PathBuf, Ca, FederationTrust) {
    let dir = scratch(tag);
    let ca = Ca::new("Auditor");
    let t = trust(&dir, &ca, &[]);
    (dir, ca, t)
}

/// Asserts that `leaf` is refused for `domain` in both directions, with `text` and `reason`.
fn refused_both(
    t: &FederationTrust,
    leaf: &CertificateDer<'_>,
    domain: &str,
    text: &str,
    reason: &str,
) {
    for role in BOTH {
        let refusal = check(t, role, leaf, domain).unwrap_err();
        assert_eq!(refusal.to_string(), text, "{role:?}");
        assert_eq!(refusal.reason(), reason, "{role:?}");
    }
}

#[test]
fn a_chain_to_the_anchor_naming_the_domain_is_accepted() {
    let (_dir, ca, t) = setup("ok");
    assert!(t.verifiers().inbound.client_auth_mandatory());
    let leaf = ca.issue(1, vec![dns("a.example"), dns("b.example")]);
    for role in BOTH {
        assert_eq!(check(&t, role, &leaf, "a.example"), Ok(()));
        assert_eq!(check(&t, role, &leaf, "B.Example"), Ok(()));
    }
    assert_eq!(
        t.check_peer(PeerRole::Inbound, &[], "a.example", UnixTime::now()),
        Err(Refusal::NoCertificate)
    );
    assert_eq!(
        Refusal::NoCertificate.to_string(),
        "no certificate presented"
    );
}

#[test]
fn another_cas_certificate_is_untrusted() {
    let dir = scratch("untrusted");
    let t = trust(&dir, &Ca::new("Auditor"), &[]);
    let leaf = Ca::new("Stranger").issue(1, vec![dns("x.example")]);
    let text = "certificate for x.example chains to an untrusted root";
    refused_both(&t, &leaf, "x.example", text, "untrusted-root");
}

#[test]
fn revoked_certificates_are_refused_and_a_new_crl_is_picked_up() {
    let dir = scratch("revoked");
    let ca = Ca::new("Auditor");
    let crl_pem = dir.join("auditor.crl");
    std::fs::write(&crl_pem, ca.crl(&[7]).pem().unwrap()).unwrap();
    let t = trust(&dir, &ca, std::slice::from_ref(&crl_pem));
    assert_eq!(t.verifiers().crl_count, 1);
    let revoked = ca.issue(7, vec![dns("x.example")]);
    let later = ca.issue(8, vec![dns("y.example")]);
    for role in BOTH {
        let refusal = check(&t, role, &revoked, "x.example").unwrap_err();
        assert_eq!(refusal.to_string(), "certificate for x.example was revoked");
        assert_eq!(refusal.reason(), "revoked");
        assert_eq!(check(&t, role, &later, "y.example"), Ok(()));
    }
    assert_eq!(t.reload_crls().unwrap(), Reload::Unchanged);

    // The auditor revokes serial 8 too; the new CRL arrives as DER this time.
    let running_link = t.verifiers();
    std::fs::write(&crl_pem, ca.crl(&[7, 8]).der().as_ref()).unwrap();
    assert_eq!(
        t.reload_crls().unwrap(),
        Reload::Reloaded {
            crls: 1,
            rollbacks: 0
        }
    );
    assert_eq!(t.reload_crls().unwrap(), Reload::Unchanged);
    let refusal = check(&t, PeerRole::Inbound, &later, "y.example").unwrap_err();
    assert_eq!(refusal.reason(), "revoked");
    // A verifier taken before the reload is unchanged.
    let der = later.clone();
    assert!(
        running_link
            .inbound
            .verify_client_cert(&der, &[], UnixTime::now())
            .is_ok()
    );

    // A broken file keeps the last good CRLs and is reported once.
    std::fs::write(&crl_pem, b"-----BEGIN X509 CRL-----\nnot base64\n").unwrap();
    let err = t.reload_crls().unwrap_err().to_string();
    assert!(err.contains("auditor.crl"), "{err}");
    assert_eq!(t.reload_crls().unwrap(), Reload::Unchanged);
    assert_eq!(
        check(&t, PeerRole::Inbound, &later, "y.example")
            .unwrap_err()
            .reason(),
        "revoked"
    );
}

#[test]
fn with_crls_configured_an_issuer_without_one_is_refused() {
    let dir = scratch("unknown-status");
    let (ours, other) = (Ca::new("Auditor"), Ca::new("Second auditor"));
    let crl = dir.join("auditor.crl");
    std::fs::write(&crl, ours.crl(&[]).pem().unwrap()).unwrap();
    let roots = [
        ours.write_root(&dir, "a.crt"),
        other.write_root(&dir, "b.crt"),
    ];
    let t = FederationTrust::load(&roots, &[crl], &dir.join("seen.json")).unwrap();
    let leaf = other.issue(1, vec![dns("x.example")]);
    let refusal = check(&t, PeerRole::Inbound, &leaf, "x.example").unwrap_err();
    assert_eq!(refusal.reason(), "unknown-revocation-status");
    assert!(
        refusal.to_string().contains("[federation] crls"),
        "{refusal}"
    );
    assert_eq!(
        check(
            &t,
            PeerRole::Inbound,
            &ours.issue(2, vec![dns("y.example")]),
            "y.example"
        ),
        Ok(())
    );
}

#[test]
fn expired_certificates_are_refused_with_the_date() {
    let (_dir, ca, t) = setup("expired");
    let leaf = ca.issue_with(1, vec![dns("x.example")], |p| {
        p.not_before = time::macros::datetime!(2024-01-01 0:00 UTC);
        p.not_after = time::macros::datetime!(2025-03-04 05:06:07 UTC);
    });
    let text = "certificate for x.example expired on 2025-03-04 05:06:07 UTC";
    refused_both(&t, &leaf, "x.example", text, "expired");
}

#[test]
fn a_certificate_for_other_names_is_refused_listing_them() {
    let (_dir, ca, t) = setup("mismatch");
    let leaf = ca.issue(
        1,
        vec![dns("a.example"), dns("b.example"), xmpp_addr("c.example")],
    );
    let text = "certificate does not name x.example (it names a.example, b.example, c.example)";
    refused_both(&t, &leaf, "x.example", text, "name-mismatch");
}

#[test]
fn wildcards_stand_for_one_left_most_label() {
    let (_dir, ca, t) = setup("wildcard");
    let leaf = ca.issue(1, vec![dns("*.care.example")]);
    assert_eq!(
        check(&t, PeerRole::Inbound, &leaf, "ward.care.example"),
        Ok(())
    );
    for domain in [
        "care.example",
        "a.ward.care.example",
        "ward.care.example.evil",
    ] {
        let refusal = check(&t, PeerRole::Inbound, &leaf, domain).unwrap_err();
        assert_eq!(refusal.reason(), "name-mismatch", "{domain}");
    }
    // An XmppAddr is never a wildcard.
    let leaf = ca.issue(2, vec![xmpp_addr("*.care.example")]);
    let refusal = check(&t, PeerRole::Outbound, &leaf, "ward.care.example").unwrap_err();
    assert_eq!(refusal.reason(), "name-mismatch");
}

#[test]
fn an_xmppaddr_only_certificate_is_accepted() {
    let (_dir, ca, t) = setup("xmppaddr");
    let leaf = ca.issue(1, vec![xmpp_addr("x.example")]);
    for role in BOTH {
        assert_eq!(check(&t, role, &leaf, "X.example"), Ok(()));
        let refusal = check(&t, role, &leaf, "y.example").unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "certificate does not name y.example (it names x.example)"
        );
    }
}

/// RFC 9525 dropped the common-name fallback, and `zorg ca` always writes SANs: a CN is never
/// used, with or without SANs.
#[test]
fn the_common_name_is_never_used() {
    let (_dir, ca, t) = setup("cn");
    let cn_only = ca.issue_with(1, Vec::new(), |p| {
        p.distinguished_name.push(DnType::CommonName, "x.example");
    });
    for role in BOTH {
        let refusal = check(&t, role, &cn_only, "x.example").unwrap_err();
        assert_eq!(refusal.reason(), "name-mismatch");
        assert!(
            refusal.to_string().contains("common name is not used"),
            "{refusal}"
        );
    }
    let both = ca.issue_with(2, vec![dns("a.example")], |p| {
        p.distinguished_name.push(DnType::CommonName, "x.example");
    });
    let refusal = check(&t, PeerRole::Inbound, &both, "x.example").unwrap_err();
    assert_eq!(
        refusal.to_string(),
        "certificate does not name x.example (it names a.example)"
    );
}

#[test]
fn the_purpose_must_fit_the_direction() {
    let (_dir, ca, t) = setup("purpose");
    let server_only = ca.issue_with(1, vec![dns("x.example")], |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    });
    assert_eq!(
        check(&t, PeerRole::Outbound, &server_only, "x.example"),
        Ok(())
    );
    let refusal = check(&t, PeerRole::Inbound, &server_only, "x.example").unwrap_err();
    assert_eq!(refusal.reason(), "wrong-purpose", "{refusal}");
}

#[test]
fn load_errors_name_the_file() {
    let dir = scratch("load");
    let missing = dir.join("nope.crt");
    let seen = dir.join("seen.json");
    let err = FederationTrust::load(std::slice::from_ref(&missing), &[], &seen).unwrap_err();
    assert!(err.to_string().contains("nope.crt"), "{err}");
    let err = FederationTrust::load(&[], &[], &seen).unwrap_err();
    assert!(err.to_string().contains("trust_anchors"), "{err}");
    let root = Ca::new("Auditor").write_root(&dir, "root.crt");
    let bad_crl = dir.join("bad.crl");
    std::fs::write(&bad_crl, b"\x30\x03garbage").unwrap();
    let err = FederationTrust::load(&[root], &[bad_crl], &seen).unwrap_err();
    assert!(err.to_string().contains("bad.crl"), "{err}");
}
