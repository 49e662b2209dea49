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
        Migration::new(
            4,
            Cow::Borrowed("archive_refs"),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0004_archive_refs.sql").into_sql_str(),
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
    /// The database file (`None` in memory).
    path: Option<std::path::PathBuf>,
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
            // A transaction whose COMMIT or ROLLBACK failed (a full disk) can leave the
            // driver's connection marked as inside a transaction, and every later write fails
            // with "begin_with at non-zero transaction depth" until a restart. Such a
            // connection is closed (which rolls back whatever SQLite still holds) and a fresh
            // one opened, so that writes resume by themselves once there is room again.
            .before_acquire(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection as _;
                    if conn.is_in_transaction() {
                        tracing::warn!(
                            "a database connection was left inside a failed transaction; \
                             it is replaced"
                        );
                        return Ok(false);
                    }
                    Ok(true)
                })
            })
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
        Ok(Sqlite {
            reader,
            writer,
            path: Some(path.to_owned()),
        })
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
            path: None,
        })
    }

    /// Closes both pools; the last connection to close checkpoints the WAL into the main file.
    pub(crate) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Databases up to this size are checked before the server starts taking connections;
/// larger ones in the background (the check reads every page: about two seconds a gigabyte).
const CHECK_BEFORE_START: u64 = 1 << 30;

impl Sqlite {
    /// `PRAGMA quick_check` when the server starts: a damaged page is reported before anyone
    /// reads from it (a user would otherwise silently get none of the messages stored on it).
    /// It reads every page once without comparing indexes with their tables. A database over
    /// [`CHECK_BEFORE_START`] is checked in the background instead, so that a large
    /// installation is not kept down by it; damage is then logged as an error.
    pub(crate) async fn check_integrity(&self) -> Result<(), StorageError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        if size <= CHECK_BEFORE_START {
            return quick_check(&self.reader, &path).await;
        }
        tracing::info!(file = %path.display(), mb = size >> 20, "checking the database's integrity in the background");
        let reader = self.reader.clone();
        tokio::spawn(async move {
            if let Err(e) = quick_check(&reader, &path).await {
                tracing::error!(error = %e, "the database integrity check failed");
            }
        });
        Ok(())
    }
}

async fn quick_check(pool: &SqlitePool, path: &Path) -> Result<(), StorageError> {
    let started = std::time::Instant::now();
    let rows: Vec<String> = sqlx::query_scalar("PRAGMA quick_check(20)")
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    if rows.len() == 1 && rows[0] == "ok" {
        tracing::debug!(file = %path.display(), ms = started.elapsed().as_millis() as u64, "database integrity check passed");
        return Ok(());
    }
    let report = rows.join("; ");
    tracing::error!(file = %path.display(), problems = %report, "the database file is damaged");
    Err(StorageError::Corrupt(format!(
        "{}: {report}",
        path.display()
    )))
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
            ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                return StorageError::Rejected(d.message().to_owned());
            }
            _ => {}
        }
        // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26), with their extended codes.
        if d.code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 11 | 26))
        {
            report_corruption(d.message());
            return StorageError::Corrupt(d.message().to_owned());
        }
    }
    StorageError::Database(e.to_string())
}

/// Logs damage found while the server runs: once a minute at most, with what to do.
fn report_corruption(what: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(problem = %what,
            "the database file is damaged: reads of the damaged pages fail (users miss the messages on them); \
             stop the server, keep a copy of the file, and restore the last backup or salvage it with `sqlite3 zorg.db .recover`");
    }
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
