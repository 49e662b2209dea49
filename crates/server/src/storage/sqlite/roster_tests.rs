//! Tests of `RosterStore` on SQLite.

use crate::storage::{AccountStore, RosterItem, RosterStore, Storage, StorageError, Subscription};

const ALICE: &str = "alice@localhost";
const BOB: &str = "bob@localhost";

async fn db_with(accounts: &[&str]) -> Storage {
    let db = Storage::open_memory().await.unwrap();
    for a in accounts {
        db.create_account(a, &[]).await.unwrap();
    }
    db
}

fn item(jid: &str, subscription: Subscription) -> RosterItem {
    RosterItem {
        jid: jid.into(),
        subscription,
        visible: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn empty_roster_is_version_zero() {
    let db = db_with(&[ALICE]).await;
    assert_eq!(db.roster(ALICE).await.unwrap(), (0, vec![]));
    assert_eq!(db.roster_version(ALICE).await.unwrap(), 0);
    // An unknown account has no roster rather than an error: the caller decides what that means.
    assert_eq!(db.roster("nobody@localhost").await.unwrap(), (0, vec![]));
    assert_eq!(db.roster_version("nobody@localhost").await.unwrap(), 0);
}

#[tokio::test]
async fn put_round_trips_every_field() {
    let db = db_with(&[ALICE]).await;
    let full = RosterItem {
        jid: "carol@example.org".into(),
        name: Some("Carol 'the' \"Nurse\" ; DROP TABLE".into()),
        subscription: Subscription::Both,
        ask: true,
        pending_in: true,
        approved: true,
        visible: true,
        // Any characters, including separators a text column would need, and client order kept.
        groups: vec![
            "Zeta".into(),
            "a,b;c\u{1F600}".into(),
            "".into(),
            "Alpha".into(),
        ],
        pending_in_stanza: Some("<presence type='subscribe'/>".into()),
    };
    assert_eq!(db.put_roster_item(ALICE, &full).await.unwrap(), 1);
    assert_eq!(
        db.roster_item(ALICE, &full.jid).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(db.roster(ALICE).await.unwrap(), (1, vec![full.clone()]));

    // Replace: fewer groups and other flags; nothing of the old item may linger.
    let replaced = RosterItem {
        groups: vec!["Work".into()],
        name: None,
        pending_in_stanza: None,
        ask: false,
        ..full.clone()
    };
    assert_eq!(db.put_roster_item(ALICE, &replaced).await.unwrap(), 2);
    assert_eq!(
        db.roster_item(ALICE, &full.jid).await.unwrap(),
        Some(replaced)
    );
    assert_eq!(db.roster(ALICE).await.unwrap().1.len(), 1);
}

#[tokio::test]
async fn versions_increment_per_account() {
    let db = db_with(&[ALICE, BOB]).await;
    assert_eq!(
        db.put_roster_item(ALICE, &item(BOB, Subscription::None))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        db.put_roster_item(ALICE, &item("c@x", Subscription::To))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        db.put_roster_item(BOB, &item(ALICE, Subscription::None))
            .await
            .unwrap(),
        1
    );
    assert_eq!(db.remove_roster_item(ALICE, BOB).await.unwrap(), Some(3));
    // Removing what is not there changes nothing, not even the version.
    assert_eq!(db.remove_roster_item(ALICE, BOB).await.unwrap(), None);
    assert_eq!(db.roster_version(ALICE).await.unwrap(), 3);
    assert_eq!(db.roster_version(BOB).await.unwrap(), 1);
    assert_eq!(
        db.roster(ALICE).await.unwrap(),
        (3, vec![item("c@x", Subscription::To)])
    );
}

#[tokio::test]
async fn put_without_account_is_not_found() {
    let db = db_with(&[]).await;
    assert_eq!(
        db.put_roster_item(ALICE, &item(BOB, Subscription::None))
            .await,
        Err(StorageError::NotFound)
    );
    assert_eq!(db.remove_roster_item(ALICE, BOB).await.unwrap(), None);
}

#[tokio::test]
async fn invisible_items_are_hidden_from_the_roster_only() {
    let db = db_with(&[ALICE]).await;
    let hidden = RosterItem {
        jid: "stranger@example.org".into(),
        pending_in: true,
        visible: false,
        pending_in_stanza: Some("<presence type='subscribe'/>".into()),
        ..Default::default()
    };
    let shown = RosterItem {
        pending_in: true,
        ..item(BOB, Subscription::To)
    };
    db.put_roster_item(ALICE, &hidden).await.unwrap();
    db.put_roster_item(ALICE, &shown).await.unwrap();
    db.put_roster_item(ALICE, &item("c@x", Subscription::None))
        .await
        .unwrap();

    let (version, items) = db.roster(ALICE).await.unwrap();
    assert_eq!(version, 3);
    assert_eq!(items, vec![shown.clone(), item("c@x", Subscription::None)]);
    assert_eq!(
        db.roster_item(ALICE, &hidden.jid).await.unwrap(),
        Some(hidden.clone())
    );
    assert_eq!(db.roster_item(ALICE, "nobody@x").await.unwrap(), None);
    assert_eq!(
        db.presence_items(ALICE).await.unwrap(),
        vec![shown, item("c@x", Subscription::None), hidden]
    );
}

#[tokio::test]
async fn owners_who_may_see_a_contact() {
    let db = db_with(&[ALICE, BOB, "carol@localhost", "dave@localhost"]).await;
    let target = "eve@localhost";
    let from = RosterItem {
        groups: vec!["g1".into(), "g2".into()],
        ..item(target, Subscription::From)
    };
    db.put_roster_item(BOB, &from).await.unwrap();
    db.put_roster_item(ALICE, &item(target, Subscription::Both))
        .await
        .unwrap();
    db.put_roster_item("carol@localhost", &item(target, Subscription::To))
        .await
        .unwrap();
    db.put_roster_item("dave@localhost", &item(target, Subscription::None))
        .await
        .unwrap();
    db.put_roster_item("dave@localhost", &item("other@x", Subscription::Both))
        .await
        .unwrap();
    assert_eq!(
        db.roster_owners_with(target).await.unwrap(),
        vec![
            (ALICE.to_string(), item(target, Subscription::Both)),
            (BOB.to_string(), from),
        ]
    );
    assert!(db.roster_owners_with("nobody@x").await.unwrap().is_empty());
}

#[tokio::test]
async fn caps_count_visible_and_hidden_items_apart() {
    use crate::storage::types::RosterCaps;
    let db = db_with(&[ALICE]).await;
    let caps = RosterCaps {
        visible: 2,
        hidden: 1,
    };
    let hidden = |jid: &str| RosterItem {
        jid: jid.into(),
        pending_in: true,
        pending_in_stanza: Some("<presence type='subscribe'/>".into()),
        ..Default::default()
    };
    let put = |it: RosterItem| {
        let db = db.clone();
        async move { db.put_roster_item_within(ALICE, &it, caps).await.unwrap() }
    };
    assert_eq!(put(item("a@x", Subscription::None)).await, Some(1));
    assert_eq!(put(item("b@x", Subscription::None)).await, Some(2));
    // A third visible item is refused, and nothing moves: not the items, not the version.
    assert_eq!(put(item("c@x", Subscription::None)).await, None);
    assert_eq!(db.roster_version(ALICE).await.unwrap(), 2);
    assert!(db.roster_item(ALICE, "c@x").await.unwrap().is_none());
    // Replacing an item that is already there is no growth.
    assert_eq!(put(item("b@x", Subscription::To)).await, Some(3));
    // Hidden items (pending requests) have their own cap.
    assert_eq!(put(hidden("h1@x")).await, Some(4));
    assert_eq!(put(hidden("h2@x")).await, None);
    // A hidden item that becomes visible needs a visible place.
    let mut shown = hidden("h1@x");
    shown.visible = true;
    assert_eq!(put(shown).await, None);
    assert_eq!(
        db.roster_item(ALICE, "h1@x")
            .await
            .unwrap()
            .map(|i| i.visible),
        Some(false)
    );
}
