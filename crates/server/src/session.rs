//! A bound client session: the loop that reads the client's stanzas and writes what is routed to
//! it, plus idle pings, whitespace keepalives and shutdown.
//!
//! A stanza's walk from the client: framing → [`Session::inbound`] (checks, stamps `from`) →
//! the handler for its kind in `crate::modules` → router / storage → replies queued for the
//! client → one flush.
//!
//! The loop of one connection is in `live.rs`, with the way out through XEP-0352 (CSI) and
//! XEP-0198 (SM) counting; a session without a connection (hibernating for a resume, or
//! ending) is in `away.rs`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, StreamCondition, StreamError, ns};

use crate::modules::{self, message, presence};
use crate::router::{Outbound, SessionHandle};
use crate::server::Server;
use crate::stream::io::XmlStream;

mod away;
mod live;
use live::Live;

/// How long the stream error to a connection replaced by a resumption may take.
const CLOSE_OLD: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// XEP-0160: the replay of stored messages, while it lasts (see `message::deliver_offline`).
    pub offline: Option<message::OfflineReplay>,
    /// A message from the client waiting for room in its recipient's queue: nothing more is
    /// read from the client meanwhile (see `message::Stalled`).
    pub stalled: Option<Box<message::Stalled>>,
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

/// Why a connection of the session ended.
enum End<S> {
    /// Send this stream error, then close.
    Error(StreamError),
    /// Send these bytes (a stream error built here, e.g. XEP-0198 `handled-count-too-high`),
    /// then close.
    Raw(Vec<u8>),
    /// The client closed the stream: answer with our closing tag.
    ClientClosed,
    /// The connection is gone (or stopped answering): a resumable session hibernates.
    Gone,
    /// A new connection resumed this session (XEP-0198) while this one was still open.
    Resumed(Box<XmlStream<S>>),
}

/// Runs a bound session until it ends, then cleans up (unavailable presence, unbind, requeue).
///
/// The stream comes boxed: an async fn keeps its arguments beside its locals, so a 1.9 KiB
/// stream passed by value would be held twice by every session.
///
/// A session that enabled XEP-0198 resumption outlives its connection: when the connection
/// breaks it hibernates (see [`crate::sm::resume`]) and may continue on a new one.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    server: Arc<Server>,
    s: Box<XmlStream<S>>,
    bound: Bound,
) {
    let Bound {
        handle,
        rx,
        peer,
        lang,
    } = bound;
    let sess = SessionData {
        handle: handle.clone(),
        directed: HashSet::new(),
        initial_presence: false,
        peer,
        lang,
        pending_ping: None,
        offline: None,
        stalled: None,
    };
    let mut live = Live::new(server, sess, rx);
    let mut conn = Some(s);
    loop {
        let mut s = match conn.take() {
            Some(s) => s,
            // The connection broke: wait for a resume or the end of the resume timeout.
            None => match live.hibernate::<S>().await {
                Some(s) => s,
                None => break,
            },
        };
        if live.take_resume_pending() && live.resumed(&mut s).await.is_err() {
            continue;
        }
        match live.connected(&mut s).await {
            End::Resumed(new) => {
                // The client noticed the break before the server did: the old stream goes. It
                // is probably dead, so the goodbye may not hold up the resumed session.
                let err = StreamError::new(StreamCondition::Conflict)
                    .with_text("this session was resumed on another connection");
                let _ = tokio::time::timeout(CLOSE_OLD, s.fail(&err)).await;
                conn = Some(new);
            }
            End::Gone if live.resumable() => {}
            End::Gone => break,
            End::Error(e) => {
                tracing::info!(session = %handle.full, condition = e.condition.as_str(), "closing stream with error");
                s.fail(&e).await;
                // A client that stopped answering may come back on a new connection.
                if !(e.condition == StreamCondition::ConnectionTimeout && live.resumable()) {
                    break;
                }
            }
            End::Raw(bytes) => {
                s.queue_raw(&bytes);
                s.close().await;
                break;
            }
            End::ClientClosed => {
                s.close().await;
                break;
            }
        }
    }
    Box::pin(live.finish()).await;
}

fn ctx_domain(h: &SessionHandle) -> &str {
    h.bare.rsplit_once('@').map(|(_, d)| d).unwrap_or(&h.bare)
}

/// Checks a stanza from the client, stamps its `from`, and hands it to the handler for its kind.
pub(crate) async fn inbound(ctx: &mut Ctx<'_>, mut el: Element) -> Result<(), StreamError> {
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
