//! `[storage]` (where the key-encryption key comes from) and `[archive]` (XEP-0313 defaults and
//! retention).

use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::sections::Check;
use super::values::DurationStr;
use crate::storage::archive::PrefMode;

/// `[storage]`: encryption at rest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// File holding the key-encryption key (64 hexadecimal digits). Default: none, and
    /// `data_dir/zorg.key` is used, generated (mode 0600) at the first start of a new database.
    /// Never put it in the database's backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name of an environment variable holding the key instead of a file (for secret stores
    /// that inject variables). Default: none. Not together with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// How often a running server looks for a data key rotated with `zorg keys rotate`, and
    /// re-encrypts older records in the background. Default "10s"; bounds "1s".."1h".
    pub key_poll: DurationStr,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            key_file: None,
            key_env: None,
            key_poll: DurationStr::from_secs(10),
        }
    }
}

impl StorageConfig {
    /// Bounds of `key_poll`.
    pub const KEY_POLL: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(3600);

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "storage",
        };
        if self.key_file.is_some() && self.key_env.is_some() {
            c.push("key_env", "is set together with key_file; choose one");
        }
        if self
            .key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            c.push("key_file", "is empty; give a file name or remove the key");
        }
        if self
            .key_env
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.contains('='))
        {
            c.push("key_env", "must be the name of an environment variable");
        }
        c.duration("key_poll", self.key_poll, Self::KEY_POLL);
    }
}

/// `[archive]`: XEP-0313 message archives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Keep every account's messages in its archive. Default: true.
    pub enabled: bool,
    /// What is archived for an account that set no preferences: "always", "roster" (only
    /// contacts in the roster) or "never". Default "always".
    pub default: PrefMode,
    /// How long messages are kept, for domains without their own `archive_expiry`; "0s" keeps
    /// them until deleted. Default "0s". At least "1h" otherwise.
    pub expiry: DurationStr,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default: PrefMode::Always,
            expiry: DurationStr::from_secs(0),
        }
    }
}

impl ArchiveConfig {
    /// Bounds of an expiry that is not "0s".
    pub const EXPIRY: RangeInclusive<DurationStr> =
        DurationStr::from_secs(3600)..=DurationStr::from_secs(100 * 365 * 86_400);

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "archive",
        };
        c.duration_or_zero("expiry", self.expiry, Self::EXPIRY);
    }
}
