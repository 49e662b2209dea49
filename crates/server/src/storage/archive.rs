//! The message archive (XEP-0313) as storage sees it: entries, queries and preferences, and the
//! group-commit writer that keeps archiving off the message path.
//!
//! Every archive write goes through one writer task that commits up to [`BATCH`] operations per
//! transaction: with `synchronous=FULL` each commit is an fsync, and one per message would cap a
//! busy server at the disk's sync rate. A message delivered to an online session does not wait
//! for its archive commit; what the client is told is durable waits for it: an offline copy
//! ([`Storage::store_offline_archived`]) and XEP-0198 acknowledgements ([`Storage::barrier`]).
//!
//! A batch that fails (a full disk, an I/O error) is retried as a whole until it commits;
//! nothing queued is dropped. While it fails, new work is refused with
//! [`StorageError::Unavailable`] so that no client is told "stored" for what is not: see
//! `keys::write_loop`.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use crate::crypto::{RecordAad, RecordKind};

/// Most operations committed in one transaction.
pub(crate) const BATCH: usize = 256;
/// Operations waiting for the writer; a full queue makes senders wait (backpressure).
pub(crate) const QUEUE: usize = 4096;

/// A message to archive for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// The account whose archive it goes to (bare JID).
    pub owner: String,
    /// Its XEP-0359 stanza-id in that archive (see `new_id`).
    pub id: String,
    /// When the server accepted it (Unix milliseconds).
    pub stamp_unix_ms: i64,
    /// The other party's bare JID.
    pub with_bare: String,
    /// The other party's resource, `""` when none.
    pub with_resource: String,
    /// Whether the owner sent it.
    pub outgoing: bool,
    /// The message's `id` attribute.
    pub msg_id: Option<String>,
    /// Its XEP-0359 origin-id.
    pub origin_id: Option<String>,
    /// XEP-0308: the id of the message this one corrects.
    pub corrects: Option<String>,
    /// The stanza as it will be returned by archive queries.
    pub stanza: String,
}

/// XEP-0424: replace an archived message (and its corrections) with a tombstone.
pub struct Retraction {
    /// Whose archive.
    pub owner: String,
    /// The other party of the conversation.
    pub with_bare: String,
    /// Direction of the message retracted: the retraction's own direction, since only the
    /// author may retract.
    pub outgoing: bool,
    /// The id the retraction refers to: the original's origin-id or `id` attribute.
    pub target: String,
    /// Builds the tombstone from the original stanza; `None` leaves the entry as it is.
    pub tombstone: Tombstone,
}

/// Turns an archived stanza into its tombstone; `None` leaves it as it is.
pub type Tombstone = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl std::fmt::Debug for Retraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retraction")
            .field("owner", &self.owner)
            .field("with_bare", &self.with_bare)
            .field("outgoing", &self.outgoing)
            .finish_non_exhaustive()
    }
}

/// An entry sealed for storage.
#[derive(Debug, Clone)]
pub(crate) struct SealedEntry {
    pub(crate) meta: NewEntry,
    /// XEP-0308: the archive seq of the message this one corrects, found before the entry was
    /// queued (never looked up inside the writer's transaction).
    pub(crate) corrects_seq: Option<i64>,
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
}

/// One archived row turned into a tombstone, sealed before it is queued.
#[derive(Debug, Clone)]
pub(crate) struct Tombstoned {
    pub(crate) seq: i64,
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
}

/// What the writer task does.
pub(crate) enum WriteOp {
    /// Archive an entry.
    Insert(SealedEntry),
    /// Archive an entry for an owner who is offline and queue it for them, stored once, both
    /// or neither: nothing is archived for a message that bounces because the offline store
    /// holds `max` messages already.
    StoreOffline {
        entry: SealedEntry,
        max: u32,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    /// Queue an archived entry (inserted earlier in the queue) for its offline owner, stored
    /// once, under this per-account quota.
    LinkOffline {
        owner: String,
        id: String,
        max: u32,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    /// Replace archived rows by their tombstones (XEP-0424), built before they were queued.
    Retract(Vec<Tombstoned>),
    /// Remove an entry of `owner`'s archive: a message that was archived on its way to a
    /// session that ended before taking it, and then bounced.
    Delete { owner: String, id: String },
    /// Answer once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

impl WriteOp {
    /// Whether nobody waits for the result any more (the caller gave up). Such an operation is
    /// left out when a failed batch is retried: its caller already told its client it failed.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            WriteOp::StoreOffline { done, .. } | WriteOp::LinkOffline { done, .. } => {
                done.is_closed()
            }
            _ => false,
        }
    }
}

/// The sending side of the writer, and whether its last batch failed.
#[derive(Debug)]
pub(crate) struct Writer {
    pub(crate) tx: mpsc::Sender<WriteOp>,
    pub(crate) failing: AtomicBool,
}

impl Writer {
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }
}

/// How long a caller waits for an offline store before it gives up and bounces the message
/// (the writer then drops the operation instead of retrying it).
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which page of the matching messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// Oldest first, after this id (XEP-0059 `<after/>`) or from the start.
    Forward(Option<String>),
    /// The newest page, before this id (XEP-0059 `<before/>`) or from the end.
    Backward(Option<String>),
}

/// An archive query (XEP-0313 §4.1 fields and XEP-0059 paging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// The other party: a bare JID, and a resource to match a full JID exactly.
    pub with: Option<(String, Option<String>)>,
    /// Messages at or after this time (Unix milliseconds).
    pub start: Option<i64>,
    /// Messages at or before this time.
    pub end: Option<i64>,
    /// `#extended`: messages after this id (exclusive).
    pub after_id: Option<String>,
    /// `#extended`: messages before this id (exclusive).
    pub before_id: Option<String>,
    /// `#extended`: only these ids.
    pub ids: Vec<String>,
    /// The page.
    pub page: Page,
    /// Page size.
    pub max: u32,
}

impl ArchiveQuery {
    /// Everything, one page of `max` from where `page` says: no filters.
    pub fn new(page: Page, max: u32) -> ArchiveQuery {
        ArchiveQuery {
            with: None,
            start: None,
            end: None,
            after_id: None,
            before_id: None,
            ids: Vec::new(),
            page,
            max,
        }
    }
}

/// One archived message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Its stanza-id in this archive.
    pub id: String,
    /// When it was archived (Unix milliseconds).
    pub stamp_unix_ms: i64,
    /// The stored stanza (a tombstone once retracted).
    pub stanza: String,
}

/// A page of results, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePage {
    /// The messages.
    pub entries: Vec<Archived>,
    /// How many messages match the query (all pages).
    pub count: u64,
    /// The position of the first entry among them.
    pub first_index: Option<u64>,
    /// Whether this is the last page in the query's direction.
    pub complete: bool,
}

/// An archive's first and last entries: (id, stamp) each.
pub type Bounds = Option<((String, i64), (String, i64))>;

/// XEP-0313 §6 archiving preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefMode {
    /// Archive every message.
    Always,
    /// Archive none (except JIDs in `always`).
    Never,
    /// Archive messages with contacts in the roster.
    Roster,
}

impl PrefMode {
    /// The protocol and database value.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefMode::Always => "always",
            PrefMode::Never => "never",
            PrefMode::Roster => "roster",
        }
    }

    /// Parses a protocol or database value.
    pub fn parse(s: &str) -> Option<PrefMode> {
        match s {
            "always" => Some(PrefMode::Always),
            "never" => Some(PrefMode::Never),
            "roster" => Some(PrefMode::Roster),
            _ => None,
        }
    }
}

/// An account's archiving preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefs {
    /// For JIDs in neither list.
    pub default: PrefMode,
    /// Bare JIDs always archived, sorted.
    pub always: Vec<String>,
    /// Bare JIDs never archived, sorted.
    pub never: Vec<String>,
}

impl Prefs {
    /// What the lists say about `with_bare`, `never` first; `None` when it is in neither.
    pub fn listed(&self, with_bare: &str) -> Option<bool> {
        if self.never.iter().any(|j| j == with_bare) {
            Some(false)
        } else if self.always.iter().any(|j| j == with_bare) {
            Some(true)
        } else {
            None
        }
    }

    /// Whether a message with `with_bare` is archived; `in_roster` is asked only for the
    /// `roster` default.
    pub fn archives(&self, with_bare: &str, in_roster: impl FnOnce() -> bool) -> bool {
        if let Some(decided) = self.listed(with_bare) {
            return decided;
        }
        match self.default {
            PrefMode::Always => true,
            PrefMode::Never => false,
            PrefMode::Roster => in_roster(),
        }
    }
}

impl super::Storage {
    /// Queues `entry` for the archive and returns once it is queued, not yet committed: a
    /// message delivered to an online session does not wait for the disk. A correction
    /// (XEP-0308) is linked to the newest earlier message of the same conversation with the id
    /// it names, found here, by index, before it is queued.
    /// `Err(Unavailable)` while the database cannot be written.
    pub async fn archive(&self, entry: NewEntry) -> Result<(), StorageError> {
        let entry = self.seal_entry(entry).await?;
        self.send_op(WriteOp::Insert(entry)).await
    }

    /// Archives `entry` for its owner, who has no session to take it, and queues it in their
    /// offline store, in one transaction: both or neither. Returns once committed.
    /// `Err(QuotaExceeded)` when the offline store holds `max` messages (nothing is archived
    /// then), `Err(NotFound)` without an account.
    pub async fn store_offline_archived(
        &self,
        entry: NewEntry,
        max: u32,
    ) -> Result<(), StorageError> {
        let entry = self.seal_entry(entry).await?;
        let (done, rx) = oneshot::channel();
        self.send_op(WriteOp::StoreOffline { entry, max, done })
            .await?;
        wait_done(rx).await
    }

    /// Queues the archived entry `id` (archived with [`Storage::archive`] before) for its
    /// offline owner without storing it twice (it keeps the archive entry's time); returns once
    /// committed. `Err(QuotaExceeded)` when the offline store holds `max` messages, `Err(NotFound)`
    /// when the entry is not in the archive (the account does not exist).
    pub async fn link_offline(&self, owner: &str, id: &str, max: u32) -> Result<(), StorageError> {
        let (done, rx) = oneshot::channel();
        self.send_op(WriteOp::LinkOffline {
            owner: owner.to_owned(),
            id: id.to_owned(),
            max,
            done,
        })
        .await?;
        wait_done(rx).await
    }

    /// Queues the removal of `owner`'s archive entry `id`.
    pub async fn delete_archived(&self, owner: &str, id: &str) -> Result<(), StorageError> {
        self.send_op(WriteOp::Delete {
            owner: owner.to_owned(),
            id: id.to_owned(),
        })
        .await
    }

    /// A XEP-0424 retraction: the newest message of the conversation that the retraction names
    /// (by origin-id or id) and every correction of it become tombstones. The rows are found by
    /// index and the tombstones built and sealed here; the writer only replaces the payloads.
    /// Returns once the change is queued; `Ok(false)` when there is nothing to retract.
    pub async fn retract(&self, r: Retraction) -> Result<bool, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        let mut target = db.find_original(&r).await?;
        if target.is_none() {
            // The original may still be queued (a retraction right after the message): commit
            // what is queued and look again.
            self.flush_archive().await;
            target = db.find_original(&r).await?;
        }
        let Some(seq) = target else {
            return Ok(false);
        };
        let keys = self.keyring()?;
        let mut rows = Vec::new();
        for row in db.retraction_rows(&r.owner, seq).await? {
            let aad = RecordAad {
                kind: RecordKind::Archive,
                owner: &r.owner,
                id: &row.id,
                stamp_unix_ms: row.stamp_unix_ms,
            };
            let plain = keys.open(row.key_id, &aad, &row.payload)?;
            let plain = String::from_utf8(plain)
                .map_err(|_| StorageError::Database("archived stanza is not UTF-8".into()))?;
            let Some(tomb) = (r.tombstone)(&plain) else {
                continue;
            };
            let sealed = keys.seal(&aad, tomb.as_bytes())?;
            rows.push(Tombstoned {
                seq: row.seq,
                key_id: sealed.key_id,
                payload: sealed.blob,
            });
        }
        if rows.is_empty() {
            return Ok(false);
        }
        self.send_op(WriteOp::Retract(rows)).await?;
        Ok(true)
    }

    /// Waits until everything queued for the writer so far is committed to disk: what a
    /// XEP-0198 acknowledgement may then say was handled. Fails when storage was closed.
    pub async fn barrier(&self) -> Result<(), StorageError> {
        let u = self.unlocked.get().ok_or(StorageError::Locked)?;
        let (tx, rx) = oneshot::channel();
        u.writer
            .tx
            .send(WriteOp::Flush(tx))
            .await
            .map_err(|_| StorageError::Database("the archive writer stopped".into()))?;
        rx.await
            .map_err(|_| StorageError::Database("the archive writer stopped".into()))
    }

    /// Whether the archive writer's last batch failed (a full disk, an I/O error): new work is
    /// refused until it commits again.
    pub fn is_failing(&self) -> bool {
        self.unlocked.get().is_some_and(|u| u.writer.is_failing())
    }

    /// One page of `owner`'s archive, decrypted. `Err(NotFound)` for an unknown paging id.
    pub async fn query_archive(
        &self,
        owner: &str,
        q: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        let page = db.query_archive(owner, q).await?;
        let keys = self.keyring()?;
        let entries = page
            .rows
            .into_iter()
            .map(|r| {
                let aad = RecordAad {
                    kind: RecordKind::Archive,
                    owner,
                    id: &r.id,
                    stamp_unix_ms: r.stamp_unix_ms,
                };
                let plain = keys.open(r.key_id, &aad, &r.payload)?;
                Ok(Archived {
                    stanza: String::from_utf8(plain).map_err(|_| {
                        StorageError::Database("archived stanza is not UTF-8".into())
                    })?,
                    id: r.id,
                    stamp_unix_ms: r.stamp_unix_ms,
                })
            })
            .collect::<Result<_, StorageError>>()?;
        Ok(ArchivePage {
            entries,
            count: page.count,
            first_index: page.first_index,
            complete: page.complete,
        })
    }

    /// The archive's first and last entries.
    pub async fn archive_bounds(&self, owner: &str) -> Result<Bounds, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        db.archive_bounds(owner).await
    }

    /// The account's stored preferences, `None` if it never set any.
    pub async fn archive_prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        db.archive_prefs(owner).await
    }

    /// Replaces the account's preferences.
    pub async fn set_archive_prefs(&self, owner: &str, prefs: &Prefs) -> Result<(), StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        db.set_archive_prefs(owner, prefs).await
    }

    /// Deletes up to `batch` entries older than `before_unix_ms` in `domain`'s accounts.
    pub async fn expire_archive(
        &self,
        domain: &str,
        before_unix_ms: i64,
        batch: u32,
    ) -> Result<u64, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        db.expire_archive(domain, before_unix_ms, batch).await
    }

    async fn seal_entry(&self, meta: NewEntry) -> Result<SealedEntry, StorageError> {
        let corrects_seq = match &meta.corrects {
            Some(id) => self.correction_target(&meta, id).await?,
            None => None,
        };
        let aad = RecordAad {
            kind: RecordKind::Archive,
            owner: &meta.owner,
            id: &meta.id,
            stamp_unix_ms: meta.stamp_unix_ms,
        };
        let sealed = self.keyring()?.seal(&aad, meta.stanza.as_bytes())?;
        Ok(SealedEntry {
            key_id: sealed.key_id,
            payload: sealed.blob,
            corrects_seq,
            meta: NewEntry {
                // The plaintext is not kept beside its ciphertext.
                stanza: String::new(),
                ..meta
            },
        })
    }

    /// The seq of the message a correction replaces: the newest of the conversation, in the
    /// same direction, whose `id` attribute is `id`.
    async fn correction_target(
        &self,
        meta: &NewEntry,
        id: &str,
    ) -> Result<Option<i64>, StorageError> {
        let super::Pool::Sqlite(db) = &self.pool;
        let find = || db.find_by_msg_id(&meta.owner, &meta.with_bare, meta.outgoing, id);
        match find().await? {
            Some(seq) => Ok(Some(seq)),
            None => {
                // A correction sent right after its original: commit what is queued first.
                self.flush_archive().await;
                find().await
            }
        }
    }

    async fn send_op(&self, op: WriteOp) -> Result<(), StorageError> {
        let u = self.unlocked.get().ok_or(StorageError::Locked)?;
        if u.writer.is_failing() {
            return Err(StorageError::Unavailable);
        }
        u.writer
            .tx
            .send(op)
            .await
            .map_err(|_| StorageError::Database("the archive writer stopped".into()))
    }
}

/// Waits for the writer's answer, bounded: a caller that gives up tells its client the
/// message was not stored, and the writer then drops the operation (see [`WriteOp::abandoned`]).
async fn wait_done(rx: oneshot::Receiver<Result<(), StorageError>>) -> Result<(), StorageError> {
    match tokio::time::timeout(STORE_WAIT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(StorageError::Database("the archive writer stopped".into())),
        Err(_) => Err(StorageError::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_wins_over_always_and_default_applies_otherwise() {
        let p = Prefs {
            default: PrefMode::Roster,
            always: vec!["a@x".into(), "b@x".into()],
            never: vec!["b@x".into()],
        };
        assert!(p.archives("a@x", || false));
        assert!(!p.archives("b@x", || true));
        assert!(p.archives("c@x", || true));
        assert!(!p.archives("c@x", || false));
        for m in [PrefMode::Always, PrefMode::Never, PrefMode::Roster] {
            assert_eq!(PrefMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(PrefMode::parse("sometimes"), None);
    }
}
