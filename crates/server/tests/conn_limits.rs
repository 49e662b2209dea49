//! Limits per address, played by an attacker on 127.0.0.2 (any of 127.0.0.0/8 can be bound as
//! a source on loopback) while the rightful users come from elsewhere: idle connections and
//! connection floods from one address do not lock anyone else out (clients and servers), and
//! password guessing is throttled atomically, per address and account, with growing delays,
//! without ever locking the rightful user out. Also: no password is checked that the audit log
//! cannot record, and the fake SCRAM salt of an unknown account does not tell `Bob` from `bob`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::fed::{Ca, online, pair_with, s2s_addr};
use common::{Client, Scram, TestServer, WAIT, hold_lock, tcp_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zorg_proto::ns;
use zorg_server::config::DurationStr;

const ATTACKER: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Opens `n` connections from `source` that say nothing, and returns those the server kept
/// open (the others it closed at once: they read end-of-file). `hello` is sent on each and the
/// server's first bytes awaited, so that "kept" is seen, not assumed after a pause.
async fn idle_connections(
    source: &str,
    addr: SocketAddr,
    n: usize,
    hello: &str,
) -> (Vec<TcpStream>, usize) {
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let Ok(mut tcp) = tcp_from(source, addr).await else {
            refused += 1;
            continue;
        };
        if tcp.write_all(hello.as_bytes()).await.is_err() {
            refused += 1;
            continue;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => kept.push(tcp),
            Ok(_) => refused += 1,
            Err(_) => panic!("the server neither answered nor closed a new connection"),
        }
    }
    (kept, refused)
}

fn c2s_hello() -> String {
    common::header("localhost")
}

fn s2s_hello(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' from='x.test' to='{to}' version='1.0'>"
    )
}

#[tokio::test]
async fn idle_connections_from_one_address_do_not_lock_out_another() {
    let t = TestServer::start_with(|c| {
        c.limits.max_unauthenticated = 40;
        c.limits.max_unauthenticated_per_ip = 8;
        c.limits.connection_burst_per_ip = 1000;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    // The attacker opens 100 connections and keeps them silent: 8 are kept, the rest closed.
    let (idle, refused) = idle_connections(ATTACKER, t.starttls, 100, &c2s_hello()).await;
    // Alice, from another address, logs in at once.
    let mut alice = t.login("alice", "desk").await;
    alice.available().await;
    assert_eq!(
        idle.len(),
        8,
        "the address's share of unauthenticated connections"
    );
    assert_eq!(refused, 92);
    assert_eq!(t.server().c2s_per_ip.unauthenticated(ip(ATTACKER)), 8);
    drop(idle);
    t.stop().await;
}

#[tokio::test]
async fn new_connections_per_address_are_rate_limited() {
    let t = TestServer::start_with(|c| {
        c.limits.connection_burst_per_ip = 5;
        c.limits.connection_rate_per_ip = 1;
    })
    .await;
    t.add_user("alice@localhost", "pass").await;
    // 20 connections as fast as the attacker can: the burst of 5 and at most one more per
    // second get through; the others are closed at once.
    let start = Instant::now();
    let (kept, refused) = idle_connections(ATTACKER, t.starttls, 20, &c2s_hello()).await;
    let allowed = 5 + start.elapsed().as_secs() as usize + 1;
    assert!(kept.len() >= 5, "the burst is allowed");
    assert!(
        kept.len() <= allowed,
        "{} kept, at most {allowed} allowed",
        kept.len()
    );
    assert_eq!(kept.len() + refused, 20);
    // Another address is not affected.
    let _alice = t.login("alice", "desk").await;
    t.stop().await;
}

#[tokio::test]
async fn idle_and_flooding_connections_to_the_s2s_port_do_not_shut_out_a_new_peer() {
    let ca = Ca::new("Auditor");
    // a.test is attacked; b.test is the new peer.
    let (a, b) = pair_with(&ca, ca.issue("b", &["b.test"]), |c| {
        c.limits.max_unauthenticated = 10;
        c.s2s.max_unauthenticated_per_ip = 4;
        c.s2s.connection_burst_per_ip = 1000;
    })
    .await;
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    let (idle, refused) = idle_connections(ATTACKER, s2s_addr(&a), 30, &s2s_hello("a.test")).await;
    // b.test connects to a.test for the first time (from 127.0.0.1) and delivers.
    bob.send("<message to='alice@a.test' type='chat' id='b1'><body>hi</body></message>")
        .await;
    let m = alice
        .expect("bob's message", |e| e.attr("id") == Some("b1"))
        .await;
    assert_eq!(m.attr("from"), Some("bob@b.test/desk"));
    assert_eq!(idle.len(), 4);
    assert_eq!(refused, 26);
    assert_eq!(a.server().s2s_per_ip.unauthenticated(ip(ATTACKER)), 4);
    drop(idle);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn new_connections_to_the_s2s_port_are_rate_limited_per_address() {
    let ca = Ca::new("Auditor");
    let (a, b) = pair_with(&ca, ca.issue("b", &["b.test"]), |c| {
        c.s2s.connection_burst_per_ip = 3;
        c.s2s.connection_rate_per_ip = 1;
    })
    .await;
    let start = Instant::now();
    let (kept, refused) = idle_connections(ATTACKER, s2s_addr(&a), 15, &s2s_hello("a.test")).await;
    let allowed = 3 + start.elapsed().as_secs() as usize + 1;
    assert!(
        kept.len() >= 3 && kept.len() <= allowed,
        "{} kept",
        kept.len()
    );
    assert_eq!(kept.len() + refused, 15);
    // The peer on 127.0.0.1 still gets through.
    let mut alice = online(&a, "a.test", "alice", "phone").await;
    let mut bob = online(&b, "b.test", "bob", "desk").await;
    bob.send("<message to='alice@a.test' type='chat' id='b1'><body>hi</body></message>")
        .await;
    alice
        .expect("bob's message", |e| e.attr("id") == Some("b1"))
        .await;
    drop(kept);
    a.stop().await;
    b.stop().await;
}

/// 50 connections past TLS, then 50 guesses at once (SCRAM, or PLAIN whose check runs on
/// another thread): returns how many were checked (`not-authorized`).
async fn parallel_guesses(plain: bool) -> usize {
    let t = TestServer::start_with(|c| {
        c.c2s.allow_plain = plain;
        c.limits.login_failures_per_ip_account = 3;
        c.limits.login_failures_per_ip = 1000;
        // The reservation alone must hold; delays are tested below.
        c.limits.login_delay = DurationStr::ZERO;
        c.limits.max_unauthenticated_per_ip = 100;
    })
    .await;
    t.add_user("alice@localhost", "secret").await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(Client::connect_starttls_from(ATTACKER, t.starttls, "localhost").await);
    }
    let mut guesses = tokio::task::JoinSet::new();
    for (n, mut c) in clients.into_iter().enumerate() {
        guesses.spawn(async move {
            let pw = format!("guess{n}");
            let r = if plain {
                c.auth_plain("alice", &pw).await
            } else {
                c.auth_scram("alice", &pw, Scram::Sha256, None).await
            };
            r.unwrap_err()
        });
    }
    let (mut checked, mut refused) = (0, 0);
    while let Some(r) = guesses.join_next().await {
        match r.unwrap().as_str() {
            "not-authorized" => checked += 1,
            "temporary-auth-failure" => refused += 1,
            other => panic!("unexpected answer {other}"),
        }
    }
    assert_eq!(checked + refused, 50);
    t.stop().await;
    checked
}

#[tokio::test]
async fn parallel_guesses_get_at_most_the_allowance_checked() {
    for plain in [false, true] {
        let checked = parallel_guesses(plain).await;
        assert!(
            (1..=3).contains(&checked),
            "{checked} guesses were checked (PLAIN: {plain}); the allowance is 3"
        );
    }
}

#[tokio::test]
async fn the_rightful_user_logs_in_from_elsewhere_while_an_attacker_hammers_the_account() {
    let t = TestServer::start_with(|c| {
        c.limits.login_failures_per_ip_account = 2;
        c.limits.login_failures_per_account = 2;
        c.limits.login_account_delay_max = DurationStr::from_secs(1);
    })
    .await;
    t.add_user("alice@localhost", "secret").await;
    // The attacker guesses until refused (bounded): two guesses are checked, then even the
    // right password is refused unchecked from there.
    let mut answers = Vec::new();
    for n in 0..4 {
        let mut c = Client::connect_starttls_from(ATTACKER, t.starttls, "localhost").await;
        let pw = format!("guess{n}");
        answers.push(
            c.auth_scram("alice", &pw, Scram::Sha256, None)
                .await
                .unwrap_err(),
        );
    }
    assert_eq!(
        answers,
        [
            "not-authorized",
            "not-authorized",
            "temporary-auth-failure",
            "temporary-auth-failure"
        ]
    );
    let mut c = Client::connect_starttls_from(ATTACKER, t.starttls, "localhost").await;
    assert_eq!(
        c.auth_scram("alice", "secret", Scram::Sha256, None).await,
        Err("temporary-auth-failure".into())
    );
    let text = c.last_failure.as_ref().unwrap().get_child("text", ns::SASL);
    assert!(text.unwrap().text().contains("try again"));
    // A second attacking address adds pressure on the account.
    let mut c = Client::connect_starttls_from("127.0.0.3", t.starttls, "localhost").await;
    assert!(
        c.auth_scram("alice", "x", Scram::Sha256, None)
            .await
            .is_err()
    );
    // Alice, at her own address, gets in with her password: slowed down (the account is
    // under pressure) but never refused.
    let start = Instant::now();
    let mut alice = Client::connect_starttls(t.starttls, "localhost").await;
    alice
        .auth_scram("alice", "secret", Scram::Sha256, None)
        .await
        .expect("the rightful user is not locked out");
    assert!(start.elapsed() >= Duration::from_secs(1), "slowed down");
    alice.bind(Some("desk")).await;
    t.stop().await;
}

#[tokio::test]
async fn failed_answers_wait_longer_each_time() {
    let t = TestServer::start_with(|c| {
        c.limits.login_delay = DurationStr::from_secs(1);
        c.limits.login_failures_per_ip_account = 10;
    })
    .await;
    t.add_user("alice@localhost", "secret").await;
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    let mut waited = Vec::new();
    for n in 0..2 {
        let start = Instant::now();
        let pw = format!("guess{n}");
        assert_eq!(
            c.auth_scram("alice", &pw, Scram::Sha256, None).await,
            Err("not-authorized".into())
        );
        waited.push(start.elapsed());
    }
    // 1 s, then 2 s (lower bounds only: a loaded machine is slower, never faster).
    assert!(waited[0] >= Duration::from_secs(1), "{waited:?}");
    assert!(waited[1] >= Duration::from_secs(2), "{waited:?}");
    // The right password after that is answered without a delay of its own.
    c.auth_scram("alice", "secret", Scram::Sha256, None)
        .await
        .unwrap();
    t.stop().await;
}

#[tokio::test]
async fn no_password_is_checked_that_the_audit_log_cannot_record() {
    let t = TestServer::start_with(|c| {
        c.audit.max_wait = "1s".parse().unwrap();
        // Only the audit log refuses here, not the throttle.
        c.limits.login_delay = DurationStr::ZERO;
        c.limits.login_failures_per_ip_account = 100;
    })
    .await;
    t.add_user("alice@localhost", "secret").await;
    let lock = hold_lock(&t.server().config.audit_dir());
    // Until the server knows the log is down, a checked guess cannot be recorded: the stream
    // is closed without saying whether the password was right. Once it knows, it refuses
    // before checking, and says to try later. Never is a guess answered unaudited.
    let mut refused_before_check = false;
    for n in 0..20 {
        let mut c = Client::connect_starttls(t.starttls, "localhost").await;
        let pw = format!("guess{n}");
        match c.auth_scram("alice", &pw, Scram::Sha256, None).await {
            Err(e) if e == "stream:internal-server-error" => {}
            Err(e) if e == "temporary-auth-failure" => {
                let f = c.last_failure.as_ref().unwrap();
                let text = f.get_child("text", ns::SASL).unwrap().text();
                assert!(text.contains("cannot record logins"), "{text}");
                refused_before_check = true;
                break;
            }
            other => panic!("a guess was answered without an audit record: {other:?}"),
        }
    }
    assert!(refused_before_check);
    // The right password is refused the same way: nobody logs in unaudited.
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    assert_eq!(
        c.auth_scram("alice", "secret", Scram::Sha256, None).await,
        Err("temporary-auth-failure".into())
    );
    // The log comes back: alice logs in (bounded wait for the writer to recover).
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Client::connect_starttls(t.starttls, "localhost").await;
        if c.auth_scram("alice", "secret", Scram::Sha256, None)
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "logins still refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    t.stop().await;
}

/// The salt and iteration count SCRAM offers for `user` (the exchange is then aborted).
async fn scram_salt(t: &TestServer, user: &str) -> (String, String) {
    let mut c = Client::connect_starttls(t.starttls, "localhost").await;
    let first = B64.encode(format!("n,,n={user},r=abcdefghijklmnop"));
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
    ))
    .await;
    let ch = c.next().await;
    assert!(ch.is("challenge", ns::SASL), "{}", ch.to_xml(""));
    let server_first = String::from_utf8(B64.decode(ch.text().trim()).unwrap()).unwrap();
    let field = |k: &str| {
        server_first
            .split(',')
            .find_map(|p| p.strip_prefix(k))
            .unwrap()
            .to_owned()
    };
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    (field("s="), field("i="))
}

#[tokio::test]
async fn an_unknown_account_gets_one_salt_however_its_name_is_cased() {
    let t = TestServer::start().await;
    t.add_user("bob@localhost", "pass").await;
    // An existing account: one record, whatever the case.
    assert_eq!(scram_salt(&t, "Bob").await, scram_salt(&t, "bob").await);
    // An unknown one must behave the same, or the difference tells which accounts exist.
    assert_eq!(scram_salt(&t, "Carol").await, scram_salt(&t, "carol").await);
    assert_eq!(scram_salt(&t, "CAROL").await, scram_salt(&t, "carol").await);
    // And different unknown accounts still get different salts.
    assert_ne!(scram_salt(&t, "carol").await, scram_salt(&t, "dave").await);
    t.stop().await;
}
