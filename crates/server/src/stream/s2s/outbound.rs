//! Outbound server-to-server links: connect to a peer, STARTTLS with this domain's certificate as
//! the client certificate, check the peer's certificate for the domain we wanted, authenticate
//! with SASL EXTERNAL (XEP-0178) and restart the stream. The link manager in
//! [`crate::federation`] then writes stanzas to it.
//!
//! The receiving server is always authenticated before a stanza is written to it: by the
//! auditor's chain, or (only with `[federation] dialback = true`) by a DANE-TA or DANE-EE record
//! proved by DNSSEC. Dialback never does it: XEP-0220 lets the *receiving* server check the
//! *originating* one, and a server that answers `type='valid'` has proved nothing about itself
//! (a man in the middle answers that just as well).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zorg_proto::{Element, ns};

use super::{HeaderError, Peers, dialback, encode_authzid, header_with, read_header};
use crate::federation::Federation;
use crate::server::Server;
use crate::stream::c2s::next_element;
use crate::stream::io::XmlStream;
use crate::tls::dane::{self, Tlsa};
use crate::tls::trust::PeerRole;

/// The TLS stream of an outbound link.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Why an outbound link could not be set up. Display is a sentence for the log and for the
/// error text of bounced stanzas (it names no key and no internal address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No address is known for the domain.
    NotFound(String),
    /// The peer could not be reached or broke off the negotiation.
    Unreachable(String),
    /// The peer's certificate was refused here, or ours there.
    Refused {
        /// The sentence saying why.
        sentence: String,
        /// A short stable label (see [`crate::tls::trust::Refusal::reason`]).
        reason: &'static str,
    },
}

impl Failure {
    /// A short stable label for the log.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Refused { reason, .. } => reason,
            Failure::NotFound(_) => "not-found",
            Failure::Unreachable(_) => "unreachable",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound(s) | Failure::Unreachable(s) => f.write_str(s),
            Failure::Refused { sentence, .. } => f.write_str(sentence),
        }
    }
}

/// How an outbound link was authenticated, each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// The peer's certificate is not vouched for by the auditor, but a DANE-TA or DANE-EE record
    /// under DNSSEC vouches for it (only with `dialback = true`).
    pub peer_by_dane: bool,
    /// The peer accepted this server by dialback, not by SASL EXTERNAL.
    pub by_dialback: bool,
}

/// Where and how to connect: one address of one discovered target.
#[derive(Debug, Clone)]
pub struct Route {
    /// The address.
    pub addr: SocketAddr,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
    /// TLSA records the peer's certificate must match (DANE), when DNSSEC proved some.
    pub tlsa: Option<Arc<[Tlsa]>>,
}

/// Connects from `local` to `remote` by `route` and negotiates the stream up to the point
/// where stanzas may be written. The caller bounds it with `[federation] connect_timeout`.
///
/// The peer's certificate must pass the federation's check and the peer must accept ours
/// (SASL EXTERNAL). With `[federation] dialback = true`, a peer that does not accept our
/// certificate and offers dialback may accept this server by XEP-0220 instead, and a peer whose
/// certificate is refused for a reason dialback may override ([`dialback::overridable`]) is
/// accepted if DANE-TA or DANE-EE vouches for it; such links are logged at warn level.
pub async fn connect(
    server: &Arc<Server>,
    fed: &Federation,
    local: &str,
    remote: &str,
    route: &Route,
) -> Result<(XmlStream<Tls>, Authenticated), Failure> {
    let dialback = server.config.federation.dialback;
    let addr = route.addr;
    let gone = |what: &str| Failure::Unreachable(format!("{remote} ({addr}) {what}"));
    let (tls, chain) = secure(server, fed, local, remote, route).await?;
    let refused = fed
        .check(PeerRole::Outbound, &chain, remote, UnixTime::now())
        .err()
        .map(|r| Failure::Refused {
            sentence: r.sentence,
            reason: r.reason,
        });
    if let Some(f) = refused.clone()
        && !fed.dialback_overrides(f.reason())
    {
        return Err(f);
    }
    let by_dane = dane(route, &chain, remote)?;
    if let Some(f) = &refused {
        if !by_dane {
            return Err(unauthenticated(f, remote));
        }
        tracing::warn!(%local, %remote, %addr, reason = f.reason(),
            "outbound s2s link to a server the auditor does not vouch for, authenticated by its \
             DANE record under DNSSEC (dialback = true allows it): {f}");
    }
    let auth = |by_dialback| Authenticated {
        peer_by_dane: refused.is_some(),
        by_dialback,
    };
    let mut s = XmlStream::new(tls, server.limits, server.config.limits.read_rate);
    let (peers, features) = open(&mut s, local, remote, dialback)
        .await
        .map_err(|e| e.failure(remote, "closed the stream after TLS", gone))?;
    let external = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.text().trim() == "EXTERNAL"));
    if !external {
        let why = Failure::Refused {
            sentence: format!(
                "{remote} does not offer SASL EXTERNAL: it did not accept the certificate of {local}"
            ),
            reason: "peer-refused",
        };
        if !(dialback && dialback::offered(&features)) {
            return Err(why);
        }
        dialback::authenticate(
            &mut s,
            fed.dialback_secret.as_ref(),
            local,
            remote,
            &peers.id,
        )
        .await?;
        tracing::warn!(%local, %remote, %addr, reason = why.reason(),
            "outbound s2s link accepted by dialback, not by the auditor's certificates: {why}");
        return Ok((s, auth(true)));
    }
    let auth_el = Element::new("auth", ns::SASL)
        .with_attr("mechanism", "EXTERNAL")
        .with_text(encode_authzid(local));
    s.queue(&auth_el);
    s.flush().await.map_err(|_| gone("closed the connection"))?;
    match next_element(&mut s).await {
        Some(el) if el.is("success", ns::SASL) => {}
        _ => {
            return Err(Failure::Refused {
                sentence: format!("{remote} refused SASL EXTERNAL for {local}"),
                reason: "peer-refused",
            });
        }
    }
    s.restart();
    open(&mut s, local, remote, dialback)
        .await
        .map_err(|e| e.failure(remote, "closed the stream after SASL", gone))?;
    Ok((s, auth(false)))
}

/// The refusal of a receiving server whose certificate was `refused` and that nothing else
/// vouches for, although dialback is on: it keeps the certificate's reason, and says why
/// dialback does not help and what does.
fn unauthenticated(refused: &Failure, remote: &str) -> Failure {
    Failure::Refused {
        sentence: format!(
            "{refused}; dialback cannot stand in for the certificate of {remote}: it proves this \
             server to {remote}, never {remote} to this server, so stanzas could reach whoever \
             answers at its address. {remote} needs a certificate from the auditor, or TLSA \
             records (DANE-EE or DANE-TA) under DNSSEC with dane = true here"
        ),
        reason: refused.reason(),
    }
}

/// TCP, STARTTLS unless `route` is direct TLS, and the TLS handshake with this domain's
/// certificate; gives back the TLS stream and the peer's chain, not judged yet.
pub(super) async fn secure(
    server: &Arc<Server>,
    fed: &Federation,
    local: &str,
    remote: &str,
    route: &Route,
) -> Result<(Tls, Vec<CertificateDer<'static>>), Failure> {
    let addr = route.addr;
    let gone = |what: &str| Failure::Unreachable(format!("{remote} ({addr}) {what}"));
    // A third of connect_timeout (at most 10 s) per address, so that an address that drops
    // packets leaves time for the next target instead of using up the whole wait.
    let per_address = (server.config.federation.connect_timeout.get() / 3)
        .min(std::time::Duration::from_secs(10));
    let tcp = match tokio::time::timeout(per_address, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let text = format!("cannot connect to {remote} at {addr}: {e}");
            return Err(Failure::Unreachable(text));
        }
        Err(_) => {
            let text = format!(
                "cannot connect to {remote} at {addr}: no answer within {} s",
                per_address.as_secs()
            );
            return Err(Failure::Unreachable(text));
        }
    };
    let _ = tcp.set_nodelay(true);
    let tcp = if route.direct_tls {
        tcp
    } else {
        starttls(server, tcp, local, remote, &gone).await?
    };
    let cert = server
        .tls
        .cert_of(local)
        .ok_or_else(|| Failure::NotFound(format!("no certificate for {local}")))?;
    let config = crate::tls::s2s::client_config(cert, &fed.trust, route.direct_tls)
        .map_err(|e| Failure::Unreachable(format!("TLS configuration: {e}")))?;
    let name = ServerName::try_from(remote.to_owned())
        .map_err(|_| Failure::NotFound(format!("{remote} is not a DNS name")))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::Unreachable(format!("TLS handshake with {remote} failed: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    Ok((tls, chain))
}

/// The DANE check: the peer's chain must match one of the TLSA records DNSSEC proved for
/// `route`, if there are any. `Ok(true)` when a DANE-TA or DANE-EE record vouches for the peer by
/// DNSSEC alone (see [`dane::Verdict::Authenticated`]).
pub(super) fn dane(
    route: &Route,
    chain: &[CertificateDer<'static>],
    remote: &str,
) -> Result<bool, Failure> {
    let Some(records) = route.tlsa.as_deref() else {
        return Ok(false);
    };
    match dane::check(records, chain, remote, UnixTime::now()) {
        dane::Verdict::Authenticated => Ok(true),
        dane::Verdict::Match | dane::Verdict::NoUsableRecords => Ok(false),
        dane::Verdict::Mismatch => Err(Failure::Refused {
            sentence: format!(
                "the certificate of {remote} at {} matches none of the TLSA records its \
                 DNS publishes (DANE): either the server's certificate or the TLSA records \
                 are out of date; its operator must publish records for the current certificate \
                 (a DANE-TA record must name a CA that issued it, sent in its chain)",
                route.addr
            ),
            reason: "dane-mismatch",
        }),
    }
}

/// Opens a stream in the clear and upgrades it with STARTTLS (RFC 6120 §5); gives back the
/// TCP stream for the TLS handshake.
async fn starttls(
    server: &Arc<Server>,
    tcp: TcpStream,
    local: &str,
    remote: &str,
    gone: &impl Fn(&str) -> Failure,
) -> Result<TcpStream, Failure> {
    // Nothing is authenticated before TLS: the peer's plain-text header and features get the
    // small limits.
    let mut s = XmlStream::new(tcp, server.pre_auth_limits, server.config.limits.read_rate);
    let (_, features) = open(&mut s, local, remote, false)
        .await
        .map_err(|e| e.failure(remote, "did not open a stream", gone))?;
    if !features.has_child("starttls", ns::TLS) {
        return Err(gone("does not offer STARTTLS"));
    }
    s.queue_raw(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    s.flush().await.map_err(|_| gone("closed the connection"))?;
    match next_element(&mut s).await {
        Some(p) if p.is("proceed", ns::TLS) => {}
        _ => return Err(gone("refused STARTTLS")),
    }
    s.into_inner()
        .map_err(|_| gone("sent data after <proceed/>"))
}

/// Why [`open`] got no features.
#[derive(Debug)]
pub(super) enum NotOpened {
    /// The connection ended or the peer sent something else.
    Gone,
    /// The peer sent a stream error instead: its condition and text, for the log.
    Refused(String),
}

impl NotOpened {
    /// A [`Failure`]: a refusal naming the peer's error, or `gone(what)`.
    pub(super) fn failure(
        self,
        remote: &str,
        what: &str,
        gone: impl Fn(&str) -> Failure,
    ) -> Failure {
        match self {
            NotOpened::Gone => gone(what),
            NotOpened::Refused(why) => Failure::Refused {
                sentence: format!("{remote} {what} with the stream error {why}"),
                reason: "peer-refused",
            },
        }
    }
}

/// Sends our header (declaring the dialback prefix when `dialback`), reads the peer's and its
/// features.
pub(super) async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
    local: &str,
    remote: &str,
    dialback: bool,
) -> Result<(Peers, Element), NotOpened> {
    s.queue_raw(&header_with(local, remote, None, dialback));
    s.flush().await.map_err(|_| NotOpened::Gone)?;
    let peers = match read_header(s).await {
        Ok(p) => p,
        Err(HeaderError::Stream(e)) => {
            s.fail(&e).await;
            return Err(NotOpened::Gone);
        }
        Err(HeaderError::Gone) => return Err(NotOpened::Gone),
    };
    match next_element(s).await {
        Some(f) if f.is("features", ns::STREAM) => Ok((peers, f)),
        // RFC 6120 §4.9: e.g. Prosody's <not-authorized/> for a certificate it does not trust.
        Some(e) if e.is("error", ns::STREAM) => Err(NotOpened::Refused(stream_error_summary(&e))),
        _ => Err(NotOpened::Gone),
    }
}

/// `<condition/>` and the peer's text, if any, for the log (bounded: the text is the peer's).
fn stream_error_summary(e: &Element) -> String {
    let condition = e
        .children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map_or("undefined-condition", |c| c.name());
    let text: String = e
        .get_child("text", ns::STREAM_ERRORS)
        .map(|t| t.text().chars().take(200).collect())
        .unwrap_or_default();
    if text.is_empty() {
        format!("<{condition}/>")
    } else {
        format!("<{condition}/> (\"{text}\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::framing::{Limits, parse_element};

    fn error(inner: &str) -> Element {
        let xml = format!("<error xmlns='http://etherx.jabber.org/streams'>{inner}</error>");
        parse_element(&xml, Limits::default()).unwrap()
    }

    #[test]
    fn a_peer_stream_error_becomes_a_refusal_that_names_it() {
        let e = error(
            "<not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Your server's certificate is not trusted</text>",
        );
        let f = NotOpened::Refused(stream_error_summary(&e)).failure(
            "b.example",
            "closed the stream after TLS",
            |w| Failure::Unreachable(w.to_owned()),
        );
        assert_eq!(f.reason(), "peer-refused");
        assert_eq!(
            f.to_string(),
            "b.example closed the stream after TLS with the stream error <not-authorized/> \
             (\"Your server's certificate is not trusted\")"
        );
        // Without a text, and with a peer's very long text cut short.
        let e = error("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>");
        assert_eq!(stream_error_summary(&e), "<policy-violation/>");
        let long = "x".repeat(5_000);
        let e = error(&format!(
            "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{long}</text>"
        ));
        assert!(stream_error_summary(&e).len() < 250);
        // A connection that just ended is what `gone` says.
        let f = NotOpened::Gone.failure("b.example", "did not open a stream", |w| {
            Failure::Unreachable(format!("b.example {w}"))
        });
        assert_eq!(f.to_string(), "b.example did not open a stream");
        assert_eq!(f.reason(), "unreachable");
    }
}
