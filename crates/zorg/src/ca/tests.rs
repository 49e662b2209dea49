//! The `zorg ca` commands on real directories: what they write, keep and refuse.

use x509_parser::prelude::parse_x509_crl;

use super::authority::CA_CERT;
use super::*;

/// A scratch directory holding a CA in `ca/` and outputs in `out/`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let root = std::env::temp_dir().join(format!("zorg-ca-cmd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Scratch(root)
    }
    fn ca(&self) -> PathBuf {
        self.0.join("ca")
    }
    fn out(&self) -> PathBuf {
        self.0.join("out")
    }
    fn init(&self) {
        let url = Some("http://pki.care.example/root.crl".to_owned());
        init(&self.ca(), "Care Root", url, 7305, now()).unwrap();
    }
    fn issue(&self, domains: &[&str], out: &Path) -> Result<(), String> {
        let args = IssueArgs {
            domains: domains.iter().map(|d| d.to_string()).collect(),
            out: out.to_owned(),
            xmppaddr: false,
            days: 397,
        };
        issue(&self.ca(), args, now())
    }
    fn crl_number(&self, file: &Path) -> String {
        let pem = std::fs::read(file).unwrap();
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem).unwrap();
        let (_, crl) = parse_x509_crl(&der).unwrap();
        crl.crl_number().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

use rustls_pki_types::pem::PemObject;

#[test]
fn init_writes_the_root_its_key_0600_and_an_empty_index() {
    let s = Scratch::new("init");
    s.init();
    #[cfg(unix)]
    {
        assert_eq!(files::mode(&s.ca().join(CA_KEY)), Some(0o600));
        assert_eq!(files::mode(&s.ca()), Some(0o700));
    }
    let index = Index::load(&s.ca()).unwrap();
    assert_eq!(index.name, "Care Root");
    assert_eq!(
        index.crl_url.as_deref(),
        Some("http://pki.care.example/root.crl")
    );
    assert_eq!((index.crl_number, index.certificates.len()), (0, 0));
    Authority::load(&s.ca()).unwrap();
}

#[test]
fn init_never_replaces_a_ca() {
    let s = Scratch::new("init-twice");
    s.init();
    let key = std::fs::read(s.ca().join(CA_KEY)).unwrap();
    let err = init(&s.ca(), "Another", None, 10, now()).unwrap_err();
    assert!(
        err.contains("already holds a CA") && err.contains("another --dir"),
        "{err}"
    );
    assert_eq!(std::fs::read(s.ca().join(CA_KEY)).unwrap(), key);
}

#[test]
fn issue_records_the_certificate_and_writes_key_0600_and_chain() {
    let s = Scratch::new("issue");
    s.init();
    s.issue(
        &["A.Care.Example", "b.care.example", "a.care.example"],
        &s.out(),
    )
    .unwrap();
    let index = Index::load(&s.ca()).unwrap();
    let [c] = index.certificates.as_slice() else {
        panic!("{index:?}")
    };
    assert_eq!(c.domains, ["a.care.example", "b.care.example"]);
    assert_eq!(
        c.cert_file,
        std::path::absolute(s.out().join("a.care.example.crt")).unwrap()
    );
    assert!(c.revoked.is_none() && !c.xmppaddr);
    let chain = std::fs::read_to_string(&c.cert_file).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(chain.ends_with(&std::fs::read_to_string(s.ca().join(CA_CERT)).unwrap()));
    let copy = s.ca().join("issued").join(format!("{}.crt", c.serial));
    assert_eq!(std::fs::read_to_string(copy).unwrap(), chain);
    #[cfg(unix)]
    assert_eq!(files::mode(&c.key_file), Some(0o600));

    let err = s.issue(&["a.care.example"], &s.out()).unwrap_err();
    assert!(err.contains("does not overwrite"), "{err}");
    let err = s.issue(&["*.care.example"], &s.out()).unwrap_err();
    assert!(err.contains("wildcard"), "{err}");
    assert_eq!(Index::load(&s.ca()).unwrap().certificates.len(), 1);
}

#[test]
fn revoke_by_domain_or_serial_then_crls_count_up() {
    let s = Scratch::new("revoke");
    s.init();
    s.issue(&["a.care.example"], &s.out().join("1")).unwrap();
    s.issue(&["a.care.example", "b.care.example"], &s.out().join("2"))
        .unwrap();
    s.issue(&["c.care.example"], &s.out().join("3")).unwrap();
    let serial_c = Index::load(&s.ca()).unwrap().certificates[2].serial.clone();

    revoke(&s.ca(), "a.care.example", Reason::Superseded, now()).unwrap();
    // Uppercase with colons, as openssl prints serials.
    let typed: Vec<String> = serial_c
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    revoke(&s.ca(), &typed.join(":"), Reason::KeyCompromise, now()).unwrap();
    // Again: nothing left to revoke, not an error.
    revoke(&s.ca(), "a.care.example", Reason::Superseded, now()).unwrap();
    let err = revoke(&s.ca(), "d.care.example", Reason::Superseded, now()).unwrap_err();
    assert!(err.contains("zorg ca list"), "{err}");
    assert!(revoke(&s.ca(), "4000deadbeef", Reason::Superseded, now()).is_err());

    let index = Index::load(&s.ca()).unwrap();
    let reasons: Vec<_> = index
        .certificates
        .iter()
        .map(|c| c.revoked.as_ref().map(|r| r.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            Some(Reason::Superseded),
            Some(Reason::Superseded),
            Some(Reason::KeyCompromise)
        ]
    );

    let file = s.out().join("root.crl");
    crl(&s.ca(), &file, 7, now()).unwrap();
    assert_eq!(s.crl_number(&file), "1");
    crl(&s.ca(), &file, 7, now()).unwrap();
    assert_eq!(s.crl_number(&file), "2");
    assert_eq!(Index::load(&s.ca()).unwrap().crl_number, 2);
    list(&s.ca(), now()).unwrap();
}

#[test]
fn commands_on_a_missing_ca_say_how_to_make_one() {
    let s = Scratch::new("missing");
    for err in [
        s.issue(&["a.example"], &s.out()).unwrap_err(),
        revoke(&s.ca(), "a.example", Reason::Unspecified, now()).unwrap_err(),
        crl(&s.ca(), &s.out().join("x.crl"), 7, now()).unwrap_err(),
        list(&s.ca(), now()).unwrap_err(),
    ] {
        assert!(err.contains("zorg ca init"), "{err}");
    }
    assert!(!s.out().exists(), "nothing written for a missing CA");
}

#[test]
fn dates_are_shown_in_utc_to_the_minute() {
    let t = time::macros::datetime!(2026-03-04 05:06:07 +02:00);
    assert_eq!(show_time(t), "2026-03-04 03:06 UTC");
}
