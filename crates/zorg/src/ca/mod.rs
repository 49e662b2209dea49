//! `zorg ca init|issue|revoke|crl|list`: the auditor's certificate authority.
//!
//! Servers federate only with servers whose certificate chains to the auditor's root (see
//! docs/ca.md). A CA is one directory: `ca.crt` (the root, public), `ca.key` (its private key,
//! mode 0600), `index.toml` (every certificate issued and revoked, and the CRL number) and
//! `issued/` (a copy of every certificate). Each command takes an OS lock on the directory,
//! so two commands never interleave their index updates.

mod authority;
mod files;
mod index;
mod make;
mod names;
mod revocation;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use time::OffsetDateTime;

use authority::{Authority, CA_KEY};
use files::DirLock;
use index::{Index, Reason, Status};
use make::{IssueArgs, init, issue};
use revocation::{crl, revoke};

/// `zorg ca …`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a root CA (ECDSA P-256) in DIR: ca.crt, ca.key (mode 0600) and the index.
    /// Refuses to touch a directory that already holds a CA.
    Init {
        #[command(flatten)]
        dir: CaDir,
        /// The CA's name, its certificate's subject (CN), e.g. "Care Federation Root CA".
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Where the CRL will be published (http:// or https://); put as CRL distribution
        /// point in every certificate issued afterwards.
        #[arg(long, value_name = "URL")]
        crl_url: Option<String>,
        /// How long the root is valid, in days (default: 20 years).
        #[arg(long, value_name = "N", default_value_t = 7305,
              value_parser = clap::value_parser!(u32).range(1..=36525))]
        days: u32,
    },
    /// Issue a server certificate for one or more XMPP domains; writes OUTDIR/D.crt (the
    /// chain: server, then CA) and OUTDIR/D.key (mode 0600), named after the first domain.
    Issue {
        #[command(flatten)]
        dir: CaDir,
        /// An XMPP domain the server hosts (a DNS name; no wildcards). Repeat for more.
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
        /// The directory to write the certificate and key to (created if missing).
        #[arg(long, value_name = "OUTDIR")]
        out: PathBuf,
        /// Also name each domain as an XmppAddr (RFC 6120 §13.7.1.4). Off by default:
        /// ejabberd 23.01 crashes on it during SASL EXTERNAL.
        #[arg(long)]
        xmppaddr: bool,
        /// How long the certificate is valid, in days.
        #[arg(long, value_name = "N", default_value_t = 397,
              value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
    /// Revoke a certificate by serial (hex, as `list` shows it), or every unrevoked
    /// certificate naming a domain. Publish the change with `zorg ca crl`.
    Revoke {
        #[command(flatten)]
        dir: CaDir,
        /// A serial number, or a domain.
        #[arg(value_name = "SERIAL|DOMAIN")]
        target: String,
        /// The reason recorded in the CRL.
        #[arg(long, value_enum, value_name = "R", default_value_t = Reason::Unspecified)]
        reason: Reason,
    },
    /// Write a CRL signed by the CA listing every revoked certificate, with a number one
    /// higher than the last one's.
    Crl {
        #[command(flatten)]
        dir: CaDir,
        /// The file to write (PEM), replaced atomically.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Days until the CRL's next update: publish a new CRL before then (servers keep
        /// using the last one they have, so a later revocation reaches them only with it).
        #[arg(long, value_name = "N", default_value_t = 7,
              value_parser = clap::value_parser!(u32).range(1..=366))]
        days: u32,
    },
    /// List every certificate issued: serial, domains, expiry, status.
    List {
        #[command(flatten)]
        dir: CaDir,
    },
}

/// The `--dir DIR` every `zorg ca` command takes.
#[derive(Debug, Args)]
pub struct CaDir {
    /// The CA's directory (ca.crt, ca.key, index.toml).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Runs a `zorg ca` command.
pub fn run(cmd: CaCommand) -> Result<ExitCode, String> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCommand::Init {
            dir,
            name,
            crl_url,
            days,
        } => init(&dir.dir, &name, crl_url, days, now),
        CaCommand::Issue {
            dir,
            domains,
            out,
            xmppaddr,
            days,
        } => {
            let req = IssueArgs {
                domains,
                out,
                xmppaddr,
                days,
            };
            issue(&dir.dir, req, now)
        }
        CaCommand::Revoke {
            dir,
            target,
            reason,
        } => revoke(&dir.dir, &target, reason, now),
        CaCommand::Crl { dir, out, days } => crl(&dir.dir, &out, days, now),
        CaCommand::List { dir } => list(&dir.dir, now),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// A date as `zorg ca` prints it.
pub fn show_time(t: OffsetDateTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.to_string())
}

/// Locks an existing CA directory and reads its index.
fn open_ca(dir: &Path) -> Result<(DirLock, Index), String> {
    if !dir.is_dir() {
        return Err(format!(
            "no CA directory {}: check --dir, or create a CA with `zorg ca init --dir {} --name NAME`",
            dir.display(),
            dir.display()
        ));
    }
    let lock = DirLock::take(dir)?;
    Ok((lock, Index::load(dir)?))
}

/// Loads the CA's key pair, warning when the key file is readable by others.
fn load_authority(dir: &Path) -> Result<Authority, String> {
    #[cfg(unix)]
    if let Some(mode) = files::mode(&dir.join(CA_KEY)).filter(|m| m & 0o077 != 0) {
        eprintln!(
            "warning: {} is readable by other users (mode {mode:o}): run chmod 600 on it",
            dir.join(CA_KEY).display()
        );
    }
    Authority::load(dir)
}

fn list(dir: &Path, now: OffsetDateTime) -> Result<(), String> {
    let index = Index::load(dir)?;
    if index.certificates.is_empty() {
        println!("the CA \"{}\" has issued no certificates yet", index.name);
        return Ok(());
    }
    let rows: Vec<[String; 4]> = index
        .certificates
        .iter()
        .map(|c| {
            let status = match c.status(now) {
                Status::Valid => "valid".to_owned(),
                Status::Expired => "expired".to_owned(),
                Status::Revoked(at) => format!("revoked on {}", show_time(at)),
            };
            [
                c.serial.clone(),
                c.domains.join(","),
                show_time(c.not_after.0),
                status,
            ]
        })
        .collect();
    let header = ["SERIAL", "DOMAINS", "NOT AFTER", "STATUS"].map(str::to_owned);
    let width = |col: usize| {
        rows.iter()
            .chain([&header])
            .map(|r| r[col].len())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0), width(1), width(2));
    let mut out = std::io::stdout().lock();
    for r in std::iter::once(&header).chain(&rows) {
        // A reader that went away (`zorg ca list | head`) is not an error.
        if writeln!(out, "{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
