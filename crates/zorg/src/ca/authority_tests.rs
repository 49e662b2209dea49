//! The certificates and CRLs `zorg ca` makes, parsed back with x509-parser and judged by the
//! rustls verifiers federated servers use.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, client::WebPkiServerVerifier};
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::{X509Certificate, parse_x509_certificate, parse_x509_crl};

use super::*;

const URL: &str = "http://pki.care.example/root.crl";

/// A CA directory under the temp dir with a fresh root, removed when dropped.
struct TestCa {
    dir: PathBuf,
    ca: Authority,
    now: OffsetDateTime,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!("zorg-ca-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let now = OffsetDateTime::now_utc();
        let root = make_root("Care Federation Root", 7305, now).unwrap();
        std::fs::write(dir.join(CA_CERT), &root.cert_pem).unwrap();
        std::fs::write(dir.join(CA_KEY), &root.key_pem).unwrap();
        let ca = Authority::load(&dir).unwrap();
        TestCa { dir, ca, now }
    }

    fn issue(&self, domains: &[&str], xmppaddr: bool, crl_url: Option<&str>) -> Made {
        let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
        let req = Request {
            domains: &domains,
            xmppaddr,
            days: 397,
            crl_url,
        };
        self.ca.issue(&req, self.now).unwrap()
    }

    fn crl(&self, number: u64, revoked: &[&str]) -> CertificateRevocationListDer<'static> {
        let entries: Vec<RevokedEntry<'_>> = revoked
            .iter()
            .map(|s| RevokedEntry {
                serial: s,
                at: self.now,
                reason: Reason::KeyCompromise,
            })
            .collect();
        let pem = self.ca.crl(number, &entries, 7, self.now).unwrap();
        CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.cert.clone()).unwrap();
        Arc::new(roots)
    }

    /// What a server verifying `chain` as `name` says, with `crls` loaded.
    fn verify_server(
        &self,
        chain: &[CertificateDer<'static>],
        name: &str,
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots(), provider)
            .with_crls(crls)
            .build()
            .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// What a server accepting `chain` from a connecting peer says (s2s inbound: clientAuth).
    fn verify_client(
        &self,
        chain: &[CertificateDer<'static>],
        crls: Vec<CertificateRevocationListDer<'static>>,
    ) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider)
            .with_crls(crls)
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map(|_| ())
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn sans<'a>(cert: &'a X509Certificate<'a>) -> Vec<GeneralName<'a>> {
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone()
}

#[test]
fn the_root_is_a_long_lived_p256_ca_for_certificates_and_crls() {
    let t = TestCa::new("root");
    let (_, root) = parse_x509_certificate(&t.ca.cert).unwrap();
    assert_eq!(root.subject().to_string(), "CN=Care Federation Root");
    assert_eq!(root.issuer(), root.subject());
    let bc = root.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = root.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    let years = (root.validity().not_after.to_datetime() - t.now).whole_days() / 365;
    assert_eq!(years, 20);
    assert_eq!(
        root.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1"
    );
    assert_eq!(root.raw_serial().len(), 16);
}

#[test]
fn a_server_certificate_names_its_domains_and_nothing_else() {
    let t = TestCa::new("leaf");
    let made = t.issue(&["a.care.example", "b.care.example"], false, Some(URL));
    let chain = chain(&made.cert_pem);
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1], t.ca.cert);
    let (_, leaf) = parse_x509_certificate(&chain[0]).unwrap();
    let (_, root) = parse_x509_certificate(&t.ca.cert).unwrap();
    assert_eq!(leaf.issuer(), root.subject());
    assert_eq!(leaf.subject().to_string(), "CN=a.care.example");
    assert_eq!(hex(leaf.raw_serial()), made.serial);
    assert!(leaf.raw_serial()[0] & 0x80 == 0, "a positive serial");
    assert_eq!(
        sans(&leaf),
        [
            GeneralName::DNSName("a.care.example"),
            GeneralName::DNSName("b.care.example")
        ]
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let validity = leaf.validity();
    let lifetime = validity.not_after.to_datetime() - validity.not_before.to_datetime();
    assert_eq!(lifetime, time::Duration::days(397) + BACKDATE);
    assert_eq!(
        validity.not_after.timestamp(),
        made.not_after.unix_timestamp()
    );
    let dps: Vec<String> = leaf
        .iter_extensions()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::CRLDistributionPoints(p) => Some(p.points.clone()),
            _ => None,
        })
        .flatten()
        .flat_map(|p| match p.distribution_point {
            Some(DistributionPointName::FullName(names)) => names,
            _ => vec![],
        })
        .map(|n| n.to_string())
        .collect();
    assert_eq!(dps, [format!("URI({URL})")]);
    assert!(made.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn xmppaddr_and_the_crl_point_only_when_asked_for() {
    let t = TestCa::new("xmppaddr");
    let made = t.issue(&["a.care.example", "b.care.example"], true, None);
    let chain = chain(&made.cert_pem);
    let (_, leaf) = parse_x509_certificate(&chain[0]).unwrap();
    let others: Vec<(String, Vec<u8>)> = sans(&leaf)
        .into_iter()
        .filter_map(|n| match n {
            GeneralName::OtherName(oid, value) => Some((oid.to_id_string(), value.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(others.len(), 2);
    for ((oid, value), domain) in others.iter().zip(["a.care.example", "b.care.example"]) {
        assert_eq!(oid, "1.3.6.1.5.5.7.8.5");
        // [0] EXPLICIT { UTF8String domain }
        let utf8 = [&[0x0c, domain.len() as u8][..], domain.as_bytes()].concat();
        let explicit = [&[0xa0, utf8.len() as u8][..], &utf8].concat();
        assert_eq!(value, &explicit);
    }
    assert!(!leaf.iter_extensions().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::CRLDistributionPoints(_)
    )));
}

#[test]
fn rustls_accepts_the_chain_for_its_domains_and_refuses_it_once_revoked() {
    let t = TestCa::new("verify");
    let made = t.issue(&["a.care.example", "b.care.example"], false, Some(URL));
    let other = t.issue(&["c.care.example"], false, Some(URL));
    let chain = chain(&made.cert_pem);
    t.verify_server(&chain, "a.care.example", vec![]).unwrap();
    t.verify_server(&chain, "b.care.example", vec![]).unwrap();
    t.verify_client(&chain, vec![]).unwrap();
    let wrong = t
        .verify_server(&chain, "c.care.example", vec![])
        .unwrap_err();
    assert!(
        matches!(
            wrong,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. })
        ),
        "{wrong:?}"
    );

    // A CRL naming another certificate leaves this one trusted (and is authoritative: no
    // "unknown revocation status" even though the certificate names a CRL URL).
    t.verify_server(&chain, "a.care.example", vec![t.crl(1, &[&other.serial])])
        .unwrap();
    t.verify_client(&chain, vec![t.crl(1, &[&other.serial])])
        .unwrap();

    let revoked = vec![t.crl(2, &[&other.serial, &made.serial])];
    let err = t
        .verify_server(&chain, "a.care.example", revoked.clone())
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
    let err = t.verify_client(&chain, revoked).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(CertificateError::Revoked)
    );
}

#[test]
fn another_ca_is_not_trusted_even_under_the_same_name() {
    let (ours, theirs) = (TestCa::new("ours"), TestCa::new("theirs"));
    let chain = chain(&theirs.issue(&["x.example"], false, None).cert_pem);
    // Both roots are "CN=Care Federation Root": the impostor's chain finds our root by name,
    // and its signature does not verify with our key.
    let bad = rustls::Error::InvalidCertificate(CertificateError::BadSignature);
    assert_eq!(
        ours.verify_server(&chain, "x.example", vec![]),
        Err(bad.clone())
    );
    assert_eq!(ours.verify_client(&chain, vec![]), Err(bad));
}

#[test]
fn the_crl_carries_its_number_dates_and_entries() {
    let t = TestCa::new("crl");
    let made = t.issue(&["a.care.example"], false, None);
    let der = t.crl(41, &[&made.serial]);
    let (_, crl) = parse_x509_crl(&der).unwrap();
    assert_eq!(crl.crl_number().unwrap().to_string(), "41");
    let (_, root) = parse_x509_certificate(&t.ca.cert).unwrap();
    assert_eq!(crl.issuer(), root.subject());
    crl.verify_signature(root.public_key()).unwrap();
    assert_eq!(crl.last_update().timestamp(), t.now.unix_timestamp());
    let next = crl.next_update().unwrap().timestamp() - t.now.unix_timestamp();
    assert_eq!(next, 7 * 86400);
    let entries: Vec<_> = crl.iter_revoked_certificates().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(hex(entries[0].raw_serial()), made.serial);
    assert_eq!(
        entries[0].revocation_date.timestamp(),
        t.now.unix_timestamp()
    );
    assert_eq!(entries[0].reason_code().unwrap().1.0, 1, "keyCompromise");
}

#[test]
fn nothing_outlives_the_ca_and_a_foreign_key_is_noticed() {
    let t = TestCa::new("limits");
    let domains = vec!["a.example".to_owned()];
    let late = t.now + time::Duration::days(7305 - 100);
    let err = t.ca.issue(
        &Request {
            domains: &domains,
            xmppaddr: false,
            days: 397,
            crl_url: None,
        },
        late,
    );
    assert!(err.err().unwrap().contains("would outlive the CA"));

    let other = make_root("Other", 10, t.now).unwrap();
    std::fs::write(t.dir.join(CA_KEY), other.key_pem).unwrap();
    let err = Authority::load(&t.dir).err().unwrap();
    assert!(err.contains("is not the key of"), "{err}");
}

#[test]
fn serials_are_random_positive_and_the_same_length() {
    let a = random_serial().unwrap();
    let b = random_serial().unwrap();
    assert_ne!(a, b);
    for s in [a, b] {
        assert_eq!(s[0] & 0xc0, 0x40);
    }
    assert_eq!(unhex(&hex(&a)).unwrap(), a);
    assert!(unhex("zz").is_err());
}
