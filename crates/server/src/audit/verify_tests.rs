//! Tampering tests: a log is written, copied, and each copy is changed the way an intruder
//! would (edit, delete, reorder, insert, rewrite the chain, forge a checkpoint); `verify` must
//! name the place every time, and must accept the untouched log and legitimate retention.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::audit::event::{Checkpoint, Event};
use crate::audit::log::{Log, segments};
use crate::audit::record::{self, Record};
use crate::audit::sign::Signer;

struct Fixture {
    dir: PathBuf,
    key: String,
}

fn ev(n: u32) -> Event {
    Event::SessionUnbound {
        session: format!("user{n}@example.org/r"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zorg-verify-{name}-{}", crate::storage::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Records 1..=10, a checkpoint (11), records 12..=20, a checkpoint (21).
fn fixture(name: &str) -> Fixture {
    let dir = scratch(name);
    let (signer, _) = Signer::load_or_create(&dir.join("signing.key")).unwrap();
    let log_dir = dir.join("log");
    let (mut log, _) = Log::open(&log_dir, Duration::from_secs(1)).unwrap();
    let batch = |r: std::ops::Range<u32>| -> Vec<(i64, Event)> {
        r.map(|n| (record::now_ms(), ev(n))).collect()
    };
    log.append(&batch(1..11), Some(&signer)).unwrap();
    log.append(&batch(12..21), Some(&signer)).unwrap();
    Fixture {
        dir: log_dir,
        key: signer.public_key().to_owned(),
    }
}

fn segment(dir: &Path) -> PathBuf {
    segments(dir).unwrap()[0].1.clone()
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(segment(dir))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    std::fs::write(segment(dir), lines.join("\n") + "\n").unwrap();
}

/// A copy of the fixture's log, changed by `f`, verified.
fn tampered(fx: &Fixture, f: impl FnOnce(&mut Vec<String>)) -> Report {
    let copy = scratch("copy");
    for (_, p) in segments(&fx.dir).unwrap() {
        std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
    }
    let mut l = lines(&copy);
    f(&mut l);
    write_lines(&copy, &l);
    let rep = verify(&copy, None, std::slice::from_ref(&fx.key)).unwrap();
    std::fs::remove_dir_all(&copy).unwrap();
    rep
}

fn only_problem(rep: &Report) -> &Problem {
    assert!(!rep.problems.is_empty(), "tampering not detected: {rep:?}");
    &rep.problems[0]
}

#[test]
fn the_untouched_log_verifies_with_its_checkpoints() {
    let fx = fixture("clean");
    let rep = verify(&fx.dir, None, std::slice::from_ref(&fx.key)).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!((rep.records, rep.first, rep.last), (21, Some(1), Some(21)));
    assert_eq!(rep.checkpoints, 2);
    assert_eq!(rep.last_checkpoint.as_ref().map(|c| c.0), Some(21));
    assert_eq!(rep.unsigned(), 0);
}

#[test]
fn an_edited_record_is_named() {
    let fx = fixture("edit");
    let rep = tampered(&fx, |l| l[4] = l[4].replace("user5@", "mallory@"));
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (5, Some(5)));
    assert!(p.what.contains("was changed"), "{p}");
    assert!(
        p.to_string()
            .starts_with("audit-00000000000000000001.jsonl line 5 (seq 5)"),
        "{p}"
    );
}

#[test]
fn an_edited_record_with_a_recomputed_hash_breaks_the_next_link() {
    let fx = fixture("rehash");
    let rep = tampered(&fx, |l| {
        let r = record::parse(&l[4]).unwrap();
        let mut out = Vec::new();
        let forged = Event::SessionUnbound {
            session: "mallory@example.org/r".into(),
        };
        record::encode(r.seq, &r.time, &r.prev, &forged, &mut out);
        l[4] = String::from_utf8(out).unwrap().trim_end().to_owned();
    });
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (6, Some(6)));
    assert!(
        p.what.contains("chain is broken") && p.what.contains("record 5"),
        "{p}"
    );
}

#[test]
fn a_chain_rewritten_without_the_signing_key_fails_at_the_next_checkpoint() {
    let fx = fixture("rewrite");
    let rep = tampered(&fx, |l| {
        // Change record 15 and recompute every hash after it, as an intruder with write
        // access but without the signing key would.
        let mut prev = record::parse(&l[13]).unwrap().hash;
        for line in l.iter_mut().skip(14) {
            let r: Record = record::parse(line).unwrap();
            let event = if r.seq == 15 {
                Event::SessionUnbound {
                    session: "mallory@example.org/r".into(),
                }
            } else {
                r.event
            };
            let mut out = Vec::new();
            prev = record::encode(r.seq, &r.time, &prev, &event, &mut out);
            *line = String::from_utf8(out).unwrap().trim_end().to_owned();
        }
    });
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (21, Some(21)));
    assert!(p.what.contains("signed head"), "{p}");
    assert_eq!(rep.checkpoints, 1, "only the first checkpoint still holds");
}

#[test]
fn a_deleted_record_is_named() {
    let fx = fixture("delete");
    let rep = tampered(&fx, |l| {
        l.remove(6);
    });
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (7, Some(8)));
    assert!(p.what.contains("record 7 is missing"), "{p}");
}

#[test]
fn reordered_records_are_named() {
    let fx = fixture("reorder");
    let rep = tampered(&fx, |l| l.swap(6, 7));
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (7, Some(8)));
    assert!(
        rep.problems
            .iter()
            .any(|p| p.line == 8 && p.seq == Some(7) && p.what.contains("out of order")),
        "{:?}",
        rep.problems
    );
}

#[test]
fn an_inserted_record_is_named() {
    let fx = fixture("insert");
    let rep = tampered(&fx, |l| {
        // A well-formed record that claims to follow record 7.
        let r7 = record::parse(&l[6]).unwrap();
        let mut out = Vec::new();
        record::encode(8, &r7.time, &r7.hash, &ev(99), &mut out);
        l.insert(7, String::from_utf8(out).unwrap().trim_end().to_owned());
    });
    // The genuine record 8 now follows the forged one.
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (9, Some(8)));
    assert!(p.what.contains("out of order"), "{p}");
}

#[test]
fn a_removed_start_is_named_and_retention_is_not() {
    let fx = fixture("start");
    let rep = tampered(&fx, |l| {
        l.drain(..3);
    });
    let p = only_problem(&rep);
    assert_eq!((p.line, p.seq), (1, Some(4)));
    assert!(p.what.contains("records before 4 were removed"), "{p}");

    // Retention: old segments go, and the log says where the rest starts.
    let dir = scratch("retain");
    let (mut log, _) = Log::open(&dir, Duration::from_secs(1)).unwrap();
    log.set_max_segment(1);
    let old = record::now_ms() - 3 * 86_400_000;
    for n in 0..3 {
        log.append(&[(old, ev(n))], None).unwrap();
    }
    assert_eq!(log.prune(record::now_ms() - 86_400_000, None).unwrap(), 2);
    let rep = verify(&dir, None, &[]).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!(rep.pruned_through, Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_from_another_key_or_with_a_bad_signature_is_refused() {
    let fx = fixture("forge");
    let other = scratch("other");
    let (mallory, _) = Signer::load_or_create(&other.join("k")).unwrap();
    let rep = tampered(&fx, |l| {
        // Mallory signs the real head with her key; the chain itself stays intact.
        let r = record::parse(&l[10]).unwrap();
        let Event::Checkpoint(c) = r.event else {
            panic!()
        };
        let forged = Checkpoint {
            key: mallory.public_key().to_owned(),
            signature: mallory.sign(&Checkpoint::signed_bytes(c.covers, &c.head, &r.time)),
            ..c
        };
        let mut out = Vec::new();
        record::encode(
            r.seq,
            &r.time,
            &r.prev,
            &Event::Checkpoint(forged),
            &mut out,
        );
        l[10] = String::from_utf8(out).unwrap().trim_end().to_owned();
    });
    assert!(
        rep.problems
            .iter()
            .any(|p| p.line == 11 && p.what.contains("not a trusted key")),
        "{:?}",
        rep.problems
    );
    std::fs::remove_dir_all(&other).unwrap();
}

#[test]
fn verification_can_start_later() {
    let fx = fixture("from");
    let rep = verify(&fx.dir, Some(&From::Seq(12)), std::slice::from_ref(&fx.key)).unwrap();
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    assert_eq!((rep.first, rep.records), (Some(12), 10));
    assert_eq!("12".parse::<From>().unwrap(), From::Seq(12));
    assert!("2026-11-23T00:00:00Z".parse::<From>().is_ok());
    assert!("yesterday".parse::<From>().is_err());
}
