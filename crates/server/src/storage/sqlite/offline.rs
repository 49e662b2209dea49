//! Offline messages on SQLite (RFC 6121 §8.5.2.2.1).

use sqlx::Row as _;

use super::{Sqlite, db_error, to_u64};
use crate::storage::{OfflineMessage, StorageError};

impl Sqlite {
    pub(crate) async fn push_offline(
        &self,
        owner: &str,
        id: &str,
        stanza: &str,
        stamp_unix_ms: i64,
        max_per_account: u32,
    ) -> Result<(), StorageError> {
        // One statement, so the quota check and the insert are atomic without a transaction:
        // nothing is inserted when the count has reached the limit. The count walks the
        // (owner, seq) index, bounded by the quota itself.
        let inserted = sqlx::query(
            "INSERT INTO offline_messages (owner, id, stanza, stamp_unix_ms) \
             SELECT ?1, ?2, ?3, ?4 \
             WHERE (SELECT COUNT(*) FROM offline_messages WHERE owner = ?1) < ?5",
        )
        .bind(owner)
        .bind(id)
        .bind(stanza)
        .bind(stamp_unix_ms)
        .bind(i64::from(max_per_account))
        .execute(&self.writer)
        .await
        .map_err(db_error)?
        .rows_affected();
        if inserted == 1 {
            return Ok(());
        }
        // Nothing inserted: the quota, unless the account does not exist at all (with an empty
        // store and a zero quota the foreign key is never checked).
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
    ) -> Result<Vec<OfflineMessage>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, id, stanza, stamp_unix_ms FROM offline_messages \
             WHERE owner = ?1 ORDER BY seq",
        )
        .bind(owner)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                Ok(OfflineMessage {
                    seq: row.try_get("seq").map_err(db_error)?,
                    id: row.try_get("id").map_err(db_error)?,
                    stanza: row.try_get("stanza").map_err(db_error)?,
                    stamp_unix_ms: row.try_get("stamp_unix_ms").map_err(db_error)?,
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
