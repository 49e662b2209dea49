//! Client-to-server stream negotiation (RFC 6120 §4–§7): stream header, STARTTLS (required),
//! SASL, stream restart, resource binding. The bound session then runs in [`crate::session`].
//!
//! Everything before binding runs under `[limits] pre_auth_timeout` and holds one of the
//! `max_unauthenticated` permits (and its place under the per-address cap).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use zorg_proto::{Element, Frame, StanzaCondition, StanzaError, StreamCondition, StreamError, ns};

use crate::audit::Event;
use crate::router::{BindError, Outbound, SESSION_QUEUE, SessionHandle};
use crate::sasl::{ChannelBindings, Mechanism};
use crate::server::Server;
use crate::session::{self, Bound};
use crate::stream::auth::{Auth, authenticate, offered_mechanisms};
use crate::stream::io::{ReadError, XmlStream, stream_header};

/// Serves one client connection from accept to close.
pub async fn serve(
    server: Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    permit: crate::ratelimit::UnauthPermit,
) {
    // The negotiation's result lives only in this block: a local still in scope at the
    // session's await would keep its 1.9 KiB in this task for the whole session.
    let session = {
        // Boxed, like the session below: the connection's task then holds only the phase it
        // is in, not the largest state of both (measured: 12 KiB per idle session otherwise).
        let negotiation = Box::pin(negotiate(&server, tcp, peer, direct_tls));
        let negotiated = super::pre_auth(&server, peer, "client", negotiation).await;
        let Some((stream, bound)) = negotiated else {
            return;
        };
        Box::pin(session::run(server, Box::new(stream), bound))
    };
    drop(permit);
    session.await;
}

type Tls = tokio_rustls::server::TlsStream<TcpStream>;

async fn negotiate(
    server: &Arc<Server>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
) -> Option<(XmlStream<Tls>, Bound)> {
    let tcp = if direct_tls {
        tcp
    } else {
        starttls(server, tcp).await?
    };
    let tls = match server.acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return None;
        }
    };
    let bindings = {
        let conn = tls.get_ref().1;
        let sni = conn.server_name().map(str::to_ascii_lowercase);
        ChannelBindings {
            tls_exporter: crate::tls::exporter_binding(conn),
            tls_server_end_point: server
                .tls
                .cert_for(sni.as_deref().unwrap_or(""))
                .map(|c| c.end_point_hash.clone()),
        }
    };
    let mut s = XmlStream::new(tls, server.pre_auth_limits, server.config.limits.read_rate);
    let (domain, lang) = open_stream(server, &mut s).await?;
    let auth = Auth {
        server,
        domain: &domain,
        peer,
        bindings: &bindings,
        offered: offered_mechanisms(server, &bindings),
    };
    s.queue_features(&auth_features(server, &auth.offered, &bindings));
    s.flush().await.ok()?;
    let bare = authenticate(&auth, &mut s).await?;
    // Authenticated: the full stanza limits from the restarted stream on.
    s.set_limits(server.limits);
    s.restart();
    let (domain2, _) = open_stream(server, &mut s).await?;
    if domain2 != domain {
        s.fail(&StreamError::new(StreamCondition::HostUnknown))
            .await;
        return None;
    }
    s.queue_features(&bound_features(server));
    s.flush().await.ok()?;
    loop {
        match bind(server, &mut s, &bare, peer, &lang).await? {
            BindStep::Bound(bound) => return Some((s, bound)),
            // XEP-0198 §5: resume instead of binding; on failure the client may still bind.
            BindStep::Resume(el) => {
                s = crate::sm::resume::negotiate(server, s, &bare, &el, peer).await?
            }
        }
    }
}

/// What the client did after authentication.
enum BindStep {
    /// Bound a resource.
    Bound(Bound),
    /// Asked to resume an earlier session (XEP-0198 `<resume/>`).
    Resume(Element),
}

/// Plain-text phase of port 5222: header, `<starttls/>` required, `<proceed/>`.
async fn starttls(server: &Arc<Server>, tcp: TcpStream) -> Option<TcpStream> {
    let mut s = XmlStream::new(tcp, server.pre_auth_limits, server.config.limits.read_rate);
    open_stream(server, &mut s).await?;
    require_starttls(s).await
}

/// After the stream headers of a plain-text stream (client or server): offer STARTTLS as
/// required, answer `<starttls/>` with `<proceed/>` and give back the connection for TLS.
/// Anything else ends the stream with `<policy-violation/>`.
pub(crate) async fn require_starttls(mut s: XmlStream<TcpStream>) -> Option<TcpStream> {
    s.queue_features(&[
        Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS))
    ]);
    s.flush().await.ok()?;
    match next_element(&mut s).await? {
        el if el.is("starttls", ns::TLS) => {
            s.queue_raw(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            s.flush().await.ok()?;
            // Data pipelined after <starttls/> would be read in the clear: drop the connection.
            s.into_inner().ok()
        }
        _ => {
            s.fail(
                &StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("STARTTLS is required on this port; use a client that supports it"),
            )
            .await;
            None
        }
    }
}

/// Reads the next top-level element; answers stream-level problems itself and returns `None`
/// when the stream is over.
pub(crate) async fn next_element<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
) -> Option<Element> {
    match s.next_frame().await {
        Ok(Frame::Stanza(el)) => Some(el),
        Ok(Frame::StreamClose) => {
            s.close().await;
            None
        }
        Ok(Frame::StreamOpen(_)) => {
            // Only reachable after a restart point, which callers handle explicitly.
            s.fail(&StreamError::new(StreamCondition::BadFormat)).await;
            None
        }
        Err(ReadError::Framing(e)) => {
            s.fail(&StreamError::from(&e)).await;
            None
        }
        Err(ReadError::Closed) | Err(ReadError::Io(_)) => None,
    }
}

/// Reads and checks the client's stream header and answers with ours. Returns the domain and
/// the stream language.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Arc<Server>,
    s: &mut XmlStream<S>,
) -> Option<(String, String)> {
    let header = match s.next_frame().await {
        Ok(Frame::StreamOpen(h)) => h,
        Ok(_) => {
            send_header_and_fail(
                server,
                s,
                server.default_domain(),
                StreamError::new(StreamCondition::BadFormat),
            )
            .await;
            return None;
        }
        Err(ReadError::Framing(e)) => {
            send_header_and_fail(server, s, server.default_domain(), StreamError::from(&e)).await;
            return None;
        }
        Err(_) => return None,
    };
    let domain = header
        .attr("to")
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_else(|| server.default_domain().to_owned());
    let lang = header
        .lang()
        .filter(|l| l.len() <= 35 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or("en")
        .to_owned();
    let err = if header.name != "stream" || header.ns != ns::STREAM {
        Some(StreamError::new(StreamCondition::InvalidNamespace))
    } else if header.default_ns.as_deref() != Some(ns::CLIENT) {
        Some(
            StreamError::new(StreamCondition::InvalidNamespace).with_text("expected jabber:client"),
        )
    } else if !version_ok(header.attr("version")) {
        Some(
            StreamError::new(StreamCondition::UnsupportedVersion)
                .with_text("XMPP 1.0 streams only"),
        )
    } else if !server.serves(&domain) {
        Some(StreamError::new(StreamCondition::HostUnknown))
    } else if !server.config.c2s.see_other_host.is_empty() {
        Some(StreamError::see_other_host(
            server.config.c2s.see_other_host.clone(),
        ))
    } else {
        None
    };
    let from = if server.serves(&domain) {
        domain.clone()
    } else {
        server.default_domain().to_owned()
    };
    if let Some(e) = err {
        send_header_and_fail(server, s, &from, e).await;
        return None;
    }
    s.queue_raw(&stream_header(&from, &crate::storage::new_id(), &lang));
    Some((domain, lang))
}

fn version_ok(v: Option<&str>) -> bool {
    let Some(v) = v else { return false };
    let mut it = v.split('.');
    match (
        it.next().and_then(|m| m.parse::<u32>().ok()),
        it.next().and_then(|m| m.parse::<u32>().ok()),
        it.next(),
    ) {
        (Some(major), Some(_minor), None) => major == 1,
        _ => false,
    }
}

async fn send_header_and_fail<S: AsyncRead + AsyncWrite + Unpin>(
    _server: &Arc<Server>,
    s: &mut XmlStream<S>,
    from: &str,
    err: StreamError,
) {
    // RFC 6120 §4.9.1.2: a stream error before our header is sent needs our header first.
    s.queue_raw(&stream_header(from, &crate::storage::new_id(), "en"));
    s.fail(&err).await;
}

/// XEP-0478: the stanza size limit of this stream and how long a silent stream may idle.
/// Before authentication that is the small limit, afterwards the full one (§3: limits may
/// change with each new set of stream features).
pub(crate) fn limits_feature(limits: &zorg_proto::Limits, idle: std::time::Duration) -> Element {
    let mut l = Element::new("limits", ns::STREAM_LIMITS).with_child(
        Element::new("max-bytes", ns::STREAM_LIMITS).with_text(limits.max_stanza_size.to_string()),
    );
    let idle = idle.as_secs();
    if idle > 0 {
        l.push_child(Element::new("idle-seconds", ns::STREAM_LIMITS).with_text(idle.to_string()));
    }
    l
}

fn auth_features(
    server: &Server,
    offered: &[Mechanism],
    bindings: &ChannelBindings,
) -> Vec<Element> {
    let mut mechs = Element::new("mechanisms", ns::SASL);
    for m in offered {
        mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
    }
    let mut f = vec![mechs];
    if bindings.any() {
        // XEP-0440: which channel-binding types this connection supports.
        let mut cb = Element::new("sasl-channel-binding", ns::SASL_CB);
        for t in bindings.available() {
            cb.push_child(Element::new("channel-binding", ns::SASL_CB).with_attr("type", t));
        }
        f.push(cb);
    }
    if server.config.registration.enabled {
        f.push(Element::new("register", ns::REGISTER_FEATURE));
    }
    f.push(limits_feature(
        &server.pre_auth_limits,
        server.config.c2s.idle_timeout.get(),
    ));
    f
}

fn bound_features(server: &Server) -> Vec<Element> {
    vec![
        Element::new("bind", ns::BIND),
        // RFC 6121 bis: the session feature is optional; old clients still look for it.
        Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)),
        Element::new("ver", ns::ROSTER_VER),
        Element::new("sub", ns::PRE_APPROVAL),
        // XEP-0198 (enable after binding, or resume instead of it) and XEP-0352.
        Element::new("sm", ns::SM),
        Element::new("csi", ns::CSI),
        crate::modules::disco::caps_element(server),
        limits_feature(&server.limits, server.config.c2s.idle_timeout.get()),
    ]
}

/// Resource binding (RFC 6120 §7). Returns the bound session, or the client's request to
/// resume one.
async fn bind<S: AsyncRead + AsyncWrite + Unpin>(
    server: &Arc<Server>,
    s: &mut XmlStream<S>,
    bare: &str,
    peer: SocketAddr,
    lang: &str,
) -> Option<BindStep> {
    loop {
        let el = next_element(s).await?;
        if el.ns() == ns::SM || el.ns() == ns::CSI {
            match (el.ns(), el.name()) {
                (ns::SM, "resume") => return Some(BindStep::Resume(el)),
                // XEP-0198 §3: enabling needs a bound resource.
                (ns::SM, "enable") => {
                    s.queue(&crate::sm::failed(StanzaCondition::UnexpectedRequest, None));
                    s.flush().await.ok()?;
                }
                // Nothing is counted before binding; CSI state starts with the session.
                _ => {}
            }
            continue;
        }
        let is_set_iq = el.is("iq", ns::CLIENT) && el.attr("type") == Some("set");
        if is_set_iq && el.has_child("bind", ns::BIND) {
            let requested = el
                .get_child("bind", ns::BIND)
                .and_then(|b| b.get_child("resource", ns::BIND))
                .map(|r| r.text())
                .unwrap_or_default();
            let resource = if requested.trim().is_empty() {
                format!("zorg-{}", &crate::storage::new_id()[..12])
            } else {
                match jid::BareJid::new(bare)
                    .ok()
                    .and_then(|b| b.with_resource_str(&requested).ok())
                {
                    Some(full) => full.resource().to_string(),
                    None => {
                        let e = StanzaError::new(StanzaCondition::BadRequest)
                            .with_text("the resource is not a valid resourcepart");
                        if let Some(r) = e.reply_to(&el) {
                            s.queue(&r);
                            s.flush().await.ok()?;
                        }
                        continue;
                    }
                }
            };
            let (tx, rx) = mpsc::channel(SESSION_QUEUE);
            let handle = Arc::new(SessionHandle {
                conn_id: server.router.next_conn_id(),
                bare: bare.to_owned(),
                full: format!("{bare}/{resource}"),
                resource,
                tx,
                state: Arc::default(),
                queue: crate::router::QueueBudget::new(
                    server.config.limits.max_session_queue_bytes as usize,
                ),
            });
            match server.router.bind(
                handle.clone(),
                server.config.limits.max_resources_per_account as usize,
            ) {
                Ok(old) => {
                    if let Some(old) = old {
                        // RFC 6120 §7.7.2.2: the new session wins; the old one gets <conflict/>.
                        let _ = old.tx.try_send(Outbound::close(
                            StreamError::new(StreamCondition::Conflict)
                                .with_text("replaced by a new connection with the same resource"),
                        ));
                    }
                }
                Err(BindError::TooManyResources) => {
                    let e = StanzaError::new(StanzaCondition::ResourceConstraint)
                        .with_text("too many sessions for this account; close one and try again");
                    if let Some(r) = e.reply_to(&el) {
                        s.queue(&r);
                        s.flush().await.ok()?;
                    }
                    continue;
                }
            }
            let ev = Event::SessionBound {
                session: handle.full.clone(),
                ip: peer.ip(),
                resumed: false,
            };
            if server.audit.record(ev).await.is_err() {
                server.router.unbind(bare, handle.conn_id);
                let e = StanzaError::new(StanzaCondition::InternalServerError)
                    .with_text("the server cannot record sessions at the moment; try again later");
                if let Some(r) = e.reply_to(&el) {
                    s.queue(&r);
                    s.flush().await.ok()?;
                }
                continue;
            }
            let mut result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
            if let Some(id) = el.attr("id") {
                result.set_attr("id", id);
            }
            result.push_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("jid", ns::BIND).with_text(handle.full.as_str())),
            );
            s.queue(&result);
            if s.flush().await.is_err() {
                server.router.unbind(bare, handle.conn_id);
                return None;
            }
            tracing::info!(session = %handle.full, %peer, "session bound");
            return Some(BindStep::Bound(Bound {
                handle,
                rx,
                peer,
                lang: lang.to_owned(),
            }));
        } else if is_set_iq && el.has_child("session", ns::SESSION) {
            let mut result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
            if let Some(id) = el.attr("id") {
                result.set_attr("id", id);
            }
            s.queue(&result);
            s.flush().await.ok()?;
        } else {
            s.fail(
                &StreamError::new(StreamCondition::NotAuthorized)
                    .with_text("bind a resource first"),
            )
            .await;
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_ok(Some("1.0")));
        assert!(version_ok(Some("1.1")));
        assert!(!version_ok(Some("0.9")));
        assert!(!version_ok(Some("2.0")));
        assert!(!version_ok(Some("1")));
        assert!(!version_ok(None));
    }
}
