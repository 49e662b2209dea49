//! FHIR R4 AuditEvent resources for audit records, in a Bundle of type `collection`
//! (<https://hl7.org/fhir/R4/auditevent.html>).
//!
//! Each record becomes one AuditEvent. The rules, so that an auditor can read any of them
//! the same way (the full table is in `docs/audit.md`):
//! - `type` is the DICOM PS3.16 CID 400 event (RFC 3881 EventID); `subtype` holds the CID 401
//!   code where one fits and always the record's own event name in the Zorg code system
//!   [`ZORG_EVENT`], so the log's name survives every export. FHIR's `restful-interaction`
//!   codes are not used: nothing here is a FHIR REST interaction.
//! - Who acted, and from where, are `agent`s (UserID, UserIsRequestor, NetworkAccessPointID);
//!   whose data was touched is an `entity` (ParticipantObjectID); every other field of the
//!   record is an `entity.detail` named as the field is named in the log (nested fields with
//!   dots, one detail per element of a list).
//! - Nothing is added that the record does not hold, apart from fixed codes and their
//!   displays; a record holds no message body, so no AuditEvent can.

use std::io::{self, Write};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Map, Value, json};
use zorg_proto::StanzaCondition;

use super::event::{
    Actor, AdminCommand, AuthFailure, CertRef, Delivery, Direction, Event, KeyChange, LinkRefusal,
};
use super::record::{self, Record};

/// The Zorg code system of `AuditEvent.subtype`: its codes are the event names of the log
/// (`message_accepted` …).
pub const ZORG_EVENT: &str = "urn:zorg:audit-event";
/// Identifier system of XMPP addresses (accounts, sessions, server domains).
pub const ZORG_JID: &str = "urn:zorg:jid";
/// Identifier system of operating-system users who ran `zorg` commands.
pub const ZORG_OS_USER: &str = "urn:zorg:os-user";
/// Identifier system of message `id` attributes (chosen by the sender, so not unique).
pub const ZORG_MESSAGE_ID: &str = "urn:zorg:message-id";
/// Identifier system of configurations, by the SHA-256 of the file.
pub const ZORG_CONFIG: &str = "urn:zorg:config-sha256";
/// Identifier system of keys, by their public identifier.
pub const ZORG_KEY: &str = "urn:zorg:key-id";
/// Identifier system of X.509 certificate serial numbers (the issuer is the assigner).
pub const ZORG_CERT: &str = "urn:zorg:x509-serial";

#[path = "fhir_codes.rs"]
mod codes;
use codes::*;

/// Streams a Bundle: the head, one entry per record, the tail. Nothing is held in memory but
/// the entry being written, so an export of any size runs in constant memory.
pub struct BundleWriter<'a> {
    out: io::BufWriter<&'a mut dyn Write>,
    observer: String,
    entries: u64,
}

impl<'a> BundleWriter<'a> {
    /// Writes the Bundle's head. `observer` names this server (`AuditEvent.source.observer`).
    pub fn start(out: &'a mut dyn Write, observer: &str) -> io::Result<Self> {
        let mut out = io::BufWriter::new(out);
        let timestamp = Value::from(record::timestamp(record::now_ms()));
        write!(
            out,
            "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"timestamp\":{timestamp}"
        )?;
        Ok(Self {
            out,
            observer: observer.to_owned(),
            entries: 0,
        })
    }

    /// Writes one entry.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        // FHIR JSON allows no empty arrays: `entry` opens with the first entry.
        let sep = if self.entries == 0 {
            ",\"entry\":["
        } else {
            ","
        };
        self.entries += 1;
        let mut resource = audit_event(r, &self.observer);
        // serde_json sorts keys, but streaming FHIR parsers want `resourceType` first.
        if let Some(o) = resource.as_object_mut() {
            o.remove("resourceType");
        }
        let url = Value::from(full_url(r));
        let head = "\"resource\":{\"resourceType\":\"AuditEvent\",";
        write!(self.out, "{sep}{{\"fullUrl\":{url},{head}")?;
        // The rest of the resource's fields: never empty, so only its `{` goes.
        let rest = serde_json::to_vec(&resource)?;
        self.out.write_all(rest.get(1..).unwrap_or_default())?;
        self.out.write_all(b"}")
    }

    /// Writes the tail and flushes.
    pub fn finish(mut self) -> io::Result<()> {
        if self.entries > 0 {
            self.out.write_all(b"]")?;
        }
        self.out.write_all(b"}\n")?;
        self.out.flush()
    }
}

/// `urn:uuid:` made from the record's hash (stable across exports): a version 8 UUID
/// (RFC 9562) whose other bits are the hash's first bytes.
pub fn full_url(r: &Record) -> String {
    let h = record::hex(&r.hash[..16]);
    format!(
        "urn:uuid:{}-{}-8{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The AuditEvent for one record. Its `id` is `zorg-<seq>-<16 hex digits of the hash>`: the
/// sequence number finds the line in the log, the hash keeps ids of different servers apart.
pub fn audit_event(r: &Record, observer: &str) -> Value {
    // A FHIR string is never empty; the export names the server by its first domain.
    let observer = Some(observer)
        .filter(|o| !o.trim().is_empty())
        .unwrap_or("zorg");
    let m = map(&r.event, observer);
    let name = r.event.name();
    let own = json!({ "system": ZORG_EVENT, "code": name, "display": name.replace('_', " ") });
    let subtype: Vec<Value> = m.sub.map(Code::coding).into_iter().chain([own]).collect();
    let id = format!("zorg-{}-{}", r.seq, record::hex(&r.hash[..8]));
    let source = json!({
        "observer": { "display": observer },
        "type": [APPLICATION_SERVER.coding()],
    });
    obj([
        ("resourceType", Some("AuditEvent".into())),
        ("id", Some(id.into())),
        ("type", Some(m.kind.coding())),
        ("subtype", Some(subtype.into())),
        ("action", Some(m.action.into())),
        ("recorded", Some(r.time.clone().into())),
        ("outcome", Some(m.outcome.into())),
        ("outcomeDesc", m.outcome_desc.map(Value::from)),
        ("agent", array(m.agents)),
        ("source", Some(source)),
        ("entity", array(m.entities)),
    ])
}

/// What one event maps to, apart from what every AuditEvent has.
struct Mapped {
    kind: Code,
    sub: Option<Code>,
    action: &'static str,
    /// "0" success, "4" minor failure (the request was refused), "8" serious failure.
    outcome: &'static str,
    outcome_desc: Option<String>,
    agents: Vec<Value>,
    entities: Vec<Value>,
}

/// An event of type `kind` and subtype `sub`, action `action`, that succeeded.
fn out(kind: Code, sub: Option<Code>, action: &'static str) -> Mapped {
    Mapped {
        kind,
        sub,
        action,
        outcome: "0",
        outcome_desc: None,
        agents: Vec::new(),
        entities: Vec::new(),
    }
}

impl Mapped {
    fn agent(mut self, a: Value) -> Mapped {
        self.agents.push(a);
        self
    }
    fn entity(mut self, e: Entity) -> Mapped {
        self.entities.push(e.json());
        self
    }
    /// A failure: `serious` ("8") when the server could not act, else minor ("4"); `why` is
    /// made of typed labels only, never of text a client or peer sent.
    fn failed(mut self, serious: bool, why: String) -> Mapped {
        self.outcome = if serious { "8" } else { "4" };
        self.outcome_desc = Some(why);
        self
    }
}

/// The mapping of each event. Each arm names who acted (agents) and what was touched (the
/// entity's `what`); `rest` turns every other field into a detail.
fn map(ev: &Event, observer: &str) -> Mapped {
    let server = |requestor| server_agent(observer, requestor);
    let by = |a: &Actor| actor(a, observer);
    match ev {
        Event::ServerStarted { config_sha256, .. } => out(APP_ACTIVITY, Some(APP_START), "E")
            .agent(server(true))
            .entity(config(config_sha256).rest(ev, &["config_sha256"])),
        Event::ServerStopped {} => out(APP_ACTIVITY, Some(APP_STOP), "E").agent(server(true)),
        Event::ConfigChanged { config_sha256, .. } => {
            out(SECURITY_ALERT, Some(SOFTWARE_CONFIGURATION), "U")
                .agent(server(true))
                .entity(config(config_sha256).rest(ev, &["config_sha256"]))
        }
        Event::KeyChanged {
            change, id, by: a, ..
        } => {
            let action = if *change == KeyChange::Created {
                "C"
            } else {
                "U"
            };
            let key = Entity::new(SYSTEM_OBJECT, Some(SECURITY_RESOURCE)).what(ZORG_KEY, id);
            out(SECURITY_ALERT, Some(SECURITY_CONFIGURATION), action)
                .agent(by(a))
                .entity(key.rest(ev, &["id"]))
        }
        Event::AuthSucceeded { account, ip, .. } => out(USER_AUTHENTICATION, Some(LOGIN), "E")
            .agent(user(Some(account), Some(ip), true))
            .agent(server(false))
            .entity(person(Some(account)).rest(ev, &["account", "ip"])),
        Event::AuthFailed {
            account,
            ip,
            reason,
            ..
        } => {
            let account = account.as_deref();
            out(USER_AUTHENTICATION, Some(LOGIN), "E")
                .agent(user(account, Some(ip), true))
                .agent(server(false))
                .entity(person(account).rest(ev, &["account", "ip"]))
                .failed(
                    *reason == AuthFailure::TemporaryAuthFailure,
                    format!("login refused: {}", label(reason)),
                )
        }
        Event::SessionBound { session, ip, .. } => out(USER_AUTHENTICATION, None, "E")
            .agent(user(Some(session), Some(ip), true))
            .agent(server(false))
            .entity(person(Some(session)).rest(ev, &["session", "ip"])),
        // The record does not say whether the client or a timeout ended the session.
        Event::SessionUnbound { session } => out(USER_AUTHENTICATION, Some(LOGOUT), "E")
            .agent(user(Some(session), None, false))
            .agent(server(false))
            .entity(person(Some(session))),
        Event::AccountCreated { account, by: a } => out(SECURITY_ALERT, Some(USER_SECURITY), "C")
            .agent(by(a))
            .entity(person(Some(account)).lifecycle(CREATION)),
        Event::AccountChanged { account, by: a, .. } => {
            out(SECURITY_ALERT, Some(USER_SECURITY), "U")
                .agent(by(a))
                .entity(person(Some(account)).rest(ev, &["account"]))
        }
        Event::AccountDeleted { account, by: a } => out(SECURITY_ALERT, Some(USER_SECURITY), "D")
            .agent(by(a))
            .entity(person(Some(account))),
        Event::MessageAccepted {
            id, from, to, peer, ..
        } => {
            // From another organisation: an import through the peer server.
            let (kind, relay) = match peer {
                Some(p) => (
                    IMPORT,
                    Some(agent(APPLICATION, jid(p), false, network(p, "1"))),
                ),
                None => (PATIENT_RECORD, None),
            };
            let msg = message(id.as_deref()).rest(ev, &["id", "peer"]);
            out(kind, None, "C")
                .transfer(from, to)
                .agents_from(relay)
                .entity(msg)
        }
        Event::MessageDelivered { id, from, to, how } => {
            // Forwarded: the message leaves for another organisation's server.
            let (kind, action) = match how {
                Delivery::Forwarded => (EXPORT, "R"),
                Delivery::Stored => (PATIENT_RECORD, "C"),
                Delivery::Session | Delivery::FromStorage => (PATIENT_RECORD, "R"),
            };
            let msg = message(id.as_deref()).rest(ev, &["id"]);
            out(kind, None, action).transfer(from, to).entity(msg)
        }
        Event::MessageBounced {
            id,
            from,
            to,
            condition,
        } => {
            let (serious, why) = bounce(condition);
            out(PATIENT_RECORD, None, "E")
                .transfer(from, to)
                .entity(message(id.as_deref()).rest(ev, &["id"]))
                .failed(serious, format!("not delivered: {why}"))
        }
        Event::ArchiveQueried {
            by: reader,
            archive,
            ..
        } => out(QUERY, None, "R")
            .agent(agent(RECIPIENT, jid(reader), true, None))
            .entity(archive_of(archive).lifecycle(ACCESS).rest(ev, &["archive"])),
        Event::ArchiveRetracted {
            archive,
            by: author,
            message: id,
        } => out(PATIENT_RECORD, None, "D")
            .agent(agent(AUTHOR, jid(author), true, None))
            .entity(archive_of(archive))
            .entity(message(Some(id))),
        Event::ArchiveDeleted { archive, .. } => out(PATIENT_RECORD, None, "D")
            .agent(server(true))
            .entity(archive_of(archive).rest(ev, &["archive"])),
        Event::S2sAccepted {
            peer,
            local,
            direction,
            ip,
            certificate,
            ..
        } => out(USER_AUTHENTICATION, Some(NODE_AUTHENTICATION), "E")
            .link(peer, local, *direction, ip.as_ref())
            .entity(credentials(ev, certificate.as_ref())),
        // IHE ATNA reports a failed node authentication as a security alert.
        Event::S2sRefused {
            peer,
            local,
            direction,
            reason,
            ip,
            certificate,
        } => {
            use LinkRefusal as R;
            let serious = matches!(reason, R::Unreachable | R::Timeout | R::Other);
            out(SECURITY_ALERT, Some(NODE_AUTHENTICATION), "E")
                .link(peer, local, *direction, ip.as_ref())
                .entity(credentials(ev, certificate.as_ref()))
                .failed(serious, format!("link refused: {}", label(reason)))
        }
        Event::AdminAction {
            by: a,
            action,
            target,
        } => {
            let (kind, sub) = match action {
                AdminCommand::AuditVerify => (AUDIT_LOG_USED, None),
                _ => (SECURITY_ALERT, Some(RESTRICTED_FUNCTION)),
            };
            let mut e = Entity::new(SYSTEM_OBJECT, None).rest(ev, &["target"]);
            e.what = target.as_deref().and_then(|t| reference(None, t));
            out(kind, sub, admin_action(*action)).agent(by(a)).entity(e)
        }
        Event::AuditExported { by: a, .. } => out(AUDIT_LOG_USED, None, "R")
            .agent(by(a))
            .entity(audit_log().lifecycle(EXPORTED).rest(ev, &[])),
        Event::AuditPruned { .. } => out(AUDIT_LOG_USED, None, "D")
            .agent(server(true))
            .entity(audit_log().rest(ev, &[])),
        // A torn last line means a crash during a write, or someone cutting the file.
        Event::AuditRepaired { .. } => out(SECURITY_ALERT, None, "U")
            .agent(server(true))
            .entity(audit_log().rest(ev, &[])),
        Event::Checkpoint(_) => out(AUDIT_LOG_USED, None, "E")
            .agent(server(true))
            .entity(audit_log().rest(ev, &[])),
    }
}

fn admin_action(a: AdminCommand) -> &'static str {
    use AdminCommand as A;
    match a {
        A::UserAdd | A::KeysGenerate => "C",
        A::UserPassword | A::KeysRotate => "U",
        A::UserDelete => "D",
        A::UserList | A::KeysStatus | A::AuditVerify => "R",
    }
}

/// A bounce's RFC 6120 §8.3.3 condition, checked against the closed list so that only a
/// known name reaches `outcomeDesc`; serious when the fault is on the servers' side.
fn bounce(condition: &str) -> (bool, &'static str) {
    use StanzaCondition as C;
    match C::parse(condition) {
        Some(c) => (
            matches!(
                c,
                C::InternalServerError | C::RemoteServerTimeout | C::ResourceConstraint
            ),
            c.as_str(),
        ),
        None => (false, "unrecognised condition"),
    }
}

impl Mapped {
    fn agents_from(mut self, a: Option<Value>) -> Mapped {
        self.agents.extend(a);
        self
    }
    /// Sender and addressee of a message: DICOM names the sender of data the source.
    fn transfer(self, from: &str, to: &str) -> Mapped {
        self.agent(agent(SOURCE, jid(from), true, None))
            .agent(agent(DESTINATION, jid(to), false, None))
    }
    /// Both ends of a server-to-server link; whoever dialled is the requestor and the source.
    fn link(self, peer: &str, local: &str, dir: Direction, ip: Option<&IpAddr>) -> Mapped {
        let inbound = dir == Direction::Inbound;
        let (theirs, ours) = if inbound {
            (SOURCE, DESTINATION)
        } else {
            (DESTINATION, SOURCE)
        };
        let net = ip.and_then(ip_network).or_else(|| network(peer, "1"));
        self.agent(agent(theirs, jid(peer), inbound, net))
            .agent(agent(ours, jid(local), !inbound, None))
    }
}

/// A value's name as the log writes it (serde), so that FHIR and the log agree.
fn label<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// An object of the fields that have a value.
fn obj<const N: usize>(fields: [(&str, Option<Value>); N]) -> Value {
    let m: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect();
    Value::Object(m)
}

/// An array, or nothing for an empty one (FHIR JSON has no empty arrays).
fn array(v: Vec<Value>) -> Option<Value> {
    (!v.is_empty()).then_some(Value::Array(v))
}

/// A Reference by identifier; none for an empty value (FHIR strings are never empty).
fn reference<'a>(system: impl Into<Option<&'a str>>, value: &str) -> Option<Value> {
    let system = system.into().map(Value::from);
    (!value.is_empty()).then(|| {
        let id = obj([("system", system), ("value", Some(value.into()))]);
        json!({ "identifier": id, "display": value })
    })
}

fn jid(j: &str) -> Option<Value> {
    reference(ZORG_JID, j)
}

/// `agent.network`: type "1" for a machine name, "2" for an IP address.
fn network(address: &str, kind: &'static str) -> Option<Value> {
    (!address.is_empty()).then(|| json!({ "address": address, "type": kind }))
}

fn ip_network(ip: &IpAddr) -> Option<Value> {
    network(&ip.to_string(), "2")
}

fn agent(kind: Code, who: Option<Value>, requestor: bool, net: Option<Value>) -> Value {
    obj([
        ("type", Some(kind.concept())),
        ("who", who),
        ("requestor", Some(requestor.into())),
        ("network", net),
    ])
}

/// This server, the audit source, as an acting application.
fn server_agent(observer: &str, requestor: bool) -> Value {
    let who = json!({ "display": observer });
    agent(APPLICATION, Some(who), requestor, None)
}

/// The user of an account or session, from `ip`.
fn user(account: Option<&str>, ip: Option<&IpAddr>, requestor: bool) -> Value {
    agent(
        HUMAN_USER,
        account.and_then(jid),
        requestor,
        ip.and_then(ip_network),
    )
}

/// Who did an administrative act: always the requestor.
fn actor(by: &Actor, observer: &str) -> Value {
    match by {
        Actor::Server => server_agent(observer, true),
        Actor::Cli { os_user, host } => {
            let who = reference(ZORG_OS_USER, os_user);
            agent(HUMAN_USER, who, true, network(host, "1"))
        }
        Actor::Account { jid, ip } => user(Some(jid), Some(ip), true),
    }
}

/// An entity: a participant object of RFC 3881.
struct Entity {
    what: Option<Value>,
    kind: Code,
    role: Option<Code>,
    lifecycle: Option<Code>,
    details: Vec<Value>,
}

impl Entity {
    fn new(kind: Code, role: Option<Code>) -> Entity {
        Entity {
            what: None,
            kind,
            role,
            lifecycle: None,
            details: Vec::new(),
        }
    }
    /// Names the entity; an empty value names nothing.
    fn what(mut self, system: &str, value: &str) -> Entity {
        self.what = reference(system, value);
        self
    }
    fn lifecycle(mut self, c: Code) -> Entity {
        self.lifecycle = Some(c);
        self
    }
    /// Every field of `ev` but `skip` and those that name who acted (`by`, `from`, `to`,
    /// `peer`, `local`, `ip`) as a detail named as the log names it: nested fields with dots,
    /// one detail per element of a list, a security label whole (marking and scheme paired).
    fn rest(mut self, ev: &Event, skip: &[&str]) -> Entity {
        const AGENTS: [&str; 7] = ["event", "by", "from", "to", "peer", "local", "ip"];
        fn add(out: &mut Vec<Value>, name: &str, v: &Value) {
            let text = match v {
                Value::Object(o) if name != "labels" => {
                    for (k, x) in o {
                        add(out, &format!("{name}.{k}"), x);
                    }
                    return;
                }
                Value::Array(a) => {
                    for x in a {
                        add(out, name, x);
                    }
                    return;
                }
                Value::String(s) => s.clone(),
                Value::Null => return,
                other => other.to_string(),
            };
            if !text.is_empty() {
                out.push(json!({ "type": name, "valueString": text }));
            }
        }
        if let Ok(Value::Object(fields)) = serde_json::to_value(ev) {
            for (k, v) in &fields {
                if !AGENTS.contains(&k.as_str()) && !skip.contains(&k.as_str()) {
                    add(&mut self.details, k, v);
                }
            }
        }
        self
    }
    fn json(self) -> Value {
        obj([
            ("what", self.what),
            ("type", Some(self.kind.coding())),
            ("role", self.role.map(Code::coding)),
            ("lifecycle", self.lifecycle.map(Code::coding)),
            ("detail", array(self.details)),
        ])
    }
}

/// An account or session (a person's identity here).
fn person(jid: Option<&str>) -> Entity {
    Entity::new(PERSON, Some(SECURITY_USER)).what(ZORG_JID, jid.unwrap_or_default())
}

/// An account's message archive, named by its owner.
fn archive_of(owner: &str) -> Entity {
    Entity::new(SYSTEM_OBJECT, Some(DATA_REPOSITORY)).what(ZORG_JID, owner)
}

/// A message, by its `id` attribute when it has one.
fn message(id: Option<&str>) -> Entity {
    let e = Entity::new(SYSTEM_OBJECT, Some(DOMAIN_RESOURCE));
    e.what(ZORG_MESSAGE_ID, id.unwrap_or_default())
}

fn config(sha256: &str) -> Entity {
    Entity::new(SYSTEM_OBJECT, Some(SECURITY_RESOURCE)).what(ZORG_CONFIG, sha256)
}

/// The audit trail itself (DICOM: the audit log is a security resource).
fn audit_log() -> Entity {
    Entity::new(SYSTEM_OBJECT, Some(SECURITY_RESOURCE))
}

/// What a peer server proved itself with: its certificate (a serial number is unique per
/// issuer, so the issuer is the assigner) and the link's other fields.
fn credentials(ev: &Event, cert: Option<&CertRef>) -> Entity {
    let mut e = Entity::new(SYSTEM_OBJECT, Some(SECURITY_RESOURCE)).rest(ev, &[]);
    if let Some(c) = cert {
        e.what = reference(ZORG_CERT, &c.serial).map(|mut r| {
            if !c.issuer.is_empty() {
                r["identifier"]["assigner"] = json!({ "display": c.issuer });
            }
            r
        });
    }
    e
}

#[cfg(test)]
#[path = "fhir_tests.rs"]
mod tests;
