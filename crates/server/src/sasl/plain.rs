//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`. Only to be offered on encrypted
//! streams; the password is checked against the SCRAM record with
//! [`super::verify_password`], so one stored credential serves both mechanisms.

use super::{MAX_MESSAGE_LEN, SaslFailure, saslprep::saslprep, wipe};

/// A password held in memory: overwritten on drop and never shown by `Debug`.
pub struct Password(String);

impl Password {
    /// The password text, for [`super::verify_password`]. Do not copy it further.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        wipe(&mut bytes);
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The parsed PLAIN initial response.
#[derive(Debug)]
pub struct PlainCredentials {
    /// The authorization identity, if the client sent a non-empty one; the caller decides.
    pub authzid: Option<String>,
    /// The authentication identity, SASLprepped.
    pub username: String,
    /// The password, SASLprepped.
    pub password: Password,
}

/// Parses `authzid NUL authcid NUL passwd` (UTF-8). The authcid and password are SASLprepped and
/// must not be empty; an empty authzid means none. The authzid is returned as sent (it is a JID
/// in XMPP, which has its own preparation).
///
/// Every problem is `MalformedRequest`: the message violates RFC 4616's syntax or profile.
pub fn parse_plain(msg: &[u8]) -> Result<PlainCredentials, SaslFailure> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(SaslFailure::MalformedRequest);
    }
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslFailure::MalformedRequest);
    };
    let (authzid, authcid, passwd) = (text(authzid)?, text(authcid)?, text(passwd)?);
    // saslprep refuses empty results, which covers RFC 4616's 1*SAFE for authcid and passwd.
    let username = saslprep(authcid)?.into_owned();
    let password = Password(saslprep(passwd)?.into_owned());
    Ok(PlainCredentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        username,
        password,
    })
}

/// UTF-8 or `MalformedRequest`.
fn text(b: &[u8]) -> Result<&str, SaslFailure> {
    std::str::from_utf8(b).map_err(|_| SaslFailure::MalformedRequest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{make_record, verify_password};
    use crate::storage::types::ScramHash;

    #[test]
    fn without_authzid() {
        let c = parse_plain(b"\0juliet\0r0m30myr0m30").unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.username, "juliet");
        assert_eq!(c.password.expose(), "r0m30myr0m30");
    }

    #[test]
    fn with_authzid() {
        let c = parse_plain(b"admin@example.com\0juliet\0pw").unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin@example.com"));
        assert_eq!(c.username, "juliet");
    }

    #[test]
    fn malformed() {
        let long = [b"\0u\0".as_slice(), &[b'p'; MAX_MESSAGE_LEN]].concat();
        let cases: &[&[u8]] = &[
            b"",
            b"juliet",
            b"\0juliet",
            b"juliet\0pw",
            b"\0\0pw",
            b"\0juliet\0",
            b"\0juliet\0pw\0",
            b"a\0b\0c\0d",
            b"\0jul\xffiet\0pw",
            b"\0juliet\0p\xc3",
            b"\xff\0juliet\0pw",
            b"\0bell\x07\0pw",
            b"\0juliet\0bell\x07",
            b"\0\xc2\xad\0pw",
            &long,
        ];
        for case in cases {
            assert_eq!(
                parse_plain(case).map(|_| ()),
                Err(SaslFailure::MalformedRequest),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn saslprep_applied() {
        let c = parse_plain("\0I\u{AD}X\0\u{2168}".as_bytes()).unwrap();
        assert_eq!(c.username, "IX");
        assert_eq!(c.password.expose(), "IX");
    }

    #[test]
    fn debug_hides_password() {
        let c = parse_plain(b"\0juliet\0sekrit").unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }

    #[test]
    fn verifies_against_record() {
        let record = make_record(ScramHash::Sha256, "r0m30 \u{00A0}x", 4096).unwrap();
        let good = parse_plain("\0juliet\0r0m30 \u{00A0}x".as_bytes()).unwrap();
        assert!(verify_password(&record, good.password.expose()));
        let bad = parse_plain(b"\0juliet\0r0m30").unwrap();
        assert!(!verify_password(&record, bad.password.expose()));
    }
}
