//! The session's state across connections ([`Live`]) and the loop of one connection: read the
//! client's stanzas and nonzas, write what is routed to it, pings, keepalives, XEP-0198
//! acknowledgement requests, and the XEP-0352 filter on the way out.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zorg_proto::{Element, Frame, StanzaCondition, StreamCondition, StreamError, ns};

use super::{AfterFlush, Ctx, End, RELEASE_AFTER, SessionData, ctx_domain, inbound};
use crate::modules::csi::Csi;
use crate::modules::message;
use crate::router::Outbound;
use crate::server::Server;
use crate::sm::resume::ResumeRequest;
use crate::sm::{self, Sm};
use crate::storage::OfflineStore;
use crate::stream::io::{ReadError, XmlStream};

/// Everything a session owns besides its connection, so that it survives a broken connection
/// when resumable.
pub(super) struct Live {
    pub(super) server: Arc<Server>,
    pub(super) sess: SessionData,
    /// Stanzas routed to this session.
    pub(super) rx: mpsc::Receiver<Outbound>,
    /// XEP-0198 state, once the client enabled it (boxed: most sessions never do... yet).
    pub(super) sm: Option<Box<Sm>>,
    /// Resume requests for this session, when it is resumable.
    pub(super) resume_rx: Option<mpsc::Receiver<ResumeRequest>>,
    /// A resume was accepted: answer `<resumed/>` on the new connection first.
    pub(super) resume_pending: bool,
    /// XEP-0352 state, once the client sent `<inactive/>`.
    pub(super) csi: Option<Box<Csi>>,
    /// `csi` was made inactive by the server for a hibernation, not by the client.
    pub(super) csi_while_away: bool,
    /// Stanzas for this session's own client from the handlers.
    to_self: Vec<Element>,
    after: Vec<AfterFlush>,
    shutdown: watch::Receiver<bool>,
    /// XEP-0198: an `<a/>` waiting for what it acknowledges to be on disk.
    ack_wait: Option<AckWait>,
    /// Another `<r/>` arrived while one was waiting: answer it too, with the newer count.
    ack_again: bool,
    /// The last `h` sent in an `<a/>`: a request with nothing handled since is answered at once.
    answered: Option<u32>,
}

/// An acknowledgement that may be sent once `durable` resolves.
pub(super) struct AckWait {
    h: u32,
    durable: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// How often a stalled message (see `message::Stalled`) is tried again.
const STALL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Most stored messages read from the offline store at once.
const OFFLINE_PAGE: u32 = 100;

/// Waits until everything this server was asked to store so far (archive rows, offline
/// pointers, audit records) is on disk: what a XEP-0198 acknowledgement may then cover. The
/// writers commit in groups, so this costs one group commit, shared with everyone else's.
pub(super) async fn durable(server: Arc<Server>) {
    let (stored, audited) = tokio::join!(server.storage.barrier(), server.audit.barrier());
    if stored.is_err() || audited.is_err() {
        tracing::debug!("a durability barrier ended without its writer (the server is stopping)");
    }
}

/// Waits for the pending acknowledgement, or forever when there is none.
async fn ack_ready(w: &mut Option<AckWait>) -> u32 {
    match w {
        Some(a) => {
            a.durable.as_mut().await;
            a.h
        }
        None => std::future::pending().await,
    }
}

/// Waits for a resume request, or forever when the session is not resumable.
pub(super) async fn next_resume(
    rx: &mut Option<mpsc::Receiver<ResumeRequest>>,
) -> Option<ResumeRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Live {
    pub(super) fn new(
        server: Arc<Server>,
        sess: SessionData,
        rx: mpsc::Receiver<Outbound>,
    ) -> Live {
        let shutdown = server.shutdown.clone();
        Live {
            server,
            sess,
            rx,
            sm: None,
            resume_rx: None,
            resume_pending: false,
            csi: None,
            csi_while_away: false,
            to_self: Vec::new(),
            after: Vec::new(),
            shutdown,
            ack_wait: None,
            ack_again: false,
            answered: None,
        }
    }

    /// Whether a broken connection leaves the session waiting for a resume.
    pub(super) fn resumable(&self) -> bool {
        self.resume_rx.is_some()
    }

    /// Whether a resume was accepted and not yet answered (and forgets it).
    pub(super) fn take_resume_pending(&mut self) -> bool {
        std::mem::take(&mut self.resume_pending)
    }

    /// Serves one connection until it ends.
    pub(super) async fn connected<S>(&mut self, s: &mut XmlStream<S>) -> End<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let server = self.server.clone();
        let idle = server.config.c2s.idle_timeout.get();
        let ping_timeout = server.config.c2s.ping_timeout.get();
        let keepalive = server.config.c2s.whitespace_keepalive.get();
        // Buffers are released once a session has been quiet for a moment, so that thousands
        // of idle sessions hold no read or write buffers (and busy ones do not reallocate per
        // stanza).
        let mut last_activity = Instant::now();
        let mut released = false;
        // Stands in for "never" in timers that are off (a disabled branch still builds its
        // future).
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        loop {
            let idle_at = match &self.sess.pending_ping {
                Some((_, sent)) => *sent + ping_timeout,
                None => s.last_read + idle,
            };
            let keepalive_at = s.last_write + keepalive;
            // XEP-0198: an unanswered request that says the connection is dead (mobile
            // networks drop connections without a word), or else a request due by time. One
            // timer for both: an idle session holds every timer of this loop.
            let sm_at = self.sm.as_ref().and_then(|m| match m.requested {
                Some(t) => Some(t + ping_timeout),
                None => m.request_due(),
            });
            self.settle_offline(false).await;
            let mut end = self.pump_offline(s).await;
            if let Some(e) = end {
                return e;
            }
            // A page of stored messages goes out now, not with the next event.
            if s.has_pending_writes() && self.sess.offline.is_some() {
                if let Some(m) = self.sm.as_mut()
                    && m.should_request(Instant::now())
                {
                    s.queue_raw(sm::REQUEST);
                    m.mark_requested(Instant::now());
                }
                if s.flush().await.is_err() {
                    return End::Gone;
                }
                self.after_flush().await;
            }
            let more_offline = self.offline_room().is_some();
            tokio::select! {
                out = self.rx.recv() => match out {
                    Some(Outbound::Stanza(el)) => {
                        self.sess.handle.dequeued(&el);
                        end = self.emit(Some(s), el);
                        // Drain what else is queued so that one write carries it all.
                        for _ in 0..64 {
                            if end.is_some() {
                                break;
                            }
                            match self.rx.try_recv() {
                                Ok(Outbound::Stanza(el)) => {
                                    self.sess.handle.dequeued(&el);
                                    end = self.emit(Some(s), el);
                                }
                                Ok(Outbound::Close(e)) => end = Some(End::Error(*e)),
                                Err(_) => break,
                            }
                        }
                    }
                    Some(Outbound::Close(e)) => end = Some(End::Error(*e)),
                    None => end = Some(End::Gone),
                },
                // While a message waits for room at its recipient nothing more is read from
                // this client: the flood slows down to the reader's pace.
                _ = tokio::time::sleep(STALL_POLL), if self.sess.stalled.is_some() => {
                    end = self.retry_stalled(s).await;
                },
                frame = s.next_frame(), if self.sess.stalled.is_none() => match frame {
                    Ok(Frame::Stanza(el)) => end = self.client_element(s, el).await,
                    Ok(Frame::StreamClose) => end = Some(End::ClientClosed),
                    Ok(Frame::StreamOpen(_)) => end = Some(End::Error(StreamError::new(StreamCondition::BadFormat))),
                    Err(ReadError::Framing(e)) => end = Some(End::Error(StreamError::from(&e))),
                    Err(ReadError::Closed) | Err(ReadError::Io(_)) => end = Some(End::Gone),
                },
                _ = tokio::time::sleep_until(idle_at), if !idle.is_zero() => {
                    if self.sess.pending_ping.is_some() {
                        end = Some(End::Error(StreamError::new(StreamCondition::ConnectionTimeout)));
                    } else {
                        // XEP-0199 §4.2: is the client still there?
                        let handle = &self.sess.handle;
                        let id = format!("ping-{}", &crate::storage::new_id()[..8]);
                        let ping = Element::new("iq", ns::CLIENT)
                            .with_attr("from", ctx_domain(handle))
                            .with_attr("to", handle.full.as_str())
                            .with_attr("id", id.as_str())
                            .with_attr("type", "get")
                            .with_child(Element::new("ping", ns::PING));
                        self.sess.pending_ping = Some((id, Instant::now()));
                        end = self.emit_owned(s, ping);
                    }
                },
                _ = tokio::time::sleep_until(keepalive_at), if !keepalive.is_zero() => {
                    s.queue_raw(b" ");
                },
                _ = tokio::time::sleep_until(sm_at.unwrap_or(far)), if sm_at.is_some() => {
                    if self.sm.as_ref().is_some_and(|m| m.requested.is_some()) {
                        tracing::debug!(session = %self.sess.handle.full, "no answer to an ack request; the connection is considered gone");
                        end = Some(End::Gone);
                    }
                    // Otherwise a request is due: it is written below.
                },
                req = next_resume(&mut self.resume_rx) => {
                    if let Some(new) = req.and_then(|r| self.take::<S>(r)) {
                        end = Some(End::Resumed(new));
                    }
                },
                _ = tokio::time::sleep_until(last_activity + RELEASE_AFTER), if !released => {
                    if self.rx.is_empty() {
                        s.release();
                        // Both are empty between stanzas; give their capacity back too.
                        self.to_self = Vec::new();
                        self.after = Vec::new();
                        released = true;
                    }
                    continue;
                },
                _ = self.shutdown.changed() => end = Some(End::Error(StreamError::new(StreamCondition::SystemShutdown))),
                h = ack_ready(&mut self.ack_wait) => {
                    self.ack_wait = None;
                    s.queue(&sm::answer(h));
                    self.answered = Some(h);
                    if std::mem::take(&mut self.ack_again) {
                        self.request_ack(s);
                    }
                },
                // The replay of stored messages goes on page by page while there is room:
                // paced by the writes to the connection, and by acknowledgements with XEP-0198.
                _ = std::future::ready(()), if more_offline => {},
            }
            last_activity = Instant::now();
            released = false;
            if end.is_none()
                && let Some(m) = self.sm.as_mut()
                && m.should_request(last_activity)
            {
                s.queue_raw(sm::REQUEST);
                m.mark_requested(last_activity);
            }
            if s.has_pending_writes() {
                if s.flush().await.is_err() {
                    return End::Gone;
                }
                self.after_flush().await;
            }
            if let Some(e) = end {
                return e;
            }
        }
    }

    async fn after_flush(&mut self) {
        for a in self.after.drain(..) {
            match a {
                AfterFlush::DeleteOffline(seq) => {
                    let bare = &self.sess.handle.bare;
                    if let Err(e) =
                        Box::pin(self.server.storage.delete_offline_through(bare, seq)).await
                    {
                        tracing::warn!(error = %e, "could not delete delivered offline messages; they will be delivered again");
                    }
                }
            }
        }
    }

    /// XEP-0198: answers `<r/>` once what the answer covers is durable (at once when nothing
    /// was handled since the last answer).
    fn request_ack<S>(&mut self, s: &mut XmlStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(m) = &self.sm else { return };
        if self.ack_wait.is_some() {
            self.ack_again = true;
            return;
        }
        let h = m.inbound;
        if self.answered == Some(h) {
            s.queue(&sm::answer(h));
            return;
        }
        self.ack_wait = Some(AckWait {
            h,
            durable: Box::pin(durable(self.server.clone())),
        });
    }

    /// How many stored messages the replay may write now: a page without XEP-0198; with it,
    /// what keeps the unacknowledged queue at most half full (the other half is for live
    /// traffic), once at least half of that window is free, so that the store is read in
    /// pages rather than a few rows at a time.
    fn offline_room(&self) -> Option<u32> {
        self.sess.offline?;
        let Some(m) = &self.sm else {
            return Some(OFFLINE_PAGE);
        };
        let window = (self.server.config.c2s.max_unacked as usize / 2).max(1);
        let room = window.saturating_sub(m.unacked_len());
        (room > 0 && room * 2 >= window).then(|| room.min(OFFLINE_PAGE as usize) as u32)
    }

    /// Writes the next page of stored messages, when there is room for it.
    async fn pump_offline<S>(&mut self, s: &mut XmlStream<S>) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let room = self.offline_room()?;
        let mut replay = self.sess.offline?;
        let full = self.sess.handle.full.clone();
        let page = Box::pin(message::offline_page(
            &self.server,
            &full,
            &mut replay,
            room,
        ))
        .await;
        let page = match page {
            Ok(Some(p)) => p,
            Ok(None) => {
                self.sess.offline = None;
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, session = %full, "reading offline messages failed; they stay stored");
                self.sess.offline = None;
                return None;
            }
        };
        self.sess.offline = Some(replay);
        let now = Instant::now();
        let mut last = None;
        for (seq, el) in page {
            s.queue(&el);
            last = Some(seq);
            if let Some(m) = self.sm.as_mut() {
                m.push_offline(Box::new(el), now, seq);
            }
        }
        match self.sm.as_mut() {
            // Without acknowledgements, written is as good as it gets.
            None => {
                if let Some(seq) = last {
                    self.after.push(AfterFlush::DeleteOffline(seq));
                }
                None
            }
            Some(m) if m.over_limit() => Some(End::Error(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("too many unacknowledged stanzas"),
            )),
            Some(_) => None,
        }
    }

    /// Deletes the stored messages the client acknowledged: in batches while the replay goes
    /// on, and all of them once it is over or the session ends (`all`).
    pub(super) async fn settle_offline(&mut self, all: bool) {
        let Some(m) = self.sm.as_mut() else { return };
        let all = all || self.sess.offline.is_none();
        let Some(seq) = m.take_acked_offline_if(if all { 1 } else { OFFLINE_PAGE }) else {
            return;
        };
        let bare = &self.sess.handle.bare;
        if let Err(e) = Box::pin(self.server.storage.delete_offline_through(bare, seq)).await {
            tracing::warn!(error = %e, "could not delete acknowledged offline messages; they will be delivered again");
        }
    }

    /// A top-level element from the client: an SM or CSI nonza, or a stanza for the handlers.
    async fn client_element<S>(&mut self, s: &mut XmlStream<S>, el: Element) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // Nonzas first: they are not stanzas and are not counted (XEP-0198 §4).
        match el.ns() {
            ns::SM => return self.sm_nonza(s, &el),
            ns::CSI => return self.csi_nonza(s, &el),
            _ => {}
        }
        let mut ctx = Ctx {
            server: &self.server,
            sess: &mut self.sess,
            to_self: &mut self.to_self,
            after_flush: &mut self.after,
        };
        if let Err(e) = inbound(&mut ctx, el).await {
            return Some(End::Error(e));
        }
        // A stalled message is counted once it was delivered or bounced: an acknowledgement
        // must not cover a message that is still only in this session's hands.
        if self.sess.stalled.is_none()
            && let Some(m) = self.sm.as_mut()
        {
            m.handled();
        }
        self.write_replies(s)
    }

    /// Tries the stalled message again (see `message::Stalled`).
    async fn retry_stalled<S>(&mut self, s: &mut XmlStream<S>) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let st = self.sess.stalled.take()?;
        self.sess.stalled =
            Box::pin(message::retry_stalled(&self.server, st, &mut self.to_self)).await;
        if self.sess.stalled.is_none()
            && let Some(m) = self.sm.as_mut()
        {
            m.handled();
        }
        self.write_replies(s)
    }

    /// Writes what the handlers queued for this client.
    fn write_replies<S>(&mut self, s: &mut XmlStream<S>) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut replies = std::mem::take(&mut self.to_self);
        let mut end = None;
        for el in replies.drain(..) {
            if end.is_none() {
                end = self.emit_owned(s, el);
            }
        }
        // Keep the capacity for the next stanza.
        self.to_self = replies;
        end
    }

    /// XEP-0198 nonzas on a bound stream.
    fn sm_nonza<S>(&mut self, s: &mut XmlStream<S>, el: &Element) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match el.name() {
            "enable" => {
                if self.sm.is_some() {
                    s.queue(&sm::failed(StanzaCondition::UnexpectedRequest, None));
                    return None;
                }
                let c2s = &self.server.config.c2s;
                let mut m = Box::new(Sm::new(c2s.max_unacked as usize));
                m.limit_bytes(c2s.max_unacked_bytes as usize);
                let timeout = sm::resume_timeout(&self.server, el);
                let id = if sm::wants_resume(el) && !timeout.is_zero() {
                    let id = crate::storage::new_id();
                    let bare = &self.sess.handle.bare;
                    self.resume_rx = Some(self.server.router.resumable.register(&id, bare));
                    m.resume_timeout = timeout;
                    Some(id)
                } else {
                    None
                };
                s.queue(&sm::enabled(id.as_deref(), timeout));
                m.id = id;
                self.sm = Some(m);
                None
            }
            "r" => {
                // Before <enable/> there is nothing to count; ignored.
                self.request_ack(s);
                None
            }
            "a" => {
                let m = self.sm.as_mut()?;
                let Some(h) = sm::parse_h(el) else {
                    return Some(End::Error(
                        StreamError::new(StreamCondition::BadFormat)
                            .with_text("<a/> needs an 'h' count"),
                    ));
                };
                m.answered();
                match m.ack(h) {
                    Ok(()) => None,
                    Err(too_high) => {
                        tracing::info!(session = %self.sess.handle.full, h, sent = too_high.sent, "client acknowledged more than was sent");
                        Some(End::Raw(too_high.stream_error_bytes()))
                    }
                }
            }
            "resume" => {
                // Only instead of binding.
                s.queue(&sm::failed(StanzaCondition::UnexpectedRequest, None));
                None
            }
            _ => Some(End::Error(StreamError::new(
                StreamCondition::UnsupportedStanzaType,
            ))),
        }
    }

    /// XEP-0352 `<active/>` and `<inactive/>`.
    fn csi_nonza<S>(&mut self, s: &mut XmlStream<S>, el: &Element) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match el.name() {
            "inactive" => {
                self.csi.get_or_insert_default().inactive = true;
                None
            }
            "active" => {
                let held = match self.csi.take() {
                    Some(mut c) => c.take(),
                    None => return None,
                };
                let mut end = None;
                for h in held {
                    if end.is_none() {
                        end = self.write(Some(s), h);
                    }
                }
                end
            }
            _ => Some(End::Error(StreamError::new(
                StreamCondition::UnsupportedStanzaType,
            ))),
        }
    }

    /// A stanza for the client, handlers' replies included: written now (or collected while
    /// hibernating, `s` = `None`), unless CSI holds it back.
    pub(super) fn emit_owned<S>(&mut self, s: &mut XmlStream<S>, el: Element) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.sm.is_none() && self.csi.is_none() {
            // The common case: nothing to keep, nothing to hold.
            s.queue(&el);
            return None;
        }
        self.emit(Some(s), Box::new(el))
    }

    /// Like [`Live::emit_owned`] for a stanza routed to the session (already boxed).
    pub(super) fn emit<S>(
        &mut self,
        s: Option<&mut XmlStream<S>>,
        el: Box<Element>,
    ) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(csi) = self.csi.as_mut() else {
            return self.write(s, el);
        };
        let (held, now) = match csi.offer(el) {
            Ok(()) if !csi.is_full() => return None,
            Ok(()) => (csi.take(), None),
            Err(el) => (csi.take(), Some(el)),
        };
        let mut s = s;
        let mut end = None;
        for h in held.into_iter().chain(now) {
            if end.is_none() {
                end = self.write(s.as_deref_mut(), h);
            }
        }
        end
    }

    /// Writes a stanza (when connected) and keeps it until acknowledged (with SM).
    pub(super) fn write<S>(
        &mut self,
        s: Option<&mut XmlStream<S>>,
        el: Box<Element>,
    ) -> Option<End<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(s) = s {
            s.queue(&el);
        }
        let m = self.sm.as_mut()?;
        m.push(el, Instant::now());
        if m.over_limit() {
            tracing::warn!(session = %self.sess.handle.full, "too many unacknowledged stanzas; closing the session");
            return Some(End::Error(
                StreamError::new(StreamCondition::PolicyViolation)
                    .with_text("too many unacknowledged stanzas"),
            ));
        }
        None
    }
}
