//! Data keys on SQLite: the wrapped keys, rotation, background re-encryption and deletion of
//! keys no record uses any more.

use sqlx::{AssertSqlSafe, Row as _};

use super::{BEGIN_WRITE, Sqlite, db_error, to_u64};
use crate::crypto::{Kek, Keyring, RecordAad, RecordKind, random_key};
use crate::storage::StorageError;

/// One stored data key.
#[derive(Debug, Clone)]
pub(crate) struct StoredKey {
    pub(crate) id: i64,
    pub(crate) kek_id: String,
    pub(crate) wrapped: Vec<u8>,
    pub(crate) created_unix_ms: i64,
    pub(crate) active: bool,
}

impl Sqlite {
    pub(crate) async fn data_keys(&self) -> Result<Vec<StoredKey>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, kek_id, wrapped, created_unix_ms, state FROM data_keys ORDER BY id",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    id: r.try_get("id").map_err(db_error)?,
                    kek_id: r.try_get("kek_id").map_err(db_error)?,
                    wrapped: r.try_get("wrapped").map_err(db_error)?,
                    created_unix_ms: r.try_get("created_unix_ms").map_err(db_error)?,
                    active: r.try_get::<String, _>("state").map_err(db_error)? == "active",
                })
            })
            .collect()
    }

    /// Creates a new active data key wrapped by `kek`; the previous active key becomes
    /// 'retiring'. Returns the new key's id.
    pub(crate) async fn new_data_key(&self, kek: &Kek, now_ms: i64) -> Result<i64, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let id: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) + 1 FROM data_keys")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let key = random_key().map_err(StorageError::from)?;
        let wrapped = kek.wrap(id, &key).map_err(StorageError::from)?;
        sqlx::query("UPDATE data_keys SET state = 'retiring' WHERE state = 'active'")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO data_keys (id, kek_id, wrapped, created_unix_ms, state) \
             VALUES (?1, ?2, ?3, ?4, 'active')",
        )
        .bind(id)
        .bind(kek.id())
        .bind(&wrapped)
        .bind(now_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(id)
    }

    /// How many archive and offline records each data key seals: (key id, archive, offline).
    pub(crate) async fn key_usage(&self) -> Result<Vec<(i64, u64, u64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT k.id, \
               (SELECT COUNT(*) FROM archive a WHERE a.key_id = k.id) AS archived, \
               (SELECT COUNT(*) FROM offline_messages o WHERE o.key_id = k.id) AS offline \
             FROM data_keys k ORDER BY k.id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id").map_err(db_error)?,
                    to_u64(r.try_get("archived").map_err(db_error)?)?,
                    to_u64(r.try_get("offline").map_err(db_error)?)?,
                ))
            })
            .collect()
    }

    /// Re-seals up to `limit` records that are not under the active key; returns how many.
    pub(crate) async fn reencrypt_batch(
        &self,
        keys: &Keyring,
        limit: u32,
    ) -> Result<u64, StorageError> {
        let active = keys.keys().active;
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let mut done = 0u64;
        let tables = [
            ("archive", RecordKind::Archive, ""),
            (
                "offline_messages",
                RecordKind::Offline,
                " AND payload IS NOT NULL",
            ),
        ];
        for (table, kind, extra) in tables {
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT seq, owner, id, stamp_unix_ms, key_id, payload FROM {table} \
                 WHERE key_id <> ?1{extra} LIMIT ?2"
            )))
            .bind(active)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            for r in &rows {
                let seq: i64 = r.try_get("seq").map_err(db_error)?;
                let owner: String = r.try_get("owner").map_err(db_error)?;
                let id: String = r.try_get("id").map_err(db_error)?;
                let key_id: i64 = r.try_get("key_id").map_err(db_error)?;
                let payload: Vec<u8> = r.try_get("payload").map_err(db_error)?;
                let aad = RecordAad {
                    kind,
                    owner: &owner,
                    id: &id,
                    stamp_unix_ms: r.try_get("stamp_unix_ms").map_err(db_error)?,
                };
                let plain = keys
                    .open(key_id, &aad, &payload)
                    .map_err(StorageError::from)?;
                let sealed = keys.seal(&aad, &plain).map_err(StorageError::from)?;
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET key_id = ?1, payload = ?2 WHERE seq = ?3 AND key_id = ?4"
                )))
                .bind(sealed.key_id)
                .bind(&sealed.blob)
                .bind(seq)
                .bind(key_id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                done += 1;
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(done)
    }

    /// Deletes 'retiring' keys that no record uses; returns their ids.
    pub(crate) async fn delete_unused_keys(&self) -> Result<Vec<i64>, StorageError> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM data_keys WHERE state = 'retiring' \
               AND NOT EXISTS (SELECT 1 FROM archive a WHERE a.key_id = data_keys.id) \
               AND NOT EXISTS (SELECT 1 FROM offline_messages o WHERE o.key_id = data_keys.id) \
             RETURNING id",
        )
        .fetch_all(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(ids)
    }
}
