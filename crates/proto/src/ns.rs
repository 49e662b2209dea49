//! Namespace names used by the server, named by what they are for.

/// Stanza content namespace of client streams (RFC 6120 §4.8.3).
pub const CLIENT: &str = "jabber:client";
/// Stanza content namespace of server streams (RFC 6120 §4.8.3).
pub const SERVER: &str = "jabber:server";
/// The stream namespace (RFC 6120 §4.8.1).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// The XML namespace (`xml:lang`).
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Session establishment, kept for old clients (RFC 3921, draft-cridland-xmpp-session).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// Roster (RFC 6121 §2).
pub const ROSTER: &str = "jabber:iq:roster";
/// Roster versioning stream feature (RFC 6121 §2.6).
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
/// Pre-approval stream feature (RFC 6121 §3.4).
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
/// XEP-0030: Service Discovery, info.
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030: Service Discovery, items.
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0115: Entity Capabilities.
pub const CAPS: &str = "http://jabber.org/protocol/caps";
/// XEP-0092: Software Version.
pub const VERSION: &str = "jabber:iq:version";
/// XEP-0202: Entity Time.
pub const TIME: &str = "urn:xmpp:time";
/// XEP-0199: XMPP Ping.
pub const PING: &str = "urn:xmpp:ping";
/// XEP-0191: Blocking Command.
pub const BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191: the error payload for messages to/from blocked entities.
pub const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// XEP-0077: In-Band Registration.
pub const REGISTER: &str = "jabber:iq:register";
/// XEP-0077: the stream feature.
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
/// XEP-0359: Unique and Stable Stanza IDs.
pub const SID: &str = "urn:xmpp:sid:0";
/// XEP-0203: Delayed Delivery.
pub const DELAY: &str = "urn:xmpp:delay";
/// XEP-0160 offline messages are announced in disco with this node name (XEP-0013 namespace).
pub const OFFLINE: &str = "msgoffline";
/// XEP-0004: Data Forms.
pub const DATA_FORMS: &str = "jabber:x:data";
/// XEP-0128 / XEP-0157 server info form type.
pub const SERVER_INFO: &str = "http://jabber.org/network/serverinfo";
/// XEP-0478: Stream Limits Advertisement.
pub const STREAM_LIMITS: &str = "urn:xmpp:stream-limits:0";
/// XEP-0440: SASL Channel-Binding Type Capability.
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// XEP-0199 keepalive and XEP-0198 are announced by features elsewhere; XEP-0368 needs none.
/// XEP-0084/0115 hash attribute value.
pub const CAPS_HASH_SHA1: &str = "sha-1";

/// Maps `jabber:server` to `jabber:client`: inside the server both are one content namespace, and
/// the stream writer supplies the one its peer expects.
pub fn canonical(ns: &str) -> &str {
    if ns == SERVER { CLIENT } else { ns }
}
/// XEP-0280 Message Carbons.
pub const CARBONS: &str = "urn:xmpp:carbons:2";
/// XEP-0297 Stanza Forwarding.
pub const FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0334 Message Processing Hints.
pub const HINTS: &str = "urn:xmpp:hints";
/// XEP-0313 Message Archive Management, version 2.
pub const MAM: &str = "urn:xmpp:mam:2";
/// XEP-0313 `#extended`: before-id, after-id, ids, flip-page and metadata.
pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// XEP-0059 Result Set Management.
pub const RSM: &str = "http://jabber.org/protocol/rsm";
/// XEP-0184 Message Delivery Receipts.
pub const RECEIPTS: &str = "urn:xmpp:receipts";
/// XEP-0333 Chat Markers.
pub const MARKERS: &str = "urn:xmpp:chat-markers:0";
/// XEP-0308 Last Message Correction.
pub const CORRECT: &str = "urn:xmpp:message-correct:0";
/// XEP-0424 Message Retraction (current version).
pub const RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0424 Message Retraction, version 0 (inside a XEP-0422 `apply-to`).
pub const RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// XEP-0422 Message Fastening (carries version 0 retractions).
pub const FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0428 Fallback Indication.
pub const FALLBACK: &str = "urn:xmpp:fallback:0";
/// XEP-0357 Push Notifications.
pub const PUSH: &str = "urn:xmpp:push:0";
/// XEP-0060 Publish-Subscribe (the publish XEP-0357 sends to app servers).
pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0198 Stream Management (version 3).
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0352 Client State Indication.
pub const CSI: &str = "urn:xmpp:csi:0";
/// XEP-0085 Chat State Notifications.
pub const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
