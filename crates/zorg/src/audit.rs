//! `zorg audit verify|export|key`, and the audit records other commands write for what an
//! operator does (docs/audit.md).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use zorg_server::audit::event::ExportFormat;
use zorg_server::audit::log::Log;
use zorg_server::audit::sign::{self, Signer};
use zorg_server::audit::{Actor, Event, export, record, verify};
use zorg_server::config::{Config, OnFailure};

use crate::ConfigArg;
use crate::settings;

/// `zorg audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log: every record's hash, the chain between records and every signed
    /// checkpoint. Names each record that was changed, removed, reordered or inserted, and
    /// exits 1 if there is any.
    Verify {
        /// Where the log is.
        #[command(flatten)]
        source: Source,
        /// Start at this sequence number or RFC 3339 time (e.g. after the last checkpoint you
        /// verified); the record found there is taken as given.
        #[arg(long, value_name = "SEQ|TIME")]
        from: Option<verify::From>,
        /// A public key (as `zorg audit key` prints it) whose checkpoints are trusted; may be
        /// repeated. Default: the server's own signing key; an auditor passes the copy they
        /// hold.
        #[arg(long, value_name = "FILE")]
        public_key: Vec<PathBuf>,
    },
    /// Write the audit records of a time range, optionally only those about one account, as
    /// JSON lines (as stored, still verifiable) or a FHIR R4 Bundle of AuditEvent resources.
    Export {
        /// Where the log is.
        #[command(flatten)]
        source: Source,
        /// Records at or after this time (RFC 3339, or a date: 2026-11-01).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Records before this time (RFC 3339, or a date).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only records about this account (bare JID): who logged in as it, read its archive,
        /// sent to or from it.
        #[arg(long, value_name = "JID")]
        account: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Write to FILE instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print the public key that verifies the checkpoints, for the auditor to keep.
    Key(ConfigArg),
}

/// Where the log to read is.
#[derive(Debug, Args)]
pub struct Source {
    /// The server's configuration (for `[audit] dir`).
    #[command(flatten)]
    pub config: ConfigArg,
    /// Read the log in DIR instead (e.g. a copy handed to an auditor).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// One JSON record per line, as stored.
    Jsonl,
    /// A FHIR R4 Bundle of AuditEvent resources.
    Fhir,
}

/// Runs a `zorg audit` command.
pub fn run(cmd: AuditCommand) -> Result<ExitCode, String> {
    match cmd {
        AuditCommand::Key(c) => {
            let config = settings::load(c.config.as_deref())?;
            let path = config.audit_signing_key();
            let s = Signer::load(&path)
                .map_err(|e| format!("{e} (the server makes the key at its first start)"))?;
            println!("{}", s.public_key());
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            source,
            from,
            public_key,
        } => verify_cmd(&source, from.as_ref(), &public_key),
        AuditCommand::Export {
            source,
            since,
            until,
            account,
            format,
            output,
        } => {
            let config = settings::load(source.config.config.as_deref())?;
            let dir = source.dir.clone().unwrap_or_else(|| config.audit_dir());
            let filter = export::Filter {
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
                account: account.map(|a| a.trim().to_ascii_lowercase()),
            };
            let format = match format {
                Format::Jsonl => ExportFormat::Jsonl,
                Format::Fhir => ExportFormat::Fhir,
            };
            // Exporting is reading personal data: it is recorded in the server's own log, and
            // refused when it cannot be.
            let mut trail = (source.dir.is_none())
                .then(|| CliAudit::open(&config))
                .transpose()?;
            let observer = config
                .domains
                .first()
                .map_or_else(|| "zorg".to_owned(), |d| d.name.clone());
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(p) => {
                    Box::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?)
                }
                None => Box::new(std::io::stdout().lock()),
            };
            let done = export::export(&dir, &filter, format, &observer, &mut out)
                .map_err(|e| format!("exporting from {}: {e}", dir.display()))?;
            out.flush().map_err(|e| e.to_string())?;
            if done.invalid > 0 {
                eprintln!(
                    "{} lines are not valid records and were left out; run `zorg audit verify`",
                    done.invalid
                );
            }
            if let Some(t) = trail.as_mut() {
                t.record(vec![Event::AuditExported {
                    by: Actor::cli(),
                    account: filter.account.clone(),
                    since: filter.since.clone(),
                    until: filter.until.clone(),
                    format,
                    records: done.records,
                }])?;
            }
            eprintln!("exported {} records", done.records);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_cmd(
    source: &Source,
    from: Option<&verify::From>,
    public_keys: &[PathBuf],
) -> Result<ExitCode, String> {
    let config = settings::load(source.config.config.as_deref())?;
    let dir = source.dir.clone().unwrap_or_else(|| config.audit_dir());
    let mut trusted = Vec::new();
    for p in public_keys {
        trusted.push(sign::read_public_key(p)?);
    }
    if trusted.is_empty() {
        let path = config.audit_signing_key();
        let s = Signer::load(&path).map_err(|e| {
            format!("{e}; give the auditor's copy of the public key with --public-key FILE")
        })?;
        println!(
            "checking checkpoints against the server's own signing key ({}); an auditor should \
             pass the copy they hold with --public-key",
            path.display()
        );
        trusted.push(s.public_key().to_owned());
    }
    let rep = verify::verify(&dir, from, &trusted).map_err(|e| e.to_string())?;
    println!(
        "audit log {}: {} records, seq {} to {}",
        dir.display(),
        rep.records,
        rep.first.unwrap_or(0),
        rep.last.unwrap_or(0)
    );
    if let Some(p) = rep.pruned_through {
        println!("records up to seq {p} were deleted by [audit] retention, as the log records");
    }
    match &rep.last_checkpoint {
        Some((seq, time)) => println!(
            "{} signed checkpoints are valid; the last is seq {seq} at {time}",
            rep.checkpoints
        ),
        None => println!("no valid signed checkpoint"),
    }
    if let Some(h) = &rep.head {
        println!("head hash: {h}");
    }
    let unsigned = rep.unsigned();
    if unsigned > 0 {
        println!(
            "{unsigned} records after the last checkpoint are protected by the hash chain only"
        );
    }
    if rep.problems.is_empty() {
        println!("OK: no record was changed, removed, reordered or inserted");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problems:", rep.problems.len());
        for p in &rep.problems {
            println!("  {p}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// An RFC 3339 time or a date, in the log's time format.
fn parse_time(s: &str) -> Result<String, String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| time::OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339))
        .map_err(|_| format!("{s:?} is not a time; give 2026-11-23 or 2026-11-23T08:00:00Z"))?;
    Ok(record::timestamp(
        (t.unix_timestamp_nanos() / 1_000_000) as i64,
    ))
}

/// The audit log as a command writes to it.
pub struct CliAudit {
    log: Option<Log>,
    signer: Option<Signer>,
}

impl CliAudit {
    /// Opens the configured log before the command acts, so that an act that cannot be
    /// recorded is not done (`[audit] on_failure = "refuse"`).
    pub fn open(config: &Config) -> Result<CliAudit, String> {
        let none = CliAudit {
            log: None,
            signer: None,
        };
        if !config.audit.enabled {
            return Ok(none);
        }
        let dir = config.audit_dir();
        match Log::open(&dir, config.audit.max_wait.get()) {
            Ok((mut log, repaired)) => {
                if let Some(r) = repaired {
                    log.append(&[(record::now_ms(), r)], None)
                        .map_err(|e| unwritable(&dir, &e.to_string()))?;
                }
                // The server signs checkpoints; this process adds one too when it can read
                // the key, so records written while the server is down are signed at once.
                let signer = Signer::load(&config.audit_signing_key()).ok();
                Ok(CliAudit {
                    log: Some(log),
                    signer,
                })
            }
            Err(e) if config.audit.on_failure == OnFailure::Continue => {
                eprintln!(
                    "warning: {}: {e}; continuing WITHOUT an audit record",
                    dir.display()
                );
                Ok(none)
            }
            Err(e) => Err(unwritable(&dir, &e.to_string())),
        }
    }

    /// Appends `events` (and a checkpoint), synced to disk.
    pub fn record(&mut self, events: Vec<Event>) -> Result<(), String> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let now = record::now_ms();
        let events: Vec<(i64, Event)> = events.into_iter().map(|e| (now, e)).collect();
        log.append(&events, self.signer.as_ref())
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "the act was done, but its audit record could not be written to {}: {e}",
                    log.dir().display()
                )
            })
    }
}

fn unwritable(dir: &std::path::Path, why: &str) -> String {
    format!(
        "cannot write the audit log in {}: {why}; nothing was done, because [audit] on_failure \
         is \"refuse\" (fix the log or its disk and try again)",
        dir.display()
    )
}
