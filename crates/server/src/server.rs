//! The running server: shared state, listeners, accept loops and orderly shutdown.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use zorg_proto::Limits;

use crate::config::Config;
use crate::federation::Federation;
use crate::modules::disco;
use crate::ratelimit::{ConnLimiter, ConnLimits, LoginLimits, LoginThrottle, WindowCounter};
use crate::router::{Outbound, Router};
use crate::storage::{OfflineStore, Storage, StorageError};
use crate::tls::trust::FederationTrust;
use crate::tls::{TlsError, TlsSetup};

mod listen;
use listen::{Kind, accept_loop, listen};

/// Why the server could not start. Each says what to do.
#[derive(Debug, Error)]
pub enum StartError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {why}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        why: String,
    },
    /// The database could not be opened or migrated.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Certificates.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The key-encryption key could not be had.
    #[error("encryption key: {0}")]
    Key(String),
    /// The audit log could not be opened (and `[audit] enabled` is true).
    #[error("audit log: {0}")]
    Audit(String),
    /// Federation could not be set up (DNS resolver, DNSSEC trust anchors).
    #[error("federation: {0}")]
    Federation(String),
    /// A listener could not be bound.
    #[error(
        "cannot listen on {addr}: {why} (is another server running there? change [c2s] in the config)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
}

/// State shared by every connection.
pub struct Server {
    /// The configuration the server runs with.
    pub config: Config,
    /// The NEN 7513 audit trail: every login, message, archive read and link is recorded
    /// here, and refused when it cannot be (`[audit] on_failure`).
    pub audit: crate::audit::Audit,
    /// Persistent data.
    pub storage: Storage,
    /// Bound sessions.
    pub router: Router,
    /// Certificates and the rustls configuration.
    pub tls: TlsSetup,
    /// Accepts TLS on client connections.
    pub acceptor: TlsAcceptor,
    /// The served domains, lower-case.
    pub domains: HashSet<String>,
    /// Framing limits for every stream once the peer is authenticated.
    pub limits: Limits,
    /// Framing limits before the peer is authenticated (`[limits] pre_auth_stanza_size`):
    /// a connection that has proven nothing holds little.
    pub pre_auth_limits: Limits,
    /// Password checks per address, address and account, and account (reserved before each
    /// check: see `ratelimit::login`).
    pub login_throttle: LoginThrottle,
    /// New and unauthenticated client connections per address (before `unauthenticated`).
    pub c2s_per_ip: ConnLimiter,
    /// New and unauthenticated inbound server connections per address.
    pub s2s_per_ip: ConnLimiter,
    /// In-band registrations per client address (per hour).
    pub registrations_by_ip: WindowCounter<IpAddr>,
    /// Caps the number of connections that have not yet authenticated.
    pub unauthenticated: Arc<Semaphore>,
    /// Secret for SCRAM answers about unknown accounts (so they look like real ones).
    pub fake_secret: [u8; 32],
    /// XEP-0115 verification string of the server's disco#info.
    pub caps_ver: String,
    /// Blocklists of existing accounts, cached because every routed stanza checks them
    /// (XEP-0191); bounded by `[limits] account_cache_capacity`.
    pub blocklists: crate::cache::AccountCache<Vec<String>>,
    /// Accounts that may hold offline messages, with a counter bumped at every store: a login
    /// of any other account skips the offline query (see `message::deliver_offline`). Only this
    /// process stores offline messages, so the set is exact after it is read at start.
    pub offline_hints: dashmap::DashMap<String, u64>,
    /// XEP-0313 archiving preferences of existing accounts, cached because every archived
    /// message reads them; bounded by `[limits] account_cache_capacity`.
    pub archive_prefs: crate::cache::AccountCache<crate::storage::archive::Prefs>,
    /// XEP-0357: notification bursts and publishes awaiting the app server's answer.
    pub push: crate::modules::push::PushState,
    /// Server-to-server links, when `[federation] enabled`.
    pub federation: Option<Arc<Federation>>,
    /// Becomes `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

impl Server {
    /// Whether `domain` is served here.
    pub fn serves(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    /// The first configured domain (used when a client does not say which).
    pub fn default_domain(&self) -> &str {
        self.config
            .domains
            .first()
            .map(|d| d.name.as_str())
            .unwrap_or("localhost")
    }
}

/// A started server: its addresses and the means to stop it.
pub struct RunningServer {
    /// The shared state.
    pub server: Arc<Server>,
    /// STARTTLS client listeners, as bound (port 0 resolved).
    pub c2s_addrs: Vec<SocketAddr>,
    /// Direct-TLS client listeners, as bound.
    pub direct_tls_addrs: Vec<SocketAddr>,
    /// STARTTLS server-to-server listeners, as bound (empty without federation).
    pub s2s_addrs: Vec<SocketAddr>,
    /// Direct-TLS server-to-server listeners (XEP-0368), as bound.
    pub s2s_direct_tls_addrs: Vec<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// Opens the database in `data_dir` and unlocks it with the configured key-encryption key. A
/// new database without a configured key gets a generated key file beside it (never inside);
/// a database that already holds data keys never gets a new key silently.
pub async fn open_storage(config: &Config) -> Result<Storage, StartError> {
    let storage = Storage::open(&config.data_dir.join("zorg.db")).await?;
    let source = config.key_source();
    let kek = match source.load().map_err(|e| StartError::Key(e.to_string()))? {
        Some(k) => k,
        None => {
            let crate::crypto::KeySource::Default(path) = &source else {
                return Err(StartError::Key(format!("{source} gave no key")));
            };
            if storage.has_data_keys().await? {
                return Err(StartError::Key(format!(
                    "the database is encrypted, but its key file {} is missing; restore it from \
                     your key backup, or set [storage] key_file or key_env to where it is",
                    path.display()
                )));
            }
            let k = crate::crypto::generate_key_file(path)
                .map_err(|e| StartError::Key(e.to_string()))?;
            tracing::warn!(
                file = %path.display(),
                "generated a new key-encryption key for the stored messages; keep a copy of \
                 this file apart from the database backups: without it they cannot be read"
            );
            k
        }
    };
    storage.unlock(kek).await?;
    Ok(storage)
}

/// Opens the audit log (when `[audit] enabled`) and records the start, with any change of
/// configuration since the last one.
async fn start_audit(config: &Config) -> Result<crate::audit::Audit, StartError> {
    let Some(settings) = crate::audit::Settings::of(config) else {
        tracing::warn!(
            "[audit] enabled = false: nothing is audited (NEN 7513 requires an audit trail)"
        );
        return Ok(crate::audit::Audit::disabled());
    };
    // The configuration as the server reads it (defaults filled in), so that a change of a
    // default between versions counts as a change too.
    let text = toml::to_string(config).unwrap_or_default();
    let sha = crate::audit::record::hex(&crate::audit::record::sha256(text.as_bytes()));
    let domains = config.domains.iter().map(|d| d.name.clone()).collect();
    crate::audit::start(settings, sha, domains)
        .await
        .map_err(StartError::Audit)
}

/// Records a key-encryption key that is new, or different from the one of the last start.
async fn audit_kek(
    config: &Config,
    audit: &crate::audit::Audit,
    storage: &Storage,
) -> Result<(), StartError> {
    use crate::audit::event::{Event, KeyChange, KeyKind};
    if !audit.is_enabled() {
        return Ok(());
    }
    let id = storage.kek_id()?;
    use crate::audit::Remembered;
    let change = match crate::audit::remember(&config.audit_dir(), "kek", &id) {
        Remembered::Changed(_) => KeyChange::Replaced,
        Remembered::New => KeyChange::Created,
        Remembered::Same => return Ok(()),
    };
    let ev = Event::KeyChanged {
        key: KeyKind::KeyEncryptionKey,
        change,
        id,
        by: crate::audit::Actor::Server,
    };
    audit
        .record_durable(ev)
        .await
        .map_err(|e| StartError::Audit(e.to_string()))
}

/// Logs the journal mode and `synchronous` levels the database connections actually run with
/// (read back from them: a file system may refuse WAL without an error), and warns for each one
/// that lets an acknowledged write be lost at power loss. The kill -9 test reads this line.
async fn report_durability(storage: &Storage) -> Result<(), StartError> {
    let d = storage.durability().await?;
    tracing::info!(
        journal_mode = %d.journal_mode,
        writer_synchronous = crate::storage::synchronous_name(d.writer_synchronous),
        reader_synchronous = crate::storage::synchronous_name(d.reader_synchronous),
        "storage durability, as the database connections report it"
    );
    for problem in d.problems() {
        tracing::warn!("{problem}");
    }
    Ok(())
}

/// Starts the server: opens storage, loads or makes certificates, binds listeners.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::DataDir {
        path: config.data_dir.display().to_string(),
        why: e.to_string(),
    })?;
    let audit = start_audit(&config).await?;
    let storage = open_storage(&config).await?;
    storage.check_integrity().await?;
    report_durability(&storage).await?;
    audit_kek(&config, &audit, &storage).await?;
    let offline_hints = storage
        .offline_owners()
        .await?
        .into_iter()
        .map(|owner| (owner, 0))
        .collect();
    let doms: Vec<_> = config
        .domains
        .iter()
        .map(|d| (d.name.clone(), d.certificate.clone(), d.key.clone()))
        .collect();
    let tls = TlsSetup::load(&doms, &config.data_dir)?;
    let acceptor = TlsAcceptor::from(tls.server_config.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut fake_secret = [0u8; 32];
    aws_lc_rs::rand::fill(&mut fake_secret).map_err(|_| StartError::DataDir {
        path: "random".into(),
        why: "the system random generator failed".into(),
    })?;
    let l = &config.limits;
    let limits = Limits {
        max_stanza_size: l.max_stanza_size,
        max_depth: l.max_depth,
        max_attributes: l.max_attributes,
        max_elements: l.max_elements,
    };
    let pre_auth_limits = limits.before_authentication(l.pre_auth_stanza_size);
    let federation = if config.federation.enabled {
        let f = &config.federation;
        // The highest CRL numbers seen, so that an older CRL never brings a revoked peer back.
        let seen = config.data_dir.join("federation-crls.json");
        let trust = FederationTrust::load(&f.trust_anchors, &f.crls, &seen)?;
        let crls = trust.verifiers().crl_count;
        tracing::info!(
            anchors = f.trust_anchors.len(),
            crls,
            "federation trust loaded"
        );
        let dns = crate::federation::dns::Dns::new(f).map_err(StartError::Federation)?;
        Some(Arc::new(Federation::new(
            f,
            trust,
            dns,
            l.max_unauthenticated as usize,
        )))
    } else {
        None
    };
    let server = Arc::new(Server {
        domains: config.domains.iter().map(|d| d.name.clone()).collect(),
        login_throttle: LoginThrottle::new(LoginLimits::of(l)),
        c2s_per_ip: ConnLimiter::new(ConnLimits::c2s(l), "client"),
        s2s_per_ip: ConnLimiter::new(ConnLimits::s2s(&config.s2s), "server"),
        registrations_by_ip: WindowCounter::new(
            config.registration.per_ip_per_hour,
            Duration::from_secs(3600),
        ),
        unauthenticated: Arc::new(Semaphore::new(l.max_unauthenticated as usize)),
        caps_ver: disco::server_caps_ver(&config),
        limits,
        pre_auth_limits,
        storage,
        router: Router::new(),
        tls,
        acceptor,
        fake_secret,
        blocklists: crate::cache::AccountCache::new(l.account_cache_capacity, Vec::len),
        offline_hints,
        archive_prefs: crate::cache::AccountCache::new(l.account_cache_capacity, |p| {
            p.always.len() + p.never.len()
        }),
        push: Default::default(),
        federation,
        shutdown: shutdown_rx,
        audit,
        config,
    });
    let mut tasks = JoinSet::new();
    let mut c2s_addrs = Vec::new();
    let mut direct_tls_addrs = Vec::new();
    let mut s2s_addrs = Vec::new();
    let mut s2s_direct_tls_addrs = Vec::new();
    let none = Vec::new();
    let s2s = |addrs| {
        if server.federation.is_some() {
            addrs
        } else {
            &none
        }
    };
    for (addrs, kind, out) in [
        (&server.config.c2s.listen, Kind::C2s, &mut c2s_addrs),
        (
            &server.config.c2s.direct_tls,
            Kind::C2sDirect,
            &mut direct_tls_addrs,
        ),
        (s2s(&server.config.s2s.listen), Kind::S2s, &mut s2s_addrs),
        (
            s2s(&server.config.s2s.direct_tls),
            Kind::S2sDirect,
            &mut s2s_direct_tls_addrs,
        ),
    ] {
        for addr in addrs {
            let listener = listen(*addr).map_err(|e| StartError::Bind {
                addr: *addr,
                why: e.to_string(),
            })?;
            let local = listener.local_addr().map_err(|e| StartError::Bind {
                addr: *addr,
                why: e.to_string(),
            })?;
            out.push(local);
            tasks.spawn(accept_loop(server.clone(), listener, kind));
        }
    }
    tasks.spawn(crate::modules::mam::retention::expire(server.clone()));
    tasks.spawn(crate::modules::mam::retention::rotate_keys(server.clone()));
    if let Some(fed) = &server.federation {
        tasks.spawn(crate::federation::reload_crls(
            fed.clone(),
            server.shutdown.clone(),
        ));
    }
    Ok(RunningServer {
        server,
        c2s_addrs,
        direct_tls_addrs,
        s2s_addrs,
        s2s_direct_tls_addrs,
        shutdown_tx,
        tasks,
    })
}

impl RunningServer {
    /// Stops accepting, closes every stream with `<system-shutdown/>`, waits for sessions to
    /// finish (bounded) and closes storage so that everything written is on disk.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        for s in self.server.router.all_sessions() {
            let _ = s.tx.try_send(Outbound::close(zorg_proto::StreamError::new(
                zorg_proto::StreamCondition::SystemShutdown,
            )));
        }
        while self.tasks.join_next().await.is_some() {}
        if let Some(fed) = &self.server.federation {
            // Outbound links settle their queues (bounces may touch storage) and leave the map
            // as they end; they see the shutdown too, so this is short.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while fed.link_count() > 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
        self.server.audit.close().await;
        self.server.storage.close().await;
    }

    /// Waits until the accept loops end (they end only on shutdown).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
