//! Durability of the real binary: a message accepted for an offline account survives
//! `kill -9`, and SIGTERM closes every stream with `<system-shutdown/>`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Client, Scram};
use zorg_proto::ns;

const ZORG: &str = env!("CARGO_BIN_EXE_zorg");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path) -> (std::path::PathBuf, u16) {
    let port = free_port();
    let direct = free_port();
    let cfg = dir.join("zorg.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"data\"\n[[domain]]\nname = \"localhost\"\n[c2s]\nlisten = [\"127.0.0.1:{port}\"]\ndirect_tls = [\"127.0.0.1:{direct}\"]\nsasl_iterations = 4096\n"
        ),
    )
    .unwrap();
    (cfg, port)
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

async fn serve(cfg: &Path, port: u16) -> Child {
    let mut child = Command::new(ZORG)
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("server did not start listening");
}

async fn login(port: u16, user: &str, res: &str) -> Client {
    let mut c =
        Client::connect_starttls(format!("127.0.0.1:{port}").parse().unwrap(), "localhost").await;
    c.auth_scram(user, "pass", Scram::Sha256, None)
        .await
        .unwrap();
    c.bind(Some(res)).await;
    c
}

#[tokio::test]
async fn offline_messages_survive_kill_9() {
    let dir = common::temp_dir("kill9");
    let (cfg, port) = write_config(&dir);
    add_user(&cfg, "alice@localhost");
    add_user(&cfg, "bob@localhost");
    let mut server = serve(&cfg, port).await;

    let mut alice = login(port, "alice", "a").await;
    for i in 0..20 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='k{i}'><body>dose {i}</body></message>"
            ))
            .await;
    }
    // The session handles stanzas in order and stores each offline message before the next:
    // the ping's answer means all 20 were accepted and are on disk.
    let r = alice
        .iq(
            "<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
            "sync",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));

    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    drop(alice);

    let mut server = serve(&cfg, port).await;
    let mut bob = login(port, "bob", "b").await;
    bob.send("<presence/>").await;
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
    server.kill().unwrap();
    server.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_sends_system_shutdown_and_exits_cleanly() {
    let dir = common::temp_dir("sigterm");
    let (cfg, port) = write_config(&dir);
    add_user(&cfg, "alice@localhost");
    let mut server = serve(&cfg, port).await;
    let mut alice = login(port, "alice", "a").await;
    alice.send("<presence/>").await;
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    alice.expect_stream_error("system-shutdown").await;
    let mut waited = 0;
    let code = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(waited < 100, "server did not exit after SIGTERM");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(code.success(), "exit status {code:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
