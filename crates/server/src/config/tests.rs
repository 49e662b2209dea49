//! Tests of the config as an operator meets it: the example file, defaults, and the problems
//! `zorg check` reports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::*;

/// The example config at the repository root (relative to this file, so that it works wherever
/// the crate is built from).
const EXAMPLE: &str = include_str!("../../../../zorg.example.toml");

/// A minimal valid file plus `extra` in section `section` ("" for the top level).
pub(super) fn with(section: &str, extra: &str) -> String {
    let header = if section.is_empty() {
        String::new()
    } else {
        format!("[{section}]\n")
    };
    let top = if section.is_empty() {
        format!("{extra}\n")
    } else {
        String::new()
    };
    let body = if section.is_empty() {
        String::new()
    } else {
        format!("{extra}\n")
    };
    format!("{top}[[domain]]\nname = \"example.org\"\n{header}{body}")
}

/// The problem at `path`, failing the test with all problems when there is none.
pub(super) fn problem_at<'p>(problems: &'p [Problem], path: &str) -> &'p Problem {
    problems
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}; got {problems:#?}"))
}

/// Key paths of a TOML table, array-of-tables elements written as `name[]`.
fn key_paths(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => key_paths(t, &path, out),
            toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
                for e in a {
                    if let toml::Value::Table(t) = e {
                        key_paths(t, &format!("{path}[]"), out);
                    }
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

#[test]
fn defaults_are_valid() {
    let config = Config::default();
    assert_eq!(config.validate(), []);
    let text = toml::to_string(&config).unwrap();
    assert_eq!(Config::check(&text), []);
    let parsed = Config::from_str_at(&text, Path::new("")).unwrap();
    assert_eq!(parsed, config);
}

#[test]
fn example_is_the_default() {
    assert_eq!(Config::check(EXAMPLE), []);
    let base = Path::new("/etc/zorg");
    let parsed = Config::from_str_at(EXAMPLE, base).unwrap();
    let mut default = Config::default();
    default.resolve_relative_to(base);
    assert_eq!(parsed, default);
    assert_eq!(parsed.data_dir, Path::new("/etc/zorg/zorg-data"));
}

#[test]
fn example_has_exactly_the_fields() {
    let example: toml::Table = toml::from_str(EXAMPLE).unwrap();
    let default: toml::Table =
        toml::from_str(&toml::to_string(&Config::default()).unwrap()).unwrap();
    let (mut in_example, mut in_default) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&example, "", &mut in_example);
    key_paths(&default, "", &mut in_default);
    assert_eq!(in_example, in_default);
}

/// Keys that are unset by default (certificate, key, dnssec_trust_anchors) cannot be in the parsed example; they must
/// still be documented in it, as comments.
#[test]
fn example_documents_every_key() {
    let mut sample = Config::default();
    sample.domains[0].certificate = Some("c".into());
    sample.domains[0].key = Some("k".into());
    sample.federation.dnssec_trust_anchors = Some("a".into());
    sample.domains[0].archive_expiry = Some(crate::config::DurationStr::from_secs(86_400));
    sample.storage.key_file = Some("k".into());
    sample.storage.key_env = Some("K".into());
    let sample: toml::Table = toml::from_str(&toml::to_string(&sample).unwrap()).unwrap();
    let mut every_key = BTreeSet::new();
    key_paths(&sample, "", &mut every_key);

    let mut documented = BTreeSet::new();
    let mut section = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            section = format!("{name}[].");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, _)) = line.split_once(" = ")
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            documented.insert(format!("{section}{key}"));
        }
    }
    let missing: Vec<_> = every_key.difference(&documented).collect();
    assert!(missing.is_empty(), "not in zorg.example.toml: {missing:?}");
}

#[test]
fn a_file_needs_a_domain() {
    for text in ["", "domain = []\n"] {
        let problems = Config::check(text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problem_at(&problems, "domain")
                .message
                .contains("[[domain]]")
        );
    }
    let problems = Config::check("[domain]\nname = \"a.example\"\n");
    let p = problem_at(&problems, "domain");
    assert_eq!(p.line, Some(1));
    assert!(p.message.contains("[[domain]]"), "{}", p.message);
}

#[test]
fn every_bound_is_checked() {
    #[rustfmt::skip]
    let cases = [
        ("c2s", "sasl_iterations = 4095", "c2s.sasl_iterations", "between 4096 and 1000000"),
        ("c2s", "sasl_iterations = 1000001", "c2s.sasl_iterations", "between"),
        ("c2s", "idle_timeout = \"9s\"", "c2s.idle_timeout", "between \"10s\" and \"1d\""),
        ("c2s", "idle_timeout = \"2d\"", "c2s.idle_timeout", "between"),
        ("c2s", "ping_timeout = \"0s\"", "c2s.ping_timeout", "between \"1s\" and \"1h\""),
        ("c2s", "whitespace_keepalive = \"61m\"", "c2s.whitespace_keepalive", "\"0s\" to disable"),
        ("c2s", "resume_timeout = \"9s\"", "c2s.resume_timeout", "\"0s\" to disable"),
        ("c2s", "resume_timeout = \"2h\"", "c2s.resume_timeout", "between \"10s\" and \"1h\""),
        ("c2s", "max_unacked = 9", "c2s.max_unacked", "between 10 and 10000"),
        ("c2s", "max_unacked = 10001", "c2s.max_unacked", "between 10 and 10000"),
        ("c2s", "see_other_host = \"bad host\"", "c2s.see_other_host", "host[:port]"),
        ("c2s", "see_other_host = \"a.example:0\"", "c2s.see_other_host", "port"),
        ("c2s", "listen = []\ndirect_tls = []", "c2s.listen", "no client listener"),
        ("c2s", "direct_tls = [\"127.0.0.1:5222\"]", "c2s.direct_tls[0]", "listed twice"),
        ("limits", "max_stanza_size = 4095", "limits.max_stanza_size", "between 4096 and 16777216"),
        ("limits", "max_stanza_size = 16777217", "limits.max_stanza_size", "between 4096 and 16777216"),
        ("limits", "pre_auth_stanza_size = 1023", "limits.pre_auth_stanza_size", "between 1024 and 65536"),
        ("limits", "pre_auth_stanza_size = 65537", "limits.pre_auth_stanza_size", "between 1024 and 65536"),
        ("limits", "max_elements = 15", "limits.max_elements", "between 16 and 1000000"),
        ("limits", "max_elements = 1000001", "limits.max_elements", "between 16 and 1000000"),
        ("limits", "max_depth = 0", "limits.max_depth", "between 1 and 256"),
        ("limits", "max_depth = 257", "limits.max_depth", "between 1 and 256"),
        ("limits", "max_attributes = 0", "limits.max_attributes", "between 1 and 1024"),
        ("limits", "max_attributes = 1025", "limits.max_attributes", "between 1 and 1024"),
        ("limits", "read_rate = 1023", "limits.read_rate", "at least 1024"),
        ("limits", "pre_auth_timeout = \"0s\"", "limits.pre_auth_timeout", "between"),
        ("limits", "pre_auth_timeout = \"11m\"", "limits.pre_auth_timeout", "between"),
        ("limits", "max_unauthenticated = 0", "limits.max_unauthenticated", "at least 1"),
        ("limits", "max_offline_per_account = 1000001", "limits.max_offline_per_account", "between 0"),
        ("limits", "login_failures_per_account = 0", "limits.login_failures_per_account", "at least 1"),
        ("limits", "login_failures_per_ip = 0", "limits.login_failures_per_ip", "at least 1"),
        ("limits", "login_failures_per_ip_account = 0", "limits.login_failures_per_ip_account", "at least 1"),
        ("limits", "max_unauthenticated_per_ip = 0", "limits.max_unauthenticated_per_ip", "between"),
        ("limits", "connection_rate_per_ip = 0", "limits.connection_rate_per_ip", "between"),
        ("limits", "login_delay = \"11s\"", "limits.login_delay", "between"),
        ("limits", "login_account_delay_max = \"2m\"", "limits.login_account_delay_max", "between"),
        ("s2s", "connection_burst_per_ip = 0", "s2s.connection_burst_per_ip", "between"),
        ("limits", "login_failure_window = \"2d\"", "limits.login_failure_window", "between"),
        ("limits", "max_resources_per_account = 0", "limits.max_resources_per_account", "between 1"),
        ("limits", "max_resources_per_account = 1025", "limits.max_resources_per_account", "1024"),
        ("limits", "max_roster_items = 9", "limits.max_roster_items", "between 10 and 100000"),
        ("limits", "max_roster_items = 100001", "limits.max_roster_items", "between 10"),
        ("limits", "max_pending_subscriptions = 0", "limits.max_pending_subscriptions", "between 1 and 10000"),
        ("limits", "max_blocklist_items = 100001", "limits.max_blocklist_items", "between 10 and 100000"),
        ("limits", "max_directed_presence = 7", "limits.max_directed_presence", "between 8 and 10000"),
        ("limits", "max_presence_size = 511", "limits.max_presence_size", "between 512 and 65536"),
        ("limits", "max_presence_size = 65537", "limits.max_presence_size", "between 512"),
        ("limits", "account_cache_capacity = 999", "limits.account_cache_capacity", "between 1000 and 10000000"),
        ("log", "level = \"loud\"", "log.level", "not a level"),
        ("log", "level = \"info,my crate=debug\"", "log.level", "not a target"),
        ("log", "format = \"xml\"", "log.format", "human"),
        ("registration", "per_ip_per_hour = 0", "registration.per_ip_per_hour", "between 1 and 1000000"),
        ("push", "min_interval = \"0s\"", "push.min_interval", "between \"1s\" and \"1h\""),
        ("push", "min_interval = \"2h\"", "push.min_interval", "between"),
        ("push", "max_registrations = 0", "push.max_registrations", "between 1 and 100"),
        ("push", "max_registrations = 101", "push.max_registrations", "between 1 and 100"),
        ("push", "include_body = true", "push.include_body", "unknown"),
        ("", "data_dir = \"\"", "data_dir", "empty"),
    ];
    for (section, line, path, message) in cases {
        let text = with(section, line);
        let problems = Config::check(&text);
        let p = problem_at(&problems, path);
        assert!(
            p.message.contains(message),
            "{path}: {:?} lacks {message:?}",
            p.message
        );
        let expected_line = if section.is_empty() { 1 } else { 4 };
        assert_eq!(p.line, Some(expected_line), "{path}");
    }
}

#[test]
fn values_at_the_bounds_are_accepted() {
    let text = "[[domain]]\nname = \"example.org\"\n\
                [c2s]\nsasl_iterations = 1000000\nwhitespace_keepalive = \"0s\"\n\
                idle_timeout = \"1d\"\nsee_other_host = \"[2001:db8::1]:5222\"\n\
                resume_timeout = \"0s\"\nmax_unacked = 10000\n\
                [limits]\nmax_stanza_size = 16777216\nmax_depth = 256\nmax_attributes = 1\n\
                read_rate = 1024\nmax_offline_per_account = 0\n\
                [log]\nformat = \"json\"\nlevel = \"warn,zorg_server::stream=TRACE, sqlx=off\"\n\
                [push]\nmin_interval = \"1h\"\nmax_registrations = 100\ninclude_sender = true\n";
    let config = Config::from_str_at(text, Path::new("/")).unwrap();
    assert_eq!(config.push.max_registrations, 100);
    assert!(config.push.include_sender);
    assert_eq!(config.limits.max_stanza_size, 16 * 1024 * 1024);
    assert_eq!(config.log.format, LogFormat::Json);
    assert!(config.c2s.whitespace_keepalive.is_zero());
    for host in [
        "xmpp2.example.net:5222",
        "xmpp2.example.net",
        "192.0.2.1",
        "[::1]",
    ] {
        let problems = Config::check(&with("c2s", &format!("see_other_host = {host:?}")));
        assert_eq!(problems, [], "{host}");
    }
}

#[test]
fn unknown_keys_are_reported_with_path_and_line() {
    let text = "colour = \"blue\"\n\
                [[domain]]\n\
                name = \"a.example\"\n\
                [[domain]]\n\
                name = \"b.example\"\n\
                cert = \"b.crt\"\n\
                [limits]\n\
                maxstanza = 100000\n\
                max_stanza_size = 100000\n\
                data_dir = \"x\"\n\
                [bogus]\n\
                x = 1\n";
    let problems = Config::check(text);
    let p = problem_at(&problems, "colour");
    assert_eq!(p.line, Some(1));
    assert!(
        p.message.starts_with("unknown key `colour`"),
        "{}",
        p.message
    );
    let p = problem_at(&problems, "domain[1].cert");
    assert_eq!(p.line, Some(6));
    assert!(
        p.message.contains("did you mean `certificate`?"),
        "{}",
        p.message
    );
    let p = problem_at(&problems, "limits.maxstanza");
    assert_eq!(p.line, Some(8));
    assert!(
        p.message.contains("did you mean `max_stanza_size`?"),
        "{}",
        p.message
    );
    let p = problem_at(&problems, "limits.data_dir");
    assert_eq!(p.line, Some(10));
    assert!(
        p.message.contains("at the top of the file"),
        "{}",
        p.message
    );
    let p = problem_at(&problems, "bogus");
    assert_eq!(p.line, Some(11));
    assert!(
        p.message
            .contains("known keys here: archive, audit, c2s, data_dir, domain"),
        "{}",
        p.message
    );
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

#[test]
fn a_key_in_the_wrong_section_is_pointed_home() {
    let problems = Config::check(&with("c2s", "max_depth = 3"));
    let p = problem_at(&problems, "c2s.max_depth");
    assert!(p.message.contains("belongs in [limits]"), "{}", p.message);
    let problems = Config::check("name = \"x.example\"\n[[domain]]\nname = \"a.example\"\n");
    let p = problem_at(&problems, "name");
    assert!(p.message.contains("[[domain]]"), "{}", p.message);
}

#[test]
fn several_problems_are_all_reported() {
    let text = "data_dir = 5\n\
                [[domain]]\n\
                name = \"Example.org\"\n\
                certificate = \"a.crt\"\n\
                [[domain]]\n\
                name = \"example.ORG\"\n\
                [[domain]]\n\
                name = \"-bad.example\"\n\
                [c2s]\n\
                listen = [\"127.0.0.1\", \"[::1]:5222\", \"localhost:5222\"]\n\
                idle_timeout = \"10\"\n\
                sasl_iterations = 10\n\
                typo = true\n\
                [limits]\n\
                max_depth = \"deep\"\n\
                max_attributes = -1\n\
                read_rate = 10\n\
                [log]\n\
                format = \"xml\"\n";
    let problems = Config::check(text);
    let got: Vec<(&str, Option<usize>)> =
        problems.iter().map(|p| (p.path.as_str(), p.line)).collect();
    assert_eq!(
        got,
        [
            ("data_dir", Some(1)),
            ("domain[0].certificate", Some(4)),
            ("domain[1].name", Some(6)),
            ("domain[2].name", Some(8)),
            ("c2s.listen[0]", Some(10)),
            ("c2s.listen[2]", Some(10)),
            ("c2s.idle_timeout", Some(11)),
            ("c2s.sasl_iterations", Some(12)),
            ("c2s.typo", Some(13)),
            ("limits.max_depth", Some(15)),
            ("limits.max_attributes", Some(16)),
            ("limits.read_rate", Some(17)),
            ("log.format", Some(19)),
        ],
        "{problems:#?}"
    );
    assert!(
        problem_at(&problems, "c2s.listen[0]")
            .message
            .contains("has no port")
    );
    assert!(
        problem_at(&problems, "c2s.listen[2]")
            .message
            .contains("host names are not accepted")
    );
    assert!(
        problem_at(&problems, "c2s.idle_timeout")
            .message
            .contains("no unit")
    );
    assert!(
        problem_at(&problems, "domain[1].name")
            .message
            .contains("listed twice")
    );
    assert!(
        problem_at(&problems, "domain[2].name")
            .message
            .contains("hyphen")
    );
    let p = problem_at(&problems, "limits.max_attributes");
    assert!(
        p.message.contains("expected a whole number"),
        "{}",
        p.message
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let problems = Config::check("[[domain]]\nname = \"a.example\"\n[c2s\nlisten = 1\n");
    assert!(!problems.is_empty());
    assert_eq!(problems[0].line, Some(3), "{problems:#?}");
    assert!(problems[0].message.starts_with("TOML syntax"));
    let problems = Config::check("[limits]\nmax_depth = 1\nmax_depth = 2\n");
    assert_eq!(problems[0].line, Some(3), "{problems:#?}");
}

#[test]
fn domain_names() {
    let text =
        "[[domain]]\nname = \"Chat.Example.ORG\"\n[[domain]]\nname = \"xn--bcher-kva.example\"\n";
    let config = Config::from_str_at(text, Path::new("/")).unwrap();
    assert_eq!(config.domains[0].name, "chat.example.org");
    assert_eq!(config.domains[1].name, "xn--bcher-kva.example");
    for bad in [
        "",
        "bücher.example",
        "a..b",
        "a.example.",
        "a_b.example",
        "a-.example",
        "[::1]",
    ] {
        let text = format!("[[domain]]\nname = {bad:?}\n");
        let problems = Config::check(&text);
        assert_eq!(
            problem_at(&problems, "domain[0].name").line,
            Some(2),
            "{bad}"
        );
    }
    let long = format!("{}.example", "a".repeat(64));
    let problems = Config::check(&format!("[[domain]]\nname = \"{long}\"\n"));
    assert!(
        problem_at(&problems, "domain[0].name")
            .message
            .contains("63")
    );
    let problems = Config::check("[[domain]]\n");
    let p = problem_at(&problems, "domain[0].name");
    assert!(p.message.contains("required"));
    assert_eq!(p.line, Some(1));
    let problems = Config::check("[[domain]]\nname = \"a.example\"\nkey = \"a.key\"\n");
    assert!(
        problem_at(&problems, "domain[0].key")
            .message
            .contains("both")
    );
}

#[test]
fn relative_paths_follow_the_config_file() {
    let text = "data_dir = \"data\"\n\
                [[domain]]\nname = \"a.example\"\ncertificate = \"certs/a.crt\"\nkey = \"/secret/a.key\"\n";
    let config = Config::from_str_at(text, Path::new("/etc/zorg")).unwrap();
    assert_eq!(config.data_dir, Path::new("/etc/zorg/data"));
    let domain = &config.domains[0];
    assert_eq!(
        domain.certificate.as_deref(),
        Some(Path::new("/etc/zorg/certs/a.crt"))
    );
    assert_eq!(domain.key.as_deref(), Some(Path::new("/secret/a.key")));
}

#[test]
fn load_reads_resolves_and_reports_with_the_file_name() {
    let dir = std::env::temp_dir().join(format!("zorg-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("zorg.toml");
    std::fs::write(&file, "[[domain]]\nname = \"a.example\"\n").unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.data_dir, dir.join("zorg-data"));

    std::fs::write(
        &file,
        "[[domain]]\nname = \"a.example\"\n[limits]\nmax_depth = 0\nx = 1\n",
    )
    .unwrap();
    let err = Config::load(&file).unwrap_err();
    let shown = format!("{}", file.display());
    let text = err.to_string();
    let (first, second) = text.split_once('\n').unwrap();
    assert_eq!(
        first,
        format!("{shown}:4: limits.max_depth: must be between 1 and 256, not 0")
    );
    let prefix = format!("{shown}:5: limits.x: unknown key `x`; known keys here: ");
    let known: Vec<&str> = second.strip_prefix(&prefix).unwrap().split(", ").collect();
    // Every key of the section, sorted (the list grows with the section).
    let mut sorted = known.clone();
    sorted.sort_unstable();
    assert_eq!(known, sorted);
    for key in [
        "max_depth",
        "max_stanza_size",
        "read_rate",
        "login_failure_window",
    ] {
        assert!(known.contains(&key), "{second}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    let err = Config::load(&PathBuf::from("/nonexistent/zorg.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/zorg.toml: cannot read")
    );
}

#[test]
fn a_bare_number_is_not_a_duration() {
    // In a file, a bare number is a type error with the key path, not a silent default.
    let problems = Config::check(&with("c2s", "ping_timeout = 60"));
    assert!(
        problem_at(&problems, "c2s.ping_timeout")
            .message
            .contains("duration string")
    );
}
