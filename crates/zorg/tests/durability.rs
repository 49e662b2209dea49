//! Durability of the real binary: a message accepted for an offline account survives
//! `kill -9`, and SIGTERM closes every stream with `<system-shutdown/>`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, Scram};
use zorg_proto::ns;

const ZORG: &str = env!("CARGO_BIN_EXE_zorg");

/// A config serving localhost on port 0 (the system picks free ports, read back from the
/// start-up summary), with JSON logs.
fn write_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("zorg.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"data\"\n[[domain]]\nname = \"localhost\"\n[c2s]\nlisten = [\"127.0.0.1:0\"]\n\
         direct_tls = [\"127.0.0.1:0\"]\nsasl_iterations = 4096\n[log]\nlevel = \"info\"\nformat = \"json\"\n",
    )
    .unwrap();
    cfg
}

fn add_user(cfg: &Path, jid: &str) {
    let mut child = Command::new(ZORG)
        .args(["user", "add", jid, "--password-stdin", "--config"])
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pass\n").unwrap();
    assert!(child.wait().unwrap().success());
}

/// A running `zorg serve`: the process, the STARTTLS address it reported, and its log lines
/// (read by a thread until the process ends, so that a full pipe never blocks it).
struct Serving {
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

fn serve(cfg: &Path) -> Serving {
    let mut child = Command::new(ZORG)
        .args(["serve", "--config"])
        .arg(cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::new()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The summary is printed once every listener is bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(a) = line.strip_prefix("Clients (STARTTLS): ") {
                    break a.parse().unwrap();
                }
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "zorg serve reported no STARTTLS address ({e}); its log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
    };
    Serving { child, addr, logs }
}

/// The kill -9 test relies on the database being durable at the moment of the kill, but a
/// process kill keeps the page cache: it passes even with `synchronous=OFF`. So the settings
/// are asserted as the running server has them: the journal mode from the file itself, the
/// per-connection `synchronous` from what the server read back from its connections at start.
async fn assert_durable(server: &Serving, data_dir: &Path) {
    // SQLite's header: bytes 18 and 19 (file format write and read versions) are 2 in WAL mode,
    // 1 with a rollback journal.
    let mut header = [0u8; 100];
    std::fs::File::open(data_dir.join("zorg.db"))
        .unwrap()
        .read_exact(&mut header)
        .unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!(header[18..20], [2, 2], "zorg.db is not in WAL mode");
    let find = || {
        server
            .logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("storage durability"))
            .cloned()
    };
    common::eventually("the server to log its storage durability", || {
        find().is_some()
    })
    .await;
    let line = find();
    let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    let fields = &v["fields"];
    assert_eq!(fields["journal_mode"], "wal", "{v}");
    assert_eq!(
        fields["writer_synchronous"], "FULL",
        "synchronous=FULL on the writer: {v}"
    );
    assert_eq!(
        fields["reader_synchronous"], "FULL",
        "synchronous=FULL on readers: {v}"
    );
    let warnings: Vec<_> = server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"level\":\"WARN\"") && l.contains("synchronous"))
        .cloned()
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

async fn login(addr: SocketAddr, user: &str, res: &str) -> Client {
    let mut c = Client::connect_starttls(addr, "localhost").await;
    c.auth_scram(user, "pass", Scram::Sha256, None)
        .await
        .unwrap();
    c.bind(Some(res)).await;
    c
}

#[tokio::test]
async fn offline_messages_survive_kill_9() {
    let dir = common::temp_dir("kill9");
    let cfg = write_config(&dir);
    add_user(&cfg, "alice@localhost");
    add_user(&cfg, "bob@localhost");
    let mut server = serve(&cfg);
    assert_durable(&server, &dir.join("data")).await;

    let mut alice = login(server.addr, "alice", "a").await;
    for i in 0..20 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='k{i}'><body>dose {i}</body></message>"
            ))
            .await;
    }
    // The session handles stanzas in order and stores each offline message before the next:
    // the ping's answer (next, so nothing bounced) means all 20 were accepted and are on disk.
    alice.routed().await;

    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(alice);

    let mut server = serve(&cfg);
    assert_durable(&server, &dir.join("data")).await;
    let mut bob = login(server.addr, "bob", "b").await;
    bob.available().await;
    for i in 0..20 {
        let m = bob
            .expect_next("offline message", |e| e.name() == "message")
            .await;
        assert_eq!(
            m.attr("id"),
            Some(format!("k{i}").as_str()),
            "in order, none lost"
        );
        assert_eq!(
            m.get_child("body", ns::CLIENT).unwrap().text(),
            format!("dose {i}")
        );
    }
    bob.expect_silence(200).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_sends_system_shutdown_and_exits_cleanly() {
    let dir = common::temp_dir("sigterm");
    let cfg = write_config(&dir);
    add_user(&cfg, "alice@localhost");
    let mut server = serve(&cfg);
    let mut alice = login(server.addr, "alice", "a").await;
    alice.available().await;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    alice.expect_stream_error("system-shutdown").await;
    let mut waited = 0;
    let code = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 100, "server did not exit after SIGTERM");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "exit status {code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
