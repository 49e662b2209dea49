//! What an element holds in memory, and the parser's measured ways of growing one: the
//! framing layer charges every stanza for it (see [`crate::Limits::max_memory`]).

use std::mem::size_of;

use super::{Attr, Element, Node};
use crate::limits::heap_cost;
use crate::namespace::Namespace;

impl Element {
    /// Bytes this element holds in memory, itself and its subtree, counted as the framing layer
    /// charges a stanza against its memory budget (see [`crate::Limits::max_memory`]): its own
    /// struct, the vectors' capacity, names, values and text, and the allocator's overhead per
    /// allocation. A namespace name counts where it is declared, not again in the elements and
    /// attributes that share it.
    pub fn memory_size(&self) -> usize {
        size_of::<Element>() + self.heap_size(None)
    }

    fn heap_size(&self, parent_ns: Option<&Namespace>) -> usize {
        let mut n = heap_cost(self.name.capacity())
            + heap_cost(self.attrs.capacity() * size_of::<Attr>())
            + heap_cost(self.children.capacity() * size_of::<Node>());
        if !parent_ns.is_some_and(|p| p.shares(&self.ns)) {
            n += self.ns.heap_size();
        }
        let mut prev = &self.ns;
        for a in &self.attrs {
            if !a.ns.shares(prev) && !a.ns.shares(&self.ns) {
                n += a.ns.heap_size();
            }
            prev = &a.ns;
            n += heap_cost(a.name.capacity()) + heap_cost(a.value.capacity());
        }
        for c in &self.children {
            n += match c {
                Node::Element(e) => e.heap_size(Some(&self.ns)),
                Node::Text(t) => heap_cost(t.capacity()),
            };
        }
        n
    }

    /// [`Self::push_child`] for the parser: returns the heap bytes the children vector grew by.
    pub(crate) fn push_child_measured(&mut self, child: Element) -> usize {
        let before = self.children.capacity();
        self.reserve_first();
        self.children.push(Node::Element(child));
        vec_growth::<Node>(before, self.children.capacity())
    }

    /// [`Self::push_text`] for the parser, taking the parser's string instead of copying it:
    /// returns the heap bytes the text and the children vector grew by.
    pub(crate) fn push_text_measured(&mut self, text: String) -> usize {
        if text.is_empty() {
            return 0;
        }
        if let Some(Node::Text(t)) = self.children.last_mut() {
            let before = t.capacity();
            t.push_str(&text);
            return heap_cost(t.capacity()) - heap_cost(before);
        }
        let before = self.children.capacity();
        let cost = heap_cost(text.capacity());
        self.reserve_first();
        self.children.push(Node::Text(text));
        cost + vec_growth::<Node>(before, self.children.capacity())
    }
    /// Most elements have one child (a body's text, a field's value): a vector's first growth
    /// would hold four slots of a hundred bytes each for it.
    fn reserve_first(&mut self) {
        if self.children.capacity() == 0 {
            self.children.reserve_exact(1);
        }
    }

    /// Gives back the slack of the children vector and of merged text once the element is
    /// complete (it is not changed again on its way through the server). Returns the heap
    /// bytes freed.
    pub(crate) fn shrink_measured(&mut self) -> usize {
        let mut freed = 0;
        for c in &mut self.children {
            if let Node::Text(t) = c
                && t.capacity() > t.len()
            {
                let before = heap_cost(t.capacity());
                t.shrink_to_fit();
                freed += before - heap_cost(t.capacity());
            }
        }
        if self.children.capacity() > self.children.len() {
            let before = heap_cost(self.children.capacity() * size_of::<Node>());
            self.children.shrink_to_fit();
            freed += before - heap_cost(self.children.capacity() * size_of::<Node>());
        }
        freed
    }
}

/// Heap bytes a vector of `T` gained by growing from `before` to `after` slots.
fn vec_growth<T>(before: usize, after: usize) -> usize {
    heap_cost(after * size_of::<T>()) - heap_cost(before * size_of::<T>())
}
