//! Server side of SASL for XMPP (RFC 6120 §6): SCRAM-SHA-1/-256 and their -PLUS variants, PLAIN,
//! and the credential records behind them. Pure logic: the stream layer does base64 on the
//! `<auth/>`/`<response/>` payloads, looks up records and sends `<success/>`/`<failure/>`.
//!
//! All cryptography goes through `aws-lc-rs`; every comparison of secret-derived bytes is
//! constant-time. Nothing here logs, and no type holding a key or password prints it in `Debug`.

mod plain;
mod saslprep;
mod scram;

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, hmac, rand};

use crate::storage::types::{ScramHash, ScramRecord};

pub use plain::{Password, PlainCredentials, parse_plain};
pub use saslprep::saslprep;
pub use scram::{ClientFirst, ScramServer};

/// Largest SASL message (after base64 decoding) any mechanism here accepts; real ones are a few
/// hundred bytes, and a bound keeps parsing and hashing cost fixed.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Length of the salt [`make_record`] generates (RFC 5802 leaves it open; 16 bytes is common).
pub const SALT_LEN: usize = 16;

/// The channel-binding type of RFC 9266 (TLS 1.3 exporter).
pub const TLS_EXPORTER: &str = "tls-exporter";

/// The channel-binding type of RFC 5929 §4 (hash of the server certificate).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// A SASL mechanism this server knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-1 (RFC 5802), without channel binding.
    ScramSha1,
    /// SCRAM-SHA-1-PLUS (RFC 5802), with channel binding.
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677), without channel binding.
    ScramSha256,
    /// SCRAM-SHA-256-PLUS (RFC 7677), with channel binding.
    ScramSha256Plus,
    /// PLAIN (RFC 4616); only to be offered over TLS.
    Plain,
    /// EXTERNAL (RFC 4422 Appendix A), authentication by the TLS client certificate.
    External,
}

impl Mechanism {
    /// Every mechanism, strongest SCRAM first, in the order a server would advertise them.
    pub const ALL: [Mechanism; 6] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha1,
        Mechanism::Plain,
        Mechanism::External,
    ];

    /// The registered mechanism name as it appears in `<mechanism/>` and `<auth mechanism=''/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::Plain => "PLAIN",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// Looks up a mechanism by its exact name (SASL names are upper case; RFC 4422 §3.1).
    pub fn parse(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// The hash function of a SCRAM mechanism; `None` for PLAIN and EXTERNAL.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::Plain | Mechanism::External => None,
        }
    }

    /// Whether this is a -PLUS (channel-binding) variant.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }
}

/// RFC 6120 §6.5 SASL failure conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslFailure {
    /// §6.5.1: the client aborted.
    Aborted,
    /// §6.5.2: the account is disabled.
    AccountDisabled,
    /// §6.5.3: the credentials have expired.
    CredentialsExpired,
    /// §6.5.4: the mechanism needs an encrypted stream.
    EncryptionRequired,
    /// §6.5.5: the base64 wrapping was bad (the caller's job to detect).
    IncorrectEncoding,
    /// §6.5.6: the authorization identity is invalid.
    InvalidAuthzid,
    /// §6.5.7: unknown or unoffered mechanism.
    InvalidMechanism,
    /// §6.5.8: the data violates the mechanism's syntax.
    MalformedRequest,
    /// §6.5.9: the mechanism is weaker than policy allows.
    MechanismTooWeak,
    /// §6.5.10: the credentials are wrong (or channel binding failed).
    NotAuthorized,
    /// §6.5.11: a server-side problem; the client may retry.
    TemporaryAuthFailure,
}

impl SaslFailure {
    /// The child element name inside `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>`.
    pub fn element_name(self) -> &'static str {
        match self {
            SaslFailure::Aborted => "aborted",
            SaslFailure::AccountDisabled => "account-disabled",
            SaslFailure::CredentialsExpired => "credentials-expired",
            SaslFailure::EncryptionRequired => "encryption-required",
            SaslFailure::IncorrectEncoding => "incorrect-encoding",
            SaslFailure::InvalidAuthzid => "invalid-authzid",
            SaslFailure::InvalidMechanism => "invalid-mechanism",
            SaslFailure::MalformedRequest => "malformed-request",
            SaslFailure::MechanismTooWeak => "mechanism-too-weak",
            SaslFailure::NotAuthorized => "not-authorized",
            SaslFailure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

impl std::fmt::Display for SaslFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SASL failure: {}", self.element_name())
    }
}

impl std::error::Error for SaslFailure {}

/// Channel-binding data the TLS layer can offer for this connection.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    /// RFC 9266 `tls-exporter`: the 32-byte exporter value for label "EXPORTER-Channel-Binding"
    /// with empty context. The TLS layer must leave it `None` on TLS 1.2 without extended master
    /// secret, where RFC 9266 §3 forbids it.
    pub tls_exporter: Option<Vec<u8>>,
    /// RFC 5929 `tls-server-end-point`: hash of our certificate (SHA-256 for SHA-1/MD5 signatures).
    pub tls_server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// The data for a channel-binding type name, if that type is known and available.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match name {
            TLS_EXPORTER => self.tls_exporter.as_deref(),
            TLS_SERVER_END_POINT => self.tls_server_end_point.as_deref(),
            _ => None,
        }
    }

    /// The type names with data, for the XEP-0440 `<sasl-channel-binding/>` advertisement.
    pub fn available(&self) -> Vec<&'static str> {
        [TLS_EXPORTER, TLS_SERVER_END_POINT]
            .into_iter()
            .filter(|name| self.get(name).is_some())
            .collect()
    }

    /// Whether any binding is available, i.e. whether the -PLUS mechanisms can be offered.
    pub fn any(&self) -> bool {
        self.tls_exporter.is_some() || self.tls_server_end_point.is_some()
    }
}

impl std::fmt::Debug for ChannelBindings {
    // Binding values are session-unique; keeping them out of logs costs nothing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelBindings")
            .field("available", &self.available())
            .finish()
    }
}

/// Secret bytes that are overwritten when dropped.
///
/// Best effort without `unsafe`: `black_box` stops the compiler from eliding the final writes;
/// copies made by moves or reallocations elsewhere are not reached.
pub(crate) struct Secret(pub(crate) Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites a buffer with zeroes in a way the optimiser keeps.
pub(crate) fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
}

/// Makes a credential from a password: SASLprep, a fresh random 16-byte salt, PBKDF2.
///
/// Fails with `MalformedRequest` if the password does not survive SASLprep or `iterations` is 0,
/// and with `TemporaryAuthFailure` if the random generator fails.
pub fn make_record(
    hash: ScramHash,
    password: &str,
    iterations: u32,
) -> Result<ScramRecord, SaslFailure> {
    let mut salt = vec![0u8; SALT_LEN];
    rand::fill(&mut salt).map_err(|_| SaslFailure::TemporaryAuthFailure)?;
    derive_record(hash, password, &salt, iterations)
}

/// Makes a credential from a password with a given salt (for imports and test vectors); prefer
/// [`make_record`], which picks a fresh salt.
pub fn derive_record(
    hash: ScramHash,
    password: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<ScramRecord, SaslFailure> {
    let iterations_nz = NonZeroU32::new(iterations).ok_or(SaslFailure::MalformedRequest)?;
    let prepared = Secret(saslprep(password)?.into_owned().into_bytes());
    let salted = scram::salted_password(hash, &prepared.0, salt, iterations_nz);
    Ok(ScramRecord {
        hash,
        salt: salt.to_vec(),
        iterations,
        stored_key: scram::stored_key(hash, &salted.0),
        server_key: scram::server_key(hash, &salted.0),
    })
}

/// A deterministic fake record for unknown users, so that the exchange looks the same and an
/// attacker cannot tell which accounts exist.
///
/// Everything is `HMAC-SHA-256(secret, label || hash name || username)`, so the same unknown
/// user always gets the same salt (a changing salt would give the game away). `secret` must be a
/// server-wide random value of at least 32 bytes that never leaves the server. Verification never
/// succeeds: it would need a hash preimage of a StoredKey the attacker never sees.
pub fn fake_record(hash: ScramHash, username: &str, secret: &[u8], iterations: u32) -> ScramRecord {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let derive = |label: &[u8], len: usize| -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&key);
        // NUL-separated framing is unambiguous: labels and hash names come from a fixed set
        // without NUL, and the username comes last.
        for part in [
            label,
            b"\0",
            hash.as_str().as_bytes(),
            b"\0",
            username.as_bytes(),
        ] {
            ctx.update(part);
        }
        let tag = ctx.sign();
        tag.as_ref()[..len].to_vec()
    };
    let key_len = scram::output_len(hash);
    ScramRecord {
        hash,
        salt: derive(b"zorg fake SCRAM salt", SALT_LEN),
        // A zero count would make ScramServer refuse the record, which would be visible.
        iterations: iterations.max(1),
        stored_key: derive(b"zorg fake SCRAM stored key", key_len),
        server_key: derive(b"zorg fake SCRAM server key", key_len),
    }
}

/// Checks a password (for PLAIN) against a stored record: SASLprep, PBKDF2 with the record's salt
/// and iteration count, then a constant-time comparison of StoredKey.
///
/// The password is SASLprepped here just as [`make_record`] does; SASLprep is idempotent, so an
/// already-prepared password (as [`parse_plain`] returns) gives the same result.
pub fn verify_password(record: &ScramRecord, password: &str) -> bool {
    let Ok(prepared) = saslprep(password) else {
        return false;
    };
    let prepared = Secret(prepared.into_owned().into_bytes());
    let Some(iterations) = NonZeroU32::new(record.iterations) else {
        return false;
    };
    let salted = scram::salted_password(record.hash, &prepared.0, &record.salt, iterations);
    let stored_key = scram::stored_key(record.hash, &salted.0);
    constant_time::verify_slices_are_equal(&stored_key, &record.stored_key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
        }
        assert_eq!(Mechanism::parse("scram-sha-1"), None);
        assert_eq!(Mechanism::parse("DIGEST-MD5"), None);
        assert_eq!(Mechanism::ScramSha256Plus.name(), "SCRAM-SHA-256-PLUS");
        assert!(Mechanism::ScramSha1Plus.is_plus());
        assert!(!Mechanism::ScramSha1.is_plus());
        assert_eq!(Mechanism::Plain.scram_hash(), None);
        assert_eq!(
            Mechanism::ScramSha256Plus.scram_hash(),
            Some(ScramHash::Sha256)
        );
    }

    #[test]
    fn failure_element_names() {
        assert_eq!(SaslFailure::NotAuthorized.element_name(), "not-authorized");
        assert_eq!(
            SaslFailure::TemporaryAuthFailure.element_name(),
            "temporary-auth-failure"
        );
        assert_eq!(
            SaslFailure::InvalidAuthzid.element_name(),
            "invalid-authzid"
        );
    }

    #[test]
    fn channel_bindings_lookup() {
        let cb = ChannelBindings {
            tls_exporter: Some(vec![1; 32]),
            tls_server_end_point: None,
        };
        assert_eq!(cb.get(TLS_EXPORTER), Some(&[1u8; 32][..]));
        assert_eq!(cb.get(TLS_SERVER_END_POINT), None);
        assert_eq!(cb.get("tls-unique"), None);
        assert_eq!(cb.available(), vec![TLS_EXPORTER]);
        assert!(cb.any());
        assert!(!ChannelBindings::default().any());
        assert!(!format!("{cb:?}").contains("[1, 1"));
    }

    #[test]
    fn make_record_then_verify_round_trip() {
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let record = make_record(hash, "correct horse", 4096).unwrap();
            assert_eq!(record.salt.len(), SALT_LEN);
            assert_eq!(record.iterations, 4096);
            assert_eq!(record.stored_key.len(), scram::output_len(hash));
            assert!(verify_password(&record, "correct horse"));
            assert!(!verify_password(&record, "correct horsf"));
            assert!(!verify_password(&record, ""));
            let other = make_record(hash, "correct horse", 4096).unwrap();
            assert_ne!(record.salt, other.salt, "salts must be fresh");
        }
    }

    #[test]
    fn verify_uses_saslprep() {
        // U+00AD is mapped to nothing, U+2168 (ROMAN NUMERAL NINE) normalises to "IX".
        let record = make_record(ScramHash::Sha256, "I\u{00AD}X", 4096).unwrap();
        assert!(verify_password(&record, "IX"));
        assert!(verify_password(&record, "\u{2168}"));
    }

    #[test]
    fn make_record_rejects_bad_input() {
        assert_eq!(
            make_record(ScramHash::Sha256, "pw", 0),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            make_record(ScramHash::Sha256, "", 4096),
            Err(SaslFailure::MalformedRequest)
        );
        assert_eq!(
            make_record(ScramHash::Sha256, "bell\u{0007}", 4096),
            Err(SaslFailure::MalformedRequest)
        );
    }

    #[test]
    fn verify_rejects_broken_record() {
        let mut record = make_record(ScramHash::Sha1, "pw", 4096).unwrap();
        record.iterations = 0;
        assert!(!verify_password(&record, "pw"));
    }

    #[test]
    fn fake_record_is_deterministic_and_never_verifies() {
        let secret = [7u8; 32];
        for hash in [ScramHash::Sha1, ScramHash::Sha256] {
            let a = fake_record(hash, "nobody", &secret, 4096);
            let b = fake_record(hash, "nobody", &secret, 4096);
            let c = fake_record(hash, "someone", &secret, 4096);
            assert_eq!(a, b);
            assert_ne!(a.salt, c.salt);
            assert_eq!(a.salt.len(), SALT_LEN);
            assert_eq!(a.stored_key.len(), scram::output_len(hash));
            assert_eq!(a.server_key.len(), scram::output_len(hash));
            assert_eq!(a.iterations, 4096);
            for pw in ["", "nobody", "pencil", "password", "\0"] {
                assert!(!verify_password(&a, pw));
            }
        }
        let other_secret = fake_record(ScramHash::Sha1, "nobody", &[8u8; 32], 4096);
        assert_ne!(
            other_secret.salt,
            fake_record(ScramHash::Sha1, "nobody", &secret, 4096).salt
        );
        assert_ne!(
            fake_record(ScramHash::Sha1, "nobody", &secret, 4096).salt,
            fake_record(ScramHash::Sha256, "nobody", &secret, 4096).salt
        );
    }
}
