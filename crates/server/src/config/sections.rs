//! The config file's sections: `[[domain]]`, `[c2s]`, `[limits]`, `[log]`, `[registration]`,
//! `[modules]`. Each struct has its embedded defaults, its bounds and a `validate` that reports
//! every value out of bounds with the value's key path.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::values::{DurationStr, check_domain_name, check_host_port, check_log_level};

/// Collects the problems of one section, naming each `section.key`.
pub(super) struct Check<'a> {
    pub(super) problems: &'a mut Vec<Problem>,
    pub(super) section: &'static str,
}

impl Check<'_> {
    pub(super) fn push(&mut self, key: &str, message: impl Into<String>) {
        let path = format!("{}.{key}", self.section);
        self.problems.push(Problem::new(path, message));
    }

    pub(super) fn range<T: PartialOrd + Display>(
        &mut self,
        key: &str,
        value: T,
        range: RangeInclusive<T>,
    ) {
        if !range.contains(&value) {
            let (lo, hi) = (range.start(), range.end());
            self.push(key, format!("must be between {lo} and {hi}, not {value}"));
        }
    }

    fn at_least<T: PartialOrd + Display>(&mut self, key: &str, value: T, min: T) {
        if value < min {
            self.push(key, format!("must be at least {min}, not {value}"));
        }
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: DurationStr,
        range: RangeInclusive<DurationStr>,
    ) {
        if !range.contains(&value) {
            let (lo, hi) = (range.start(), range.end());
            self.push(
                key,
                format!("must be between \"{lo}\" and \"{hi}\", not \"{value}\""),
            );
        }
    }

    /// Like [`Check::duration`] for keys where "0s" means "disabled".
    pub(super) fn duration_or_zero(
        &mut self,
        key: &str,
        value: DurationStr,
        range: RangeInclusive<DurationStr>,
    ) {
        if !value.is_zero() && !range.contains(&value) {
            let (lo, hi) = (range.start(), range.end());
            let message = format!(
                "must be between \"{lo}\" and \"{hi}\" (or \"0s\" to disable), not \"{value}\""
            );
            self.push(key, message);
        }
    }
}

/// One `[[domain]]` the server hosts: accounts live under it and it is the name clients connect to.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainConfig {
    /// The domain name (XMPP domainpart), e.g. "example.org". Required; an ASCII DNS name
    /// (internationalised names in xn-- form), compared and stored lower-cased; no duplicates.
    pub name: String,
    /// PEM file with the certificate chain for this domain, leaf first. Relative paths are relative
    /// to the config file. Default: none, and a self-signed certificate is generated into the data
    /// directory. Set together with `key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// PEM file with the private key of `certificate`. Relative paths are relative to the config
    /// file. Default: none. Set together with `certificate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How long this domain's archives keep messages, overriding `[archive] expiry` (e.g.
    /// "365d"; "0s" keeps them until deleted). Default: none, `[archive] expiry` applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_expiry: Option<DurationStr>,
}

impl DomainConfig {
    /// A domain with a generated self-signed certificate.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            certificate: None,
            key: None,
            archive_expiry: None,
        }
    }
}

/// Validates the `[[domain]]` list: at least one, names valid and distinct, certificate and key
/// given together.
pub(super) fn validate_domains(domains: &[DomainConfig], problems: &mut Vec<Problem>) {
    if domains.is_empty() {
        problems.push(Problem::new(
            "domain",
            "no domain configured; add a [[domain]] section with name = \"your.domain\"",
        ));
    }
    let mut seen = HashSet::new();
    for (i, d) in domains.iter().enumerate() {
        match check_domain_name(&d.name) {
            Err(e) => problems.push(Problem::new(format!("domain[{i}].name"), e)),
            Ok(()) => {
                if !seen.insert(d.name.to_ascii_lowercase()) {
                    problems.push(Problem::new(
                        format!("domain[{i}].name"),
                        format!("{:?} is listed twice; remove one [[domain]]", d.name),
                    ));
                }
            }
        }
        match (&d.certificate, &d.key) {
            (Some(_), None) => problems.push(Problem::new(
                format!("domain[{i}].certificate"),
                "is set but `key` is not; set both or neither",
            )),
            (None, Some(_)) => problems.push(Problem::new(
                format!("domain[{i}].key"),
                "is set but `certificate` is not; set both or neither",
            )),
            _ => {}
        }
        if let Some(e) = d.archive_expiry
            && !e.is_zero()
            && !super::storage::ArchiveConfig::EXPIRY.contains(&e)
        {
            problems.push(Problem::new(
                format!("domain[{i}].archive_expiry"),
                format!("must be between \"1h\" and \"36500d\" (or \"0s\" to keep), not \"{e}\""),
            ));
        }
        for (field, path) in [("certificate", &d.certificate), ("key", &d.key)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                problems.push(Problem::new(
                    format!("domain[{i}].{field}"),
                    "is empty; give a file name or remove the key",
                ));
            }
        }
    }
}

/// Reports every listening address used twice, across the `[c2s]` and `[s2s]` lists (each
/// given as section, key and addresses): two listeners cannot bind one address.
pub(super) fn validate_listeners(
    lists: &[(&str, &str, &[SocketAddr])],
    problems: &mut Vec<Problem>,
) {
    let mut seen = HashMap::new();
    for (section, key, addrs) in lists {
        for (i, addr) in addrs.iter().enumerate() {
            let path = format!("{section}.{key}[{i}]");
            // Port 0 asks the system for any free port, so two of them never clash.
            if addr.port() == 0 {
                continue;
            }
            if let Some(first) = seen.get(addr) {
                let message = format!("{addr} is listed twice (first at {first}); remove one");
                problems.push(Problem::new(path, message));
            } else {
                seen.insert(*addr, path);
            }
        }
    }
}

/// `[c2s]`: client-to-server listeners and per-stream behaviour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Addresses where clients connect in plain TCP and upgrade with STARTTLS (RFC 6120).
    /// IP and port, e.g. "0.0.0.0:5222" or "[::]:5222". Default: ["127.0.0.1:5222"].
    pub listen: Vec<SocketAddr>,
    /// Addresses for TLS from the first byte (XEP-0368 direct TLS), ALPN "xmpp-client".
    /// Default: ["127.0.0.1:5223"].
    pub direct_tls: Vec<SocketAddr>,
    /// Offer SASL PLAIN (only ever over TLS) besides SCRAM; needed by a few old clients, but it
    /// hands the password to the server on every login. Default: false.
    pub allow_plain: bool,
    /// When non-empty ("host[:port]", e.g. "xmpp2.example.net:5222"), every new stream is
    /// redirected there with RFC 6120 `<see-other-host/>`: for maintenance. Default: "" (off).
    pub see_other_host: String,
    /// An authenticated stream silent this long gets an XEP-0199 ping. Default "10m";
    /// bounds "10s".."1d".
    pub idle_timeout: DurationStr,
    /// Close an idle stream whose ping got no answer (nor any other traffic) within this long.
    /// Default "60s"; bounds "1s".."1h".
    pub ping_timeout: DurationStr,
    /// Send a single space when nothing was sent for this long, so NATs keep the connection.
    /// Default "90s"; bounds "1s".."1h", or "0s" to disable.
    pub whitespace_keepalive: DurationStr,
    /// PBKDF2 iterations for SCRAM credentials created or changed from now on (existing ones keep
    /// theirs). Default 4096; bounds 4096..=1000000.
    pub sasl_iterations: u32,
    /// XEP-0198: how long a session whose connection broke stays bound, collecting what is sent
    /// to it, so that the client can resume it on a new connection; then its unacknowledged
    /// messages go to other resources or offline storage. Default "5m"; bounds "10s".."1h", or
    /// "0s" to offer acknowledgements without resumption.
    pub resume_timeout: DurationStr,
    /// XEP-0198: stanzas sent to one client and not yet acknowledged (or collected while it is
    /// away); a session over this is closed with `<policy-violation/>` and its messages are
    /// rerouted. Default 500; bounds 10..=10000.
    pub max_unacked: u32,
    /// XEP-0198: memory the unacknowledged stanzas of one session may hold, in bytes (as
    /// `max_unacked`, for large stanzas); over it the session is closed with
    /// `<policy-violation/>` and its messages are rerouted. Default 4194304 (4 MiB); bounds
    /// 65536..=268435456.
    pub max_unacked_bytes: u32,
}

impl C2sConfig {
    /// Bounds of `idle_timeout`.
    pub const IDLE_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(10)..=DurationStr::from_secs(86_400);
    /// Bounds of `ping_timeout`.
    pub const PING_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(3_600);
    /// Bounds of `whitespace_keepalive` besides "0s".
    pub const WHITESPACE_KEEPALIVE: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(3_600);
    /// Bounds of `sasl_iterations`.
    pub const SASL_ITERATIONS: RangeInclusive<u32> = 4096..=1_000_000;
    /// Bounds of `resume_timeout` besides "0s".
    pub const RESUME_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(10)..=DurationStr::from_secs(3_600);
    /// Bounds of `max_unacked`.
    pub const MAX_UNACKED: RangeInclusive<u32> = 10..=10_000;
    /// Bounds of `max_unacked_bytes`.
    pub const MAX_UNACKED_BYTES: RangeInclusive<u32> = 65_536..=268_435_456;

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "c2s",
        };
        if self.listen.is_empty() && self.direct_tls.is_empty() {
            let message =
                "no client listener; give at least one address in `listen` or `direct_tls`";
            c.push("listen", message);
        }
        if !self.see_other_host.is_empty()
            && let Err(e) = check_host_port(&self.see_other_host)
        {
            c.push("see_other_host", e);
        }
        c.duration("idle_timeout", self.idle_timeout, Self::IDLE_TIMEOUT);
        c.duration("ping_timeout", self.ping_timeout, Self::PING_TIMEOUT);
        let keepalive = self.whitespace_keepalive;
        c.duration_or_zero(
            "whitespace_keepalive",
            keepalive,
            Self::WHITESPACE_KEEPALIVE,
        );
        c.range(
            "sasl_iterations",
            self.sasl_iterations,
            Self::SASL_ITERATIONS,
        );
        let resume = self.resume_timeout;
        c.duration_or_zero("resume_timeout", resume, Self::RESUME_TIMEOUT);
        c.range("max_unacked", self.max_unacked, Self::MAX_UNACKED);
        let bytes = self.max_unacked_bytes;
        c.range("max_unacked_bytes", bytes, Self::MAX_UNACKED_BYTES);
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5222))],
            direct_tls: vec![SocketAddr::from(([127, 0, 0, 1], 5223))],
            allow_plain: false,
            see_other_host: String::new(),
            idle_timeout: DurationStr::from_mins(10),
            ping_timeout: DurationStr::from_secs(60),
            whitespace_keepalive: DurationStr::from_secs(90),
            sasl_iterations: 4096,
            resume_timeout: DurationStr::from_mins(5),
            max_unacked: 500,
            max_unacked_bytes: 4 << 20,
        }
    }
}

/// `[limits]`: what one connection, account or address may cost the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest stanza (and stream header) in bytes once the peer is authenticated; a bigger one
    /// closes the stream with `<policy-violation/>`. Advertised after authentication (XEP-0478).
    /// A stanza may also hold at most 16 times this in memory (element-dense stanzas cost more
    /// than their bytes); over that, the same error. Default 262144; bounds 4096..=16777216.
    pub max_stanza_size: usize,
    /// Largest stanza in bytes before the client or server has authenticated (STARTTLS, SASL,
    /// XEP-0077 registration, dialback need a few KiB); at most `max_stanza_size`. Before
    /// authentication a stanza may also have at most 256 elements. Over either the stream is
    /// closed with `<policy-violation/>`. Default 8192; bounds 1024..=65536.
    pub pre_auth_stanza_size: usize,
    /// Most elements in one stanza, the stanza itself included; one more closes the stream with
    /// `<policy-violation/>`. Real stanzas stay far below (a 500-room XEP-0048 bookmark list is
    /// about 1,000, an OMEMO bundle about 100). Default 10000; bounds 16..=1000000.
    pub max_elements: usize,
    /// Deepest element nesting inside a stanza. Default 32; bounds 1..=256.
    pub max_depth: usize,
    /// Most attributes on one element. Default 64; bounds 1..=1024.
    pub max_attributes: usize,
    /// Sustained read rate per connection in bytes per second, with a burst of `max_stanza_size`;
    /// a faster peer is slowed down, not cut off. Default 262144; at least 1024.
    pub read_rate: u64,
    /// Time a new connection has to finish TLS, SASL and resource binding. Default "30s";
    /// bounds "1s".."10m".
    pub pre_auth_timeout: DurationStr,
    /// Connections not yet authenticated, server-wide (clients and servers each); further ones
    /// are closed at once until some finish. The last line behind the per-address limits.
    /// Default 512; at least 1.
    pub max_unauthenticated: u32,
    /// Client connections not yet authenticated from one IPv4 address or IPv6 /64; further
    /// ones are closed at once. A NAT of hundreds of clients needs this many only while they
    /// all reconnect, and they retry. Default 64; bounds 1..=1000000.
    pub max_unauthenticated_per_ip: u32,
    /// New client connections per second from one address (or /64), sustained; faster ones
    /// are closed at once. Default 20; bounds 1..=1000000.
    pub connection_rate_per_ip: u32,
    /// New client connections one address (or /64) may open at once before
    /// `connection_rate_per_ip` applies (a NAT's reconnect storm). Default 200; bounds
    /// 1..=1000000.
    pub connection_burst_per_ip: u32,
    /// Messages stored for an offline account; further ones are bounced. Default 1000;
    /// bounds 0..=1000000 (0 stores none).
    pub max_offline_per_account: u32,
    /// Failed password checks on one account, from anywhere, per `login_failure_window` after
    /// which every login to it waits (growing from `login_delay`, at most
    /// `login_account_delay_max`) before its check. Never a refusal: an attacker cannot lock
    /// the rightful user out. Default 5; at least 1.
    pub login_failures_per_account: u32,
    /// Failed password checks from one address (or IPv6 /64) per window, over all accounts;
    /// further logins from there get `temporary-auth-failure` unchecked until the count drains.
    /// High enough for the typos of a ward behind one NAT. Default 100; at least 1.
    pub login_failures_per_ip: u32,
    /// Failed password checks on one account from one address (or /64) per window; further
    /// ones get `temporary-auth-failure` unchecked. Default 5; at least 1.
    pub login_failures_per_ip_account: u32,
    /// The window the login counts drain over (a leaky bucket). Default "5m"; bounds "1s".."1d".
    pub login_failure_window: DurationStr,
    /// The answer to the n-th failed password check in a row on one account from one address
    /// waits `login_delay` × 2^(n-1), at most `login_delay_max`. Default "1s"; bounds
    /// "0s".."10s" ("0s": no delays).
    pub login_delay: DurationStr,
    /// Longest such delay. Default "16s"; bounds "0s".."10m".
    pub login_delay_max: DurationStr,
    /// Longest wait of a login to an account past `login_failures_per_account` (the rightful
    /// user's too). Default "4s"; bounds "0s".."1m".
    pub login_account_delay_max: DurationStr,
    /// Sessions (resources) one account may have at once; binding one more is refused with
    /// `resource-constraint`. Default 16; bounds 1..=1024.
    pub max_resources_per_account: u32,
    /// Memory the stanzas waiting to be written to one session may hold, in bytes; one
    /// sender may fill at most a quarter of it (and of the 1024 stanzas a queue holds). A
    /// message that does not fit bounces to its sender with `<resource-constraint/>` (type
    /// `wait`); the recipient stays connected. Default 2097152 (2 MiB); bounds
    /// 65536..=268435456.
    pub max_session_queue_bytes: u32,
    /// Contacts in one roster (RFC 6121 §2). A roster set or subscription that would add one
    /// more gets `not-acceptable` (type cancel). Default 1000; bounds 10..=100000.
    pub max_roster_items: u32,
    /// Unanswered subscription requests kept for one account from contacts not in its roster
    /// (RFC 6121 §3.1.3); a further request is bounced with `resource-constraint` (type wait).
    /// Default 100; bounds 1..=10000.
    pub max_pending_subscriptions: u32,
    /// Items in one blocklist (XEP-0191); a block that would exceed it gets `not-acceptable`
    /// (type cancel). Default 1000; bounds 10..=100000.
    pub max_blocklist_items: u32,
    /// Entities one session may have sent directed available presence to (RFC 6121 §4.6),
    /// each sent unavailable when it ends; one more gets `not-acceptable` (type cancel).
    /// Default 256; bounds 8..=10000.
    pub max_directed_presence: u32,
    /// Largest presence stanza a client may send, in bytes as serialised: the server stores a
    /// session's presence and sends it to every contact and every probe. A bigger one gets
    /// `policy-violation` (type modify). Default 4096; bounds 512..=65536.
    pub max_presence_size: usize,
    /// Weight each in-memory cache of per-account data (blocklists, archiving preferences)
    /// may hold: one per account plus one per JID listed; least-used entries are evicted and
    /// read again from the database when needed. Default 100000; bounds 1000..=10000000.
    pub account_cache_capacity: u64,
}

impl LimitsConfig {
    /// Bounds of `max_stanza_size`.
    pub const MAX_STANZA_SIZE: RangeInclusive<usize> = 4096..=16 * 1024 * 1024;
    /// Bounds of `pre_auth_stanza_size`.
    pub const PRE_AUTH_STANZA_SIZE: RangeInclusive<usize> = 1024..=65536;
    /// Bounds of `max_elements`.
    pub const MAX_ELEMENTS: RangeInclusive<usize> = 16..=1_000_000;
    /// Bounds of `max_depth`.
    pub const MAX_DEPTH: RangeInclusive<usize> = 1..=256;
    /// Bounds of `max_attributes`.
    pub const MAX_ATTRIBUTES: RangeInclusive<usize> = 1..=1024;
    /// Least `read_rate`.
    pub const MIN_READ_RATE: u64 = 1024;
    /// Bounds of `pre_auth_timeout`.
    pub const PRE_AUTH_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(600);
    /// Bounds of `max_offline_per_account`.
    pub const MAX_OFFLINE_PER_ACCOUNT: RangeInclusive<u32> = 0..=1_000_000;
    /// Bounds of `login_failure_window`.
    pub const LOGIN_FAILURE_WINDOW: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(86_400);
    /// Bounds of `max_resources_per_account`.
    pub const MAX_RESOURCES_PER_ACCOUNT: RangeInclusive<u32> = 1..=1024;
    /// Bounds of `max_session_queue_bytes`.
    pub const MAX_SESSION_QUEUE_BYTES: RangeInclusive<u32> = 65_536..=268_435_456;
    /// Bounds of `max_roster_items`.
    pub const MAX_ROSTER_ITEMS: RangeInclusive<u32> = 10..=100_000;
    /// Bounds of `max_pending_subscriptions`.
    pub const MAX_PENDING_SUBSCRIPTIONS: RangeInclusive<u32> = 1..=10_000;
    /// Bounds of `max_blocklist_items`.
    pub const MAX_BLOCKLIST_ITEMS: RangeInclusive<u32> = 10..=100_000;
    /// Bounds of `max_directed_presence`.
    pub const MAX_DIRECTED_PRESENCE: RangeInclusive<u32> = 8..=10_000;
    /// Bounds of `max_presence_size`.
    pub const MAX_PRESENCE_SIZE: RangeInclusive<usize> = 512..=65_536;
    /// Bounds of `account_cache_capacity`.
    pub const ACCOUNT_CACHE_CAPACITY: RangeInclusive<u64> = 1_000..=10_000_000;
    /// Bounds of the per-address connection limits.
    pub const PER_IP: RangeInclusive<u32> = 1..=1_000_000;
    /// Bounds of `login_delay`, `login_delay_max` and `login_account_delay_max`.
    pub const LOGIN_DELAYS: [(&str, RangeInclusive<DurationStr>); 3] = [
        (
            "login_delay",
            DurationStr::ZERO..=DurationStr::from_secs(10),
        ),
        (
            "login_delay_max",
            DurationStr::ZERO..=DurationStr::from_secs(600),
        ),
        (
            "login_account_delay_max",
            DurationStr::ZERO..=DurationStr::from_secs(60),
        ),
    ];

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "limits",
        };
        c.range(
            "max_stanza_size",
            self.max_stanza_size,
            Self::MAX_STANZA_SIZE,
        );
        c.range(
            "pre_auth_stanza_size",
            self.pre_auth_stanza_size,
            Self::PRE_AUTH_STANZA_SIZE,
        );
        c.range("max_elements", self.max_elements, Self::MAX_ELEMENTS);
        c.range("max_depth", self.max_depth, Self::MAX_DEPTH);
        c.range("max_attributes", self.max_attributes, Self::MAX_ATTRIBUTES);
        c.at_least("read_rate", self.read_rate, Self::MIN_READ_RATE);
        c.duration(
            "pre_auth_timeout",
            self.pre_auth_timeout,
            Self::PRE_AUTH_TIMEOUT,
        );
        c.at_least("max_unauthenticated", self.max_unauthenticated, 1);
        c.range(
            "max_unauthenticated_per_ip",
            self.max_unauthenticated_per_ip,
            Self::PER_IP,
        );
        c.range(
            "connection_rate_per_ip",
            self.connection_rate_per_ip,
            Self::PER_IP,
        );
        c.range(
            "connection_burst_per_ip",
            self.connection_burst_per_ip,
            Self::PER_IP,
        );
        let offline = self.max_offline_per_account;
        c.range(
            "max_offline_per_account",
            offline,
            Self::MAX_OFFLINE_PER_ACCOUNT,
        );
        c.at_least(
            "login_failures_per_account",
            self.login_failures_per_account,
            1,
        );
        c.at_least("login_failures_per_ip", self.login_failures_per_ip, 1);
        let pair = self.login_failures_per_ip_account;
        c.at_least("login_failures_per_ip_account", pair, 1);
        let window = self.login_failure_window;
        c.duration("login_failure_window", window, Self::LOGIN_FAILURE_WINDOW);
        let delays = [
            self.login_delay,
            self.login_delay_max,
            self.login_account_delay_max,
        ];
        for ((key, range), value) in Self::LOGIN_DELAYS.into_iter().zip(delays) {
            c.duration(key, value, range);
        }
        let resources = self.max_resources_per_account;
        c.range(
            "max_resources_per_account",
            resources,
            Self::MAX_RESOURCES_PER_ACCOUNT,
        );
        let queue = self.max_session_queue_bytes;
        c.range(
            "max_session_queue_bytes",
            queue,
            Self::MAX_SESSION_QUEUE_BYTES,
        );
        let roster = self.max_roster_items;
        c.range("max_roster_items", roster, Self::MAX_ROSTER_ITEMS);
        let pending = self.max_pending_subscriptions;
        let range = Self::MAX_PENDING_SUBSCRIPTIONS;
        c.range("max_pending_subscriptions", pending, range);
        let blocklist = self.max_blocklist_items;
        c.range("max_blocklist_items", blocklist, Self::MAX_BLOCKLIST_ITEMS);
        let directed = self.max_directed_presence;
        let range = Self::MAX_DIRECTED_PRESENCE;
        c.range("max_directed_presence", directed, range);
        let presence = self.max_presence_size;
        c.range("max_presence_size", presence, Self::MAX_PRESENCE_SIZE);
        let cache = self.account_cache_capacity;
        let range = Self::ACCOUNT_CACHE_CAPACITY;
        c.range("account_cache_capacity", cache, range);
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_stanza_size: 262_144,
            pre_auth_stanza_size: 8192,
            max_elements: 10_000,
            max_depth: 32,
            max_attributes: 64,
            read_rate: 262_144,
            pre_auth_timeout: DurationStr::from_secs(30),
            max_unauthenticated: 512,
            max_unauthenticated_per_ip: 64,
            connection_rate_per_ip: 20,
            connection_burst_per_ip: 200,
            max_offline_per_account: 1000,
            login_failures_per_account: 5,
            login_failures_per_ip: 100,
            login_failures_per_ip_account: 5,
            login_failure_window: DurationStr::from_mins(5),
            login_delay: DurationStr::from_secs(1),
            login_delay_max: DurationStr::from_secs(16),
            login_account_delay_max: DurationStr::from_secs(4),
            max_resources_per_account: 16,
            max_session_queue_bytes: 2 << 20,
            max_roster_items: 1000,
            max_pending_subscriptions: 100,
            max_blocklist_items: 1000,
            max_directed_presence: 256,
            max_presence_size: 4096,
            account_cache_capacity: 100_000,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event, for a terminal or journald.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[log]`: operators' diagnostic logs (not the audit trail).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// "human" or "json". Default "human".
    pub format: LogFormat,
    /// Which events to log: a level (trace, debug, info, warn, error, off) or comma-separated
    /// `target=level` directives, e.g. "info,zorg_server::stream=debug". The `RUST_LOG`
    /// environment variable overrides it. Default "info".
    pub level: String,
}

impl LogConfig {
    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        if let Err(e) = check_log_level(&self.level) {
            problems.push(Problem::new("log.level", e));
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// `[registration]`: XEP-0077 in-band registration, letting anyone create an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Allow clients to create accounts over XMPP. Default: false (accounts are made with
    /// `zorg user add`).
    pub enabled: bool,
    /// Accounts one IP address may create per hour. Default 3; bounds 1..=1000.
    pub per_ip_per_hour: u32,
}

impl RegistrationConfig {
    /// Bounds of `per_ip_per_hour`.
    pub const PER_IP_PER_HOUR: RangeInclusive<u32> = 1..=1_000_000;

    pub(super) fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "registration",
        };
        c.range(
            "per_ip_per_hour",
            self.per_ip_per_hour,
            Self::PER_IP_PER_HOUR,
        );
    }
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            per_ip_per_hour: 3,
        }
    }
}

/// `[modules]`: optional capabilities that are off unless asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModulesConfig {
    /// Answer XEP-0092 software version queries with the server's name and version. Default:
    /// false, so the server does not tell attackers which version it runs.
    pub version: bool,
    /// Include the operating system in those answers (only with `version`). Default: false.
    pub version_os: bool,
}
