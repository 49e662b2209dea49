//! XEP-0357 §5 and §6: the `<enable/>` and `<disable/>` requests an account's client sends, parsed
//! strictly and bounded, since what they carry is stored and sent on with every notification.

use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

/// FORM_TYPE of the form an app server asks to get back with every publish (§5).
pub const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
/// FORM_TYPE of the summary inside a notification (§7).
pub const SUMMARY: &str = "urn:xmpp:push:summary";

/// RFC 7622 §3.1: three parts of at most 1023 bytes and two separators.
const MAX_JID: usize = 3071;
/// A node is an opaque token from the app server; real ones are tens of bytes.
const MAX_NODE: usize = 1024;
/// The serialised publish-options form, stored per registration and sent with each publish.
pub(super) const MAX_FORM: usize = 4096;
/// Fields in a publish-options form, and values per field.
const MAX_FIELDS: usize = 32;
const MAX_VALUES: usize = 16;

/// A request from the account's own client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `<enable jid node>` with an optional publish-options form.
    Enable {
        /// The app server's JID, normalised.
        service: String,
        /// The node it provisioned.
        node: String,
        /// The sanitised publish-options form (`<x type='submit'>` with fields and values only).
        options: Option<Element>,
    },
    /// `<disable jid [node]>`: without node, every node of that app server.
    Disable {
        /// The app server's JID, normalised.
        service: String,
        /// One node, or all.
        node: Option<String>,
    },
}

pub(super) fn bad(text: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::BadRequest).with_text(text)
}

/// Refuses attributes other than `allowed` (namespaced ones included).
fn only_attrs(el: &Element, allowed: &[&str]) -> Result<(), StanzaError> {
    match el
        .attrs()
        .iter()
        .find(|a| !a.ns.is_empty() || !allowed.contains(&a.name.as_str()))
    {
        Some(_) => Err(bad(&format!("unknown attribute on <{}/>", el.name()))),
        None => Ok(()),
    }
}

fn service_jid(el: &Element) -> Result<String, StanzaError> {
    let raw = el
        .attr("jid")
        .ok_or_else(|| bad("the 'jid' attribute of the push service is required"))?;
    if raw.len() > MAX_JID {
        return Err(StanzaError::new(StanzaCondition::JidMalformed));
    }
    Jid::new(raw)
        .map(|j| j.to_string())
        .map_err(|_| StanzaError::new(StanzaCondition::JidMalformed))
}

fn node_attr(el: &Element) -> Result<Option<String>, StanzaError> {
    match el.attr("node") {
        None => Ok(None),
        Some("") => Err(bad("the 'node' attribute is empty")),
        Some(n) if n.len() > MAX_NODE => Err(bad("the 'node' attribute is too long")),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

/// Checks a publish-options form and rebuilds it from its fields and values only, so that what
/// is stored and sent on is exactly what was checked (no labels, no instructions, no extras).
fn publish_options(x: &Element) -> Result<Element, StanzaError> {
    only_attrs(x, &["type"])?;
    if !matches!(x.attr("type"), None | Some("submit")) {
        return Err(bad("publish-options must be a form of type 'submit'"));
    }
    let mut out = Element::new("x", ns::DATA_FORMS).with_attr("type", "submit");
    let mut form_type = None;
    let mut fields = 0;
    for f in x.children() {
        if !f.is("field", ns::DATA_FORMS) {
            return Err(bad("publish-options may hold only fields"));
        }
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(bad("too many publish-options fields"));
        }
        only_attrs(f, &["var", "type", "label"])?;
        let var = f
            .attr("var")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("a publish-options field needs a 'var'"))?;
        let mut field = Element::new("field", ns::DATA_FORMS).with_attr("var", var);
        let mut values = 0;
        for v in f.children() {
            if !v.is("value", ns::DATA_FORMS) || v.child_count() != 0 || !v.attrs().is_empty() {
                return Err(bad("a publish-options field may hold only text values"));
            }
            values += 1;
            if values > MAX_VALUES {
                return Err(bad("too many values in a publish-options field"));
            }
            if var == "FORM_TYPE" {
                form_type = Some(v.text());
            }
            field.push_child(Element::new("value", ns::DATA_FORMS).with_text(v.text()));
        }
        out.push_child(field);
    }
    if form_type.as_deref() != Some(PUBLISH_OPTIONS) {
        return Err(bad(
            "the form's FORM_TYPE must be http://jabber.org/protocol/pubsub#publish-options",
        ));
    }
    if out.to_xml(ns::CLIENT).len() > MAX_FORM {
        return Err(bad("the publish-options form is too large"));
    }
    Ok(out)
}

impl Request {
    /// Parses the payload of an IQ set: `<enable/>` or `<disable/>` in `urn:xmpp:push:0`.
    pub fn parse(el: &Element) -> Result<Request, StanzaError> {
        match (el.ns(), el.name()) {
            (ns::PUSH, "enable") => {
                only_attrs(el, &["jid", "node"])?;
                let service = service_jid(el)?;
                // The schema (§11) requires a node; without one the app server could not tell
                // its devices apart.
                let node = node_attr(el)?.ok_or_else(|| bad("the 'node' attribute is required"))?;
                let mut options = None;
                for c in el.children() {
                    if !c.is("x", ns::DATA_FORMS) || options.is_some() {
                        return Err(bad("<enable/> may hold one publish-options form only"));
                    }
                    options = Some(publish_options(c)?);
                }
                Ok(Request::Enable {
                    service,
                    node,
                    options,
                })
            }
            (ns::PUSH, "disable") => {
                only_attrs(el, &["jid", "node"])?;
                if el.child_count() != 0 {
                    return Err(bad("<disable/> has no children"));
                }
                Ok(Request::Disable {
                    service: service_jid(el)?,
                    node: node_attr(el)?,
                })
            }
            _ => Err(StanzaError::new(StanzaCondition::ServiceUnavailable)),
        }
    }

    /// The request as an element (for clients and tests).
    pub fn to_element(&self) -> Element {
        match self {
            Request::Enable {
                service,
                node,
                options,
            } => {
                let mut e = Element::new("enable", ns::PUSH)
                    .with_attr("jid", service.as_str())
                    .with_attr("node", node.as_str());
                if let Some(o) = options {
                    e.push_child(o.clone());
                }
                e
            }
            Request::Disable { service, node } => {
                let mut e = Element::new("disable", ns::PUSH).with_attr("jid", service.as_str());
                if let Some(n) = node {
                    e.set_attr("node", n.as_str());
                }
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zorg_proto::framing::{Limits, parse_element};

    fn el(xml: &str) -> Element {
        parse_element(xml, Limits::default()).unwrap()
    }

    fn cond(xml: &str) -> StanzaCondition {
        Request::parse(&el(xml)).unwrap_err().condition
    }

    /// The publish-options form of XEP-0357's example 7.
    const OPTS: &str = "<x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
        <field var='secret'><value>eruio234vzxc2kla-91</value></field></x>";

    #[test]
    fn enable_and_disable_round_trip() {
        for xml in [
            "<enable xmlns='urn:xmpp:push:0' jid='push-5.client.example' node='yxs32uqsflafdk3iuqo'/>"
                .to_owned(),
            format!("<enable xmlns='urn:xmpp:push:0' jid='push.example' node='n'>{OPTS}</enable>"),
            "<disable xmlns='urn:xmpp:push:0' jid='push-5.client.example'/>".to_owned(),
            "<disable xmlns='urn:xmpp:push:0' jid='a@push.example/r' node='n'/>".to_owned(),
        ] {
            let parsed = Request::parse(&el(&xml)).unwrap();
            assert_eq!(parsed.to_element(), el(&xml), "{xml}");
            assert_eq!(Request::parse(&parsed.to_element()).unwrap(), parsed);
        }
    }

    #[test]
    fn enable_keeps_the_form_and_normalises_the_jid() {
        let r = Request::parse(&el(&format!(
            "<enable xmlns='urn:xmpp:push:0' jid='Push.Example' node='n'>{OPTS}</enable>"
        )))
        .unwrap();
        let Request::Enable {
            service, options, ..
        } = r
        else {
            panic!("not an enable");
        };
        assert_eq!(service, "push.example");
        let form = options.unwrap();
        assert_eq!(form, el(OPTS));
        // A form without a type, with labels, is accepted and stored without them.
        let r = Request::parse(&el(
            "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
             <field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
             <field var='token' label='Token'><value>t</value></field></x></enable>",
        ))
        .unwrap();
        let Request::Enable { options, .. } = r else {
            panic!("not an enable");
        };
        let form = options.unwrap();
        assert_eq!(form.attr("type"), Some("submit"));
        assert!(form.children().all(|f| f.attr("label").is_none()));
    }

    #[test]
    fn bad_input_is_refused() {
        use StanzaCondition::{BadRequest, JidMalformed};
        let cases = [
            ("<enable xmlns='urn:xmpp:push:0' node='n'/>", BadRequest),
            ("<enable xmlns='urn:xmpp:push:0' jid='p'/>", BadRequest),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node=''/>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n' extra='1'/>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='@bad' node='n'/>",
                JidMalformed,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='' node='n'/>",
                JidMalformed,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><foo/></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>urn:other</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data' type='form'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field><value>v</value></field></x></enable>",
                BadRequest,
            ),
            (
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='a'><value><b/></value></field></x></enable>",
                BadRequest,
            ),
            ("<disable xmlns='urn:xmpp:push:0'/>", BadRequest),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='p' node='n' x='y'/>",
                BadRequest,
            ),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='p'><x/></disable>",
                BadRequest,
            ),
            (
                "<disable xmlns='urn:xmpp:push:0' jid='a@b@c'/>",
                JidMalformed,
            ),
        ];
        for (xml, want) in cases {
            assert_eq!(cond(xml), want, "{xml}");
        }
        // Sizes are bounded.
        let long = "n".repeat(MAX_NODE + 1);
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='{long}'/>"
            )),
            BadRequest
        );
        let long = format!("{}.example", "a".repeat(MAX_JID));
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='{long}' node='n'/>"
            )),
            JidMalformed
        );
        let many: String = (0..=MAX_FIELDS)
            .map(|i| format!("<field var='f{i}'><value>v</value></field>"))
            .collect();
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 {many}</x></enable>"
            )),
            BadRequest
        );
        let big = "v".repeat(MAX_FORM);
        assert_eq!(
            cond(&format!(
                "<enable xmlns='urn:xmpp:push:0' jid='p' node='n'><x xmlns='jabber:x:data'>\
                 <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
                 <field var='big'><value>{big}</value></field></x></enable>"
            )),
            BadRequest
        );
    }
}
