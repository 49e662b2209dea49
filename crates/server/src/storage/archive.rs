//! The message archive (XEP-0313) as storage sees it: entries, queries and preferences, and the
//! group-commit writer that keeps archiving off the message path.
//!
//! Every archive write goes through one writer task that commits up to [`BATCH`] operations per
//! transaction: with `synchronous=FULL` each commit is an fsync, and one per message would cap a
//! busy server at the disk's sync rate. A message delivered to an online session does not wait
//! for its archive commit (it was delivered; the archive copy follows within milliseconds). A
//! message for an offline account does wait: it is acknowledged only once committed.

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
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
}

/// What the writer task does.
pub(crate) enum WriteOp {
    /// Archive an entry.
    Insert(SealedEntry),
    /// Queue an archived entry (inserted earlier in the queue) for its offline owner, stored
    /// once, under this per-account quota.
    LinkOffline {
        owner: String,
        id: String,
        max: u32,
        done: oneshot::Sender<Result<(), StorageError>>,
    },
    /// Tombstone a message.
    Retract(Retraction),
    /// Answer once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
}

/// The sending side of the writer.
pub(crate) type Writer = mpsc::Sender<WriteOp>;

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
    /// message delivered to an online session does not wait for the disk.
    pub async fn archive(&self, entry: NewEntry) -> Result<(), StorageError> {
        let entry = self.seal_entry(entry)?;
        self.send_op(WriteOp::Insert(entry)).await
    }

    /// Queues the archived entry `id` (archived with [`Storage::archive`] before) for its
    /// offline owner without storing it twice (it keeps the archive entry's time); returns once
    /// committed. `Err(QuotaExceeded)` when the offline store holds `max` messages, `Err(NotFound)`
    /// when the entry is not in the archive (the account does not exist).
    pub async fn link_offline(&self, owner: &str, id: &str, max: u32) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send_op(WriteOp::LinkOffline {
            owner: owner.to_owned(),
            id: id.to_owned(),
            max,
            done: tx,
        })
        .await?;
        rx.await
            .map_err(|_| StorageError::Database("the archive writer stopped".into()))?
    }

    /// Queues a XEP-0424 retraction: the original and its corrections become tombstones.
    pub async fn retract(&self, r: Retraction) -> Result<(), StorageError> {
        self.send_op(WriteOp::Retract(r)).await
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

    fn seal_entry(&self, meta: NewEntry) -> Result<SealedEntry, StorageError> {
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
            meta: NewEntry {
                // The plaintext is not kept beside its ciphertext.
                stanza: String::new(),
                ..meta
            },
        })
    }

    async fn send_op(&self, op: WriteOp) -> Result<(), StorageError> {
        let u = self.unlocked.get().ok_or(StorageError::Locked)?;
        u.writer
            .send(op)
            .await
            .map_err(|_| StorageError::Database("the archive writer stopped".into()))
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
