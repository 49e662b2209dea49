//! Persistent storage: one trait per data type, implemented for [`Storage`].
//!
//! Callers only see the traits and [`Storage`]; the backend hides behind a private `enum Pool` so
//! that a PostgreSQL arm can be added later without touching any caller (DESIGN §4, §5.9).
//! Wrappers such as an at-rest encryption layer or metrics can later implement the same traits
//! around any `S: AccountStore + …`.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL`, so a write (an offline message in
//! particular) has reached stable storage when its future resolves, and survives `kill -9` and
//! power loss.

/// XEP-0313 message archive: entries, queries, preferences and the batched writer.
pub mod archive;
mod keys;
mod sqlite;
pub mod types;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;

pub use keys::KeyInfo;
pub use sqlite::durability::{Durability, synchronous_name};
pub use types::{RosterItem, ScramHash, ScramRecord, Subscription};

use crate::crypto::{CryptoError, Keyring, RecordAad, RecordKind};

/// Why a storage operation failed. The text is for operators: it says what to check, and never
/// contains credentials, stanzas or other user data.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    /// The record (an account, an offline message id) already exists.
    #[error("the record already exists; choose another name or remove the existing one first")]
    Conflict,
    /// The account (or the record the operation needs) does not exist.
    #[error("no such account or record; check the name, or create the account first")]
    NotFound,
    /// The account's offline message store is full.
    #[error(
        "the account's offline message store is full; the user must log in to receive the stored \
         messages, or the operator may raise the per-account limit"
    )]
    QuotaExceeded,
    /// The database failed (I/O, locking, corruption). Holds the driver's message, without data.
    #[error(
        "database error: {0}; check that the database file and its directory are writable, the \
         disk is not full and no other program holds the database locked"
    )]
    Database(String),
    /// Archive and offline records need the encryption keys, which were not loaded.
    #[error(
        "the database's encryption keys are not loaded; start the server (or the command) with \
         the key file or key variable configured in [storage]"
    )]
    Locked,
    /// The configured key-encryption key is not the one the database was written with.
    #[error(
        "the key-encryption key (fingerprint {got}) is not the one this database was written with \
         (fingerprint {expected}); configure the right key file or key variable in [storage]"
    )]
    WrongKey {
        /// The fingerprint stored with the data keys.
        expected: String,
        /// The fingerprint of the configured key.
        got: String,
    },
    /// A record could not be sealed or opened.
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    /// The database cannot be written at the moment (a full disk, an I/O error): the
    /// operation was refused so that nothing is acknowledged that is not stored. Writes
    /// resume by themselves once the cause is fixed.
    #[error(
        "the database cannot be written at the moment (see the server log for the cause: a \
         full disk, an I/O error); the operation was refused so that nothing is acknowledged \
         that is not stored, and writing resumes by itself once the cause is fixed"
    )]
    Unavailable,
    /// The database file is damaged (SQLite reports corruption). Holds what it reported.
    #[error(
        "the database file is damaged ({0}); stop the server, keep a copy of the damaged file, \
         and restore the last backup (docs/operating.md, \"Data directory and backups\") or \
         salvage what is readable with `sqlite3 zorg.db .recover`"
    )]
    Corrupt(String),
    /// The database refused a record it should never have been given (a check constraint):
    /// a bug, reported instead of retried.
    #[error("the database refused a record: {0}")]
    Rejected(String),
    /// The schema could not be brought up to date at open.
    #[error(
        "database schema migration failed: {0}; restore the database from a backup or run the \
         Zorg version that last wrote it"
    )]
    Migration(String),
}

/// One message held for an offline account (RFC 6121 §8.5.2.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Arrival order within the store; never reused, so it is safe to delete through it later.
    pub seq: i64,
    /// The caller-chosen id (see [`new_id`]), unique per account.
    pub id: String,
    /// The serialised stanza, exactly as it will be delivered.
    pub stanza: String,
    /// When the server accepted the message (Unix milliseconds), for XEP-0203 delay stamps.
    pub stamp_unix_ms: i64,
}

/// A page of an account's offline messages (see [`OfflineStore::offline_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflinePage {
    /// The messages, in arrival order; retracted ones (XEP-0424) are left out.
    pub messages: Vec<OfflineMessage>,
    /// The seq of the last row read (retracted ones included); `None` when there was none.
    pub last_seq: Option<i64>,
}

/// One XEP-0357 push registration: where to publish notifications for one of the account's
/// devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server's JID (the "XMPP Push Service"), normalised.
    pub service: String,
    /// The node the app server provisioned.
    pub node: String,
    /// The serialised XEP-0004 publish-options form to send with every publish, if any.
    pub options: Option<String>,
}

/// Accounts and their SCRAM credentials. JIDs are bare and already normalised by the caller.
pub trait AccountStore {
    /// Creates an account with its credentials. `Err(StorageError::Conflict)` if it exists. If two
    /// records share a hash function, the last one wins.
    fn create_account(
        &self,
        jid: &str,
        creds: &[ScramRecord],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// Whether the account exists.
    fn account_exists(&self, jid: &str) -> impl Future<Output = Result<bool, StorageError>> + Send;
    /// The account's credential for `hash`, if any.
    fn credentials(
        &self,
        jid: &str,
        hash: ScramHash,
    ) -> impl Future<Output = Result<Option<ScramRecord>, StorageError>> + Send;
    /// Replaces all credentials (password change). `Err(NotFound)` if no account.
    fn set_credentials(
        &self,
        jid: &str,
        creds: &[ScramRecord],
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// Deletes the account and everything it owns (roster, offline messages, blocklist, push
    /// registrations) in one transaction. `Ok(false)` if absent.
    fn delete_account(&self, jid: &str) -> impl Future<Output = Result<bool, StorageError>> + Send;
    /// Sorted bare JIDs; `domain` `None` = all.
    fn list_accounts(
        &self,
        domain: Option<&str>,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;
}

/// RFC 6121 rosters with versioning (§2.6) and the full subscription state (Appendix A).
pub trait RosterStore {
    /// (version, visible items only). The version is a per-account counter, 0 for a roster that
    /// never changed (and for an unknown account).
    fn roster(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<(u64, Vec<RosterItem>), StorageError>> + Send;
    /// The current roster version (0 for an unknown account).
    fn roster_version(&self, owner: &str)
    -> impl Future<Output = Result<u64, StorageError>> + Send;
    /// Any item, visible or not.
    fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> impl Future<Output = Result<Option<RosterItem>, StorageError>> + Send;
    /// Inserts or replaces the item (keyed by owner + `item.jid`); bumps and returns the new
    /// version in the same transaction. `Err(NotFound)` if the owner has no account.
    fn put_roster_item(
        &self,
        owner: &str,
        item: &RosterItem,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
    /// Like [`RosterStore::put_roster_item`], but `Ok(None)` (nothing written) when the item
    /// would be one more visible (or hidden) item than `caps` allow; replacing an item that
    /// already counts in the same class is always allowed.
    fn put_roster_item_within(
        &self,
        owner: &str,
        item: &RosterItem,
        caps: types::RosterCaps,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;
    /// Removes an item; `Some(new version)` if something was removed, `None` otherwise.
    fn remove_roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;
    /// What presence handling needs, in one statement (logins are frequent): the visible
    /// items, and the invisible ones with `pending_in` (subscription requests to deliver again
    /// at login), sorted by contact.
    fn presence_items(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<RosterItem>, StorageError>> + Send;
    /// Owners whose roster holds `contact` with subscription `from` or `both` (who may see the
    /// contact's presence), sorted by owner: for presence probes on the same server.
    fn roster_owners_with(
        &self,
        contact: &str,
    ) -> impl Future<Output = Result<Vec<(String, RosterItem)>, StorageError>> + Send;
}

/// Messages stored for offline accounts.
pub trait OfflineStore {
    /// Stores a stanza for an account under the caller's `id` (see [`new_id`]); the message is
    /// durable when the future resolves. `Err(QuotaExceeded)` when the account already holds
    /// `max_per_account` messages, `Err(NotFound)` without an account, `Err(Conflict)` if the id
    /// is already used by this account.
    fn push_offline(
        &self,
        owner: &str,
        id: &str,
        stanza: &str,
        stamp_unix_ms: i64,
        max_per_account: u32,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// The account's messages in arrival order.
    fn offline_messages(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<OfflineMessage>, StorageError>> + Send;
    /// At most `limit` of the account's messages after `after_seq`, in arrival order: a replay
    /// pages through the store instead of reading all of it at once.
    fn offline_page(
        &self,
        owner: &str,
        after_seq: i64,
        limit: u32,
    ) -> impl Future<Output = Result<OfflinePage, StorageError>> + Send;
    /// Deletes messages up to and including `seq` (after they were delivered and written to the
    /// socket); returns how many were deleted.
    fn delete_offline_through(
        &self,
        owner: &str,
        seq: i64,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
    /// How many messages the account holds.
    fn offline_count(&self, owner: &str) -> impl Future<Output = Result<u64, StorageError>> + Send;
    /// Every account that holds at least one message (read once at start).
    fn offline_owners(&self) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;
}

/// XEP-0191: Blocking Command (items use XEP-0016 JID matching).
pub trait BlocklistStore {
    /// The account's blocked items, sorted.
    fn blocklist(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;
    /// Adds items; returns those that were newly added, in input order. `Err(NotFound)` without an
    /// account.
    fn block(
        &self,
        owner: &str,
        jids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;
    /// Like [`BlocklistStore::block`], but `Ok(None)` (nothing written) when the new items
    /// would take the list past `max` items.
    fn block_within(
        &self,
        owner: &str,
        jids: &[String],
        max: u32,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StorageError>> + Send;
    /// Removes items; an empty slice unblocks all. Returns the removed items.
    fn unblock(
        &self,
        owner: &str,
        jids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, StorageError>> + Send;
    /// XEP-0191 / XEP-0016 matching: `candidate` is a full or bare JID; it is blocked if an item
    /// equals the full JID, the bare JID, the domain, or domain/resource.
    fn is_blocked(
        &self,
        owner: &str,
        candidate: &str,
    ) -> impl Future<Output = Result<bool, StorageError>> + Send;
}

/// XEP-0357 push registrations, keyed by (owner, service, node).
pub trait PushStore {
    /// The account's registrations, most recently enabled first.
    fn push_registrations(
        &self,
        owner: &str,
    ) -> impl Future<Output = Result<Vec<PushRegistration>, StorageError>> + Send;
    /// Adds the registration, or replaces the options of the same (service, node) (XEP-0357 §5:
    /// the last request wins), in one transaction that then keeps only the `max_per_account`
    /// most recently enabled registrations. Returns how many older ones were removed to make
    /// room. `Err(NotFound)` without an account.
    fn enable_push(
        &self,
        owner: &str,
        reg: &PushRegistration,
        max_per_account: u32,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
    /// Removes the registration for (service, node), or every registration for `service` when
    /// `node` is `None` (XEP-0357 §6). Returns how many were removed.
    fn disable_push(
        &self,
        owner: &str,
        service: &str,
        node: Option<&str>,
    ) -> impl Future<Output = Result<u64, StorageError>> + Send;
}

/// The backend behind [`Storage`]. Private so that adding PostgreSQL changes no caller.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(sqlite::Sqlite),
}

/// The server's database handle. Cheap to clone (the pools and keys are shared).
#[derive(Debug, Clone)]
pub struct Storage {
    pool: Pool,
    /// Set by [`Storage::unlock`]: the keys and the archive writer.
    unlocked: Arc<OnceLock<Unlocked>>,
}

/// What unlocking a database provides.
#[derive(Debug)]
struct Unlocked {
    keys: Arc<Keyring>,
    writer: Arc<archive::Writer>,
}

impl Storage {
    /// Opens (creating it if absent) the SQLite database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Storage, StorageError> {
        Ok(Storage {
            pool: Pool::Sqlite(sqlite::Sqlite::open(path).await?),
            unlocked: Arc::default(),
        })
    }

    /// Checks the database file for damage (see `sqlite::Sqlite::check_integrity`): at server
    /// start, not at every command that opens it.
    pub async fn check_integrity(&self) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.check_integrity().await,
        }
    }

    /// A fresh, empty in-memory database, for tests, unlocked with a random key. Its content is
    /// lost when dropped.
    pub async fn open_memory() -> Result<Storage, StorageError> {
        let db = Storage {
            pool: Pool::Sqlite(sqlite::Sqlite::open_memory().await?),
            unlocked: Arc::default(),
        };
        db.unlock(crate::crypto::Kek::random()?).await?;
        Ok(db)
    }

    /// The journal mode and `synchronous` levels the connections actually run with, read back
    /// rather than assumed (see [`Durability::problems`]).
    pub async fn durability(&self) -> Result<Durability, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.durability().await,
        }
    }

    /// Commits queued archive writes, waits for running operations and closes every
    /// connection. Later calls fail. A writer that cannot commit (a full disk) holds the close
    /// up for at most [`CLOSE_FLUSH`].
    pub async fn close(&self) {
        if tokio::time::timeout(CLOSE_FLUSH, self.flush_archive())
            .await
            .is_err()
        {
            tracing::error!(
                "queued archive writes could not be committed before the shutdown (see the \
                 errors above); the messages were delivered, their archive copies are missing"
            );
        }
        match &self.pool {
            Pool::Sqlite(db) => db.close().await,
        }
    }
}

/// How long closing the database waits for queued archive writes.
const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// Parses a stanza read back from storage. Stored stanzas passed the limits when they were
/// received, so the bounds here are generous: lowering `[limits]` later must not make stored
/// messages unreadable.
pub fn parse_stored(xml: &str) -> Result<zorg_proto::Element, zorg_proto::FramingError> {
    zorg_proto::parse_element(
        xml,
        zorg_proto::Limits {
            max_stanza_size: 16 * 1024 * 1024,
            max_depth: 256,
            max_attributes: 1024,
            max_elements: 1_000_000,
        },
    )
}

/// A new random id: 16 bytes from the system generator as 22 characters of unpadded base64url.
///
/// # Panics
/// If the system random generator fails, which AWS-LC treats as fatal anyway: continuing with
/// predictable ids would be worse.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        panic!("the system random number generator failed");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// The trait implementations only dispatch to the backend; the SQL lives in `sqlite/`.

impl AccountStore for Storage {
    async fn create_account(&self, jid: &str, creds: &[ScramRecord]) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.create_account(jid, creds).await,
        }
    }
    async fn account_exists(&self, jid: &str) -> Result<bool, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.account_exists(jid).await,
        }
    }
    async fn credentials(
        &self,
        jid: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramRecord>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.credentials(jid, hash).await,
        }
    }
    async fn set_credentials(&self, jid: &str, creds: &[ScramRecord]) -> Result<(), StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.set_credentials(jid, creds).await,
        }
    }
    async fn delete_account(&self, jid: &str) -> Result<bool, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.delete_account(jid).await,
        }
    }
    async fn list_accounts(&self, domain: Option<&str>) -> Result<Vec<String>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.list_accounts(domain).await,
        }
    }
}

impl RosterStore for Storage {
    async fn roster(&self, owner: &str) -> Result<(u64, Vec<RosterItem>), StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.roster(owner).await,
        }
    }
    async fn roster_version(&self, owner: &str) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.roster_version(owner).await,
        }
    }
    async fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.roster_item(owner, contact).await,
        }
    }
    async fn put_roster_item(&self, owner: &str, item: &RosterItem) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.put_roster_item(owner, item).await,
        }
    }
    async fn put_roster_item_within(
        &self,
        owner: &str,
        item: &RosterItem,
        caps: types::RosterCaps,
    ) -> Result<Option<u64>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.put_roster_item_within(owner, item, caps).await,
        }
    }
    async fn remove_roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.remove_roster_item(owner, contact).await,
        }
    }
    async fn presence_items(&self, owner: &str) -> Result<Vec<RosterItem>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.presence_items(owner).await,
        }
    }
    async fn roster_owners_with(
        &self,
        contact: &str,
    ) -> Result<Vec<(String, RosterItem)>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.roster_owners_with(contact).await,
        }
    }
}

impl OfflineStore for Storage {
    async fn push_offline(
        &self,
        owner: &str,
        id: &str,
        stanza: &str,
        stamp_unix_ms: i64,
        max_per_account: u32,
    ) -> Result<(), StorageError> {
        self.seal_offline(owner, id, stanza, stamp_unix_ms, max_per_account)
            .await
    }
    async fn offline_messages(&self, owner: &str) -> Result<Vec<OfflineMessage>, StorageError> {
        Ok(self.offline_page(owner, 0, u32::MAX).await?.messages)
    }
    async fn offline_page(
        &self,
        owner: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<OfflinePage, StorageError> {
        let Pool::Sqlite(db) = &self.pool;
        let rows = db.offline_messages(owner, after_seq, limit).await?;
        let keys = self.keyring()?;
        let mut out = OfflinePage {
            messages: Vec::with_capacity(rows.len()),
            last_seq: rows.last().map(|r| r.seq),
        };
        for r in rows {
            let plain = match &r.archived {
                // XEP-0424: a message retracted before it was delivered is not delivered; the
                // retraction itself follows in the queue.
                Some((_, _, true)) => continue,
                Some((aid, astamp, false)) => keys.open(
                    r.key_id,
                    &RecordAad {
                        kind: RecordKind::Archive,
                        owner,
                        id: aid,
                        stamp_unix_ms: *astamp,
                    },
                    &r.payload,
                ),
                None => keys.open(
                    r.key_id,
                    &RecordAad {
                        kind: RecordKind::Offline,
                        owner,
                        id: &r.id,
                        stamp_unix_ms: r.stamp_unix_ms,
                    },
                    &r.payload,
                ),
            }?;
            out.messages.push(OfflineMessage {
                seq: r.seq,
                id: r.id,
                stanza: String::from_utf8(plain)
                    .map_err(|_| StorageError::Database("stored stanza is not UTF-8".into()))?,
                stamp_unix_ms: r.stamp_unix_ms,
            });
        }
        Ok(out)
    }
    async fn delete_offline_through(&self, owner: &str, seq: i64) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.delete_offline_through(owner, seq).await,
        }
    }
    async fn offline_count(&self, owner: &str) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.offline_count(owner).await,
        }
    }
    async fn offline_owners(&self) -> Result<Vec<String>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.offline_owners().await,
        }
    }
}

impl PushStore for Storage {
    async fn push_registrations(&self, owner: &str) -> Result<Vec<PushRegistration>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.push_registrations(owner).await,
        }
    }
    async fn enable_push(
        &self,
        owner: &str,
        reg: &PushRegistration,
        max_per_account: u32,
    ) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.enable_push(owner, reg, max_per_account).await,
        }
    }
    async fn disable_push(
        &self,
        owner: &str,
        service: &str,
        node: Option<&str>,
    ) -> Result<u64, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.disable_push(owner, service, node).await,
        }
    }
}

impl BlocklistStore for Storage {
    async fn blocklist(&self, owner: &str) -> Result<Vec<String>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.blocklist(owner).await,
        }
    }
    async fn block(&self, owner: &str, jids: &[String]) -> Result<Vec<String>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.block(owner, jids).await,
        }
    }
    async fn block_within(
        &self,
        owner: &str,
        jids: &[String],
        max: u32,
    ) -> Result<Option<Vec<String>>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.block_within(owner, jids, max).await,
        }
    }
    async fn unblock(&self, owner: &str, jids: &[String]) -> Result<Vec<String>, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.unblock(owner, jids).await,
        }
    }
    async fn is_blocked(&self, owner: &str, candidate: &str) -> Result<bool, StorageError> {
        match &self.pool {
            Pool::Sqlite(db) => db.is_blocked(owner, candidate).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_id_is_22_url_safe_chars_and_random() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 22);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = StorageError::Database("disk I/O error".into());
        assert!(e.to_string().contains("disk I/O error"));
        assert!(e.to_string().contains("writable"));
    }
}
