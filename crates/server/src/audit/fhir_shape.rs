//! A structural checker of FHIR R4 JSON: element names, cardinalities, types, and codes of
//! the required and audit value sets.

use std::collections::BTreeSet;

use serde_json::Value;

use super::super::ZORG_EVENT;
use super::super::codes::{DCM, ENTITY_TYPE, LIFECYCLE, OBJECT_ROLE, SOURCE_TYPE};

/// The elements of R4 AuditEvent, its parts and its data types (besides `id`,
/// `extension` and `modifierExtension`, which all have).
const AUDIT_EVENT: &str = "resourceType meta implicitRules language text contained type \
    subtype action period recorded outcome outcomeDesc purposeOfEvent agent source entity";
const AGENT: &str = "type role who altId name requestor location policy media network purposeOfUse";
const NETWORK: &str = "address type";
const SOURCE: &str = "site observer type";
const ENTITY: &str = "what type role lifecycle securityLabel name description query detail";
const DETAIL: &str = "type valueString valueBase64Binary";
const CODING: &str = "system version code display userSelected";
const CONCEPT: &str = "coding text";
const REFERENCE: &str = "reference type identifier display";
const IDENTIFIER: &str = "use type system value period assigner";
const BUNDLE: &str = "resourceType meta implicitRules language identifier type timestamp \
    total link entry signature";
const ENTRY: &str = "link fullUrl resource search request response";

#[derive(Default)]
struct Check(Vec<String>);

impl Check {
    fn fail(&mut self, path: &str, what: &str) {
        self.0.push(format!("{path}: {what}"));
    }
    /// An object with only the elements `names` (and the base ones).
    fn object(&mut self, v: &Value, path: &str, names: &str) -> bool {
        let Some(o) = v.as_object() else {
            self.fail(path, "not an object");
            return false;
        };
        let base = ["id", "extension", "modifierExtension"];
        for k in o.keys().filter(|k| !base.contains(&k.as_str())) {
            if !names.split_whitespace().any(|n| n == k) {
                self.fail(path, &format!("unknown element {k:?}"));
            }
        }
        true
    }
    fn string<'v>(&mut self, v: &'v Value, path: &str, required: bool) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            Value::Null if !required => None,
            _ => {
                self.fail(path, "missing or not a string");
                None
            }
        }
    }
    /// A code in `allowed`, or one that `allowed` accepts.
    fn code(&mut self, v: &Value, path: &str, allowed: impl Fn(&str) -> bool) {
        match self.string(v, path, true) {
            Some(c) if !allowed(c) => self.fail(path, &format!("{c:?} is not allowed")),
            _ => {}
        }
    }
    /// At least `min` items (none for an absent element), each checked by `each`.
    fn list(&mut self, v: &Value, p: &str, min: usize, each: impl Fn(&mut Self, &Value, &str)) {
        match v {
            Value::Null if min == 0 => {}
            Value::Array(a) if a.len() >= min => {
                for (i, x) in a.iter().enumerate() {
                    each(self, x, &format!("{p}[{i}]"));
                }
            }
            _ => self.fail(p, &format!("not an array of at least {min}")),
        }
    }
    /// A Coding of `system` (any if empty) with a code `allowed` accepts.
    fn coding(&mut self, v: &Value, p: &str, system: &str, allowed: impl Fn(&str) -> bool) {
        if self.object(v, p, CODING) {
            match self.string(&v["system"], &format!("{p}.system"), true) {
                Some(s) if !system.is_empty() && s != system => {
                    self.fail(p, &format!("system {s:?} is not {system:?}"))
                }
                _ => {}
            }
            self.code(&v["code"], &format!("{p}.code"), allowed);
            self.string(&v["display"], &format!("{p}.display"), false);
        }
    }
    fn concept(&mut self, v: &Value, p: &str) {
        if self.object(v, p, CONCEPT) {
            self.list(&v["coding"], &format!("{p}.coding"), 1, |c, x, p| {
                c.coding(x, p, "", |_| true)
            });
        }
    }
    fn reference(&mut self, v: &Value, p: &str) {
        if v.is_null() || !self.object(v, p, REFERENCE) {
            return;
        }
        self.string(&v["display"], &format!("{p}.display"), false);
        let id = &v["identifier"];
        if !id.is_null() && self.object(id, &format!("{p}.identifier"), IDENTIFIER) {
            self.string(&id["system"], &format!("{p}.identifier.system"), false);
            self.string(&id["value"], &format!("{p}.identifier.value"), true);
        }
    }
}

/// A code that is a number in `range`.
fn within(range: std::ops::RangeInclusive<u32>) -> impl Fn(&str) -> bool {
    move |c| c.parse().is_ok_and(|n| range.contains(&n))
}

fn audit_event(c: &mut Check, e: &Value, p: &str) {
    if !c.object(e, p, AUDIT_EVENT) {
        return;
    }
    c.code(&e["resourceType"], &format!("{p}.resourceType"), |t| {
        t == "AuditEvent"
    });
    c.code(&e["id"], &format!("{p}.id"), is_id);
    // type: DICOM CID 400; subtype: CID 401 or the Zorg event names.
    c.coding(
        &e["type"],
        &format!("{p}.type"),
        DCM,
        within(110_100..=110_114),
    );
    c.list(
        &e["subtype"],
        &format!("{p}.subtype"),
        0,
        |c, s, p| match s["system"].as_str() {
            Some(DCM) => c.coding(s, p, DCM, within(110_120..=110_147)),
            _ => c.coding(s, p, ZORG_EVENT, |_| true),
        },
    );
    c.code(&e["action"], &format!("{p}.action"), |a| {
        "CRUDE".contains(a) && a.len() == 1
    });
    c.code(&e["recorded"], &format!("{p}.recorded"), is_instant);
    c.code(&e["outcome"], &format!("{p}.outcome"), |o| {
        ["0", "4", "8", "12"].contains(&o)
    });
    c.string(&e["outcomeDesc"], &format!("{p}.outcomeDesc"), false);
    c.list(&e["agent"], &format!("{p}.agent"), 1, agent);
    let s = &e["source"];
    if c.object(s, &format!("{p}.source"), SOURCE) {
        if s["observer"].is_null() {
            c.fail(p, "source.observer (1..1) missing");
        }
        c.reference(&s["observer"], &format!("{p}.source.observer"));
        c.list(&s["type"], &format!("{p}.source.type"), 0, |c, t, p| {
            c.coding(t, p, SOURCE_TYPE, within(1..=9))
        });
    }
    c.list(&e["entity"], &format!("{p}.entity"), 0, entity);
}

fn agent(c: &mut Check, a: &Value, p: &str) {
    if !c.object(a, p, AGENT) {
        return;
    }
    if !a["requestor"].is_boolean() {
        c.fail(p, "requestor (1..1 boolean) missing");
    }
    if !a["type"].is_null() {
        c.concept(&a["type"], &format!("{p}.type"));
    }
    c.list(&a["role"], &format!("{p}.role"), 0, |c, r, p| {
        c.concept(r, p)
    });
    c.reference(&a["who"], &format!("{p}.who"));
    c.string(&a["name"], &format!("{p}.name"), false);
    let n = &a["network"];
    if !n.is_null() && c.object(n, &format!("{p}.network"), NETWORK) {
        c.string(&n["address"], &format!("{p}.network.address"), true);
        c.code(&n["type"], &format!("{p}.network.type"), within(1..=5));
    }
}

fn entity(c: &mut Check, e: &Value, p: &str) {
    if !c.object(e, p, ENTITY) {
        return;
    }
    c.reference(&e["what"], &format!("{p}.what"));
    for (name, system, max) in [("type", ENTITY_TYPE, 4), ("role", OBJECT_ROLE, 24)] {
        if !e[name].is_null() {
            c.coding(&e[name], &format!("{p}.{name}"), system, within(1..=max));
        }
    }
    if !e["lifecycle"].is_null() {
        c.coding(
            &e["lifecycle"],
            &format!("{p}.lifecycle"),
            LIFECYCLE,
            within(1..=15),
        );
    }
    if !e["name"].is_null() && !e["query"].is_null() {
        c.fail(p, "sev-1: a name or a query, not both");
    }
    c.list(&e["detail"], &format!("{p}.detail"), 0, |c, d, p| {
        if c.object(d, p, DETAIL) {
            c.string(&d["type"], &format!("{p}.type"), true);
            c.string(&d["valueString"], &format!("{p}.valueString"), false);
            if d["valueString"].is_null() == d["valueBase64Binary"].is_null() {
                c.fail(p, "needs exactly one value[x]");
            }
        }
    });
}

/// FHIR JSON has no nulls, and no empty strings, arrays or objects.
fn json_rules(c: &mut Check, v: &Value, p: &str) {
    match v {
        Value::Null => c.fail(p, "null"),
        Value::String(s) if s.is_empty() => c.fail(p, "empty string"),
        Value::Array(a) if a.is_empty() => c.fail(p, "empty array"),
        Value::Object(o) if o.is_empty() => c.fail(p, "empty object"),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                json_rules(c, x, &format!("{p}[{i}]"));
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                json_rules(c, x, &format!("{p}.{k}"));
            }
        }
        _ => {}
    }
}

/// The problems of a Bundle that should hold `n` AuditEvents; none when it is good.
pub fn bundle(b: &Value, n: usize) -> Vec<String> {
    let mut c = Check::default();
    json_rules(&mut c, b, "Bundle");
    if !c.object(b, "Bundle", BUNDLE) {
        return c.0;
    }
    c.code(&b["resourceType"], "Bundle.resourceType", |t| t == "Bundle");
    c.code(&b["type"], "Bundle.type", |t| t == "collection");
    c.code(&b["timestamp"], "Bundle.timestamp", is_instant);
    let urls = std::cell::RefCell::new(BTreeSet::new());
    c.list(&b["entry"], "Bundle.entry", n.min(1), |c, e, p| {
        if c.object(e, p, ENTRY) {
            c.code(&e["fullUrl"], &format!("{p}.fullUrl"), is_uuid_urn);
            if !urls.borrow_mut().insert(e["fullUrl"].to_string()) {
                c.fail(p, "bdl-7: the fullUrl is repeated");
            }
            audit_event(c, &e["resource"], &format!("{p}.resource"));
        }
    });
    if urls.borrow().len() != n {
        c.fail("Bundle.entry", &format!("not {n} entries"));
    }
    c.0
}

/// FHIR `id`: `[A-Za-z0-9\-\.]{1,64}`.
fn is_id(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    (1..=64).contains(&s.len()) && s.bytes().all(ok)
}

/// `urn:uuid:` and 8-4-4-4-12 lower-case hexadecimal digits.
fn is_uuid_urn(s: &str) -> bool {
    let Some(u) = s.strip_prefix("urn:uuid:") else {
        return false;
    };
    let hex = |g: &str| {
        g.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    u.split('-').map(str::len).eq([8, 4, 4, 4, 12]) && u.split('-').all(hex)
}

/// Whether `s[at..at + len]` is written in digits only and is a number in `lo..=hi`.
fn num(s: &str, at: usize, len: usize, lo: u32, hi: u32) -> bool {
    let ok = |d: &str| {
        d.bytes().all(|b| b.is_ascii_digit()) && d.parse().is_ok_and(|n| (lo..=hi).contains(&n))
    };
    s.get(at..at + len).is_some_and(ok)
}

/// FHIR `instant`: `YYYY-MM-DDThh:mm:ss(.s+)?(Z|(+|-)hh:mm)` within its regex's ranges.
pub fn is_instant(s: &str) -> bool {
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    let fields = [
        (0, 4, 1, 9999),
        (5, 2, 1, 12),
        (8, 2, 1, 31),
        (11, 2, 0, 23),
        (14, 2, 0, 59),
        (17, 2, 0, 60),
    ];
    if s.len() < 20
        || seps.iter().any(|&(i, c)| s.as_bytes()[i] != c)
        || !fields
            .iter()
            .all(|&(at, len, lo, hi)| num(s, at, len, lo, hi))
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    let b = rest.as_bytes();
    let zone = b.len() == 6 && matches!(b[0], b'+' | b'-') && b[3] == b':';
    let zone =
        zone && ((num(rest, 1, 2, 0, 13) && num(rest, 4, 2, 0, 59)) || &rest[1..] == "14:00");
    rest == "Z" || zone
}

/// A record's values as strings (numbers and booleans written out), without the event's
/// tag and an actor's kind; a security label whole, as the export keeps it.
pub fn leaves(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, key: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(_) if key == "labels" => {
                out.insert(v.to_string());
            }
            Value::Object(o) => {
                for (k, x) in o {
                    if !(k == "event" || (key == "by" && k == "kind")) {
                        walk(x, k, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::String(s) if s.is_empty() => {}
            Value::String(s) => {
                out.insert(s.clone());
            }
            Value::Null => {}
            other => {
                out.insert(other.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Every string in a resource.
pub fn strings(v: &Value) -> BTreeSet<String> {
    match v {
        Value::String(s) => BTreeSet::from([s.clone()]),
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::Object(o) => o.values().flat_map(strings).collect(),
        _ => BTreeSet::new(),
    }
}

/// The strings of a resource that name data rather than codes: who and what (identifier
/// values and displays), network addresses and detail values.
pub fn data_strings(e: &Value) -> Vec<String> {
    let mut refs = vec![&e["source"]["observer"]];
    let mut out = Vec::new();
    for a in e["agent"].as_array().into_iter().flatten() {
        refs.push(&a["who"]);
        out.extend(a["network"]["address"].as_str().map(str::to_owned));
    }
    for x in e["entity"].as_array().into_iter().flatten() {
        refs.push(&x["what"]);
        let details = x["detail"].as_array().into_iter().flatten();
        out.extend(details.filter_map(|d| d["valueString"].as_str().map(str::to_owned)));
    }
    for r in refs {
        let id = &r["identifier"];
        for s in [&r["display"], &id["value"], &id["assigner"]["display"]] {
            out.extend(s.as_str().map(str::to_owned));
        }
    }
    out
}
