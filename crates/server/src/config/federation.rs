//! The server-to-server sections: `[s2s]` (where other servers connect) and `[federation]`
//! (whom this server trusts and talks to). Federation is off unless `[federation] enabled = true`;
//! the s2s listeners are opened only then, so the embedded default stays a c2s-only server.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problem;
use super::diagnose::key_string;
use super::sections::Check;
use super::values::{DurationStr, check_domain_name};

/// `[s2s]`: listeners for other servers (RFC 6120 server-to-server streams).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Addresses where servers connect in plain TCP and must upgrade with STARTTLS. IP and port,
    /// e.g. "0.0.0.0:5269". Opened only with `[federation] enabled = true`.
    /// Default: ["127.0.0.1:5269"] (loopback: a federating server sets its public address).
    pub listen: Vec<SocketAddr>,
    /// Addresses for TLS from the first byte (XEP-0368), ALPN "xmpp-server". Opened only with
    /// federation enabled. Default: ["127.0.0.1:5270"].
    pub direct_tls: Vec<SocketAddr>,
    /// Inbound links not yet authenticated from one IPv4 address or IPv6 /64 (a peer opens
    /// one per pair of domains); further connections are closed at once. `[limits]
    /// max_unauthenticated` caps all of them. Default 16; bounds 1..=1000000.
    pub max_unauthenticated_per_ip: u32,
    /// New inbound connections per second from one address (or /64), sustained; faster ones
    /// are closed at once. Default 2; bounds 1..=1000000.
    pub connection_rate_per_ip: u32,
    /// New inbound connections one address (or /64) may open at once before
    /// `connection_rate_per_ip` applies. Default 32; bounds 1..=1000000.
    pub connection_burst_per_ip: u32,
}

impl Default for S2sConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 5269))],
            direct_tls: vec![SocketAddr::from(([127, 0, 0, 1], 5270))],
            max_unauthenticated_per_ip: 16,
            connection_rate_per_ip: 2,
            connection_burst_per_ip: 32,
        }
    }
}

impl S2sConfig {
    fn validate(&self, problems: &mut Vec<Problem>) {
        let mut c = Check {
            problems,
            section: "s2s",
        };
        let per_ip = super::LimitsConfig::PER_IP;
        c.range(
            "max_unauthenticated_per_ip",
            self.max_unauthenticated_per_ip,
            per_ip.clone(),
        );
        c.range(
            "connection_rate_per_ip",
            self.connection_rate_per_ip,
            per_ip.clone(),
        );
        c.range(
            "connection_burst_per_ip",
            self.connection_burst_per_ip,
            per_ip,
        );
    }
}

/// `[federation]`: talking to other organisations' servers, under an auditor's trust.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Open the `[s2s]` listeners and route stanzas for remote domains. Default: false.
    /// Explicit rather than implied by `trust_anchors`: talking to other servers is a decision an
    /// operator makes, not a side effect of copying a CA file into the config.
    pub enabled: bool,
    /// PEM files with the auditor's root certificates; a peer's certificate chain must end in one
    /// of them. Required when `enabled`. Relative paths are relative to the config file.
    pub trust_anchors: Vec<PathBuf>,
    /// PEM or DER certificate revocation lists from the auditor; re-read while running when a
    /// file changes. Each must be signed by a trust anchor and carry a CRL number; one numbered
    /// lower than a CRL already seen from its issuer is refused (the highest numbers seen are
    /// kept in `data_dir/federation-crls.json`). Relative paths are relative to the config file.
    /// Default: none.
    pub crls: Vec<PathBuf>,
    /// Accept XEP-0220 dialback from peers whose certificate is refused for a reason other than
    /// allow/deny, revocation or DANE, and use it towards peers that do not accept ours (see
    /// `stream::s2s::dialback`). Dialback proves only DNS control, not the auditor's approval:
    /// every link it lets in is logged at warn level. It never authenticates a server this
    /// server sends to: that one needs the auditor's certificate or, with `dane = true`, a
    /// DANE-EE/DANE-TA record under DNSSEC. Default: false.
    pub dialback: bool,
    /// Require TLSA records (DANE, validated under DNSSEC) to match a peer's certificate where
    /// its domain publishes them, on top of the auditor chain. Default: false.
    pub dane: bool,
    /// Only these peer domains may connect or be connected to; empty allows any peer whose
    /// certificate the trust anchors vouch for. Default: [].
    pub allow: Vec<String>,
    /// Peer domains refused even with a trusted certificate. Default: [].
    pub deny: Vec<String>,
    /// Stanzas queued for a peer that could not be reached within this long are bounced to their
    /// senders with `remote-server-timeout`. Default "30s"; bounds "1s".."1h".
    pub connect_timeout: DurationStr,
    /// An outbound link with no traffic for this long is closed (reopened when needed).
    /// Default "10m"; bounds "10s".."1d".
    pub idle_timeout: DurationStr,
    /// DNS servers asked for SRV, A/AAAA and TLSA records, as "IP:port" (UDP, then TCP for
    /// long answers). Empty: the system's (/etc/resolv.conf). Default: [].
    pub dns_servers: Vec<SocketAddr>,
    /// A file of DNSKEY records (zone-file syntax) that DNSSEC validation starts from, for a
    /// closed network with its own signed zones. Unset: the IANA root keys built in. Only used
    /// with `dane = true`. Relative paths are relative to the config file. Default: unset.
    pub dnssec_trust_anchors: Option<PathBuf>,
    /// `[federation.hosts]`: "domain" = "IP:port" pairs that replace DNS discovery for these
    /// domains, for closed networks and tests. Default: none.
    pub hosts: BTreeMap<String, SocketAddr>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            trust_anchors: Vec::new(),
            crls: Vec::new(),
            dialback: false,
            dane: false,
            allow: Vec::new(),
            deny: Vec::new(),
            connect_timeout: DurationStr::from_secs(30),
            idle_timeout: DurationStr::from_mins(10),
            dns_servers: Vec::new(),
            dnssec_trust_anchors: None,
            hosts: BTreeMap::new(),
        }
    }
}

impl FederationConfig {
    /// Bounds of `connect_timeout`.
    pub const CONNECT_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(1)..=DurationStr::from_secs(3_600);
    /// Bounds of `idle_timeout`.
    pub const IDLE_TIMEOUT: RangeInclusive<DurationStr> =
        DurationStr::from_secs(10)..=DurationStr::from_secs(86_400);

    /// Checks the section, and `[s2s]` with it: the listeners matter only when federating.
    pub(super) fn validate(&self, s2s: &S2sConfig, problems: &mut Vec<Problem>) {
        s2s.validate(problems);
        let mut c = Check {
            problems,
            section: "federation",
        };
        if self.enabled && self.trust_anchors.is_empty() {
            let message = "federation is enabled but no trust anchor is configured; add \
                           trust_anchors = [\"auditor-root.crt\"] (the auditor's root \
                           certificate, PEM) or set enabled = false";
            c.push("enabled", message);
        }
        if self.enabled && s2s.listen.is_empty() && s2s.direct_tls.is_empty() {
            let message = "federation is enabled but [s2s] has no listener, so peers could \
                           not deliver to this server; give an address in [s2s] listen";
            c.push("enabled", message);
        }
        for (key, paths) in [("trust_anchors", &self.trust_anchors), ("crls", &self.crls)] {
            for (i, p) in paths.iter().enumerate() {
                if p.as_os_str().is_empty() {
                    c.push(&format!("{key}[{i}]"), "is empty; give a file name");
                }
            }
        }
        if let Some(p) = &self.dnssec_trust_anchors {
            if p.as_os_str().is_empty() {
                c.push(
                    "dnssec_trust_anchors",
                    "is empty; give a file name or remove the key",
                );
            } else if !self.dane {
                let message = "is only used with dane = true (DNSSEC validation is off \
                               otherwise); set dane = true or remove the key";
                c.push("dnssec_trust_anchors", message);
            }
        }
        let mut allowed = HashMap::new();
        for (key, list) in [("allow", &self.allow), ("deny", &self.deny)] {
            for (i, name) in list.iter().enumerate() {
                let path = format!("{key}[{i}]");
                if let Err(e) = check_domain_name(name) {
                    c.push(&path, e);
                } else if key == "allow" {
                    allowed.insert(name.to_ascii_lowercase(), path);
                } else if let Some(at) = allowed.get(&name.to_ascii_lowercase()) {
                    let message = format!(
                        "{name:?} is both allowed (federation.{at}) and denied; remove it from one"
                    );
                    c.push(&path, message);
                }
            }
        }
        let mut hosts = HashMap::new();
        for name in self.hosts.keys() {
            let path = format!("hosts.{}", key_string(name));
            if let Err(e) = check_domain_name(name) {
                c.push(&path, e);
            } else if let Some(first) = hosts.insert(name.to_ascii_lowercase(), name) {
                let message = format!("{name:?} is listed twice (also as {first:?}); remove one");
                c.push(&path, message);
            }
        }
        c.duration(
            "connect_timeout",
            self.connect_timeout,
            Self::CONNECT_TIMEOUT,
        );
        c.duration("idle_timeout", self.idle_timeout, Self::IDLE_TIMEOUT);
    }

    /// Lower-cases the domain names, as [`super::Config::normalise`] does for `[[domain]]`.
    pub(super) fn normalise(&mut self) {
        for name in self.allow.iter_mut().chain(self.deny.iter_mut()) {
            name.make_ascii_lowercase();
        }
        self.hosts = std::mem::take(&mut self.hosts)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
    }
}
