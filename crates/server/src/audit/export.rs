//! `zorg audit export`: the records of a time range, optionally only those concerning one
//! account, as the JSON lines they are stored as (still verifiable) or as a FHIR R4 Bundle of
//! AuditEvent resources ([`super::fhir`]).
//!
//! A per-account export is the chronological view a person may ask for: who logged in as
//! them, who read their archive, what was sent to and from them, and when.

use std::io::{self, Write};
use std::path::Path;

use super::event::ExportFormat;
use super::{fhir, log, record};

/// Which records to export.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Records at or after this time (as [`record::timestamp`] writes it).
    pub since: Option<String>,
    /// Records before this time.
    pub until: Option<String>,
    /// Only records naming this account (bare JID).
    pub account: Option<String>,
}

impl Filter {
    fn wants(&self, r: &record::Record) -> bool {
        self.since
            .as_ref()
            .is_none_or(|s| r.time.as_str() >= s.as_str())
            && self
                .until
                .as_ref()
                .is_none_or(|u| r.time.as_str() < u.as_str())
            && self
                .account
                .as_ref()
                .is_none_or(|a| r.event.accounts().iter().any(|j| j.eq_ignore_ascii_case(a)))
    }
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported {
    /// Records written.
    pub records: u64,
    /// Lines that are not valid records (changed or damaged), left out. `zorg audit verify`
    /// says which.
    pub invalid: u64,
}

/// Writes the records of `dir` that `filter` selects to `out`. `observer` names this server
/// in FHIR (`AuditEvent.source.observer`).
pub fn export(
    dir: &Path,
    filter: &Filter,
    format: ExportFormat,
    observer: &str,
    out: &mut dyn Write,
) -> io::Result<Exported> {
    let mut done = Exported::default();
    enum Sink<'a> {
        Lines(io::BufWriter<&'a mut dyn Write>),
        Fhir(fhir::BundleWriter<'a>),
    }
    let mut sink = match format {
        ExportFormat::Fhir => Sink::Fhir(fhir::BundleWriter::start(out, observer)?),
        ExportFormat::Jsonl => Sink::Lines(io::BufWriter::new(out)),
    };
    for (_, path) in log::segments(dir)? {
        for (_, line) in log::lines(&path)? {
            let Ok(line) = line else {
                done.invalid += 1;
                continue;
            };
            let Ok(r) = record::parse(&line) else {
                done.invalid += 1;
                continue;
            };
            if !filter.wants(&r) {
                continue;
            }
            done.records += 1;
            match &mut sink {
                Sink::Lines(w) => {
                    w.write_all(line.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                Sink::Fhir(b) => b.push(&r)?,
            }
        }
    }
    match sink {
        Sink::Lines(mut w) => w.flush()?,
        Sink::Fhir(b) => b.finish()?,
    }
    Ok(done)
}
