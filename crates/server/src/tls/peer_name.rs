//! Whether a peer server's certificate names the domain it claims (RFC 6125 as profiled for XMPP
//! by RFC 6120 §13.7.1.2 and XEP-0178). The TLS verifier checks the chain, never the stream's
//! domain: this does.
//!
//! Accepted identifiers, all in subjectAltName: a dNSName equal to the domain (ASCII
//! case-insensitive), a dNSName `*.rest` whose wildcard is the whole left-most label and stands
//! for exactly one label, or an XmppAddr otherName (id-on-xmppAddr, 1.3.6.1.5.5.7.8.5) equal to
//! the domain. The subject common name is never used, not even without subjectAltNames: RFC 9525
//! (which replaces RFC 6125) drops that fallback, and the auditor's `zorg ca` always writes SANs.

use x509_parser::asn1_rs::{Any, Class, FromDer};
use x509_parser::extensions::GeneralName;

/// id-on-xmppAddr (RFC 6120 §13.7.1.4).
const XMPP_ADDR: &str = "1.3.6.1.5.5.7.8.5";

/// One identifier a certificate presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PresentedName {
    /// A dNSName, possibly a wildcard.
    Dns(String),
    /// An XmppAddr otherName.
    XmppAddr(String),
}

impl PresentedName {
    /// The name as shown to operators.
    pub(super) fn text(&self) -> &str {
        match self {
            PresentedName::Dns(n) | PresentedName::XmppAddr(n) => n,
        }
    }

    /// Whether this identifier names `domain`.
    pub(super) fn matches(&self, domain: &str) -> bool {
        match self {
            PresentedName::XmppAddr(n) => n.eq_ignore_ascii_case(domain),
            PresentedName::Dns(n) => dns_matches(n, domain),
        }
    }
}

/// The dNSName and XmppAddr identifiers in the leaf's subjectAltName, in certificate order;
/// `Err` when the certificate cannot be parsed.
pub(super) fn presented_names(leaf_der: &[u8]) -> Result<Vec<PresentedName>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("cannot parse its subjectAltName: {e}"))?;
    let mut names = Vec::new();
    for general in san.iter().flat_map(|ext| &ext.value.general_names) {
        match general {
            GeneralName::DNSName(n) => names.push(PresentedName::Dns((*n).to_owned())),
            GeneralName::OtherName(oid, value) if oid.to_id_string() == XMPP_ADDR => {
                // A malformed XmppAddr names nothing; other names may still match.
                if let Some(addr) = xmpp_addr(value) {
                    names.push(PresentedName::XmppAddr(addr));
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The UTF8String inside an otherName's `[0] EXPLICIT` value.
fn xmpp_addr(value: &[u8]) -> Option<String> {
    let (_, explicit) = Any::from_der(value).ok()?;
    if explicit.class() != Class::ContextSpecific || explicit.tag().0 != 0 {
        return None;
    }
    let (_, inner) = Any::from_der(explicit.data).ok()?;
    inner.as_utf8string().ok().map(|s| s.string())
}

/// RFC 6125 §6.4: exact match ignoring ASCII case, or a wildcard that is the whole left-most
/// label, matches exactly one non-empty label and is followed by at least two labels (so `*.org`
/// names nothing).
fn dns_matches(presented: &str, domain: &str) -> bool {
    let presented = presented.strip_suffix('.').unwrap_or(presented);
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if let Some(rest) = presented.strip_prefix("*.") {
        if rest.split('.').count() < 2 || rest.contains('*') {
            return false;
        }
        return match domain.split_once('.') {
            Some((first, tail)) => !first.is_empty() && tail.eq_ignore_ascii_case(rest),
            None => false,
        };
    }
    !presented.contains('*') && presented.eq_ignore_ascii_case(domain)
}

#[cfg(test)]
mod tests {
    use super::dns_matches;

    #[test]
    fn wildcard_rules() {
        let yes = [
            ("a.example", "a.example"),
            ("A.Example", "a.EXAMPLE"),
            ("*.example.org", "chat.example.org"),
            ("*.EXAMPLE.org", "Chat.example.org"),
            ("a.example.", "a.example"),
        ];
        for (presented, domain) in yes {
            assert!(dns_matches(presented, domain), "{presented} ~ {domain}");
        }
        let no = [
            ("a.example", "b.example"),
            ("*.example.org", "example.org"),
            ("*.example.org", "a.b.example.org"),
            ("*.org", "example.org"),
            ("c*.example.org", "chat.example.org"),
            ("*chat.example.org", "chat.example.org"),
            ("chat.*.org", "chat.example.org"),
            ("*.*.org", "a.b.org"),
            ("*", "example"),
            ("a.example", "a.example.evil"),
        ];
        for (presented, domain) in no {
            assert!(!dns_matches(presented, domain), "{presented} !~ {domain}");
        }
    }
}
