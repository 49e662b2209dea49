//! The router: which sessions are bound for which account, and delivery into their queues.
//!
//! Sessions are found through the router by JID, never by holding pointers to each other. The map
//! is sharded (`DashMap`), a lookup clones the few `Arc`s it needs and lets go of the shard before
//! anything is sent, and no lock is held across an `.await`.
//!
//! Delivery uses bounded queues and never waits: a session whose queue is full is not reading
//! fast enough; the stanza is reported undelivered so the caller can store it offline or bounce
//! it, and the slow session is told to close. Waiting instead would let two busy sessions that
//! send to each other block forever.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::mpsc;
use zorg_proto::{Element, StreamCondition, StreamError};

/// Queue length per session. Messages beyond this are not queued (see module docs).
pub const SESSION_QUEUE: usize = 1024;

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
    /// session is gone or its queue is full (in which case the session is told to close).
    pub fn deliver(&self, to: &SessionHandle, el: Element) -> Result<(), Element> {
        match to.tx.try_send(Outbound::Stanza(Box::new(el))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(Outbound::Stanza(el))) => {
                tracing::warn!(session = %to.full, "session queue full; closing the slow session");
                // The queue is full, so this close will be noticed when the task drains it or
                // when its writes time out; spawn to avoid waiting here.
                let tx = to.tx.clone();
                tokio::spawn(async move {
                    let err = StreamError::new(StreamCondition::PolicyViolation)
                        .with_text("too many stanzas queued for this session");
                    let _ = tx
                        .send_timeout(Outbound::close(err), std::time::Duration::from_secs(5))
                        .await;
                });
                Err(*el)
            }
            Err(mpsc::error::TrySendError::Full(Outbound::Close(_))) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(Outbound::Stanza(el))) => Err(*el),
            Err(mpsc::error::TrySendError::Closed(Outbound::Close(_))) => Ok(()),
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
        assert!(r.deliver(&a, m.clone()).is_err());
        assert!(matches!(ra.recv().await, Some(Outbound::Stanza(_))));
        drop(ra);
        assert!(r.deliver(&a, m).is_err());
    }
}
