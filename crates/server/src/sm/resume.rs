//! XEP-0198 §5 resumption: the map from resumption token to the waiting session, and the
//! negotiation side of `<resume/>`.
//!
//! A resumable session keeps its task (and with it all its state: presence, carbons, the
//! unacknowledged queue) when its connection breaks; it "hibernates" for its resume timeout,
//! still bound in the router so that stanzas keep arriving in its queue. A new connection that
//! authenticated as the same account sends `<resume previd=… h=…/>` instead of binding; the
//! negotiation looks the token up here and hands its stream to the waiting task through a
//! channel. The task either takes it (and answers `<resumed/>` on it) or hands it back with
//! the `<failed/>` to send, and the client can then bind normally.
//!
//! A token is only honoured for the account that enabled it, and answers for an unknown,
//! expired or foreign token are identical, so tokens cannot be probed across accounts.

use std::any::Any;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use zorg_proto::{Element, StanzaCondition};

use super::{failed, parse_h};
use crate::server::Server;
use crate::stream::io::XmlStream;

/// Resume requests that may wait for one session at once; more get `<failed/>`.
const PENDING: usize = 2;

/// A new connection offered to a hibernating (or still connected) session.
pub struct ResumeRequest {
    /// The new connection's `XmlStream<S>`, boxed as `Any` because the token map does not know
    /// the transport type; the session downcasts it to its own.
    pub stream: Box<dyn Any + Send>,
    /// The client's `h`: stanzas from the server it handled.
    pub h: Option<u32>,
    /// The new connection's client address.
    pub peer: std::net::SocketAddr,
    /// Where a refused stream goes back, with the `<failed/>` to send on it. Dropping this
    /// without sending means the session took the stream.
    pub refuse: oneshot::Sender<Refusal>,
}

impl std::fmt::Debug for ResumeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumeRequest").field("h", &self.h).finish()
    }
}

impl ResumeRequest {
    /// Gives the stream back to the negotiation with this `<failed/>`.
    pub fn refuse(self, failed: Element) {
        let _ = self.refuse.send(Refusal {
            stream: self.stream,
            failed,
        });
    }
}

/// A refused resumption: the stream, and what to tell the client.
pub struct Refusal {
    /// The stream, as it was offered.
    pub stream: Box<dyn Any + Send>,
    /// The `<failed/>` to send.
    pub failed: Element,
}

#[derive(Debug)]
struct Entry {
    /// Only this account may resume.
    bare: String,
    tx: mpsc::Sender<ResumeRequest>,
}

/// Resumable sessions by token. Sharded, touched only on enable, resume and session end.
#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<String, Entry>,
}

impl Registry {
    /// Registers a fresh token for a session of `bare`; resume requests arrive on the
    /// returned receiver.
    pub fn register(&self, token: &str, bare: &str) -> mpsc::Receiver<ResumeRequest> {
        let (tx, rx) = mpsc::channel(PENDING);
        self.map.insert(
            token.to_owned(),
            Entry {
                bare: bare.to_owned(),
                tx,
            },
        );
        rx
    }

    /// Forgets a token (the session ended).
    pub fn remove(&self, token: &str) {
        self.map.remove(token);
    }

    /// Number of resumable sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is resumable.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn lookup(&self, token: &str, bare: &str) -> Option<mpsc::Sender<ResumeRequest>> {
        self.map
            .get(token)
            .filter(|e| e.bare == bare)
            .map(|e| e.tx.clone())
    }
}

/// Handles `<resume/>` from a client authenticated as `bare` before binding. `None` when the
/// stream was handed to the resumed session (or is gone); otherwise the stream comes back
/// after `<failed/>` was sent on it, and the client may bind.
pub async fn negotiate<S>(
    server: &Arc<Server>,
    mut s: XmlStream<S>,
    bare: &str,
    el: &Element,
    peer: std::net::SocketAddr,
) -> Option<XmlStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let token = el.attr("previd").unwrap_or_default();
    let h = match el.attr("h") {
        None => None,
        Some(_) => match parse_h(el) {
            Some(h) => Some(h),
            None => {
                s.queue(&failed(StanzaCondition::BadRequest, None));
                s.flush().await.ok()?;
                return Some(s);
            }
        },
    };
    let Some(tx) = server.router.resumable.lookup(token, bare) else {
        tracing::debug!(account = %bare, "resume with an unknown or expired token");
        s.queue(&failed(StanzaCondition::ItemNotFound, None));
        s.flush().await.ok()?;
        return Some(s);
    };
    let (refuse, refused) = oneshot::channel();
    let req = ResumeRequest {
        stream: Box::new(s),
        h,
        peer,
        refuse,
    };
    let back = match tx.try_send(req) {
        Ok(()) => match refused.await {
            Ok(r) => r,
            // The session took the stream.
            Err(_) => return None,
        },
        // The session ended (or has resumes pending): as if the token were unknown.
        Err(e) => {
            let req = e.into_inner();
            Refusal {
                stream: req.stream,
                failed: failed(StanzaCondition::ItemNotFound, None),
            }
        }
    };
    let mut s = *back.stream.downcast::<XmlStream<S>>().ok()?;
    s.queue(&back.failed);
    s.flush().await.ok()?;
    Some(s)
}
