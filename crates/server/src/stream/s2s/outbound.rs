//! Outbound server-to-server links: connect to a peer, STARTTLS with this domain's certificate as
//! the client certificate, check the peer's certificate for the domain we wanted, authenticate
//! with SASL EXTERNAL (XEP-0178) and restart the stream. The link manager in
//! [`crate::federation`] then writes stanzas to it.

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
/// (SASL EXTERNAL). With `[federation] dialback = true`, a peer that offers dialback may
/// instead accept this server by XEP-0220 where either fails for a reason dialback may
/// override ([`dialback::overridable`]); such links are logged at warn level.
pub async fn connect(
    server: &Arc<Server>,
    fed: &Federation,
    local: &str,
    remote: &str,
    route: &Route,
) -> Result<XmlStream<Tls>, Failure> {
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
        && !(dialback && dialback::overridable(f.reason()))
    {
        return Err(f);
    }
    dane(route, &chain, remote)?;
    let mut s = XmlStream::new(tls, server.limits, server.config.limits.read_rate);
    let (peers, features) = open(&mut s, local, remote, dialback)
        .await
        .ok_or_else(|| gone("closed the stream after TLS"))?;
    let external = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.text().trim() == "EXTERNAL"));
    if refused.is_some() || !external {
        let why = refused.unwrap_or_else(|| Failure::Refused {
            sentence: format!(
                "{remote} does not offer SASL EXTERNAL: it did not accept the certificate of {local}"
            ),
            reason: "peer-refused",
        });
        if !(dialback && dialback::offered(&features)) {
            return Err(why);
        }
        dialback::authenticate(&mut s, local, remote, &peers.id).await?;
        tracing::warn!(%local, %remote, %addr, reason = why.reason(),
            "outbound s2s link accepted by dialback, not by the auditor's certificates: {why}");
        return Ok(s);
    }
    let auth = Element::new("auth", ns::SASL)
        .with_attr("mechanism", "EXTERNAL")
        .with_text(encode_authzid(local));
    s.queue(&auth);
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
        .ok_or_else(|| gone("closed the stream after SASL"))?;
    Ok(s)
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
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Unreachable(format!("cannot connect to {remote} at {addr}: {e}")))?;
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
/// `route`, if there are any.
pub(super) fn dane(
    route: &Route,
    chain: &[CertificateDer<'static>],
    remote: &str,
) -> Result<(), Failure> {
    if let Some(records) = route.tlsa.as_deref()
        && dane::check(records, chain) == dane::Verdict::Mismatch
    {
        return Err(Failure::Refused {
            sentence: format!(
                "the certificate of {remote} at {} matches none of the TLSA records its \
                 DNS publishes (DANE): either the server's certificate or the TLSA records \
                 are out of date; its operator must publish records for the current certificate",
                route.addr
            ),
            reason: "dane-mismatch",
        });
    }
    Ok(())
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
    let mut s = XmlStream::new(tcp, server.limits, server.config.limits.read_rate);
    let (_, features) = open(&mut s, local, remote, false)
        .await
        .ok_or_else(|| gone("did not open a stream"))?;
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

/// Sends our header (declaring the dialback prefix when `dialback`), reads the peer's and its
/// features.
pub(super) async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
    local: &str,
    remote: &str,
    dialback: bool,
) -> Option<(Peers, Element)> {
    s.queue_raw(&header_with(local, remote, None, dialback));
    s.flush().await.ok()?;
    let peers = match read_header(s).await {
        Ok(p) => p,
        Err(HeaderError::Stream(e)) => {
            s.fail(&e).await;
            return None;
        }
        Err(HeaderError::Gone) => return None,
    };
    let features = next_element(s)
        .await
        .filter(|f| f.is("features", ns::STREAM))?;
    Some((peers, features))
}
