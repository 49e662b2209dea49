//! The `zorg` command line as an operator uses it: the real binary, real files, real exit codes.

// A test crate: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{TempDir, ZORG, stderr, stdout, zorg};

#[test]
fn version_is_printed() {
    let dir = TempDir::new("version");
    let out = zorg(dir.path(), &["--version"], "");
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "zorg 0.1.0");
}

#[test]
fn the_example_config_is_ok() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../zorg.example.toml");
    let dir = TempDir::new("check-ok");
    let out = zorg(
        dir.path(),
        &["config", "check", example.to_str().unwrap()],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).trim_end().ends_with(": OK"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_config_has_every_problem_reported_with_its_line() {
    let dir = TempDir::new("check-bad");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "data_dir = \"data\"\n\
         [[domain]]\n\
         name = \"localhost\"\n\
         [c2s]\n\
         lisen = [\"127.0.0.1:5222\"]\n\
         [limits]\n\
         max_stanza_size = 10\n",
    )
    .unwrap();
    let out = zorg(dir.path(), &["config", "check", "bad.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:5: c2s.lisen:"), "{err}");
    assert!(err.contains("bad.toml:7: limits.max_stanza_size:"), "{err}");
    assert!(err.contains("between 4096"), "{err}");
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = TempDir::new("check-missing");
    let out = zorg(dir.path(), &["config", "check", "nope.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.toml"), "{}", stderr(&out));
}

#[test]
fn an_account_lives_and_dies() {
    let dir = TempDir::new("user");
    let config = dir.config("");
    let config = config.to_str().unwrap();
    let cwd = dir.path();

    // alice is added; the JID is normalised.
    let out = zorg(
        cwd,
        &[
            "user",
            "add",
            "Alice@LocalHost",
            "--config",
            config,
            "--password-stdin",
        ],
        "s3cret\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("alice@localhost"));
    assert!(dir.path().join("data/zorg.db").exists());

    // bob is added, without a trailing newline on stdin.
    let out = zorg(
        cwd,
        &[
            "user",
            "add",
            "bob@localhost",
            "-c",
            config,
            "--password-stdin",
        ],
        "hunter2",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = zorg(cwd, &["user", "list", "--config", config], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alice@localhost\nbob@localhost\n");
    let out = zorg(cwd, &["user", "list", "localhost", "--config", config], "");
    assert_eq!(stdout(&out), "alice@localhost\nbob@localhost\n");

    // Adding alice again fails and says what to do instead.
    let out = zorg(
        cwd,
        &[
            "user",
            "add",
            "alice@localhost",
            "--config",
            config,
            "--password-stdin",
        ],
        "other\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("zorg user passwd"),
        "{}",
        stderr(&out)
    );

    let out = zorg(
        cwd,
        &[
            "user",
            "passwd",
            "alice@localhost",
            "--config",
            config,
            "--password-stdin",
        ],
        "n3w\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // An empty password is refused.
    let out = zorg(
        cwd,
        &[
            "user",
            "passwd",
            "alice@localhost",
            "--config",
            config,
            "--password-stdin",
        ],
        "\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty"), "{}", stderr(&out));

    for jid in ["alice@localhost", "bob@localhost"] {
        let out = zorg(cwd, &["user", "del", jid, "--config", config], "");
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&format!("deleted account {jid}")));
    }
    let out = zorg(cwd, &["user", "list", "--config", config], "");
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");

    // Deleting or changing what does not exist fails.
    let out = zorg(
        cwd,
        &["user", "del", "alice@localhost", "--config", config],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no account alice@localhost"));
    let out = zorg(
        cwd,
        &[
            "user",
            "passwd",
            "alice@localhost",
            "--config",
            config,
            "--password-stdin",
        ],
        "x\n",
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn accounts_outside_the_served_domains_are_refused() {
    let dir = TempDir::new("domain");
    let config = dir.config("");
    let config = config.to_str().unwrap();
    for jid in ["alice@example.org", "localhost", "alice@localhost/phone"] {
        let out = zorg(
            dir.path(),
            &["user", "add", jid, "--config", config, "--password-stdin"],
            "pw\n",
        );
        assert_eq!(out.status.code(), Some(1), "{jid}");
        assert!(!stderr(&out).is_empty(), "{jid}");
    }
    let out = zorg(
        dir.path(),
        &[
            "user",
            "add",
            "alice@example.org",
            "--config",
            config,
            "--password-stdin",
        ],
        "pw\n",
    );
    assert!(stderr(&out).contains("does not host"), "{}", stderr(&out));
    assert!(!dir.path().join("data/zorg.db").exists());
}

#[test]
fn without_a_terminal_the_password_must_come_from_stdin() {
    let dir = TempDir::new("notty");
    let config = dir.config("");
    let out = zorg(
        dir.path(),
        &[
            "user",
            "add",
            "alice@localhost",
            "--config",
            config.to_str().unwrap(),
        ],
        "pw\npw\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn without_config_the_data_dir_is_zorg_data_in_the_working_directory() {
    let dir = TempDir::new("default");
    let out = zorg(
        dir.path(),
        &["user", "add", "alice@localhost", "--password-stdin"],
        "pw\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("zorg-data/zorg.db").exists());
    let out = zorg(dir.path(), &["user", "list"], "");
    assert_eq!(stdout(&out), "alice@localhost\n");
}

#[test]
fn serve_prints_the_fingerprint_and_stops_cleanly_on_sigterm() {
    let dir = TempDir::new("serve");
    let config = dir.config("[log]\nformat = \"json\"\n");
    let mut child = Command::new(ZORG)
        .args(["serve", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Stop with") {
            break;
        }
    }
    assert!(banner.contains("Domain localhost"), "{banner}");
    assert!(
        banner.contains("generated a self-signed certificate"),
        "{banner}"
    );
    assert!(banner.contains("SHA-256 fingerprint: "), "{banner}");
    assert!(banner.contains("SHA-1 fingerprint: "), "{banner}");
    assert!(
        banner.contains("Clients (STARTTLS): 127.0.0.1:"),
        "{banner}"
    );
    assert!(banner.contains("zorg user add alice@localhost"), "{banner}");
    assert!(dir.path().join("data/certs/localhost.crt").exists());

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "zorg did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut logs).unwrap();
    assert_eq!(status.code(), Some(0), "{logs}");
    // JSON logs, one object per line, saying that it shut down.
    assert!(logs.lines().all(|l| l.starts_with('{')), "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");

    // A config file that does not exist is an error, not a reason to use the defaults.
    let out = zorg(
        dir.path(),
        &["serve", "--config", "/nonexistent/zorg.toml"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_reports_a_start_error_and_exits_1() {
    let dir = TempDir::new("serve-err");
    // The data directory is a file: nothing can be created in it.
    let config = dir.config("");
    std::fs::write(dir.path().join("data"), "not a directory").unwrap();
    let out = zorg(
        dir.path(),
        &["serve", "--config", config.to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot start the server"), "{err}");
    assert!(err.contains("data"), "{err}");
}

#[test]
fn keys_status_rotate_and_generate() {
    let dir = TempDir::new("keys");
    let cfg = dir.config("");
    let cfg = cfg.to_str().unwrap();
    let out = zorg(dir.path(), &["keys", "status", "--config", cfg], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no database"), "{}", stderr(&out));
    let out = zorg(
        dir.path(),
        &[
            "user",
            "add",
            "alice@localhost",
            "--password-stdin",
            "--config",
            cfg,
        ],
        "secret-pass\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // First use of a database without a configured key: the key file is made beside it.
    let out = zorg(dir.path(), &["keys", "status", "--config", cfg], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("fingerprint"), "{text}");
    assert!(text.contains("data/zorg.key"), "{text}");
    assert!(text.contains("   1  active"), "{text}");
    let key_file = dir.path().join("data/zorg.key");
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let hex = key_text.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(!text.contains(hex), "the key itself is never printed");

    let out = zorg(
        dir.path(),
        &["keys", "rotate", "--now", "--config", cfg],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("data key 2 is now active"),
        "{}",
        stdout(&out)
    );
    let text = stdout(&zorg(dir.path(), &["keys", "status", "--config", cfg], ""));
    assert!(text.contains("   2  active"), "{text}");
    assert!(
        !text.contains("   1  "),
        "the unused old key is deleted: {text}"
    );

    // A database whose key file went missing does not get a new key silently.
    std::fs::rename(&key_file, dir.path().join("moved.key")).unwrap();
    let out = zorg(dir.path(), &["keys", "status", "--config", cfg], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert!(!key_file.exists());
    // The wrong key is named as such.
    let other = dir.path().join("other.key");
    let out = zorg(
        dir.path(),
        &["keys", "generate", other.to_str().unwrap()],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&other).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = zorg(
        dir.path(),
        &["keys", "generate", other.to_str().unwrap()],
        "",
    );
    assert!(
        !out.status.success(),
        "an existing key file is never overwritten"
    );
    let cfg2 = dir.config(&format!("[storage]\nkey_file = \"{}\"\n", other.display()));
    let out = zorg(
        dir.path(),
        &["keys", "status", "--config", cfg2.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not the one this database was written with"),
        "{}",
        stderr(&out)
    );
    // With the right key from an environment variable, it opens.
    let cfg3 = dir.config("[storage]\nkey_env = \"ZORG_TEST_KEK\"\n");
    let out = Command::new(ZORG)
        .args(["keys", "status", "--config", cfg3.to_str().unwrap()])
        .env("ZORG_TEST_KEK", hex)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
