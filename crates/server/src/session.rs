//! A bound client session: the loop that reads the client's stanzas and writes what is routed to
//! it, plus idle pings, whitespace keepalives and shutdown.
//!
//! A stanza's walk from the client: framing → [`Session::inbound`] (checks, stamps `from`) →
//! the handler for its kind in `crate::modules` → router / storage → replies queued for the
//! client → one flush.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, Frame, StanzaCondition, StanzaError, StreamCondition, StreamError, ns};

use crate::modules::{self, message, presence};
use crate::router::{Outbound, SessionHandle};
use crate::server::Server;
use crate::storage::OfflineStore;
use crate::stream::io::{ReadError, XmlStream};

/// Quiet time after which a session's buffers are freed.
const RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// What negotiation hands to the session.
pub struct Bound {
    /// The router's view of this session.
    pub handle: Arc<SessionHandle>,
    /// Stanzas routed to this session.
    pub rx: mpsc::Receiver<Outbound>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Stream language (`xml:lang`).
    pub lang: String,
}

/// Per-session state the handlers read and change.
pub struct SessionData {
    /// The router's view of this session.
    pub handle: Arc<SessionHandle>,
    /// Entities that received directed available presence from this session (RFC 6121 §4.6):
    /// they get unavailable presence when the session goes offline.
    pub directed: HashSet<String>,
    /// Whether initial presence was sent (RFC 6121 §4.2).
    pub initial_presence: bool,
    /// The client's address.
    pub peer: SocketAddr,
    /// Stream language.
    pub lang: String,
    /// An unanswered server-to-client ping: its id and when it was sent.
    pub pending_ping: Option<(String, Instant)>,
}

/// Something to do once everything queued so far has been written to the client.
#[derive(Debug)]
pub enum AfterFlush {
    /// Offline messages up to this sequence number were written: delete them.
    DeleteOffline(i64),
}

/// What a handler gets: the server, this session, and where to put output for this client.
pub struct Ctx<'a> {
    /// Shared server state.
    pub server: &'a Arc<Server>,
    /// This session.
    pub sess: &'a mut SessionData,
    /// Stanzas for this session's own client, written after the handler returns.
    pub to_self: &'a mut Vec<Element>,
    /// Work to do after the next successful flush.
    pub after_flush: &'a mut Vec<AfterFlush>,
}

impl Ctx<'_> {
    /// This session's full JID.
    pub fn full(&self) -> &str {
        &self.sess.handle.full
    }

    /// This session's bare JID.
    pub fn bare(&self) -> &str {
        &self.sess.handle.bare
    }

    /// The account's domain.
    pub fn domain(&self) -> &str {
        self.sess
            .handle
            .bare
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.sess.handle.bare)
    }

    /// Queues an error reply to `stanza` for this client.
    pub fn reply_error(&mut self, stanza: &Element, err: StanzaError) {
        if let Some(r) = err.reply_to(stanza) {
            self.to_self.push(r);
        }
    }

    /// Answers the IQ request `iq`: a result with the payload, or the error.
    pub fn answer(&mut self, iq: &Element, r: Result<Option<Element>, StanzaError>) {
        match r {
            Ok(payload) => self.to_self.push(crate::modules::iq_result(iq, payload)),
            Err(e) => self.reply_error(iq, e),
        }
    }
}

/// Why the session loop ends.
enum End {
    /// Send this stream error, then close.
    Error(StreamError),
    /// The client closed the stream: answer with our closing tag.
    ClientClosed,
    /// The connection is gone.
    Gone,
}

/// Runs a bound session until it ends, then cleans up (unavailable presence, unbind, requeue).
///
/// The stream comes boxed: an async fn keeps its arguments beside its locals, so a 1.9 KiB
/// stream passed by value would be held twice by every session.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    server: Arc<Server>,
    mut s: Box<XmlStream<S>>,
    bound: Bound,
) {
    let Bound {
        handle,
        mut rx,
        peer,
        lang,
    } = bound;
    let mut sess = SessionData {
        handle: handle.clone(),
        directed: HashSet::new(),
        initial_presence: false,
        peer,
        lang,
        pending_ping: None,
    };
    let idle = server.config.c2s.idle_timeout.get();
    let ping_timeout = server.config.c2s.ping_timeout.get();
    let keepalive = server.config.c2s.whitespace_keepalive.get();
    let mut shutdown = server.shutdown.clone();
    let mut to_self = Vec::new();
    let mut after = Vec::new();
    // Buffers are released once a session has been quiet for a moment, so that thousands of
    // idle sessions hold no read or write buffers (and busy ones do not reallocate per stanza).
    let mut last_activity = Instant::now();
    let mut released = false;
    let end = loop {
        let idle_at = match &sess.pending_ping {
            Some((_, sent)) => *sent + ping_timeout,
            None => s.last_read + idle,
        };
        let keepalive_at = s.last_write + keepalive;
        let mut end = None;
        tokio::select! {
            out = rx.recv() => match out {
                Some(Outbound::Stanza(el)) => {
                    s.queue(&el);
                    // Drain what else is queued so that one write carries it all.
                    for _ in 0..64 {
                        match rx.try_recv() {
                            Ok(Outbound::Stanza(el)) => s.queue(&el),
                            Ok(Outbound::Close(e)) => { end = Some(End::Error(*e)); break }
                            Err(_) => break,
                        }
                    }
                }
                Some(Outbound::Close(e)) => end = Some(End::Error(*e)),
                None => end = Some(End::Gone),
            },
            frame = s.next_frame() => match frame {
                Ok(Frame::Stanza(el)) => {
                    let mut ctx = Ctx { server: &server, sess: &mut sess, to_self: &mut to_self, after_flush: &mut after };
                    if let Err(e) = inbound(&mut ctx, el).await {
                        end = Some(End::Error(e));
                    }
                    for el in to_self.drain(..) {
                        s.queue(&el);
                    }
                }
                Ok(Frame::StreamClose) => end = Some(End::ClientClosed),
                Ok(Frame::StreamOpen(_)) => end = Some(End::Error(StreamError::new(StreamCondition::BadFormat))),
                Err(ReadError::Framing(e)) => end = Some(End::Error(StreamError::from(&e))),
                Err(ReadError::Closed) | Err(ReadError::Io(_)) => end = Some(End::Gone),
            },
            _ = tokio::time::sleep_until(idle_at), if !idle.is_zero() => {
                if sess.pending_ping.is_some() {
                    end = Some(End::Error(StreamError::new(StreamCondition::ConnectionTimeout)));
                } else {
                    // XEP-0199 §4.2: is the client still there?
                    let id = format!("ping-{}", &crate::storage::new_id()[..8]);
                    let ping = Element::new("iq", ns::CLIENT)
                        .with_attr("from", ctx_domain(&handle))
                        .with_attr("to", handle.full.as_str())
                        .with_attr("id", id.as_str())
                        .with_attr("type", "get")
                        .with_child(Element::new("ping", ns::PING));
                    s.queue(&ping);
                    sess.pending_ping = Some((id, Instant::now()));
                }
            },
            _ = tokio::time::sleep_until(keepalive_at), if !keepalive.is_zero() => {
                s.queue_raw(b" ");
            },
            _ = tokio::time::sleep_until(last_activity + RELEASE_AFTER), if !released => {
                if rx.is_empty() {
                    s.release();
                    // Both are empty between stanzas; give their capacity back too.
                    to_self = Vec::new();
                    after = Vec::new();
                    released = true;
                }
                continue;
            },
            _ = shutdown.changed() => end = Some(End::Error(StreamError::new(StreamCondition::SystemShutdown))),
        }
        last_activity = Instant::now();
        released = false;
        if s.has_pending_writes() {
            if s.flush().await.is_err() {
                break End::Gone;
            }
            for a in after.drain(..) {
                match a {
                    AfterFlush::DeleteOffline(seq) => {
                        if let Err(e) =
                            Box::pin(server.storage.delete_offline_through(&handle.bare, seq)).await
                        {
                            tracing::warn!(error = %e, "could not delete delivered offline messages; they will be delivered again");
                        }
                    }
                }
            }
        }
        if let Some(e) = end {
            break e;
        }
    };
    match &end {
        End::Error(e) => {
            tracing::info!(session = %handle.full, condition = e.condition.as_str(), "closing stream with error");
            s.fail(e).await;
        }
        End::ClientClosed => s.close().await,
        End::Gone => {}
    }
    Box::pin(finish(&server, sess, rx)).await;
}

fn ctx_domain(h: &SessionHandle) -> &str {
    h.bare.rsplit_once('@').map(|(_, d)| d).unwrap_or(&h.bare)
}

/// After the stream ends: unbind, tell contacts we are gone, and send what was queued for this
/// session elsewhere instead of dropping it.
async fn finish(server: &Arc<Server>, mut sess: SessionData, mut rx: mpsc::Receiver<Outbound>) {
    let handle = sess.handle.clone();
    server.router.unbind(&handle.bare, handle.conn_id);
    rx.close();
    presence::on_disconnect(server, &mut sess).await;
    let mut requeued = 0;
    while let Ok(out) = rx.try_recv() {
        if let Outbound::Stanza(el) = out
            && el.name() == "message"
        {
            message::reroute_undelivered(server, *el).await;
            requeued += 1;
        }
    }
    tracing::info!(session = %handle.full, requeued, "session ended");
}

/// Checks a stanza from the client, stamps its `from`, and hands it to the handler for its kind.
async fn inbound(ctx: &mut Ctx<'_>, mut el: Element) -> Result<(), StreamError> {
    if el.ns() != ns::CLIENT {
        return Err(StreamError::new(StreamCondition::UnsupportedStanzaType));
    }
    if !matches!(el.name(), "message" | "presence" | "iq") {
        return Err(StreamError::new(StreamCondition::UnsupportedStanzaType));
    }
    // RFC 6120 §8.1.2.1: the server stamps the full JID; a different `from` is an error.
    if let Some(from) = el.attr("from") {
        let ok = match Jid::new(from) {
            Ok(j) => {
                let s = j.to_string();
                s == ctx.full() || s == ctx.bare()
            }
            Err(_) => false,
        };
        if !ok {
            return Err(StreamError::new(StreamCondition::InvalidFrom));
        }
    }
    el.set_attr("from", ctx.full().to_owned());
    let to = match el.attr("to") {
        None => None,
        Some(t) => match Jid::new(t) {
            Ok(j) => Some(j),
            Err(_) => {
                ctx.reply_error(
                    &el,
                    StanzaError::new(StanzaCondition::JidMalformed)
                        .with_text("the 'to' address is not a valid JID"),
                );
                return Ok(());
            }
        },
    };
    if let Some(j) = &to {
        // Route with the normalised form so every later comparison is exact.
        el.set_attr("to", j.to_string());
    }
    // Presence and IQ handlers touch storage; their futures are boxed so that the session's
    // own state (which lives as long as the connection) stays small. Messages, the hot path,
    // box only their rare storage calls (offline, blocklist loading).
    match el.name() {
        "message" => message::from_client(ctx, el, to).await,
        "presence" => Box::pin(presence::from_client(ctx, el, to)).await,
        _ => Box::pin(modules::iq_from_client(ctx, el, to)).await,
    }
    Ok(())
}
