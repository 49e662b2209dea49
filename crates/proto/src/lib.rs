//! Zorg's protocol layer: pure XMPP data handling with no I/O.
//!
//! - [`framing`]: bytes → stream header, stanzas, stream end; RFC 6120 restricted XML with hard
//!   limits on size, depth and attributes.
//! - [`element`]: the routed unit and its serialiser.
//! - [`error`]: stream and stanza errors.
//! - [`limits`]: what one stanza may cost (bytes, memory, elements, depth).
//! - [`namespace`]: namespace names shared between the elements that carry them.
//! - [`ns`]: namespace names.
//! - [`jid`]: JIDs (RFC 7622), from the `jid` crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod element;
pub mod error;
pub mod framing;
pub mod limits;
pub mod namespace;
pub mod ns;

/// JIDs (RFC 7622), normalised with stringprep profiles by the `jid` crate.
pub use jid;

pub use element::{Attr, Element, Node};
pub use error::{ErrorType, StanzaCondition, StanzaError, StreamCondition, StreamError};
pub use framing::{Frame, FramingError, Limits, StreamHeader, StreamParser, parse_element};
pub use namespace::Namespace;
