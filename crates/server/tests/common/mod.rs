//! A throwaway server for integration tests, with the scripted client (client.rs) and the
//! federation helpers (fed.rs).
//!
//! Tests read like transcripts: start a server on 127.0.0.1:0, log clients in, send XML, and
//! expect stanzas. Every wait is bounded.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zorg_server::config::Config;
use zorg_server::server::{RunningServer, start};
use zorg_server::storage::{AccountStore, ScramHash};

mod client;
pub mod fed;
pub mod mam;
pub mod transcript;

pub use client::*;

/// How long any single expectation waits.
pub const WAIT: Duration = Duration::from_secs(5);

/// A server with its own temporary data directory.
pub struct TestServer {
    pub running: Option<RunningServer>,
    pub dir: PathBuf,
    pub starttls: SocketAddr,
    pub direct: SocketAddr,
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A fresh temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("zorg-it-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A config for tests: loopback, port 0, fast SCRAM.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.data_dir = dir.to_path_buf();
    c.c2s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.c2s.direct_tls = vec!["127.0.0.1:0".parse().unwrap()];
    c.c2s.sasl_iterations = 4096;
    c
}

/// Waits until `cond` holds, checking every 20 ms; fails after 60 s. Conditions that depend on
/// background work or timers (a session ending, idle timeouts, the CRL poll) are waited for,
/// never assumed after a fixed sleep, so a loaded machine makes a test slower, not red.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 60 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a condition that needs to await (a storage read).
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    what: &str,
    cond: impl Fn() -> F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 60 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Holds the audit log's lock (in `dir`) as a stuck process would, so that the server cannot
/// write its audit log until the file is dropped.
pub fn hold_lock(dir: &std::path::Path) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("audit.lock"))
        .unwrap();
    f.lock().unwrap();
    f
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestServer {
        let dir = temp_dir("srv");
        let mut c = test_config(&dir);
        f(&mut c);
        Self::start_config(c, dir).await
    }

    pub async fn start_config(c: Config, dir: PathBuf) -> TestServer {
        let running = start(c).await.expect("server starts");
        let starttls = running.c2s_addrs[0];
        let direct = running.direct_tls_addrs[0];
        TestServer {
            running: Some(running),
            dir,
            starttls,
            direct,
        }
    }

    pub fn server(&self) -> &zorg_server::server::Server {
        &self.running.as_ref().unwrap().server
    }

    /// Creates an account with this password.
    pub async fn add_user(&self, bare: &str, password: &str) {
        let a = zorg_server::sasl::make_record(ScramHash::Sha1, password, 4096).unwrap();
        let b = zorg_server::sasl::make_record(ScramHash::Sha256, password, 4096).unwrap();
        self.server()
            .storage
            .create_account(bare, &[a, b])
            .await
            .unwrap();
    }

    /// Logs in `user@localhost` with SCRAM-SHA-256 and binds `resource`.
    pub async fn login(&self, user: &str, resource: &str) -> Client {
        self.login_at("localhost", user, resource).await
    }

    /// Logs in `user@domain` with SCRAM-SHA-256 and binds `resource`.
    pub async fn login_at(&self, domain: &str, user: &str, resource: &str) -> Client {
        let mut c = Client::connect_starttls(self.starttls, domain).await;
        c.auth_scram(user, "pass", Scram::Sha256, None)
            .await
            .expect("login");
        c.bind_at(domain, Some(resource)).await;
        c
    }

    /// Like [`TestServer::login`] over a connection with a small receive buffer: a client that
    /// reads slowly fills it soon, and the server's queue for it after that.
    pub async fn login_small_buffer(&self, user: &str, resource: &str) -> Client {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        let tcp = sock.connect(self.starttls).await.unwrap();
        let mut c = Client::starttls_over(tcp, "localhost", &[&rustls::version::TLS13]).await;
        c.auth_scram(user, "pass", Scram::Sha256, None)
            .await
            .expect("login");
        c.bind_at("localhost", Some(resource)).await;
        c
    }

    /// Connects and authenticates `user@localhost` (SCRAM-SHA-256) without restarting the
    /// stream: the caller binds or resumes (XEP-0198).
    pub async fn authenticate(&self, user: &str) -> Client {
        let mut c = Client::connect_starttls(self.starttls, "localhost").await;
        c.auth_scram(user, "pass", Scram::Sha256, None)
            .await
            .expect("login");
        c
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
