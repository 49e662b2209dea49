//! What `zorg ca` accepts as a domain, a CA name, a CRL URL and a serial, checked before
//! anything is signed: a certificate names exactly what the auditor meant, or is not made.

/// The longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_DNS_NAME: usize = 253;
/// The longest DNS label (RFC 1035 §2.3.4).
const MAX_DNS_LABEL: usize = 63;
/// X.520's upper bound for a common name (RFC 5280 appendix A, ub-common-name).
const MAX_CA_NAME: usize = 64;

/// Normalises and checks an XMPP domain for a certificate's dNSName (and XmppAddr).
///
/// Accepts ASCII letters in any case (returned lowercase) and one trailing dot (dropped).
/// Refuses wildcards: the auditor vouches for one server per domain, and a wildcard would let
/// any server of a sub-domain speak for its siblings. Refuses IP addresses, internationalised
/// names in Unicode (the A-label, `xn--…`, is accepted) and anything else that is not a DNS name.
pub fn domain(input: &str) -> Result<String, String> {
    let name = input
        .strip_suffix('.')
        .unwrap_or(input)
        .to_ascii_lowercase();
    let bad = |why: &str| Err(format!("--domain {input:?} {why}"));
    if name.is_empty() {
        return bad("is empty: give a DNS name such as xmpp.example.org");
    }
    if name.contains('*') {
        return bad(
            "is a wildcard: zorg ca issues certificates for exact domains only; \
             repeat --domain for each one",
        );
    }
    if !name.is_ascii() {
        return bad("is not ASCII: give an internationalised name as its A-label (xn--…)");
    }
    if name.len() > MAX_DNS_NAME {
        return bad("is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > MAX_DNS_LABEL {
            return bad("has a label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("may hold only letters, digits, hyphens and dots");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label that starts or ends with a hyphen");
        }
    }
    if name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad("looks like an IP address: certificates from zorg ca name DNS domains only");
    }
    Ok(name)
}

/// Checks the CA's name (its subject common name), which servers log and people read.
pub fn ca_name(input: &str) -> Result<String, String> {
    let name = input.trim();
    if name.is_empty() {
        return Err(
            "--name is empty: give the auditor's name, e.g. \"Care Federation Root CA\"".into(),
        );
    }
    if name.chars().count() > MAX_CA_NAME {
        return Err(format!("--name is longer than {MAX_CA_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("--name may not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// Checks a CRL distribution point: an http(s) URL without spaces (an IA5String).
pub fn crl_url(input: &str) -> Result<String, String> {
    let url = input.trim();
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && url.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(url.to_owned())
        }
        _ => Err(format!(
            "--crl-url {input:?} is not an http:// or https:// URL (ASCII, no spaces), \
             e.g. http://pki.example.org/root.crl"
        )),
    }
}

/// A serial as typed by a person: hex, any case, optionally with colons as `openssl` prints it.
/// Returns lowercase hex without leading zeros, or `None` when it cannot be a serial.
pub fn serial(input: &str) -> Option<String> {
    let hex: String = input
        .chars()
        .filter(|&c| c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex.trim_start_matches('0').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_lowercased_and_lose_a_trailing_dot() {
        assert_eq!(domain("Care.Example.").unwrap(), "care.example");
        assert_eq!(domain("localhost").unwrap(), "localhost");
        assert_eq!(
            domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(domain("a-1.b2.example").unwrap(), "a-1.b2.example");
    }

    #[test]
    fn what_is_not_a_dns_name_is_refused_with_the_reason() {
        for (input, why) in [
            ("", "empty"),
            (".", "empty"),
            ("*.example.org", "wildcard"),
            ("bücher.example", "A-label"),
            ("a..example", "empty label"),
            (".example", "empty label"),
            ("a_b.example", "only letters"),
            ("a b.example", "only letters"),
            ("-a.example", "hyphen"),
            ("a-.example", "hyphen"),
            ("127.0.0.1", "IP address"),
            ("alice@example.org", "only letters"),
        ] {
            let err = domain(input).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
        assert!(domain(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(domain(&["abcdefghij"; 24].join(".")).is_err());
    }

    #[test]
    fn ca_names_and_urls() {
        assert_eq!(ca_name("  Care Root ").unwrap(), "Care Root");
        assert!(ca_name(" ").is_err());
        assert!(ca_name("a\nb").is_err());
        assert!(ca_name(&"x".repeat(65)).is_err());
        assert!(crl_url("http://pki.example.org/root.crl").is_ok());
        assert!(crl_url("HTTPS://pki.example.org/root.crl").is_ok());
        assert!(crl_url("ftp://pki.example.org/root.crl").is_err());
        assert!(crl_url("http://").is_err());
        assert!(crl_url("http://pki.example.org/a b").is_err());
    }

    #[test]
    fn serials_are_read_as_openssl_and_zorg_print_them() {
        assert_eq!(serial("4F:0A:b1").unwrap(), "4f0ab1");
        assert_eq!(serial("004f0ab1").unwrap(), "4f0ab1");
        assert_eq!(serial("example.org"), None);
        assert_eq!(serial(""), None);
    }
}
