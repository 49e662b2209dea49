//! XEP-0198 Stream Management for client sessions: acknowledgement counting in both
//! directions, the bounded queue of stanzas the client has not acknowledged, and the nonzas
//! (`<enable/>`, `<r/>`, `<a/>`) as the bound session sees them. Resumption (the token map and
//! the hand-over of a new connection to a waiting session) lives in [`resume`].
//!
//! A session without `<enable/>` has no [`Sm`] at all (an `Option<Box<Sm>>` in the session),
//! so it pays nothing on the message path.
//!
//! Counts are `u32` and wrap at 2^32 as §4 asks; every comparison goes through
//! `wrapping_sub`.

pub mod resume;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;
use zorg_proto::{Element, StanzaCondition, ns};

use crate::server::Server;

/// Request an acknowledgement (`<r/>`) once this many stanzas are unacknowledged...
pub const REQUEST_EVERY: usize = 5;

/// ...or this long after the first unacknowledged stanza was written, whichever comes first.
pub const REQUEST_AFTER: Duration = Duration::from_secs(2);

/// A stanza written to the client (or collected for it while it was away) and not yet
/// acknowledged. The element is the one routed to the session: nothing is copied to keep it.
#[derive(Debug)]
pub struct Unacked {
    /// The stanza.
    pub el: Box<Element>,
    /// When the session first got it (Unix milliseconds), for the XEP-0203 stamp added when it
    /// is retransmitted after a resume.
    pub queued_ms: i64,
    /// Set for a message replayed from the offline store: its row there, deleted only once
    /// the client acknowledged it (and left in place if it never does).
    pub offline_seq: Option<i64>,
    /// What it holds in memory (`Element::memory_size`), for the byte bound.
    bytes: usize,
}

/// Stream Management state of one session.
#[derive(Debug)]
pub struct Sm {
    /// Stanzas handled from the client, mod 2^32 (the `h` the server reports).
    pub inbound: u32,
    /// The last `h` the client reported: stanzas from the server it has handled.
    acked: u32,
    /// Written (or collected) and not acknowledged, oldest first.
    unacked: VecDeque<Unacked>,
    /// Past this many unacknowledged stanzas the session is closed (`[c2s] max_unacked`).
    max_unacked: usize,
    /// ...or past this many bytes held by them (`[c2s] max_unacked_bytes`).
    max_bytes: usize,
    /// Bytes held by the unacknowledged stanzas.
    bytes: usize,
    /// The highest offline-store seq among the stanzas acknowledged so far and not yet
    /// deleted from the store (see [`Sm::take_acked_offline`]).
    acked_offline: Option<i64>,
    /// How many offline-store rows were acknowledged since the last take.
    acked_offline_rows: u32,
    /// The resumption token (`<enabled id=…/>`), when the session is resumable.
    pub id: Option<String>,
    /// How long the session waits for a resume after its connection broke.
    pub resume_timeout: Duration,
    /// When an `<r/>` was sent that has not been answered yet: one request at a time, and an
    /// unanswered one tells that the connection is dead.
    pub requested: Option<Instant>,
    /// When the oldest stanza not covered by a request was written (for [`REQUEST_AFTER`]).
    pub first_unrequested: Option<Instant>,
}

/// `<a h=…/>` acknowledged more stanzas than the server sent (§4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooHigh {
    /// What the client claimed.
    pub h: u32,
    /// What the server sent.
    pub sent: u32,
}

impl TooHigh {
    /// The stream error for it: `undefined-condition` with `<handled-count-too-high/>` (§4).
    pub fn stream_error_bytes(&self) -> Vec<u8> {
        let app = Element::new("handled-count-too-high", ns::SM)
            .with_attr("h", self.h.to_string())
            .with_attr("send-count", self.sent.to_string());
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(
            b"<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>",
        );
        app.write_to(&mut out, ns::CLIENT);
        out.extend_from_slice(b"</stream:error>");
        out
    }
}

impl Sm {
    /// Fresh state after `<enable/>`.
    pub fn new(max_unacked: usize) -> Sm {
        Sm {
            inbound: 0,
            acked: 0,
            unacked: VecDeque::new(),
            max_unacked,
            max_bytes: usize::MAX,
            bytes: 0,
            acked_offline: None,
            acked_offline_rows: 0,
            id: None,
            resume_timeout: Duration::ZERO,
            requested: None,
            first_unrequested: None,
        }
    }

    /// Counts one stanza handled from the client.
    pub fn handled(&mut self) {
        self.inbound = self.inbound.wrapping_add(1);
    }

    /// Stanzas sent (or collected) so far, mod 2^32.
    pub fn sent(&self) -> u32 {
        // The queue is bounded far below 2^32, so the cast loses nothing.
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Number of unacknowledged stanzas.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Bounds the memory the unacknowledged stanzas may hold.
    pub fn limit_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }

    /// Whether the queue is over its bound (in stanzas or bytes): the session must end.
    pub fn over_limit(&self) -> bool {
        self.unacked.len() > self.max_unacked || self.bytes > self.max_bytes
    }

    /// Keeps a stanza that was just written (or collected while away) until it is acknowledged.
    /// The caller checks [`Sm::over_limit`] afterwards.
    pub fn push(&mut self, el: Box<Element>, now: Instant) {
        self.push_from(el, now, None);
    }

    /// Like [`Sm::push`] for a message replayed from the offline store row `seq`.
    pub fn push_offline(&mut self, el: Box<Element>, now: Instant, seq: i64) {
        self.push_from(el, now, Some(seq));
    }

    fn push_from(&mut self, el: Box<Element>, now: Instant, offline_seq: Option<i64>) {
        if self.first_unrequested.is_none() && self.requested.is_none() {
            self.first_unrequested = Some(now);
        }
        let bytes = el.memory_size();
        self.bytes += bytes;
        self.unacked.push_back(Unacked {
            el,
            queued_ms: now_ms(),
            offline_seq,
            bytes,
        });
    }

    /// The client handled `h` stanzas in total: forget those. Errors when `h` is more than
    /// was sent.
    pub fn ack(&mut self, h: u32) -> Result<(), TooHigh> {
        let n = h.wrapping_sub(self.acked) as usize;
        if n > self.unacked.len() {
            return Err(TooHigh {
                h,
                sent: self.sent(),
            });
        }
        for u in self.unacked.drain(..n) {
            self.bytes -= u.bytes;
            if u.offline_seq.is_some() {
                self.acked_offline = u.offline_seq.max(self.acked_offline);
                self.acked_offline_rows += 1;
            }
        }
        self.acked = h;
        Ok(())
    }

    /// The highest offline-store seq acknowledged since the last call: the rows through it may
    /// be deleted now.
    pub fn take_acked_offline(&mut self) -> Option<i64> {
        self.take_acked_offline_if(1)
    }

    /// Like [`Sm::take_acked_offline`], once at least `rows` rows were acknowledged: deletes
    /// are batched while a replay goes on.
    pub fn take_acked_offline_if(&mut self, rows: u32) -> Option<i64> {
        if self.acked_offline_rows < rows {
            return None;
        }
        self.acked_offline_rows = 0;
        self.acked_offline.take()
    }

    /// An `<a/>` arrived: the outstanding request is answered.
    pub fn answered(&mut self) {
        self.requested = None;
        self.first_unrequested = None;
    }

    /// Whether to send `<r/>` now, given what is unacknowledged.
    pub fn should_request(&self, now: Instant) -> bool {
        self.requested.is_none()
            && !self.unacked.is_empty()
            && (self.unacked.len() >= REQUEST_EVERY
                || self
                    .first_unrequested
                    .is_some_and(|t| now >= t + REQUEST_AFTER))
    }

    /// When the next time-based `<r/>` is due, if any.
    pub fn request_due(&self) -> Option<Instant> {
        match (self.requested, self.first_unrequested) {
            (None, Some(t)) if !self.unacked.is_empty() => Some(t + REQUEST_AFTER),
            _ => None,
        }
    }

    /// Records that `<r/>` was written.
    pub fn mark_requested(&mut self, now: Instant) {
        self.requested = Some(now);
        self.first_unrequested = None;
    }

    /// Everything unacknowledged, oldest first, for retransmission after a resume: messages
    /// get a XEP-0203 stamp of when the session first got them (§6 suggests it) unless
    /// they already carry one from this server.
    pub fn for_retransmit(&mut self, domain: &str) -> impl Iterator<Item = &Element> {
        for u in self.unacked.iter_mut() {
            if u.el.name() == "message" && !u.el.has_child("delay", ns::DELAY) {
                u.el.push_child(delay(domain, u.queued_ms));
            }
        }
        // A fresh request follows the retransmission.
        self.requested = None;
        self.first_unrequested = (!self.unacked.is_empty()).then(Instant::now);
        self.unacked.iter().map(|u| &*u.el)
    }

    /// Empties the queue (when the session ends for good).
    pub fn take_unacked(&mut self) -> VecDeque<Unacked> {
        self.bytes = 0;
        std::mem::take(&mut self.unacked)
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `<delay xmlns='urn:xmpp:delay' from=domain stamp=…/>` for a Unix-millisecond time.
fn delay(domain: &str, ms: i64) -> Element {
    let stamp = crate::modules::datetime(ms);
    Element::new("delay", ns::DELAY)
        .with_attr("from", domain)
        .with_attr("stamp", stamp)
}

/// `<enabled/>`, resumable when `id` is given, with the resume timeout in seconds as `max`.
pub fn enabled(id: Option<&str>, max: Duration) -> Element {
    let mut e = Element::new("enabled", ns::SM);
    if let Some(id) = id {
        e.set_attr("id", id);
        e.set_attr("resume", "true");
        e.set_attr("max", max.as_secs().to_string());
    }
    e
}

/// `<failed/>` with a stanza error condition and, when known, the server's inbound count.
pub fn failed(condition: StanzaCondition, h: Option<u32>) -> Element {
    let mut e = Element::new("failed", ns::SM);
    if let Some(h) = h {
        e.set_attr("h", h.to_string());
    }
    e.push_child(Element::new(condition.as_str(), ns::STANZA_ERRORS));
    e
}

/// `<a h=…/>`.
pub fn answer(h: u32) -> Element {
    Element::new("a", ns::SM).with_attr("h", h.to_string())
}

/// `<r/>` as bytes, written often enough to skip building an element.
pub const REQUEST: &[u8] = b"<r xmlns='urn:xmpp:sm:3'/>";

/// Parses an `h` attribute (an unsigned 32-bit count).
pub fn parse_h(el: &Element) -> Option<u32> {
    el.attr("h").and_then(|h| h.parse().ok())
}

/// Whether `<enable resume='true'/>` (or `'1'`, §5).
pub fn wants_resume(el: &Element) -> bool {
    matches!(el.attr("resume"), Some("true" | "1"))
}

/// The resume timeout for a session: the client's `max` if it asked for less than the
/// configured one.
pub fn resume_timeout(server: &Server, enable: &Element) -> Duration {
    let configured = server.config.c2s.resume_timeout.get();
    match enable.attr("max").and_then(|m| m.parse::<u64>().ok()) {
        Some(m) if m > 0 => configured.min(Duration::from_secs(m)),
        _ => configured,
    }
}

/// A message was collected for a session of `bare` whose connection is broken (it
/// hibernates, waiting for a resume): when no session of the account is connected, its phones
/// are woken with a XEP-0357 notification (which never waits).
pub fn hibernating_message(server: &Arc<Server>, bare: &str, msg: &zorg_proto::Element) {
    tracing::debug!(account = %bare, "message queued for a hibernating session");
    if server
        .router
        .sessions(bare)
        .iter()
        .all(|h| h.state.is_hibernating())
    {
        crate::modules::push::notify(server, bare, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Box<Element> {
        Box::new(Element::new("message", ns::CLIENT).with_attr("id", i.to_string()))
    }

    #[test]
    fn acks_remove_from_the_front() {
        let now = Instant::now();
        let mut sm = Sm::new(10);
        for i in 0..4 {
            sm.push(msg(i), now);
        }
        assert_eq!(sm.sent(), 4);
        sm.ack(3).unwrap();
        assert_eq!(sm.unacked_len(), 1);
        // Acknowledging the same count again is harmless.
        sm.ack(3).unwrap();
        assert_eq!(
            sm.ack(5),
            Err(TooHigh { h: 5, sent: 4 }),
            "more than was sent"
        );
        sm.ack(4).unwrap();
        assert_eq!(sm.unacked_len(), 0);
    }

    #[test]
    fn counts_wrap_at_2_pow_32() {
        let now = Instant::now();
        let mut sm = Sm::new(10);
        sm.acked = u32::MAX - 1;
        for i in 0..3 {
            sm.push(msg(i), now);
        }
        assert_eq!(sm.sent(), 1);
        sm.ack(u32::MAX).unwrap();
        assert_eq!(sm.unacked_len(), 2);
        sm.ack(1).unwrap();
        assert_eq!(sm.unacked_len(), 0);
        assert!(sm.ack(2).is_err());
        sm.inbound = u32::MAX;
        sm.handled();
        assert_eq!(sm.inbound, 0);
    }

    #[test]
    fn requests_after_a_few_stanzas_or_a_while() {
        let now = Instant::now();
        let mut sm = Sm::new(100);
        sm.push(msg(0), now);
        assert!(!sm.should_request(now));
        assert!(sm.should_request(now + REQUEST_AFTER));
        for i in 1..REQUEST_EVERY as u32 {
            sm.push(msg(i), now);
        }
        assert!(sm.should_request(now));
        sm.mark_requested(now);
        assert!(
            !sm.should_request(now + REQUEST_AFTER * 10),
            "one at a time"
        );
        sm.ack(5).unwrap();
        sm.answered();
        assert_eq!(sm.request_due(), None);
    }

    #[test]
    fn acknowledged_offline_rows_are_reported_once() {
        let now = Instant::now();
        let mut sm = Sm::new(10);
        sm.push_offline(msg(0), now, 7);
        sm.push(msg(1), now);
        sm.push_offline(msg(2), now, 9);
        sm.ack(1).unwrap();
        assert_eq!(sm.take_acked_offline(), Some(7));
        assert_eq!(sm.take_acked_offline(), None);
        sm.ack(2).unwrap();
        assert_eq!(sm.take_acked_offline(), None, "a live stanza");
        sm.ack(3).unwrap();
        assert_eq!(sm.take_acked_offline(), Some(9));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let now = Instant::now();
        let mut sm = Sm::new(100);
        sm.limit_bytes(4096);
        let big = || {
            Box::new(
                Element::new("message", ns::CLIENT)
                    .with_child(Element::new("body", ns::CLIENT).with_text("x".repeat(3000))),
            )
        };
        sm.push(big(), now);
        assert!(!sm.over_limit());
        sm.push(big(), now);
        assert!(sm.over_limit());
        sm.ack(1).unwrap();
        assert!(!sm.over_limit(), "acknowledged bytes are released");
    }

    #[test]
    fn the_queue_is_bounded() {
        let now = Instant::now();
        let mut sm = Sm::new(2);
        sm.push(msg(0), now);
        sm.push(msg(1), now);
        assert!(!sm.over_limit());
        sm.push(msg(2), now);
        assert!(sm.over_limit());
    }

    #[test]
    fn retransmitted_messages_get_a_delay_stamp_once() {
        let now = Instant::now();
        let mut sm = Sm::new(10);
        sm.push(msg(0), now);
        sm.push(
            Box::new(Element::new("presence", ns::CLIENT)),
            Instant::now(),
        );
        let out: Vec<String> = sm
            .for_retransmit("x")
            .map(|e| e.to_xml(ns::CLIENT))
            .collect();
        assert!(out[0].contains("urn:xmpp:delay"), "{}", out[0]);
        assert!(!out[1].contains("delay"), "{}", out[1]);
        let again: Vec<usize> = sm
            .for_retransmit("x")
            .map(|e| e.children().count())
            .collect();
        assert_eq!(again, [1, 0]);
    }

    #[test]
    fn too_high_error_names_the_counts() {
        let b = TooHigh { h: 9, sent: 3 }.stream_error_bytes();
        let s = String::from_utf8(b).unwrap();
        assert_eq!(
            s,
            "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <handled-count-too-high xmlns='urn:xmpp:sm:3' h='9' send-count='3'/></stream:error>"
        );
    }

    #[test]
    fn nonzas() {
        assert_eq!(
            enabled(Some("t"), Duration::from_secs(300)).to_xml(ns::CLIENT),
            "<enabled xmlns='urn:xmpp:sm:3' id='t' resume='true' max='300'/>"
        );
        assert_eq!(
            failed(StanzaCondition::ItemNotFound, Some(3)).to_xml(ns::CLIENT),
            "<failed xmlns='urn:xmpp:sm:3' h='3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
        );
        assert_eq!(
            answer(7).to_xml(ns::CLIENT),
            "<a xmlns='urn:xmpp:sm:3' h='7'/>"
        );
    }
}
