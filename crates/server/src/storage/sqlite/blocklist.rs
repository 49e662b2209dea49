//! XEP-0191 blocklists on SQLite.

use sqlx::Row as _;

use super::{BEGIN_WRITE, Sqlite, db_error};
use crate::storage::StorageError;

/// The four item forms that match `candidate` under XEP-0016 §2.1 (full JID, bare JID,
/// domain/resource, domain); absent forms repeat the bare JID so the query keeps one text.
fn match_forms(candidate: &str) -> [String; 4] {
    // RFC 7622: the resource starts at the first '/', and may itself contain '@' and '/'.
    let (bare, resource) = match candidate.split_once('/') {
        Some((bare, resource)) => (bare, Some(resource)),
        None => (candidate, None),
    };
    let domain = bare.split_once('@').map_or(bare, |(_, domain)| domain);
    match resource {
        Some(resource) => [
            candidate.to_owned(),
            bare.to_owned(),
            format!("{domain}/{resource}"),
            domain.to_owned(),
        ],
        None => [
            bare.to_owned(),
            bare.to_owned(),
            bare.to_owned(),
            domain.to_owned(),
        ],
    }
}

impl Sqlite {
    pub(crate) async fn blocklist(&self, owner: &str) -> Result<Vec<String>, StorageError> {
        let rows = sqlx::query("SELECT item FROM blocklist_items WHERE owner = ?1 ORDER BY item")
            .bind(owner)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("item").map_err(db_error))
            .collect()
    }

    pub(crate) async fn block(
        &self,
        owner: &str,
        jids: &[String],
    ) -> Result<Vec<String>, StorageError> {
        Ok(self
            .block_within(owner, jids, u32::MAX)
            .await?
            .unwrap_or_default())
    }

    pub(crate) async fn block_within(
        &self,
        owner: &str,
        jids: &[String],
        max: u32,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let mut added = Vec::new();
        for jid in jids {
            // DO NOTHING on a present item (or a repeat within `jids`): only new ones count.
            let n = sqlx::query(
                "INSERT INTO blocklist_items (owner, item) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )
            .bind(owner)
            .bind(jid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if n > 0 {
                added.push(jid.clone());
            }
        }
        // Counted inside the write transaction, so concurrent blocks cannot overshoot; a list
        // already over a lowered cap may still take blocks of items it holds.
        if !added.is_empty() {
            let n: i64 = sqlx::query("SELECT count(*) AS n FROM blocklist_items WHERE owner = ?1")
                .bind(owner)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?
                .try_get("n")
                .map_err(db_error)?;
            if n > i64::from(max) {
                // Dropping `tx` rolls the inserts back.
                return Ok(None);
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Some(added))
    }

    pub(crate) async fn unblock(
        &self,
        owner: &str,
        jids: &[String],
    ) -> Result<Vec<String>, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        let mut removed = Vec::new();
        if jids.is_empty() {
            let rows = sqlx::query("DELETE FROM blocklist_items WHERE owner = ?1 RETURNING item")
                .bind(owner)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            for row in &rows {
                removed.push(row.try_get::<String, _>("item").map_err(db_error)?);
            }
            // RETURNING gives no defined order; callers get the sorted order `blocklist` uses.
            removed.sort();
        } else {
            for jid in jids {
                let n = sqlx::query("DELETE FROM blocklist_items WHERE owner = ?1 AND item = ?2")
                    .bind(owner)
                    .bind(jid)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?
                    .rows_affected();
                if n > 0 {
                    removed.push(jid.clone());
                }
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(removed)
    }

    pub(crate) async fn is_blocked(
        &self,
        owner: &str,
        candidate: &str,
    ) -> Result<bool, StorageError> {
        let [a, b, c, d] = match_forms(candidate);
        let row = sqlx::query(
            "SELECT 1 FROM blocklist_items WHERE owner = ?1 AND item IN (?2, ?3, ?4, ?5) LIMIT 1",
        )
        .bind(owner)
        .bind(a)
        .bind(b)
        .bind(c)
        .bind(d)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(row.is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{AccountStore, BlocklistStore, Storage, StorageError};

    const ALICE: &str = "alice@localhost";

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|i| (*i).to_owned()).collect()
    }

    async fn db() -> Storage {
        let db = Storage::open_memory().await.unwrap();
        db.create_account(ALICE, &[]).await.unwrap();
        db.create_account("bob@localhost", &[]).await.unwrap();
        db
    }

    #[tokio::test]
    async fn block_returns_only_new_items() {
        let db = db().await;
        assert!(db.blocklist(ALICE).await.unwrap().is_empty());
        let added = db.block(ALICE, &s(&["z@x", "a@x", "z@x"])).await.unwrap();
        assert_eq!(added, s(&["z@x", "a@x"]));
        let added = db.block(ALICE, &s(&["a@x", "example.net"])).await.unwrap();
        assert_eq!(added, s(&["example.net"]));
        assert_eq!(
            db.blocklist(ALICE).await.unwrap(),
            s(&["a@x", "example.net", "z@x"])
        );
        assert!(db.blocklist("bob@localhost").await.unwrap().is_empty());
        assert_eq!(
            db.block("nobody@localhost", &s(&["a@x"])).await,
            Err(StorageError::NotFound)
        );
    }

    #[tokio::test]
    async fn block_within_refuses_past_the_cap_and_writes_nothing() {
        let db = db().await;
        let added = db
            .block_within(ALICE, &s(&["a@x", "b@x"]), 3)
            .await
            .unwrap();
        assert_eq!(added, Some(s(&["a@x", "b@x"])));
        // Two more would make four: refused, and neither is kept.
        assert_eq!(
            db.block_within(ALICE, &s(&["c@x", "d@x"]), 3).await,
            Ok(None)
        );
        assert_eq!(db.blocklist(ALICE).await.unwrap(), s(&["a@x", "b@x"]));
        // Items already held are no growth, even at the cap.
        db.block_within(ALICE, &s(&["c@x"]), 3).await.unwrap();
        assert_eq!(
            db.block_within(ALICE, &s(&["a@x", "c@x"]), 3).await,
            Ok(Some(Vec::new()))
        );
    }

    #[tokio::test]
    async fn unblock_some_and_all() {
        let db = db().await;
        db.block(ALICE, &s(&["a@x", "b@x", "c@x"])).await.unwrap();
        db.block("bob@localhost", &s(&["a@x"])).await.unwrap();
        let removed = db.unblock(ALICE, &s(&["b@x", "missing@x"])).await.unwrap();
        assert_eq!(removed, s(&["b@x"]));
        assert_eq!(db.unblock(ALICE, &[]).await.unwrap(), s(&["a@x", "c@x"]));
        assert!(db.blocklist(ALICE).await.unwrap().is_empty());
        assert!(db.unblock(ALICE, &[]).await.unwrap().is_empty());
        assert_eq!(db.blocklist("bob@localhost").await.unwrap(), s(&["a@x"]));
    }

    #[tokio::test]
    async fn matching_rules() {
        let db = db().await;
        let blocked = |c: &'static str| {
            let db = db.clone();
            async move { db.is_blocked(ALICE, c).await.unwrap() }
        };

        // A bare JID item blocks that user from any resource, and nobody else.
        db.block(ALICE, &s(&["eve@evil.example"])).await.unwrap();
        assert!(blocked("eve@evil.example").await);
        assert!(blocked("eve@evil.example/phone").await);
        assert!(!blocked("mallory@evil.example").await);
        assert!(!blocked("mallory@evil.example/phone").await);
        assert!(!blocked("evil.example").await);

        // A full JID item blocks that resource only.
        db.block(ALICE, &s(&["carol@x.example/laptop"]))
            .await
            .unwrap();
        assert!(blocked("carol@x.example/laptop").await);
        assert!(!blocked("carol@x.example/phone").await);
        assert!(!blocked("carol@x.example").await);

        // A domain item blocks the domain itself and every JID at it.
        db.block(ALICE, &s(&["spam.example"])).await.unwrap();
        assert!(blocked("spam.example").await);
        assert!(blocked("spam.example/bot").await);
        assert!(blocked("anyone@spam.example").await);
        assert!(blocked("anyone@spam.example/res").await);
        assert!(!blocked("sub.spam.example").await);

        // domain/resource blocks that resource of the domain and any user's same resource there.
        db.block(ALICE, &s(&["svc.example/bot"])).await.unwrap();
        assert!(blocked("svc.example/bot").await);
        assert!(blocked("u@svc.example/bot").await);
        assert!(!blocked("svc.example").await);
        assert!(!blocked("u@svc.example/other").await);
        assert!(!blocked("u@svc.example").await);

        // Resources may contain '@' and '/'; the resource starts at the first '/'.
        db.block(ALICE, &s(&["odd.example/a@b/c"])).await.unwrap();
        assert!(blocked("odd.example/a@b/c").await);
        assert!(!blocked("a@b").await);

        // Blocklists are per owner.
        assert!(
            !db.is_blocked("bob@localhost", "eve@evil.example")
                .await
                .unwrap()
        );
        assert!(
            !db.is_blocked("nobody@localhost", "eve@evil.example")
                .await
                .unwrap()
        );
    }
}
