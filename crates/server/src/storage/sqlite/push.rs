//! XEP-0357 push registrations on SQLite.

use sqlx::Row as _;

use super::{BEGIN_WRITE, Sqlite, db_error};
use crate::storage::{PushRegistration, StorageError};

impl Sqlite {
    pub(crate) async fn push_registrations(
        &self,
        owner: &str,
    ) -> Result<Vec<PushRegistration>, StorageError> {
        let rows = sqlx::query(
            "SELECT service, node, options FROM push_registrations WHERE owner = ?1 \
             ORDER BY seq DESC",
        )
        .bind(owner)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                Ok(PushRegistration {
                    service: r.try_get("service").map_err(db_error)?,
                    node: r.try_get("node").map_err(db_error)?,
                    options: r.try_get("options").map_err(db_error)?,
                })
            })
            .collect()
    }

    pub(crate) async fn enable_push(
        &self,
        owner: &str,
        reg: &PushRegistration,
        max_per_account: u32,
    ) -> Result<u64, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        // A re-enable moves the registration to the front: seq is the owner's next number.
        sqlx::query(
            "INSERT INTO push_registrations (owner, service, node, options, seq) \
             VALUES (?1, ?2, ?3, ?4, \
               (SELECT COALESCE(MAX(seq), 0) + 1 FROM push_registrations WHERE owner = ?1)) \
             ON CONFLICT (owner, service, node) \
             DO UPDATE SET options = excluded.options, seq = excluded.seq",
        )
        .bind(owner)
        .bind(&reg.service)
        .bind(&reg.node)
        .bind(reg.options.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        // Keep the newest `max_per_account`; the count is bounded by that limit plus one.
        let removed = sqlx::query(
            "DELETE FROM push_registrations WHERE owner = ?1 AND seq <= \
               (SELECT seq FROM push_registrations WHERE owner = ?1 \
                ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )
        .bind(owner)
        .bind(i64::from(max_per_account))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        tx.commit().await.map_err(db_error)?;
        Ok(removed)
    }

    pub(crate) async fn disable_push(
        &self,
        owner: &str,
        service: &str,
        node: Option<&str>,
    ) -> Result<u64, StorageError> {
        let done = match node {
            Some(node) => {
                sqlx::query(
                    "DELETE FROM push_registrations \
                     WHERE owner = ?1 AND service = ?2 AND node = ?3",
                )
                .bind(owner)
                .bind(service)
                .bind(node)
                .execute(&self.writer)
                .await
            }
            None => {
                sqlx::query("DELETE FROM push_registrations WHERE owner = ?1 AND service = ?2")
                    .bind(owner)
                    .bind(service)
                    .execute(&self.writer)
                    .await
            }
        };
        Ok(done.map_err(db_error)?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use crate::storage::{AccountStore, PushRegistration, PushStore, Storage, StorageError};

    const ALICE: &str = "alice@localhost";

    fn reg(service: &str, node: &str, options: Option<&str>) -> PushRegistration {
        PushRegistration {
            service: service.into(),
            node: node.into(),
            options: options.map(str::to_owned),
        }
    }

    fn keys(regs: &[PushRegistration]) -> Vec<(String, String)> {
        regs.iter()
            .map(|r| (r.service.clone(), r.node.clone()))
            .collect()
    }

    fn k(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(s, n)| ((*s).to_owned(), (*n).to_owned()))
            .collect()
    }

    async fn db() -> Storage {
        let db = Storage::open_memory().await.unwrap();
        db.create_account(ALICE, &[]).await.unwrap();
        db.create_account("bob@localhost", &[]).await.unwrap();
        db
    }

    #[tokio::test]
    async fn enable_replaces_options_and_moves_to_front() {
        let db = db().await;
        assert!(db.push_registrations(ALICE).await.unwrap().is_empty());
        db.enable_push(ALICE, &reg("push.example", "n1", None), 10)
            .await
            .unwrap();
        db.enable_push(ALICE, &reg("push.example", "n2", Some("<x/>")), 10)
            .await
            .unwrap();
        assert_eq!(
            keys(&db.push_registrations(ALICE).await.unwrap()),
            k(&[("push.example", "n2"), ("push.example", "n1")])
        );
        // The same (service, node) again: one row, the new options, now the newest.
        db.enable_push(ALICE, &reg("push.example", "n1", Some("<y/>")), 10)
            .await
            .unwrap();
        let regs = db.push_registrations(ALICE).await.unwrap();
        assert_eq!(
            keys(&regs),
            k(&[("push.example", "n1"), ("push.example", "n2")])
        );
        assert_eq!(regs[0].options.as_deref(), Some("<y/>"));
        assert!(
            db.push_registrations("bob@localhost")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            db.enable_push("nobody@localhost", &reg("p", "n", None), 10)
                .await,
            Err(StorageError::NotFound)
        );
    }

    #[tokio::test]
    async fn the_oldest_registration_makes_room() {
        let db = db().await;
        for n in ["a", "b", "c"] {
            assert_eq!(db.enable_push(ALICE, &reg("p", n, None), 3).await, Ok(0));
        }
        assert_eq!(db.enable_push(ALICE, &reg("p", "d", None), 3).await, Ok(1));
        assert_eq!(
            keys(&db.push_registrations(ALICE).await.unwrap()),
            k(&[("p", "d"), ("p", "c"), ("p", "b")])
        );
        // Re-enabling an existing one replaces nothing.
        assert_eq!(db.enable_push(ALICE, &reg("p", "b", None), 3).await, Ok(0));
        assert_eq!(db.push_registrations(ALICE).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn disable_by_service_or_by_node() {
        let db = db().await;
        for (s, n) in [("p", "1"), ("p", "2"), ("q", "1")] {
            db.enable_push(ALICE, &reg(s, n, None), 10).await.unwrap();
        }
        db.enable_push("bob@localhost", &reg("p", "1", None), 10)
            .await
            .unwrap();
        assert_eq!(db.disable_push(ALICE, "p", Some("2")).await, Ok(1));
        assert_eq!(db.disable_push(ALICE, "p", Some("2")).await, Ok(0));
        db.enable_push(ALICE, &reg("p", "3", None), 10)
            .await
            .unwrap();
        assert_eq!(db.disable_push(ALICE, "p", None).await, Ok(2));
        assert_eq!(
            keys(&db.push_registrations(ALICE).await.unwrap()),
            k(&[("q", "1")])
        );
        // Bob's registration with the same service is his own.
        assert_eq!(
            db.push_registrations("bob@localhost").await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn deleting_the_account_removes_its_registrations() {
        let db = db().await;
        db.enable_push(ALICE, &reg("p", "1", Some("<x/>")), 10)
            .await
            .unwrap();
        assert!(db.delete_account(ALICE).await.unwrap());
        db.create_account(ALICE, &[]).await.unwrap();
        assert!(db.push_registrations(ALICE).await.unwrap().is_empty());
    }
}
