//! The RFC 6121 presence subscription state machine (§3 and Appendix A) as pure functions over the
//! stored [`RosterItem`] of one contact. Nothing here does I/O: the caller stores, pushes, routes
//! and delivers as the returned [`Effects`] say.
//!
//! The nine states of RFC 6121 Appendix A.1 map onto a [`RosterItem`] as follows: the primary
//! state ("None", "To", "From", "Both") is `subscription`, "Pending Out" is `ask` and
//! "Pending In" is `pending_in`. A subscription pre-approval (§3.4) is `approved`; a server using
//! this module supports pre-approvals and so must advertise `<sub
//! xmlns='urn:xmpp:features:pre-approval'/>` (§3.4). "None" includes the contact not being in the
//! roster at all (A.1, Implementation Note), which is `None` here. "None + Pending In" for a
//! contact the user never added is a hidden item (`visible == false`): the server has to remember
//! the request (§3.1.3 rule 4) but must not add the contact to the roster (A.1 state 3, §3.1.3
//! Security Warning).
//!
//! The Appendix A tables are followed row by row; the places where this goes beyond them are
//! marked "Beyond Appendix A" in the comments.

use crate::storage::types::{RosterItem, Subscription};

/// The four subscription-related presence types (RFC 6121 §3, §4.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubKind {
    /// `subscribe`: a request for a subscription to the recipient's presence (§3.1).
    Subscribe,
    /// `subscribed`: approval of a subscription request, or a pre-approval (§3.1.5, §3.4).
    Subscribed,
    /// `unsubscribe`: the sender ends its subscription to the recipient's presence (§3.3).
    Unsubscribe,
    /// `unsubscribed`: denial of a request, cancellation of a granted subscription or of a
    /// pre-approval (§3.2).
    Unsubscribed,
}

impl SubKind {
    /// Parses the value of a presence stanza's `type` attribute; `None` for every other type
    /// (including no type, `unavailable`, `probe` and `error`).
    pub fn parse(presence_type: &str) -> Option<SubKind> {
        Some(match presence_type {
            "subscribe" => SubKind::Subscribe,
            "subscribed" => SubKind::Subscribed,
            "unsubscribe" => SubKind::Unsubscribe,
            "unsubscribed" => SubKind::Unsubscribed,
            _ => return None,
        })
    }

    /// The value of the presence stanza's `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// What the server must do after a transition. All false = ignore the stanza (RFC: "silently
/// ignore").
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// The item changed in a way the user sees: store it and push it to the user's interested
    /// resources (RFC 6121 §2.1.6).
    pub push: bool,
    /// The item must be stored (may be true without push, e.g. a hidden pending-in item).
    pub store: bool,
    /// The item must be deleted from storage (it is invisible and carries no state any more).
    /// Push a `subscription='remove'` only if it was visible before (then `push` is true too).
    pub delete: bool,
    /// Outbound: forward the subscription stanza to the contact (stamped with the user's bare
    /// JID).
    pub route: bool,
    /// Inbound: deliver the stanza to the user's available resources (for subscribe: or keep it
    /// pending for the next login).
    pub deliver: bool,
    /// Inbound subscribe that is auto-approved (already From/Both, or pre-approved): answer the
    /// contact with `subscribed` on the user's behalf instead of delivering.
    pub auto_reply_subscribed: bool,
    /// Inbound unsubscribe that changed the state: answer the contact with `unsubscribed` on the
    /// user's behalf (RFC 6121 Appendix A.3.2, a SHOULD), in addition to delivering it.
    pub auto_reply_unsubscribed: bool,
    /// Send the user's current presence (from every available resource) to the contact (after an
    /// approval).
    pub send_presence: bool,
    /// Send unavailable presence from every available resource of the user to the contact (after
    /// From was removed).
    pub send_unavailable: bool,
}

/// The user (owner of `item`) sends a subscription stanza of `kind` to the contact `item.jid`
/// ("outbound", RFC 6121 §3.1.2, §3.2.2, §3.3.2, §3.4 pre-approval; Appendix A.2).
///
/// `item` is the stored item for `contact` (a normalised bare JID), `None` if there is none.
/// Returns the item to keep (`None`: there is nothing to keep) and what to do.
#[must_use]
pub fn outbound(
    item: Option<RosterItem>,
    contact: &str,
    kind: SubKind,
) -> (Option<RosterItem>, Effects) {
    let old = item.clone();
    let mut it = item.unwrap_or_else(|| fresh(contact));
    let mut fx = Effects::default();
    let mut push_on_change = false;
    let (to, from) = (it.subscription.has_to(), it.subscription.has_from());
    match kind {
        SubKind::Subscribe => {
            // A.2.1: MUST route in every state, so that a contact whose server already granted
            // the subscription answers again (§3.1.3 rule 2). Unless the user already has "To",
            // the state gains Pending Out (`ask`, note [1]) and the contact appears in the roster
            // (§3.1.2: roster push with subscription='none' ask='subscribe').
            fx.route = true;
            if !to {
                it.ask = true;
                it.visible = true;
            }
        }
        SubKind::Subscribed => {
            if from {
                // A.2.3 "From", "From + Pending Out", "Both": MUST NOT route, no state change
                // (§3.4.2 rule 1: silently ignore).
            } else if it.pending_in {
                // A.2.3 "None + Pending In" -> "From", "None + Pending Out+In" -> "From + Pending
                // Out", "To + Pending In" -> "Both": a subscription approval (§3.1.5, §3.4.2
                // rule 2). MUST route, push the item, then send the user's current presence. The
                // contact now joins the roster even if the user never added it (§3.1.3 Security
                // Warning: not *until* the approval).
                it.subscription = compose(to, true);
                it.pending_in = false;
                it.pending_in_stanza = None;
                it.approved = false;
                it.visible = true;
                fx.route = true;
                fx.send_presence = true;
            } else {
                // A.2.3 "None", "None + Pending Out", "To": pre-approval (§3.4.2 rules 3 and 4).
                // Set 'approved' and push; a contact not yet in the roster is added with state
                // "None" (rule 4). MUST NOT route. Already pre-approved: nothing changes, so
                // nothing is pushed.
                it.approved = true;
                it.visible = true;
            }
        }
        SubKind::Unsubscribe => {
            // A.2.2: MUST route in every state; To and Pending Out end ("None + Pending Out" ->
            // "None", "To + Pending In" -> "None + Pending In", "Both" -> "From", ...). §3.3.2:
            // push the changed item; states without To or Pending Out do not change, so there is
            // nothing to push.
            fx.route = true;
            it.subscription = compose(false, from);
            it.ask = false;
        }
        SubKind::Unsubscribed => {
            if from || it.pending_in {
                // A.2.4 "None + Pending In" -> "None", "None + Pending Out+In" -> "None + Pending
                // Out", "To + Pending In" -> "To", "From" -> "None", "From + Pending Out" ->
                // "None + Pending Out", "Both" -> "To": MUST route. §3.2.2 rule 3: while the
                // contact is still subscribed, first send unavailable presence from the user's
                // resources (only when From was set: a contact with a mere pending request never
                // got the user's presence), then route, then push. The push is sent even when
                // only Pending In ended (not shown in a roster item, A.1 state 3), because §3.2.2
                // rule 3 requires a roster push on every such denial.
                fx.route = true;
                fx.send_unavailable = from;
                it.subscription = compose(to, false);
                it.pending_in = false;
                it.pending_in_stanza = None;
                it.approved = false;
                push_on_change = true;
            } else {
                // A.2.4 "None", "None + Pending Out", "To": SHOULD NOT route, no state change
                // (§3.2.2 rule 1) -- except that a pre-approval is cancelled (note [1], §3.2.2
                // rule 2: remove it, push, MUST NOT route; §3.4.2 Implementation Note).
                it.approved = false;
            }
        }
    }
    finish(old, it, fx, push_on_change)
}

/// A subscription stanza of `kind` from the contact arrives for the user ("inbound", RFC 6121
/// §3.1.3, §3.1.5/6, §3.2.3, §3.3.3, Appendix A.2 / A.3).
/// `stanza_xml` is the serialised stanza; keep it in `pending_in_stanza` when a subscribe becomes
/// pending.
///
/// `item` is the user's stored item for `contact` (a normalised bare JID), `None` if there is
/// none. Returns the item to keep (`None`: there is nothing to keep) and what to do.
#[must_use]
pub fn inbound(
    item: Option<RosterItem>,
    contact: &str,
    kind: SubKind,
    stanza_xml: &str,
) -> (Option<RosterItem>, Effects) {
    let old = item.clone();
    let mut it = item.unwrap_or_else(|| fresh(contact));
    let mut fx = Effects::default();
    let mut push_on_change = false;
    let (to, from) = (it.subscription.has_to(), it.subscription.has_from());
    match kind {
        SubKind::Subscribe => {
            if from {
                // A.3.1 "From", "From + Pending Out", "Both": SHOULD NOT deliver, no state
                // change; auto-reply `subscribed` (note [2]; §3.1.3 rule 2: MUST).
                // Beyond Appendix A: also send the user's presence, as after any approval
                // (§3.1.5). A contact that asks again has usually lost its side of the
                // subscription, and without this it would see the user offline until the
                // user's next presence change.
                fx.auto_reply_subscribed = true;
                fx.send_presence = true;
            } else if it.approved {
                // A.3.1 note [1], §3.4.2, §3.1.3 rule 2: pre-approved. MUST NOT deliver; reply
                // `subscribed` for the user and move to "From" ("From + Pending Out", "Both"
                // from "None + Pending Out", "To"), as if the user had approved (§3.1.5: push,
                // then send current presence). The pre-approval is used up (keeping it is local
                // policy per the §3.4.2 Implementation Note).
                it.subscription = compose(to, true);
                it.approved = false;
                fx.auto_reply_subscribed = true;
                fx.send_presence = true;
            } else if it.pending_in {
                // A.3.1 "None + Pending In", "None + Pending Out+In", "To + Pending In": SHOULD
                // NOT deliver, no state change. §3.1.3 rule 4: store only one request per contact
                // (we keep the first), so only a missing one is filled in.
                if it.pending_in_stanza.is_none() {
                    it.pending_in_stanza = Some(stanza_xml.to_owned());
                }
            } else {
                // A.3.1 "None" -> "None + Pending In", "None + Pending Out" -> "None + Pending
                // Out+In", "To" -> "To + Pending In": MUST deliver (§3.1.3 rule 3), and keep the
                // complete stanza to deliver it again at each login until answered (rule 4).
                // Pending In is not part of the roster as the user sees it (A.1 states 3 and 6),
                // so nothing is pushed, and a contact not in the roster stays out of it (hidden
                // item, §3.1.3 Security Warning).
                it.pending_in = true;
                it.pending_in_stanza = Some(stanza_xml.to_owned());
                fx.deliver = true;
            }
        }
        SubKind::Subscribed => {
            if it.ask {
                // A.3.3 "None + Pending Out" -> "To", "None + Pending Out+In" -> "To + Pending
                // In", "From + Pending Out" -> "Both": MUST deliver, then push (§3.1.6).
                it.subscription = compose(true, from);
                it.ask = false;
                fx.deliver = true;
            }
            // Every other state: SHOULD NOT deliver, no state change (§3.1.6: silently ignore).
        }
        SubKind::Unsubscribe => {
            if from || it.pending_in {
                // A.3.2 "None + Pending In" -> "None", "None + Pending Out+In" -> "None + Pending
                // Out", "To + Pending In" -> "To", "From" -> "None", "From + Pending Out" -> "None +
                // Pending Out", "Both" -> "To": MUST deliver, SHOULD auto-reply `unsubscribed`
                // (note [1]). §3.3.3: push, then unavailable presence from the user's resources
                // (only if the contact had From). A pending request is dropped with its stored
                // stanza; a hidden item is deleted (§3.3.3 last paragraph). As for an outbound
                // denial, a visible item is pushed even if only Pending In ended.
                it.subscription = compose(to, false);
                it.pending_in = false;
                it.pending_in_stanza = None;
                it.approved = false;
                fx.deliver = true;
                fx.auto_reply_unsubscribed = true;
                fx.send_unavailable = from;
                push_on_change = true;
            }
            // "None", "None + Pending Out", "To": SHOULD NOT deliver, no state change (a
            // pre-approval stays: only the user cancels it, §3.2.1).
        }
        SubKind::Unsubscribed => {
            if to || it.ask {
                // A.3.4 "None + Pending Out" -> "None", "None + Pending Out+In" -> "None +
                // Pending In", "To" -> "None", "To + Pending In" -> "None + Pending In", "From +
                // Pending Out" -> "From", "Both" -> "From": MUST deliver, then push (§3.2.3). A.3.4
                // also covers a denied request (Pending Out), not only the "to"/"both" check of
                // §3.2.3.
                it.subscription = compose(false, from);
                it.ask = false;
                fx.deliver = true;
            }
            // Every other state: SHOULD NOT deliver, no state change (§3.2.3: silently ignore).
        }
    }
    finish(old, it, fx, push_on_change)
}

/// Roster "remove" (RFC 6121 §2.5.2): which stanzas to send to the contact before deleting:
/// (send_unsubscribe, send_unsubscribed).
///
/// §2.5.2 asks for `unsubscribe` when the user has To and `unsubscribed` when the contact has
/// From. Beyond that, a pending outbound request (Pending Out) is cancelled with `unsubscribe`
/// and a pending inbound one (Pending In) is denied with `unsubscribed`, which is what Appendix
/// A.2.2 / A.2.4 route in those states; otherwise the contact's server would keep a request the
/// user can no longer see. A pre-approval alone sends nothing (§3.2.2 rule 2: MUST NOT route).
#[must_use]
pub fn on_remove(item: &RosterItem) -> (bool, bool) {
    let s = item.subscription;
    (s.has_to() || item.ask, s.has_from() || item.pending_in)
}

/// The subscription with the given directions.
fn compose(to: bool, from: bool) -> Subscription {
    match (to, from) {
        (false, false) => Subscription::None,
        (true, false) => Subscription::To,
        (false, true) => Subscription::From,
        (true, true) => Subscription::Both,
    }
}

/// The starting point for a contact without a stored item: state "None", not in the roster.
fn fresh(contact: &str) -> RosterItem {
    RosterItem {
        jid: contact.to_owned(),
        ..RosterItem::default()
    }
}

/// Whether the item is neither in the user's roster nor carries any subscription state, so that
/// there is nothing left to store.
fn is_void(item: &RosterItem) -> bool {
    !item.visible
        && item.subscription == Subscription::None
        && !item.ask
        && !item.pending_in
        && !item.approved
}

/// The item as the user's clients see it (roster results and pushes, §2.1.2): `None` if it is not
/// in the roster, and without the server-only Pending In state.
fn roster_view(item: Option<&RosterItem>) -> Option<RosterItem> {
    item.filter(|i| i.visible).map(|i| RosterItem {
        pending_in: false,
        pending_in_stanza: None,
        ..i.clone()
    })
}

/// Drops a void item and derives `store`, `delete` and `push` from the change `old` -> `new`.
/// `push_on_change`: push a visible item on any change, even one the roster does not show.
fn finish(
    old: Option<RosterItem>,
    new: RosterItem,
    mut fx: Effects,
    push_on_change: bool,
) -> (Option<RosterItem>, Effects) {
    let new = if is_void(&new) { None } else { Some(new) };
    let changed = new != old;
    fx.delete = old.is_some() && new.is_none();
    fx.store = new.is_some() && changed;
    fx.push = roster_view(old.as_ref()) != roster_view(new.as_ref())
        || (push_on_change && changed && new.as_ref().is_some_and(|i| i.visible));
    (new, fx)
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
