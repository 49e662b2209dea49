//! When storage cannot be written: a XEP-0198 acknowledgement waits until what it covers is
//! on disk, new messages are refused instead of acknowledged and lost, and everything resumes
//! by itself once the disk (or the lock) is back: for the database and for the audit log. A
//! full disk on a small tmpfs, and a damaged database file that is refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use common::{Client, TestServer};
use sqlx::Connection as _;
use zorg_proto::{Element, ns};

async fn users(t: &TestServer) {
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

fn chat(id: &str, text: &str) -> String {
    format!(
        "<message to='alice@localhost/desk' type='chat' id='{id}'><body>{text}</body></message>"
    )
}

fn condition(e: &Element) -> String {
    e.get_child("error", ns::CLIENT)
        .and_then(|x| x.children().find(|c| c.ns() == ns::STANZA_ERRORS))
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// Alice at her desk, bob on his phone with acknowledgements enabled.
async fn alice_and_bob(t: &TestServer) -> (Client, Client) {
    users(t).await;
    let mut alice = t.login("alice", "desk").await;
    alice.available().await;
    let mut bob = t.login("bob", "phone").await;
    bob.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    assert!(bob.next().await.is("enabled", ns::SM));
    (alice, bob)
}

/// The transcript both failures share: m1 is delivered while the writer is stuck, bob's
/// `<r/>` is not answered until it is unstuck, m2 is refused with `refused` meanwhile, and
/// the acknowledgements then come: for m1, and on request for m2.
async fn acknowledged_only_when_durable(
    t: &TestServer,
    alice: &mut Client,
    bob: &mut Client,
    stuck: impl Fn() -> bool,
    unstick: impl FnOnce(),
    refused: &str,
) {
    bob.send(&chat("m1", "give 5 mg")).await;
    let m1 = alice.next().await;
    assert_eq!(m1.attr("id"), Some("m1"), "{}", m1.to_xml(""));
    bob.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    until("the writer noticed it cannot write", &stuck).await;
    // Refused, and the very next thing bob gets: no <a/> went out before it.
    bob.send(&chat("m2", "give 6 mg")).await;
    let e = bob.next().await;
    assert_eq!(e.attr("id"), Some("m2"), "{}", e.to_xml(""));
    assert_eq!(e.attr("type"), Some("error"));
    assert_eq!(condition(&e), refused, "{}", e.to_xml(""));
    unstick();
    let a = bob.next().await;
    assert!(a.is("a", ns::SM), "{}", a.to_xml(""));
    assert_eq!(a.attr("h"), Some("1"), "the count when bob asked: m1");
    bob.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = bob.next().await;
    assert_eq!(a.attr("h"), Some("2"), "m2 was handled (refused)");
    until("the writer recovered", || !stuck()).await;
    // And messages flow again, archived.
    bob.send(&chat("m3", "give 7 mg")).await;
    assert_eq!(alice.next().await.attr("id"), Some("m3"));
    let (items, _) = common::mam::query(alice, "q", "").await;
    let ids: Vec<_> = items
        .iter()
        .map(|(_, m)| m.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["m1", "m3"]);
    let _ = t;
}

#[tokio::test]
async fn an_acknowledgement_waits_for_the_archive_and_a_locked_database_refuses_new_messages() {
    let t = TestServer::start().await;
    let (mut alice, mut bob) = alice_and_bob(&t).await;
    // Another program holds the database's write lock (as a stuck backup might).
    let path = t.dir.join("zorg.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let storage = t.server().storage.clone();
    let holder = std::sync::Mutex::new(Some(other));
    acknowledged_only_when_durable(
        &t,
        &mut alice,
        &mut bob,
        || storage.is_failing(),
        || {
            // Dropping the connection rolls its transaction back and lets go of the lock.
            drop(holder.lock().unwrap().take());
        },
        "resource-constraint",
    )
    .await;
    t.stop().await;
}

#[tokio::test]
async fn an_acknowledgement_waits_for_the_audit_log_and_an_unwritable_log_refuses_messages() {
    let t = TestServer::start_with(|c| c.audit.max_wait = "1s".parse().unwrap()).await;
    let (mut alice, mut bob) = alice_and_bob(&t).await;
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(t.dir.join("audit").join("audit.lock"))
        .unwrap();
    lock.lock().unwrap();
    let audit = t.server().audit.clone();
    let holder = std::sync::Mutex::new(Some(lock));
    acknowledged_only_when_durable(
        &t,
        &mut alice,
        &mut bob,
        || !audit.available(),
        || {
            let l = holder.lock().unwrap().take().unwrap();
            l.unlock().unwrap();
        },
        "internal-server-error",
    )
    .await;
    t.stop().await;
}

/// A tmpfs of `size` mounted at `dir`, unmounted when dropped. `None` without the right to
/// mount (not root): the caller skips, saying so.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test]
async fn after_a_full_disk_messages_flow_again_without_a_restart() {
    let dir = common::temp_dir("fulldisk");
    let Some(fs) = Tmpfs::mount(&dir, "4m") else {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let mut c = common::test_config(&dir);
    c.audit.max_wait = "1s".parse().unwrap();
    let t = TestServer::start_config(c, dir.clone()).await;
    let (mut alice, mut bob) = alice_and_bob(&t).await;
    bob.send(&chat("m0", "before")).await;
    assert_eq!(alice.next().await.attr("id"), Some("m0"));
    // The disk fills up.
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    // Messages are refused (never acknowledged and lost) once the writers notice.
    let mut refused = 0;
    for i in 1..200 {
        bob.send(&chat(&format!("f{i}"), &"x".repeat(2000))).await;
        loop {
            let e = bob.next().await;
            if e.name() == "message" && e.attr("type") == Some("error") {
                refused += 1;
                break;
            }
            assert_ne!(e.name(), "message", "{}", e.to_xml(""));
        }
        if refused > 0 {
            break;
        }
        // Delivered: alice got it.
        assert_eq!(
            alice.next().await.attr("id").map(str::to_owned),
            Some(format!("f{i}"))
        );
    }
    assert!(refused > 0, "a full disk refused nothing");
    // Room again: without a restart, messages flow and are archived.
    std::fs::remove_file(&filler).unwrap();
    let storage = t.server().storage.clone();
    let audit = t.server().audit.clone();
    until("storage and audit recovered", || {
        !storage.is_failing() && audit.available()
    })
    .await;
    bob.send(&chat("after", "after")).await;
    loop {
        let e = alice.next().await;
        if e.attr("id") == Some("after") {
            break;
        }
    }
    let (items, _) = common::mam::query(&mut alice, "q", "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:2</value></field></x><set xmlns='http://jabber.org/protocol/rsm'><max>1</max><before/></set>").await;
    assert_eq!(items[0].1.attr("id"), Some("after"));
    t.stop().await;
    drop(fs);
}

#[tokio::test]
async fn a_damaged_database_is_refused_at_start_with_what_to_do() {
    let dir = common::temp_dir("damaged");
    let c = common::test_config(&dir);
    let t = TestServer::start_config(c.clone(), dir.clone()).await;
    users(&t).await;
    let mut bob = t.login("bob", "pc").await;
    for i in 0..50 {
        bob.send(&format!(
            "<message to='alice@localhost' type='chat' id='m{i}'><body>{}</body></message>",
            "x".repeat(500)
        ))
        .await;
    }
    bob.iq(
        "<iq type='get' id='s'><ping xmlns='urn:xmpp:ping'/></iq>",
        "s",
    )
    .await;
    let mut t = t;
    t.running.take().unwrap().shutdown().await;
    // One page of the offline store is overwritten, as a failing disk might.
    let path = dir.join("zorg.db");
    let (page_size, root): (i64, i64) = {
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let ps = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&mut db)
            .await
            .unwrap();
        let root = sqlx::query_scalar(
            "SELECT rootpage FROM sqlite_master WHERE name = 'offline_messages'",
        )
        .fetch_one(&mut db)
        .await
        .unwrap();
        db.close().await.unwrap();
        (ps, root)
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let start = ((root - 1) * page_size) as usize;
    for b in &mut bytes[start + 8..start + page_size as usize] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = match zorg_server::server::start(c).await {
        Ok(_) => panic!("a damaged database was opened"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains("backup"), "says what to do: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_retraction_that_cannot_be_audited_is_refused_not_applied() {
    let t = TestServer::start_with(|c| c.audit.max_wait = "1s".parse().unwrap()).await;
    let (_alice, mut bob) = alice_and_bob(&t).await;
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(t.dir.join("audit").join("audit.lock"))
        .unwrap();
    lock.lock().unwrap();
    // Something to record makes the writer find out that it cannot write.
    bob.send(&chat("m1", "hello")).await;
    let audit = t.server().audit.clone();
    until("the audit log is found unwritable", || !audit.available()).await;
    let server = t.running.as_ref().unwrap().server.clone();
    let parse = |xml: &str| zorg_proto::parse_element(xml, zorg_proto::Limits::default()).unwrap();
    let mut retraction = parse(
        "<message to='alice@localhost' from='bob@localhost/phone' type='chat' id='r1'>\
         <retract xmlns='urn:xmpp:message-retract:1' id='m1'/></message>",
    );
    use zorg_server::modules::mam::archiving;
    let r = archiving::prepare(
        &server,
        "bob@localhost",
        "alice@localhost",
        true,
        &mut retraction,
    )
    .await;
    assert!(r.is_err(), "a retraction went ahead unaudited");
    lock.unlock().unwrap();
    t.stop().await;
}
