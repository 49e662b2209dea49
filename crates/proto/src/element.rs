//! The routed unit: a small, namespace-resolved XML element tree and its serialiser.
//!
//! Why not `minidom`: we need (a) the stanza content namespaces `jabber:client` and `jabber:server`
//! to be one namespace inside the server, so a stanza parsed from a client stream can be written to
//! a server stream without rewriting every element; (b) serialisation relative to the stream's
//! default namespace, so no redundant `xmlns` is written per stanza; (c) attributes in a flat `Vec`
//! instead of nested B-trees, because a stanza has three to five attributes and is built and
//! dropped millions of times. The tree is built by [`crate::framing`] from `rxml`'s parser, which
//! does the hard part (well-formedness, characters, UTF-8); this file only holds and writes trees.

use std::fmt;

use crate::namespace::Namespace;
use crate::ns;

/// A child of an element: another element or character data.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    /// A child element.
    Element(Element),
    /// Character data (already unescaped).
    Text(String),
}

/// One attribute. `ns` is empty for the usual unqualified attributes; `xml:lang` has
/// `ns == ns::XML`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Attr {
    /// Namespace URI, empty for none (shared with the declaration, see [`Namespace`]).
    pub ns: Namespace,
    /// Local name.
    pub name: String,
    /// Unescaped value.
    pub value: String,
}

/// An XML element with resolved namespaces.
///
/// Elements in `jabber:server` are stored as `jabber:client` (see [`ns::canonical`]): the two are
/// the same content namespace and the stream writer supplies the right default.
#[derive(Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    /// Shared with the declaration it came from and with every element that inherits it.
    ns: Namespace,
    attrs: Vec<Attr>,
    children: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `ns` (empty string for none).
    pub fn new(name: impl Into<String>, ns: &str) -> Element {
        Element {
            name: name.into(),
            ns: Namespace::from(ns::canonical(ns)),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace URI ("" for none; `jabber:client` for both stanza content namespaces).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether the element has this name and namespace.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns::canonical(ns)
    }

    /// Value of the unqualified attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// Value of the attribute `name` in namespace `ns` (e.g. `xml:lang`).
    pub fn attr_ns(&self, ns: &str, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> &[Attr] {
        &self.attrs
    }

    /// Sets (or replaces) the unqualified attribute `name`.
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attrs
            .iter_mut()
            .find(|a| a.ns.is_empty() && a.name == name)
        {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr {
                ns: Namespace::NONE,
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Sets an attribute in a namespace (used for `xml:lang`).
    pub fn set_attr_ns(&mut self, ns: &str, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|a| a.ns == ns && a.name == name) {
            Some(a) => a.value = value,
            None => self.attrs.push(Attr {
                ns: Namespace::from(ns),
                name: name.to_owned(),
                value,
            }),
        }
    }

    /// Removes the unqualified attribute `name`, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self
            .attrs
            .iter()
            .position(|a| a.ns.is_empty() && a.name == name)?;
        Some(self.attrs.remove(i).value)
    }

    /// Builder form of [`Self::set_attr`].
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Self::push_child`].
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder form of [`Self::push_text`].
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.push_text(text);
        self
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends character data, merging with a preceding text node.
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(t)) = self.children.last_mut() {
            t.push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// All child nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Child elements (text skipped).
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Mutable child elements.
    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child with this name and namespace.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        let ns = ns::canonical(ns);
        self.children().find(|c| c.name == name && c.ns == ns)
    }

    /// Mutable first child with this name and namespace.
    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        let ns = ns::canonical(ns);
        self.children_mut().find(|c| c.name == name && c.ns == ns)
    }

    /// Whether a child with this name and namespace exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes every child element for which `f` returns false (text is kept).
    pub fn retain_children(&mut self, mut f: impl FnMut(&Element) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => f(e),
            Node::Text(_) => true,
        });
    }

    /// Removes all children.
    pub fn clear_children(&mut self) {
        self.children.clear();
    }

    /// Concatenated direct text content.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Number of child elements.
    pub fn child_count(&self) -> usize {
        self.children().count()
    }

    /// Serialises the element as it would appear inside a stream whose default namespace is
    /// `default_ns` (`jabber:client` for both client and server streams: the stream header carries
    /// the real one). Namespaces equal to the parent's are not repeated.
    pub fn write_to(&self, out: &mut Vec<u8>, default_ns: &str) {
        self.write_inner(out, ns::canonical(default_ns));
    }

    /// Serialises to a `String` relative to `default_ns` (see [`Self::write_to`]).
    pub fn to_xml(&self, default_ns: &str) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_to(&mut out, default_ns);
        // The writer only emits valid UTF-8: names and values came from `&str`.
        String::from_utf8(out).unwrap_or_default()
    }

    fn write_inner(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns.as_str() != parent_ns {
            out.extend_from_slice(b" xmlns='");
            escape_into(out, &self.ns, true);
            out.push(b'\'');
        }
        let mut prefix_n = 0u32;
        for a in &self.attrs {
            out.push(b' ');
            if a.ns == ns::XML {
                out.extend_from_slice(b"xml:");
            } else if !a.ns.is_empty() {
                // Rare (a foreign namespaced attribute): declare a fresh prefix for it right here.
                let p = format!("a{prefix_n}");
                prefix_n += 1;
                out.extend_from_slice(b"xmlns:");
                out.extend_from_slice(p.as_bytes());
                out.extend_from_slice(b"='");
                escape_into(out, &a.ns, true);
                out.extend_from_slice(b"' ");
                out.extend_from_slice(p.as_bytes());
                out.push(b':');
            }
            out.extend_from_slice(a.name.as_bytes());
            out.extend_from_slice(b"='");
            escape_into(out, &a.value, true);
            out.push(b'\'');
        }
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_inner(out, &self.ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }

    /// The element with its attributes but no children: enough to build an error reply to a
    /// message or presence (RFC 6120 §8.3.1) without copying its payload.
    pub fn without_children(&self) -> Element {
        Element {
            name: self.name.clone(),
            ns: self.ns.clone(),
            attrs: self.attrs.clone(),
            children: Vec::new(),
        }
    }

    /// Approximate serialised size, used for limits and metrics without serialising.
    pub fn approx_size(&self) -> usize {
        let mut n = 2 * self.name.len() + 5;
        for a in &self.attrs {
            n += a.name.len() + a.value.len() + 4;
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.approx_size(),
                Node::Text(t) => t.len(),
            };
        }
        n
    }

    pub(crate) fn from_parts(name: String, ns: Namespace, attrs: Vec<Attr>) -> Element {
        Element {
            name,
            ns,
            attrs,
            children: Vec::new(),
        }
    }
}

/// Escapes `s` for XML character data (`attr == false`) or a single-quoted attribute value.
pub fn escape_into(out: &mut Vec<u8>, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' if attr => b"&apos;",
            b'"' if attr => b"&quot;",
            // Keep CR, and tabs/newlines in attributes, from being normalised away by the reader.
            b'\r' => b"&#xD;",
            b'\n' if attr => b"&#xA;",
            b'\t' if attr => b"&#x9;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[path = "element_memory.rs"]
mod memory;

impl fmt::Debug for Element {
    // Debug output must never contain message bodies (they would end up in logs): show the
    // element's shape, attributes and child names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} xmlns='{}'", self.name, self.ns)?;
        for a in &self.attrs {
            write!(f, " {}='{}'", a.name, a.value)?;
        }
        write!(f, ">")?;
        for c in self.children() {
            write!(f, "<{}/>", c.name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Element(e) => e.fmt(f),
            Node::Text(t) => write!(f, "[text {} bytes]", t.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_serialises_relative_to_default_namespace() {
        let el = Element::new("message", ns::CLIENT)
            .with_attr("to", "bob@example.org")
            .with_attr("type", "chat")
            .with_child(Element::new("body", ns::CLIENT).with_text("a < b & 'c'"))
            .with_child(Element::new("request", "urn:xmpp:receipts"));
        assert_eq!(
            el.to_xml(ns::CLIENT),
            "<message to='bob@example.org' type='chat'><body>a &lt; b &amp; 'c'</body>\
             <request xmlns='urn:xmpp:receipts'/></message>"
        );
        // Written into a server stream the content namespace is inherited too.
        assert_eq!(el.to_xml(ns::SERVER), el.to_xml(ns::CLIENT));
        // Outside any stream it declares itself.
        assert!(el.to_xml("").starts_with("<message xmlns='jabber:client'"));
    }

    #[test]
    fn server_namespace_is_canonicalised() {
        let el = Element::new("iq", ns::SERVER);
        assert_eq!(el.ns(), ns::CLIENT);
        assert!(el.is("iq", ns::SERVER));
        assert!(el.is("iq", ns::CLIENT));
    }

    #[test]
    fn attributes_escape_quotes_and_whitespace() {
        let el = Element::new("x", "").with_attr("a", "it's \"q\"\n\t<&>");
        assert_eq!(
            el.to_xml(""),
            "<x a='it&apos;s &quot;q&quot;&#xA;&#x9;&lt;&amp;&gt;'/>"
        );
    }

    #[test]
    fn set_replace_remove_attr() {
        let mut el = Element::new("x", "");
        el.set_attr("a", "1");
        el.set_attr("a", "2");
        el.set_attr_ns(ns::XML, "lang", "en");
        assert_eq!(el.attr("a"), Some("2"));
        assert_eq!(el.attr_ns(ns::XML, "lang"), Some("en"));
        assert_eq!(el.attr("lang"), None);
        assert_eq!(el.remove_attr("a"), Some("2".into()));
        assert_eq!(el.attr("a"), None);
        assert_eq!(el.to_xml(""), "<x xml:lang='en'/>");
    }

    #[test]
    fn text_merging_and_children() {
        let mut el = Element::new("x", "");
        el.push_text("a");
        el.push_text("b");
        el.push_child(Element::new("y", "urn:y"));
        el.push_text("");
        assert_eq!(el.text(), "ab");
        assert_eq!(el.nodes().len(), 2);
        assert!(el.has_child("y", "urn:y"));
        assert!(!el.has_child("y", ""));
        el.retain_children(|c| c.name() != "y");
        assert_eq!(el.child_count(), 0);
    }

    #[test]
    fn without_children_keeps_attributes_only() {
        let el = Element::new("message", ns::CLIENT)
            .with_attr("id", "1")
            .with_child(Element::new("body", ns::CLIENT).with_text("x"));
        let s = el.without_children();
        assert_eq!(s.attr("id"), Some("1"));
        assert_eq!(s.nodes().len(), 0);
        assert!(s.is("message", ns::CLIENT));
    }

    #[test]
    fn debug_never_shows_text() {
        let el = Element::new("message", ns::CLIENT)
            .with_child(Element::new("body", ns::CLIENT).with_text("secret diagnosis"));
        let d = format!("{el:?}");
        assert!(!d.contains("secret"), "{d}");
        assert!(d.contains("body"));
    }
}
