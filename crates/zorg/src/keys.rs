//! `zorg keys status|rotate|generate`: the keys that encrypt stored messages (docs/keys.md).
//!
//! The key-encryption key (KEK) is read as the server reads it: `[storage] key_file`,
//! `key_env`, or `data_dir/zorg.key`. It is never printed; only its fingerprint is.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use zorg_server::storage::Storage;

use zorg_server::audit::event::{AdminCommand, KeyChange, KeyKind};
use zorg_server::audit::{Actor, Event};

use crate::ConfigArg;
use crate::audit::CliAudit;
use crate::settings;

/// `zorg keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show the key-encryption key's fingerprint and source, and every data key with how many
    /// stored records it encrypts.
    Status(ConfigArg),
    /// Make a new data key active. A running server notices it within `[storage] key_poll`
    /// and re-encrypts older records in the background, then deletes the old key.
    Rotate {
        /// The configuration.
        #[command(flatten)]
        config: ConfigArg,
        /// Re-encrypt everything now, in this process, and delete the old keys (for a stopped
        /// server; a running one does it by itself).
        #[arg(long)]
        now: bool,
    },
    /// Write a new random key-encryption key to FILE (mode 0600), for `[storage] key_file`.
    /// Refuses to overwrite an existing file.
    Generate {
        /// Where to write it.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs a `zorg keys` command.
pub fn run(cmd: KeysCommand) -> Result<ExitCode, String> {
    if let KeysCommand::Generate { file } = &cmd {
        let kek = zorg_server::crypto::generate_key_file(file).map_err(|e| e.to_string())?;
        println!(
            "wrote a new key-encryption key to {} (fingerprint {}); keep a copy apart from the \
             database backups",
            file.display(),
            kek.id()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        match cmd {
            KeysCommand::Status(c) => {
                let (config, db) = open(&c).await?;
                let mut trail = CliAudit::open(&config)?;
                trail.record(vec![Event::AdminAction {
                    by: Actor::cli(),
                    action: AdminCommand::KeysStatus,
                    target: None,
                }])?;
                let keys = db.key_status().await.map_err(|e| e.to_string())?;
                println!(
                    "key-encryption key: fingerprint {} from {}",
                    db.kek_id().map_err(|e| e.to_string())?,
                    config.key_source()
                );
                println!("data keys (records encrypted with each):");
                for k in &keys {
                    let created =
                        time::OffsetDateTime::from_unix_timestamp(k.created_unix_ms / 1000)
                            .map(|t| t.date().to_string())
                            .unwrap_or_default();
                    println!(
                        "  {:>4}  {:<8}  created {created}  archive {:>9}  offline {:>7}",
                        k.id,
                        if k.active { "active" } else { "retiring" },
                        k.archived,
                        k.offline
                    );
                }
                let pending: u64 = keys
                    .iter()
                    .filter(|k| !k.active)
                    .map(|k| k.archived + k.offline)
                    .sum();
                if pending > 0 {
                    println!("{pending} records still wait for re-encryption under the active key");
                }
                db.close().await;
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Rotate { config: c, now } => {
                let (config, db) = open(&c).await?;
                let mut trail = CliAudit::open(&config)?;
                let id = db.rotate_data_key().await.map_err(|e| e.to_string())?;
                println!("data key {id} is now active for new records");
                trail.record(vec![Event::KeyChanged {
                    key: KeyKind::DataKey,
                    change: KeyChange::Rotated,
                    id: id.to_string(),
                    by: Actor::cli(),
                }])?;
                if now {
                    let mut total = 0;
                    loop {
                        let n = db.reencrypt_step(1000).await.map_err(|e| e.to_string())?;
                        if n == 0 {
                            break;
                        }
                        total += n;
                    }
                    println!("re-encrypted {total} records; older data keys are deleted");
                } else {
                    println!(
                        "a running server re-encrypts older records in the background; \
                         `zorg keys status` shows the progress"
                    );
                }
                db.close().await;
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Generate { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

/// Opens and unlocks the server's existing database.
async fn open(c: &ConfigArg) -> Result<(zorg_server::config::Config, Storage), String> {
    let config = settings::load(c.config.as_deref())?;
    let path = settings::database_path(&config);
    if !path.exists() {
        return Err(format!(
            "no database at {}: start the server once first (is --config the server's?)",
            path.display()
        ));
    }
    let db = zorg_server::server::open_storage(&config)
        .await
        .map_err(|e| e.to_string())?;
    Ok((config, db))
}
