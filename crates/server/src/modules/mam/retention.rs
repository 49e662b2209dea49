//! Background upkeep of stored messages: archive retention per domain, and re-encryption
//! after a data key rotation (`zorg keys rotate`, possibly from another process).

use std::sync::Arc;
use std::time::Duration;

use crate::server::Server;

/// How often expired messages are looked for.
const EXPIRY_EVERY: Duration = Duration::from_secs(3600);
/// Rows deleted or re-encrypted per transaction: short write locks while the server runs.
const BATCH: u32 = 500;

/// Deletes archived messages older than each domain's `archive_expiry`, at start and hourly.
pub async fn expire(server: Arc<Server>) {
    let mut shutdown = server.shutdown.clone();
    loop {
        for d in &server.config.domains {
            let Some(keep) = server.config.archive_expiry(&d.name) else {
                continue;
            };
            let cutoff = super::archiving::now_ms()
                .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
            let mut total = 0;
            loop {
                match server.storage.expire_archive(&d.name, cutoff, BATCH).await {
                    Ok(n) => {
                        total += n;
                        if n < u64::from(BATCH) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, domain = %d.name, "archive expiry failed; retrying later");
                        break;
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::task::yield_now().await;
            }
            if total > 0 {
                let ev = crate::audit::Event::ArchiveDeleted {
                    archive: d.name.clone(),
                    reason: crate::audit::event::ArchiveDeletion::Expired,
                    count: total,
                };
                let _ = server.audit.record(ev).await;
                tracing::info!(domain = %d.name, messages = total, "expired archived messages deleted");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_EVERY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Picks up a data key rotated by `zorg keys rotate` and re-encrypts older records under it,
/// a batch at a time; deletes old keys once nothing uses them.
pub async fn rotate_keys(server: Arc<Server>) {
    let mut shutdown = server.shutdown.clone();
    let poll = server.config.storage.key_poll.get();
    let mut pending = true;
    loop {
        match server.storage.refresh_keys().await {
            Ok(true) => {
                tracing::info!("a new data key is active; re-encrypting older records");
                pending = true;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "reading the data keys failed"),
        }
        while pending {
            match server.storage.reencrypt_step(BATCH).await {
                Ok(0) => pending = false,
                Ok(n) => tracing::debug!(records = n, "re-encrypted under the active data key"),
                Err(e) => {
                    tracing::error!(error = %e, "re-encryption failed; retrying later");
                    break;
                }
            }
            if *shutdown.borrow() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.changed() => return,
        }
    }
}
