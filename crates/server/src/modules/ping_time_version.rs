//! Small server queries: XEP-0202 Entity Time and XEP-0092 Software Version. (XEP-0199 ping
//! answers are one line in the dispatch table.)

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zorg_proto::{Element, StanzaCondition, StanzaError, ns};

use crate::modules::iq_result;
use crate::session::Ctx;

/// XEP-0202: the server's time in UTC.
pub fn time(ctx: &mut Ctx<'_>, el: Element) {
    let now = OffsetDateTime::now_utc();
    // Whole seconds: XEP-0082 allows fractions, but some clients parse only seconds.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let utc = now.format(&Rfc3339).unwrap_or_default();
    let t = Element::new("time", ns::TIME)
        .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
        .with_child(Element::new("utc", ns::TIME).with_text(utc));
    ctx.to_self.push(iq_result(&el, Some(t)));
}

/// XEP-0092: name and version, only when `[modules] version = true` (off by default so that
/// the server does not tell attackers which version to target).
pub fn version(ctx: &mut Ctx<'_>, el: Element) {
    if !ctx.server.config.modules.version {
        ctx.reply_error(&el, StanzaError::new(StanzaCondition::ServiceUnavailable));
        return;
    }
    let mut q = Element::new("query", ns::VERSION)
        .with_child(Element::new("name", ns::VERSION).with_text("Zorg"))
        .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
    if ctx.server.config.modules.version_os {
        q.push_child(Element::new("os", ns::VERSION).with_text(std::env::consts::OS));
    }
    ctx.to_self.push(iq_result(&el, Some(q)));
}
