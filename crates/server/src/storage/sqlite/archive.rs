//! The message archive on SQLite: batched writes, paged queries, tombstones, preferences and
//! retention. Payloads arrive sealed and leave sealed; `storage::Storage` opens them.

use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row as _};

use super::offline::{OfflineBody, insert_offline};
use super::{BEGIN_WRITE, Sqlite, db_error, to_u64};
use crate::storage::StorageError;
use crate::storage::archive::{
    ArchiveQuery, Bounds, Page, PrefMode, Prefs, Retraction, SealedEntry, Tombstoned, WriteOp,
};

/// A stored entry, still sealed.
pub(crate) struct SealedRow {
    pub(crate) id: String,
    pub(crate) stamp_unix_ms: i64,
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
}

/// A stored entry with its seq, still sealed (for retractions).
pub(crate) struct SealedRowSeq {
    pub(crate) seq: i64,
    pub(crate) id: String,
    pub(crate) stamp_unix_ms: i64,
    pub(crate) key_id: i64,
    pub(crate) payload: Vec<u8>,
}

fn sealed_row(r: &SqliteRow) -> Result<SealedRow, StorageError> {
    Ok(SealedRow {
        id: r.try_get("id").map_err(db_error)?,
        stamp_unix_ms: r.try_get("stamp_unix_ms").map_err(db_error)?,
        key_id: r.try_get("key_id").map_err(db_error)?,
        payload: r.try_get("payload").map_err(db_error)?,
    })
}

/// A page as stored: rows oldest first, plus the counts.
pub(crate) struct SealedPage {
    pub(crate) rows: Vec<SealedRow>,
    pub(crate) count: u64,
    pub(crate) first_index: Option<u64>,
    pub(crate) complete: bool,
}

/// The filter part of a query as SQL, with its binds in order.
struct Filter {
    sql: String,
    binds: Vec<Bind>,
}

#[derive(Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

impl Filter {
    fn push_text(&mut self, clause: &str, v: &str) {
        self.sql.push_str(clause);
        self.binds.push(Bind::Text(v.to_owned()));
    }
    fn push_int(&mut self, clause: &str, v: i64) {
        self.sql.push_str(clause);
        self.binds.push(Bind::Int(v));
    }
}

fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    binds: &'q [Bind],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

impl Sqlite {
    /// Commits a batch of writer operations in one transaction. Returns one result per
    /// operation. An operation refused by a constraint (an account that does not exist, a
    /// full offline store) fails alone; any other error fails the whole batch, which the writer
    /// then retries. Nothing here looks anything up beyond the rows it writes: targets of
    /// corrections and retractions were found before the operations were queued.
    pub(crate) async fn write_batch(
        &self,
        ops: &[WriteOp],
    ) -> Result<Vec<Result<(), StorageError>>, StorageError> {
        // Batches commit in order, so barriers alone have nothing left to wait for.
        if ops.iter().all(|op| matches!(op, WriteOp::Flush(_))) {
            return Ok(vec![Ok(()); ops.len()]);
        }
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let mut results = Vec::with_capacity(ops.len());
        // Plain inserts are written ROWS at a time: one statement (one trip to the driver's
        // thread) instead of one per message. Anything that depends on what came before (an
        // offline pointer, a retraction) first writes what is pending.
        let mut pending: Vec<&SealedEntry> = Vec::with_capacity(ROWS);
        for op in ops {
            if let WriteOp::Insert(entry) = op {
                pending.push(entry);
                if pending.len() == ROWS {
                    insert_rows(&mut tx, &pending).await?;
                    pending.clear();
                }
                // A row for an account that does not exist is left out; nobody waits for an
                // insert's result.
                results.push(Ok(()));
                continue;
            }
            if matches!(op, WriteOp::Flush(_)) {
                results.push(Ok(()));
                continue;
            }
            if !pending.is_empty() {
                insert_rows(&mut tx, &pending).await?;
                pending.clear();
            }
            let r = match op {
                WriteOp::StoreOffline { entry, max, .. } => {
                    store_offline(&mut tx, entry, *max).await
                }
                WriteOp::LinkOffline { owner, id, max, .. } => {
                    link_offline(&mut tx, owner, id, *max).await
                }
                WriteOp::Retract(rows) => tombstone_rows(&mut tx, rows).await,
                WriteOp::Delete { owner, id } => {
                    sqlx::query("DELETE FROM archive WHERE owner = ?1 AND id = ?2")
                        .bind(owner)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map(|_| ())
                        .map_err(db_error)
                }
                WriteOp::Insert(_) | WriteOp::Flush(_) => Ok(()),
            };
            match r {
                Err(e) if transient(&e) => return Err(e),
                r => results.push(r),
            }
        }
        if !pending.is_empty() {
            insert_rows(&mut tx, &pending).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(results)
    }

    /// The seq of the newest message of the conversation with `id` as its `id` attribute, in
    /// the given direction (XEP-0308 corrections refer to it). An index probe on a reader.
    pub(crate) async fn find_by_msg_id(
        &self,
        owner: &str,
        with_bare: &str,
        outgoing: bool,
        id: &str,
    ) -> Result<Option<i64>, StorageError> {
        sqlx::query_scalar(
            "SELECT seq FROM archive INDEXED BY archive_by_msg_id \
             WHERE owner = ?1 AND with_bare = ?2 AND msg_id = ?4 AND outgoing = ?3 \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(owner)
        .bind(with_bare)
        .bind(i64::from(outgoing))
        .bind(id)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)
    }

    /// The seq of the message a retraction names: the newest of the conversation, in the
    /// retraction's direction, not yet retracted, whose origin-id or `id` attribute is the
    /// target. Two index probes on a reader.
    pub(crate) async fn find_original(&self, r: &Retraction) -> Result<Option<i64>, StorageError> {
        sqlx::query_scalar(
            "SELECT MAX(seq) FROM ( \
               SELECT seq FROM archive INDEXED BY archive_by_origin_id \
                 WHERE owner = ?1 AND with_bare = ?2 AND origin_id = ?4 \
                   AND outgoing = ?3 AND retracted = 0 \
               UNION ALL \
               SELECT seq FROM archive INDEXED BY archive_by_msg_id \
                 WHERE owner = ?1 AND with_bare = ?2 AND msg_id = ?4 \
                   AND outgoing = ?3 AND retracted = 0)",
        )
        .bind(&r.owner)
        .bind(&r.with_bare)
        .bind(i64::from(r.outgoing))
        .bind(&r.target)
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)
    }

    /// The original at `seq` and its corrections that are not retracted yet, still sealed.
    pub(crate) async fn retraction_rows(
        &self,
        owner: &str,
        seq: i64,
    ) -> Result<Vec<SealedRowSeq>, StorageError> {
        let rows = sqlx::query(
            "SELECT seq, id, stamp_unix_ms, key_id, payload FROM archive \
             WHERE seq = ?2 AND owner = ?1 AND retracted = 0 \
             UNION ALL \
             SELECT seq, id, stamp_unix_ms, key_id, payload FROM archive \
               INDEXED BY archive_corrections \
             WHERE corrects = ?2 AND owner = ?1 AND retracted = 0",
        )
        .bind(owner)
        .bind(seq)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(SealedRowSeq {
                    seq: r.try_get("seq").map_err(db_error)?,
                    id: r.try_get("id").map_err(db_error)?,
                    stamp_unix_ms: r.try_get("stamp_unix_ms").map_err(db_error)?,
                    key_id: r.try_get("key_id").map_err(db_error)?,
                    payload: r.try_get("payload").map_err(db_error)?,
                })
            })
            .collect()
    }

    /// One page of `owner`'s archive. `Err(NotFound)` when a paging or filter id is unknown.
    pub(crate) async fn query_archive(
        &self,
        owner: &str,
        q: &ArchiveQuery,
    ) -> Result<SealedPage, StorageError> {
        let mut f = Filter {
            sql: String::new(),
            binds: vec![Bind::Text(owner.to_owned())],
        };
        if let Some((bare, resource)) = &q.with {
            f.push_text(" AND with_bare = ?", bare);
            if let Some(r) = resource {
                f.push_text(" AND with_resource = ?", r);
            }
        }
        if let Some(s) = q.start {
            f.push_int(" AND stamp_unix_ms >= ?", s);
        }
        if let Some(e) = q.end {
            f.push_int(" AND stamp_unix_ms <= ?", e);
        }
        if let Some(id) = &q.after_id {
            let seq = self.seq_of(owner, id).await?;
            f.push_int(" AND seq > ?", seq);
        }
        if let Some(id) = &q.before_id {
            let seq = self.seq_of(owner, id).await?;
            f.push_int(" AND seq < ?", seq);
        }
        if !q.ids.is_empty() {
            f.sql.push_str(" AND id IN (");
            for (i, id) in q.ids.iter().enumerate() {
                f.sql.push_str(if i == 0 { "?" } else { ", ?" });
                f.binds.push(Bind::Text(id.clone()));
            }
            f.sql.push(')');
        }
        let count_sql = format!("SELECT COUNT(*) FROM archive WHERE owner = ?{}", f.sql);
        let count: i64 = bind_all(sqlx::query(AssertSqlSafe(count_sql)), &f.binds)
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        let limit = i64::from(q.max) + 1;
        let mut page = Filter {
            sql: f.sql.clone(),
            binds: f.binds.clone(),
        };
        let forward = match &q.page {
            Page::Forward(after) => {
                if let Some(id) = after {
                    let seq = self.seq_of(owner, id).await?;
                    page.push_int(" AND seq > ?", seq);
                }
                true
            }
            Page::Backward(before) => {
                if let Some(id) = before {
                    let seq = self.seq_of(owner, id).await?;
                    page.push_int(" AND seq < ?", seq);
                }
                false
            }
        };
        let order = if forward { "ASC" } else { "DESC" };
        page.push_int(&format!(" ORDER BY seq {order} LIMIT ?"), limit);
        let sql = format!(
            "SELECT seq, id, stamp_unix_ms, key_id, payload FROM archive WHERE owner = ?{}",
            page.sql
        );
        let mut rows = bind_all(sqlx::query(AssertSqlSafe(sql)), &page.binds)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        let complete = rows.len() as i64 <= i64::from(q.max);
        rows.truncate(q.max as usize);
        if !forward {
            rows.reverse();
        }
        let first_index = match rows.first() {
            None => None,
            Some(r) => {
                let first_seq: i64 = r.try_get("seq").map_err(db_error)?;
                // The position among all matches: the matches before the first entry.
                let sql = format!(
                    "SELECT COUNT(*) FROM archive WHERE owner = ?{} AND seq < ?",
                    f.sql
                );
                let mut binds = f.binds;
                binds.push(Bind::Int(first_seq));
                let n: i64 = bind_all(sqlx::query(AssertSqlSafe(sql)), &binds)
                    .fetch_one(&self.reader)
                    .await
                    .map_err(db_error)?
                    .try_get(0)
                    .map_err(db_error)?;
                Some(to_u64(n)?)
            }
        };
        Ok(SealedPage {
            rows: rows.iter().map(sealed_row).collect::<Result<_, _>>()?,
            count: to_u64(count)?,
            first_index,
            complete,
        })
    }

    async fn seq_of(&self, owner: &str, id: &str) -> Result<i64, StorageError> {
        sqlx::query_scalar("SELECT seq FROM archive WHERE owner = ?1 AND id = ?2")
            .bind(owner)
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?
            .ok_or(StorageError::NotFound)
    }

    /// The first and last entries of `owner`'s archive.
    pub(crate) async fn archive_bounds(&self, owner: &str) -> Result<Bounds, StorageError> {
        let one = |order: &'static str| {
            format!(
                "SELECT id, stamp_unix_ms FROM archive WHERE owner = ?1 ORDER BY seq {order} LIMIT 1"
            )
        };
        let mut out = Vec::with_capacity(2);
        for sql in [one("ASC"), one("DESC")] {
            let row = sqlx::query(AssertSqlSafe(sql))
                .bind(owner)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_error)?;
            match row {
                Some(r) => out.push((
                    r.try_get::<String, _>("id").map_err(db_error)?,
                    r.try_get::<i64, _>("stamp_unix_ms").map_err(db_error)?,
                )),
                None => return Ok(None),
            }
        }
        let last = out.pop();
        let first = out.pop();
        Ok(first.zip(last))
    }

    /// The account's preferences, `None` without a stored choice.
    pub(crate) async fn archive_prefs(&self, owner: &str) -> Result<Option<Prefs>, StorageError> {
        let default: Option<String> =
            sqlx::query_scalar("SELECT default_mode FROM archive_prefs WHERE owner = ?1")
                .bind(owner)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_error)?;
        let Some(default) = default else {
            return Ok(None);
        };
        let rows =
            sqlx::query("SELECT jid, mode FROM archive_pref_jids WHERE owner = ?1 ORDER BY jid")
                .bind(owner)
                .fetch_all(&self.reader)
                .await
                .map_err(db_error)?;
        let mut prefs = Prefs {
            default: PrefMode::parse(&default)
                .ok_or_else(|| StorageError::Database("unknown archive default".into()))?,
            always: Vec::new(),
            never: Vec::new(),
        };
        for r in rows {
            let jid: String = r.try_get("jid").map_err(db_error)?;
            let mode: String = r.try_get("mode").map_err(db_error)?;
            if mode == "never" {
                prefs.never.push(jid);
            } else {
                prefs.always.push(jid);
            }
        }
        Ok(Some(prefs))
    }

    /// Replaces the account's preferences. `Err(NotFound)` without an account.
    pub(crate) async fn set_archive_prefs(
        &self,
        owner: &str,
        prefs: &Prefs,
    ) -> Result<(), StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO archive_prefs (owner, default_mode) VALUES (?1, ?2) \
             ON CONFLICT (owner) DO UPDATE SET default_mode = excluded.default_mode",
        )
        .bind(owner)
        .bind(prefs.default.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM archive_pref_jids WHERE owner = ?1")
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (mode, list) in [("always", &prefs.always), ("never", &prefs.never)] {
            for jid in list {
                sqlx::query(
                    "INSERT INTO archive_pref_jids (owner, jid, mode) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (owner, jid) DO UPDATE SET mode = excluded.mode",
                )
                .bind(owner)
                .bind(jid)
                .bind(mode)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            }
        }
        tx.commit().await.map_err(db_error)
    }

    /// Deletes up to `batch` entries older than `before` of accounts in `domain`; returns how
    /// many. Small batches keep the write lock short while a server runs.
    pub(crate) async fn expire_archive(
        &self,
        domain: &str,
        before_unix_ms: i64,
        batch: u32,
    ) -> Result<u64, StorageError> {
        let done = sqlx::query(
            "DELETE FROM archive WHERE seq IN (SELECT a.seq FROM archive a \
               JOIN accounts ac ON ac.jid = a.owner \
               WHERE ac.domain = ?1 AND a.stamp_unix_ms < ?2 LIMIT ?3)",
        )
        .bind(domain)
        .bind(before_unix_ms)
        .bind(i64::from(batch))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}

/// Rows per multi-row insert: 11 parameters each, far below SQLite's limit of 32,766.
const ROWS: usize = 64;

/// Inserts entries in one statement; rows whose owner has no account are left out, and so is
/// a row whose id the owner's archive holds already (ids are random: only a retried batch
/// could repeat one).
async fn insert_rows(
    tx: &mut sqlx::SqliteConnection,
    rows: &[&SealedEntry],
) -> Result<(), StorageError> {
    let mut sql = String::with_capacity(320 + rows.len() * 26);
    sql.push_str(
        "INSERT OR IGNORE INTO archive (owner, id, stamp_unix_ms, with_bare, with_resource, \
         outgoing, msg_id, origin_id, corrects, key_id, payload) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
           v.column8, v.column9, v.column10, v.column11 FROM (VALUES ",
    );
    for i in 0..rows.len() {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?,?,?,?)"
        });
    }
    sql.push_str(") AS v WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = v.column1)");
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for r in rows {
        let e = &r.meta;
        q = q
            .bind(&e.owner)
            .bind(&e.id)
            .bind(e.stamp_unix_ms)
            .bind(&e.with_bare)
            .bind(&e.with_resource)
            .bind(i64::from(e.outgoing))
            .bind(&e.msg_id)
            .bind(&e.origin_id)
            .bind(r.corrects_seq)
            .bind(r.key_id)
            .bind(&r.payload);
    }
    q.execute(&mut *tx).await.map_err(db_error)?;
    Ok(())
}

/// Whether a failed operation failed the transaction (retry the batch) rather than being
/// refused on its own by a constraint.
fn transient(e: &StorageError) -> bool {
    matches!(e, StorageError::Database(_))
}

/// Inserts one archive row (with its correction link) and queues it in the offline store,
/// unless the account holds `max` offline messages already: both or neither.
async fn store_offline(
    tx: &mut sqlx::SqliteConnection,
    entry: &SealedEntry,
    max: u32,
) -> Result<(), StorageError> {
    let e = &entry.meta;
    let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM offline_messages WHERE owner = ?1")
        .bind(&e.owner)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    if held >= i64::from(max) {
        let exists = sqlx::query_scalar::<_, i64>("SELECT 1 FROM accounts WHERE jid = ?1")
            .bind(&e.owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        return Err(match exists {
            Some(_) => StorageError::QuotaExceeded,
            None => StorageError::NotFound,
        });
    }
    let seq = insert_one(&mut *tx, entry).await?;
    let Some(seq) = seq else {
        return Err(StorageError::NotFound);
    };
    let body = OfflineBody::Archived(seq);
    if insert_offline(&mut *tx, &e.owner, &e.id, e.stamp_unix_ms, body, max).await? {
        Ok(())
    } else {
        Err(StorageError::QuotaExceeded)
    }
}

/// Queues an archived entry for its offline owner.
async fn link_offline(
    tx: &mut sqlx::SqliteConnection,
    owner: &str,
    id: &str,
    max: u32,
) -> Result<(), StorageError> {
    let found: Option<(i64, i64)> =
        sqlx::query_as("SELECT seq, stamp_unix_ms FROM archive WHERE owner = ?1 AND id = ?2")
            .bind(owner)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
    let Some((seq, stamp)) = found else {
        return Err(StorageError::NotFound);
    };
    let body = OfflineBody::Archived(seq);
    if insert_offline(&mut *tx, owner, id, stamp, body, max).await? {
        Ok(())
    } else {
        Err(StorageError::QuotaExceeded)
    }
}

/// Inserts one entry with its correction link; `None` when the owner has no account.
async fn insert_one(
    tx: &mut sqlx::SqliteConnection,
    entry: &SealedEntry,
) -> Result<Option<i64>, StorageError> {
    let e = &entry.meta;
    let done = sqlx::query(
        "INSERT INTO archive (owner, id, stamp_unix_ms, with_bare, with_resource, outgoing, \
           msg_id, origin_id, corrects, key_id, payload) \
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 \
         WHERE EXISTS (SELECT 1 FROM accounts WHERE jid = ?1)",
    )
    .bind(&e.owner)
    .bind(&e.id)
    .bind(e.stamp_unix_ms)
    .bind(&e.with_bare)
    .bind(&e.with_resource)
    .bind(i64::from(e.outgoing))
    .bind(&e.msg_id)
    .bind(&e.origin_id)
    .bind(entry.corrects_seq)
    .bind(entry.key_id)
    .bind(&entry.payload)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    Ok((done.rows_affected() == 1).then(|| done.last_insert_rowid()))
}

/// Replaces rows by their tombstones; a row retracted meanwhile is left as it is.
async fn tombstone_rows(
    tx: &mut sqlx::SqliteConnection,
    rows: &[Tombstoned],
) -> Result<(), StorageError> {
    for t in rows {
        sqlx::query(
            "UPDATE archive SET payload = ?1, key_id = ?2, retracted = 1 \
             WHERE seq = ?3 AND retracted = 0",
        )
        .bind(&t.payload)
        .bind(t.key_id)
        .bind(t.seq)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    }
    Ok(())
}
