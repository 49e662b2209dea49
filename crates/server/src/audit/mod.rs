//! The NEN 7513 audit trail: typed events ([`event`]), written as a hash-chained, append-only
//! log ([`record`], [`log`]) with Ed25519-signed checkpoints ([`sign`]), checked by
//! [`verify`] and exported as JSON lines or FHIR R4 AuditEvents ([`export`], [`fhir`]).
//!
//! The stanza path never writes to disk itself: [`Audit::record`] puts the event in a bounded
//! queue and returns. One writer task takes whatever is queued, appends it in one write and
//! one `fdatasync` (group commit), and writes a signed checkpoint every
//! `[audit] checkpoint_interval` and at shutdown.
//!
//! When the log cannot be written (a full disk, an I/O error, another process holding the
//! lock) or the queue stays full for `[audit] max_wait`, `record` returns
//! [`AuditUnavailable`] and the caller refuses the act: a login fails with
//! `temporary-auth-failure`, a message bounces with `internal-server-error`, and so on
//! (`[audit] on_failure = "refuse"`, the default). The writer keeps what it could not write and
//! retries every second; nothing queued is dropped.

pub mod event;
pub mod export;
pub mod fhir;
pub mod fields;
pub mod log;
pub mod message;
pub mod record;
pub mod sign;
pub mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use event::{Actor, Event};

use crate::config::{Config, OnFailure};
use log::Log;
use sign::Signer;

/// Events queued for the writer at most; a producer that finds the queue full waits up to
/// `[audit] max_wait` (backpressure), then is refused.
const QUEUE: usize = 65_536;

/// Events written per group commit at most.
const BATCH: usize = 4096;

/// The audit log could not take the event in time: refuse the act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log cannot be written; the act was refused so that it does not go unaudited")]
pub struct AuditUnavailable;

enum Item {
    Event {
        ms: i64,
        ev: Event,
        done: Option<oneshot::Sender<()>>,
    },
    /// Write a checkpoint now, then answer.
    Checkpoint(oneshot::Sender<()>),
    /// Answer once everything queued before is on disk.
    Barrier(oneshot::Sender<()>),
    /// Write `ServerStopped` and a checkpoint, then stop.
    Close(oneshot::Sender<()>),
}

struct Inner {
    tx: mpsc::Sender<Item>,
    /// Set by the writer while appends fail; producers are refused without queueing.
    failed: AtomicBool,
    refuse: bool,
    max_wait: Duration,
    /// When a refusal was last logged (Unix ms), so a failing disk does not flood the log.
    last_warning: AtomicI64,
}

/// The handle the rest of the server records events through. Cheap to clone.
#[derive(Clone, Default)]
pub struct Audit {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

/// What [`start`] needs, from `[audit]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The log's directory.
    pub dir: PathBuf,
    /// The checkpoint key's file.
    pub signing_key: PathBuf,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// How long records are kept (`None`: for ever).
    pub retention: Option<Duration>,
    /// Refuse unaudited acts.
    pub refuse: bool,
    /// Bound on waiting for the queue or the lock.
    pub max_wait: Duration,
}

impl Settings {
    /// The settings of `config`, `None` when auditing is off.
    pub fn of(config: &Config) -> Option<Settings> {
        let a = &config.audit;
        a.enabled.then(|| Settings {
            dir: config.audit_dir(),
            signing_key: config.audit_signing_key(),
            checkpoint_interval: a.checkpoint_interval.get(),
            retention: (!a.retention.is_zero()).then(|| a.retention.get()),
            refuse: a.on_failure == OnFailure::Refuse,
            max_wait: a.max_wait.get(),
        })
    }
}

/// Opens the log, records the start (and any change of configuration or signing key since the
/// last one) with a checkpoint, and starts the writer. `config_sha256` identifies the
/// configuration in use.
pub async fn start(
    settings: Settings,
    config_sha256: String,
    domains: Vec<String>,
) -> Result<Audit, String> {
    let s = settings.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let (signer, made) = Signer::load_or_create(&s.signing_key).map_err(|e| e.to_string())?;
        if made {
            tracing::warn!(file = %s.signing_key.display(), public_key = signer.public_key(),
                "generated the audit checkpoint signing key; give its public key (`zorg audit key`) to your auditor");
        }
        let (mut log, repaired) = Log::open(&s.dir, s.max_wait)
            .map_err(|e| format!("audit log in {}: {e}", s.dir.display()))?;
        let now = record::now_ms();
        let mut events: Vec<(i64, Event)> = repaired.into_iter().map(|e| (now, e)).collect();
        events.push((
            now,
            Event::ServerStarted {
                version: env!("CARGO_PKG_VERSION").into(),
                domains,
                config_sha256: config_sha256.clone(),
            },
        ));
        if let Remembered::Changed(previous) = remember(&s.dir, "config_sha256", &config_sha256) {
            events.push((
                now,
                Event::ConfigChanged {
                    previous_sha256: previous,
                    config_sha256,
                },
            ));
        }
        let public = signer.public_key().to_owned();
        let key_change = match remember(&s.dir, "signing_key", &public) {
            _ if made => Some(event::KeyChange::Created),
            Remembered::Changed(_) => Some(event::KeyChange::Replaced),
            Remembered::New | Remembered::Same => None,
        };
        if let Some(change) = key_change {
            events.push((
                now,
                Event::KeyChanged {
                    key: event::KeyKind::AuditSigningKey,
                    change,
                    id: public,
                    by: Actor::Server,
                },
            ));
        }
        log.append(&events, Some(&signer))
            .map_err(|e| format!("audit log in {}: {e}", s.dir.display()))?;
        Ok((log, signer))
    })
    .await
    .map_err(|e| format!("audit log: {e}"))??;
    let (log, signer) = opened;
    let (tx, rx) = mpsc::channel(QUEUE);
    let inner = Arc::new(Inner {
        tx,
        failed: AtomicBool::new(false),
        refuse: settings.refuse,
        max_wait: settings.max_wait,
        last_warning: AtomicI64::new(0),
    });
    tokio::spawn(writer(log, Arc::new(signer), rx, inner.clone(), settings));
    Ok(Audit { inner: Some(inner) })
}

/// What [`remember`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remembered {
    /// Nothing was remembered under the key.
    New,
    /// The same value.
    Same,
    /// A different value, given here.
    Changed(String),
}

/// Compares `value` with what `dir/state.json` remembers under `key` and stores it. The file
/// only serves to notice changes between starts; the records themselves are the evidence.
pub fn remember(dir: &Path, key: &str, value: &str) -> Remembered {
    let path = dir.join("state.json");
    let mut state: BTreeMap<String, String> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let old = state.insert(key.to_owned(), value.to_owned());
    if old.as_deref() != Some(value) {
        let tmp = dir.join("state.json.tmp");
        let ok = serde_json::to_vec_pretty(&state)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|()| std::fs::rename(&tmp, &path).ok());
        if ok.is_none() {
            tracing::warn!(file = %path.display(), "could not write the audit state file");
        }
    }
    match old {
        None => Remembered::New,
        Some(o) if o == value => Remembered::Same,
        Some(o) => Remembered::Changed(o),
    }
}

impl Audit {
    /// An audit handle that records nothing (`[audit] enabled = false`).
    pub fn disabled() -> Audit {
        Audit { inner: None }
    }

    /// Whether events are recorded.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `ev`. Returns at once unless the queue is full (then waits up to
    /// `[audit] max_wait`). `Err` means: refuse the act.
    pub async fn record(&self, ev: Event) -> Result<(), AuditUnavailable> {
        let Some(i) = &self.inner else { return Ok(()) };
        let item = Item::Event {
            ms: record::now_ms(),
            ev,
            done: None,
        };
        i.send(item).await
    }

    /// Records `ev` and waits until it is on disk (at most `[audit] max_wait`): for rare acts
    /// that must not be lost to a crash (logins, account changes, links with other servers).
    pub async fn record_durable(&self, ev: Event) -> Result<(), AuditUnavailable> {
        let Some(i) = &self.inner else { return Ok(()) };
        let (done, written) = oneshot::channel();
        let item = Item::Event {
            ms: record::now_ms(),
            ev,
            done: Some(done),
        };
        i.send(item).await?;
        match tokio::time::timeout(i.max_wait, written).await {
            Ok(Ok(())) => Ok(()),
            _ => i.unavailable("an audit record was not written in time"),
        }
    }

    /// Whether an act may go ahead: false while the log cannot be written and
    /// `[audit] on_failure = "refuse"`. For rare acts that change stored data, checked before
    /// the change, which is then recorded with [`Audit::record_durable`].
    pub fn available(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|i| !i.refuse || !i.failed.load(Ordering::Acquire))
    }

    /// Queues `ev` without waiting, for code that cannot wait (a full queue counts as a
    /// failure at once). `Err` means: refuse the act.
    pub fn record_now(&self, ev: Event) -> Result<(), AuditUnavailable> {
        let Some(i) = &self.inner else { return Ok(()) };
        if i.failed.load(Ordering::Acquire) {
            return i.unavailable("the audit log cannot be written");
        }
        let item = Item::Event {
            ms: record::now_ms(),
            ev,
            done: None,
        };
        match i.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(_) => i.unavailable("the audit queue is full or closed"),
        }
    }

    /// Waits until every event queued so far is on disk: what a client may then be told was
    /// handled (XEP-0198 acknowledgements). While the log cannot be written this waits for the
    /// writer's retries. `Err` only when the log was closed.
    pub async fn barrier(&self) -> Result<(), AuditUnavailable> {
        let Some(i) = &self.inner else { return Ok(()) };
        let (done, written) = oneshot::channel();
        // Not `Inner::send`: while appends fail the barrier still has to wait behind the
        // events that were queued before, not be refused.
        i.tx.send(Item::Barrier(done))
            .await
            .map_err(|_| AuditUnavailable)?;
        written.await.map_err(|_| AuditUnavailable)
    }

    /// Writes a signed checkpoint now (tests, and operators through shutdown).
    pub async fn checkpoint(&self) -> Result<(), AuditUnavailable> {
        let Some(i) = &self.inner else { return Ok(()) };
        let (done, written) = oneshot::channel();
        i.send(Item::Checkpoint(done)).await?;
        match tokio::time::timeout(i.max_wait, written).await {
            Ok(Ok(())) => Ok(()),
            _ => i.unavailable("the checkpoint was not written in time"),
        }
    }

    /// Records the stop with a final checkpoint and stops the writer. Events recorded after
    /// this are refused.
    pub async fn close(&self) {
        let Some(i) = &self.inner else { return };
        let (done, written) = oneshot::channel();
        if i.tx.send(Item::Close(done)).await.is_ok() {
            // Bounded: a log that cannot be written must not hold up the shutdown for ever.
            let wait = i.max_wait.max(Duration::from_secs(5));
            if tokio::time::timeout(wait, written).await.is_err() {
                tracing::error!("the audit log could not be closed with a checkpoint");
            }
        }
    }
}

impl Inner {
    async fn send(&self, item: Item) -> Result<(), AuditUnavailable> {
        if self.failed.load(Ordering::Acquire) {
            return self.unavailable("the audit log cannot be written");
        }
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                match tokio::time::timeout(self.max_wait, self.tx.send(item)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => self.closed(),
                    Err(_) => self.unavailable("the audit queue stayed full"),
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.closed(),
        }
    }

    /// After [`Audit::close`] (the server is stopping): sessions that end now are refused
    /// quietly; the shutdown itself is recorded.
    fn closed(&self) -> Result<(), AuditUnavailable> {
        tracing::debug!("an audit record after the log was closed at shutdown");
        if self.refuse {
            Err(AuditUnavailable)
        } else {
            Ok(())
        }
    }

    fn unavailable(&self, why: &str) -> Result<(), AuditUnavailable> {
        let now = record::now_ms();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last > 10_000
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if self.refuse {
                tracing::error!(
                    "{why}: refusing acts that would go unaudited ([audit] on_failure = \"refuse\")"
                );
            } else {
                tracing::error!(
                    "{why}: continuing WITHOUT an audit trail ([audit] on_failure = \"continue\")"
                );
            }
        }
        if self.refuse {
            Err(AuditUnavailable)
        } else {
            Ok(())
        }
    }
}

/// The writer task: group commit of whatever is queued, checkpoints on a timer, retention.
async fn writer(
    log: Log,
    signer: Arc<Signer>,
    mut rx: mpsc::Receiver<Item>,
    inner: Arc<Inner>,
    settings: Settings,
) {
    let mut log = Some(log);
    let mut tick = tokio::time::interval(settings.checkpoint_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unsigned = false;
    let mut items = Vec::with_capacity(BATCH);
    loop {
        let mut checkpoint = false;
        let mut closing = None;
        let mut answer = Vec::new();
        tokio::select! {
            n = rx.recv_many(&mut items, BATCH) => {
                if n == 0 {
                    closing = Some(None);
                }
            }
            _ = tick.tick() => checkpoint = unsigned,
            _ = prune.tick(), if settings.retention.is_some() => {
                if let Some(keep) = settings.retention {
                    retain(&mut log, &signer, &settings, keep).await;
                }
                continue;
            }
        }
        let mut events = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            match item {
                Item::Event { ms, ev, done } => {
                    events.push((ms, ev));
                    answer.extend(done);
                }
                Item::Checkpoint(done) => {
                    checkpoint = true;
                    answer.push(done);
                }
                Item::Barrier(done) => answer.push(done),
                Item::Close(done) => closing = Some(Some(done)),
            }
        }
        if closing.is_some() {
            events.push((record::now_ms(), Event::ServerStopped {}));
            checkpoint = true;
        }
        if events.is_empty() && !checkpoint {
            // Barriers alone: what came before them is on disk already.
            for done in answer {
                let _ = done.send(());
            }
            continue;
        }
        let mut tries = 0;
        loop {
            let (l, evs, r) = append(
                log.take(),
                &settings.dir,
                &signer,
                events,
                checkpoint,
                settings.max_wait,
            )
            .await;
            log = l;
            events = evs;
            match r {
                Ok(()) => {
                    if inner.failed.swap(false, Ordering::AcqRel) {
                        tracing::warn!(
                            "the audit log is writable again; the records held meanwhile are written"
                        );
                    }
                    break;
                }
                Err(e) => {
                    if !inner.failed.swap(true, Ordering::AcqRel) {
                        tracing::error!(error = %e, dir = %settings.dir.display(),
                            "the audit log cannot be written; acts that would go unaudited are refused until it can (retrying every second)");
                    }
                    tries += 1;
                    if closing.is_some() && tries >= 5 {
                        tracing::error!(
                            records = events.len(),
                            "shutting down with audit records that could not be written"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        unsigned = !checkpoint;
        for done in answer {
            let _ = done.send(());
        }
        if let Some(done) = closing {
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        }
    }
}

/// One append on a blocking thread; gives the log and the events back for a retry. A log
/// lost to a panic is opened again.
async fn append(
    log: Option<Log>,
    dir: &Path,
    signer: &Arc<Signer>,
    events: Vec<(i64, Event)>,
    checkpoint: bool,
    lock_wait: Duration,
) -> (Option<Log>, Vec<(i64, Event)>, Result<(), String>) {
    let signer = signer.clone();
    let dir = dir.to_owned();
    let r = tokio::task::spawn_blocking(move || {
        let mut log = match log {
            Some(l) => l,
            None => match Log::open(&dir, lock_wait) {
                Ok((l, repaired)) => {
                    let mut l = l;
                    if let Some(r) = repaired
                        && let Err(e) = l.append(&[(record::now_ms(), r)], None)
                    {
                        return (Some(l), events, Err(e.to_string()));
                    }
                    l
                }
                Err(e) => return (None, events, Err(e.to_string())),
            },
        };
        let r = log
            .append(&events, checkpoint.then_some(&*signer))
            .map(|_| ())
            .map_err(|e| e.to_string());
        (Some(log), events, r)
    })
    .await;
    match r {
        Ok(x) => x,
        Err(e) => (
            None,
            Vec::new(),
            Err(format!("the audit writer failed: {e}")),
        ),
    }
}

/// Deletes segments older than `keep` (see [`Log::prune`]).
async fn retain(log: &mut Option<Log>, signer: &Arc<Signer>, settings: &Settings, keep: Duration) {
    let Some(mut l) = log.take() else { return };
    let signer = signer.clone();
    let before = record::now_ms() - keep.as_millis() as i64;
    let r = tokio::task::spawn_blocking(move || {
        let r = l.prune(before, Some(&signer));
        (l, r)
    })
    .await;
    match r {
        Ok((l, Ok(n))) => {
            if n > 0 {
                tracing::info!(segments = n, dir = %settings.dir.display(), "deleted audit segments past [audit] retention");
            }
            *log = Some(l);
        }
        Ok((l, Err(e))) => {
            tracing::error!(error = %e, "audit retention failed; will try again in an hour");
            *log = Some(l);
        }
        Err(e) => tracing::error!(error = %e, "audit retention failed"),
    }
}
