//! Offline messages on SQLite (RFC 6121 §8.5.2.2.1). The stanzas are sealed by the caller
//! (`storage::OfflineStore for Storage`); a message that is also archived is stored once, as a
//! pointer to its archive entry.

use sqlx::Row as _;

use super::{Sqlite, db_error, to_u64};
use crate::storage::StorageError;

/// One stored row, still sealed: either its own payload, or its archive entry's.
#[derive(Debug, Clone)]
pub(crate) struct SealedOffline {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) stamp_unix_ms: i64,
    /// The sealed stanza and its key.
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
    /// Set when the payload is the archive entry's: (archive id, archive stamp, retracted).
    pub(crate) archived: Option<(String, i64, bool)>,
}

/// Inserts one offline row unless the account holds `max` already. One statement, so that the
/// quota check and the insert are atomic; `Ok(false)` when nothing was inserted.
pub(crate) async fn insert_offline<'e, E: sqlx::SqliteExecutor<'e>>(
    db: E,
    owner: &str,
    id: &str,
    stamp_unix_ms: i64,
    body: OfflineBody<'_>,
    max_per_account: u32,
) -> Result<bool, StorageError> {
    let (archive_seq, key_id, payload) = match body {
        OfflineBody::Sealed { key_id, payload } => (None, Some(key_id), Some(payload)),
        OfflineBody::Archived(seq) => (Some(seq), None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO offline_messages (owner, id, stamp_unix_ms, archive_seq, key_id, payload) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
         WHERE (SELECT COUNT(*) FROM offline_messages WHERE owner = ?1) < ?7",
    )
    .bind(owner)
    .bind(id)
    .bind(stamp_unix_ms)
    .bind(archive_seq)
    .bind(key_id)
    .bind(payload)
    .bind(i64::from(max_per_account))
    .execute(db)
    .await
    .map_err(db_error)?
    .rows_affected();
    Ok(inserted == 1)
}

/// What an offline row holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OfflineBody<'a> {
    /// Its own sealed stanza.
    Sealed {
        /// The data key.
        key_id: i64,
        /// The sealed bytes.
        payload: &'a [u8],
    },
    /// A pointer to the archive entry with this seq.
    Archived(i64),
}

impl Sqlite {
    pub(crate) async fn push_offline(
        &self,
        owner: &str,
        id: &str,
        stamp_unix_ms: i64,
        body: OfflineBody<'_>,
        max_per_account: u32,
    ) -> Result<(), StorageError> {
        if insert_offline(
            &self.writer,
            owner,
            id,
            stamp_unix_ms,
            body,
            max_per_account,
        )
        .await?
        {
            return Ok(());
        }
        self.quota_or_missing(owner).await
    }

    /// Nothing was inserted: the quota, unless the account does not exist at all (with an empty
    /// store and a zero quota the foreign key is never checked).
    pub(crate) async fn quota_or_missing(&self, owner: &str) -> Result<(), StorageError> {
        let exists = sqlx::query("SELECT 1 FROM accounts WHERE jid = ?1")
            .bind(owner)
            .fetch_optional(&self.writer)
            .await
            .map_err(db_error)?;
        Err(if exists.is_some() {
            StorageError::QuotaExceeded
        } else {
            StorageError::NotFound
        })
    }

    pub(crate) async fn offline_owners(&self) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT DISTINCT owner FROM offline_messages")
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get("owner").map_err(db_error))
            .collect()
    }

    pub(crate) async fn offline_messages(
        &self,
        owner: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<SealedOffline>, StorageError> {
        let rows = sqlx::query(
            "SELECT o.seq, o.id, o.stamp_unix_ms, \
                    COALESCE(o.key_id, a.key_id) AS key_id, \
                    COALESCE(o.payload, a.payload) AS payload, \
                    a.id AS archive_id, a.stamp_unix_ms AS archive_stamp, a.retracted \
             FROM offline_messages o LEFT JOIN archive a ON a.seq = o.archive_seq \
             WHERE o.owner = ?1 AND o.seq > ?2 ORDER BY o.seq LIMIT ?3",
        )
        .bind(owner)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let archive_id: Option<String> = row.try_get("archive_id").map_err(db_error)?;
                let archived = match archive_id {
                    Some(aid) => Some((
                        aid,
                        row.try_get("archive_stamp").map_err(db_error)?,
                        row.try_get::<i64, _>("retracted").map_err(db_error)? != 0,
                    )),
                    None => None,
                };
                Ok(SealedOffline {
                    seq: row.try_get("seq").map_err(db_error)?,
                    id: row.try_get("id").map_err(db_error)?,
                    stamp_unix_ms: row.try_get("stamp_unix_ms").map_err(db_error)?,
                    key_id: row.try_get("key_id").map_err(db_error)?,
                    payload: row.try_get("payload").map_err(db_error)?,
                    archived,
                })
            })
            .collect()
    }

    pub(crate) async fn delete_offline_through(
        &self,
        owner: &str,
        seq: i64,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM offline_messages WHERE owner = ?1 AND seq <= ?2")
            .bind(owner)
            .bind(seq)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn offline_count(&self, owner: &str) -> Result<u64, StorageError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM offline_messages WHERE owner = ?1")
            .bind(owner)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?;
        to_u64(row.try_get("n").map_err(db_error)?)
    }

    /// Plaintext offline rows left by a version before encryption at rest (0001's table).
    pub(crate) async fn legacy_offline(
        &self,
    ) -> Result<Vec<(String, String, String, i64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT owner, id, stanza, stamp_unix_ms FROM offline_messages_v1 ORDER BY seq",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("owner").map_err(db_error)?,
                    r.try_get("id").map_err(db_error)?,
                    r.try_get("stanza").map_err(db_error)?,
                    r.try_get("stamp_unix_ms").map_err(db_error)?,
                ))
            })
            .collect()
    }

    /// Removes the legacy plaintext rows once they were sealed into the new table.
    pub(crate) async fn clear_legacy_offline(&self) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM offline_messages_v1")
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{AccountStore, OfflineStore, Storage, StorageError, new_id};

    const ALICE: &str = "alice@localhost";

    async fn db() -> Storage {
        let db = Storage::open_memory().await.unwrap();
        db.create_account(ALICE, &[]).await.unwrap();
        db.create_account("bob@localhost", &[]).await.unwrap();
        db
    }

    #[tokio::test]
    async fn arrival_order_and_fields() {
        let db = db().await;
        let ids: Vec<String> = (0..5).map(|_| new_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            let stamp = 1_000 - i64::try_from(i).unwrap(); // stamps must not decide the order
            db.push_offline(ALICE, id, &format!("<message n='{i}'/>"), stamp, 100)
                .await
                .unwrap();
        }
        db.push_offline("bob@localhost", "b1", "<message/>", 5, 100)
            .await
            .unwrap();
        let msgs = db.offline_messages(ALICE).await.unwrap();
        assert_eq!(msgs.len(), 5);
        assert!(msgs.windows(2).all(|w| w[0].seq < w[1].seq));
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.id, ids[i]);
            assert_eq!(m.stanza, format!("<message n='{i}'/>"));
            assert_eq!(m.stamp_unix_ms, 1_000 - i64::try_from(i).unwrap());
        }
        assert_eq!(db.offline_count(ALICE).await.unwrap(), 5);
        assert_eq!(db.offline_count("bob@localhost").await.unwrap(), 1);
        assert_eq!(db.offline_count("nobody@localhost").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn delete_through_keeps_later_and_other_accounts() {
        let db = db().await;
        for i in 0..4 {
            db.push_offline(ALICE, &format!("m{i}"), "<message/>", i, 100)
                .await
                .unwrap();
        }
        db.push_offline("bob@localhost", "b1", "<message/>", 0, 100)
            .await
            .unwrap();
        let msgs = db.offline_messages(ALICE).await.unwrap();
        assert_eq!(
            db.delete_offline_through(ALICE, msgs[1].seq).await.unwrap(),
            2
        );
        let left: Vec<_> = db
            .offline_messages(ALICE)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(left, ["m2", "m3"]);
        // Bob's seq may be below alice's last one: his message must survive her delete.
        assert_eq!(db.delete_offline_through(ALICE, i64::MAX).await.unwrap(), 2);
        assert_eq!(db.offline_count("bob@localhost").await.unwrap(), 1);
        assert_eq!(db.delete_offline_through(ALICE, i64::MAX).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn seq_is_never_reused_after_delete() {
        let db = db().await;
        db.push_offline(ALICE, "m1", "<message/>", 0, 100)
            .await
            .unwrap();
        let first = db.offline_messages(ALICE).await.unwrap()[0].seq;
        db.delete_offline_through(ALICE, first).await.unwrap();
        db.push_offline(ALICE, "m2", "<message/>", 0, 100)
            .await
            .unwrap();
        // A stale delete-through (from a session that saw only m1) must not remove m2.
        assert_eq!(db.delete_offline_through(ALICE, first).await.unwrap(), 0);
        assert_eq!(db.offline_count(ALICE).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn quota_is_per_account() {
        let db = db().await;
        for i in 0..3 {
            db.push_offline(ALICE, &format!("m{i}"), "<message/>", 0, 3)
                .await
                .unwrap();
        }
        assert_eq!(
            db.push_offline(ALICE, "m3", "<message/>", 0, 3).await,
            Err(StorageError::QuotaExceeded)
        );
        assert_eq!(db.offline_count(ALICE).await.unwrap(), 3);
        db.push_offline("bob@localhost", "b1", "<message/>", 0, 3)
            .await
            .unwrap();
        // Delivering frees room again.
        let last = db.offline_messages(ALICE).await.unwrap()[0].seq;
        db.delete_offline_through(ALICE, last).await.unwrap();
        db.push_offline(ALICE, "m3", "<message/>", 0, 3)
            .await
            .unwrap();
        assert_eq!(
            db.push_offline("bob@localhost", "b2", "<message/>", 0, 0)
                .await,
            Err(StorageError::QuotaExceeded)
        );
    }

    #[tokio::test]
    async fn unknown_account_and_duplicate_id() {
        let db = db().await;
        for quota in [0, 10] {
            assert_eq!(
                db.push_offline("nobody@localhost", "x", "<message/>", 0, quota)
                    .await,
                Err(StorageError::NotFound)
            );
        }
        db.push_offline(ALICE, "same", "<message/>", 0, 10)
            .await
            .unwrap();
        assert_eq!(
            db.push_offline(ALICE, "same", "<message/>", 0, 10).await,
            Err(StorageError::Conflict)
        );
        // Ids are per account.
        db.push_offline("bob@localhost", "same", "<message/>", 0, 10)
            .await
            .unwrap();
    }
}
