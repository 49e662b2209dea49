//! Unlocking a database with its key-encryption key, data key rotation and the status an
//! operator sees with `zorg keys status`.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::archive::{BATCH, QUEUE, WriteOp, Writer};
use super::{Pool, Storage, StorageError, Unlocked};
use crate::crypto::{Kek, KeySet, Keyring, RecordAad, RecordKind};

/// One data key as `zorg keys status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's id.
    pub id: i64,
    /// Whether new records are sealed with it.
    pub active: bool,
    /// When it was created (Unix milliseconds).
    pub created_unix_ms: i64,
    /// Archive records sealed with it.
    pub archived: u64,
    /// Offline records sealed with it (pointers to the archive not counted).
    pub offline: u64,
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Storage {
    /// Whether the database holds any data key yet (a fresh database does not): only then may a
    /// missing default key file be generated.
    pub async fn has_data_keys(&self) -> Result<bool, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => Ok(!db.data_keys().await?.is_empty()),
        }
    }

    /// Loads the data keys with `kek` (creating the first one in a fresh database), seals any
    /// plaintext offline messages left by an older version, and starts the archive writer.
    /// Call once, before any archive or offline operation.
    pub async fn unlock(&self, kek: Kek) -> Result<(), StorageError> {
        let Pool::Sqlite(db) = &self.pool;
        if db.data_keys().await?.is_empty() {
            db.new_data_key(&kek, now_ms()).await?;
        }
        let set = load_set(db, &kek).await?;
        let keys = Arc::new(Keyring::new(kek, set));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Arc::new(Writer {
            tx,
            failing: Default::default(),
        });
        tokio::spawn(write_loop(db.clone(), writer.clone(), rx));
        self.unlocked
            .set(Unlocked { keys, writer })
            .map_err(|_| StorageError::Database("the database was already unlocked".into()))?;
        self.seal_legacy_offline().await
    }

    /// The loaded keys, or `Locked`.
    pub(crate) fn keyring(&self) -> Result<&Arc<Keyring>, StorageError> {
        self.unlocked
            .get()
            .map(|u| &u.keys)
            .ok_or(StorageError::Locked)
    }

    /// The fingerprint of the loaded KEK.
    pub fn kek_id(&self) -> Result<String, StorageError> {
        Ok(self.keyring()?.kek().id().to_owned())
    }

    /// `zorg keys rotate`: a new active data key. A running server notices it within its key
    /// poll interval and re-encrypts older records in the background; returns the new id.
    pub async fn rotate_data_key(&self) -> Result<i64, StorageError> {
        let keys = self.keyring()?;
        let Pool::Sqlite(db) = &self.pool;
        let id = db.new_data_key(keys.kek(), now_ms()).await?;
        keys.replace(load_set(db, keys.kek()).await?);
        Ok(id)
    }

    /// Reloads the data keys if another process rotated them; returns whether the active key
    /// changed.
    pub async fn refresh_keys(&self) -> Result<bool, StorageError> {
        let keys = self.keyring()?;
        let Pool::Sqlite(db) = &self.pool;
        let stored = db.data_keys().await?;
        let active = stored.iter().find(|k| k.active).map(|k| k.id);
        let loaded = keys.keys();
        if active == Some(loaded.active) && stored.len() == loaded.ids().len() {
            return Ok(false);
        }
        keys.replace(load_set(db, keys.kek()).await?);
        Ok(active != Some(loaded.active))
    }

    /// One step of background re-encryption: re-seals up to `limit` records under the active
    /// key, and once none is left deletes the keys nothing uses. Returns how many were re-sealed.
    pub async fn reencrypt_step(&self, limit: u32) -> Result<u64, StorageError> {
        let keys = self.keyring()?.clone();
        let Pool::Sqlite(db) = &self.pool;
        let n = db.reencrypt_batch(&keys, limit).await?;
        if n == 0 {
            let gone = db.delete_unused_keys().await?;
            if !gone.is_empty() {
                tracing::info!(keys = ?gone, "old data keys deleted: no record uses them any more");
                keys.replace(load_set(db, keys.kek()).await?);
            }
        }
        Ok(n)
    }

    /// Every data key with how many records it seals.
    pub async fn key_status(&self) -> Result<Vec<KeyInfo>, StorageError> {
        let Pool::Sqlite(db) = &self.pool;
        let stored = db.data_keys().await?;
        let usage = db.key_usage().await?;
        Ok(stored
            .iter()
            .map(|k| {
                let (archived, offline) = usage
                    .iter()
                    .find(|(id, ..)| *id == k.id)
                    .map_or((0, 0), |(_, a, o)| (*a, *o));
                KeyInfo {
                    id: k.id,
                    active: k.active,
                    created_unix_ms: k.created_unix_ms,
                    archived,
                    offline,
                }
            })
            .collect())
    }

    /// Waits until every archive write queued so far is committed.
    pub async fn flush_archive(&self) {
        if let Some(u) = self.unlocked.get() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if u.writer.tx.send(WriteOp::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    /// Offline messages stored in plaintext by a version before encryption at rest are sealed
    /// into the encrypted store, then removed.
    async fn seal_legacy_offline(&self) -> Result<(), StorageError> {
        let Pool::Sqlite(db) = &self.pool;
        let legacy = db.legacy_offline().await?;
        if legacy.is_empty() {
            return Ok(());
        }
        let n = legacy.len();
        for (owner, id, stanza, stamp) in legacy {
            match self
                .seal_offline(&owner, &id, &stanza, stamp, u32::MAX)
                .await
            {
                Ok(()) | Err(StorageError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
        db.clear_legacy_offline().await?;
        tracing::info!(
            messages = n,
            "plaintext offline messages from an older version are now encrypted"
        );
        Ok(())
    }

    /// Seals and stores one offline message with its own payload.
    pub(crate) async fn seal_offline(
        &self,
        owner: &str,
        id: &str,
        stanza: &str,
        stamp_unix_ms: i64,
        max: u32,
    ) -> Result<(), StorageError> {
        let aad = RecordAad {
            kind: RecordKind::Offline,
            owner,
            id,
            stamp_unix_ms,
        };
        let sealed = self.keyring()?.seal(&aad, stanza.as_bytes())?;
        let Pool::Sqlite(db) = &self.pool;
        let body = super::sqlite::OfflineBody::Sealed {
            key_id: sealed.key_id,
            payload: &sealed.blob,
        };
        db.push_offline(owner, id, stamp_unix_ms, body, max).await
    }
}

/// Unwraps every stored data key with `kek`.
async fn load_set(db: &super::sqlite::Sqlite, kek: &Kek) -> Result<KeySet, StorageError> {
    let stored = db.data_keys().await?;
    let mut keys = Vec::with_capacity(stored.len());
    let mut active = None;
    for k in &stored {
        if k.kek_id != kek.id() {
            return Err(StorageError::WrongKey {
                expected: k.kek_id.clone(),
                got: kek.id().to_owned(),
            });
        }
        keys.push((k.id, kek.unwrap_key(k.id, &k.wrapped)?));
        if k.active {
            active = Some(k.id);
        }
    }
    let active =
        active.ok_or_else(|| StorageError::Database("no active data key in data_keys".into()))?;
    Ok(KeySet::new(active, keys))
}

/// The archive writer: commits queued operations in batches until every sender is gone.
///
/// A batch that fails as a whole (a full disk, an I/O error, a lock held too long) is retried
/// with growing pauses until it commits: its operations were acknowledged as queued, and a
/// message delivered to a session must not lose its archive copy. Meanwhile the writer is
/// marked as failing, which refuses new work at [`Storage::archive`] and the other queueing
/// calls (the client learns its message was not taken), and the condition is logged once when
/// it starts, once a minute while it lasts, and once when it ends.
async fn write_loop(
    db: super::sqlite::Sqlite,
    writer: Arc<Writer>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    use std::sync::atomic::Ordering;
    let mut ops = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut ops, BATCH).await > 0 {
        let mut pause = RETRY_FIRST;
        let mut failed_at: Option<tokio::time::Instant> = None;
        let mut last_log = tokio::time::Instant::now();
        let results = loop {
            match db.write_batch(&ops).await {
                Ok(r) => break r,
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    if failed_at.is_none() {
                        failed_at = Some(now);
                        last_log = now;
                        writer.failing.store(true, Ordering::Release);
                        tracing::error!(error = %e, operations = ops.len(),
                            "the message archive cannot be written; new messages are refused until it can, and the queued writes are retried");
                    } else if now.duration_since(last_log) >= RETRY_LOG_EVERY {
                        last_log = now;
                        tracing::error!(error = %e, operations = ops.len(),
                            "the message archive still cannot be written; retrying");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_MAX);
                    // Callers that gave up waiting told their clients the message was not
                    // stored: their operations must not be committed after all.
                    ops.retain(|op| !op.abandoned());
                }
            }
        };
        if let Some(t) = failed_at {
            writer.failing.store(false, Ordering::Release);
            tracing::warn!(
                seconds = t.elapsed().as_secs(),
                "the message archive can be written again; the writes held meanwhile are committed"
            );
        }
        for (op, r) in ops.drain(..).zip(results) {
            match op {
                WriteOp::LinkOffline { done, .. } | WriteOp::StoreOffline { done, .. } => {
                    let _ = done.send(r);
                }
                WriteOp::Flush(d) => {
                    let _ = d.send(());
                }
                WriteOp::Insert(_) | WriteOp::Retract(_) | WriteOp::Delete { .. } => match r {
                    Ok(()) => {}
                    // A message for an account that does not exist (it is bounced): anyone
                    // can cause this, so it is no reason to warn the operator.
                    Err(StorageError::NotFound) => {
                        tracing::debug!("archive entry for an account that does not exist");
                    }
                    Err(e) => tracing::warn!(error = %e, "an archive write was refused"),
                },
            }
        }
    }
}

/// First pause before a failed batch is retried; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
/// Longest pause between retries of a failed batch.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a lasting failure is logged again.
const RETRY_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
