//! `zorg audit` and the audit records of operators' commands, with the real binary: every
//! command that touches the server's data is recorded, the log verifies, exports select by
//! account and format, a tampered copy is caught, and a command whose act cannot be recorded
//! is not done.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{TempDir, stderr, stdout, zorg};
use zorg_server::audit::event::{AdminCommand, KeyChange, KeyKind};
use zorg_server::audit::record::{self, Record};
use zorg_server::audit::{Actor, Event, log};

/// Every record in the log of `dir`, in order (the tests verify the log besides).
fn records(dir: &Path) -> Vec<Record> {
    log::records(dir).unwrap()
}

fn by_cli(a: &Actor) -> bool {
    matches!(a, Actor::Cli { os_user, host } if !os_user.is_empty() && !host.is_empty())
}

#[test]
fn operators_acts_are_audited_and_the_log_verifies_exports_and_catches_tampering() {
    let dir = TempDir::new("audit");
    let config = dir.config("");
    let config = config.to_str().unwrap();
    let cwd = dir.path();
    let ok = |args: &[&str], stdin: &str| {
        let out = zorg(cwd, args, stdin);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        out
    };
    ok(
        &[
            "user",
            "add",
            "alice@localhost",
            "-c",
            config,
            "--password-stdin",
        ],
        "pw\n",
    );
    ok(
        &[
            "user",
            "add",
            "bob@localhost",
            "-c",
            config,
            "--password-stdin",
        ],
        "pw\n",
    );
    // The server makes the checkpoint key at its first start; here the test does, so that
    // the commands below sign what they write.
    let key = cwd.join("data/audit-signing.key");
    zorg_server::audit::sign::Signer::load_or_create(&key).unwrap();
    ok(
        &[
            "user",
            "passwd",
            "alice@localhost",
            "-c",
            config,
            "--password-stdin",
        ],
        "pw2\n",
    );
    ok(&["user", "list", "-c", config], "");
    ok(&["user", "del", "bob@localhost", "-c", config], "");
    ok(&["keys", "status", "-c", config], "");
    ok(&["keys", "rotate", "-c", config], "");

    let audit = cwd.join("data/audit");
    let recs = records(&audit);
    let has = |what: &str, f: &dyn Fn(&Event) -> bool| {
        assert!(recs.iter().any(|r| f(&r.event)), "no {what} in {recs:#?}");
    };
    has(
        "alice created",
        &|e| matches!(e, Event::AccountCreated { account, by } if account == "alice@localhost" && by_cli(by)),
    );
    has(
        "password change",
        &|e| matches!(e, Event::AccountChanged { account, by, .. } if account == "alice@localhost" && by_cli(by)),
    );
    has(
        "list",
        &|e| matches!(e, Event::AdminAction { action: AdminCommand::UserList, by, .. } if by_cli(by)),
    );
    has(
        "bob deleted",
        &|e| matches!(e, Event::AccountDeleted { account, .. } if account == "bob@localhost"),
    );
    has("key status", &|e| {
        matches!(
            e,
            Event::AdminAction {
                action: AdminCommand::KeysStatus,
                ..
            }
        )
    });
    has("rotation", &|e| {
        matches!(
            e,
            Event::KeyChanged {
                key: KeyKind::DataKey,
                change: KeyChange::Rotated,
                ..
            }
        )
    });
    assert!(recs.iter().any(|r| matches!(r.event, Event::Checkpoint(_))));

    // The auditor keeps the public key and verifies with it.
    let out = ok(&["audit", "key", "-c", config], "");
    let public = cwd.join("auditor.pub");
    std::fs::write(&public, stdout(&out)).unwrap();
    let public = public.to_str().unwrap();
    let out = ok(
        &["audit", "verify", "-c", config, "--public-key", public],
        "",
    );
    assert!(
        stdout(&out).contains("OK: no record was changed"),
        "{}",
        stdout(&out)
    );

    // Export: alice's view as JSON lines (as stored) and as FHIR; the export is itself recorded.
    let out = ok(
        &[
            "audit",
            "export",
            "-c",
            config,
            "--account",
            "alice@localhost",
        ],
        "",
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for l in &lines {
        let r = record::parse(l).unwrap();
        assert!(r.event.accounts().contains(&"alice@localhost"), "{l}");
    }
    let out = ok(
        &[
            "audit",
            "export",
            "-c",
            config,
            "--account",
            "alice@localhost",
            "--format",
            "fhir",
            "--since",
            "2000-01-01",
        ],
        "",
    );
    let bundle: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(bundle["resourceType"], "Bundle");
    let entries = bundle["entry"].as_array().unwrap();
    // The same records, and the first export, which is a record about alice too.
    assert_eq!(entries.len(), lines.len() + 1);
    assert!(
        entries
            .iter()
            .all(|e| e["resource"]["resourceType"] == "AuditEvent")
    );
    let out = ok(
        &["audit", "export", "-c", config, "--until", "2000-01-01"],
        "",
    );
    assert_eq!(stdout(&out), "", "nothing is that old");
    assert!(records(&audit).iter().any(|r| matches!(&r.event,
        Event::AuditExported { account: Some(a), records, .. } if a == "alice@localhost" && *records == lines.len() as u64)));

    // Bad input is refused with a sentence that says what to give instead.
    for (args, says) in [
        (
            vec!["audit", "export", "-c", config, "--since", "last tuesday"],
            "is not a time",
        ),
        (
            vec!["audit", "verify", "-c", config, "--from", "yesterday"],
            "neither a sequence number",
        ),
        (
            vec!["audit", "verify", "-c", config, "--public-key", config],
            "not an Ed25519 public key",
        ),
    ] {
        let out = zorg(cwd, &args, "");
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    // A copy with one record changed: verify names the line and fails.
    let copy = cwd.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for (_, p) in log::segments(&audit).unwrap() {
        let text = std::fs::read_to_string(&p).unwrap();
        let changed = text.replacen("bob@localhost", "eve@localhost", 1);
        std::fs::write(copy.join(p.file_name().unwrap()), changed).unwrap();
    }
    let out = zorg(
        cwd,
        &[
            "audit",
            "verify",
            "-c",
            config,
            "--dir",
            copy.to_str().unwrap(),
            "--public-key",
            public,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("line 2 (seq 2): the record was changed"),
        "{}",
        stdout(&out)
    );

    // While the log cannot be written (another process holds its lock), nothing is done.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(audit.join("audit.lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = zorg(
        cwd,
        &[
            "user",
            "add",
            "carol@localhost",
            "-c",
            config,
            "--password-stdin",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot write the audit log"),
        "{}",
        stderr(&out)
    );
    drop(lock);
    let out = ok(&["user", "list", "-c", config], "");
    assert!(
        !stdout(&out).contains("carol"),
        "carol was created unaudited"
    );
}
