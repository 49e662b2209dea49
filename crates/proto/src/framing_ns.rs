//! Namespace resolution of a complete start tag: declarations become shared [`Namespace`]
//! handles (interned per stream), element and attribute prefixes are looked up in the open
//! scopes, and what the new element holds is counted for the stanza's memory budget.

use std::mem::size_of;

use super::{FramingError, Pending, Scope, StreamParser, XML_NS, XMLNS_NS, bad_prefix};
use crate::element::{Attr, Element};
use crate::limits::heap_cost;
use crate::namespace::Namespace;
use crate::ns;

impl StreamParser {
    fn lookup(&self, prefix: &str) -> Option<&Namespace> {
        if prefix == "xml" {
            return Some(&XML_NS);
        }
        for s in self.scopes.iter().rev() {
            if let Some((_, uri)) = s.prefixes.iter().find(|(p, _)| p == prefix) {
                return Some(uri);
            }
        }
        None
    }

    fn default_ns(&self) -> Namespace {
        for s in self.scopes.iter().rev() {
            if let Some(d) = &s.default {
                return d.clone();
            }
        }
        Namespace::NONE
    }

    /// Resolves the namespaces of a complete start tag. Returns the element and the memory it
    /// newly holds (names, attributes, namespaces not shared yet).
    pub(super) fn open_element(&mut self, p: Pending) -> Result<(Element, usize), FramingError> {
        let mut cost = 0;
        let mut scope = Scope {
            default: None,
            prefixes: Vec::new(),
        };
        let mut plain = 0;
        for (prefix, name, value) in &p.attrs {
            match (prefix.as_deref(), name.as_str()) {
                (None, "xmlns") => {
                    if value == ns::XML || value == XMLNS_NS {
                        return Err(bad_prefix("reserved namespace as default"));
                    }
                    if scope.default.is_some() {
                        return Err(FramingError::NotWellFormed("duplicate xmlns".into()));
                    }
                    let (uri, c) = self.interner.intern(value);
                    cost += c;
                    scope.default = Some(uri);
                }
                (Some("xmlns"), decl) => {
                    if decl == "xmlns" {
                        return Err(bad_prefix("the xmlns prefix cannot be declared"));
                    }
                    if value.is_empty() {
                        return Err(bad_prefix("a prefix cannot be undeclared"));
                    }
                    if (decl == "xml") != (value == ns::XML) || value == XMLNS_NS {
                        return Err(bad_prefix("reserved prefix or namespace misused"));
                    }
                    if scope.prefixes.iter().any(|(p, _)| p == decl) {
                        return Err(FramingError::NotWellFormed("duplicate prefix".into()));
                    }
                    let (uri, c) = self.interner.intern(value);
                    cost += c + heap_cost(decl.len());
                    scope.prefixes.push((decl.to_owned(), uri));
                }
                _ => plain += 1,
            }
        }
        cost += heap_cost(scope.prefixes.capacity() * size_of::<(String, Namespace)>());
        self.scopes.push(scope);
        let ns = match p.prefix.as_deref() {
            None => self.default_ns(),
            Some("xmlns") => return Err(bad_prefix("element with the xmlns prefix")),
            Some(pre) => self
                .lookup(pre)
                .ok_or_else(|| bad_prefix("unbound element prefix"))?
                .clone(),
        };
        let mut attrs: Vec<Attr> = Vec::with_capacity(plain);
        for (prefix, name, value) in p.attrs {
            let ans = match (prefix.as_deref(), name.as_str()) {
                (None, "xmlns") | (Some("xmlns"), _) => continue,
                (None, _) => Namespace::NONE,
                (Some(pre), _) => self
                    .lookup(pre)
                    .ok_or_else(|| bad_prefix("unbound attribute prefix"))?
                    .clone(),
            };
            if attrs.iter().any(|a| a.ns == ans && a.name == name) {
                return Err(FramingError::NotWellFormed("duplicate attribute".into()));
            }
            cost += heap_cost(name.capacity()) + heap_cost(value.capacity());
            attrs.push(Attr {
                ns: ans,
                name,
                value,
            });
        }
        cost += heap_cost(attrs.capacity() * size_of::<Attr>());
        Ok((Element::from_parts(p.name, ns.canonical(), attrs), cost))
    }
}
