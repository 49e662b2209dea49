//! Inbound server-to-server links: another server connects, proves its domain with a certificate
//! the federation's trust accepts (SASL EXTERNAL, XEP-0178), then sends stanzas that are routed
//! like local ones.
//!
//! Negotiation runs under `[limits] pre_auth_timeout` and holds a permit of the federation's own
//! cap on unauthenticated links, so that hostile peers cannot crowd out clients or each other.

use crate::audit::Event;
use crate::audit::event::{CertRef, Direction, LinkAuth, LinkRefusal, cut};
use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, Frame, StreamCondition, StreamError, ns};

use super::{HeaderError, Peers, decode_authzid, dialback, header, header_with, read_header};
use crate::federation::{Federation, incoming};
use crate::server::Server;
use crate::stream::c2s::{limits_feature, next_element, require_starttls};
use crate::stream::io::{ReadError, XmlStream};
use crate::tls::trust::PeerRole;

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// Serves one inbound s2s connection from accept to close.
pub async fn serve(
    server: Arc<Server>,
    fed: Arc<Federation>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    permit: crate::ratelimit::UnauthPermit,
) {
    let deadline = tokio::time::Instant::now() + server.config.limits.pre_auth_timeout.get();
    let negotiation = Box::pin(negotiate(&server, &fed, tcp, peer, direct_tls));
    let negotiated = crate::stream::pre_auth(&server, peer, "inbound s2s link", negotiation).await;
    let Some(n) = negotiated else { return };
    // A link still to be authenticated by dialback keeps its permit and its deadline.
    let pre_auth = (!n.link.authenticated()).then_some((permit, deadline));
    Box::pin(run(server, n, peer, pre_auth)).await;
}

/// A negotiated inbound stream.
struct Negotiated {
    s: Box<XmlStream<Tls>>,
    peers: Peers,
    /// What the link may carry.
    link: dialback::Inbound,
    /// A dialback element read during negotiation, to be handled first.
    first: Option<Element>,
}

async fn negotiate(
    server: &Arc<Server>,
    fed: &Arc<Federation>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) -> Option<Negotiated> {
    let tcp = if direct_tls {
        tcp
    } else {
        starttls(server, tcp).await?
    };
    let config = match crate::tls::s2s::server_config(&server.tls, &fed.trust) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the s2s TLS configuration");
            return None;
        }
    };
    let tls = match TlsAcceptor::from(config).accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, error = %e, "inbound s2s link: TLS handshake failed");
            return None;
        }
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let mut s = XmlStream::new(tls, server.pre_auth_limits, server.config.limits.read_rate);
    let peers = open(server, &mut s, true).await?;
    let verdict = fed.check(PeerRole::Inbound, &chain, &peers.from, UnixTime::now());
    let dialback = server.config.federation.dialback;
    match &verdict {
        Err(refusal) if !fed.dialback_overrides(refusal.reason) => {
            let ev = Event::S2sRefused {
                peer: cut(&peers.from),
                local: peers.to.clone(),
                direction: Direction::Inbound,
                reason: LinkRefusal::from_label(refusal.reason),
                ip: Some(peer.ip()),
                certificate: CertRef::of(&chain),
            };
            let _ = server.audit.record(ev).await;
            tracing::warn!(%peer, remote = %peers.from, local = %peers.to, reason = refusal.reason,
                "inbound s2s link refused: {}", refusal.sentence);
            // No SASL mechanism is offered; the stream error tells the peer's operator why.
            s.queue_features(&[]);
            let text = format!(
                "the certificate presented for {} is not accepted here ({})",
                peers.from, refusal.reason
            );
            s.fail(&StreamError::new(StreamCondition::NotAuthorized).with_text(text))
                .await;
            return None;
        }
        Err(refusal) => {
            tracing::info!(%peer, remote = %peers.from, local = %peers.to, reason = refusal.reason,
                "inbound s2s link: certificate not accepted, only dialback offered: {}", refusal.sentence);
        }
        Ok(()) => {}
    }
    let mut features = Vec::new();
    if verdict.is_ok() {
        features.push(
            Element::new("mechanisms", ns::SASL)
                .with_child(Element::new("mechanism", ns::SASL).with_text("EXTERNAL")),
        );
    }
    if dialback {
        features.push(dialback::feature());
    }
    s.queue_features(&features);
    s.flush().await.ok()?;
    let chain_copy = chain.clone();
    let mut link =
        dialback::Inbound::new(server.clone(), fed.clone(), peer, peers.id.clone(), chain);
    let auth = next_element(&mut s).await?;
    if dialback && dialback::is_dialback(&auth) {
        let s = Box::new(s);
        let first = Some(auth);
        return Some(Negotiated {
            s,
            peers,
            link,
            first,
        });
    }
    let authzid = (verdict.is_ok()
        && auth.is("auth", ns::SASL)
        && auth.attr("mechanism") == Some("EXTERNAL"))
    .then(|| decode_authzid(&auth.text()))
    .flatten();
    // XEP-0178 §3: the authorization identity is empty or the domain of the stream's `from`.
    if !authzid.is_some_and(|a| a.is_empty() || a == peers.from) {
        // A SASL <failure/> answers an <auth/> only (RFC 6120 §6.4.5); anything else in its
        // place gets the stream error alone (§4.9.3.12).
        if auth.is("auth", ns::SASL) {
            let offered = verdict.is_ok() && auth.attr("mechanism") == Some("EXTERNAL");
            let condition: &[u8] = if offered {
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-authzid/></failure>"
            } else {
                b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><invalid-mechanism/></failure>"
            };
            s.queue_raw(condition);
        }
        s.fail(&StreamError::new(StreamCondition::NotAuthorized))
            .await;
        let ev = Event::S2sRefused {
            peer: cut(&peers.from),
            local: peers.to.clone(),
            direction: Direction::Inbound,
            reason: LinkRefusal::BadSasl,
            ip: Some(peer.ip()),
            certificate: CertRef::of(&chain_copy),
        };
        let _ = server.audit.record(ev).await;
        tracing::warn!(%peer, remote = %peers.from, "inbound s2s link refused: bad SASL EXTERNAL request");
        return None;
    }
    let ev = Event::S2sAccepted {
        peer: cut(&peers.from),
        local: peers.to.clone(),
        direction: Direction::Inbound,
        method: LinkAuth::Certificate,
        ip: Some(peer.ip()),
        certificate: CertRef::of(&chain_copy),
    };
    if server.audit.record_durable(ev).await.is_err() {
        // NEN 7513: a link that cannot be recorded is not opened.
        s.queue_raw(
            b"<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/></failure>",
        );
        s.fail(&StreamError::new(StreamCondition::InternalServerError))
            .await;
        return None;
    }
    s.queue_raw(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    s.flush().await.ok()?;
    s.set_limits(server.limits);
    s.restart();
    let again = open(server, &mut s, true).await?;
    if (&again.from, &again.to) != (&peers.from, &peers.to) {
        s.fail(&StreamError::new(StreamCondition::InvalidFrom))
            .await;
        return None;
    }
    let idle = server.config.federation.idle_timeout.get();
    s.queue_features(&[limits_feature(&server.limits, idle)]);
    s.flush().await.ok()?;
    tracing::info!(%peer, remote = %peers.from, local = %peers.to, "inbound s2s link accepted");
    link.authenticated_by_sasl(&peers.from);
    Some(Negotiated {
        s: Box::new(s),
        peers,
        link,
        first: None,
    })
}

/// Plain-text phase of `[s2s] listen`: header, `<starttls/>` required, `<proceed/>`.
async fn starttls(server: &Arc<Server>, tcp: TcpStream) -> Option<TcpStream> {
    let mut s = XmlStream::new(tcp, server.pre_auth_limits, server.config.limits.read_rate);
    open(server, &mut s, false).await?;
    require_starttls(s).await
}

/// Reads the peer's header, checks that it names itself and a domain served here, answers with
/// our header.
/// `from` may be left out only before TLS (RFC 6120 §4.7.1 makes it a SHOULD, and some
/// servers omit it there); afterwards it is the domain the certificate must name.
async fn open<S>(server: &Arc<Server>, s: &mut XmlStream<S>, require_from: bool) -> Option<Peers>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let bad_from = |from: &str| {
        (require_from || !from.is_empty())
            && Jid::new(from).map_or(true, |j| j.node().is_some() || j.resource().is_some())
    };
    let fail = match read_header(s).await {
        Ok(p) if !server.serves(&p.to) => StreamError::new(StreamCondition::HostUnknown),
        Ok(p) if bad_from(&p.from) => StreamError::new(StreamCondition::InvalidFrom)
            .with_text("a server stream needs 'from' with the sending domain"),
        // Nobody else speaks for a domain served here, whatever its certificate says.
        Ok(p) if server.serves(&p.from) => StreamError::new(StreamCondition::InvalidFrom)
            .with_text("that domain is served by this server"),
        Ok(mut p) => {
            p.id = crate::storage::new_id();
            let dialback = server.config.federation.dialback;
            s.queue_raw(&header_with(&p.to, &p.from, Some(&p.id), dialback));
            return Some(p);
        }
        Err(HeaderError::Stream(e)) => e,
        Err(HeaderError::Gone) => return None,
    };
    s.queue_raw(&header(
        server.default_domain(),
        "",
        Some(&crate::storage::new_id()),
    ));
    s.fail(&fail).await;
    None
}

/// The link after negotiation: every stanza must come from an authenticated domain and go to
/// a domain served here, then it is routed like a local one. With dialback, `<db:result/>` and
/// `<db:verify/>` are handled here too; `pre_auth` holds the unauthenticated-link permit and
/// the deadline while no domain is authenticated yet.
async fn run(
    server: Arc<Server>,
    n: Negotiated,
    peer: SocketAddr,
    mut pre_auth: Option<(crate::ratelimit::UnauthPermit, tokio::time::Instant)>,
) {
    let Negotiated {
        mut s,
        peers,
        mut link,
        first,
    } = n;
    let idle = server.config.federation.idle_timeout.get();
    let dialback = server.config.federation.dialback;
    let mut shutdown = server.shutdown.clone();
    let mut trust = server.federation.as_ref().map(|f| f.trust_changes());
    let mut end = first.and_then(|el| link.handle(&mut s, &el).err());
    while end.is_none() {
        if pre_auth.is_some() && link.authenticated() {
            // The first domain pair dialback authorised: no longer a pre-authentication link.
            pre_auth = None;
            s.set_limits(server.limits);
        }
        if s.has_pending_writes() && s.flush().await.is_err() {
            break;
        }
        let idle_at = s.last_read + idle * 2;
        let pre_auth_at = pre_auth.as_ref().map(|p| p.1);
        tokio::select! {
            frame = s.next_frame() => match frame {
                Ok(Frame::Stanza(el)) if dialback && dialback::is_dialback(&el) => {
                    end = link.handle(&mut s, &el).err();
                }
                Ok(Frame::Stanza(el)) => match check(&server, &link, el) {
                    Ok(el) => incoming::route(&server, el).await,
                    Err(e) => end = Some(e),
                },
                Ok(Frame::StreamClose) => {
                    s.close().await;
                    break;
                }
                Ok(Frame::StreamOpen(_)) => end = Some(StreamError::new(StreamCondition::BadFormat)),
                Err(ReadError::Framing(e)) => end = Some(StreamError::from(&e)),
                Err(_) => break,
            },
            verdict = link.next_verdict() => end = link.settle(&mut s, verdict).err(),
            // A CRL reload or the hourly tick: the certificate may be revoked or expired now.
            _ = changed_or_pending(&mut trust) => {
                if let Some(r) = link.recheck() {
                    tracing::warn!(%peer, remote = %peers.from, reason = r.reason, "inbound s2s link closed: {}", r.sentence);
                    end = Some(StreamError::new(StreamCondition::PolicyViolation)
                        .with_text("this server no longer accepts your certificate"));
                }
            }
            // The peer closes its idle outbound links itself; this is for peers that do not.
            _ = tokio::time::sleep_until(idle_at) => {
                end = Some(StreamError::new(StreamCondition::ConnectionTimeout));
            }
            _ = sleep_until_some(pre_auth_at) => {
                tracing::debug!(%peer, "inbound s2s link: pre-authentication timeout");
                end = Some(StreamError::new(StreamCondition::ConnectionTimeout));
            }
            _ = shutdown.changed() => end = Some(StreamError::new(StreamCondition::SystemShutdown)),
        }
    }
    if let Some(e) = end {
        tracing::info!(%peer, remote = %peers.from, condition = e.condition.as_str(), "closing inbound s2s link with error");
        s.fail(&e).await;
    }
    tracing::info!(%peer, remote = %peers.from, "inbound s2s link closed");
}

/// Waits for the next change of the trust (see [`crate::federation::Federation::trust_changes`]),
/// or forever without federation.
async fn changed_or_pending(rx: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// RFC 6120 §8.1.1.2 and §13.1: a stanza on a server stream names both ends; `from` must be
/// an authenticated domain and `to` a domain served here (with dialback: a domain pair
/// authorised on this link).
fn check(
    server: &Server,
    link: &dialback::Inbound,
    mut el: Element,
) -> Result<Element, StreamError> {
    if !link.authenticated() {
        return Err(StreamError::new(StreamCondition::NotAuthorized));
    }
    if el.ns() != ns::CLIENT || !matches!(el.name(), "message" | "presence" | "iq") {
        return Err(StreamError::new(StreamCondition::UnsupportedStanzaType));
    }
    let jid = |a: Option<&str>| a.and_then(|v| Jid::new(v).ok());
    let (Some(from), Some(to)) = (jid(el.attr("from")), jid(el.attr("to"))) else {
        return Err(StreamError::new(StreamCondition::ImproperAddressing)
            .with_text("stanzas between servers need valid 'from' and 'to'"));
    };
    let (from_domain, to_domain) = (from.domain().as_str(), to.domain().as_str());
    if !link.knows(from_domain) {
        return Err(StreamError::new(StreamCondition::InvalidFrom));
    }
    if !server.serves(to_domain) {
        return Err(StreamError::new(StreamCondition::HostUnknown));
    }
    if !link.allows(from_domain, to_domain) {
        // Dialback authorised this sender for another of our domains (XEP-0220 §2.5).
        return Err(
            StreamError::new(StreamCondition::NotAuthorized).with_text(format!(
                "{from_domain} is not authorised to send to {to_domain} on this link"
            )),
        );
    }
    // Normalised forms, so that every later comparison is exact.
    el.set_attr("from", from.to_string());
    el.set_attr("to", to.to_string());
    Ok(el)
}
