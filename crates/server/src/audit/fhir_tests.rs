//! Tests of the FHIR mapping: a record of every event kind goes through [`BundleWriter`] and
//! the output is checked against the R4 AuditEvent shape by a small structural checker.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;

const OBSERVER: &str = "example.org";

/// How many `Event` variants there are; [`variant`] numbers them below this.
const VARIANTS: usize = 24;

/// Each variant's number. A new variant breaks this match: give it the next number, raise
/// [`VARIANTS`] and add a sample to [`SAMPLES`] (`every_event_kind_has_a_sample` checks).
fn variant(e: &Event) -> usize {
    match e {
        Event::ServerStarted { .. } => 0,
        Event::ServerStopped {} => 1,
        Event::ConfigChanged { .. } => 2,
        Event::KeyChanged { .. } => 3,
        Event::AuthSucceeded { .. } => 4,
        Event::AuthFailed { .. } => 5,
        Event::SessionBound { .. } => 6,
        Event::SessionUnbound { .. } => 7,
        Event::AccountCreated { .. } => 8,
        Event::AccountChanged { .. } => 9,
        Event::AccountDeleted { .. } => 10,
        Event::MessageAccepted { .. } => 11,
        Event::MessageDelivered { .. } => 12,
        Event::MessageBounced { .. } => 13,
        Event::ArchiveQueried { .. } => 14,
        Event::ArchiveRetracted { .. } => 15,
        Event::ArchiveDeleted { .. } => 16,
        Event::S2sAccepted { .. } => 17,
        Event::S2sRefused { .. } => 18,
        Event::AdminAction { .. } => 19,
        Event::AuditExported { .. } => 20,
        Event::AuditPruned { .. } => 21,
        Event::AuditRepaired { .. } => 22,
        Event::Checkpoint(_) => 23,
    }
}

/// Every event kind at least once, as the log writes them, with optional fields both given
/// and left out.
const SAMPLES: &[&str] = &[
    r#"{"event":"server_started","version":"0.1.0","domains":["example.org","care.example.org"],"config_sha256":"aa11"}"#,
    r#"{"event":"server_stopped"}"#,
    r#"{"event":"config_changed","previous_sha256":"aa11","config_sha256":"bb22"}"#,
    r#"{"event":"key_changed","key":"audit_signing_key","change":"created","id":"q83vEjRWeJ8=","by":{"kind":"server"}}"#,
    r#"{"event":"key_changed","key":"data_key","change":"rotated","id":"dk-2","by":{"kind":"cli","os_user":"root","host":"chat1"}}"#,
    r#"{"event":"auth_succeeded","account":"alice@example.org","mechanism":"SCRAM-SHA-256-PLUS","ip":"192.0.2.10"}"#,
    r#"{"event":"auth_failed","account":"alice@example.org","mechanism":"PLAIN","ip":"192.0.2.66","reason":"not-authorized"}"#,
    r#"{"event":"auth_failed","ip":"2001:db8::66","reason":"temporary-auth-failure"}"#,
    r#"{"event":"session_bound","session":"alice@example.org/phone","ip":"192.0.2.10"}"#,
    r#"{"event":"session_bound","session":"alice@example.org/desk","ip":"2001:db8::10","resumed":true}"#,
    r#"{"event":"session_unbound","session":"alice@example.org/phone"}"#,
    r#"{"event":"account_created","account":"carol@example.org","by":{"kind":"cli","os_user":"root","host":"chat1"}}"#,
    r#"{"event":"account_changed","account":"alice@example.org","change":"password","by":{"kind":"account","jid":"alice@example.org/phone","ip":"192.0.2.10"}}"#,
    r#"{"event":"account_deleted","account":"carol@example.org","by":{"kind":"server"}}"#,
    r#"{"event":"message_accepted","id":"m1","from":"bob@care.example.net/ward","to":"alice@example.org","kind":"chat","size":812,"labels":[{"marking":"CONFIDENTIAL","scheme":"urn:example:labels"},{"scheme":"urn:example:other"}],"peer":"care.example.net"}"#,
    r#"{"event":"message_accepted","from":"alice@example.org/phone","to":"","kind":"normal","size":90}"#,
    r#"{"event":"message_delivered","id":"m1","from":"bob@care.example.net/ward","to":"alice@example.org/phone","how":"session"}"#,
    r#"{"event":"message_delivered","id":"m1","from":"bob@care.example.net/ward","to":"alice@example.org","how":"stored"}"#,
    r#"{"event":"message_delivered","from":"bob@care.example.net/ward","to":"alice@example.org/desk","how":"from_storage"}"#,
    r#"{"event":"message_delivered","id":"m2","from":"alice@example.org/phone","to":"bob@care.example.net","how":"forwarded"}"#,
    r#"{"event":"message_bounced","from":"alice@example.org/phone","to":"nobody@example.org","condition":"service-unavailable"}"#,
    r#"{"event":"message_bounced","id":"m3","from":"alice@example.org/phone","to":"x@example.org","condition":"internal-server-error"}"#,
    r#"{"event":"message_bounced","from":"alice@example.org/phone","to":"x@example.org","condition":"<not a condition>"}"#,
    r#"{"event":"archive_queried","by":"alice@example.org/desk","archive":"alice@example.org","with":"bob@care.example.net","start":"2026-11-01T00:00:00Z","end":"2026-11-23T00:00:00Z","results":50}"#,
    r#"{"event":"archive_queried","by":"alice@example.org/desk","archive":"alice@example.org","results":0}"#,
    r#"{"event":"archive_retracted","archive":"alice@example.org","by":"alice@example.org","message":"m1"}"#,
    r#"{"event":"archive_deleted","archive":"example.org","reason":"expired","count":1200}"#,
    r#"{"event":"s2s_accepted","peer":"care.example.net","local":"example.org","direction":"inbound","method":"certificate","ip":"198.51.100.7","certificate":{"serial":"0a1b2c","issuer":"CN=Care Auditor Root,O=Auditor"}}"#,
    r#"{"event":"s2s_accepted","peer":"care.example.net","local":"example.org","direction":"outbound","method":"dialback"}"#,
    r#"{"event":"s2s_refused","peer":"rogue.example.com","local":"example.org","direction":"inbound","reason":"untrusted-root","ip":"203.0.113.9","certificate":{"serial":"ff","issuer":"CN=Rogue"}}"#,
    r#"{"event":"s2s_refused","peer":"far.example.com","local":"example.org","direction":"outbound","reason":"timeout"}"#,
    r#"{"event":"admin_action","by":{"kind":"cli","os_user":"root","host":"chat1"},"action":"user_list"}"#,
    r#"{"event":"admin_action","by":{"kind":"cli","os_user":"root","host":"chat1"},"action":"user_add","target":"carol@example.org"}"#,
    r#"{"event":"admin_action","by":{"kind":"cli","os_user":"auditor","host":"chat1"},"action":"audit_verify"}"#,
    r#"{"event":"audit_exported","by":{"kind":"cli","os_user":"root","host":"chat1"},"account":"alice@example.org","since":"2026-11-01T00:00:00.000Z","until":"2026-12-01T00:00:00.000Z","format":"fhir","records":42}"#,
    r#"{"event":"audit_exported","by":{"kind":"cli","os_user":"root","host":"chat1"},"format":"jsonl","records":0}"#,
    r#"{"event":"audit_pruned","through_seq":1000,"through_hash":"cc33","segments":3}"#,
    r#"{"event":"audit_repaired","truncated_bytes":37}"#,
    r#"{"event":"checkpoint","covers":41,"head":"dd44","key":"q83vEjRWeJ8=","signature":"c2lnbmF0dXJl"}"#,
];

fn samples() -> Vec<Event> {
    SAMPLES
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

fn sample(name: &str) -> Event {
    samples().into_iter().find(|e| e.name() == name).unwrap()
}

fn records() -> Vec<Record> {
    (1..)
        .zip(samples())
        .map(|(seq, event)| Record {
            seq,
            time: record::timestamp(1_795_428_902_113 + seq as i64 * 1_001),
            prev: [seq as u8; 32],
            hash: record::sha256(&seq.to_be_bytes()),
            event,
        })
        .collect()
}

/// The Bundle `BundleWriter` writes for `records`, parsed.
fn bundle(records: &[Record]) -> Value {
    let mut out = Vec::new();
    let mut w = BundleWriter::start(&mut out, OBSERVER).unwrap();
    for r in records {
        w.push(r).unwrap();
    }
    w.finish().unwrap();
    assert!(out.ends_with(b"}\n"));
    serde_json::from_slice(&out).unwrap()
}

/// The AuditEvent of one event, through the Bundle.
fn resource(event: Event) -> Value {
    let time = record::timestamp(0);
    let r = Record {
        seq: 7,
        time,
        prev: [0; 32],
        hash: [7; 32],
        event,
    };
    bundle(&[r])["entry"][0]["resource"].clone()
}

/// A detail's value by its name.
fn detail(entity: &Value, name: &str) -> Option<String> {
    let d = entity["detail"]
        .as_array()?
        .iter()
        .find(|d| d["type"] == name)?;
    d["valueString"].as_str().map(str::to_owned)
}

#[test]
fn every_event_kind_has_a_sample() {
    let seen: BTreeSet<usize> = samples().iter().map(variant).collect();
    let missing: Vec<usize> = (0..VARIANTS).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "event variants without a sample: {missing:?}"
    );
}

#[test]
fn a_bundle_of_every_event_kind_has_the_r4_shape() {
    let records = records();
    let problems = shape::bundle(&bundle(&records), records.len());
    assert!(problems.is_empty(), "not R4:\n{}", problems.join("\n"));
}

#[test]
fn an_empty_bundle_has_no_entry_array() {
    let b = bundle(&[]);
    assert!(b.get("entry").is_none(), "FHIR JSON has no empty arrays");
    assert!(shape::bundle(&b, 0).is_empty());
}

#[test]
fn every_field_of_a_record_is_exported_and_nothing_else() {
    let rs = records();
    for (r, e) in rs.iter().zip(bundle(&rs)["entry"].as_array().unwrap()) {
        let e = &e["resource"];
        let leaves = shape::leaves(&serde_json::to_value(&r.event).unwrap());
        let out = shape::strings(e);
        for l in &leaves {
            assert!(
                out.contains(l),
                "{}: {l:?} is not exported: {e}",
                r.event.name()
            );
        }
        // What names data (identifiers, addresses, details) comes from the record.
        for s in shape::data_strings(e) {
            let known = leaves.contains(&s) || s == OBSERVER;
            assert!(known, "{}: {s:?} is not in the record", r.event.name());
        }
    }
}

#[test]
fn a_failed_login_is_a_failure_with_its_typed_reason() {
    let e = resource(sample("auth_failed"));
    assert_eq!(
        (&e["type"]["code"], &e["subtype"][0]["code"]),
        (&json!("110114"), &json!("110122"))
    );
    assert_eq!((&e["action"], &e["outcome"]), (&json!("E"), &json!("4")));
    assert_eq!(e["outcomeDesc"], "login refused: not-authorized");
    let client = &e["agent"][0];
    assert_eq!(client["requestor"], true);
    assert_eq!(client["who"]["identifier"]["value"], "alice@example.org");
    assert_eq!(
        client["network"],
        json!({ "address": "192.0.2.66", "type": "2" })
    );
    assert_eq!(detail(&e["entity"][0], "reason").unwrap(), "not-authorized");
    assert_eq!(detail(&e["entity"][0], "mechanism").unwrap(), "PLAIN");

    // Nobody named, and the server could not decide: a serious failure, with no `who`.
    let e = resource(samples().swap_remove(7));
    assert_eq!(e["outcome"], "8");
    assert_eq!(e["outcomeDesc"], "login refused: temporary-auth-failure");
    assert!(e["agent"][0].get("who").is_none());
    assert_eq!(e["agent"][0]["network"]["address"], "2001:db8::66");
}

#[test]
fn an_archive_query_is_a_read_of_the_owners_archive() {
    let e = resource(sample("archive_queried"));
    assert_eq!(
        (&e["type"]["code"], &e["action"]),
        (&json!("110112"), &json!("R"))
    );
    assert_eq!(e["outcome"], "0");
    assert_eq!(
        e["subtype"][0],
        json!({ "system": ZORG_EVENT, "code": "archive_queried", "display": "archive queried" })
    );
    let reader = &e["agent"][0];
    assert_eq!(reader["requestor"], true);
    assert_eq!(
        reader["who"]["identifier"]["value"],
        "alice@example.org/desk"
    );
    let archive = &e["entity"][0];
    assert_eq!(
        archive["what"]["identifier"],
        json!({ "system": ZORG_JID, "value": "alice@example.org" })
    );
    assert_eq!(archive["role"]["code"], "17");
    assert_eq!(detail(archive, "with").unwrap(), "bob@care.example.net");
    assert_eq!(detail(archive, "results").unwrap(), "50");
    assert_eq!(
        detail(archive, "archive"),
        None,
        "the owner is the entity, not a detail"
    );
}

#[test]
fn only_failures_have_a_failure_outcome_and_it_is_never_free_text() {
    for r in records() {
        let e = audit_event(&r, OBSERVER);
        let failed = e["outcome"] != "0";
        assert_eq!(failed, e.get("outcomeDesc").is_some(), "{}", r.event.name());
        let failure = matches!(
            r.event,
            Event::AuthFailed { .. } | Event::S2sRefused { .. } | Event::MessageBounced { .. }
        );
        assert_eq!(failed, failure, "{}", r.event.name());
        let desc = e["outcomeDesc"].as_str().unwrap_or_default();
        assert!(!desc.contains('<'), "{desc}");
    }
    let s2s = |n| resource(samples().swap_remove(n))["outcome"].clone();
    assert_eq!((s2s(29), s2s(30)), (json!("4"), json!("8")));
}

#[test]
fn ids_are_stable_and_distinct() {
    let rs = records();
    let (b, again) = (bundle(&rs), bundle(&rs));
    assert_eq!(b["entry"], again["entry"]);
    let entries = b["entry"].as_array().unwrap();
    let urls: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), rs.len());
    let id = format!("zorg-1-{}", record::hex(&rs[0].hash[..8]));
    assert_eq!(
        (&entries[0]["resource"]["id"], &entries[0]["fullUrl"]),
        (&json!(id), &json!(full_url(&rs[0])))
    );
}

#[test]
fn the_checker_finds_what_is_not_r4() {
    let good = bundle(&records()[5..6]);
    assert!(shape::bundle(&good, 1).is_empty());
    // `@` is the AuditEvent.
    let breaks = [
        ("/type", json!("searchset")),
        ("/timestamp", json!("2026-11-23")),
        (
            "/entry/0/fullUrl",
            json!("urn:uuid:40A1DFD0-8E6C-8529-86A9-1889CE266071"),
        ),
        ("@/id", json!("zorg_1")),
        ("@/recorded", json!("2026-11-23 10:15:02Z")),
        ("@/recorded", json!("2026-13-23T10:15:02Z")),
        ("@/type/code", json!("110120")),
        ("@/subtype/0/code", json!("110114")),
        ("@/action", json!("X")),
        ("@/outcome", json!("3")),
        ("@/agent", json!([])),
        ("@/agent/0/requestor", json!("true")),
        ("@/agent/0/network/type", json!("6")),
        ("@/agent/0/who/identifier/value", json!("")),
        ("@/source/observer", json!(null)),
        ("@/source/type/0/code", json!("10")),
        ("@/entity/0/type/code", json!("5")),
        ("@/entity/0/role/system", json!("http://example.org/roles")),
        ("@/entity/0/detail/0", json!({ "type": "mechanism" })),
        ("@/entity/0/detail/0/valueBase64Binary", json!("AA==")),
        ("@/entity/0/what/note", json!("x")),
        ("@/note", json!("an element R4 AuditEvent does not have")),
    ];
    for (at, value) in breaks {
        let mut b = good.clone();
        let path = at.replace('@', "/entry/0/resource");
        let (parent, name) = path.rsplit_once('/').unwrap();
        match b.pointer_mut(parent).unwrap() {
            Value::Object(o) => drop(o.insert(name.to_owned(), value.clone())),
            Value::Array(a) => a[name.parse::<usize>().unwrap()] = value.clone(),
            _ => unreachable!(),
        }
        let problems = shape::bundle(&b, 1);
        assert!(!problems.is_empty(), "{at} = {value} passed the checker");
    }
}

/// Prints a short real export for docs/audit.md (the log's lines, then the Bundle as written):
/// `cargo test -p zorg-server --lib audit::fhir -- --ignored --nocapture`.
#[test]
#[ignore]
fn sample_for_the_docs() {
    let events = [sample("auth_succeeded"), sample("archive_queried")];
    let (mut lines, mut prev) = (Vec::new(), record::sha256(b"record 40"));
    for (seq, ev) in (41..).zip(&events) {
        let time = record::timestamp(1_795_414_502_113 + (seq as i64 - 41) * 2_250);
        prev = record::encode(seq, &time, &prev, ev, &mut lines);
    }
    let text = String::from_utf8(lines).unwrap();
    let mut out = Vec::new();
    let mut w = BundleWriter::start(&mut out, OBSERVER).unwrap();
    for line in text.lines() {
        w.push(&record::parse(line).unwrap()).unwrap();
    }
    w.finish().unwrap();
    println!("{text}{}", String::from_utf8(out).unwrap());
}

#[path = "fhir_shape.rs"]
mod shape;
