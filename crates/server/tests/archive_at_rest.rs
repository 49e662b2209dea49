//! What the archive leaves on disk and how it ages: no plaintext in the database, account
//! deletion, retention per domain, and a data key rotated while the server runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use common::TestServer;
use common::mam::{body, query, rsm, users};

#[tokio::test]
async fn the_database_holds_no_plaintext_body_and_deleting_the_account_removes_its_archive() {
    let t = TestServer::start().await;
    users(&t).await;
    let mut bob = t.login("bob", "pc").await;
    let mut alice = t.login("alice", "desk").await;
    alice.available().await;
    bob.send("<message to='alice@localhost' type='chat'><body>ZORG-KNOWN-PLAINTEXT online</body></message>").await;
    alice.expect_next("online", |e| body(e).is_some()).await;
    drop(alice);
    common::eventually("alice's session to end", || {
        t.server().router.sessions("alice@localhost").is_empty()
    })
    .await;
    bob.send("<message to='alice@localhost' type='chat'><body>ZORG-KNOWN-PLAINTEXT offline</body></message>").await;
    // Stored offline, not bounced.
    bob.routed().await;
    let dir = t.dir.clone();
    let storage = t.server().storage.clone();
    storage.flush_archive().await;
    assert_eq!(
        zorg_server::storage::OfflineStore::offline_count(&storage, "alice@localhost")
            .await
            .unwrap(),
        1
    );
    // `zorg user del` (delete_account): alice's archive and offline messages go; bob's stay.
    let all = zorg_server::storage::archive::ArchiveQuery::new(
        zorg_server::storage::archive::Page::Forward(None),
        10,
    );
    assert_eq!(
        storage
            .query_archive("alice@localhost", &all)
            .await
            .unwrap()
            .count,
        2
    );
    assert!(
        zorg_server::storage::AccountStore::delete_account(&storage, "alice@localhost")
            .await
            .unwrap()
    );
    assert_eq!(
        storage
            .query_archive("alice@localhost", &all)
            .await
            .unwrap()
            .count,
        0
    );
    assert_eq!(
        storage
            .query_archive("bob@localhost", &all)
            .await
            .unwrap()
            .count,
        2
    );
    let mut t = t;
    t.running.take().unwrap().shutdown().await;
    assert!(
        dir.join("zorg.key").exists(),
        "the key file is generated beside the database"
    );
    let mut scanned = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            scanned += bytes.len();
            assert!(
                !bytes.windows(20).any(|w| w == b"ZORG-KNOWN-PLAINTEXT"),
                "plaintext in {}",
                path.display()
            );
        }
    }
    assert!(
        scanned > 10_000,
        "the database was scanned ({scanned} bytes)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn expired_messages_are_deleted_per_domain_by_the_background_task() {
    use zorg_server::storage::archive::{ArchiveQuery, NewEntry, Page};
    let dir = common::temp_dir("retention");
    let mut c = common::test_config(&dir);
    c.domains = vec![
        zorg_server::config::DomainConfig {
            archive_expiry: Some("1h".parse().unwrap()),
            ..zorg_server::config::DomainConfig::new("short.test")
        },
        zorg_server::config::DomainConfig::new("long.test"),
    ];
    c.archive.expiry = "30d".parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    {
        let db = zorg_server::server::open_storage(&c).await.unwrap();
        for owner in ["a@short.test", "b@long.test"] {
            zorg_server::storage::AccountStore::create_account(&db, owner, &[])
                .await
                .unwrap();
        }
        for (owner, age_h, id) in [
            ("a@short.test", 2, "old"),
            ("a@short.test", 0, "new"),
            ("b@long.test", 2, "kept"),
            ("b@long.test", 24 * 31, "gone"),
        ] {
            db.archive(NewEntry {
                owner: owner.into(),
                id: id.into(),
                stamp_unix_ms: now - age_h * 3_600_000,
                with_bare: "x@elsewhere.test".into(),
                with_resource: String::new(),
                outgoing: false,
                msg_id: None,
                origin_id: None,
                corrects: None,
                stanza: "<message><body>x</body></message>".into(),
            })
            .await
            .unwrap();
        }
        db.close().await;
    }
    let t = TestServer::start_config(c, dir).await;
    let all = ArchiveQuery::new(Page::Forward(None), 10);
    let ids = |owner: &'static str| {
        let storage = t.server().storage.clone();
        let all = all.clone();
        async move {
            storage
                .query_archive(owner, &all)
                .await
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    let deadline = std::time::Instant::now() + common::WAIT;
    while ids("a@short.test").await.len() > 1 || ids("b@long.test").await.len() > 1 {
        assert!(std::time::Instant::now() < deadline, "expiry did not run");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ids("a@short.test").await, ["new"]);
    assert_eq!(ids("b@long.test").await, ["kept"]);
    t.stop().await;
}

#[tokio::test]
async fn a_key_rotated_by_another_process_is_picked_up_and_old_records_re_encrypted() {
    let t = TestServer::start_with(|c| c.storage.key_poll = "1s".parse().unwrap()).await;
    users(&t).await;
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    for i in 0..20 {
        bob.send(&format!(
            "<message to='alice@localhost/desk' type='chat'><body>before {i}</body></message>"
        ))
        .await;
    }
    for _ in 0..20 {
        alice.expect_next("a message", |e| body(e).is_some()).await;
    }
    t.server().storage.flush_archive().await;
    // `zorg keys rotate` from another process: its own handle on the same database.
    let config = zorg_server::config::Config {
        data_dir: t.dir.clone(),
        ..Default::default()
    };
    let other = zorg_server::server::open_storage(&config).await.unwrap();
    assert_eq!(other.rotate_data_key().await.unwrap(), 2);
    other.close().await;
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let keys = t.server().storage.key_status().await.unwrap();
        if keys.len() == 1 && keys[0].id == 2 {
            assert_eq!(keys[0].archived, 40, "both archives, under the new key");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not re-encrypted: {keys:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bob.send("<message to='alice@localhost/desk' type='chat'><body>after</body></message>")
        .await;
    alice.expect_next("after", |e| body(e).is_some()).await;
    t.server().storage.flush_archive().await;
    let (items, fin) = query(&mut alice, "q", "").await;
    assert_eq!(rsm(&fin, "count").as_deref(), Some("21"));
    assert_eq!(body(&items[0].1).as_deref(), Some("before 0"));
    assert_eq!(body(&items[20].1).as_deref(), Some("after"));
    t.stop().await;
}
