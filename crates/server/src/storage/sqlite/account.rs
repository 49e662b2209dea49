//! Accounts and SCRAM credentials on SQLite.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row as _;
use sqlx::sqlite::SqliteConnection;

use super::{BEGIN_WRITE, Sqlite, db_error};
use crate::storage::{ScramHash, ScramRecord, StorageError};

/// The domain part of a bare JID (RFC 7622: neither part may contain '@').
fn domain_of(bare: &str) -> &str {
    bare.split_once('@').map_or(bare, |(_, domain)| domain)
}

fn parse_hash(s: &str) -> Result<ScramHash, StorageError> {
    match s {
        "SHA-1" => Ok(ScramHash::Sha1),
        "SHA-256" => Ok(ScramHash::Sha256),
        _ => Err(StorageError::Database(
            "unknown SCRAM hash name in scram_credentials".into(),
        )),
    }
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Writes `creds` inside the caller's transaction; a repeated hash replaces the earlier record.
async fn insert_credentials(
    conn: &mut SqliteConnection,
    jid: &str,
    creds: &[ScramRecord],
) -> Result<(), StorageError> {
    for c in creds {
        sqlx::query(
            "INSERT INTO scram_credentials (owner, hash, salt, iterations, stored_key, server_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (owner, hash) DO UPDATE SET salt = excluded.salt, \
             iterations = excluded.iterations, stored_key = excluded.stored_key, \
             server_key = excluded.server_key",
        )
        .bind(jid)
        .bind(c.hash.as_str())
        .bind(c.salt.as_slice())
        .bind(i64::from(c.iterations))
        .bind(c.stored_key.as_slice())
        .bind(c.server_key.as_slice())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

impl Sqlite {
    pub(crate) async fn create_account(
        &self,
        jid: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        // A primary-key violation here maps to Conflict.
        sqlx::query("INSERT INTO accounts (jid, domain, created_unix_ms) VALUES (?1, ?2, ?3)")
            .bind(jid)
            .bind(domain_of(jid))
            .bind(now_unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        insert_credentials(&mut tx, jid, creds).await?;
        tx.commit().await.map_err(db_error)
    }

    pub(crate) async fn account_exists(&self, jid: &str) -> Result<bool, StorageError> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE jid = ?1")
            .bind(jid)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    pub(crate) async fn credentials(
        &self,
        jid: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT hash, salt, iterations, stored_key, server_key FROM scram_credentials \
             WHERE owner = ?1 AND hash = ?2",
        )
        .bind(jid)
        .bind(hash.as_str())
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let iterations: i64 = row.try_get("iterations").map_err(db_error)?;
        Ok(Some(ScramRecord {
            hash: parse_hash(row.try_get("hash").map_err(db_error)?)?,
            salt: row.try_get("salt").map_err(db_error)?,
            iterations: u32::try_from(iterations)
                .map_err(|_| StorageError::Database("SCRAM iteration count out of range".into()))?,
            stored_key: row.try_get("stored_key").map_err(db_error)?,
            server_key: row.try_get("server_key").map_err(db_error)?,
        }))
    }

    pub(crate) async fn set_credentials(
        &self,
        jid: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE jid = ?1")
            .bind(jid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Err(StorageError::NotFound);
        }
        // Delete-then-insert: a hash function absent from `creds` must stop working.
        sqlx::query("DELETE FROM scram_credentials WHERE owner = ?1")
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        insert_credentials(&mut tx, jid, creds).await?;
        tx.commit().await.map_err(db_error)
    }

    pub(crate) async fn delete_account(&self, jid: &str) -> Result<bool, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        // Explicit deletes, children first, so that the outcome does not hang on the
        // foreign_keys pragma; the ON DELETE CASCADE clauses are the second line of defence.
        for sql in [
            "DELETE FROM roster_groups WHERE owner = ?1",
            "DELETE FROM roster_items WHERE owner = ?1",
            "DELETE FROM offline_messages WHERE owner = ?1",
            "DELETE FROM offline_messages_v1 WHERE owner = ?1",
            "DELETE FROM archive WHERE owner = ?1",
            "DELETE FROM archive_pref_jids WHERE owner = ?1",
            "DELETE FROM archive_prefs WHERE owner = ?1",
            "DELETE FROM blocklist_items WHERE owner = ?1",
            "DELETE FROM push_registrations WHERE owner = ?1",
            "DELETE FROM scram_credentials WHERE owner = ?1",
        ] {
            sqlx::query(sql)
                .bind(jid)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let deleted = sqlx::query("DELETE FROM accounts WHERE jid = ?1")
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(deleted > 0)
    }

    pub(crate) async fn list_accounts(
        &self,
        domain: Option<&str>,
    ) -> Result<Vec<String>, StorageError> {
        // Two fixed texts rather than `?1 IS NULL OR domain = ?1`, which SQLite plans as a
        // full scan: the per-domain listing must use the (domain, jid) index.
        let rows = match domain {
            Some(domain) => {
                sqlx::query("SELECT jid FROM accounts WHERE domain = ?1 ORDER BY jid")
                    .bind(domain)
                    .fetch_all(&self.reader)
                    .await
            }
            None => {
                sqlx::query("SELECT jid FROM accounts ORDER BY jid")
                    .fetch_all(&self.reader)
                    .await
            }
        }
        .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("jid").map_err(db_error))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{
        AccountStore, BlocklistStore, OfflineStore, RosterItem, RosterStore, ScramHash,
        ScramRecord, Storage, StorageError,
    };

    fn record(hash: ScramHash, fill: u8) -> ScramRecord {
        ScramRecord {
            hash,
            salt: vec![fill; 16],
            iterations: 4096,
            stored_key: vec![fill.wrapping_add(1); 32],
            server_key: vec![fill.wrapping_add(2); 32],
        }
    }

    #[tokio::test]
    async fn create_exists_and_duplicate_is_conflict() {
        let db = Storage::open_memory().await.unwrap();
        assert!(!db.account_exists("alice@localhost").await.unwrap());
        db.create_account("alice@localhost", &[record(ScramHash::Sha256, 1)])
            .await
            .unwrap();
        assert!(db.account_exists("alice@localhost").await.unwrap());
        assert_eq!(
            db.create_account("alice@localhost", &[]).await,
            Err(StorageError::Conflict)
        );
        // The failed attempt must not have touched the original credentials.
        let c = db
            .credentials("alice@localhost", ScramHash::Sha256)
            .await
            .unwrap();
        assert_eq!(c, Some(record(ScramHash::Sha256, 1)));
    }

    #[tokio::test]
    async fn credentials_per_hash_and_replacement() {
        let db = Storage::open_memory().await.unwrap();
        let (sha1, sha256) = (record(ScramHash::Sha1, 1), record(ScramHash::Sha256, 2));
        db.create_account("alice@localhost", &[sha1.clone(), sha256.clone()])
            .await
            .unwrap();
        let get = |h| db.credentials("alice@localhost", h);
        assert_eq!(get(ScramHash::Sha1).await.unwrap(), Some(sha1));
        assert_eq!(get(ScramHash::Sha256).await.unwrap(), Some(sha256));
        assert_eq!(
            db.credentials("bob@localhost", ScramHash::Sha1)
                .await
                .unwrap(),
            None
        );

        let new = record(ScramHash::Sha256, 9);
        db.set_credentials("alice@localhost", std::slice::from_ref(&new))
            .await
            .unwrap();
        assert_eq!(get(ScramHash::Sha256).await.unwrap(), Some(new));
        // Replaced means replaced: the SHA-1 credential is gone.
        assert_eq!(get(ScramHash::Sha1).await.unwrap(), None);
        assert_eq!(
            db.set_credentials("bob@localhost", &[]).await,
            Err(StorageError::NotFound)
        );
    }

    #[tokio::test]
    async fn large_iteration_counts_round_trip() {
        let db = Storage::open_memory().await.unwrap();
        let mut r = record(ScramHash::Sha256, 3);
        r.iterations = u32::MAX;
        db.create_account("a@b", std::slice::from_ref(&r))
            .await
            .unwrap();
        assert_eq!(
            db.credentials("a@b", ScramHash::Sha256).await.unwrap(),
            Some(r)
        );
    }

    #[tokio::test]
    async fn list_accounts_sorted_and_per_domain() {
        let db = Storage::open_memory().await.unwrap();
        for jid in ["zed@a.example", "bob@b.example", "alice@a.example"] {
            db.create_account(jid, &[]).await.unwrap();
        }
        assert_eq!(
            db.list_accounts(None).await.unwrap(),
            ["alice@a.example", "bob@b.example", "zed@a.example"]
        );
        assert_eq!(
            db.list_accounts(Some("a.example")).await.unwrap(),
            ["alice@a.example", "zed@a.example"]
        );
        assert!(
            db.list_accounts(Some("c.example"))
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn delete_cascades_to_everything_the_account_owns() {
        let db = Storage::open_memory().await.unwrap();
        let alice = "alice@localhost";
        db.create_account(alice, &[record(ScramHash::Sha256, 1)])
            .await
            .unwrap();
        db.create_account("bob@localhost", &[]).await.unwrap();
        let item = RosterItem {
            jid: "bob@localhost".into(),
            visible: true,
            groups: vec!["Friends".into()],
            ..Default::default()
        };
        db.put_roster_item(alice, &item).await.unwrap();
        db.put_roster_item(
            "bob@localhost",
            &RosterItem {
                jid: alice.into(),
                ..item.clone()
            },
        )
        .await
        .unwrap();
        db.push_offline(alice, "m1", "<message/>", 1, 10)
            .await
            .unwrap();
        db.block(alice, &["evil@example.org".into()]).await.unwrap();

        assert!(db.delete_account(alice).await.unwrap());
        assert!(!db.account_exists(alice).await.unwrap());
        assert_eq!(
            db.credentials(alice, ScramHash::Sha256).await.unwrap(),
            None
        );
        assert_eq!(db.roster(alice).await.unwrap(), (0, vec![]));
        assert_eq!(db.offline_count(alice).await.unwrap(), 0);
        assert!(db.blocklist(alice).await.unwrap().is_empty());
        // Bob's roster is his own: it still lists alice.
        assert_eq!(db.roster("bob@localhost").await.unwrap().1.len(), 1);
        // Gone means gone: a new account of the same name starts empty, and a second delete is false.
        assert!(!db.delete_account(alice).await.unwrap());
        db.create_account(alice, &[]).await.unwrap();
        assert_eq!(db.roster(alice).await.unwrap(), (0, vec![]));
        assert!(db.blocklist(alice).await.unwrap().is_empty());
    }
}
