//! A session without a connection: hibernation while it waits for a XEP-0198 resume, taking
//! over a new connection, and the end of the session, where nothing that was not acknowledged
//! by the client is lost.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use super::live::{Live, next_resume};
use crate::modules::{csi, message, presence};
use crate::router::Outbound;
use crate::server::Server;
use crate::sm::resume::ResumeRequest;
use crate::sm::{self, TooHigh};
use crate::stream::io::XmlStream;

impl Live {
    /// Waits without a connection until a resume request brings one (`Some`), or the resume
    /// timeout passes, the session is replaced or the server shuts down (`None`: the session
    /// ends). What is routed to the session meanwhile is collected, bounded by
    /// `[c2s] max_unacked`.
    pub(super) async fn hibernate<S>(&mut self) -> Option<Box<XmlStream<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let timeout = self.sm.as_ref().map(|m| m.resume_timeout)?;
        let handle = self.sess.handle.clone();
        handle.state.set_hibernating(true);
        // Nobody reads presence updates now: hold and squash them as XEP-0352 does for an
        // inactive client, so that a large roster does not fill the queue while away.
        if self.csi.as_ref().is_none_or(|c| !c.inactive) {
            self.csi.get_or_insert_default().inactive = true;
            self.csi_while_away = true;
        }
        tracing::info!(session = %handle.full, secs = timeout.as_secs(), "connection lost; the session waits for a resume");
        let deadline = Instant::now() + timeout;
        // The connection may have broken just as the server began to stop.
        let mut shutdown = self.server.shutdown.clone();
        let stopping = *shutdown.borrow_and_update();
        let resumed = if stopping {
            None
        } else {
            loop {
                tokio::select! {
                    out = self.rx.recv() => match out {
                        Some(Outbound::Stanza(el)) => {
                            handle.dequeued(&el);
                            // Chat states and presence can wait; a real message may need to wake
                            // the device (XEP-0357, with the message at hand).
                            if el.name() == "message" && !csi::can_hold(&el) {
                                sm::hibernating_message(&self.server, &handle.bare, &el);
                            }
                            if self.emit::<S>(None, el).is_some() {
                                break None;
                            }
                        }
                        // Replaced by a new session with the same resource, or shutdown.
                        Some(Outbound::Close(_)) | None => break None,
                    },
                    req = next_resume(&mut self.resume_rx) => {
                        if let Some(s) = req.and_then(|r| self.take::<S>(r)) {
                            break Some(s);
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        tracing::info!(session = %handle.full, "resume timeout; the session ends");
                        break None;
                    },
                    _ = shutdown.changed() => break None,
                }
            }
        };
        handle.state.set_hibernating(false);
        resumed
    }

    /// Checks a resume request; takes its stream (the caller answers `<resumed/>` on it), or
    /// gives it back with `<failed/>`.
    pub(super) fn take<S>(&mut self, req: ResumeRequest) -> Option<Box<XmlStream<S>>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(m) = self.sm.as_mut() else {
            req.refuse(sm::failed(StanzaCondition::ItemNotFound, None));
            return None;
        };
        if !req.stream.is::<XmlStream<S>>() {
            // Another transport (a WebSocket taking over a TCP session, say): not supported.
            req.refuse(sm::failed(
                StanzaCondition::FeatureNotImplemented,
                Some(m.inbound),
            ));
            return None;
        }
        if let Some(h) = req.h
            && let Err(TooHigh { h, sent }) = m.ack(h)
        {
            tracing::info!(session = %self.sess.handle.full, h, sent, "resume acknowledged more than was sent");
            let mut f = sm::failed(StanzaCondition::UndefinedCondition, Some(m.inbound));
            f.push_child(
                Element::new("handled-count-too-high", ns::SM)
                    .with_attr("h", h.to_string())
                    .with_attr("send-count", sent.to_string()),
            );
            req.refuse(f);
            return None;
        }
        let ResumeRequest { stream, peer, .. } = req;
        self.sess.peer = peer;
        // Dropping `refuse` tells the negotiation that the stream was taken.
        let s = stream.downcast::<XmlStream<S>>().ok()?;
        self.resume_pending = true;
        Some(s)
    }

    /// Answers `<resumed/>` on the new connection and retransmits what the client has not
    /// acknowledged, oldest first. Errors when the new connection broke already.
    pub(super) async fn resumed<S>(&mut self, s: &mut XmlStream<S>) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let domain = super::ctx_domain(&self.sess.handle).to_owned();
        if self.sm.is_none() {
            return Ok(());
        }
        // `h` tells the client which of its stanzas need not be sent again: only what is on
        // disk may be counted.
        super::live::durable(self.server.clone()).await;
        let Some(m) = self.sm.as_mut() else {
            return Ok(());
        };
        let mut r = Element::new("resumed", ns::SM).with_attr("h", m.inbound.to_string());
        if let Some(id) = &m.id {
            r.set_attr("previd", id.as_str());
        }
        s.queue(&r);
        let mut n = 0usize;
        for el in m.for_retransmit(&domain) {
            s.queue(el);
            n += 1;
        }
        // Then what was held back while away, unless the client itself said it is inactive.
        if std::mem::take(&mut self.csi_while_away) {
            let held = self.csi.take().map(|mut c| c.take()).unwrap_or_default();
            for el in held {
                // Bounded by the CSI buffer; the queue's own bound is checked on the next write.
                let _ = self.write(Some(&mut *s), el);
                n += 1;
            }
        }
        if n > 0
            && let Some(m) = self.sm.as_mut()
        {
            s.queue_raw(sm::REQUEST);
            m.mark_requested(Instant::now());
        }
        // A ping sent on the old connection will not be answered on this one.
        self.sess.pending_ping = None;
        let ev = crate::audit::Event::SessionBound {
            session: self.sess.handle.full.clone(),
            ip: self.sess.peer.ip(),
            resumed: true,
        };
        if self.server.audit.record(ev).await.is_err() {
            // Refused like a new binding would be: the client may try again later.
            return Err(std::io::Error::other("the resumption could not be audited"));
        }
        tracing::info!(session = %self.sess.handle.full, retransmitted = n, "session resumed");
        s.flush().await
    }

    /// The session ends for good: unbind, tell contacts it is gone, and send elsewhere what
    /// the client did not acknowledge (or never got) instead of dropping it.
    pub(super) async fn finish(mut self) {
        let server = self.server.clone();
        let handle = self.sess.handle.clone();
        if let Some(id) = self.sm.as_ref().and_then(|m| m.id.as_deref()) {
            server.router.resumable.remove(id);
        }
        // Connections that asked to resume just now learn that it is too late, and may bind.
        if let Some(mut rx) = self.resume_rx.take() {
            rx.close();
            while let Ok(req) = rx.try_recv() {
                req.refuse(sm::failed(StanzaCondition::ItemNotFound, None));
            }
        }
        server.router.unbind(&handle.bare, handle.conn_id);
        self.rx.close();
        presence::on_disconnect(&server, &mut self.sess).await;
        if let Some(st) = self.sess.stalled.take() {
            message::flush_stalled(&server, st).await;
        }
        // What the client acknowledged of its stored messages is deleted; what it did not
        // stays stored, for its next login (rerouting it would store it twice).
        self.settle_offline(true).await;
        // Oldest first: unacknowledged, then held back by CSI, then still queued.
        let mut requeued = 0;
        if let Some(mut m) = self.sm.take() {
            for u in m.take_unacked() {
                if u.offline_seq.is_none() {
                    requeued += undelivered(&server, *u.el).await;
                }
            }
        }
        if let Some(mut c) = self.csi.take() {
            for el in c.take() {
                requeued += undelivered(&server, *el).await;
            }
        }
        while let Ok(out) = self.rx.try_recv() {
            if let Outbound::Stanza(el) = out {
                handle.dequeued(&el);
                requeued += undelivered(&server, *el).await;
            }
        }
        let ev = crate::audit::Event::SessionUnbound {
            session: handle.full.clone(),
        };
        // The session is over either way; a refusal is logged by the audit handle.
        let _ = server.audit.record(ev).await;
        tracing::info!(session = %handle.full, requeued, "session ended");
    }
}

/// A stanza the client did not get (or did not acknowledge): messages go to the account's
/// other resources or offline storage, IQ requests are answered with an error for their
/// sender, presence is dropped (the contacts get unavailable presence anyway). Returns 1 for
/// a message rerouted, for the log.
async fn undelivered(server: &Arc<Server>, el: Element) -> usize {
    match el.name() {
        "message" => {
            // A carbon is a copy: its original reached the account's other session.
            if el
                .children()
                .any(|c| c.ns() == ns::CARBONS && matches!(c.name(), "received" | "sent"))
            {
                return 0;
            }
            message::reroute_undelivered(server, el).await;
            1
        }
        "iq" if matches!(el.attr("type"), Some("get" | "set")) => {
            let err = StanzaError::new(StanzaCondition::RecipientUnavailable)
                .with_text("the recipient's session ended before it answered");
            if let Some(reply) = err.reply_to(&el) {
                route_reply(server, reply);
            }
            0
        }
        _ => 0,
    }
}

/// Sends an error reply to the entity that sent the request: a local session or a remote
/// domain. Requests the server itself sent (pings, roster pushes) need no reply.
fn route_reply(server: &Arc<Server>, reply: Element) {
    let Some(to) = reply.attr("to").and_then(|t| Jid::new(t).ok()) else {
        return;
    };
    let domain = to.domain().as_str();
    if !server.serves(domain) {
        crate::federation::send(server, reply, domain);
        return;
    }
    let (Some(_), Some(res)) = (to.node(), to.resource()) else {
        return;
    };
    let bare = to.to_bare().to_string();
    if let Some(h) = server.router.session(&bare, res.as_str()) {
        let _ = server.router.deliver(&h, reply);
    }
}
