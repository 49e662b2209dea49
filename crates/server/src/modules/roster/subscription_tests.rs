//! Tests of the RFC 6121 subscription state machine (Appendix A tables).

use super::*;

const CONTACT: &str = "juliet@example.com";
/// The stored request of an item that already was "Pending In".
const OLD: &str = "<presence from='juliet@example.com' id='old' type='subscribe'/>";
/// The stanza passed to `inbound`.
const NEW: &str = "<presence from='juliet@example.com' id='new' type='subscribe'/>";
const ABSENT: Option<RosterItem> = None;

/// The nine states of RFC 6121 Appendix A.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S {
    None,
    NoneOut,
    NoneIn,
    NoneOutIn,
    To,
    ToIn,
    From,
    FromOut,
    Both,
}

const ALL: [S; 9] = [
    S::None,
    S::NoneOut,
    S::NoneIn,
    S::NoneOutIn,
    S::To,
    S::ToIn,
    S::From,
    S::FromOut,
    S::Both,
];

/// (subscription, Pending Out, Pending In)
fn parts(s: S) -> (Subscription, bool, bool) {
    match s {
        S::None => (Subscription::None, false, false),
        S::NoneOut => (Subscription::None, true, false),
        S::NoneIn => (Subscription::None, false, true),
        S::NoneOutIn => (Subscription::None, true, true),
        S::To => (Subscription::To, false, false),
        S::ToIn => (Subscription::To, false, true),
        S::From => (Subscription::From, false, false),
        S::FromOut => (Subscription::From, true, false),
        S::Both => (Subscription::Both, false, false),
    }
}

/// An item in the user's roster in state `s`, with a name and a group so that every test also
/// checks they are kept. A pending request carries the stored stanza `OLD`.
fn item(s: S) -> RosterItem {
    let (subscription, ask, pending_in) = parts(s);
    RosterItem {
        jid: CONTACT.to_owned(),
        name: Some("Juliet".to_owned()),
        subscription,
        ask,
        pending_in,
        approved: false,
        visible: true,
        groups: vec!["Friends".to_owned()],
        pending_in_stanza: pending_in.then(|| OLD.to_owned()),
    }
}

/// `item(s)` with a pre-approval.
fn approved(s: S) -> RosterItem {
    RosterItem {
        approved: true,
        ..item(s)
    }
}

/// `item(s)` whose stored request is `NEW`.
fn with_new(s: S) -> RosterItem {
    RosterItem {
        pending_in_stanza: Some(NEW.to_owned()),
        ..item(s)
    }
}

/// "None + Pending In" for a contact the user never added: hidden.
fn hidden_in() -> RosterItem {
    RosterItem {
        jid: CONTACT.to_owned(),
        pending_in: true,
        pending_in_stanza: Some(OLD.to_owned()),
        ..RosterItem::default()
    }
}

/// A new item created by a transition (no name, no groups).
fn created(f: impl FnOnce(&mut RosterItem)) -> RosterItem {
    let mut it = RosterItem {
        jid: CONTACT.to_owned(),
        ..RosterItem::default()
    };
    f(&mut it);
    it
}

/// Effects from space-separated field names.
fn fx(flags: &str) -> Effects {
    let mut e = Effects::default();
    for flag in flags.split_whitespace() {
        let slot = match flag {
            "push" => &mut e.push,
            "store" => &mut e.store,
            "delete" => &mut e.delete,
            "route" => &mut e.route,
            "deliver" => &mut e.deliver,
            "auto_reply_subscribed" => &mut e.auto_reply_subscribed,
            "auto_reply_unsubscribed" => &mut e.auto_reply_unsubscribed,
            "send_presence" => &mut e.send_presence,
            "send_unavailable" => &mut e.send_unavailable,
            other => panic!("unknown effect {other}"),
        };
        *slot = true;
    }
    e
}

struct Row {
    name: &'static str,
    start: Option<RosterItem>,
    end: Option<RosterItem>,
    fx: Effects,
}

fn row(
    name: &'static str,
    start: impl Into<Option<RosterItem>>,
    end: impl Into<Option<RosterItem>>,
    flags: &str,
) -> Row {
    Row {
        name,
        start: start.into(),
        end: end.into(),
        fx: fx(flags),
    }
}

/// A row whose stanza is ignored: no change, no effect.
fn same(name: &'static str, start: impl Into<Option<RosterItem>>) -> Row {
    let start = start.into();
    Row {
        name,
        end: start.clone(),
        start,
        fx: Effects::default(),
    }
}

fn run(table: &str, f: impl Fn(Option<RosterItem>) -> (Option<RosterItem>, Effects), rows: &[Row]) {
    for r in rows {
        let (item, e) = f(r.start.clone());
        assert_eq!(item, r.end, "{table} {}: item", r.name);
        assert_eq!(e, r.fx, "{table} {}: effects", r.name);
        // Invariants every caller relies on.
        assert!(!(e.store && e.delete), "{table} {}", r.name);
        assert!(!e.push || e.store || e.delete, "{table} {}", r.name);
        assert!(
            item.as_ref().is_none_or(|i| !is_void(i)),
            "{table} {}",
            r.name
        );
        assert!(
            item.as_ref()
                .is_none_or(|i| i.pending_in || i.pending_in_stanza.is_none()),
            "{table} {}: stanza without Pending In",
            r.name
        );
    }
}

fn out(kind: SubKind) -> impl Fn(Option<RosterItem>) -> (Option<RosterItem>, Effects) {
    move |it| outbound(it, CONTACT, kind)
}

fn inb(kind: SubKind) -> impl Fn(Option<RosterItem>) -> (Option<RosterItem>, Effects) {
    move |it| inbound(it, CONTACT, kind, NEW)
}

#[test]
fn a2_1_outbound_subscribe() {
    let rows = [
        row(
            "None (not in roster)",
            ABSENT,
            created(|i| {
                i.ask = true;
                i.visible = true;
            }),
            "store push route",
        ),
        row("None", item(S::None), item(S::NoneOut), "store push route"),
        row(
            "None + Pending Out",
            item(S::NoneOut),
            item(S::NoneOut),
            "route",
        ),
        row(
            "None + Pending In (not in roster)",
            hidden_in(),
            RosterItem {
                ask: true,
                visible: true,
                ..hidden_in()
            },
            "store push route",
        ),
        row(
            "None + Pending In",
            item(S::NoneIn),
            item(S::NoneOutIn),
            "store push route",
        ),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::NoneOutIn),
            "route",
        ),
        row("To", item(S::To), item(S::To), "route"),
        row("To + Pending In", item(S::ToIn), item(S::ToIn), "route"),
        row("From", item(S::From), item(S::FromOut), "store push route"),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::FromOut),
            "route",
        ),
        row("Both", item(S::Both), item(S::Both), "route"),
        row(
            "None, pre-approved",
            approved(S::None),
            approved(S::NoneOut),
            "store push route",
        ),
    ];
    run("A.2.1", out(SubKind::Subscribe), &rows);
}

#[test]
fn a2_2_outbound_unsubscribe() {
    let rows = [
        row("None (not in roster)", ABSENT, ABSENT, "route"),
        row("None", item(S::None), item(S::None), "route"),
        row(
            "None + Pending Out",
            item(S::NoneOut),
            item(S::None),
            "store push route",
        ),
        row(
            "None + Pending In (not in roster)",
            hidden_in(),
            hidden_in(),
            "route",
        ),
        row(
            "None + Pending In",
            item(S::NoneIn),
            item(S::NoneIn),
            "route",
        ),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::NoneIn),
            "store push route",
        ),
        row("To", item(S::To), item(S::None), "store push route"),
        row(
            "To + Pending In",
            item(S::ToIn),
            item(S::NoneIn),
            "store push route",
        ),
        row("From", item(S::From), item(S::From), "route"),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::From),
            "store push route",
        ),
        row("Both", item(S::Both), item(S::From), "store push route"),
        row(
            "To, pre-approved",
            approved(S::To),
            approved(S::None),
            "store push route",
        ),
    ];
    run("A.2.2", out(SubKind::Unsubscribe), &rows);
}

#[test]
fn a2_3_outbound_subscribed() {
    let rows = [
        row(
            "None (not in roster): pre-approval creates the item",
            ABSENT,
            created(|i| {
                i.approved = true;
                i.visible = true;
            }),
            "store push",
        ),
        row(
            "None: pre-approval",
            item(S::None),
            approved(S::None),
            "store push",
        ),
        row(
            "None + Pending Out: pre-approval",
            item(S::NoneOut),
            approved(S::NoneOut),
            "store push",
        ),
        row(
            "None + Pending In (not in roster)",
            hidden_in(),
            created(|i| {
                i.subscription = Subscription::From;
                i.visible = true;
            }),
            "store push route send_presence",
        ),
        row(
            "None + Pending In",
            item(S::NoneIn),
            item(S::From),
            "store push route send_presence",
        ),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::FromOut),
            "store push route send_presence",
        ),
        row(
            "To: pre-approval",
            item(S::To),
            approved(S::To),
            "store push",
        ),
        row(
            "To + Pending In",
            item(S::ToIn),
            item(S::Both),
            "store push route send_presence",
        ),
        same("From", item(S::From)),
        same("From + Pending Out", item(S::FromOut)),
        same("Both", item(S::Both)),
        same("None, already pre-approved", approved(S::None)),
        same("To, already pre-approved", approved(S::To)),
    ];
    run("A.2.3", out(SubKind::Subscribed), &rows);
}

#[test]
fn a2_4_outbound_unsubscribed() {
    let rows = [
        same("None (not in roster)", ABSENT),
        same("None", item(S::None)),
        same("None + Pending Out", item(S::NoneOut)),
        row(
            "None + Pending In (not in roster)",
            hidden_in(),
            ABSENT,
            "delete route",
        ),
        row(
            "None + Pending In",
            item(S::NoneIn),
            item(S::None),
            "store push route",
        ),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::NoneOut),
            "store push route",
        ),
        same("To", item(S::To)),
        row(
            "To + Pending In",
            item(S::ToIn),
            item(S::To),
            "store push route",
        ),
        row(
            "From",
            item(S::From),
            item(S::None),
            "store push route send_unavailable",
        ),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::NoneOut),
            "store push route send_unavailable",
        ),
        row(
            "Both",
            item(S::Both),
            item(S::To),
            "store push route send_unavailable",
        ),
        // Note [1] / §3.2.2 rule 2: cancelling a pre-approval is pushed, never routed.
        row(
            "None, pre-approved",
            approved(S::None),
            item(S::None),
            "store push",
        ),
        row(
            "None + Pending Out, pre-approved",
            approved(S::NoneOut),
            item(S::NoneOut),
            "store push",
        ),
        row(
            "To, pre-approved",
            approved(S::To),
            item(S::To),
            "store push",
        ),
    ];
    run("A.2.4", out(SubKind::Unsubscribed), &rows);
}

#[test]
fn a3_1_inbound_subscribe() {
    let rows = [
        row(
            "None (not in roster): hidden pending item",
            ABSENT,
            created(|i| {
                i.pending_in = true;
                i.pending_in_stanza = Some(NEW.to_owned());
            }),
            "store deliver",
        ),
        row("None", item(S::None), with_new(S::NoneIn), "store deliver"),
        row(
            "None + Pending Out",
            item(S::NoneOut),
            with_new(S::NoneOutIn),
            "store deliver",
        ),
        same("None + Pending In (not in roster)", hidden_in()),
        same("None + Pending In", item(S::NoneIn)),
        same("None + Pending Out+In", item(S::NoneOutIn)),
        row("To", item(S::To), with_new(S::ToIn), "store deliver"),
        same("To + Pending In", item(S::ToIn)),
        row(
            "From",
            item(S::From),
            item(S::From),
            "auto_reply_subscribed send_presence",
        ),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::FromOut),
            "auto_reply_subscribed send_presence",
        ),
        row(
            "Both",
            item(S::Both),
            item(S::Both),
            "auto_reply_subscribed send_presence",
        ),
        // Note [1] / §3.4.2: a pre-approval answers for the user.
        row(
            "None, pre-approved",
            approved(S::None),
            item(S::From),
            "store push auto_reply_subscribed send_presence",
        ),
        row(
            "None + Pending Out, pre-approved",
            approved(S::NoneOut),
            item(S::FromOut),
            "store push auto_reply_subscribed send_presence",
        ),
        row(
            "To, pre-approved",
            approved(S::To),
            item(S::Both),
            "store push auto_reply_subscribed send_presence",
        ),
        row(
            "None + Pending In without a stored stanza",
            RosterItem {
                pending_in_stanza: None,
                ..hidden_in()
            },
            RosterItem {
                pending_in_stanza: Some(NEW.to_owned()),
                ..hidden_in()
            },
            "store",
        ),
    ];
    run("A.3.1", inb(SubKind::Subscribe), &rows);
}

#[test]
fn a3_2_inbound_unsubscribe() {
    let rows = [
        same("None (not in roster)", ABSENT),
        same("None", item(S::None)),
        same("None + Pending Out", item(S::NoneOut)),
        row(
            "None + Pending In (not in roster)",
            hidden_in(),
            ABSENT,
            "delete deliver auto_reply_unsubscribed",
        ),
        row(
            "None + Pending In",
            item(S::NoneIn),
            item(S::None),
            "store push deliver auto_reply_unsubscribed",
        ),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::NoneOut),
            "store push deliver auto_reply_unsubscribed",
        ),
        same("To", item(S::To)),
        row(
            "To + Pending In",
            item(S::ToIn),
            item(S::To),
            "store push deliver auto_reply_unsubscribed",
        ),
        row(
            "From",
            item(S::From),
            item(S::None),
            "store push deliver auto_reply_unsubscribed send_unavailable",
        ),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::NoneOut),
            "store push deliver auto_reply_unsubscribed send_unavailable",
        ),
        row(
            "Both",
            item(S::Both),
            item(S::To),
            "store push deliver auto_reply_unsubscribed send_unavailable",
        ),
        same("None, pre-approved", approved(S::None)),
    ];
    run("A.3.2", inb(SubKind::Unsubscribe), &rows);
}

#[test]
fn a3_3_inbound_subscribed() {
    let rows = [
        same("None (not in roster)", ABSENT),
        same("None", item(S::None)),
        row(
            "None + Pending Out",
            item(S::NoneOut),
            item(S::To),
            "store push deliver",
        ),
        same("None + Pending In (not in roster)", hidden_in()),
        same("None + Pending In", item(S::NoneIn)),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::ToIn),
            "store push deliver",
        ),
        same("To", item(S::To)),
        same("To + Pending In", item(S::ToIn)),
        same("From", item(S::From)),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::Both),
            "store push deliver",
        ),
        same("Both", item(S::Both)),
    ];
    run("A.3.3", inb(SubKind::Subscribed), &rows);
}

#[test]
fn a3_4_inbound_unsubscribed() {
    let rows = [
        same("None (not in roster)", ABSENT),
        same("None", item(S::None)),
        row(
            "None + Pending Out",
            item(S::NoneOut),
            item(S::None),
            "store push deliver",
        ),
        same("None + Pending In (not in roster)", hidden_in()),
        same("None + Pending In", item(S::NoneIn)),
        row(
            "None + Pending Out+In",
            item(S::NoneOutIn),
            item(S::NoneIn),
            "store push deliver",
        ),
        row("To", item(S::To), item(S::None), "store push deliver"),
        row(
            "To + Pending In",
            item(S::ToIn),
            item(S::NoneIn),
            "store push deliver",
        ),
        same("From", item(S::From)),
        row(
            "From + Pending Out",
            item(S::FromOut),
            item(S::From),
            "store push deliver",
        ),
        row("Both", item(S::Both), item(S::From), "store push deliver"),
        same(
            "None, pre-approved: the pre-approval stays",
            approved(S::None),
        ),
    ];
    run("A.3.4", inb(SubKind::Unsubscribed), &rows);
}

#[test]
fn pre_approval_then_inbound_subscribe_auto_approves() {
    let (it, e) = outbound(None, CONTACT, SubKind::Subscribed);
    assert_eq!(e, fx("store push"));
    let expected = created(|i| {
        i.approved = true;
        i.visible = true;
    });
    assert_eq!(it, Some(expected.clone()));

    let (it, e) = inbound(it, CONTACT, SubKind::Subscribe, NEW);
    assert_eq!(e, fx("store push auto_reply_subscribed send_presence"));
    assert_eq!(
        it,
        Some(RosterItem {
            subscription: Subscription::From,
            approved: false,
            ..expected
        })
    );

    // Asking again once subscribed: answered again, nothing stored.
    let (again, e) = inbound(it.clone(), CONTACT, SubKind::Subscribe, NEW);
    assert_eq!(e, fx("auto_reply_subscribed send_presence"));
    assert_eq!(again, it);
}

#[test]
fn hidden_item_cleanup() {
    // A hidden item without state is never returned: it is deleted whatever arrives, and
    // nothing else happens for stanzas that are otherwise ignored.
    let void = created(|_| {});
    for kind in [
        SubKind::Subscribed,
        SubKind::Unsubscribe,
        SubKind::Unsubscribed,
    ] {
        assert_eq!(
            inbound(Some(void.clone()), CONTACT, kind, NEW),
            (None, fx("delete")),
            "{kind:?}"
        );
    }
    assert_eq!(
        outbound(Some(void.clone()), CONTACT, SubKind::Unsubscribed),
        (None, fx("delete"))
    );
    assert_eq!(
        outbound(Some(void.clone()), CONTACT, SubKind::Unsubscribe),
        (None, fx("delete route"))
    );
    // A stanza that gives it state revives it instead.
    assert_eq!(
        inbound(Some(void.clone()), CONTACT, SubKind::Subscribe, NEW),
        (
            Some(created(|i| {
                i.pending_in = true;
                i.pending_in_stanza = Some(NEW.to_owned());
            })),
            fx("store deliver")
        )
    );

    // A request that is denied or withdrawn leaves nothing behind; an item the user added
    // stays with state "None".
    assert_eq!(
        outbound(Some(hidden_in()), CONTACT, SubKind::Unsubscribed),
        (None, fx("delete route"))
    );
    let (it, _) = inbound(None, CONTACT, SubKind::Subscribe, NEW);
    let (it, e) = inbound(it, CONTACT, SubKind::Unsubscribe, NEW);
    assert_eq!(
        (it, e),
        (None, fx("delete deliver auto_reply_unsubscribed"))
    );
    assert_eq!(
        outbound(Some(item(S::NoneIn)), CONTACT, SubKind::Unsubscribed).0,
        Some(item(S::None))
    );
    // Nothing to do for an unknown contact: no item appears.
    for kind in [
        SubKind::Subscribed,
        SubKind::Unsubscribe,
        SubKind::Unsubscribed,
    ] {
        assert_eq!(
            inbound(None, CONTACT, kind, NEW),
            (None, Effects::default())
        );
    }
}

#[test]
fn new_items_use_the_contact_jid() {
    let (it, _) = outbound(None, "romeo@example.net", SubKind::Subscribe);
    assert_eq!(it.map(|i| i.jid), Some("romeo@example.net".to_owned()));
    let (it, _) = inbound(None, "romeo@example.net", SubKind::Subscribe, NEW);
    assert_eq!(it.map(|i| i.jid), Some("romeo@example.net".to_owned()));
}

#[test]
fn mutual_subscription_between_two_rosters() {
    // RFC 6121 §3.1 narrated: Romeo (user) subscribes to Juliet (contact), she approves and
    // asks back, he approves. Each side's item is for the other.
    let (romeo, e) = outbound(None, CONTACT, SubKind::Subscribe);
    assert!(e.route && e.push);
    let (juliet, e) = inbound(None, "romeo@example.net", SubKind::Subscribe, NEW);
    assert!(e.deliver && !e.push);
    let (juliet, e) = outbound(juliet, "romeo@example.net", SubKind::Subscribed);
    assert!(e.route && e.push && e.send_presence);
    let (romeo, e) = inbound(romeo, CONTACT, SubKind::Subscribed, NEW);
    assert!(e.deliver && e.push);
    let (juliet, e) = outbound(juliet, "romeo@example.net", SubKind::Subscribe);
    assert!(e.route && e.push);
    let (romeo, e) = inbound(romeo, CONTACT, SubKind::Subscribe, NEW);
    assert!(e.deliver && !e.push);
    let (romeo, e) = outbound(romeo, CONTACT, SubKind::Subscribed);
    assert!(e.route && e.push && e.send_presence);
    let (juliet, e) = inbound(juliet, "romeo@example.net", SubKind::Subscribed, NEW);
    assert!(e.deliver && e.push);

    for (it, jid) in [(romeo, CONTACT), (juliet, "romeo@example.net")] {
        assert_eq!(
            it,
            Some(RosterItem {
                jid: jid.to_owned(),
                subscription: Subscription::Both,
                visible: true,
                ..RosterItem::default()
            })
        );
    }
}

#[test]
fn on_remove_each_state() {
    let expected = |s: S| match s {
        S::None => (false, false),
        S::NoneOut => (true, false),
        S::NoneIn => (false, true),
        S::NoneOutIn => (true, true),
        S::To => (true, false),
        S::ToIn => (true, true),
        S::From => (false, true),
        S::FromOut => (true, true),
        S::Both => (true, true),
    };
    for s in ALL {
        assert_eq!(on_remove(&item(s)), expected(s), "{s:?}");
    }
    assert_eq!(on_remove(&hidden_in()), (false, true));
    // §3.2.2 rule 2: a pre-approval is dropped silently.
    assert_eq!(on_remove(&approved(S::None)), (false, false));
    assert_eq!(on_remove(&approved(S::To)), (true, false));
}

#[test]
fn states_fixture_is_consistent() {
    // Pending Out never coexists with To, Pending In never with From (A.1).
    for s in ALL {
        let (sub, ask, pending_in) = parts(s);
        assert!(!(ask && sub.has_to()), "{s:?}");
        assert!(!(pending_in && sub.has_from()), "{s:?}");
    }
}

#[test]
fn sub_kind_parse_and_as_str() {
    for k in [
        SubKind::Subscribe,
        SubKind::Subscribed,
        SubKind::Unsubscribe,
        SubKind::Unsubscribed,
    ] {
        assert_eq!(SubKind::parse(k.as_str()), Some(k));
    }
    for other in [
        "",
        "probe",
        "unavailable",
        "error",
        "Subscribe",
        "available",
    ] {
        assert_eq!(SubKind::parse(other), None, "{other}");
    }
}
