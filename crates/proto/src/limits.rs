//! What one stanza may cost: bytes on the wire, memory held, nesting, attributes, elements.
//!
//! The wire size alone does not bound memory: a 4-byte `<a/>` becomes a tree node of about a
//! hundred bytes, so a stanza under the size limit could hold dozens of times its size (and
//! before namespaces were shared, thousands). The framing layer therefore charges every stanza
//! for the memory it holds as well, against [`Limits::max_memory`], and counts its elements.

/// Limits applied to every stream. Defaults match the configuration defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum serialised size of one top-level element (stanza or nonza), in bytes. The
    /// memory a stanza may hold is a fixed multiple of it, see [`Limits::max_memory`].
    pub max_stanza_size: usize,
    /// Maximum nesting depth inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Maximum attributes (including namespace declarations) on one element.
    pub max_attributes: usize,
    /// Maximum elements in one stanza, the stanza itself included.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_size: 262_144,
            max_depth: 32,
            max_attributes: 64,
            max_elements: 10_000,
        }
    }
}

/// Memory a stanza may hold per byte of [`Limits::max_stanza_size`].
///
/// Why 16: text costs about one byte per byte, but every element is a tree node of about a
/// hundred bytes, and element-dense stanzas that real clients send must pass even near the size
/// limit. Measured with this parser (tests/memory.rs, `real_stanzas_…`): a message with a body
/// holds 1.8 times its size, MAM results 5.1, an OMEMO bundle 7.0, disco#items 7.1, XEP-0048
/// bookmarks and disco#info 7.6, a data form or a blocklist of short JIDs 8.1. Twice the
/// worst of those leaves room for what was not measured; what it stops is the empty element
/// (`<a/>`, 4 bytes on the wire, about 130 in memory) by the tens of thousands.
pub const MEMORY_PER_BYTE: usize = 16;

/// Longest namespace name accepted, in bytes.
///
/// Real namespaces are under 100 bytes (the longest registered XMPP ones are about 50); 1 KiB
/// leaves room for long private URLs and still keeps the per-stream table of namespaces small.
pub const MAX_NAMESPACE_LEN: usize = 1024;

/// Most elements per stanza before authentication (see [`Limits::before_authentication`]).
/// SASL and dialback need one; an XEP-0077 registration form a few dozen.
pub const PRE_AUTH_MAX_ELEMENTS: usize = 256;

impl Limits {
    /// Most bytes one stanza may hold in memory while it is parsed and after: its elements,
    /// names, attributes, text and vectors, counted as [`crate::Element::memory_size`] does.
    pub fn max_memory(&self) -> usize {
        self.max_stanza_size.saturating_mul(MEMORY_PER_BYTE)
    }

    /// The limits for a stream whose peer is not authenticated yet: stanzas of at most
    /// `max_stanza_size` bytes (never more than these limits allow) and at most
    /// [`PRE_AUTH_MAX_ELEMENTS`] elements each; depth and attributes unchanged.
    pub fn before_authentication(self, max_stanza_size: usize) -> Limits {
        Limits {
            max_stanza_size: max_stanza_size.min(self.max_stanza_size),
            max_elements: self.max_elements.min(PRE_AUTH_MAX_ELEMENTS),
            ..self
        }
    }
}

/// Bytes a heap allocation of `n` bytes occupies: the allocator's header and rounding
/// included (glibc's malloc: 8 bytes of header, 16-byte granules, 32 bytes at least; close
/// enough for other allocators). Zero for no allocation.
pub(crate) fn heap_cost(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        n.saturating_add(8).next_multiple_of(16).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_auth_limits_only_lower() {
        let l = Limits::default().before_authentication(8192);
        assert_eq!(l.max_stanza_size, 8192);
        assert_eq!(l.max_elements, PRE_AUTH_MAX_ELEMENTS);
        assert_eq!(l.max_depth, Limits::default().max_depth);
        let small = Limits {
            max_stanza_size: 4096,
            max_elements: 10,
            ..Limits::default()
        };
        let l = small.before_authentication(8192);
        assert_eq!((l.max_stanza_size, l.max_elements), (4096, 10));
    }

    #[test]
    fn heap_cost_follows_the_allocator() {
        assert_eq!(heap_cost(0), 0);
        assert_eq!(heap_cost(1), 32);
        assert_eq!(heap_cost(24), 32);
        assert_eq!(heap_cost(25), 48);
        assert_eq!(heap_cost(1000), 1008);
    }
}
