//! The receiving and authoritative sides of dialback: the state of one inbound link, the
//! verification of `<db:result/>` keys with the sender's authoritative server, and the answers
//! to `<db:verify/>`.

use crate::audit::Event;
use crate::audit::event::{CertRef, Direction, LinkAuth, LinkRefusal, cut};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use zorg_proto::{Element, StreamCondition, StreamError};

use super::super::outbound::{self, Failure, Route};
use super::{Answer, Body, MAX_ID, MAX_KEY, MAX_PAIRS, MAX_PENDING, Request, element, overridable};
use crate::federation::{Federation, Refused};
use crate::server::Server;
use crate::stream::c2s::next_element;
use crate::stream::io::XmlStream;
use crate::tls::trust::PeerRole;

/// A finished verification: the domain pair and what the authoritative server said.
pub struct Verdict {
    from: String,
    to: String,
    answer: Answer,
    /// Why the certificate did not do instead (for the log).
    refusal: Option<Refused>,
}

/// The dialback state of one inbound link: which domain pairs it may carry and which
/// verifications are under way. A link authenticated by SASL EXTERNAL carries its domain to
/// every domain served here.
pub struct Inbound {
    server: Arc<Server>,
    fed: Arc<Federation>,
    peer: SocketAddr,
    /// The ID of the stream we gave the peer; its keys are made with it.
    stream_id: String,
    chain: Vec<CertificateDer<'static>>,
    /// The domain SASL EXTERNAL authenticated.
    sasl: Option<String>,
    /// (sender, target) pairs dialback authorised.
    pairs: Vec<(String, String)>,
    pending: JoinSet<Verdict>,
}

impl Inbound {
    /// The state of a new inbound link whose stream has this ID and whose peer sent `chain`.
    pub fn new(
        server: Arc<Server>,
        fed: Arc<Federation>,
        peer: SocketAddr,
        stream_id: String,
        chain: Vec<CertificateDer<'static>>,
    ) -> Inbound {
        Inbound {
            server,
            fed,
            peer,
            stream_id,
            chain,
            sasl: None,
            pairs: Vec::new(),
            pending: JoinSet::new(),
        }
    }

    /// Records that SASL EXTERNAL authenticated `domain` on this link.
    pub fn authenticated_by_sasl(&mut self, domain: &str) {
        self.sasl = Some(domain.to_owned());
    }

    /// Checks the certificate of the domain SASL EXTERNAL authenticated again, against today's
    /// CRLs and clock (after a CRL reload and hourly): the refusal that ends the link, if any.
    /// As on outbound links, a refusal dialback may override keeps a link when dialback is on
    /// (its pairs were verified by DNS, not by the certificate).
    pub fn recheck(&mut self) -> Option<Refused> {
        let domain = self.sasl.as_deref()?;
        let r = self
            .fed
            .recheck(PeerRole::Inbound, &self.chain, domain)
            .err()?;
        if self.fed.dialback_overrides(r.reason) {
            tracing::warn!(peer = %self.peer, remote = %domain, reason = r.reason,
                "inbound s2s link kept open by dialback: {}", r.sentence);
            return None;
        }
        Some(r)
    }

    /// Whether any domain may send stanzas on this link.
    pub fn authenticated(&self) -> bool {
        self.sasl.is_some() || !self.pairs.is_empty()
    }

    /// Whether `from` has been authenticated on this link (for any target).
    pub fn knows(&self, from: &str) -> bool {
        self.sasl.as_deref() == Some(from) || self.pairs.iter().any(|(f, _)| f == from)
    }

    /// Whether stanzas from `from` to `to` may be carried (`to` is known to be served here).
    pub fn allows(&self, from: &str, to: &str) -> bool {
        self.sasl.as_deref() == Some(from) || self.pairs.iter().any(|(f, t)| f == from && t == to)
    }

    /// Handles a `<db:result/>` (receiving server) or `<db:verify/>` (authoritative server),
    /// queueing the answer on `s`. A stream error ends the link.
    pub fn handle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut XmlStream<S>,
        el: &Element,
    ) -> Result<(), StreamError> {
        let Some(req) = Request::parse(el) else {
            return Err(StreamError::new(StreamCondition::ImproperAddressing)
                .with_text("dialback needs 'from' and 'to' with domains"));
        };
        if req.kind.is_some() {
            // Answers come only on streams we opened; one here was not asked for (XEP-0220
            // §4.1, "unsolicited dialback").
            return Err(StreamError::new(StreamCondition::UnsupportedStanzaType)
                .with_text("dialback answers are not expected on this stream"));
        }
        if req.verify {
            let answer = self.answer_verify(&req);
            s.queue_raw(&element(
                "verify",
                &req.to,
                &req.from,
                Some(&req.id),
                Body::Answer(&answer),
            ));
            return Ok(());
        }
        if self.server.serves(&req.from) {
            return Err(StreamError::new(StreamCondition::InvalidFrom)
                .with_text("that domain is served by this server"));
        }
        let refusal = match self.admit(&req) {
            Ok(refusal) => refusal,
            Err(answer) => {
                let answer = element("result", &req.to, &req.from, None, Body::Answer(&answer));
                s.queue_raw(&answer);
                return Ok(());
            }
        };
        let server = self.server.clone();
        let fed = self.fed.clone();
        let id = self.stream_id.clone();
        self.pending.spawn(async move {
            let question = Question {
                target: &req.to,
                sender: &req.from,
                id: &id,
                key: &req.key,
            };
            let answer = verify(&server, &fed, &question).await;
            Verdict {
                from: req.from,
                to: req.to,
                answer,
                refusal,
            }
        });
        Ok(())
    }

    /// XEP-0220 §2.2.2: whether `key` is what this server gave the receiving server `from`
    /// on a stream from `to` with ID `id`.
    fn answer_verify(&self, req: &Request) -> Answer {
        if !self.server.serves(&req.to) {
            return Answer::Error("item-not-found", "cancel");
        }
        let genuine = req.id.len() <= MAX_ID
            && (self.fed.dialback_secret.as_ref())
                .is_some_and(|k| k.verify(&req.from, &req.to, &req.id, &req.key));
        tracing::debug!(peer = %self.peer, receiving = %req.from, originating = %req.to, genuine, "dialback key verification requested");
        if genuine {
            Answer::Valid
        } else {
            Answer::Invalid
        }
    }

    /// The checks before a `<db:result/>` is verified: target served here, sender permitted
    /// and not revoked, room for one more. Gives back why the certificate does not do for the
    /// sender, if it does not.
    fn admit(&self, req: &Request) -> Result<Option<Refused>, Answer> {
        let (from, to) = (&req.from, &req.to);
        if !self.server.serves(to) {
            return Err(Answer::Error("item-not-found", "cancel"));
        }
        if req.key.is_empty() || req.key.len() > MAX_KEY {
            return Err(Answer::Error("not-acceptable", "modify"));
        }
        if self.allows(from, to) {
            // Already authorised: nothing to verify again.
            return Err(Answer::Valid);
        }
        let refusal = self
            .fed
            .check(PeerRole::Inbound, &self.chain, from, UnixTime::now())
            .err();
        if let Some(r) = refusal.as_ref().filter(|r| !overridable(r.reason)) {
            self.audit_refused(from, to, LinkRefusal::from_label(r.reason));
            tracing::warn!(peer = %self.peer, remote = %from, local = %to, reason = r.reason,
                "inbound dialback refused: {}", r.sentence);
            return Err(Answer::Error("not-authorized", "auth"));
        }
        if self.pending.len() >= MAX_PENDING {
            tracing::info!(peer = %self.peer, remote = %from, "inbound dialback request refused: too many under way");
            return Err(Answer::Error("resource-constraint", "wait"));
        }
        if self.pairs.len() + self.pending.len() >= MAX_PAIRS {
            tracing::info!(peer = %self.peer, remote = %from, "inbound dialback request refused: too many domain pairs on one link");
            return Err(Answer::Error("policy-violation", "modify"));
        }
        Ok(refusal)
    }

    /// The next verification to finish; pending forever when there is none (for `select!`).
    pub async fn next_verdict(&mut self) -> Verdict {
        loop {
            match self.pending.join_next().await {
                Some(Ok(v)) => return v,
                // Only a bug could make a verification panic; its pair stays unauthorised.
                Some(Err(e)) => {
                    tracing::error!(peer = %self.peer, error = %e, "dialback verification task failed")
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Records a refused dialback request from `from` for `to`.
    fn audit_refused(&self, from: &str, to: &str, reason: LinkRefusal) {
        let ev = Event::S2sRefused {
            peer: cut(from),
            local: cut(to),
            direction: Direction::Inbound,
            reason,
            ip: Some(self.peer.ip()),
            certificate: CertRef::of(&self.chain),
        };
        let _ = self.server.audit.record_now(ev);
    }

    /// Tells the peer what came of a verification and authorises the pair when it is valid.
    /// An invalid key ends the link (XEP-0220 §2.2.1: "MUST close the XML stream").
    pub fn settle<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        s: &mut XmlStream<S>,
        v: Verdict,
    ) -> Result<(), StreamError> {
        let (peer, from, to) = (self.peer, &v.from, &v.to);
        s.queue_raw(&element("result", to, from, None, Body::Answer(&v.answer)));
        match &v.answer {
            Answer::Valid => {
                let ev = Event::S2sAccepted {
                    peer: cut(from),
                    local: to.clone(),
                    direction: Direction::Inbound,
                    method: LinkAuth::Dialback,
                    ip: Some(peer.ip()),
                    certificate: CertRef::of(&self.chain),
                };
                if self.server.audit.record_now(ev).is_err() {
                    // NEN 7513: a link that cannot be recorded is not opened.
                    return Err(StreamError::new(StreamCondition::InternalServerError));
                }
                match &v.refusal {
                    Some(r) => {
                        tracing::warn!(%peer, remote = %from, local = %to, reason = r.reason,
                        "inbound s2s link accepted by dialback: its certificate is not vouched \
                         for by the auditor ({})", r.sentence)
                    }
                    None => tracing::warn!(%peer, remote = %from, local = %to, reason = "dialback",
                        "inbound s2s link accepted by dialback (its certificate would have done)"),
                }
                self.pairs.push((v.from, v.to));
                Ok(())
            }
            Answer::Invalid => {
                self.audit_refused(from, to, LinkRefusal::Dialback);
                tracing::warn!(%peer, remote = %from, local = %to, reason = "dialback-invalid",
                    "inbound s2s link refused: the authoritative server of {from} says the dialback key is not genuine");
                Err(StreamError::new(StreamCondition::NotAuthorized)
                    .with_text(format!("the dialback key for {from} is not valid")))
            }
            Answer::Error(condition, _) => {
                tracing::warn!(%peer, remote = %from, local = %to, reason = "dialback-error", condition,
                    "inbound dialback failed: the authoritative server of {from} could not be asked");
                Ok(())
            }
        }
    }
}

/// What a receiving server asks an authoritative server (XEP-0220 §2.1.2): whether `key` is
/// genuine for a stream from `sender` to `target` with ID `id`.
struct Question<'a> {
    target: &'a str,
    sender: &'a str,
    id: &'a str,
    key: &'a str,
}

/// Asks the authoritative server of the sender (found as outbound links find it) on a
/// connection of its own, within `connect_timeout`.
async fn verify(server: &Arc<Server>, fed: &Federation, q: &Question<'_>) -> Answer {
    let timeout = server.config.federation.connect_timeout.get();
    let asked = fed.reach(q.sender, |route| ask(server, fed, q, route));
    let (target, sender) = (q.target, q.sender);
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(f)) => {
            tracing::info!(%target, %sender, reason = f.reason(), "dialback verification failed: {f}");
            match f {
                Failure::NotFound(_) => Answer::Error("remote-server-not-found", "cancel"),
                _ => Answer::Error("remote-connection-failed", "cancel"),
            }
        }
        Err(_) => Answer::Error("remote-server-timeout", "wait"),
    }
}

/// One attempt of [`verify`] on one route: TLS (the authoritative server's certificate need
/// not be vouched for, that is what dialback is for; DANE still applies), a stream from
/// the target to the sender, `<db:verify/>`, its answer, close.
async fn ask(
    server: &Arc<Server>,
    fed: &Federation,
    q: &Question<'_>,
    route: Route,
) -> Result<Answer, Failure> {
    let (target, sender, id) = (q.target, q.sender, q.id);
    let (tls, chain) = outbound::secure(server, fed, target, sender, &route).await?;
    // DANE pins the authoritative server where its zone says so; nothing else is asked of it.
    outbound::dane(&route, &chain, sender)?;
    let gone = || Failure::Unreachable(format!("{sender} ({}) broke off dialback", route.addr));
    let mut s = XmlStream::new(tls, server.limits, server.config.limits.read_rate);
    outbound::open(&mut s, target, sender, true)
        .await
        .map_err(|_| gone())?;
    s.queue_raw(&element(
        "verify",
        target,
        sender,
        Some(id),
        Body::Key(q.key),
    ));
    s.flush().await.map_err(|_| gone())?;
    let el = next_element(&mut s).await.ok_or_else(gone)?;
    let answer = Request::parse(&el)
        .filter(|r| r.verify && r.from == sender && r.to == target && r.id == id)
        .ok_or_else(gone)?;
    s.close().await;
    match answer.kind.as_deref() {
        Some("valid") => Ok(Answer::Valid),
        Some("invalid") => Ok(Answer::Invalid),
        _ => Err(Failure::Unreachable(format!(
            "{sender} answered dialback verification with an error ({})",
            Request::condition(&el)
        ))),
    }
}
