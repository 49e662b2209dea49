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

use super::{HeaderError, encode_authzid, header, read_header};
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
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The address.
    pub addr: SocketAddr,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
    /// TLSA records the peer's certificate must match (DANE), when DNSSEC proved some.
    pub tlsa: Option<&'a [Tlsa]>,
}

/// Connects from `local` to `remote` by `route` and negotiates the stream up to the point
/// where stanzas may be written. The caller bounds it with `[federation] connect_timeout`.
pub async fn connect(
    server: &Arc<Server>,
    fed: &Federation,
    local: &str,
    remote: &str,
    route: Route<'_>,
) -> Result<XmlStream<Tls>, Failure> {
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
    fed.check(PeerRole::Outbound, &chain, remote, UnixTime::now())
        .map_err(|r| Failure::Refused {
            sentence: r.sentence,
            reason: r.reason,
        })?;
    if let Some(records) = route.tlsa
        && dane::check(records, &chain) == dane::Verdict::Mismatch
    {
        return Err(Failure::Refused {
            sentence: format!(
                "the certificate of {remote} at {addr} matches none of the TLSA records its \
                 DNS publishes (DANE): either the server's certificate or the TLSA records \
                 are out of date; its operator must publish records for the current certificate"
            ),
            reason: "dane-mismatch",
        });
    }
    let mut s = XmlStream::new(tls, server.limits, server.config.limits.read_rate);
    let features = open(&mut s, local, remote)
        .await
        .ok_or_else(|| gone("closed the stream after TLS"))?;
    let external = features
        .get_child("mechanisms", ns::SASL)
        .is_some_and(|m| m.children().any(|c| c.text().trim() == "EXTERNAL"));
    if !external {
        return Err(Failure::Refused {
            sentence: format!(
                "{remote} does not offer SASL EXTERNAL: it did not accept the certificate of {local}"
            ),
            reason: "peer-refused",
        });
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
    open(&mut s, local, remote)
        .await
        .ok_or_else(|| gone("closed the stream after SASL"))?;
    Ok(s)
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
    let features = open(&mut s, local, remote)
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

/// Sends our header, reads the peer's and its features.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
    local: &str,
    remote: &str,
) -> Option<Element> {
    s.queue_raw(&header(local, remote, None));
    s.flush().await.ok()?;
    match read_header(s).await {
        Ok(_) => {}
        Err(HeaderError::Stream(e)) => {
            s.fail(&e).await;
            return None;
        }
        Err(HeaderError::Gone) => return None,
    }
    next_element(s)
        .await
        .filter(|f| f.is("features", ns::STREAM))
}
