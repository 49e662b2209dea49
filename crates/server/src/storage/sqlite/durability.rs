//! The durability settings SQLite actually applies, read back from the open connections: an
//! accepted message survives power loss only with the WAL journal and `synchronous=FULL` on the
//! connection that commits. The options ask for them, but a file system without shared memory
//! support silently keeps another journal mode, and a process kill (what a test can do) keeps
//! the page cache, so nothing but reading them back shows that they hold.

use super::{Sqlite, db_error};
use crate::storage::StorageError;

/// `PRAGMA synchronous` as SQLite reports it: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
pub const SYNCHRONOUS_FULL: i64 = 2;

/// What the server's connections run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `PRAGMA journal_mode` (a property of the file in WAL mode): "wal" is required.
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the connection that writes (per connection).
    pub writer_synchronous: i64,
    /// `PRAGMA synchronous` of a reading connection (per connection; readers commit nothing,
    /// but a WAL checkpoint may run on any connection).
    pub reader_synchronous: i64,
}

impl Durability {
    /// What falls short of "an acknowledged write is on disk", in words for the operator.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.journal_mode != "wal" {
            out.push(format!(
                "the database runs with journal_mode={} instead of wal: the file system may not \
                 support it (a network file system?); put the data directory on a local disk",
                self.journal_mode
            ));
        }
        for (who, level) in [
            ("writer", self.writer_synchronous),
            ("reader", self.reader_synchronous),
        ] {
            if level < SYNCHRONOUS_FULL {
                out.push(format!(
                    "the {who} connection runs with synchronous={} ({}) instead of FULL: \
                     acknowledged writes can be lost at power loss",
                    level,
                    synchronous_name(level)
                ));
            }
        }
        out
    }
}

/// The name of a `PRAGMA synchronous` level.
pub fn synchronous_name(level: i64) -> &'static str {
    match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "unknown",
    }
}

impl Sqlite {
    /// Reads the settings back from the writer and one reader.
    pub(crate) async fn durability(&self) -> Result<Durability, StorageError> {
        let journal_mode = sqlx::query_scalar::<_, String>("PRAGMA journal_mode")
            .fetch_one(&self.writer)
            .await
            .map_err(db_error)?;
        let sync = |pool| async move {
            sqlx::query_scalar::<_, i64>("PRAGMA synchronous")
                .fetch_one(pool)
                .await
                .map_err(db_error)
        };
        Ok(Durability {
            journal_mode: journal_mode.to_ascii_lowercase(),
            writer_synchronous: sync(&self.writer).await?,
            reader_synchronous: sync(&self.reader).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_short_of_wal_and_full_is_a_problem() {
        let good = Durability {
            journal_mode: "wal".into(),
            writer_synchronous: 2,
            reader_synchronous: 3,
        };
        assert!(good.problems().is_empty());
        let bad = Durability {
            journal_mode: "delete".into(),
            writer_synchronous: 0,
            reader_synchronous: 1,
        };
        let p = bad.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("journal_mode=delete"), "{}", p[0]);
        assert!(
            p[1].contains("writer connection runs with synchronous=0 (OFF)"),
            "{}",
            p[1]
        );
        assert!(
            p[2].contains("reader connection runs with synchronous=1 (NORMAL)"),
            "{}",
            p[2]
        );
    }

    #[tokio::test]
    async fn a_database_file_reports_wal_and_full() {
        let dir = std::env::temp_dir().join(format!(
            "zorg-durability-{}-{}",
            std::process::id(),
            crate::storage::new_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Sqlite::open(&dir.join("zorg.db")).await.unwrap();
        let d = db.durability().await.unwrap();
        db.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            d,
            Durability {
                journal_mode: "wal".into(),
                writer_synchronous: SYNCHRONOUS_FULL,
                reader_synchronous: SYNCHRONOUS_FULL,
            }
        );
    }
}
