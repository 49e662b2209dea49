//! One outbound link's task: connect within `connect_timeout`, write what is queued, close when
//! idle, and account for every stanza it was given: written, handed to a successor link, or
//! bounced to its sender.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use zorg_proto::{Element, Frame, StanzaCondition, StreamCondition, StreamError};

use super::dns::Target;
use super::{Federation, incoming};
use crate::audit::Event;
use crate::audit::event::{CertRef, Direction, LinkAuth, LinkRefusal};
use crate::server::Server;
use crate::stream::io::XmlStream;
use crate::stream::s2s::outbound::{self, Authenticated, Failure, Route, Tls};
use crate::tls::dane::Tlsa;
use crate::tls::trust::PeerRole;

/// How a link ended, which decides what happens to stanzas still queued.
enum End {
    /// Never came up, or broke: bounce with this condition and text.
    Bounce(StanzaCondition, String),
    /// Closed on purpose (idle, peer closed cleanly): queued stanzas go to a new link.
    Requeue,
    /// Server shutdown: bounce, the senders' sessions are closing too.
    Shutdown,
}

/// An outbound link from `key.0` to `key.1`.
pub(super) struct Link {
    server: Arc<Server>,
    fed: Arc<Federation>,
    id: u64,
    key: (String, String),
}

impl Link {
    pub(super) fn new(
        server: Arc<Server>,
        fed: Arc<Federation>,
        id: u64,
        key: (String, String),
    ) -> Link {
        Link {
            server,
            fed,
            id,
            key,
        }
    }

    /// Runs the link until it ends, then settles the queue.
    pub(super) async fn run(self, mut rx: mpsc::Receiver<Box<Element>>) {
        let end = match self.establish().await {
            Ok((s, auth)) => self.carry(Box::new(s), auth, &mut rx).await,
            Err(end) => end,
        };
        // Leave the map first, so that new stanzas start a new link, then refuse new ones and
        // settle what is left: nothing is lost between the two steps.
        self.fed.links.remove_if(&self.key, |_, e| e.id == self.id);
        rx.close();
        let (local, remote) = (&self.key.0, &self.key.1);
        let mut left = 0;
        while let Ok(el) = rx.try_recv() {
            left += 1;
            match &end {
                End::Requeue => super::send(&self.server, *el, remote),
                End::Bounce(cond, text) => incoming::bounce(&self.server, *el, *cond, text),
                End::Shutdown => {
                    let text = "the server is shutting down";
                    incoming::bounce(
                        &self.server,
                        *el,
                        StanzaCondition::RemoteServerTimeout,
                        text,
                    );
                }
            }
        }
        tracing::info!(%local, %remote, settled = left, "outbound s2s link closed");
    }

    async fn establish(&self) -> Result<(XmlStream<Tls>, Authenticated), End> {
        let (local, remote) = (&self.key.0, &self.key.1);
        let timeout = self.server.config.federation.connect_timeout.get();
        let mut shutdown = self.server.shutdown.clone();
        let r = tokio::select! {
            r = tokio::time::timeout(timeout, Box::pin(self.reach())) => r,
            _ = shutdown.changed() => return Err(End::Shutdown),
        };
        match r {
            Ok(Ok(((s, auth), route))) => {
                let chain = s
                    .get_ref()
                    .get_ref()
                    .1
                    .peer_certificates()
                    .unwrap_or_default();
                let ev = Event::S2sAccepted {
                    peer: remote.clone(),
                    local: local.clone(),
                    direction: Direction::Outbound,
                    // Certificates both ways, or not: a DANE-vouched peer is let in by the
                    // dialback setting as much as a peer that took us by dialback.
                    method: if auth.peer_by_dane || auth.by_dialback {
                        LinkAuth::Dialback
                    } else {
                        LinkAuth::Certificate
                    },
                    ip: Some(route.0.ip()),
                    certificate: CertRef::of(chain),
                };
                if self.server.audit.record_durable(ev).await.is_err() {
                    let text = "the link could not be audited".to_owned();
                    return Err(End::Bounce(StanzaCondition::InternalServerError, text));
                }
                tracing::info!(%local, %remote, addr = %route.0, direct_tls = route.1, "outbound s2s link accepted");
                Ok((s, auth))
            }
            Ok(Err(f)) => {
                let reason = f.reason();
                let ev = Event::S2sRefused {
                    peer: remote.clone(),
                    local: local.clone(),
                    direction: Direction::Outbound,
                    reason: LinkRefusal::from_label(reason),
                    ip: None,
                    certificate: None,
                };
                let _ = self.server.audit.record(ev).await;
                tracing::warn!(%local, %remote, reason, "outbound s2s link refused: {f}");
                Err(End::Bounce(
                    StanzaCondition::RemoteServerNotFound,
                    f.to_string(),
                ))
            }
            Err(_) => {
                let text = format!(
                    "{remote} did not complete a link within {}s",
                    timeout.as_secs()
                );
                let ev = Event::S2sRefused {
                    peer: remote.clone(),
                    local: local.clone(),
                    direction: Direction::Outbound,
                    reason: LinkRefusal::Timeout,
                    ip: None,
                    certificate: None,
                };
                let _ = self.server.audit.record(ev).await;
                tracing::warn!(%local, %remote, reason = "timeout", "outbound s2s link failed: {text}");
                Err(End::Bounce(StanzaCondition::RemoteServerTimeout, text))
            }
        }
    }

    /// Finds the peer and tries its targets in order until a link comes up (see
    /// [`Federation::reach`]). Gives back the stream and where it went (address, direct TLS).
    async fn reach(
        &self,
    ) -> Result<((XmlStream<Tls>, Authenticated), (SocketAddr, bool)), Failure> {
        self.fed
            .reach(&self.key.1, |route| self.attempt(route))
            .await
    }

    async fn attempt(
        &self,
        route: Route,
    ) -> Result<((XmlStream<Tls>, Authenticated), (SocketAddr, bool)), Failure> {
        let (local, remote) = (&self.key.0, &self.key.1);
        let r = outbound::connect(&self.server, &self.fed, local, remote, &route).await;
        if let Err(f) = &r {
            tracing::debug!(%local, %remote, addr = %route.addr, direct_tls = route.direct_tls, "outbound s2s attempt failed: {f}");
        }
        r.map(|s| (s, (route.addr, route.direct_tls)))
    }

    /// Writes queued stanzas until the link is idle, broken or shut down.
    async fn carry(
        &self,
        mut s: Box<XmlStream<Tls>>,
        auth: Authenticated,
        rx: &mut mpsc::Receiver<Box<Element>>,
    ) -> End {
        let idle = self.server.config.federation.idle_timeout.get();
        let mut shutdown = self.server.shutdown.clone();
        let mut trust = self.fed.trust_changes();
        let broken = |what: &str| {
            let text = format!("the link to {} broke ({what})", self.key.1);
            End::Bounce(StanzaCondition::RemoteServerNotFound, text)
        };
        loop {
            let idle_at = s.last_write.max(s.last_read) + idle;
            tokio::select! {
                m = rx.recv() => {
                    let Some(el) = m else { return End::Requeue };
                    s.queue(&el);
                    // One write for whatever else is waiting.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Ok(el) => s.queue(&el),
                            Err(_) => break,
                        }
                    }
                    if s.flush().await.is_err() {
                        return broken("write failed");
                    }
                }
                // Peers send nothing but whitespace on our outbound stream (RFC 6120 §4.2: a
                // stream is one-way without bidi); a stream close or error ends the link.
                f = s.next_frame() => match f {
                    Ok(Frame::Stanza(el)) if el.name() == "error" => {
                        tracing::info!(local = %self.key.0, remote = %self.key.1, error = %el.to_xml(""), "peer closed the outbound s2s link with an error");
                        return broken("stream error from the peer");
                    }
                    Ok(Frame::Stanza(_)) => {
                        s.fail(&StreamError::new(StreamCondition::UnsupportedStanzaType)).await;
                        return broken("unexpected stanza");
                    }
                    Ok(Frame::StreamClose) => {
                        s.close().await;
                        return End::Requeue;
                    }
                    Ok(Frame::StreamOpen(_)) | Err(_) => return broken("connection lost"),
                },
                _ = tokio::time::sleep_until(idle_at) => {
                    s.close().await;
                    return End::Requeue;
                }
                _ = trust.changed() => {
                    let chain = s.get_ref().get_ref().1.peer_certificates().unwrap_or_default();
                    let refused = self.fed.recheck(PeerRole::Outbound, chain, &self.key.1).err();
                    if let Some(r) = refused.as_ref().filter(|r| self.kept_by_dane(auth, r)) {
                        tracing::warn!(local = %self.key.0, remote = %self.key.1, reason = r.reason,
                            "outbound s2s link kept open: its DANE record vouches for the peer \
                             (dialback = true): {}", r.sentence);
                    } else if let Some(r) = refused {
                        tracing::warn!(local = %self.key.0, remote = %self.key.1, reason = r.reason, "outbound s2s link closed: {}", r.sentence);
                        let e = StreamError::new(StreamCondition::PolicyViolation)
                            .with_text("this server no longer accepts your certificate");
                        s.fail(&e).await;
                        // A new link is refused with the same reason, and bounces say why.
                        return End::Requeue;
                    }
                }
                _ = shutdown.changed() => {
                    s.fail(&StreamError::new(StreamCondition::SystemShutdown)).await;
                    return End::Shutdown;
                }
            }
        }
    }
}

impl Link {
    /// Whether a link whose peer now fails the certificate check stays open: only one whose
    /// peer DANE vouched for (a new link would be let in the same way), and only for a refusal
    /// dialback may override. A peer the auditor's certificate vouched for is closed: dialback
    /// never authenticates the receiving server.
    fn kept_by_dane(&self, auth: Authenticated, r: &super::Refused) -> bool {
        auth.peer_by_dane && self.fed.dialback_overrides(r.reason)
    }
}

/// Of two failures, the one that tells the operator more: a refusal (a certificate, DANE,
/// DNSSEC) over an address that did not answer, and the later one otherwise.
fn more_telling(earlier: Option<Failure>, later: Failure) -> Failure {
    match earlier {
        Some(e @ Failure::Refused { .. }) if !matches!(later, Failure::Refused { .. }) => e,
        _ => later,
    }
}

impl Federation {
    /// Finds `remote`'s server and runs `attempt` on its routes in order until one succeeds:
    /// the `[federation.hosts]` entry if there is one, else what DNS says (see [`super::dns`]).
    /// Outbound links use it, and so does dialback to reach a sender's authoritative server
    /// (XEP-0220 §2.1.2: found "the same way").
    pub(crate) async fn reach<T, F>(
        &self,
        remote: &str,
        mut attempt: impl FnMut(Route) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        if let Some(addr) = self.static_host(remote) {
            let route = Route {
                addr,
                direct_tls: false,
                tlsa: None,
            };
            return attempt(route).await;
        }
        let targets = self.dns.targets(remote).await?;
        let mut failure: Option<Failure> = None;
        for target in &targets {
            match self.try_target(target, &mut attempt).await {
                Ok(up) => return Ok(up),
                Err(f) => failure = Some(more_telling(failure, f)),
            }
        }
        Err(failure.unwrap_or_else(|| Failure::NotFound(format!("no server found for {remote}"))))
    }

    /// Every address of one target, in order.
    async fn try_target<T, F>(
        &self,
        target: &Target,
        attempt: &mut impl FnMut(Route) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, Failure>>,
    {
        let tlsa: Option<Arc<[Tlsa]>> = if target.secure {
            self.dns
                .tlsa(&target.host, target.port)
                .await?
                .map(Into::into)
        } else {
            None
        };
        let mut failure: Option<Failure> = None;
        for ip in self.dns.addresses(&target.host).await? {
            let route = Route {
                addr: SocketAddr::new(ip, target.port),
                direct_tls: target.direct_tls,
                tlsa: tlsa.clone(),
            };
            match attempt(route).await {
                Ok(up) => return Ok(up),
                Err(f) => failure = Some(more_telling(failure, f)),
            }
        }
        Err(failure.unwrap_or_else(|| Failure::NotFound(format!("{} has no address", target.host))))
    }
}
