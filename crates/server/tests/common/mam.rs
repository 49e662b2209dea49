//! Helpers for the archive tests (XEP-0313): running a query, reading its results.

use zorg_proto::{Element, ns};

use super::{Client, TestServer};

pub fn body(e: &Element) -> Option<String> {
    e.get_child("body", ns::CLIENT).map(|b| b.text())
}

/// The stanza-id alice's archive gave a delivered message.
pub fn stanza_id(e: &Element, by: &str) -> String {
    e.children()
        .find(|c| c.is("stanza-id", ns::SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id"))
        .unwrap_or_else(|| panic!("no stanza-id by {by}: {}", e.to_xml("")))
        .to_owned()
}

/// Sends a MAM query and collects (result id, forwarded message) until the `fin`, returning
/// them with the `fin` element.
pub async fn query(c: &mut Client, qid: &str, inner: &str) -> (Vec<(String, Element)>, Element) {
    c.send(&format!(
        "<iq type='set' id='{qid}'><query xmlns='urn:xmpp:mam:2' queryid='{qid}'>{inner}</query></iq>"
    ))
    .await;
    let mut out = Vec::new();
    loop {
        let e = c
            .expect_next("a result or the fin", |e| {
                (e.name() == "message" && e.has_child("result", ns::MAM))
                    || (e.name() == "iq" && e.attr("id") == Some(qid))
            })
            .await;
        if e.name() == "iq" {
            assert_eq!(e.attr("type"), Some("result"), "{}", e.to_xml(""));
            let fin = e.get_child("fin", ns::MAM).expect("fin").clone();
            assert_eq!(fin.attr("queryid"), Some(qid));
            return (out, fin);
        }
        let r = e.get_child("result", ns::MAM).unwrap();
        assert_eq!(r.attr("queryid"), Some(qid));
        let fwd = r.get_child("forwarded", ns::FORWARD).expect("forwarded");
        assert!(
            fwd.has_child("delay", ns::DELAY),
            "each result has its time"
        );
        let m = fwd
            .get_child("message", ns::CLIENT)
            .expect("message")
            .clone();
        out.push((r.attr("id").unwrap().to_owned(), m));
    }
}

pub fn rsm(fin: &Element, name: &str) -> Option<String> {
    fin.get_child("set", ns::RSM)
        .and_then(|s| s.get_child(name, ns::RSM))
        .map(|e| e.text())
}

pub fn with_bob() -> &'static str {
    "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>\
     <value>urn:xmpp:mam:2</value></field><field var='with'><value>bob@localhost</value></field></x>"
}

pub async fn users(t: &TestServer) {
    for u in ["alice", "bob"] {
        t.add_user(&format!("{u}@localhost"), "pass").await;
    }
}
