//! Issue 13 item 7: memory amplification before TLS. Four plain TCP connections to the
//! STARTTLS port each sent one element with a 32,000-byte `xmlns` and 50,000 empty children
//! (about 230 KB, under the stanza limit) and took the server from 16 MB to 6.3 GB, because every
//! child copied the namespace. Here the same attack, scaled down to run in a second, must leave
//! the server's memory (this test process is the server) bounded, every attacking stream must
//! end with `<policy-violation/>`, and a client must still log in and exchange a message.
//!
//! The only test in this file: it reads the resident size of the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::time::Duration;

use common::{Client, Scram, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zorg_proto::ns;

/// Resident and peak resident size of this process in bytes, from `/proc/self/status`.
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// One opening element declaring a namespace of `ns_len` bytes, then `children` empty
/// children inheriting it; never closed, as in the report.
fn attack(ns_len: usize, children: usize) -> Vec<u8> {
    let mut s = common::header("localhost");
    s.push_str("<a xmlns='urn:");
    s.push_str(&"x".repeat(ns_len - 4));
    s.push_str("'>");
    s.push_str(&"<b/>".repeat(children));
    s.into_bytes()
}

/// Sends `bytes` on a new plain connection and returns what the server answered before it
/// closed (bounded in time: the server must close by itself). Reads while writing: a server
/// that closes with bytes of ours unread resets the connection, and a reset discards what it
/// had sent but was not read yet.
async fn hostile(addr: std::net::SocketAddr, bytes: Vec<u8>) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = tcp.into_split();
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    // The server may close before everything is written: that is the point.
    let _ = w.write_all(&bytes).await;
    let got = reader.await.unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

fn max_bytes(features: &zorg_proto::Element) -> String {
    features
        .get_child("limits", ns::STREAM_LIMITS)
        .and_then(|l| l.get_child("max-bytes", ns::STREAM_LIMITS))
        .map(|m| m.text())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplification_before_tls_stays_bounded() {
    let t = TestServer::start().await;
    t.add_user("alice@localhost", "pass").await;
    t.add_user("bob@localhost", "pass").await;
    // Warm up (TLS, SCRAM, the database) so that what follows measures the attack alone.
    let mut bob = t.login("bob", "desk").await;
    bob.available().await;
    // Peak resident size from here on (writing 5 to clear_refs resets VmHWM, Linux ≥ 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (start, _) = rss();

    // The report's namespace (32,000 bytes, longer than any token allowed before authentication)
    // with fewer children, a shorter one still over the namespace cap (8,000 bytes × 10,000
    // children copied would be 80 MB), and two under the 1 KiB cap with 50,000 children each.
    let mut attacks = Vec::new();
    for bytes in [
        attack(32_000, 2_000),
        attack(8000, 10_000),
        attack(1000, 50_000),
        attack(1000, 50_000),
    ] {
        attacks.push(tokio::spawn(hostile(t.starttls, bytes)));
    }
    let mut answers = Vec::new();
    for a in attacks {
        answers.push(a.await.unwrap());
    }
    let (now, peak) = rss();
    let grew = peak.saturating_sub(start);
    println!(
        "RSS before {} KiB, after {} KiB, peak {} KiB",
        start / 1024,
        now / 1024,
        peak / 1024
    );
    // Four unauthenticated streams may hold a few hundred KiB between them; 32 MB leaves room
    // for the runtime's own growth. Without the fix this is 320 MB and more.
    assert!(
        grew < 32 * 1024 * 1024,
        "the server grew by {} MiB under the attack",
        grew >> 20
    );
    for a in &answers {
        assert!(
            a.contains("<policy-violation"),
            "each attacking stream ends with policy-violation: {a}"
        );
    }

    // Before authentication stanzas are small: 10 KB of STARTTLS is refused, not answered.
    let mut big = common::header("localhost");
    big.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
    big.push_str(&" ".repeat(10_000));
    big.push_str("</starttls>");
    let a = hostile(t.starttls, big.into_bytes()).await;
    assert!(
        a.contains("<policy-violation") && !a.contains("<proceed"),
        "a 10 KB stanza before authentication: {a}"
    );

    // A normal client still gets in. Before authentication it is told the small limit
    // (XEP-0478), afterwards the full one.
    let mut alice = Client::connect_starttls(t.starttls, "localhost").await;
    assert_eq!(max_bytes(alice.features.as_ref().unwrap()), "8192");
    alice
        .auth_scram("alice", "pass", Scram::Sha256, None)
        .await
        .expect("login");
    alice.bind(Some("phone")).await;
    assert_eq!(max_bytes(alice.features.as_ref().unwrap()), "262144");
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>still here</body></message>")
        .await;
    let m = bob
        .expect("alice's message", |e| {
            e.is("message", ns::CLIENT) && e.attr("id") == Some("m1")
        })
        .await;
    assert_eq!(
        m.get_child("body", ns::CLIENT).map(|b| b.text()).as_deref(),
        Some("still here")
    );
    t.stop().await;
}
