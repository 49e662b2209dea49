//! Small server queries: XEP-0202 Entity Time and XEP-0092 Software Version. (XEP-0199 ping
//! answers are one line in the dispatch table.)

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::config::Config;

/// XEP-0202: the server's time in UTC, the result's payload.
pub fn time() -> Element {
    let now = OffsetDateTime::now_utc();
    // Whole seconds: XEP-0082 allows fractions, but some clients parse only seconds.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let utc = now.format(&Rfc3339).unwrap_or_default();
    Element::new("time", ns::TIME)
        .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
        .with_child(Element::new("utc", ns::TIME).with_text(utc))
}

/// XEP-0092: name and version, only when `[modules] version = true` (off by default so that
/// the server does not tell attackers which version to target).
pub fn version(config: &Config) -> Result<Element, StanzaError> {
    if !config.modules.version {
        return Err(StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    let mut q = Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("Zorg"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
    if config.modules.version_os {
        q.push_child(Element::new("os", ns::VERSION).with_text(std::env::consts::OS));
    }
    Ok(q)
}
