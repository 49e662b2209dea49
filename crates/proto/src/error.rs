//! Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3).

use crate::element::Element;
use crate::framing::FramingError;
use crate::ns;

macro_rules! conditions {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),* }
        impl $name {
            /// The element name of the condition.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),* }
            }
            /// Parses an element name into a condition.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }
    };
}

conditions!(
    /// RFC 6120 §4.9.3 stream error conditions.
    StreamCondition {
        /// Data that cannot be processed (e.g. not a stream).
        BadFormat = "bad-format",
        /// Unsupported or unbound namespace prefix.
        BadNamespacePrefix = "bad-namespace-prefix",
        /// A new stream replaced this one.
        Conflict = "conflict",
        /// No traffic for too long.
        ConnectionTimeout = "connection-timeout",
        /// The domain is no longer served here.
        HostGone = "host-gone",
        /// The `to` domain is not served here.
        HostUnknown = "host-unknown",
        /// Missing or wrong addressing on a stanza where it matters.
        ImproperAddressing = "improper-addressing",
        /// A server fault.
        InternalServerError = "internal-server-error",
        /// The `from` address does not match the authenticated identity.
        InvalidFrom = "invalid-from",
        /// Wrong stream or content namespace.
        InvalidNamespace = "invalid-namespace",
        /// Invalid XML.
        InvalidXml = "invalid-xml",
        /// Stanzas before authentication.
        NotAuthorized = "not-authorized",
        /// Not well-formed XML.
        NotWellFormed = "not-well-formed",
        /// A local policy (size, rate) was violated.
        PolicyViolation = "policy-violation",
        /// A needed remote connection failed.
        RemoteConnectionFailed = "remote-connection-failed",
        /// Security-critical state changed; reconnect.
        Reset = "reset",
        /// Out of resources.
        ResourceConstraint = "resource-constraint",
        /// DTD, comment, PI or entity.
        RestrictedXml = "restricted-xml",
        /// Connect to another host (the element's text names it).
        SeeOtherHost = "see-other-host",
        /// The server is shutting down.
        SystemShutdown = "system-shutdown",
        /// None of the others.
        UndefinedCondition = "undefined-condition",
        /// Not UTF-8.
        UnsupportedEncoding = "unsupported-encoding",
        /// A required feature is not supported.
        UnsupportedFeature = "unsupported-feature",
        /// A top-level element the server does not understand.
        UnsupportedStanzaType = "unsupported-stanza-type",
        /// The stream version is not supported.
        UnsupportedVersion = "unsupported-version",
    }
);

conditions!(
    /// RFC 6120 §8.3.3 stanza error conditions.
    StanzaCondition {
        /// Malformed or unprocessable request.
        BadRequest = "bad-request",
        /// A conflicting resource or session exists.
        Conflict = "conflict",
        /// Not implemented here.
        FeatureNotImplemented = "feature-not-implemented",
        /// The requester lacks permission.
        Forbidden = "forbidden",
        /// The recipient is gone for good.
        Gone = "gone",
        /// A server fault.
        InternalServerError = "internal-server-error",
        /// No such item.
        ItemNotFound = "item-not-found",
        /// A JID is malformed.
        JidMalformed = "jid-malformed",
        /// The request violates a criterion (e.g. too long).
        NotAcceptable = "not-acceptable",
        /// Nobody may do this.
        NotAllowed = "not-allowed",
        /// Authenticate first.
        NotAuthorized = "not-authorized",
        /// A local policy was violated.
        PolicyViolation = "policy-violation",
        /// The intended recipient is temporarily unavailable.
        RecipientUnavailable = "recipient-unavailable",
        /// Redirected.
        Redirect = "redirect",
        /// Registration is required.
        RegistrationRequired = "registration-required",
        /// The remote server does not exist or cannot be resolved.
        RemoteServerNotFound = "remote-server-not-found",
        /// The remote server could not be reached in time.
        RemoteServerTimeout = "remote-server-timeout",
        /// Out of resources (e.g. a quota).
        ResourceConstraint = "resource-constraint",
        /// No such service, or it does not answer this.
        ServiceUnavailable = "service-unavailable",
        /// A subscription is required.
        SubscriptionRequired = "subscription-required",
        /// None of the others.
        UndefinedCondition = "undefined-condition",
        /// Out of order.
        UnexpectedRequest = "unexpected-request",
    }
);

/// The `type` of a stanza error (RFC 6120 §8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Retry after providing credentials.
    Auth,
    /// Do not retry.
    Cancel,
    /// Proceed (a warning).
    Continue,
    /// Retry after changing the data.
    Modify,
    /// Retry after waiting.
    Wait,
}

impl ErrorType {
    /// Attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

impl StanzaCondition {
    /// The error type RFC 6120 §8.3.3 gives in its examples for this condition.
    pub fn default_type(self) -> ErrorType {
        use StanzaCondition as C;
        match self {
            C::BadRequest | C::JidMalformed | C::NotAcceptable | C::PolicyViolation => {
                ErrorType::Modify
            }
            C::Redirect => ErrorType::Modify,
            C::Forbidden | C::NotAuthorized | C::RegistrationRequired | C::SubscriptionRequired => {
                ErrorType::Auth
            }
            C::RecipientUnavailable | C::RemoteServerTimeout | C::ResourceConstraint => {
                ErrorType::Wait
            }
            C::InternalServerError => ErrorType::Cancel,
            C::UnexpectedRequest => ErrorType::Wait,
            C::Conflict
            | C::FeatureNotImplemented
            | C::Gone
            | C::ItemNotFound
            | C::NotAllowed
            | C::RemoteServerNotFound
            | C::ServiceUnavailable
            | C::UndefinedCondition => ErrorType::Cancel,
        }
    }
}

/// A stanza error to put into an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaError {
    /// The condition.
    pub condition: StanzaCondition,
    /// The type (defaults per condition).
    pub kind: ErrorType,
    /// Human-readable text for the other party: never internal details.
    pub text: Option<String>,
    /// Extra application-specific child (e.g. XEP-0191 `<blocked/>`).
    pub app: Option<Box<Element>>,
    /// The entity that generated the error (`by`), usually the server's domain.
    pub by: Option<String>,
}

impl StanzaError {
    /// An error with the condition's default type.
    pub fn new(condition: StanzaCondition) -> StanzaError {
        StanzaError {
            condition,
            kind: condition.default_type(),
            text: None,
            app: None,
            by: None,
        }
    }

    /// Adds a text for the user.
    pub fn with_text(mut self, text: impl Into<String>) -> StanzaError {
        self.text = Some(text.into());
        self
    }

    /// Overrides the type.
    pub fn with_type(mut self, kind: ErrorType) -> StanzaError {
        self.kind = kind;
        self
    }

    /// Adds an application-specific condition element.
    pub fn with_app(mut self, app: Element) -> StanzaError {
        self.app = Some(Box::new(app));
        self
    }

    /// Sets `by`.
    pub fn by(mut self, by: impl Into<String>) -> StanzaError {
        self.by = Some(by.into());
        self
    }

    /// The `<error/>` element.
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::CLIENT).with_attr("type", self.kind.as_str());
        if let Some(by) = &self.by {
            e.set_attr("by", by.as_str());
        }
        e.push_child(Element::new(self.condition.as_str(), ns::STANZA_ERRORS));
        if let Some(t) = &self.text {
            let mut text = Element::new("text", ns::STANZA_ERRORS).with_text(t.as_str());
            text.set_attr_ns(ns::XML, "lang", "en");
            e.push_child(text);
        }
        if let Some(app) = &self.app {
            e.push_child(app.as_ref().clone());
        }
        e
    }

    /// The error reply to `stanza` (RFC 6120 §8.3.1): same name and id, `to` and `from`
    /// swapped, `type='error'`. `None` when `stanza` is itself an error: errors are never
    /// answered with errors. A stanza without `to` was addressed to the sender's own account,
    /// so the reply has no `from` either (RFC 6120 §8.1.2.1), as clients expect.
    pub fn reply_to(&self, stanza: &Element) -> Option<Element> {
        if stanza.attr("type") == Some("error") {
            return None;
        }
        let mut r = Element::new(stanza.name(), ns::CLIENT).with_attr("type", "error");
        if let Some(id) = stanza.attr("id") {
            r.set_attr("id", id);
        }
        if let Some(from) = stanza.attr("from") {
            r.set_attr("to", from);
        }
        if let Some(to) = stanza.attr("to") {
            r.set_attr("from", to);
        }
        // Echo an IQ's payload (RFC 6120 §8.3.1 permits it, clients use it to match the request);
        // for messages and presence keep it small: no body is echoed back.
        if stanza.name() == "iq" {
            for c in stanza.children() {
                r.push_child(c.clone());
            }
        }
        r.push_child(self.to_element());
        Some(r)
    }
}

impl From<StanzaCondition> for StanzaError {
    fn from(c: StanzaCondition) -> Self {
        StanzaError::new(c)
    }
}

/// A stream error to send before closing a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// The condition.
    pub condition: StreamCondition,
    /// Text for the peer (never internal details).
    pub text: Option<String>,
    /// For `see-other-host`: the host (and port) to use.
    pub other_host: Option<String>,
}

impl StreamError {
    /// A stream error with no text.
    pub fn new(condition: StreamCondition) -> StreamError {
        StreamError {
            condition,
            text: None,
            other_host: None,
        }
    }

    /// Adds text for the peer.
    pub fn with_text(mut self, text: impl Into<String>) -> StreamError {
        self.text = Some(text.into());
        self
    }

    /// `<see-other-host>host</see-other-host>` (RFC 6120 §4.9.3.19).
    pub fn see_other_host(host: impl Into<String>) -> StreamError {
        StreamError {
            condition: StreamCondition::SeeOtherHost,
            text: None,
            other_host: Some(host.into()),
        }
    }

    /// The `<stream:error/>` element (written with the `stream:` prefix by the stream writer).
    pub fn to_element(&self) -> Element {
        let mut e = Element::new("error", ns::STREAM);
        let mut c = Element::new(self.condition.as_str(), ns::STREAM_ERRORS);
        if let Some(h) = &self.other_host {
            c.push_text(h.as_str());
        }
        e.push_child(c);
        if let Some(t) = &self.text {
            let mut text = Element::new("text", ns::STREAM_ERRORS).with_text(t.as_str());
            text.set_attr_ns(ns::XML, "lang", "en");
            e.push_child(text);
        }
        e
    }

    /// `<stream:error>…</stream:error>` as bytes, for a stream whose header bound `stream:`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"<stream:error>");
        for c in self.to_element().children() {
            c.write_to(&mut out, ns::CLIENT);
        }
        out.extend_from_slice(b"</stream:error>");
        out
    }
}

impl From<&FramingError> for StreamError {
    fn from(e: &FramingError) -> Self {
        let (condition, text) = match e {
            FramingError::NotWellFormed(_) => (StreamCondition::NotWellFormed, None),
            FramingError::Restricted(_) => (StreamCondition::RestrictedXml, None),
            FramingError::BadNamespacePrefix(_) => (StreamCondition::BadNamespacePrefix, None),
            FramingError::TextAtStreamLevel => (StreamCondition::BadFormat, None),
            // RFC 6120 §4.9.3.14: a stanza over a configured limit. The text names the limit,
            // so that the client's operator can tell which one.
            FramingError::TooLarge(_)
            | FramingError::TooDeep(_)
            | FramingError::TooManyAttributes(_)
            | FramingError::TooManyElements(_)
            | FramingError::TooMuchMemory(_)
            | FramingError::TokenTooLong(_)
            | FramingError::NamespaceTooLong(_) => {
                (StreamCondition::PolicyViolation, Some(e.to_string()))
            }
        };
        StreamError {
            condition,
            text,
            other_host: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_round_trip() {
        for c in [
            StanzaCondition::ServiceUnavailable,
            StanzaCondition::ItemNotFound,
            StanzaCondition::NotAcceptable,
        ] {
            assert_eq!(StanzaCondition::parse(c.as_str()), Some(c));
        }
        assert_eq!(
            StreamCondition::parse("see-other-host"),
            Some(StreamCondition::SeeOtherHost)
        );
        assert_eq!(StreamCondition::parse("nope"), None);
    }

    #[test]
    fn error_reply_swaps_addresses_and_keeps_id() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("from", "a@b/c")
            .with_attr("to", "b")
            .with_attr("id", "x1")
            .with_attr("type", "get")
            .with_child(Element::new("query", "urn:q"));
        let r = StanzaError::new(StanzaCondition::ServiceUnavailable)
            .reply_to(&iq)
            .unwrap();
        assert_eq!(
            r.to_xml(ns::CLIENT),
            "<iq type='error' id='x1' to='a@b/c' from='b'><query xmlns='urn:q'/>\
             <error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></iq>"
        );
        let err = r;
        assert!(
            StanzaError::new(StanzaCondition::BadRequest)
                .reply_to(&err)
                .is_none()
        );
    }

    #[test]
    fn message_error_reply_drops_body() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("from", "a@b/c")
            .with_attr("to", "x@b")
            .with_child(Element::new("body", ns::CLIENT).with_text("secret"));
        let r = StanzaError::new(StanzaCondition::ServiceUnavailable)
            .with_text("blocked")
            .reply_to(&m)
            .unwrap();
        assert!(!r.to_xml(ns::CLIENT).contains("secret"));
        assert!(r.to_xml(ns::CLIENT).contains("<text xmlns="));
    }

    #[test]
    fn stream_error_bytes() {
        let e = StreamError::see_other_host("other.example:5222");
        assert_eq!(
            String::from_utf8(e.to_bytes()).unwrap(),
            "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>\
             other.example:5222</see-other-host></stream:error>"
        );
        for limit in [
            FramingError::TooLarge(10),
            FramingError::TooManyElements(10),
            FramingError::TooMuchMemory(10),
            FramingError::TokenTooLong(10),
            FramingError::NamespaceTooLong(10),
        ] {
            let e = StreamError::from(&limit);
            assert_eq!(e.condition, StreamCondition::PolicyViolation);
            assert_eq!(e.text, Some(limit.to_string()));
        }
    }
}
