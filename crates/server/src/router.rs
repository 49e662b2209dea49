//! The router: which sessions are bound for which account, and delivery into their queues.
//!
//! Sessions are found through the router by JID, never by holding pointers to each other. The map
//! is sharded (`DashMap`), a lookup clones the few `Arc`s it needs and lets go of the shard before
//! anything is sent, and no lock is held across an `.await`.
//!
//! Delivery uses bounded queues and never waits: waiting would let two busy sessions that send
//! to each other block forever. A session's queue is bounded by count ([`SESSION_QUEUE`]) and
//! by the memory its stanzas hold ([`QueueBudget`]); one sender may hold at most a quarter of
//! either, so that a flood from one account cannot crowd out everyone else's messages to the
//! same recipient. A stanza that does not fit is handed back ([`Refused::Busy`]) and its sender
//! gets an error to retry later; the recipient, who is reading, stays connected. A client that
//! stops reading altogether is cut off by the write timeout and XEP-0198 bounds instead.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::mpsc;
use zorg_proto::{Element, StreamError};

/// Queue length per session. Stanzas beyond this are refused (see module docs).
pub const SESSION_QUEUE: usize = 1024;

/// Default memory the stanzas queued for one session may hold (`[limits] max_session_queue_bytes`).
pub const SESSION_QUEUE_BYTES: usize = 2 << 20;

/// What a session's task receives.
///
/// Boxed payloads keep this at 16 bytes: tokio's channel allocates its slots 32 at a time per
/// session up front, so the size of this enum is paid by every idle session.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza to write to the client.
    Stanza(Box<Element>),
    /// Close the stream with this error.
    Close(Box<StreamError>),
}

impl Outbound {
    /// Close the stream with this error.
    pub fn close(err: StreamError) -> Outbound {
        Outbound::Close(Box::new(err))
    }
}

/// Presence-related state of a bound session, shared with the router.
#[derive(Debug, Default)]
pub struct SessionState {
    priority: AtomicI32,
    available: AtomicBool,
    /// Requested the roster (RFC 6121 §2.1.6 "interested resource"): gets roster pushes.
    interested: AtomicBool,
    /// The last available presence broadcast by this session (for probes by other sessions).
    presence: std::sync::Mutex<Option<Element>>,
    /// XEP-0280: gets copies of the account's other conversations.
    carbons: AtomicBool,
    /// XEP-0198: the connection broke and the session waits for a resume; stanzas still queue
    /// for it, but nobody reads them now.
    hibernating: AtomicBool,
}

impl SessionState {
    /// Presence priority (RFC 6121 §4.7.2.3), -128..=127.
    pub fn priority(&self) -> i32 {
        self.priority.load(Ordering::Relaxed)
    }

    /// Whether the session has sent available presence ("available resource", RFC 6121 §1.3).
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Whether the session requested the roster and so receives roster pushes.
    pub fn is_interested(&self) -> bool {
        self.interested.load(Ordering::Relaxed)
    }

    /// Whether the session enabled Message Carbons (XEP-0280).
    pub fn carbons(&self) -> bool {
        self.carbons.load(Ordering::Relaxed)
    }

    /// Enables or disables Message Carbons for the session.
    pub fn set_carbons(&self, on: bool) {
        self.carbons.store(on, Ordering::Relaxed);
    }

    /// Whether the session hibernates (XEP-0198): bound, but without a connection. Code that
    /// wants to know whether the user is reachable right now (push notifications) treats an
    /// account whose sessions all hibernate as having no active session.
    pub fn is_hibernating(&self) -> bool {
        self.hibernating.load(Ordering::Relaxed)
    }

    /// Marks the session as hibernating or connected again.
    pub fn set_hibernating(&self, on: bool) {
        self.hibernating.store(on, Ordering::Relaxed);
    }

    /// Marks the session as an interested resource.
    pub fn set_interested(&self) {
        self.interested.store(true, Ordering::Relaxed);
    }

    /// Records the session's current broadcast presence; `None` for unavailable.
    pub fn set_presence(&self, presence: Option<(Element, i32)>) {
        let mut p = self
            .presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match presence {
            Some((el, prio)) => {
                self.priority.store(prio, Ordering::Relaxed);
                self.available.store(true, Ordering::Relaxed);
                *p = Some(el);
            }
            None => {
                self.available.store(false, Ordering::Relaxed);
                *p = None;
            }
        }
    }

    /// The last broadcast presence, if available.
    pub fn presence(&self) -> Option<Element> {
        self.presence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the stanzas queued for one session cost, in total and per sender, so that the queue is
/// bounded by memory and no sender holds more than a quarter of it.
#[derive(Debug)]
pub struct QueueBudget {
    /// Most bytes the queued stanzas may hold.
    max_bytes: usize,
    inner: std::sync::Mutex<Queued>,
}

#[derive(Debug, Default)]
struct Queued {
    bytes: usize,
    /// Stanzas and bytes queued per sender (hash of the sender's bare JID); entries go when
    /// they reach zero, so the map holds at most one entry per queued stanza.
    by_sender: HashMap<u64, (u32, usize)>,
}

impl QueueBudget {
    /// A budget of `max_bytes` for one session's queue.
    pub fn new(max_bytes: usize) -> QueueBudget {
        QueueBudget {
            max_bytes,
            inner: Default::default(),
        }
    }

    /// Charges a stanza; `false` (nothing charged) when it does not fit.
    fn charge(&self, sender: u64, bytes: usize) -> bool {
        let mut q = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.bytes + bytes > self.max_bytes {
            return false;
        }
        if sender != 0 {
            let (n, b) = q.by_sender.get(&sender).copied().unwrap_or((0, 0));
            if n as usize >= SESSION_QUEUE / 4 || b + bytes > self.max_bytes / 4 {
                return false;
            }
            q.by_sender.insert(sender, (n + 1, b + bytes));
        }
        q.bytes += bytes;
        true
    }

    /// Releases what [`QueueBudget::charge`] took for a stanza that left the queue.
    fn release(&self, sender: u64, bytes: usize) {
        let mut q = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.bytes = q.bytes.saturating_sub(bytes);
        if sender != 0
            && let std::collections::hash_map::Entry::Occupied(mut e) = q.by_sender.entry(sender)
        {
            let (n, b) = e.get_mut();
            *n = n.saturating_sub(1);
            *b = b.saturating_sub(bytes);
            if *n == 0 {
                e.remove();
            }
        }
    }

    /// Bytes queued now.
    pub fn bytes(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bytes
    }
}

/// Who sent a stanza, for the per-sender share of a queue: a hash of the bare JID in `from`;
/// 0 (no share applies) for stanzas from a server itself.
fn sender_key(el: &Element) -> u64 {
    let Some(from) = el.attr("from") else {
        return 0;
    };
    let bare = from.split_once('/').map_or(from, |(b, _)| b);
    if !bare.contains('@') {
        return 0;
    }
    // Fixed keys: the value only has to be the same when charged and released.
    let mut h = std::hash::DefaultHasher::new();
    h.write(bare.as_bytes());
    h.finish() | 1
}

/// Why a stanza was not queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The session is gone (it ended, or is ending): try another route.
    Gone,
    /// Its queue is full, or holds all that this sender may hold: the sender should wait.
    Busy,
}

/// A bound session as the router sees it.
#[derive(Debug)]
pub struct SessionHandle {
    /// Unique per connection; a replacement session with the same resource has another.
    pub conn_id: u64,
    /// Bare JID of the account.
    pub bare: String,
    /// The bound resource.
    pub resource: String,
    /// Full JID (`bare/resource`).
    pub full: String,
    /// Queue into the session's task.
    pub tx: mpsc::Sender<Outbound>,
    /// Presence state.
    pub state: Arc<SessionState>,
    /// What its queue holds.
    pub queue: QueueBudget,
}

impl SessionHandle {
    /// The session took a stanza out of its queue: release what it cost.
    pub fn dequeued(&self, el: &Element) {
        self.queue.release(sender_key(el), el.memory_size());
    }
}

/// Why binding failed.
#[derive(Debug, PartialEq, Eq)]
pub enum BindError {
    /// The account already has the maximum number of resources.
    TooManyResources,
}

/// Local sessions by account.
#[derive(Debug, Default)]
pub struct Router {
    accounts: DashMap<String, Vec<Arc<SessionHandle>>>,
    next_conn: AtomicU64,
    /// XEP-0198: resumable sessions by resumption token.
    pub resumable: crate::sm::resume::Registry,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a session. If one with the same resource exists it is replaced and returned
    /// (the caller closes it with `<conflict/>`, RFC 6120 §7.7.2.2 "override").
    pub fn bind(
        &self,
        h: Arc<SessionHandle>,
        max_resources: usize,
    ) -> Result<Option<Arc<SessionHandle>>, BindError> {
        let mut list = self.accounts.entry(h.bare.clone()).or_default();
        if let Some(i) = list.iter().position(|s| s.resource == h.resource) {
            let old = std::mem::replace(&mut list[i], h);
            return Ok(Some(old));
        }
        if list.len() >= max_resources {
            return Err(BindError::TooManyResources);
        }
        list.push(h);
        Ok(None)
    }

    /// Removes the session `conn_id` of `bare` (no-op if it was already replaced).
    pub fn unbind(&self, bare: &str, conn_id: u64) {
        let mut empty = false;
        if let Some(mut list) = self.accounts.get_mut(bare) {
            list.retain(|s| s.conn_id != conn_id);
            empty = list.is_empty();
        }
        if empty {
            self.accounts.remove_if(bare, |_, l| l.is_empty());
        }
    }

    /// All sessions of an account.
    pub fn sessions(&self, bare: &str) -> Vec<Arc<SessionHandle>> {
        self.accounts
            .get(bare)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Whether any session of `bare` enabled carbons.
    pub fn has_carbons(&self, bare: &str) -> bool {
        self.accounts
            .get(bare)
            .is_some_and(|l| l.iter().any(|s| s.state.carbons()))
    }

    /// The sessions of `bare` that enabled carbons, other than those `skip` names. Allocates
    /// nothing when there are none, which is the common case on the message path.
    pub fn carbon_targets(
        &self,
        bare: &str,
        skip: impl Fn(&SessionHandle) -> bool,
    ) -> Vec<Arc<SessionHandle>> {
        let Some(list) = self.accounts.get(bare) else {
            return Vec::new();
        };
        list.iter()
            .filter(|s| s.state.carbons() && !skip(s))
            .cloned()
            .collect()
    }

    /// The session bound to `bare/resource`.
    pub fn session(&self, bare: &str, resource: &str) -> Option<Arc<SessionHandle>> {
        self.accounts
            .get(bare)
            .and_then(|l| l.iter().find(|s| s.resource == resource).cloned())
    }

    /// Available sessions with the highest non-negative priority (RFC 6121 §8.5.2.1.1: a message
    /// to the bare JID goes to those; ties all get it).
    pub fn message_targets(&self, bare: &str) -> Vec<Arc<SessionHandle>> {
        let Some(list) = self.accounts.get(bare) else {
            return Vec::new();
        };
        let best = list
            .iter()
            .filter(|s| s.state.is_available() && s.state.priority() >= 0)
            .map(|s| s.state.priority())
            .max();
        match best {
            None => Vec::new(),
            Some(p) => list
                .iter()
                .filter(|s| s.state.is_available() && s.state.priority() == p)
                .cloned()
                .collect(),
        }
    }

    /// Number of bound sessions (for metrics and shutdown).
    pub fn session_count(&self) -> usize {
        self.accounts.iter().map(|l| l.len()).sum()
    }

    /// Every bound session (for shutdown).
    pub fn all_sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.accounts
            .iter()
            .flat_map(|l| l.value().clone())
            .collect()
    }

    /// Puts a stanza into a session's queue without waiting. Returns the stanza back if the
    /// session is gone or its queue has no room for it (see [`Router::deliver_checked`]).
    pub fn deliver(&self, to: &SessionHandle, el: Element) -> Result<(), Element> {
        self.deliver_checked(to, el).map_err(|(el, _)| el)
    }

    /// Like [`Router::deliver`], saying why a stanza was handed back: the session is gone, or
    /// its queue is full or holds its sender's share already (the recipient is not closed for
    /// it: it is reading, and the sender is the one to slow down).
    pub fn deliver_checked(
        &self,
        to: &SessionHandle,
        el: Element,
    ) -> Result<(), (Element, Refused)> {
        let sender = sender_key(&el);
        let bytes = el.memory_size();
        if to.tx.is_closed() {
            return Err((el, Refused::Gone));
        }
        if !to.queue.charge(sender, bytes) {
            tracing::debug!(session = %to.full, "session queue full for this sender; refused");
            return Err((el, Refused::Busy));
        }
        match to.tx.try_send(Outbound::Stanza(Box::new(el))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Outbound::Stanza(el))) => {
                to.queue.release(sender, bytes);
                Err((*el, Refused::Busy))
            }
            Err(mpsc::error::TrySendError::Closed(Outbound::Stanza(el))) => {
                to.queue.release(sender, bytes);
                Err((*el, Refused::Gone))
            }
            Err(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::ns;

    fn handle(
        router: &Router,
        bare: &str,
        res: &str,
    ) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(2);
        let h = Arc::new(SessionHandle {
            conn_id: router.next_conn_id(),
            bare: bare.into(),
            resource: res.into(),
            full: format!("{bare}/{res}"),
            tx,
            state: Arc::default(),
            queue: QueueBudget::new(SESSION_QUEUE_BYTES),
        });
        (h, rx)
    }

    #[tokio::test]
    async fn bind_replace_unbind() {
        let r = Router::new();
        let (a, _ra) = handle(&r, "a@x", "r1");
        let (a2, _ra2) = handle(&r, "a@x", "r1");
        let (b, _rb) = handle(&r, "a@x", "r2");
        assert_eq!(r.bind(a.clone(), 2).unwrap().map(|s| s.conn_id), None);
        assert_eq!(
            r.bind(a2.clone(), 2).unwrap().map(|s| s.conn_id),
            Some(a.conn_id)
        );
        assert!(r.bind(b.clone(), 2).is_ok());
        let (c, _rc) = handle(&r, "a@x", "r3");
        assert_eq!(r.bind(c, 2).unwrap_err(), BindError::TooManyResources);
        // Unbinding the replaced session does not remove its replacement.
        r.unbind("a@x", a.conn_id);
        assert!(r.session("a@x", "r1").is_some());
        r.unbind("a@x", a2.conn_id);
        r.unbind("a@x", b.conn_id);
        assert_eq!(r.session_count(), 0);
        assert!(r.sessions("a@x").is_empty());
    }

    #[tokio::test]
    async fn targets_highest_non_negative_priority() {
        let r = Router::new();
        let (a, _ra) = handle(&r, "a@x", "r1");
        let (b, _rb) = handle(&r, "a@x", "r2");
        let (c, _rc) = handle(&r, "a@x", "r3");
        for h in [&a, &b, &c] {
            r.bind(h.clone(), 10).unwrap();
        }
        assert!(r.message_targets("a@x").is_empty());
        let p = Element::new("presence", ns::CLIENT);
        a.state.set_presence(Some((p.clone(), 5)));
        b.state.set_presence(Some((p.clone(), 5)));
        c.state.set_presence(Some((p.clone(), 1)));
        let t: Vec<_> = r
            .message_targets("a@x")
            .iter()
            .map(|s| s.resource.clone())
            .collect();
        assert_eq!(t, vec!["r1", "r2"]);
        a.state.set_presence(Some((p.clone(), -1)));
        b.state.set_presence(None);
        let t: Vec<_> = r
            .message_targets("a@x")
            .iter()
            .map(|s| s.resource.clone())
            .collect();
        assert_eq!(t, vec!["r3"]);
    }

    #[tokio::test]
    async fn full_queue_reports_undelivered() {
        let r = Router::new();
        let (a, mut ra) = handle(&r, "a@x", "r1");
        let m = Element::new("message", ns::CLIENT);
        assert!(r.deliver(&a, m.clone()).is_ok());
        assert!(r.deliver(&a, m.clone()).is_ok());
        assert_eq!(
            r.deliver_checked(&a, m.clone()).unwrap_err().1,
            Refused::Busy
        );
        match ra.recv().await {
            Some(Outbound::Stanza(el)) => a.dequeued(&el),
            other => panic!("{other:?}"),
        }
        // Room again, and the session was not told to close for it.
        assert!(r.deliver(&a, m.clone()).is_ok());
        drop(ra);
        assert_eq!(r.deliver_checked(&a, m).unwrap_err().1, Refused::Gone);
    }

    #[test]
    fn one_sender_holds_at_most_a_quarter_of_a_queue() {
        let q = QueueBudget::new(4000);
        let flood = sender_key(&Element::new("message", ns::CLIENT).with_attr("from", "f@x/r"));
        let colleague = sender_key(&Element::new("message", ns::CLIENT).with_attr("from", "c@x/r"));
        assert_ne!(flood, colleague);
        assert!(q.charge(flood, 600));
        assert!(!q.charge(flood, 600), "over a quarter of the bytes");
        assert!(q.charge(colleague, 900));
        q.release(flood, 600);
        assert!(q.charge(flood, 1000));
        // Count: a quarter of SESSION_QUEUE.
        let big = QueueBudget::new(usize::MAX / 2);
        for _ in 0..SESSION_QUEUE / 4 {
            assert!(big.charge(flood, 1));
        }
        assert!(!big.charge(flood, 1));
        assert!(big.charge(colleague, 1));
        // Stanzas from a server itself are bounded by the total only.
        assert!(big.charge(0, 1));
        assert_eq!(big.inner.lock().unwrap().by_sender.len(), 2);
    }
}
