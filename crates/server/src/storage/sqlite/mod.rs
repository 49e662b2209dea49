//! The SQLite backend: connection pools, pragmas, migrations and error mapping.
//!
//! Two pools over the same file: one writer connection and up to four readers. WAL lets readers
//! run beside the writer; funnelling all writes through one connection queues them in the pool
//! instead of letting several connections spin in SQLite's busy handler (which sleeps in steps of
//! up to 100 ms). Write transactions still start with `BEGIN IMMEDIATE`, so that another process
//! on the same file (the `zorg user` command beside a running server) makes them wait for the
//! lock up front instead of failing at their first write.

mod account;
mod archive;
mod blocklist;
pub(crate) mod durability;
mod keys;
mod offline;
mod push;
mod roster;

pub(crate) use offline::OfflineBody;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::SqlSafeStr as _;
use sqlx::error::ErrorKind;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::StorageError;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers: WAL allows them to run in parallel with each other and with the writer.
const MAX_READERS: u32 = 4;
/// Starts every transaction that writes.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// The migrations, embedded so that the binary carries its schema. Never edit one that shipped:
/// sqlx checks their checksums at every open; add a new version instead.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("core"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0001_core.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("archive"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0002_archive.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("push"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0003_push.sql").into_sql_str(),
            false,
        ),
    ])
}

/// An open SQLite database.
#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    /// Shared by all reads; `query_only` so that a write sent here by mistake fails loudly.
    reader: SqlitePool,
    /// The single connection that writes.
    writer: SqlitePool,
}

impl Sqlite {
    /// Opens or creates the database file and brings its schema up to date.
    pub(crate) async fn open(path: &Path) -> Result<Sqlite, StorageError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an accepted message must survive power loss, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Deleted records (a deleted account's archive, expired messages) are overwritten
            // in the file, not left in free pages.
            .pragma("secure_delete", "ON")
            .busy_timeout(BUSY_TIMEOUT);
        // The writer keeps the archive's index pages in memory (16 MiB instead of SQLite's
        // 2 MiB): inserts touch several indexes at random places, and re-reading evicted pages
        // was most of the cost of archiving under load.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-16384"))
            .await
            .map_err(db_error)?;
        // Migrate before any reader exists, so that no reader sees a half-made schema.
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .connect_with(options.pragma("query_only", "ON"))
            .await
            .map_err(db_error)?;
        Ok(Sqlite { reader, writer })
    }

    /// A private in-memory database on one connection: every new connection to `:memory:` would
    /// be a different, empty database, so the single connection must never be dropped.
    pub(crate) async fn open_memory() -> Result<Sqlite, StorageError> {
        let options = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db_error)?;
        migrate(&pool).await?;
        Ok(Sqlite {
            reader: pool.clone(),
            writer: pool,
        })
    }

    /// Closes both pools; the last connection to close checkpoints the WAL into the main file.
    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
    migrator()
        .run(pool)
        .await
        .map_err(|e| StorageError::Migration(e.to_string()))
}

/// Maps a driver error: constraint violations become the errors callers act on; everything else
/// keeps the driver's message, which names tables and constraints but never bound values.
pub(crate) fn db_error(e: sqlx::Error) -> StorageError {
    if let sqlx::Error::Database(d) = &e {
        match d.kind() {
            ErrorKind::UniqueViolation => return StorageError::Conflict,
            ErrorKind::ForeignKeyViolation => return StorageError::NotFound,
            _ => {}
        }
    }
    StorageError::Database(e.to_string())
}

/// Reads a non-negative counter stored as INTEGER.
pub(crate) fn to_u64(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Database("negative counter in the database".into()))
}

#[cfg(test)]
mod tests {
    use crate::storage::{AccountStore, OfflineStore, RosterItem, RosterStore, Storage};

    /// A directory under the system temp dir, removed when dropped (also when a test fails).
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "zorg-storage-{tag}-{}-{}",
                std::process::id(),
                crate::storage::new_id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn kek() -> crate::crypto::Kek {
        crate::crypto::load_key_text(&"ab".repeat(32)).unwrap()
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_and_nothing_is_stored_in_plaintext() {
        let dir = TempDir::new("plaintext");
        let path = dir.0.join("zorg.sqlite");
        let db = Storage::open(&path).await.unwrap();
        db.unlock(kek()).await.unwrap();
        db.create_account("alice@localhost", &[]).await.unwrap();
        db.push_offline(
            "alice@localhost",
            "m1",
            "<message><body>PLAINTEXT-MARKER-offline</body></message>",
            7,
            10,
        )
        .await
        .unwrap();
        db.archive(crate::storage::archive::NewEntry {
            owner: "alice@localhost".into(),
            id: "a1".into(),
            stamp_unix_ms: 8,
            with_bare: "bob@localhost".into(),
            with_resource: String::new(),
            outgoing: false,
            msg_id: None,
            origin_id: None,
            corrects: None,
            stanza: "<message><body>PLAINTEXT-MARKER-archive</body></message>".into(),
        })
        .await
        .unwrap();
        db.close().await;
        for entry in std::fs::read_dir(&dir.0).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(16).any(|w| w == b"PLAINTEXT-MARKER"));
        }
        let db = Storage::open(&path).await.unwrap();
        let other = crate::crypto::load_key_text(&"cd".repeat(32)).unwrap();
        assert!(matches!(
            db.unlock(other).await,
            Err(crate::storage::StorageError::WrongKey { .. })
        ));
        db.close().await;
        let db = Storage::open(&path).await.unwrap();
        db.unlock(kek()).await.unwrap();
        let msgs = db.offline_messages("alice@localhost").await.unwrap();
        assert!(msgs[0].stanza.contains("PLAINTEXT-MARKER-offline"));
    }

    #[tokio::test]
    async fn plaintext_offline_messages_of_an_older_version_are_sealed_at_unlock() {
        let dir = TempDir::new("legacy");
        let path = dir.0.join("zorg.sqlite");
        let db = Storage::open(&path).await.unwrap();
        db.create_account("alice@localhost", &[]).await.unwrap();
        // A row as version 0001 stored it: plaintext, in the table 0002 renamed.
        let crate::storage::Pool::Sqlite(raw) = &db.pool;
        sqlx::query(
            "INSERT INTO offline_messages_v1 (owner, id, stanza, stamp_unix_ms) \
             VALUES ('alice@localhost', 'old1', '<message><body>LEGACY-PLAINTEXT</body></message>', 5)",
        )
        .execute(&raw.writer)
        .await
        .unwrap();
        db.unlock(kek()).await.unwrap();
        let msgs = db.offline_messages("alice@localhost").await.unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].id, "old1");
        assert!(msgs[0].stanza.contains("LEGACY-PLAINTEXT"));
        assert!(raw.legacy_offline().await.unwrap().is_empty());
        db.close().await;
        for entry in std::fs::read_dir(&dir.0).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!bytes.windows(17).any(|w| w == b"LEGACY-PLAINTEXT<"));
        }
    }

    #[tokio::test]
    async fn file_database_survives_close_and_reopen() {
        let dir = TempDir::new("reopen");
        let path = dir.0.join("zorg.sqlite");
        let db = Storage::open(&path).await.unwrap();
        db.unlock(kek()).await.unwrap();
        db.create_account("alice@localhost", &[]).await.unwrap();
        let item = RosterItem {
            jid: "bob@localhost".into(),
            visible: true,
            ..Default::default()
        };
        db.put_roster_item("alice@localhost", &item).await.unwrap();
        db.push_offline("alice@localhost", "m1", "<message/>", 7, 10)
            .await
            .unwrap();
        db.close().await;
        assert!(db.account_exists("alice@localhost").await.is_err());

        let db = Storage::open(&path).await.unwrap();
        db.unlock(kek()).await.unwrap();
        assert!(db.account_exists("alice@localhost").await.unwrap());
        assert_eq!(db.roster("alice@localhost").await.unwrap(), (1, vec![item]));
        let msgs = db.offline_messages("alice@localhost").await.unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].stanza, "<message/>");
        db.close().await;
    }

    #[tokio::test]
    async fn migrations_are_idempotent() {
        let dir = TempDir::new("migrate");
        let path = dir.0.join("zorg.sqlite");
        let db = Storage::open(&path).await.unwrap();
        db.unlock(kek()).await.unwrap();
        db.create_account("alice@localhost", &[]).await.unwrap();
        db.close().await;
        for _ in 0..2 {
            let db = Storage::open(&path).await.unwrap();
            assert!(db.account_exists("alice@localhost").await.unwrap());
            db.close().await;
        }
    }

    #[tokio::test]
    async fn readers_cannot_write_and_writes_are_visible_to_readers() {
        let dir = TempDir::new("pools");
        let db = super::Sqlite::open(&dir.0.join("zorg.sqlite"))
            .await
            .unwrap();
        let err = sqlx::query("DELETE FROM accounts")
            .execute(&db.reader)
            .await
            .unwrap_err();
        assert!(matches!(
            super::db_error(err),
            crate::storage::StorageError::Database(_)
        ));
        db.create_account("a@b", &[]).await.unwrap();
        assert!(db.account_exists("a@b").await.unwrap());
        // The durability settings hold on every connection, readers included.
        for pool in [&db.reader, &db.writer] {
            let get = |sql| sqlx::query_scalar::<_, String>(sql).fetch_one(pool);
            assert_eq!(get("PRAGMA journal_mode").await.unwrap(), "wal");
            let get = |sql| sqlx::query_scalar::<_, i64>(sql).fetch_one(pool);
            assert_eq!(get("PRAGMA synchronous").await.unwrap(), 2, "FULL");
            assert_eq!(get("PRAGMA foreign_keys").await.unwrap(), 1);
            assert_eq!(get("PRAGMA busy_timeout").await.unwrap(), 5000);
        }
        db.close().await;
    }

    #[tokio::test]
    async fn memory_databases_are_separate() {
        let a = Storage::open_memory().await.unwrap();
        let b = Storage::open_memory().await.unwrap();
        a.create_account("alice@localhost", &[]).await.unwrap();
        assert!(!b.account_exists("alice@localhost").await.unwrap());
    }

    #[tokio::test]
    async fn storage_futures_are_send() {
        let db = Storage::open_memory().await.unwrap();
        let db2 = db.clone();
        tokio::spawn(async move { db2.create_account("alice@localhost", &[]).await })
            .await
            .unwrap()
            .unwrap();
        assert!(db.account_exists("alice@localhost").await.unwrap());
    }
}
