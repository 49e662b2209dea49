//! `zorg ca` as an auditor uses it: the real binary, real files, real exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const ZORG: &str = env!("CARGO_BIN_EXE_zorg");

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("zorg-ca-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Runs `zorg ca ARGS` in the scratch directory.
    fn ca(&self, args: &[&str]) -> Run {
        let out = Command::new(ZORG)
            .arg("ca")
            .args(args)
            .current_dir(&self.0)
            .output()
            .unwrap();
        Run(out)
    }

    fn path(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A finished command.
struct Run(Output);

impl Run {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    /// Asserts success and returns stdout.
    fn ok(&self) -> String {
        assert!(
            self.0.status.success(),
            "failed: {}{}",
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }
    /// Asserts exit code 1 and returns stderr.
    fn fails(&self) -> String {
        assert_eq!(
            self.0.status.code(),
            Some(1),
            "{}{}",
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// The status column of `list` for the row whose domains are `domains`.
fn status_of(list: &str, domains: &str) -> String {
    let row = list
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(domains))
        .unwrap_or_else(|| panic!("no row for {domains} in\n{list}"));
    row.split("  ")
        .filter(|c| !c.is_empty())
        .last()
        .unwrap()
        .trim()
        .to_owned()
}

fn serial_of(list: &str, domains: &str) -> String {
    let row = list
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(domains))
        .unwrap();
    row.split_whitespace().next().unwrap().to_owned()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_issue_list_revoke_crl_list() {
    let s = Scratch::new("flow");
    let init = s
        .ca(&[
            "init",
            "--dir",
            "auditor",
            "--name",
            "Care Federation Root",
            "--crl-url",
            "http://pki.care.example/root.crl",
        ])
        .ok();
    assert!(
        init.contains("created the CA \"Care Federation Root\""),
        "{init}"
    );
    assert!(init.contains("SHA-256 fingerprint"), "{init}");
    assert!(
        !init.contains("PRIVATE KEY"),
        "key material printed: {init}"
    );
    #[cfg(unix)]
    assert_eq!(mode(&s.path("auditor/ca.key")), 0o600);
    assert!(
        s.ca(&["list", "--dir", "auditor"])
            .ok()
            .contains("no certificates yet")
    );

    let issued = s
        .ca(&[
            "issue",
            "--dir",
            "auditor",
            "--domain",
            "a.care.example",
            "--domain",
            "conference.a.care.example",
            "--out",
            "servers/a",
        ])
        .ok();
    assert!(issued.contains("a.care.example.crt"), "{issued}");
    assert!(
        !issued.contains("PRIVATE KEY"),
        "key material printed: {issued}"
    );
    s.ca(&[
        "issue",
        "--dir",
        "auditor",
        "--domain",
        "b.care.example",
        "--out",
        "servers/b",
        "--xmppaddr",
        "--days",
        "30",
    ])
    .ok();
    #[cfg(unix)]
    assert_eq!(mode(&s.path("servers/a/a.care.example.key")), 0o600);
    let chain = std::fs::read_to_string(s.path("servers/b/b.care.example.crt")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);

    let list = s.ca(&["list", "--dir", "auditor"]).ok();
    assert!(list.starts_with("SERIAL"), "{list}");
    assert_eq!(
        status_of(&list, "a.care.example,conference.a.care.example"),
        "valid"
    );
    assert_eq!(status_of(&list, "b.care.example"), "valid");
    let serial_b = serial_of(&list, "b.care.example");
    assert_eq!(serial_b.len(), 32, "{list}");

    let revoked = s
        .ca(&[
            "revoke",
            "--dir",
            "auditor",
            "conference.a.care.example",
            "--reason",
            "key-compromise",
        ])
        .ok();
    assert!(revoked.contains("revoked 1 certificate(s)"), "{revoked}");
    s.ca(&["revoke", "--dir", "auditor", &serial_b.to_uppercase()])
        .ok();

    let crl = s.ca(&["crl", "--dir", "auditor", "--out", "root.crl"]).ok();
    assert!(
        crl.contains("CRL number 1") && crl.contains("2 revoked"),
        "{crl}"
    );
    let pem = std::fs::read_to_string(s.path("root.crl")).unwrap();
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"), "{pem}");
    let crl = s
        .ca(&[
            "crl", "--dir", "auditor", "--out", "root.crl", "--days", "3",
        ])
        .ok();
    assert!(crl.contains("CRL number 2"), "{crl}");

    let list = s.ca(&["list", "--dir", "auditor"]).ok();
    assert!(
        status_of(&list, "a.care.example,conference.a.care.example").starts_with("revoked on 20"),
        "{list}"
    );
    assert!(
        status_of(&list, "b.care.example").starts_with("revoked on "),
        "{list}"
    );
}

#[test]
fn init_twice_is_refused_and_the_ca_kept() {
    let s = Scratch::new("twice");
    s.ca(&["init", "--dir", "auditor", "--name", "One"]).ok();
    let key = std::fs::read(s.path("auditor/ca.key")).unwrap();
    let err = s.ca(&["init", "--dir", "auditor", "--name", "Two"]).fails();
    assert!(err.contains("already holds a CA"), "{err}");
    assert_eq!(std::fs::read(s.path("auditor/ca.key")).unwrap(), key);
}

#[test]
fn unknown_serial_or_domain_is_an_error() {
    let s = Scratch::new("unknown");
    s.ca(&["init", "--dir", "auditor", "--name", "One"]).ok();
    s.ca(&[
        "issue",
        "--dir",
        "auditor",
        "--domain",
        "a.example",
        "--out",
        "out",
    ])
    .ok();
    for target in ["4f00deadbeef", "b.example"] {
        let err = s.ca(&["revoke", "--dir", "auditor", target]).fails();
        assert!(
            err.contains("no certificate") && err.contains("zorg ca list"),
            "{err}"
        );
    }
}

#[test]
fn a_missing_ca_directory_is_an_error_that_says_what_to_do() {
    let s = Scratch::new("missing");
    for args in [
        &[
            "issue",
            "--dir",
            "nowhere",
            "--domain",
            "a.example",
            "--out",
            "out",
        ][..],
        &["revoke", "--dir", "nowhere", "a.example"],
        &["crl", "--dir", "nowhere", "--out", "x.crl"],
        &["list", "--dir", "nowhere"],
    ] {
        let err = s.ca(args).fails();
        assert!(
            err.starts_with("zorg: no CA") && err.contains("zorg ca init"),
            "{args:?}: {err}"
        );
    }
    assert!(!s.path("nowhere").exists() && !s.path("out").exists());
}

#[test]
fn bad_domains_and_wildcards_are_refused_before_anything_is_signed() {
    let s = Scratch::new("domains");
    s.ca(&["init", "--dir", "auditor", "--name", "One"]).ok();
    for domain in ["*.example.org", "a..example", "127.0.0.1", ""] {
        let err = s
            .ca(&[
                "issue", "--dir", "auditor", "--domain", domain, "--out", "out",
            ])
            .fails();
        assert!(err.contains("--domain"), "{domain}: {err}");
    }
    let list = s.ca(&["list", "--dir", "auditor"]).ok();
    assert!(list.contains("no certificates yet"), "{list}");
}
