//! `zorg user add|del|passwd|list`: accounts in the server's database.
//!
//! Passwords come from a prompt on the terminal (asked twice) or, with `--password-stdin`, from
//! the first line of standard input; never from the command line, where other users of the
//! machine could read them in the process list. Only SCRAM credentials (salt, iteration count,
//! StoredKey, ServerKey) are stored, for SHA-1 and SHA-256.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use jid::BareJid;
use zorg_server::config::Config;
use zorg_server::sasl::{SaslFailure, make_record};
use zorg_server::storage::{AccountStore, ScramHash, ScramRecord, Storage, StorageError};

use zorg_server::audit::event::{AccountChange, AdminCommand};
use zorg_server::audit::{Actor, Event};

use crate::ConfigArg;
use crate::audit::CliAudit;
use crate::settings;

/// Longest password accepted, in bytes; far above any real one, and a bound on what is read.
const MAX_PASSWORD_LEN: usize = 1024;

/// `zorg user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account; asks for its password (twice).
    Add {
        /// The account and the configuration.
        #[command(flatten)]
        target: Target,
        /// Where the password comes from.
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Delete an account with everything it owns: roster, offline messages, message archive,
    /// archiving preferences, push registrations and blocklist. Asks nothing.
    #[command(visible_alias = "delete")]
    Del {
        /// The account and the configuration.
        #[command(flatten)]
        target: Target,
    },
    /// Set a new password for an account; asks for it (twice).
    Passwd {
        /// The account and the configuration.
        #[command(flatten)]
        target: Target,
        /// Where the password comes from.
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List accounts, one bare JID per line, sorted.
    List {
        /// Only the accounts of this domain.
        #[arg(value_name = "DOMAIN")]
        domain: Option<String>,
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// The account a command acts on.
#[derive(Debug, Args)]
pub struct Target {
    /// The account's bare JID, e.g. alice@localhost; its domain must be one this server hosts.
    #[arg(value_name = "JID")]
    pub jid: String,
    /// The configuration.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct PasswordSource {
    /// Read the password from the first line of standard input instead of asking, for scripts:
    /// `printf '%s\n' "$PW" | zorg user add alice@localhost --password-stdin`.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Runs a `zorg user` command.
pub fn run(cmd: UserCommand) -> Result<ExitCode, String> {
    let rt = crate::runtime()?;
    match cmd {
        UserCommand::Add { target, password } => {
            let (config, jid) = resolve(&target)?;
            // Fail before asking for a password if the account already exists.
            let db = rt.block_on(open(&config, true))?;
            if rt.block_on(db.account_exists(&jid)).map_err(db_err)? {
                return Err(exists(&jid));
            }
            let creds = credentials(&config, &jid, &password)?;
            let mut trail = CliAudit::open(&config)?;
            let result = rt.block_on(db.create_account(&jid, &creds));
            rt.block_on(db.close());
            match result {
                Ok(()) => {
                    println!("created account {jid}");
                    trail.record(vec![Event::AccountCreated {
                        account: jid.clone(),
                        by: Actor::cli(),
                    }])?;
                }
                Err(StorageError::Conflict) => return Err(exists(&jid)),
                Err(e) => return Err(db_err(e)),
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Passwd { target, password } => {
            let (config, jid) = resolve(&target)?;
            let db = rt.block_on(open(&config, false))?;
            if !rt.block_on(db.account_exists(&jid)).map_err(db_err)? {
                return Err(not_found(&jid));
            }
            let creds = credentials(&config, &jid, &password)?;
            let mut trail = CliAudit::open(&config)?;
            let result = rt.block_on(db.set_credentials(&jid, &creds));
            rt.block_on(db.close());
            match result {
                Ok(()) => {
                    println!("changed the password of {jid}");
                    trail.record(vec![Event::AccountChanged {
                        account: jid.clone(),
                        change: AccountChange::Password,
                        by: Actor::cli(),
                    }])?;
                }
                Err(StorageError::NotFound) => return Err(not_found(&jid)),
                Err(e) => return Err(db_err(e)),
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Del { target } => {
            let (config, jid) = resolve(&target)?;
            let db = rt.block_on(open(&config, false))?;
            let mut trail = CliAudit::open(&config)?;
            let deleted = rt.block_on(db.delete_account(&jid));
            rt.block_on(db.close());
            if deleted.map_err(db_err)? {
                println!("deleted account {jid} with its roster, offline messages and blocklist");
                trail.record(vec![Event::AccountDeleted {
                    account: jid.clone(),
                    by: Actor::cli(),
                }])?;
                Ok(ExitCode::SUCCESS)
            } else {
                Err(not_found(&jid))
            }
        }
        UserCommand::List { domain, config } => {
            let config = settings::load(config.config.as_deref())?;
            let path = settings::database_path(&config);
            if !path.exists() {
                eprintln!(
                    "no database at {} yet, so no accounts (is --config the server's?)",
                    path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
            let db = rt.block_on(open(&config, false))?;
            let mut trail = CliAudit::open(&config)?;
            let accounts = rt.block_on(db.list_accounts(domain.as_deref()));
            rt.block_on(db.close());
            let mut out = std::io::stdout().lock();
            for jid in accounts.map_err(db_err)? {
                // A reader that went away (`zorg user list | head`) is not an error.
                if writeln!(out, "{jid}").is_err() {
                    break;
                }
            }
            let _ = out.flush();
            trail.record(vec![Event::AdminAction {
                by: Actor::cli(),
                action: AdminCommand::UserList,
                target: domain,
            }])?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the configuration and checks the JID: a bare JID with a local part, in a domain this
/// server hosts. Returns it normalised (RFC 7622: lower-cased local part and domain).
fn resolve(target: &Target) -> Result<(Config, String), String> {
    let config = settings::load(target.config.config.as_deref())?;
    let jid = normalise_jid(&target.jid, &config)?;
    Ok((config, jid))
}

fn normalise_jid(input: &str, config: &Config) -> Result<String, String> {
    let jid = BareJid::new(input).map_err(|e| {
        format!("{input:?} is not a valid bare JID ({e}); give one like alice@localhost")
    })?;
    if jid.node().is_none() {
        return Err(format!(
            "{input:?} has no user part; give the account as user@domain, e.g. alice@{jid}"
        ));
    }
    let domain = jid.domain().as_str();
    if !config.domains.iter().any(|d| d.name == domain) {
        let hosted: Vec<&str> = config.domains.iter().map(|d| d.name.as_str()).collect();
        return Err(format!(
            "this server does not host the domain {domain:?} (it hosts: {}); add a [[domain]] \
             for it to the config, or pass the right --config",
            hosted.join(", ")
        ));
    }
    Ok(jid.to_string())
}

/// Opens the database, creating the data directory and database only when `create` is set.
async fn open(config: &Config, create: bool) -> Result<Storage, String> {
    let path = settings::database_path(config);
    if create {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            format!(
                "cannot create the data directory {}: {e}",
                config.data_dir.display()
            )
        })?;
    } else if !path.exists() {
        return Err(format!(
            "no database at {}: no accounts exist yet (is --config the server's?)",
            path.display()
        ));
    }
    Storage::open(&path)
        .await
        .map_err(|e| format!("cannot open the database {}: {e}", path.display()))
}

/// Asks for the password (or reads it) and derives the SCRAM records for SHA-1 and SHA-256.
fn credentials(
    config: &Config,
    jid: &str,
    source: &PasswordSource,
) -> Result<Vec<ScramRecord>, String> {
    let password = if source.password_stdin {
        read_stdin_password()?
    } else {
        prompt_password(jid)?
    };
    let password = password.as_str();
    if password.is_empty() {
        return Err("the password is empty; nothing changed".to_owned());
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_LEN} bytes; nothing changed"
        ));
    }
    let iterations = config.c2s.sasl_iterations;
    [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|hash| make_record(hash, password, iterations).map_err(password_err))
        .collect()
}

fn password_err(e: SaslFailure) -> String {
    match e {
        SaslFailure::TemporaryAuthFailure => {
            "the system random number generator failed; nothing changed".to_owned()
        }
        _ => "the password contains characters that SASLprep (RFC 4013) forbids, such as \
              control characters; choose another one. Nothing changed"
            .to_owned(),
    }
}

/// Reads the first line of standard input (without its line ending).
fn read_stdin_password() -> Result<Password, String> {
    let mut line = Password(String::new());
    let stdin = std::io::stdin();
    let mut limited = std::io::Read::take(stdin.lock(), (MAX_PASSWORD_LEN + 3) as u64);
    limited
        .read_line(&mut line.0)
        .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let end = line.0.trim_end_matches(['\n', '\r']).len();
    line.0.truncate(end);
    Ok(line)
}

/// Asks twice on the terminal, without echo.
fn prompt_password(jid: &str) -> Result<Password, String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "no terminal to ask for the password on; pipe it in with --password-stdin \
                    (one line) instead"
                .to_owned(),
        );
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(Password)
            .map_err(|e| format!("cannot read the password: {e}"))
    };
    let first = ask(format!("Password for {jid}: "))?;
    let second = ask(format!("Password for {jid} (again): "))?;
    if first.as_str() != second.as_str() {
        return Err("the two passwords differ; nothing changed".to_owned());
    }
    Ok(first)
}

/// A password that is overwritten when dropped (best effort: copies the allocator made are not).
struct Password(String);

impl Password {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

fn exists(jid: &str) -> String {
    format!("account {jid} already exists; use `zorg user passwd {jid}` to change its password")
}

fn not_found(jid: &str) -> String {
    format!("there is no account {jid} (see `zorg user list`)")
}

fn db_err(e: StorageError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::default()
    }

    #[test]
    fn jids_are_normalised() {
        assert_eq!(
            normalise_jid("Alice@LocalHost", &config()).unwrap(),
            "alice@localhost"
        );
    }

    #[test]
    fn jids_must_be_bare_accounts_of_a_hosted_domain() {
        let err = normalise_jid("alice@example.org", &config()).unwrap_err();
        assert!(err.contains("does not host"), "{err}");
        assert!(err.contains("localhost"), "{err}");
        let err = normalise_jid("localhost", &config()).unwrap_err();
        assert!(err.contains("no user part"), "{err}");
        let err = normalise_jid("alice@localhost/phone", &config()).unwrap_err();
        assert!(err.contains("not a valid bare JID"), "{err}");
        let err = normalise_jid("a@b@localhost", &config()).unwrap_err();
        assert!(err.contains("not a valid bare JID"), "{err}");
    }
}
