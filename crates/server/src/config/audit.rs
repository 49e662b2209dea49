//! `[audit]`: the NEN 7513 audit trail (docs/audit.md).

use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::sections::Check;
use super::values::DurationStr;

/// What the server does when it cannot write the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse every act that would go unaudited (logins, messages, archive reads …) until the
    /// log can be written again (fail closed).
    Refuse,
    /// Go on without auditing, saying so in the log (fail open).
    Continue,
}

/// `[audit]`: the tamper-evident audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record the audit trail. Default: true. Healthcare law asks for it; turn it off only
    /// for tests and benchmarks.
    pub enabled: bool,
    /// Directory of the audit log's segment files. Default: `data_dir/audit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The Ed25519 key that signs checkpoints, generated (mode 0600) at the first start if
    /// missing. Keep it apart from the message key and the backups. Default:
    /// `data_dir/audit-signing.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<PathBuf>,
    /// How often a signed checkpoint is written (when records were added since the last);
    /// one is always written at shutdown. Default "5m"; bounds "1s".."1d".
    pub checkpoint_interval: DurationStr,
    /// How long audit records are kept, apart from message retention; "0s" keeps them for
    /// ever. Whole daily segments are deleted. Default "0s"; otherwise at least "1d".
    pub retention: DurationStr,
    /// "refuse" (default): refuse what cannot be audited; "continue": serve on unaudited.
    pub on_failure: OnFailure,
    /// The longest an act waits for room in the audit queue or for the log's lock before it
    /// is refused. Default "2s"; bounds "1s".."60s".
    pub max_wait: DurationStr,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            signing_key: None,
            checkpoint_interval: DurationStr::from_mins(5),
            retention: DurationStr::ZERO,
            on_failure: OnFailure::Refuse,
            max_wait: DurationStr::from_secs(2),
        }
    }
}

impl AuditConfig {
    /// Bounds of `checkpoint_interval`.
    pub const CHECKPOINT_INTERVAL: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(86_400);
    /// Bounds of a `retention` that is not "0s".
    pub const RETENTION: RangeInclusive<DurationStr> =
        DurationStr::from_secs(86_400)..=DurationStr::MAX;
    /// Bounds of `max_wait`.
    pub const MAX_WAIT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(60);

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "audit",
        };
        for (key, p) in [("dir", &self.dir), ("signing_key", &self.signing_key)] {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                c.push(key, "is empty; give a path or remove the key");
            }
        }
        c.duration(
            "checkpoint_interval",
            self.checkpoint_interval,
            Self::CHECKPOINT_INTERVAL,
        );
        c.duration_or_zero("retention", self.retention, Self::RETENTION);
        c.duration("max_wait", self.max_wait, Self::MAX_WAIT);
    }
}
