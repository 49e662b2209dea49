//! `zorg`: the Zorg XMPP server's command-line program.
//!
//! - `zorg serve [--config FILE]` runs the server until SIGINT or SIGTERM;
//! - `zorg user add|del|passwd|list` manages accounts in the server's database;
//! - `zorg config check FILE` reports every problem in a config file;
//! - `zorg ca init|issue|revoke|crl|list` is the auditor's certificate authority (docs/ca.md);
//! - `zorg keys status|rotate|generate` manages the keys that encrypt stored messages;
//! - `zorg audit verify|export|key` checks and exports the audit trail (docs/audit.md);
//! - `zorg --version`.
//!
//! Each command's errors are written for the operator who typed it: what went wrong and what to
//! do. Exit codes: 0 on success, 1 on any error, 2 for command-line usage errors (clap's).

#![forbid(unsafe_code)]

mod audit;
mod ca;
mod check;
mod keys;
mod serve;
mod settings;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's allocator: stanzas are allocated by one session's task and freed
/// by another's, often on another thread, and glibc's per-arena locks then dominate the message
/// path (measured in docs/performance.md).
/// Off with `--no-default-features` for heap profilers, which see only the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Zorg: a federated XMPP server for healthcare chat.
#[derive(Debug, Parser)]
#[command(name = "zorg", version, about, propagate_version = true)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGINT (Ctrl-C) or SIGTERM.
    ///
    /// Without --config, the embedded defaults are used: domain "localhost", data in
    /// ./zorg-data, a generated self-signed certificate, clients on 127.0.0.1:5222 (STARTTLS)
    /// and 127.0.0.1:5223 (direct TLS).
    Serve(ConfigArg),
    /// Manage accounts: add, delete, change passwords, list.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The auditor's certificate authority: make a root, issue and revoke server
    /// certificates, publish CRLs (docs/ca.md).
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// The keys that encrypt stored messages: status, rotation, a new key file.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The NEN 7513 audit trail: verify it, export it (JSON lines or FHIR), print its public
    /// key (docs/audit.md).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

/// The `--config FILE` option shared by the commands that need a configuration.
#[derive(Debug, Clone, Args)]
struct ConfigArg {
    /// The configuration file (TOML; see zorg.example.toml). Without it the embedded defaults
    /// are used, with data in ./zorg-data.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `zorg config …`.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Report every problem in a configuration file (unknown keys, wrong types, values out of
    /// bounds), each with its line and key path. Exits 1 if there is any.
    Check {
        /// The file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(arg) => serve::run(arg.config.as_deref()),
        Command::User(cmd) => user::run(cmd),
        Command::Config(ConfigCommand::Check { file }) => check::run(&file),
        Command::Ca(cmd) => ca::run(cmd),
        Command::Keys(cmd) => keys::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("zorg: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A multi-threaded tokio runtime, or an error an operator can act on.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_is_accepted_after_the_subcommand() {
        let cli = Cli::try_parse_from(["zorg", "user", "add", "a@localhost", "--config", "z.toml"])
            .unwrap();
        let Command::User(user::UserCommand::Add { target, .. }) = cli.command else {
            panic!("not parsed as user add: {cli:?}");
        };
        assert_eq!(target.config.config, Some(PathBuf::from("z.toml")));
    }
}
