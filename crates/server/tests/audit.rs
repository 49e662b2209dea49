//! The NEN 7513 audit trail, from the outside: each act a client or a peer server performs is
//! found in the log with the right fields, the log verifies, no message body is ever in it,
//! and when the log cannot be written the server refuses what would go unaudited.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::Path;
use std::time::Duration;

use common::fed::{Ca, online, pair, raw_connect};
use common::{Client, Scram, TestServer, WAIT, hold_lock};
use zorg_proto::ns;
use zorg_server::audit::event::{
    Actor, AuthFailure, AuthMechanism, Delivery, Direction, KeyKind, LinkAuth, LinkRefusal,
    MessageKind,
};
use zorg_server::audit::record::{self, Record};
use zorg_server::audit::sign::Signer;
use zorg_server::audit::{Event, log, verify};

/// Every record in the log of `dir`, in order (the tests verify the log besides).
fn records(dir: &Path) -> Vec<Record> {
    log::records(dir).unwrap()
}

fn audit_dir(t: &TestServer) -> std::path::PathBuf {
    t.server().config.audit_dir()
}

/// Waits (bounded) until a record matching `f` is in the log, and returns it.
async fn find(dir: &Path, what: &str, f: impl Fn(&Event) -> bool) -> Record {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(r) = records(dir).into_iter().find(|r| f(&r.event)) {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in the audit log: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops the server (keeping its directory) and checks the whole log: it verifies against
/// the signing key, ends with the stop and a checkpoint, and holds no message body.
async fn stop_and_check(mut t: TestServer, secret: &str) -> Vec<Record> {
    let dir = audit_dir(&t);
    let key = t.server().config.audit_signing_key();
    t.running.take().unwrap().shutdown().await;
    let recs = records(&dir);
    let n = recs.len();
    assert!(
        matches!(recs[n - 2].event, Event::ServerStopped {}),
        "{:?}",
        recs[n - 2]
    );
    assert!(matches!(recs[n - 1].event, Event::Checkpoint(_)));
    let signer = Signer::load(&key).unwrap();
    let rep = verify::verify(&dir, None, &[signer.public_key().to_owned()]).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(
        rep.unsigned(),
        0,
        "the shutdown checkpoint covers everything"
    );
    for (_, p) in log::segments(&dir).unwrap() {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(!text.contains(secret), "a message body is in the audit log");
    }
    let _ = std::fs::remove_dir_all(&t.dir);
    recs
}

#[tokio::test]
async fn logins_sessions_messages_and_archive_reads_are_recorded() {
    let t = TestServer::start_with(|c| c.registration.enabled = true).await;
    let dir = audit_dir(&t);
    for u in ["alice", "bob", "carol"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
    // The start: the server, its new checkpoint key and its new message key.
    let first = records(&dir);
    assert!(matches!(first[0].event, Event::ServerStarted { .. }));
    find(&dir, "signing key created", |e| {
        matches!(
            e,
            Event::KeyChanged {
                key: KeyKind::AuditSigningKey,
                ..
            }
        )
    })
    .await;
    find(&dir, "KEK created", |e| {
        matches!(
            e,
            Event::KeyChanged {
                key: KeyKind::KeyEncryptionKey,
                ..
            }
        )
    })
    .await;

    // A wrong password.
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert!(
        c.auth_scram("alice", "wrong", Scram::Sha256, None)
            .await
            .is_err()
    );
    find(&dir, "failed login", |e| {
        matches!(e, Event::AuthFailed { account: Some(a), mechanism: Some(AuthMechanism::ScramSha256), ip, reason: AuthFailure::NotAuthorized }
            if a == "alice@localhost" && ip.is_loopback())
    })
    .await;

    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;
    find(
        &dir,
        "alice's login",
        |e| matches!(e, Event::AuthSucceeded { account, .. } if account == "alice@localhost"),
    )
    .await;
    find(&dir, "alice's session", |e| {
        matches!(e, Event::SessionBound { session, resumed: false, .. } if session == "alice@localhost/desk")
    })
    .await;

    // A labelled message to bob, who is online.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='m1'><body>SECRET-BODY</body>\
             <securitylabel xmlns='urn:xmpp:sec-label:0'><displaymarking>RESTRICTED</displaymarking>\
             <label><esssecuritylabel xmlns='urn:xmpp:sec-label:ess:0'>MQYCAQQGASk=</esssecuritylabel></label>\
             </securitylabel></message>",
        )
        .await;
    bob.expect_next("m1", |e| e.attr("id") == Some("m1")).await;
    let acc = find(
        &dir,
        "m1 accepted",
        |e| matches!(e, Event::MessageAccepted { id: Some(i), .. } if i == "m1"),
    )
    .await;
    let Event::MessageAccepted {
        from,
        to,
        kind,
        size,
        labels,
        peer,
        ..
    } = acc.event
    else {
        unreachable!()
    };
    assert_eq!(
        (from.as_str(), to.as_str()),
        ("alice@localhost/desk", "bob@localhost")
    );
    assert_eq!((kind, peer), (MessageKind::Chat, None));
    assert!(size > 100, "{size}");
    assert_eq!(labels[0].marking.as_deref(), Some("RESTRICTED"));
    assert_eq!(
        labels[0].scheme.as_deref(),
        Some("urn:xmpp:sec-label:ess:0")
    );
    find(&dir, "m1 delivered", |e| {
        matches!(e, Event::MessageDelivered { id: Some(i), to, how: Delivery::Session, .. }
            if i == "m1" && to == "bob@localhost/pc")
    })
    .await;

    // Carol is offline: stored, then written at her login.
    alice
        .send(
            "<message to='carol@localhost' type='chat' id='m2'><body>SECRET-BODY</body></message>",
        )
        .await;
    find(&dir, "m2 stored", |e| {
        matches!(e, Event::MessageDelivered { id: Some(i), to, how: Delivery::Stored, .. }
            if i == "m2" && to == "carol@localhost")
    })
    .await;
    let mut carol = t.login("carol", "tab").await;
    carol.available().await;
    carol
        .expect_next("m2", |e| e.attr("id") == Some("m2"))
        .await;
    find(&dir, "m2 from storage", |e| {
        matches!(e, Event::MessageDelivered { id: Some(i), to, how: Delivery::FromStorage, .. }
            if i == "m2" && to == "carol@localhost/tab")
    })
    .await;

    // Nobody there: the bounce.
    alice
        .send(
            "<message to='nobody@localhost' type='chat' id='m3'><body>SECRET-BODY</body></message>",
        )
        .await;
    alice
        .expect_next("m3's bounce", |e| e.attr("id") == Some("m3"))
        .await;
    find(&dir, "m3 bounced", |e| {
        matches!(e, Event::MessageBounced { id: Some(i), condition, .. }
            if i == "m3" && condition == "service-unavailable")
    })
    .await;

    // Alice reads her archive.
    t.server().storage.flush_archive().await;
    let (items, _) = common::mam::query(&mut alice, "q1", "").await;
    assert!(!items.is_empty());
    let q = find(&dir, "archive read", |e| {
        matches!(e, Event::ArchiveQueried { .. })
    })
    .await;
    let Event::ArchiveQueried {
        by,
        archive,
        results,
        ..
    } = q.event
    else {
        unreachable!()
    };
    assert_eq!(
        (by.as_str(), archive.as_str()),
        ("alice@localhost/desk", "alice@localhost")
    );
    assert_eq!(results as usize, items.len());

    // Alice retracts m1: in her archive and in bob's, by her.
    alice
        .send(
            "<message to='bob@localhost' type='chat' id='r1'>\
             <retract xmlns='urn:xmpp:message-retract:1' id='m1'/></message>",
        )
        .await;
    bob.expect_next("the retraction", |e| e.attr("id") == Some("r1"))
        .await;
    for owner in ["alice@localhost", "bob@localhost"] {
        find(&dir, "retraction", |e| {
            matches!(e, Event::ArchiveRetracted { archive, by, message }
                if archive == owner && by == "alice@localhost" && message == "m1")
        })
        .await;
    }

    // In-band: bob changes his password; dave registers and then removes his account.
    let r = bob
        .iq("<iq type='set' id='pw'><query xmlns='jabber:iq:register'><username>bob</username><password>n3w</password></query></iq>", "pw")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    find(&dir, "password change", |e| {
        matches!(e, Event::AccountChanged { account, by: Actor::Account { jid, .. }, .. }
            if account == "bob@localhost" && jid == "bob@localhost/pc")
    })
    .await;
    let mut d = Client::connect_starttls(t.starttls, "localhost").await;
    let r = d
        .iq("<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>dave</username><password>pass</password></query></iq>", "r")
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    find(&dir, "registration", |e| {
        matches!(e, Event::AccountCreated { account, by: Actor::Account { ip, .. } }
            if account == "dave@localhost" && ip.is_loopback())
    })
    .await;
    let mut dave = t.login("dave", "x").await;
    let r = dave
        .iq(
            "<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>",
            "rm",
        )
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    find(
        &dir,
        "removal",
        |e| matches!(e, Event::AccountDeleted { account, .. } if account == "dave@localhost"),
    )
    .await;

    // Alice leaves.
    alice.send("</stream:stream>").await;
    find(
        &dir,
        "alice's session ended",
        |e| matches!(e, Event::SessionUnbound { session } if session == "alice@localhost/desk"),
    )
    .await;
    drop((bob, carol, dave, c, d));
    let recs = stop_and_check(t, "SECRET-BODY").await;
    // One chain without a gap from the start to the stop.
    for w in recs.windows(2) {
        assert!(w[1].seq == w[0].seq + 1);
    }
}

#[tokio::test]
async fn a_changed_configuration_and_archive_retention_are_recorded_at_the_next_start() {
    use zorg_server::storage::archive::NewEntry;
    let dir = common::temp_dir("audit-restart");
    let c = common::test_config(&dir);
    let t = TestServer::start_config(c.clone(), dir.clone()).await;
    t.add_user("alice@localhost", "pass").await;
    let old = record::now_ms() - 3 * 86_400_000;
    t.server()
        .storage
        .archive(NewEntry {
            owner: "alice@localhost".into(),
            id: "old".into(),
            stamp_unix_ms: old,
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
    t.server().storage.flush_archive().await;
    let mut t = t;
    t.running.take().unwrap().shutdown().await;

    let mut c2 = c;
    c2.archive.expiry = "1d".parse().unwrap();
    let t = TestServer::start_config(c2, dir.clone()).await;
    let adir = audit_dir(&t);
    let ch = find(&adir, "config change", |e| {
        matches!(e, Event::ConfigChanged { .. })
    })
    .await;
    let Event::ConfigChanged {
        previous_sha256,
        config_sha256,
    } = ch.event
    else {
        unreachable!()
    };
    assert_ne!(previous_sha256, config_sha256);
    find(
        &adir,
        "expiry",
        |e| matches!(e, Event::ArchiveDeleted { archive, count: 1, .. } if archive == "localhost"),
    )
    .await;
    // Two starts, two stops, one chain.
    let recs = stop_and_check(t, "never-sent").await;
    let starts = recs
        .iter()
        .filter(|r| matches!(r.event, Event::ServerStarted { .. }))
        .count();
    assert_eq!(starts, 2);
}

#[tokio::test]
async fn links_with_other_servers_are_recorded_accepted_and_refused() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair(&ca, ca.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='f1'><body>SECRET-BODY</body></message>")
        .await;
    bob.expect_next("f1", |e| e.attr("id") == Some("f1")).await;
    let (adir, bdir) = (audit_dir(&a), audit_dir(&b));
    find(&adir, "outbound link", |e| {
        matches!(e, Event::S2sAccepted { peer, direction: Direction::Outbound, method: LinkAuth::Certificate, certificate: Some(c), .. }
            if peer == "b.test" && !c.serial.is_empty() && c.issuer.contains("Auditor"))
    })
    .await;
    find(&adir, "forwarded", |e| {
        matches!(e, Event::MessageDelivered { id: Some(i), how: Delivery::Forwarded, .. } if i == "f1")
    })
    .await;
    find(&bdir, "inbound link", |e| {
        matches!(e, Event::S2sAccepted { peer, direction: Direction::Inbound, method: LinkAuth::Certificate, certificate: Some(_), ip: Some(_), .. }
            if peer == "a.test")
    })
    .await;
    find(&bdir, "accepted from a.test", |e| {
        matches!(e, Event::MessageAccepted { id: Some(i), peer: Some(p), .. } if i == "f1" && p == "a.test")
    })
    .await;

    // A server with a certificate from another CA knocks on b.test.
    let stranger = Ca::new("Stranger");
    let mut c = raw_connect(&stranger, &b).await;
    c.expect_stream_error("not-authorized").await;
    find(&bdir, "inbound refusal", |e| {
        matches!(e, Event::S2sRefused { peer, direction: Direction::Inbound, reason: LinkRefusal::UntrustedRoot, certificate: Some(c), .. }
            if peer == "c.test" && c.issuer.contains("Stranger"))
    })
    .await;
    drop((alice, bob));
    stop_and_check(a, "SECRET-BODY").await;
    stop_and_check(b, "SECRET-BODY").await;

    // a.test dials a b.test whose certificate it does not trust: refused, and the message bounces.
    let (a, b) = pair(&ca, stranger.issue("b", &["b.test"])).await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    alice
        .send("<message to='bob@b.test' type='chat' id='f2'><body>SECRET-BODY</body></message>")
        .await;
    alice
        .expect_next("f2's bounce", |e| e.attr("id") == Some("f2"))
        .await;
    let adir = audit_dir(&a);
    find(&adir, "outbound refusal", |e| {
        matches!(e, Event::S2sRefused { peer, direction: Direction::Outbound, reason: LinkRefusal::UntrustedRoot, .. } if peer == "b.test")
    })
    .await;
    find(&adir, "f2 bounced", |e| {
        matches!(e, Event::MessageBounced { id: Some(i), condition, .. } if i == "f2" && condition == "remote-server-not-found")
    })
    .await;
    drop(alice);
    stop_and_check(a, "SECRET-BODY").await;
    b.stop().await;
}

/// Sends `id` to bob, then a ping: the server handles a session's stanzas in order, so an
/// error for the message arrives before the ping's answer. Returns the error condition, if any.
async fn send_and_see(alice: &mut Client, id: &str) -> Option<String> {
    alice
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='{id}'><body>x</body></message>"
        ))
        .await;
    let ping = format!("ping-{id}");
    alice
        .send(&format!(
            "<iq type='get' id='{ping}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    let mut refused = None;
    loop {
        let e = alice.next().await;
        if e.attr("id") == Some(ping.as_str()) {
            return refused;
        }
        assert!(
            refused.is_none() && e.attr("id") == Some(id) && e.attr("type") == Some("error"),
            "expected the ping's answer or one error for {id}, got {}",
            e.to_xml("")
        );
        let err = e.get_child("error", ns::CLIENT).unwrap();
        refused = Some(err.children().next().unwrap().name().to_owned());
    }
}

/// Sends messages until one is refused (bounded), and returns its error condition and the
/// ids of the messages accepted before it. The pause between messages is what is under test:
/// the log's wait (`max_wait`) runs out while they are sent.
async fn until_refused(alice: &mut Client) -> (String, Vec<String>) {
    let mut accepted = Vec::new();
    for i in 0..100 {
        let id = format!("w{i}");
        if let Some(cond) = send_and_see(alice, &id).await {
            return (cond, accepted);
        }
        accepted.push(id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no message was refused while the audit log could not be written");
}

#[tokio::test]
async fn when_the_log_cannot_be_written_acts_are_refused_and_nothing_queued_is_lost() {
    let t = TestServer::start_with(|c| c.audit.max_wait = "1s".parse().unwrap()).await;
    t.add_user("alice@localhost", "pass").await;
    t.add_user("bob@localhost", "pass").await;
    let dir = audit_dir(&t);
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;
    let lock = hold_lock(&dir);
    let (cond, accepted) = until_refused(&mut alice).await;
    assert_eq!(cond, "internal-server-error");
    // A new login is refused too, with a temporary failure.
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    let e = c
        .auth_scram("bob", "pass", Scram::Sha256, None)
        .await
        .unwrap_err();
    assert!(e.contains("temporary-auth-failure"), "{e}");
    // The disk (here: the lock) comes back: what was queued meanwhile is written, in order,
    // and messages flow again.
    drop(lock);
    let mut k = 0;
    while send_and_see(&mut alice, &format!("after{k}"))
        .await
        .is_some()
    {
        k += 1;
        assert!(k < 50, "messages still refused after the log came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Bob gets each message accepted before the refusals (held while the log could not be
    // written, none lost), then the first one accepted after; none of the refused ones.
    for id in &accepted {
        bob.expect_next(id, |e| e.attr("id") == Some(id.as_str()))
            .await;
    }
    let after = format!("after{k}");
    bob.expect_next("after", |e| e.attr("id") == Some(after.as_str()))
        .await;
    bob.expect_silence(200).await;
    find(
        &dir,
        "the first message of the outage",
        |e| matches!(e, Event::MessageAccepted { id: Some(i), .. } if i == "w0"),
    )
    .await;
    drop((alice, bob, c));
    stop_and_check(t, "never-sent").await;
}

#[tokio::test]
async fn with_on_failure_continue_the_server_serves_on_unaudited() {
    let t = TestServer::start_with(|c| {
        c.audit.max_wait = "1s".parse().unwrap();
        c.audit.on_failure = zorg_server::config::OnFailure::Continue;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    t.add_user("bob@localhost", "pass").await;
    let dir = audit_dir(&t);
    let mut alice = t.login("alice", "desk").await;
    let mut bob = t.login("bob", "pc").await;
    bob.available().await;
    let lock = hold_lock(&dir);
    for i in 0..10 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='c{i}'><body>x</body></message>"
            ))
            .await;
        bob.expect_next("delivered", |e| {
            e.attr("id") == Some(format!("c{i}").as_str())
        })
        .await;
        // Nothing refused: the ping's answer is the next thing alice gets.
        alice.routed().await;
        // The pause is under test: the log's wait (max_wait, one second) runs out meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(lock);
    drop((alice, bob));
    t.stop().await;
}
