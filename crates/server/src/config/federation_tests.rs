//! Tests of `[s2s]` and `[federation]`: defaults, bounds, the rules that tie keys together, and
//! problems reported at their line.

use std::path::Path;

use super::tests::{problem_at, with};
use super::*;

/// A minimal federating config (trust anchor set) plus `extra` lines in `[federation]`.
fn federating(extra: &str) -> String {
    with(
        "federation",
        &format!("enabled = true\ntrust_anchors = [\"root.crt\"]\n{extra}"),
    )
}

#[test]
fn defaults_federate_with_nobody() {
    let config = Config::default();
    assert!(!config.federation.enabled);
    assert!(config.federation.trust_anchors.is_empty());
    assert!(!config.federation.dialback);
    // Loopback only, and opened only when federation is enabled.
    assert!(config.s2s.listen.iter().all(|a| a.ip().is_loopback()));
    assert!(config.s2s.direct_tls.iter().all(|a| a.ip().is_loopback()));
}

#[test]
fn the_issue_example_is_accepted() {
    let text = "[[domain]]\nname = \"a.example\"\n\
                [s2s]\nlisten = [\"127.0.0.1:5269\"]\ndirect_tls = [\"127.0.0.1:5270\"]\n\
                [federation]\nenabled = true\ntrust_anchors = [\"auditor-root.crt\"]\n\
                crls = [\"auditor.crl\", \"/var/lib/crl/other.der\"]\ndialback = false\n\
                dane = false\nallow = [\"Other.Example\"]\ndeny = [\"bad.example\"]\n\
                connect_timeout = \"30s\"\nidle_timeout = \"10m\"\n\
                [federation.hosts]\n\"Other.Example\" = \"127.0.0.1:5369\"\n\
                \"v6.example\" = \"[::1]:5269\"\n";
    let config = Config::from_str_at(text, Path::new("/etc/zorg")).unwrap();
    let f = &config.federation;
    assert!(f.enabled);
    assert_eq!(f.trust_anchors, [Path::new("/etc/zorg/auditor-root.crt")]);
    assert_eq!(
        f.crls,
        [
            Path::new("/etc/zorg/auditor.crl"),
            Path::new("/var/lib/crl/other.der")
        ]
    );
    assert_eq!(f.allow, ["other.example"]);
    assert_eq!(
        f.hosts.get("other.example"),
        Some(&"127.0.0.1:5369".parse().unwrap())
    );
    assert_eq!(f.hosts.len(), 2);
    assert_eq!(f.connect_timeout.as_secs(), 30);
}

#[test]
fn enabling_without_trust_anchors_says_what_to_add() {
    let problems = Config::check(&with("federation", "enabled = true"));
    let p = problem_at(&problems, "federation.enabled");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("trust_anchors = ["), "{}", p.message);
    // Anchors without `enabled` are a prepared config, not a mistake.
    let problems = Config::check(&with("federation", "trust_anchors = [\"root.crt\"]"));
    assert_eq!(problems, []);
}

#[test]
fn enabling_without_listeners_is_refused() {
    let text = format!("{}[s2s]\nlisten = []\ndirect_tls = []\n", federating(""));
    let problems = Config::check(&text);
    let p = problem_at(&problems, "federation.enabled");
    assert!(p.message.contains("[s2s]"), "{}", p.message);
}

#[test]
fn federation_bounds_and_rules() {
    #[rustfmt::skip]
    let cases = [
        ("connect_timeout = \"0s\"", "federation.connect_timeout", "between \"1s\" and \"1h\""),
        ("connect_timeout = \"2h\"", "federation.connect_timeout", "between"),
        ("idle_timeout = \"9s\"", "federation.idle_timeout", "between \"10s\" and \"1d\""),
        ("allow = [\"a..example\"]", "federation.allow[0]", "empty label"),
        ("deny = [\"\"]", "federation.deny[0]", "required"),
        ("allow = [\"x.example\", \"y.example\"]\ndeny = [\"Y.example\"]", "federation.deny[0]",
         "both allowed (federation.allow[1]) and denied"),
        ("crls = [\"\"]", "federation.crls[0]", "empty"),
        ("dnssec_trust_anchors = \"\"\ndane = true", "federation.dnssec_trust_anchors", "empty"),
        ("dnssec_trust_anchors = \"keys.txt\"", "federation.dnssec_trust_anchors",
         "only used with dane = true"),
        ("dns_servers = [\"127.0.0.1\"]", "federation.dns_servers[0]", "IP:port"),
    ];
    for (lines, path, message) in cases {
        let problems = Config::check(&federating(lines));
        let p = problem_at(&problems, path);
        assert!(p.message.contains(message), "{path}: {:?}", p.message);
        assert!(p.line.is_some_and(|l| l >= 6), "{path}: {:?}", p.line);
    }
}

#[test]
fn dns_keys_are_read_and_paths_resolved() {
    let text = federating(
        "dane = true\ndnssec_trust_anchors = \"dns/anchors.txt\"\n\
         dns_servers = [\"127.0.0.53:53\", \"[::1]:5353\"]",
    );
    let config = Config::from_str_at(&text, Path::new("/etc/zorg")).unwrap();
    let f = &config.federation;
    assert_eq!(
        f.dnssec_trust_anchors.as_deref(),
        Some(Path::new("/etc/zorg/dns/anchors.txt"))
    );
    assert_eq!(f.dns_servers.len(), 2);
    assert_eq!(f.dns_servers[1].port(), 5353);
    // Defaults: the system's resolver, the built-in root keys.
    let d = FederationConfig::default();
    assert!(d.dns_servers.is_empty() && d.dnssec_trust_anchors.is_none() && !d.dane);
}

#[test]
fn hosts_must_map_domains_to_socket_addresses() {
    let text = format!(
        "{}[federation.hosts]\n\"ok.example\" = \"127.0.0.1:5369\"\n\
         \"a.example\" = \"127.0.0.1\"\n\"b.example\" = \"b.example:5269\"\n\
         \"bad name\" = \"127.0.0.1:5269\"\n\"OK.example\" = \"127.0.0.2:5269\"\n",
        federating("")
    );
    let problems = Config::check(&text);
    let p = problem_at(&problems, "federation.hosts.\"a.example\"");
    assert_eq!(p.line, Some(9));
    assert!(p.message.contains("has no port"), "{}", p.message);
    let p = problem_at(&problems, "federation.hosts.\"b.example\"");
    assert_eq!(p.line, Some(10));
    assert!(p.message.contains("host names are not"), "{}", p.message);
    let p = problem_at(&problems, "federation.hosts.\"bad name\"");
    assert_eq!(p.line, Some(11));
    let p = problem_at(&problems, "federation.hosts.\"ok.example\"");
    assert!(p.message.contains("listed twice"), "{}", p.message);
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn s2s_listeners_may_not_reuse_an_address() {
    let text = format!(
        "{}[s2s]\nlisten = [\"127.0.0.1:5222\"]\ndirect_tls = [\"127.0.0.1:5270\", \"127.0.0.1:5270\"]\n",
        federating("")
    );
    let problems = Config::check(&text);
    let p = problem_at(&problems, "s2s.listen[0]");
    assert!(
        p.message.contains("first at c2s.listen[0]"),
        "{}",
        p.message
    );
    assert_eq!(p.line, Some(8));
    let p = problem_at(&problems, "s2s.direct_tls[1]");
    assert!(p.message.contains("listed twice"), "{}", p.message);
    let problems = Config::check(&with("s2s", "listen = [\"0.0.0.0\"]"));
    assert!(
        problem_at(&problems, "s2s.listen[0]")
            .message
            .contains("has no port")
    );
}

#[test]
fn unknown_federation_keys_are_pointed_out() {
    let problems = Config::check(&federating("trust_anchor = [\"x\"]"));
    let p = problem_at(&problems, "federation.trust_anchor");
    assert!(
        p.message.contains("did you mean `trust_anchors`"),
        "{}",
        p.message
    );
    let problems = Config::check(&with("s2s", "trust_anchors = []"));
    let p = problem_at(&problems, "s2s.trust_anchors");
    assert!(p.message.contains("in [federation]"), "{}", p.message);
}
