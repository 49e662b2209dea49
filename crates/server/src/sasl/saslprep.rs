//! SASLprep (RFC 4013): a thin wrapper over the `stringprep` crate.
//!
//! The crate's error names the offending character; for passwords that would leak a piece of the
//! secret into whatever logs the error, so the detail is dropped here.

use std::borrow::Cow;

use super::SaslFailure;

/// Prepares `s` with the SASLprep profile, treating it as a "stored string" (unassigned code points
/// are refused), which is what RFC 5802 asks for passwords.
///
/// An empty result is refused too: RFC 5802 §5.1 says to abort on an empty prepared username, and
/// RFC 4616 requires a non-empty password, so no caller wants the empty string.
///
/// Limitation: the `stringprep` crate has no "query string" mode, so usernames containing code
/// points unassigned in Unicode 3.2 are refused rather than passed through.
pub fn saslprep(s: &str) -> Result<Cow<'_, str>, SaslFailure> {
    match stringprep::saslprep(s) {
        Ok(prepared) if !prepared.is_empty() => Ok(prepared),
        _ => Err(SaslFailure::MalformedRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 §3, examples 1-5.
        assert_eq!(saslprep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(saslprep("user").unwrap(), "user");
        assert_eq!(saslprep("USER").unwrap(), "USER");
        assert_eq!(saslprep("\u{00AA}").unwrap(), "a");
        assert_eq!(saslprep("\u{2168}").unwrap(), "IX");
        assert_eq!(saslprep("\u{0007}"), Err(SaslFailure::MalformedRequest));
        assert_eq!(saslprep("\u{0627}1"), Err(SaslFailure::MalformedRequest));
    }

    #[test]
    fn non_ascii_space_is_mapped() {
        assert_eq!(saslprep("a\u{00A0}b").unwrap(), "a b");
    }

    #[test]
    fn empty_is_refused() {
        assert_eq!(saslprep(""), Err(SaslFailure::MalformedRequest));
        // Only mapped-to-nothing characters: empty after preparation.
        assert_eq!(saslprep("\u{00AD}"), Err(SaslFailure::MalformedRequest));
    }
}
