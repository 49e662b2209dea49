//! Federation: the link manager for server-to-server links. One outbound link per (local domain,
//! remote domain) pair, found here by the router's callers, created on first use, reused while it
//! carries traffic and closed after `[federation] idle_timeout`. Stanzas wait in a bounded queue
//! while the link connects; if it cannot be set up they are bounced to their senders
//! (RFC 6120 §8.3.3), so nothing vanishes.
//!
//! [`incoming`] routes what arrives from other servers (and the bounces) to local accounts.

pub mod dns;
pub mod incoming;
mod link;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use dashmap::DashMap;
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::sync::{Semaphore, mpsc};
use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition};

use crate::config::FederationConfig;
use crate::server::Server;
use crate::tls::trust::{FederationTrust, PeerRole};

/// Stanzas queued per outbound link while it connects or writes. Beyond this they are bounced
/// with `resource-constraint`: a peer that cannot keep up must not make the server grow.
pub const LINK_QUEUE: usize = 1024;

/// Why a peer was not accepted: a sentence for the log and a stable label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What the operator reads.
    pub sentence: String,
    /// `untrusted-root`, `name-mismatch`, `not-allowed` … (see `Refusal::reason`).
    pub reason: &'static str,
}

/// An outbound link as the manager sees it.
#[derive(Debug)]
struct LinkEntry {
    /// Tells a link's own entry from its successor's when it removes itself.
    id: u64,
    tx: mpsc::Sender<Box<Element>>,
}

/// Federation state shared by every s2s connection.
#[derive(Debug)]
pub struct Federation {
    /// The auditor's anchors and CRLs.
    pub trust: FederationTrust,
    /// Caps inbound links that have not authenticated yet (apart from the c2s cap, so that
    /// neither side can starve the other).
    pub unauthenticated: Arc<Semaphore>,
    config: FederationConfig,
    /// `[federation.hosts]`, changeable at run time (tests learn ports only after start).
    hosts: RwLock<BTreeMap<String, SocketAddr>>,
    /// Discovery for every other domain.
    dns: dns::Dns,
    links: DashMap<(String, String), LinkEntry>,
    next_link: AtomicU64,
    /// Bumped when the CRLs change and every hour (certificates expire while links stay open):
    /// open links then check their peer's certificate again.
    trust_epoch: tokio::sync::watch::Sender<u64>,
    /// The key behind this server's dialback keys (XEP-0220), made at start.
    pub(crate) dialback_secret: Option<crate::stream::s2s::dialback::Secret>,
}

impl Federation {
    /// Federation state for this configuration with a loaded trust and a resolver.
    pub fn new(
        config: &FederationConfig,
        trust: FederationTrust,
        dns: dns::Dns,
        max_unauthenticated: usize,
    ) -> Self {
        Federation {
            trust,
            dns,
            unauthenticated: Arc::new(Semaphore::new(max_unauthenticated)),
            hosts: RwLock::new(config.hosts.clone()),
            config: config.clone(),
            links: DashMap::new(),
            next_link: AtomicU64::new(1),
            trust_epoch: tokio::sync::watch::Sender::new(0),
            dialback_secret: crate::stream::s2s::dialback::Secret::random(),
        }
    }

    /// Adds or replaces a static address for `domain`, as a `[federation.hosts]` entry would.
    pub fn set_host(&self, domain: &str, addr: SocketAddr) {
        let mut hosts = self.hosts.write().unwrap_or_else(PoisonError::into_inner);
        hosts.insert(domain.to_ascii_lowercase(), addr);
    }

    /// The `[federation.hosts]` address of `domain` (a STARTTLS port), which replaces DNS.
    fn static_host(&self, domain: &str) -> Option<SocketAddr> {
        let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
        hosts.get(domain).copied()
    }

    /// Whether the allow/deny lists let this server talk to `domain`.
    fn permitted(&self, domain: &str) -> bool {
        !self.config.deny.iter().any(|d| d == domain)
            && (self.config.allow.is_empty() || self.config.allow.iter().any(|d| d == domain))
    }

    /// The policy and the certificate check for a peer claiming `domain`.
    pub fn check(
        &self,
        role: PeerRole,
        chain: &[CertificateDer<'_>],
        domain: &str,
        now: UnixTime,
    ) -> Result<(), Refused> {
        if !self.permitted(domain) {
            return Err(Refused {
                sentence: format!("{domain} is not permitted by [federation] allow/deny"),
                reason: "not-allowed",
            });
        }
        self.trust
            .check_peer(role, chain, domain, now)
            .map_err(|r| Refused {
                sentence: r.to_string(),
                reason: r.reason(),
            })
    }

    /// Wakes when open links must check their peer again (see [`Federation::recheck`]).
    pub fn trust_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.trust_epoch.subscribe()
    }

    /// Checks the peer of an open link again, against today's CRLs, clock and allow/deny lists:
    /// a revocation or expiry ends links that are already up, not only new ones.
    pub fn recheck(
        &self,
        role: PeerRole,
        chain: &[CertificateDer<'_>],
        domain: &str,
    ) -> Result<(), Refused> {
        self.check(role, chain, domain, UnixTime::now())
    }

    /// Whether dialback is on and may stand in for a certificate refused with `reason` (see
    /// [`crate::stream::s2s::dialback::overridable`]).
    pub fn dialback_overrides(&self, reason: &str) -> bool {
        self.config.dialback && crate::stream::s2s::dialback::overridable(reason)
    }

    /// Tells open links to check their peers again.
    fn trust_changed(&self) {
        self.trust_epoch.send_modify(|e| *e += 1);
    }

    /// How many outbound links exist (connecting or up).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }
}

/// Sends a stanza whose `from` is a local JID to a remote domain over the link from the
/// sender's domain, creating the link if needed. Bounces it when that is impossible.
pub fn send(server: &Arc<Server>, el: Element, remote: &str) {
    let Some(fed) = server.federation.clone() else {
        // Presence to remote contacts is not worth an error when federation is off.
        if el.name() != "presence" {
            let text = format!("{remote} is not served here and federation is not enabled");
            incoming::bounce(server, el, StanzaCondition::RemoteServerNotFound, &text);
        }
        return;
    };
    let local = el
        .attr("from")
        .and_then(|f| Jid::new(f).ok())
        .map(|j| j.domain().to_string())
        .filter(|d| server.serves(d));
    let Some(local) = local else {
        tracing::debug!(%remote, "stanza for a remote domain without a local sender dropped");
        return;
    };
    if !fed.permitted(remote) {
        let text = format!("{remote} is not a permitted federation peer");
        incoming::bounce(server, el, StanzaCondition::RemoteServerNotFound, &text);
        return;
    }
    let key = (local, remote.to_owned());
    let mut el = Box::new(el);
    // Twice: a link that is just closing refuses the stanza, and the second round starts a new one.
    for _ in 0..2 {
        let tx = fed
            .links
            .entry(key.clone())
            .or_insert_with(|| {
                let id = fed.next_link.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                let spawn = link::Link::new(server.clone(), fed.clone(), id, key.clone());
                tokio::spawn(spawn.run(rx));
                LinkEntry { id, tx }
            })
            .tx
            .clone();
        match tx.try_send(el) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(back)) => {
                let text = format!("too many stanzas are waiting for {remote}");
                incoming::bounce(server, *back, StanzaCondition::ResourceConstraint, &text);
                return;
            }
            Err(mpsc::error::TrySendError::Closed(back)) => el = back,
        }
    }
    let text = format!("{remote} could not be reached");
    incoming::bounce(server, *el, StanzaCondition::RemoteServerNotFound, &text);
}

/// Sends a stanza generated or relayed by this server: locally when its `to` is served here,
/// else over federation.
pub async fn route_any(server: &Arc<Server>, el: Element) {
    let Some(to) = el.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    let domain = to.domain().to_string();
    if server.serves(&domain) {
        Box::pin(incoming::route(server, el)).await;
    } else {
        send(server, el, &domain);
    }
}

/// Polls the CRL files every few seconds and logs what changed (RFC 5280 CRLs from the auditor;
/// see [`Federation::reload_crls_now`]); every hour open links check their peers again and CRLs
/// past their next update are logged. Ends at shutdown.
pub async fn reload_crls(fed: Arc<Federation>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    const RECHECK_EVERY: u32 = 720; // polls: one hour
    let mut polls = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => return,
        }
        polls += 1;
        if let Ok(crate::tls::trust::Reload::Reloaded { .. }) = fed.reload_crls_now() {
            polls = 0;
        } else if polls >= RECHECK_EVERY {
            polls = 0;
            fed.trust.warn_stale_crls();
            fed.trust_changed();
        }
    }
}

impl Federation {
    /// Re-reads the CRL files now if any changed (what the poll does every 5 seconds; also for
    /// tests and operators' tools that must not wait), logs the outcome and, after a reload,
    /// has open links check their peers again. Waits for a reload already under way.
    pub fn reload_crls_now(&self) -> Result<crate::tls::trust::Reload, crate::tls::TlsError> {
        let r = self.trust.reload_crls();
        match &r {
            Ok(crate::tls::trust::Reload::Unchanged) => {}
            Ok(crate::tls::trust::Reload::Reloaded { crls, rollbacks }) => {
                tracing::info!(
                    crls,
                    rollbacks,
                    "federation CRLs reloaded; open links are checked again"
                );
                self.trust_changed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "federation CRLs not reloaded; the previous ones stay in use")
            }
        }
        r
    }
}
