//! Parsing an archive query: the XEP-0004 form of XEP-0313 §4.1 (with the `#extended`
//! fields), XEP-0059 paging and `<flip-page/>`. Strict: unknown fields, bad dates and oversized
//! values are `bad-request`, never ignored.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zorg_proto::jid::Jid;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::storage::archive::{ArchiveQuery, Page};

/// Results per page when the client does not say.
pub const DEFAULT_MAX: u32 = 50;
/// Most results per page, whatever the client asks.
pub const MAX_MAX: u32 = 250;
/// Most ids in the `ids` field.
const MAX_IDS: usize = 250;
/// Longest id, queryid or JID accepted.
const MAX_TEXT: usize = 1024;

/// A parsed `<query/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Echoed in every result.
    pub queryid: Option<String>,
    /// What to fetch.
    pub archive: ArchiveQuery,
    /// Return the page newest first.
    pub flip: bool,
}

fn bad(text: &str) -> StanzaError {
    StanzaError::new(StanzaCondition::BadRequest).with_text(text)
}

fn short(s: String, what: &str) -> Result<String, StanzaError> {
    if s.len() > MAX_TEXT {
        return Err(bad(&format!("the {what} is too long")));
    }
    Ok(s)
}

/// Parses an XEP-0082 date-time into Unix milliseconds.
fn stamp(s: &str) -> Result<i64, StanzaError> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339)
        .map_err(|_| bad("start and end are XEP-0082 date-times, e.g. 2026-11-23T10:00:00Z"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Parses the query element of an IQ set.
pub fn parse(q: &Element) -> Result<Query, StanzaError> {
    if q.attr("node").is_some() {
        return Err(
            StanzaError::new(StanzaCondition::ItemNotFound).with_text("this archive has no nodes")
        );
    }
    let queryid = q
        .attr("queryid")
        .map(|s| short(s.to_owned(), "queryid"))
        .transpose()?;
    let mut archive = ArchiveQuery::new(Page::Forward(None), DEFAULT_MAX);
    let mut flip = false;
    for child in q.children() {
        match (child.ns(), child.name()) {
            (ns::DATA_FORMS, "x") => fields(child, &mut archive)?,
            (ns::RSM, "set") => paging(child, &mut archive)?,
            (ns::MAM, "flip-page") => flip = true,
            _ => return Err(bad("unexpected element in the archive query")),
        }
    }
    Ok(Query {
        queryid,
        archive,
        flip,
    })
}

fn fields(x: &Element, a: &mut ArchiveQuery) -> Result<(), StanzaError> {
    if !matches!(x.attr("type"), Some("submit")) {
        return Err(bad("the query form must be of type submit"));
    }
    for f in x.children().filter(|c| c.is("field", ns::DATA_FORMS)) {
        let values: Vec<String> = f
            .children()
            .filter(|v| v.is("value", ns::DATA_FORMS))
            .map(Element::text)
            .collect();
        let one = || -> Result<String, StanzaError> {
            match values.as_slice() {
                [v] => short(v.clone(), "field value"),
                _ => Err(bad("this field takes exactly one value")),
            }
        };
        match f.attr("var").unwrap_or("") {
            "FORM_TYPE" => {
                if one()? != ns::MAM {
                    return Err(bad("FORM_TYPE must be urn:xmpp:mam:2"));
                }
            }
            "with" => {
                let j = Jid::new(&one()?).map_err(|_| {
                    StanzaError::new(StanzaCondition::JidMalformed)
                        .with_text("'with' is not a valid JID")
                })?;
                a.with = Some((j.to_bare().to_string(), j.resource().map(|r| r.to_string())));
            }
            "start" => a.start = Some(stamp(&one()?)?),
            "end" => a.end = Some(stamp(&one()?)?),
            "after-id" => a.after_id = Some(one()?),
            "before-id" => a.before_id = Some(one()?),
            "ids" => {
                if values.len() > MAX_IDS {
                    return Err(bad("too many ids in one query"));
                }
                for v in values {
                    a.ids.push(short(v, "id")?);
                }
            }
            _ => return Err(bad("unknown field in the archive query form")),
        }
    }
    Ok(())
}

fn paging(set: &Element, a: &mut ArchiveQuery) -> Result<(), StanzaError> {
    for c in set.children() {
        if c.ns() != ns::RSM {
            return Err(bad("unexpected element in the result set"));
        }
        let text = c.text();
        match c.name() {
            "max" => {
                let n: u32 = text
                    .trim()
                    .parse()
                    .map_err(|_| bad("max is a non-negative number"))?;
                a.max = n.min(MAX_MAX);
            }
            "after" => a.page = Page::Forward(Some(short(text, "after id")?)),
            "before" if text.is_empty() => a.page = Page::Backward(None),
            "before" => a.page = Page::Backward(Some(short(text, "before id")?)),
            "index" => {
                return Err(StanzaError::new(StanzaCondition::FeatureNotImplemented)
                    .with_text("page by id (after/before), not by index"));
            }
            _ => return Err(bad("unexpected element in the result set")),
        }
    }
    Ok(())
}

/// The empty form returned for an IQ get (XEP-0313 §4.1.1), with the `#extended` fields.
pub fn form() -> Element {
    let field = |var: &str, ty: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", ty)
    };
    Element::new("query", ns::MAM).with_child(
        Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(
                field("FORM_TYPE", "hidden")
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::MAM)),
            )
            .with_child(field("with", "jid-single"))
            .with_child(field("start", "text-single"))
            .with_child(field("end", "text-single"))
            .with_child(field("after-id", "text-single"))
            .with_child(field("before-id", "text-single"))
            .with_child(field("ids", "text-multi")),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(xml: &str) -> Result<Query, StanzaError> {
        let el = zorg_proto::parse_element(xml, zorg_proto::Limits::default()).unwrap();
        parse(&el)
    }

    const X: &str = "<x xmlns='jabber:x:data' type='submit'>\
        <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>";

    #[test]
    fn empty_query_is_the_first_page_of_everything() {
        let r = q("<query xmlns='urn:xmpp:mam:2' queryid='f1'/>").unwrap();
        assert_eq!(r.queryid.as_deref(), Some("f1"));
        assert_eq!(r.archive.page, Page::Forward(None));
        assert_eq!(r.archive.max, DEFAULT_MAX);
        assert!(!r.flip);
    }

    #[test]
    fn fields_paging_and_flip() {
        let r = q(&format!(
            "<query xmlns='urn:xmpp:mam:2'>{X}\
             <field var='with'><value>Bob@Example.org/Phone</value></field>\
             <field var='start'><value>2026-11-23T10:00:00Z</value></field>\
             <field var='end'><value>2026-11-23T11:00:00.500+01:00</value></field>\
             <field var='after-id'><value>a1</value></field>\
             <field var='before-id'><value>b1</value></field>\
             <field var='ids'><value>i1</value><value>i2</value></field></x>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>1000</max><before/></set>\
             <flip-page/></query>"
        ))
        .unwrap();
        let a = r.archive;
        assert_eq!(
            a.with,
            Some(("bob@example.org".into(), Some("Phone".into())))
        );
        assert_eq!(a.start, Some(1_795_428_000_000));
        assert_eq!(a.end, Some(1_795_428_000_000 + 500));
        assert_eq!(a.after_id.as_deref(), Some("a1"));
        assert_eq!(a.before_id.as_deref(), Some("b1"));
        assert_eq!(a.ids, ["i1", "i2"]);
        assert_eq!(a.max, MAX_MAX);
        assert_eq!(a.page, Page::Backward(None));
        assert!(r.flip);
        let r = q(
            "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'>\
             <max>10</max><after>x9</after></set></query>",
        )
        .unwrap();
        assert_eq!(r.archive.page, Page::Forward(Some("x9".into())));
        assert_eq!(r.archive.max, 10);
    }

    #[test]
    fn bad_queries_are_refused() {
        let cond = |xml: &str| q(xml).unwrap_err().condition;
        use StanzaCondition::*;
        assert_eq!(
            cond(&format!(
                "<query xmlns='urn:xmpp:mam:2'>{X}<field var='colour'><value>x</value></field></x></query>"
            )),
            BadRequest
        );
        assert_eq!(
            cond(&format!(
                "<query xmlns='urn:xmpp:mam:2'>{X}<field var='start'><value>yesterday</value></field></x></query>"
            )),
            BadRequest
        );
        assert_eq!(
            cond(&format!(
                "<query xmlns='urn:xmpp:mam:2'>{X}<field var='with'><value>@@</value></field></x></query>"
            )),
            JidMalformed
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>\
                  <field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>"
            ),
            BadRequest
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>"
            ),
            BadRequest
        );
        assert_eq!(
            cond(
                "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set></query>"
            ),
            FeatureNotImplemented
        );
        assert_eq!(
            cond("<query xmlns='urn:xmpp:mam:2' node='x'/>"),
            ItemNotFound
        );
        assert_eq!(
            cond("<query xmlns='urn:xmpp:mam:2'><surprise/></query>"),
            BadRequest
        );
        let long = "x".repeat(MAX_TEXT + 1);
        assert_eq!(
            cond(&format!("<query xmlns='urn:xmpp:mam:2' queryid='{long}'/>")),
            BadRequest
        );
    }

    #[test]
    fn the_form_lists_the_extended_fields() {
        let f = form();
        let x = f.get_child("x", ns::DATA_FORMS).expect("a data form");
        let vars: Vec<_> = x
            .children()
            .filter(|c| c.is("field", ns::DATA_FORMS))
            .filter_map(|c| c.attr("var"))
            .collect();
        for var in [
            "FORM_TYPE",
            "with",
            "start",
            "end",
            "after-id",
            "before-id",
            "ids",
        ] {
            assert!(vars.contains(&var), "{var} missing: {vars:?}");
        }
    }
}
