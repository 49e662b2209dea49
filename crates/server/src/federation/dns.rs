//! Finding a peer's server: RFC 6120 §3.2 with XEP-0368. Both `_xmpps-server._tcp` (TLS from the
//! first byte) and `_xmpp-server._tcp` (STARTTLS) SRV records are asked for, merged and ordered
//! by priority and weight (RFC 2782), direct TLS first where priorities tie; without any SRV
//! record the domain's own A/AAAA records are used on port 5269. With `[federation] dane = true`
//! answers are validated under DNSSEC: a bogus answer refuses the link, and the TLSA records of a
//! target whose name came from a secure answer pin its certificate (RFC 7673).
//!
//! `[federation.hosts]` entries bypass all of this (see [`super::Federation`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{RData, Record};
use hickory_resolver::{Resolver, TokioResolver};

use crate::config::FederationConfig;
use crate::stream::s2s::outbound::Failure;
use crate::tls::dane::Tlsa;

/// The port of a domain without SRV records (RFC 6120 §3.2.2, IANA "xmpp-server").
pub const DEFAULT_PORT: u16 = 5269;

/// One place to try, in the order they are to be tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name (no trailing dot).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS from the first byte (an `_xmpps-server` record) rather than STARTTLS.
    pub direct_tls: bool,
    /// The host name may be trusted for DANE: it came from a DNSSEC-secure SRV answer, or it is
    /// the peer's domain itself (RFC 7673 §3: an insecure SRV answer could name any host).
    pub secure: bool,
}

/// An SRV record with what ordering needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Srv {
    priority: u16,
    weight: u16,
    target: Target,
}

/// What one SRV query said.
enum SrvAnswer {
    /// Records (possibly none usable after ".").
    Records(Vec<Srv>),
    /// A single record with target ".": the service is decidedly not offered (RFC 2782).
    NotOffered,
    /// No records, or the lookup failed: try the other service, then A/AAAA.
    Nothing,
}

/// The resolver and whether it validates.
pub struct Dns {
    resolver: TokioResolver,
    validating: bool,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("validating", &self.validating)
            .finish_non_exhaustive()
    }
}

/// A DNS name as an absolute name, so that no search domain of resolv.conf is ever appended.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// Whether every record in `records` was proven secure.
fn all_secure<'a>(records: impl IntoIterator<Item = &'a Record>) -> bool {
    let mut any = false;
    for r in records {
        any = true;
        if r.proof != Proof::Secure {
            return false;
        }
    }
    any
}

fn bogus(what: &str) -> Failure {
    Failure::Refused {
        sentence: format!(
            "DNSSEC validation failed for {what}: the answer is bogus (a forged answer or a \
             broken signature in the zone); its operator must fix the zone's signatures"
        ),
        reason: "dnssec-bogus",
    }
}

impl Dns {
    /// A resolver for this configuration: the system's name servers or `dns_servers`, the hosts
    /// file consulted for addresses, and DNSSEC validation when `dane` is on.
    pub fn new(config: &FederationConfig) -> Result<Dns, String> {
        let (resolv, mut opts) = if config.dns_servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                format!(
                    "cannot read the system's DNS configuration (/etc/resolv.conf): {e}; \
                     give [federation] dns_servers"
                )
            })?
        } else {
            let servers = config
                .dns_servers
                .iter()
                .map(|a| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = a.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = a.port();
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        // A link waits for discovery within connect_timeout; a dead name server must leave
        // time to try the next one.
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 2;
        opts.edns0 = true;
        let mut builder = Resolver::builder_with_config(resolv, TokioRuntimeProvider::default())
            .with_options(opts);
        if config.dane {
            let anchors = match &config.dnssec_trust_anchors {
                Some(path) => load_anchors(path)?,
                None => TrustAnchors::default(),
            };
            builder = builder.with_trust_anchor(Arc::new(anchors));
        }
        let resolver = builder
            .build()
            .map_err(|e| format!("cannot set up the DNS resolver: {e}"))?;
        Ok(Dns {
            resolver,
            validating: config.dane,
        })
    }

    /// Where to connect for `domain`, in order. An error only when DNS says there is no
    /// server-to-server service, or (validating) when an answer is bogus.
    pub async fn targets(&self, domain: &str) -> Result<Vec<Target>, Failure> {
        let (tls, plain) = tokio::join!(
            self.srv("_xmpps-server._tcp", domain, true),
            self.srv("_xmpp-server._tcp", domain, false),
        );
        let (tls, plain) = (tls?, plain?);
        let mut records = Vec::new();
        let mut refused = 0;
        for answer in [tls, plain] {
            match answer {
                SrvAnswer::Records(r) => records.extend(r),
                SrvAnswer::NotOffered => refused += 1,
                SrvAnswer::Nothing => {}
            }
        }
        if !records.is_empty() {
            return Ok(order(records, random_below));
        }
        if refused > 0 {
            return Err(Failure::NotFound(format!(
                "{domain} publishes that it offers no XMPP server-to-server service (SRV \
                 target \".\")"
            )));
        }
        Ok(vec![Target {
            host: domain.to_owned(),
            port: DEFAULT_PORT,
            direct_tls: false,
            secure: true,
        }])
    }

    async fn srv(
        &self,
        service: &str,
        domain: &str,
        direct_tls: bool,
    ) -> Result<SrvAnswer, Failure> {
        let name = absolute(&format!("{service}.{domain}"));
        let lookup = match self.resolver.srv_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(NetError::Dns(DnsError::DnssecBogus)) => return Err(bogus(&name)),
            Err(e) => {
                if !e.is_no_records_found() {
                    tracing::debug!(%name, error = %e, "SRV lookup failed; trying the next way");
                }
                return Ok(SrvAnswer::Nothing);
            }
        };
        let answers: Vec<&Record> = lookup
            .answers()
            .iter()
            .filter(|r| matches!(r.data, RData::SRV(_)))
            .collect();
        let secure = self.validating && all_secure(answers.iter().copied());
        let mut out = Vec::new();
        for r in &answers {
            let RData::SRV(srv) = &r.data else { continue };
            let host = srv.target.to_ascii();
            let host = host.trim_end_matches('.');
            if host.is_empty() {
                // "." : only meaningful alone (RFC 2782); ignored beside real records.
                if answers.len() == 1 {
                    return Ok(SrvAnswer::NotOffered);
                }
                continue;
            }
            out.push(Srv {
                priority: srv.priority,
                weight: srv.weight,
                target: Target {
                    host: host.to_ascii_lowercase(),
                    port: srv.port,
                    direct_tls,
                    secure,
                },
            });
        }
        Ok(if out.is_empty() {
            SrvAnswer::Nothing
        } else {
            SrvAnswer::Records(out)
        })
    }

    /// The addresses of `host` (the hosts file first, then A and AAAA).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        match self.resolver.lookup_ip(absolute(host).as_str()).await {
            Ok(l) => Ok(l.iter().collect()),
            Err(NetError::Dns(DnsError::DnssecBogus)) => Err(bogus(host)),
            Err(e) if e.is_no_records_found() => Err(Failure::NotFound(format!(
                "{host} has no address (no A or AAAA record)"
            ))),
            Err(e) => Err(Failure::NotFound(format!(
                "the addresses of {host} could not be looked up: {e}"
            ))),
        }
    }

    /// The TLSA records that pin `host:port`, when DNSSEC proves them. `None`: DANE does not
    /// apply (not validating, no records, or an insecure zone). An error refuses the target: a
    /// bogus answer, one that cannot be classified, or a failed lookup (RFC 7672 §2.2: a
    /// server that may publish TLSA records must not be reached without knowing them).
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<Option<Vec<Tlsa>>, Failure> {
        if !self.validating {
            return Ok(None);
        }
        let name = absolute(&format!("_{port}._tcp.{host}"));
        let lookup = match self.resolver.tlsa_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(NetError::Dns(DnsError::DnssecBogus)) => return Err(bogus(&name)),
            Err(e) if e.is_no_records_found() => return Ok(None),
            Err(NetError::Dns(DnsError::Nsec { .. })) => return Ok(None),
            Err(e) => {
                return Err(Failure::Refused {
                    sentence: format!(
                        "the TLSA records of {name} could not be looked up ({e}), so {host} \
                         cannot be checked against DANE; try again when DNS answers"
                    ),
                    reason: "dane-lookup-failed",
                });
            }
        };
        let records: Vec<&Record> = lookup
            .answers()
            .iter()
            .filter(|r| matches!(r.data, RData::TLSA(_)))
            .collect();
        if records.is_empty() || records.iter().all(|r| r.proof == Proof::Insecure) {
            return Ok(None);
        }
        if !all_secure(records.iter().copied()) {
            return Err(bogus(&name));
        }
        Ok(Some(
            records
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect(),
        ))
    }
}

/// Reads a trust anchor file, with a message that names it.
fn load_anchors(path: &Path) -> Result<TrustAnchors, String> {
    TrustAnchors::from_file(path).map_err(|e| {
        format!(
            "cannot read the DNSSEC trust anchors in {}: {e}; the file must hold DNSKEY \
             records in zone-file syntax",
            path.display()
        )
    })
}

/// A uniformly random number in `0..=max`.
fn random_below(max: u32) -> u32 {
    let mut b = [0u8; 4];
    // Without randomness the order falls back to the records' order, which RFC 2782 allows for
    // a client that cannot randomise; it is not a security property.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0;
    }
    let n = u32::from_le_bytes(b);
    if max == u32::MAX { n } else { n % (max + 1) }
}

/// Orders SRV records: by priority, direct TLS before STARTTLS where priorities tie (XEP-0368),
/// and by weight within each of those groups (RFC 2782's selection: a record is picked with a
/// probability proportional to its weight; zero weights come first in the running sum so that
/// they are picked rarely but not never). `rand(max)` gives a number in `0..=max`.
fn order(mut records: Vec<Srv>, mut rand: impl FnMut(u32) -> u32) -> Vec<Target> {
    records.sort_by_key(|r| (r.priority, !r.target.direct_tls));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let key = (first.priority, first.target.direct_tls);
        let len = rest
            .iter()
            .take_while(|r| (r.priority, r.target.direct_tls) == key)
            .count();
        let (group, tail) = rest.split_at(len);
        rest = tail;
        let mut group: Vec<&Srv> = group.iter().collect();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rand(total);
            let mut sum = 0;
            let mut at = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                sum += u32::from(r.weight);
                if sum >= pick {
                    at = i;
                    break;
                }
            }
            out.push(group.remove(at).target.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, host: &str, direct_tls: bool) -> Srv {
        Srv {
            priority,
            weight,
            target: Target {
                host: host.into(),
                port: 5269,
                direct_tls,
                secure: false,
            },
        }
    }

    fn hosts(t: &[Target]) -> Vec<&str> {
        t.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn priority_first_then_direct_tls_on_ties() {
        let records = vec![
            srv(20, 0, "late", true),
            srv(10, 0, "starttls", false),
            srv(10, 0, "direct", true),
            srv(5, 0, "first", false),
        ];
        let t = order(records, |_| 0);
        assert_eq!(hosts(&t), ["first", "direct", "starttls", "late"]);
    }

    #[test]
    fn weight_decides_within_a_priority() {
        let records = vec![srv(1, 10, "a", false), srv(1, 90, "b", false)];
        // A draw of 0..=10 lands on a, 11..=100 on b.
        assert_eq!(hosts(&order(records.clone(), |_| 5)), ["a", "b"]);
        assert_eq!(hosts(&order(records.clone(), |_| 10)), ["a", "b"]);
        assert_eq!(hosts(&order(records.clone(), |_| 11)), ["b", "a"]);
        assert_eq!(hosts(&order(records, |max| max)), ["b", "a"]);
    }

    #[test]
    fn zero_weights_are_picked_only_on_a_zero_draw() {
        let records = vec![srv(1, 50, "heavy", false), srv(1, 0, "zero", false)];
        assert_eq!(hosts(&order(records.clone(), |_| 0)), ["zero", "heavy"]);
        assert_eq!(hosts(&order(records, |_| 1)), ["heavy", "zero"]);
    }

    #[test]
    fn weighted_order_follows_the_weights_over_many_draws() {
        let records = vec![srv(1, 1, "rare", false), srv(1, 3, "often", false)];
        let mut often_first = 0;
        for _ in 0..2_000 {
            if order(records.clone(), random_below)[0].host == "often" {
                often_first += 1;
            }
        }
        // The draw is 0..=4 (RFC 2782's inclusive range): 0 and 1 pick "rare", so "often"
        // comes first 3/5 of the time: 1,200 of 2,000 expected, a standard deviation of 22.
        assert!((1_050..=1_350).contains(&often_first), "{often_first}");
    }

    #[test]
    fn random_below_stays_in_range() {
        for max in [0, 1, 7, 100] {
            for _ in 0..200 {
                assert!(random_below(max) <= max);
            }
        }
    }

    #[tokio::test]
    async fn a_bad_trust_anchor_file_is_a_start_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("zorg-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("anchors.txt");
        std::fs::write(&path, "test. 3600 IN DNSKEY not a key\n").unwrap();
        let config = FederationConfig {
            dane: true,
            dnssec_trust_anchors: Some(path.clone()),
            dns_servers: vec!["127.0.0.1:53".parse().unwrap()],
            ..FederationConfig::default()
        };
        let e = Dns::new(&config).unwrap_err();
        assert!(e.contains("anchors.txt") && e.contains("DNSKEY"), "{e}");
        // A missing file, too.
        let config = FederationConfig {
            dnssec_trust_anchors: Some(dir.join("missing.txt")),
            ..config
        };
        assert!(Dns::new(&config).unwrap_err().contains("missing.txt"));
        // Without DANE the file is not read at all (config check refuses that combination).
        let config = FederationConfig {
            dane: false,
            ..config
        };
        assert!(Dns::new(&config).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_made_absolute() {
        assert_eq!(absolute("b.example"), "b.example.");
        assert_eq!(absolute("b.example."), "b.example.");
    }
}
