//! Rosters (RFC 6121) on SQLite: items, their groups and the per-account version counter.

use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;

use super::{BEGIN_WRITE, Sqlite, db_error, to_u64};
use crate::storage::types::RosterCaps;
use crate::storage::{RosterItem, StorageError, Subscription};

/// One SELECT text per query, all with the same columns: items joined with their groups, one row
/// per group (or one row with a NULL group). Callers order by item, then `g.position`, so that
/// [`fold_items`] sees each item's rows together and in the client's group order.
macro_rules! select_items {
    ($rest:literal) => {
        concat!(
            "SELECT i.owner, i.contact, i.name, i.subscription, i.ask, i.pending_in, i.approved, \
             i.visible, i.pending_in_stanza, g.name AS group_name \
             FROM roster_items AS i LEFT JOIN roster_groups AS g \
             ON g.owner = i.owner AND g.contact = i.contact ",
            $rest
        )
    };
}

/// Builds items from joined rows (see [`select_items`]).
fn fold_items(rows: &[SqliteRow]) -> Result<Vec<(String, RosterItem)>, StorageError> {
    let mut out: Vec<(String, RosterItem)> = Vec::new();
    for row in rows {
        let owner: String = row.try_get("owner").map_err(db_error)?;
        let contact: String = row.try_get("contact").map_err(db_error)?;
        let group: Option<String> = row.try_get("group_name").map_err(db_error)?;
        let continues = matches!(out.last(), Some((o, i)) if *o == owner && i.jid == contact);
        if !continues {
            let subscription: String = row.try_get("subscription").map_err(db_error)?;
            let item = RosterItem {
                jid: contact,
                name: row.try_get("name").map_err(db_error)?,
                subscription: Subscription::parse(&subscription).ok_or_else(|| {
                    StorageError::Database("unknown subscription value in roster_items".into())
                })?,
                ask: row.try_get("ask").map_err(db_error)?,
                pending_in: row.try_get("pending_in").map_err(db_error)?,
                approved: row.try_get("approved").map_err(db_error)?,
                visible: row.try_get("visible").map_err(db_error)?,
                groups: Vec::new(),
                pending_in_stanza: row.try_get("pending_in_stanza").map_err(db_error)?,
            };
            out.push((owner, item));
        }
        if let (Some(group), Some((_, item))) = (group, out.last_mut()) {
            item.groups.push(group);
        }
    }
    Ok(out)
}

fn items_only(rows: &[SqliteRow]) -> Result<Vec<RosterItem>, StorageError> {
    Ok(fold_items(rows)?
        .into_iter()
        .map(|(_, item)| item)
        .collect())
}

/// Bumps the account's roster version inside the caller's transaction; `NotFound` without an
/// account.
async fn bump_version(conn: &mut sqlx::SqliteConnection, owner: &str) -> Result<u64, StorageError> {
    let row = sqlx::query(
        "UPDATE accounts SET roster_version = roster_version + 1 WHERE jid = ?1 \
         RETURNING roster_version",
    )
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?
    .ok_or(StorageError::NotFound)?;
    to_u64(row.try_get("roster_version").map_err(db_error)?)
}

/// Whether storing `item` keeps `owner`'s roster within `caps`: an item that already counts in
/// its class (visible or hidden) may always be replaced; a new one needs a free place.
async fn within_caps(
    conn: &mut sqlx::SqliteConnection,
    owner: &str,
    item: &RosterItem,
    caps: RosterCaps,
) -> Result<bool, StorageError> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM roster_items WHERE owner = ?1 AND visible = ?3) AS n, \
         EXISTS (SELECT 1 FROM roster_items WHERE owner = ?1 AND contact = ?2 AND visible = ?3) \
         AS present",
    )
    .bind(owner)
    .bind(&item.jid)
    .bind(item.visible)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    if row.try_get::<bool, _>("present").map_err(db_error)? {
        return Ok(true);
    }
    let n = to_u64(row.try_get("n").map_err(db_error)?)?;
    let cap = if item.visible {
        caps.visible
    } else {
        caps.hidden
    };
    Ok(n < u64::from(cap))
}

impl Sqlite {
    pub(crate) async fn roster(&self, owner: &str) -> Result<(u64, Vec<RosterItem>), StorageError> {
        // One read transaction: the version must describe exactly the items returned with it.
        let mut tx = self.reader.begin().await.map_err(db_error)?;
        let version = sqlx::query("SELECT roster_version FROM accounts WHERE jid = ?1")
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .map(|r| r.try_get::<i64, _>("roster_version"))
            .transpose()
            .map_err(db_error)?
            .map_or(Ok(0), to_u64)?;
        let rows = sqlx::query(select_items!(
            "WHERE i.owner = ?1 AND i.visible = 1 ORDER BY i.contact, g.position"
        ))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok((version, items_only(&rows)?))
    }

    pub(crate) async fn roster_version(&self, owner: &str) -> Result<u64, StorageError> {
        let row = sqlx::query("SELECT roster_version FROM accounts WHERE jid = ?1")
            .bind(owner)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        match row {
            Some(row) => to_u64(row.try_get("roster_version").map_err(db_error)?),
            None => Ok(0),
        }
    }

    pub(crate) async fn roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<RosterItem>, StorageError> {
        let rows = sqlx::query(select_items!(
            "WHERE i.owner = ?1 AND i.contact = ?2 ORDER BY g.position"
        ))
        .bind(owner)
        .bind(contact)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        Ok(items_only(&rows)?.into_iter().next())
    }

    pub(crate) async fn put_roster_item(
        &self,
        owner: &str,
        item: &RosterItem,
    ) -> Result<u64, StorageError> {
        let no_caps = RosterCaps {
            visible: u32::MAX,
            hidden: u32::MAX,
        };
        let version = self.put_roster_item_within(owner, item, no_caps).await?;
        // Unreachable: no count reaches u32::MAX rows in one roster.
        version.ok_or_else(|| StorageError::Database("roster item over an unlimited cap".into()))
    }

    pub(crate) async fn put_roster_item_within(
        &self,
        owner: &str,
        item: &RosterItem,
        caps: RosterCaps,
    ) -> Result<Option<u64>, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        // First, so that a missing account is NotFound before anything is written.
        let version = bump_version(&mut tx, owner).await?;
        // Inside the write transaction (the writer is one connection, BEGIN IMMEDIATE), so two
        // writers cannot both take the last place. Dropping `tx` rolls the version back.
        if !within_caps(&mut tx, owner, item, caps).await? {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO roster_items (owner, contact, name, subscription, ask, pending_in, \
             approved, visible, pending_in_stanza) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name, \
             subscription = excluded.subscription, ask = excluded.ask, \
             pending_in = excluded.pending_in, approved = excluded.approved, \
             visible = excluded.visible, pending_in_stanza = excluded.pending_in_stanza",
        )
        .bind(owner)
        .bind(&item.jid)
        .bind(item.name.as_deref())
        .bind(item.subscription.as_str())
        .bind(item.ask)
        .bind(item.pending_in)
        .bind(item.approved)
        .bind(item.visible)
        .bind(item.pending_in_stanza.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("DELETE FROM roster_groups WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(&item.jid)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (position, group) in (0i64..).zip(&item.groups) {
            sqlx::query(
                "INSERT INTO roster_groups (owner, contact, position, name) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(owner)
            .bind(&item.jid)
            .bind(position)
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(Some(version))
    }

    pub(crate) async fn remove_roster_item(
        &self,
        owner: &str,
        contact: &str,
    ) -> Result<Option<u64>, StorageError> {
        let mut tx = self
            .writer
            .begin_with(BEGIN_WRITE)
            .await
            .map_err(db_error)?;
        sqlx::query("DELETE FROM roster_groups WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let removed = sqlx::query("DELETE FROM roster_items WHERE owner = ?1 AND contact = ?2")
            .bind(owner)
            .bind(contact)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
        if removed == 0 {
            // Nothing changed, so the version must not move either (dropping `tx` rolls back).
            return Ok(None);
        }
        let version = bump_version(&mut tx, owner).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(version))
    }

    pub(crate) async fn presence_items(
        &self,
        owner: &str,
    ) -> Result<Vec<RosterItem>, StorageError> {
        let rows = sqlx::query(select_items!(
            "WHERE i.owner = ?1 AND (i.visible = 1 OR i.pending_in = 1) \
             ORDER BY i.contact, g.position"
        ))
        .bind(owner)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        items_only(&rows)
    }

    pub(crate) async fn roster_owners_with(
        &self,
        contact: &str,
    ) -> Result<Vec<(String, RosterItem)>, StorageError> {
        let rows = sqlx::query(select_items!(
            "WHERE i.contact = ?1 AND i.subscription IN ('from', 'both') \
             ORDER BY i.owner, g.position"
        ))
        .bind(contact)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        fold_items(&rows)
    }
}

#[cfg(test)]
#[path = "roster_tests.rs"]
mod tests;
