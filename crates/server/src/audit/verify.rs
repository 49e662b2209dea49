//! `zorg audit verify`: walks the log and reports every record that was changed, removed,
//! moved or added, with its file, line and sequence number.
//!
//! What each tampering looks like:
//! - a changed record no longer matches its own hash (or, if its hash was recomputed, the next
//!   record's `prev` no longer matches it; if the whole rest of the chain was recomputed, the
//!   next checkpoint's signed head no longer matches);
//! - a removed record leaves a gap in the sequence numbers;
//! - records moved out of order, or added, break the sequence and the `prev` links;
//! - a removed start of the log is accepted only when an `audit_pruned` record (retention)
//!   names exactly where the remaining chain starts.
//!
//! Records after the last checkpoint are protected by the chain only: someone who can write
//! the files could cut them off or rewrite them. The report says how many there are;
//! `[audit] checkpoint_interval` bounds them.

use std::io;
use std::path::{Path, PathBuf};

use super::event::{Checkpoint, Event};
use super::log;
use super::record::{self, GENESIS};
use super::sign;

/// Where verification starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum From {
    /// At this sequence number.
    Seq(u64),
    /// At the first record at or after this time (RFC 3339).
    Time(String),
}

impl std::str::FromStr for From {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.parse::<u64>() {
            return Ok(From::Seq(n));
        }
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map_err(|_| {
                format!(
                    "{s:?} is neither a sequence number nor an RFC 3339 time (2026-11-23T00:00:00Z)"
                )
            })?;
        Ok(From::Time(record::timestamp(
            (t.unix_timestamp_nanos() / 1_000_000) as i64,
        )))
    }
}

/// One problem found, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The segment file.
    pub file: PathBuf,
    /// 1-based line in it.
    pub line: usize,
    /// The record's sequence number, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self
            .file
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        write!(f, "{name} line {}", self.line)?;
        if let Some(s) = self.seq {
            write!(f, " (seq {s})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What verification found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// First and last sequence number checked.
    pub first: Option<u64>,
    /// The last sequence number.
    pub last: Option<u64>,
    /// The last record's hash.
    pub head: Option<String>,
    /// Checkpoints whose signature and head are good.
    pub checkpoints: u64,
    /// The sequence number and time of the last good checkpoint.
    pub last_checkpoint: Option<(u64, String)>,
    /// The log starts after records deleted by retention, up to this sequence number.
    pub pruned_through: Option<u64>,
    /// Everything wrong, in log order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Records after the last good checkpoint (protected by the chain only).
    pub fn unsigned(&self) -> u64 {
        let last = self.last.unwrap_or(0);
        let cp = self
            .last_checkpoint
            .as_ref()
            .map_or(self.first.unwrap_or(1).saturating_sub(1), |c| c.0);
        last.saturating_sub(cp)
    }
}

/// The stored hash and sequence number of a line that is not a valid record, if they can be
/// read (so that the records after it can still be checked against it).
fn salvage(line: &str) -> (Option<u64>, Option<[u8; 32]>) {
    let v: Option<serde_json::Value> = serde_json::from_str(line).ok();
    let seq = v.as_ref().and_then(|v| v["seq"].as_u64());
    let hash = v
        .as_ref()
        .and_then(|v| v["hash"].as_str())
        .and_then(record::unhex);
    (seq, hash)
}

/// Verifies the log in `dir`. `trusted` are the public keys (base64) whose checkpoint
/// signatures count; a checkpoint signed by any other key is a problem.
pub fn verify(dir: &Path, from: Option<&From>, trusted: &[String]) -> io::Result<Report> {
    let mut rep = Report::default();
    let segs = log::segments(dir)?;
    if segs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no audit log segments (audit-*.jsonl) in {}", dir.display()),
        ));
    }
    // The previous record: its sequence number and stored hash.
    let mut last: Option<(u64, [u8; 32])> = None;
    let mut anchor: Option<(u64, [u8; 32], PathBuf, usize)> = None;
    let mut pruned: Vec<(u64, String)> = Vec::new();
    let mut started = from.is_none();
    for (_, path) in &segs {
        for (n, line) in log::lines(path)? {
            let problem = |seq: Option<u64>, what: String| Problem {
                file: path.clone(),
                line: n,
                seq,
                what,
            };
            let line = match line {
                Ok(l) => l,
                Err(why) => {
                    rep.problems
                        .push(problem(None, format!("unreadable line ({why})")));
                    continue;
                }
            };
            let r = match record::parse(&line) {
                Ok(r) => r,
                Err(e) => {
                    if !started {
                        continue;
                    }
                    let (seq, hash) = salvage(&line);
                    rep.problems.push(problem(seq, e.to_string()));
                    if let (Some(s), Some(h)) = (seq, hash) {
                        last = Some((s, h));
                        rep.last = Some(s);
                    }
                    continue;
                }
            };
            if !started {
                started = match from {
                    Some(From::Seq(s)) => r.seq >= *s,
                    Some(From::Time(t)) => r.time.as_str() >= t.as_str(),
                    None => true,
                };
                if !started {
                    continue;
                }
            }
            rep.records += 1;
            rep.first.get_or_insert(r.seq);
            match last {
                None => anchor = Some((r.seq, r.prev, path.clone(), n)),
                Some((ls, lh)) => {
                    if r.seq == ls + 1 && r.prev != lh {
                        rep.problems.push(problem(
                            Some(r.seq),
                            format!(
                                "the chain is broken: this record's prev does not match record \
                                 {ls}; that record was changed, or this one was inserted or moved"
                            ),
                        ));
                    } else if r.seq > ls + 1 {
                        let what = if r.seq == ls + 2 {
                            format!("record {} is missing: it was removed", ls + 1)
                        } else {
                            format!(
                                "records {} to {} are missing: they were removed",
                                ls + 1,
                                r.seq - 1
                            )
                        };
                        rep.problems.push(problem(Some(r.seq), what));
                    } else if r.seq <= ls {
                        rep.problems.push(problem(
                            Some(r.seq),
                            format!(
                                "out of order: seq {} follows seq {ls}; records were reordered \
                                 or this one was inserted",
                                r.seq
                            ),
                        ));
                    }
                }
            }
            match &r.event {
                Event::Checkpoint(c) => match check_checkpoint(c, &r, trusted) {
                    Ok(()) => {
                        rep.checkpoints += 1;
                        rep.last_checkpoint = Some((r.seq, r.time.clone()));
                    }
                    Err(what) => rep.problems.push(problem(Some(r.seq), what)),
                },
                Event::AuditPruned {
                    through_seq,
                    through_hash,
                    ..
                } => pruned.push((*through_seq, through_hash.clone())),
                _ => {}
            }
            last = Some((r.seq, r.hash));
            rep.last = Some(r.seq);
            rep.head = Some(record::hex(&r.hash));
        }
    }
    if let Some((seq, prev, file, line)) = anchor
        && from.is_none()
    {
        let by_retention = pruned
            .iter()
            .any(|(s, h)| *s + 1 == seq && *h == record::hex(&prev));
        if by_retention {
            rep.pruned_through = Some(seq - 1);
        } else if seq != 1 || prev != GENESIS {
            rep.problems.insert(
                0,
                Problem {
                    file,
                    line,
                    seq: Some(seq),
                    what: format!(
                        "the log does not start at record 1 and no retention record accounts \
                         for it: records before {seq} were removed"
                    ),
                },
            );
        }
    }
    Ok(rep)
}

fn check_checkpoint(c: &Checkpoint, r: &record::Record, trusted: &[String]) -> Result<(), String> {
    if c.covers + 1 != r.seq || c.head != record::hex(&r.prev) {
        return Err(format!(
            "the checkpoint's signed head (record {}) does not match the chain before it: \
             records it covers were changed",
            c.covers
        ));
    }
    if !trusted.contains(&c.key) {
        return Err(format!(
            "the checkpoint is signed by key {} which is not a trusted key (give the right \
             one with --public-key)",
            c.key
        ));
    }
    if !sign::verify(
        &c.key,
        &Checkpoint::signed_bytes(c.covers, &c.head, &r.time),
        &c.signature,
    ) {
        return Err("the checkpoint's signature is not valid: it was changed or forged".into());
    }
    Ok(())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
