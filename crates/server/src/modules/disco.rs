//! XEP-0030 Service Discovery for the server and for accounts, and the XEP-0115 verification
//! string that lets clients cache the server's features.

use std::sync::Arc;

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::config::Config;
use crate::server::Server;
use crate::storage::AccountStore;

/// The XEP-0115 node naming this software.
pub const CAPS_NODE: &str = "urn:zorg:server";

/// Server identity (XEP-0030 registry: category `server`, type `im`).
const IDENTITY: (&str, &str, &str) = ("server", "im", "Zorg");

/// Features the server announces, sorted as XEP-0115 wants them.
pub fn server_features(config: &Config) -> Vec<&'static str> {
    let mut f = vec![
        ns::DISCO_INFO,
        ns::DISCO_ITEMS,
        ns::PING,
        ns::TIME,
        ns::BLOCKING,
        ns::CARBONS,
        ns::OFFLINE,
        ns::REGISTER,
        ns::SID,
    ];
    if config.modules.version {
        f.push(ns::VERSION);
    }
    f.sort_unstable();
    f
}

/// XEP-0115 §5.1 verification string over the server's identity and features.
pub fn server_caps_ver(config: &Config) -> String {
    let mut s = format!("{}/{}//{}<", IDENTITY.0, IDENTITY.1, IDENTITY.2);
    for f in server_features(config) {
        s.push_str(f);
        s.push('<');
    }
    B64.encode(digest::digest(
        &digest::SHA1_FOR_LEGACY_USE_ONLY,
        s.as_bytes(),
    ))
}

/// The `<c/>` element for stream features (XEP-0115 §6.3).
pub fn caps_element(server: &Server) -> Element {
    Element::new("c", ns::CAPS)
        .with_attr("hash", ns::CAPS_HASH_SHA1)
        .with_attr("node", CAPS_NODE)
        .with_attr("ver", server.caps_ver.as_str())
}

fn node_of(el: &Element, q: &str) -> Option<String> {
    el.get_child("query", q)
        .and_then(|x| x.attr("node"))
        .map(str::to_owned)
}

/// disco#info of a served domain (also answers the caps node): the result's payload.
pub fn server_info(server: &Server, el: &Element) -> Result<Element, StanzaError> {
    let node = node_of(el, ns::DISCO_INFO);
    let caps_node = format!("{CAPS_NODE}#{}", server.caps_ver);
    if node.as_deref().is_some_and(|n| n != caps_node) {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    let mut q = Element::new("query", ns::DISCO_INFO);
    if let Some(n) = node {
        q.set_attr("node", n);
    }
    q.push_child(
        Element::new("identity", ns::DISCO_INFO)
            .with_attr("category", IDENTITY.0)
            .with_attr("type", IDENTITY.1)
            .with_attr("name", IDENTITY.2),
    );
    for f in server_features(&server.config) {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
    }
    Ok(q)
}

/// disco#items of a served domain: no components or rooms yet.
pub fn server_items(el: &Element) -> Result<Element, StanzaError> {
    if node_of(el, ns::DISCO_ITEMS).is_some() {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    Ok(Element::new("query", ns::DISCO_ITEMS))
}

/// disco#info of an account (XEP-0030 §3.1: identity `account/registered`), with the features
/// the server offers on the account's bare JID (XEP-0357 §5.1: push).
pub fn account_info(config: &Config, el: &Element) -> Result<Element, StanzaError> {
    if node_of(el, ns::DISCO_INFO).is_some() {
        return Err(StanzaError::new(StanzaCondition::ItemNotFound));
    }
    let mut q = Element::new("query", ns::DISCO_INFO)
        .with_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", "account")
                .with_attr("type", "registered"),
        )
        .with_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO));
    for f in ACCOUNT_FEATURES {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    if config.push.enabled {
        q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::PUSH));
    }
    Ok(q)
}

/// What an account's archive offers (XEP-0313 §7, XEP-0424 §Tombstones).
const ACCOUNT_FEATURES: &[&str] = &[
    ns::MAM,
    ns::MAM_EXTENDED,
    ns::RETRACT,
    "urn:xmpp:message-retract:1#tombstone",
    ns::RETRACT_0,
    "urn:xmpp:message-retract:0#tombstone",
];

/// disco#items of an account: empty until PEP exists.
pub fn account_items() -> Element {
    Element::new("query", ns::DISCO_ITEMS)
}

/// Whether the local account exists (storage errors count as "no").
pub async fn account_exists(server: &Arc<Server>, bare: &str) -> bool {
    server.storage.account_exists(bare).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_ver_is_stable_and_depends_on_features() {
        let mut c = Config::default();
        let a = server_caps_ver(&c);
        assert_eq!(a, server_caps_ver(&c));
        assert_eq!(a.len(), 28);
        c.modules.version = true;
        assert_ne!(a, server_caps_ver(&c));
    }

    #[test]
    fn xep_0115_example_hash() {
        // XEP-0115 §5.2 simple example: S = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<…"
        let s = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<";
        let v = B64.encode(digest::digest(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            s.as_bytes(),
        ));
        assert_eq!(v, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    }
}
