//! `[push]`: XEP-0357 push notifications to the app servers of an account's mobile clients.
//!
//! A notification leaves the care network (through the app vendor's servers to Apple's or
//! Google's), so what it says is kept to the minimum a phone needs to wake up: how many
//! messages wait. Never a message body; the sender only when the operator allows it here.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::sections::Check;
use super::values::DurationStr;

/// `[push]`: XEP-0357 Push Notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Let clients register app servers and notify them of messages that arrive while the
    /// account has no session. Default: true (the notification carries no message content).
    pub enabled: bool,
    /// Put the sender's bare JID in notifications (`last-message-sender`). It tells the app
    /// vendor who writes to whom; allow it only where an agreement with the vendor covers that.
    /// Message bodies are never sent. Default: false.
    pub include_sender: bool,
    /// At most one notification per registration in this time, however many messages arrive;
    /// the messages that arrive meanwhile are counted in the next one. Default "5s"; bounds
    /// "1s" to "1h".
    pub min_interval: DurationStr,
    /// Registrations per account (one per app and device). Enabling one more replaces the one
    /// enabled longest ago. Default 10; bounds 1 to 100.
    pub max_registrations: u32,
}

impl PushConfig {
    /// Bounds of `min_interval`.
    pub const MIN_INTERVAL: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_mins(60);
    /// Bounds of `max_registrations`.
    pub const MAX_REGISTRATIONS: RangeInclusive<u32> = 1..=100;

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "push",
        };
        c.duration("min_interval", self.min_interval, Self::MIN_INTERVAL);
        c.range(
            "max_registrations",
            self.max_registrations,
            Self::MAX_REGISTRATIONS,
        );
    }
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            include_sender: false,
            min_interval: DurationStr::from_secs(5),
            max_registrations: 10,
        }
    }
}
