//! Throttling of password checks. The model (docs/security.md states it for operators):
//!
//! * **Reserve before checking.** A password is checked only under a [`Reservation`], taken
//!   atomically against every limit just before the check and turned into a failure (or
//!   released) right after it. Parallel connections therefore share one allowance: N guesses
//!   in flight count as N before any of them is answered.
//! * **Per address and account** (IPv6 per /64): `per_ip_account` failed checks per `window`
//!   (a leaky bucket: the count drains at `per_ip_account / window`), then checks are refused
//!   unchecked with `temporary-auth-failure`. The answer to each failed check is delayed,
//!   `delay × 2^(n-1)` for the n-th failure in a row (at most `delay_max`), and no new check
//!   for that pair starts before the delayed answer is due, so parallel guesses cannot slip
//!   into the pause.
//! * **Per address**: `per_ip` failed checks per `window` over all accounts (password
//!   spraying), then refused unchecked likewise.
//! * **Per account**, over all addresses: never a refusal, so an attacker cannot lock the
//!   rightful user out from elsewhere. Once an account has had `per_account` failures (in
//!   the same draining count), every attempt on it waits `delay × 2^k` before its check (k =
//!   failures beyond `per_account`), at most `account_delay_max`: bounded, so the rightful
//!   user still gets in.
//! * Only checks count: an exchange that ends before the password is checked (malformed,
//!   aborted, channel binding refused, refused by these limits) releases its reservation.
//! * A success forgets the pair's failures, and takes them back from the address's and
//!   account's counts (a user's own typos do not stay against the shared address of a ward);
//!   failures by others stay.
//!
//! Every table is capped ([`super::table`]); accounts are keyed by a keyed 64-bit hash of the
//! name, so an entry has a fixed size however long the name an attacker sends.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::ip_key;
use super::table::{Slot, Table};

/// Entries at most per table (address, address+account, account); about 80 bytes each.
const MAX_ENTRIES: usize = 65_536;

/// The configured limits (`[limits]`), see the module documentation.
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    /// Failed checks per address per window before refusals.
    pub per_ip: u32,
    /// Failed checks per address and account per window before refusals.
    pub per_ip_account: u32,
    /// Failed checks per account per window before its attempts are slowed down.
    pub per_account: u32,
    /// The window the counts drain over.
    pub window: Duration,
    /// The first delay of the growing delays (zero: none).
    pub delay: Duration,
    /// Longest delay of a failed answer for one address and account.
    pub delay_max: Duration,
    /// Longest delay any attempt on an account under pressure waits.
    pub account_delay_max: Duration,
}

impl LoginLimits {
    /// The limits `[limits]` sets.
    pub fn of(l: &crate::config::LimitsConfig) -> Self {
        LoginLimits {
            per_ip: l.login_failures_per_ip,
            per_ip_account: l.login_failures_per_ip_account,
            per_account: l.login_failures_per_account,
            window: l.login_failure_window.get(),
            delay: l.login_delay.get(),
            delay_max: l.login_delay_max.get(),
            account_delay_max: l.login_account_delay_max.get(),
        }
    }
}

/// Why a check was refused without checking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The address has used its allowance of failed checks.
    Address,
    /// The address has used its allowance for this account, or its delayed answer is not
    /// due yet.
    AddressAccount,
}

#[derive(Debug)]
struct Entry {
    /// Failed checks, draining at the table's rate since `at`.
    score: f64,
    at: Instant,
    /// Checks reserved and not yet finished.
    in_flight: u32,
    /// Failures in a row (reset by a success or once the score has drained).
    streak: u32,
    /// No new check starts before this (the last failure's answer is due then).
    not_before: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            score: 0.0,
            at: now,
            in_flight: 0,
            streak: 0,
            not_before: now,
        }
    }

    fn score_at(&self, now: Instant, rate: f64) -> f64 {
        let drained = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        (self.score - drained).max(0.0)
    }

    /// Brings the score up to `now`.
    fn settle(&mut self, now: Instant, rate: f64) {
        self.score = self.score_at(now, rate);
        self.at = now;
        if self.score == 0.0 && now >= self.not_before {
            self.streak = 0;
        }
    }

    /// Ends one reserved check on the address's or account's entry; `own` is the count a
    /// success of this address and account takes back.
    fn count(&mut self, now: Instant, rate: f64, outcome: Outcome, own: f64) {
        self.settle(now, rate);
        self.in_flight = self.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Failed => self.score += 1.0,
            Outcome::Succeeded => self.score = (self.score - own).max(0.0),
            Outcome::NotChecked => {}
        }
    }

    /// Whether one more check (besides those in flight) stays within `allowance`.
    fn has_room(&self, now: Instant, rate: f64, allowance: u32) -> bool {
        self.score_at(now, rate) + f64::from(self.in_flight) + 1.0 <= f64::from(allowance)
    }
}

impl Slot for Entry {
    fn idle(&self, now: Instant, rate: f64) -> bool {
        self.in_flight == 0 && now >= self.not_before && self.score_at(now, rate) == 0.0
    }
    fn busy(&self) -> bool {
        self.in_flight > 0
    }
    fn pressure(&self, now: Instant, rate: f64) -> f64 {
        self.score_at(now, rate)
    }
}

struct State {
    ip: Table<IpAddr, Entry>,
    pair: Table<(IpAddr, u64), Entry>,
    account: Table<u64, Entry>,
}

/// The throttle of password checks, shared by every client connection.
pub struct LoginThrottle {
    limits: LoginLimits,
    /// Keys the account hashes; random per start, so an attacker cannot aim at collisions.
    hasher: std::hash::RandomState,
    state: Mutex<State>,
}

/// `base × 2^exp`, at most `max`.
fn doubled(base: Duration, exp: u32, max: Duration) -> Duration {
    base.saturating_mul(1u32 << exp.min(20)).min(max)
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        let window = limits.window.as_secs_f64().max(1.0);
        let rate = |allowance: u32| f64::from(allowance.max(1)) / window;
        LoginThrottle {
            limits,
            hasher: std::hash::RandomState::new(),
            state: Mutex::new(State {
                ip: Table::new(MAX_ENTRIES, rate(limits.per_ip)),
                pair: Table::new(MAX_ENTRIES, rate(limits.per_ip_account)),
                account: Table::new(MAX_ENTRIES, rate(limits.per_account)),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every unlock leaves the tables consistent; a panic elsewhere must not stop logins.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn account_key(&self, account: &str) -> u64 {
        self.hasher.hash_one(account)
    }

    /// How long an attempt on `account` waits before its check: zero unless the account has
    /// had `per_account` failures lately, from anywhere.
    pub fn account_delay(&self, account: &str) -> Duration {
        let key = self.account_key(account);
        let st = self.state();
        let Some(e) = st.account.get(&key) else {
            return Duration::ZERO;
        };
        let score = e.score_at(Instant::now(), st.account.rate);
        let over = score - f64::from(self.limits.per_account);
        if over < 0.0 {
            return Duration::ZERO;
        }
        // `over` is at most the table's count of failures: the cast cannot truncate much.
        let exp = over.floor().min(f64::from(u16::MAX)) as u32;
        doubled(self.limits.delay, exp, self.limits.account_delay_max)
    }

    /// Reserves one password check by `ip` on `account` (`None` when the name is not even a
    /// valid account name), or refuses it unchecked.
    pub fn reserve(&self, ip: IpAddr, account: Option<&str>) -> Result<Reservation<'_>, Refused> {
        let ip = ip_key(ip);
        let account = account.map(|a| self.account_key(a));
        let now = Instant::now();
        let l = &self.limits;
        let mut st = self.state();
        if let Some(e) = st.ip.get(&ip)
            && !e.has_room(now, st.ip.rate, l.per_ip)
        {
            return Err(Refused::Address);
        }
        if let Some(a) = account
            && let Some(e) = st.pair.get(&(ip, a))
            && (now < e.not_before || !e.has_room(now, st.pair.rate, l.per_ip_account))
        {
            return Err(Refused::AddressAccount);
        }
        let rate = st.ip.rate;
        let (e, mut forgot) = st.ip.entry(ip, now, || Entry::new(now));
        e.settle(now, rate);
        e.in_flight += 1;
        if let Some(a) = account {
            let (e, f) = st.pair.entry((ip, a), now, || Entry::new(now));
            e.in_flight += 1;
            forgot |= f;
            let (e, f) = st.account.entry(a, now, || Entry::new(now));
            e.in_flight += 1;
            forgot |= f;
        }
        drop(st);
        if forgot {
            tracing::warn!(
                "more addresses and accounts fail logins than the throttle can track; the \
                 least active are forgotten (and get a fresh allowance)"
            );
        }
        Ok(Reservation {
            throttle: self,
            ip,
            account,
            done: false,
        })
    }

    fn finish(&self, ip: IpAddr, account: Option<u64>, outcome: Outcome) -> Duration {
        let now = Instant::now();
        let l = &self.limits;
        let mut st = self.state();
        let mut answer_delay = Duration::ZERO;
        // The pair first: a success takes its count back from the others.
        let mut own = 0.0;
        if let Some(a) = account {
            let rate = st.pair.rate;
            if let Some(e) = st.pair.get_mut(&(ip, a)) {
                e.settle(now, rate);
                e.in_flight = e.in_flight.saturating_sub(1);
                match outcome {
                    Outcome::Failed => {
                        e.score += 1.0;
                        e.streak = e.streak.saturating_add(1);
                        answer_delay = doubled(l.delay, e.streak - 1, l.delay_max);
                        e.not_before = e.not_before.max(now + answer_delay);
                    }
                    Outcome::Succeeded => {
                        own = e.score;
                        e.score = 0.0;
                        e.streak = 0;
                        e.not_before = now;
                    }
                    Outcome::NotChecked => {}
                }
                if e.idle(now, rate) {
                    st.pair.remove(&(ip, a));
                }
            }
        }
        let rate = st.ip.rate;
        if let Some(e) = st.ip.get_mut(&ip) {
            e.count(now, rate, outcome, own);
        }
        if let Some(a) = account {
            let rate = st.account.rate;
            if let Some(e) = st.account.get_mut(&a) {
                e.count(now, rate, outcome, own);
            }
        }
        answer_delay
    }
}

/// How a reserved check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    NotChecked,
}

/// One password check that may go ahead. Finish it with [`Reservation::failed`],
/// [`Reservation::succeeded`] or [`Reservation::not_checked`]; dropped unfinished (the
/// connection went away during the check), it counts as failed, since the password may have
/// been checked.
pub struct Reservation<'a> {
    throttle: &'a LoginThrottle,
    ip: IpAddr,
    account: Option<u64>,
    done: bool,
}

impl Reservation<'_> {
    /// The password was wrong. Returns how long to wait before answering.
    pub fn failed(mut self) -> Duration {
        self.done = true;
        self.throttle.finish(self.ip, self.account, Outcome::Failed)
    }

    /// The password was right.
    pub fn succeeded(mut self) {
        self.done = true;
        self.throttle
            .finish(self.ip, self.account, Outcome::Succeeded);
    }

    /// The exchange ended before any password was checked: nothing counts.
    pub fn not_checked(mut self) {
        self.done = true;
        self.throttle
            .finish(self.ip, self.account, Outcome::NotChecked);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(self.ip, self.account, Outcome::Failed);
        }
    }
}

#[cfg(test)]
#[path = "login_tests.rs"]
mod tests;
