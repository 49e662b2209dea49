//! Stream framing: bytes in, stream header / stanzas / stream end out, with hard limits.
//!
//! `rxml`'s raw parser enforces RFC 6120's restricted XML (no DTD, no entity declarations or
//! references beyond the predefined five, no processing instructions, no comments, strict UTF-8
//! and XML characters). It has no limits on size or depth and its namespace resolver is private,
//! so this layer does namespace resolution itself (to see the stream's default namespace and to
//! avoid per-element maps) and counts bytes, depth and attributes as events arrive: nothing grows
//! past a limit before the limit is checked.

use std::mem::size_of;

use thiserror::Error;

use crate::element::{Attr, Element};
use crate::limits::heap_cost;
pub use crate::limits::{Limits, MAX_NAMESPACE_LEN};
use crate::namespace::{Interner, Namespace};
use crate::ns;
use rxml::error::EndOrError;
use rxml::{Parse, RawEvent, RawParser, WithOptions};

/// What the framing layer produces.
#[derive(Debug)]
pub enum Frame {
    /// The opening `<stream:stream>` tag (or any root element; the caller checks its name).
    StreamOpen(StreamHeader),
    /// A complete top-level element: a stanza or a nonza such as `<auth/>`.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
}

/// The stream header's name, namespace, declared default namespace and attributes.
#[derive(Debug, Clone)]
pub struct StreamHeader {
    /// Local name (`stream` when correct).
    pub name: String,
    /// Namespace of the root element (the stream namespace when correct).
    pub ns: String,
    /// The default namespace declared on the header (`jabber:client` on a client stream).
    pub default_ns: Option<String>,
    /// Attributes (`to`, `from`, `version`, `xml:lang`, `id`).
    pub attrs: Vec<Attr>,
}

impl StreamHeader {
    /// Value of the unqualified attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns.is_empty() && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The `xml:lang` attribute.
    pub fn lang(&self) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == ns::XML && a.name == "lang")
            .map(|a| a.value.as_str())
    }
}

/// Why a stream cannot go on. Each maps to one RFC 6120 stream error condition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// Not well-formed XML, bad UTF-8 or a character XML does not allow.
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// A construct RFC 6120 §11.1 forbids: DTD, entity declaration, processing instruction, comment.
    #[error("restricted XML construct: {0}")]
    Restricted(String),
    /// A namespace prefix that is unbound or bound against the rules.
    #[error("bad namespace prefix: {0}")]
    BadNamespacePrefix(String),
    /// A top-level element larger than `max_stanza_size`.
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    /// Nesting deeper than `max_depth`.
    #[error("element nesting deeper than {0}")]
    TooDeep(usize),
    /// More attributes on one element than `max_attributes`.
    #[error("more than {0} attributes on one element")]
    TooManyAttributes(usize),
    /// More elements in one stanza than `max_elements`.
    #[error("more than {0} elements in one stanza")]
    TooManyElements(usize),
    /// A stanza that would hold more memory than [`Limits::max_memory`] (many tiny elements or
    /// attributes), though under the size limit.
    #[error("stanza needs more than {0} bytes of memory: too many small elements or attributes")]
    TooMuchMemory(usize),
    /// A single name or attribute value longer than rxml's token buffer (the stanza limit,
    /// at most 32 KiB).
    #[error("a name or attribute value longer than {0} bytes")]
    TokenTooLong(usize),
    /// A namespace name longer than [`MAX_NAMESPACE_LEN`].
    #[error("namespace name longer than {0} bytes")]
    NamespaceTooLong(usize),
    /// Text at the stream level that is not whitespace.
    #[error("text outside any stanza")]
    TextAtStreamLevel,
}

struct Scope {
    /// `Some` when this element declared a default namespace (`Some("")` undeclares it).
    default: Option<Namespace>,
    prefixes: Vec<(String, Namespace)>,
}

struct Pending {
    prefix: Option<String>,
    name: String,
    attrs: Vec<(Option<String>, String, String)>,
    bytes: usize,
}

/// Incremental parser for one XML stream. Create a new one at every stream restart.
pub struct StreamParser {
    raw: RawParser,
    /// rxml's token limit, fixed when the parser is made.
    max_token: usize,
    limits: Limits,
    scopes: Vec<Scope>,
    pending: Option<Pending>,
    /// Elements under construction; `stack[0]` is the stanza.
    stack: Vec<Element>,
    /// Bytes of the stanza under construction.
    stanza_bytes: usize,
    /// Memory the stanza under construction holds, as charged (see [`Limits::max_memory`]).
    stanza_memory: usize,
    /// Elements in the stanza under construction.
    stanza_elements: usize,
    /// Namespaces declared on this stream, shared between stanzas.
    interner: Interner,
    opened: bool,
    /// Whether the first non-whitespace byte (which must be `<`) was seen.
    started: bool,
    closed: bool,
    failed: Option<FramingError>,
}

impl StreamParser {
    /// A parser for a new stream.
    pub fn new(limits: Limits) -> StreamParser {
        let opts = rxml::parser::Options {
            // rxml reserves a scratch buffer of this size while a token is read, and splits
            // longer text into several events. 32 KiB bounds per-connection parser memory (the
            // scratch buffer is released when idle) while text of any length up to the stanza
            // limit still passes; only a single name or attribute value longer than this fails.
            max_token_length: max_token(limits),
            ..Default::default()
        };
        StreamParser {
            raw: RawParser::with_options(opts),
            max_token: max_token(limits),
            limits,
            scopes: Vec::new(),
            pending: None,
            stack: Vec::new(),
            stanza_bytes: 0,
            stanza_memory: 0,
            stanza_elements: 0,
            interner: Interner::default(),
            opened: false,
            started: false,
            closed: false,
            failed: None,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits from the next stanza on, without a stream restart (for a server
    /// link that dialback authenticates mid-stream). The longest single token stays what the
    /// first limits allowed: `rxml` fixes it when the parser is made.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Whether a stanza is partly received (for idle memory release and timeouts).
    pub fn in_stanza(&self) -> bool {
        !self.stack.is_empty() || (self.pending.is_some() && !self.scopes.is_empty())
    }

    /// Releases the parser's temporary buffers; call when the connection goes idle.
    pub fn release_temporaries(&mut self) {
        self.raw.release_temporaries();
        // Between stanzas only the stream's own scope remains; the capacity grown for nested
        // elements is given back.
        self.stack.shrink_to_fit();
        self.scopes.shrink_to_fit();
    }

    /// Consumes bytes from `data` until a frame is complete (returned, with the rest of `data`
    /// left in place) or `data` is used up (`Ok(None)`). After an error every call fails.
    pub fn feed(&mut self, data: &mut &[u8]) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn feed_inner(&mut self, data: &mut &[u8]) -> Result<Option<Frame>, FramingError> {
        if !self.started {
            // Whitespace before the header is skipped here: rxml refuses it, but clients send
            // a newline after `</auth>` or `<starttls/>` before the restarted stream's header.
            let skip = data.iter().take_while(|b| b" \t\r\n".contains(b)).count();
            *data = &data[skip..];
            // Fail fast on things that are not XML at all (an HTTP request, a TLS ClientHello on
            // the plain port): rxml would otherwise buffer them as text before the root.
            match data.first() {
                Some(b'<') | Some(0xEF) => self.started = true,
                Some(_) => {
                    return Err(FramingError::NotWellFormed(
                        "data before the stream header is not XML".into(),
                    ));
                }
                None => return Ok(None),
            }
        }
        loop {
            if self.closed {
                // Nothing may follow the end of the stream; ignore trailing bytes.
                *data = &[];
                return Ok(None);
            }
            let ev = match self.raw.parse(data, false) {
                Ok(Some(ev)) => ev,
                Ok(None) | Err(EndOrError::NeedMoreData) => return Ok(None),
                Err(EndOrError::Error(e)) => return Err(classify(e, self.max_token)),
            };
            if let Some(frame) = self.event(ev)? {
                return Ok(Some(frame));
            }
        }
    }

    fn count(&mut self, n: usize) -> Result<(), FramingError> {
        if !self.opened || self.scopes.is_empty() {
            return Ok(());
        }
        // Inside the stream: bytes at depth ≥ 1 belong to a stanza (or to the pending stanza head).
        if !self.stack.is_empty() || self.pending.is_some() {
            self.stanza_bytes += n;
            if self.stanza_bytes > self.limits.max_stanza_size {
                return Err(FramingError::TooLarge(self.limits.max_stanza_size));
            }
        }
        Ok(())
    }

    /// Charges `n` bytes of memory to the stanza under construction.
    fn charge(&mut self, n: usize) -> Result<(), FramingError> {
        self.stanza_memory += n;
        let max = self.limits.max_memory();
        if self.stanza_memory > max {
            return Err(FramingError::TooMuchMemory(max));
        }
        Ok(())
    }

    fn event(&mut self, ev: RawEvent) -> Result<Option<Frame>, FramingError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(m, (prefix, name)) => {
                if self.opened && self.stack.len() >= self.limits.max_depth {
                    return Err(FramingError::TooDeep(self.limits.max_depth));
                }
                if self.stack.is_empty() {
                    self.stanza_bytes = 0;
                    self.stanza_memory = 0;
                    self.stanza_elements = 0;
                }
                let name = name.as_str().to_owned();
                let name_cost = heap_cost(name.capacity());
                self.pending = Some(Pending {
                    prefix: prefix.map(|p| p.as_str().to_owned()),
                    name,
                    attrs: Vec::new(),
                    bytes: m.len(),
                });
                self.count(m.len())?;
                if self.opened {
                    self.stanza_elements += 1;
                    if self.stanza_elements > self.limits.max_elements {
                        return Err(FramingError::TooManyElements(self.limits.max_elements));
                    }
                    self.charge(name_cost)?;
                }
                Ok(None)
            }
            RawEvent::Attribute(m, (prefix, name), value) => {
                self.count(m.len())?;
                let max = self.limits.max_attributes;
                let p = self
                    .pending
                    .as_mut()
                    .ok_or_else(|| FramingError::NotWellFormed("attribute outside a tag".into()))?;
                if p.attrs.len() >= max {
                    return Err(FramingError::TooManyAttributes(max));
                }
                p.bytes += m.len();
                if !self.opened && p.bytes > self.limits.max_stanza_size {
                    return Err(FramingError::TooLarge(self.limits.max_stanza_size));
                }
                let declares = match &prefix {
                    None => name.as_str() == "xmlns",
                    Some(pre) => pre.as_str() == "xmlns",
                };
                if declares && value.len() > MAX_NAMESPACE_LEN {
                    return Err(FramingError::NamespaceTooLong(MAX_NAMESPACE_LEN));
                }
                p.attrs.push((
                    prefix.map(|p| p.as_str().to_owned()),
                    name.as_str().to_owned(),
                    value,
                ));
                Ok(None)
            }
            RawEvent::ElementHeadClose(m) => {
                self.count(m.len())?;
                let p = self
                    .pending
                    .take()
                    .ok_or_else(|| FramingError::NotWellFormed("tag end outside a tag".into()))?;
                let (el, cost) = self.open_element(p)?;
                if !self.opened {
                    self.opened = true;
                    let default_ns = self
                        .scopes
                        .last()
                        .and_then(|s| s.default.as_ref().map(|d| d.to_string()));
                    let (name, ns, attrs) = el.into_header_parts();
                    return Ok(Some(Frame::StreamOpen(StreamHeader {
                        name,
                        ns,
                        default_ns,
                        attrs,
                    })));
                }
                if self.stack.is_empty() {
                    // The stanza's own struct; its descendants are charged as their parents'
                    // vectors grow to hold them.
                    self.charge(size_of::<Element>())?;
                }
                self.stack.push(el);
                self.charge(cost)?;
                Ok(None)
            }
            RawEvent::ElementFoot(m) => {
                self.count(m.len())?;
                self.scopes.pop();
                match self.stack.pop() {
                    None => {
                        self.closed = true;
                        Ok(Some(Frame::StreamClose))
                    }
                    Some(mut el) => match self.stack.last_mut() {
                        Some(parent) => {
                            self.stanza_memory -= el.shrink_measured();
                            let cost = parent.push_child_measured(el);
                            self.charge(cost)?;
                            Ok(None)
                        }
                        None => {
                            el.shrink_measured();
                            self.stanza_bytes = 0;
                            self.stanza_memory = 0;
                            self.stanza_elements = 0;
                            Ok(Some(Frame::Stanza(el)))
                        }
                    },
                }
            }
            RawEvent::Text(m, text) => {
                self.count(m.len())?;
                match self.stack.last_mut() {
                    Some(top) => {
                        let cost = top.push_text_measured(text);
                        self.charge(cost)?;
                    }
                    None => {
                        if !text.as_str().bytes().all(|b| b" \t\r\n".contains(&b)) {
                            return Err(FramingError::TextAtStreamLevel);
                        }
                    }
                }
                Ok(None)
            }
        }
    }
}

/// Parses one stored element (serialised with [`Element::write_to`] relative to
/// `jabber:client`), e.g. an offline message read back from storage.
pub fn parse_element(xml: &str, limits: Limits) -> Result<Element, FramingError> {
    let mut p = StreamParser::new(limits);
    let mut header: &[u8] = b"<s xmlns='jabber:client'>";
    p.feed(&mut header)?;
    let mut data = xml.as_bytes();
    match p.feed(&mut data)? {
        Some(Frame::Stanza(el)) if data.iter().all(|b| b.is_ascii_whitespace()) => Ok(el),
        _ => Err(FramingError::NotWellFormed(
            "not exactly one element".into(),
        )),
    }
}

/// Longest single token (name, attribute value, text chunk) rxml buffers.
const MAX_TOKEN: usize = 32 * 1024;

const XMLNS_NS: &str = "http://www.w3.org/2000/xmlns/";

static XML_NS: Namespace = Namespace::from_static(ns::XML);

fn bad_prefix(why: &str) -> FramingError {
    FramingError::BadNamespacePrefix(why.to_owned())
}

/// The longest single token rxml buffers under `limits`.
fn max_token(limits: Limits) -> usize {
    limits.max_stanza_size.clamp(64, MAX_TOKEN)
}

fn classify(e: rxml::Error, max_token: usize) -> FramingError {
    use rxml::Error as E;
    match e {
        // rxml's report of a token over `max_token_length` (its wording, checked by a test).
        E::RestrictedXml("long name or reference") => FramingError::TokenTooLong(max_token),
        E::RestrictedXml(what) => FramingError::Restricted(what.to_owned()),
        E::UndeclaredEntity => FramingError::Restricted("entity reference".to_owned()),
        // `<!` that is neither a comment nor CDATA is a declaration: DOCTYPE, ENTITY, ELEMENT.
        E::InvalidSyntax(what) if what.contains("cdata or comment") => {
            FramingError::Restricted("document type declaration".to_owned())
        }
        E::UndeclaredNamespacePrefix(_) | E::ReservedNamespacePrefix | E::ReservedNamespaceName => {
            bad_prefix("namespace rule")
        }
        other => FramingError::NotWellFormed(other.to_string()),
    }
}

impl Element {
    fn into_header_parts(self) -> (String, String, Vec<Attr>) {
        (
            self.name().to_owned(),
            self.ns().to_owned(),
            self.attrs().to_vec(),
        )
    }
}

#[path = "framing_ns.rs"]
mod resolve;

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
