//! SCRAM server (RFC 5802, RFC 7677) with channel binding (RFC 5929 `tls-server-end-point`,
//! RFC 9266 `tls-exporter`).
//!
//! The exchange is a small state machine: `client_first` → `server_first` → `client_final`. Any
//! error, or a call out of order, leaves it failed for good, so one `ScramServer` authenticates at
//! most once.

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::{ChannelBindings, MAX_MESSAGE_LEN, SaslFailure, Secret, saslprep::saslprep};
use crate::storage::types::{ScramHash, ScramRecord};

/// Random bytes in the server's part of the nonce (32 characters once base64-encoded).
const SERVER_NONCE_LEN: usize = 24;

/// Output length of the hash, which is also the length of every SCRAM key and proof.
pub(super) fn output_len(hash: ScramHash) -> usize {
    match hash {
        ScramHash::Sha1 => 20,
        ScramHash::Sha256 => 32,
    }
}

/// `HMAC(key, data)` with the record's hash.
fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    let alg = match hash {
        ScramHash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        ScramHash::Sha256 => hmac::HMAC_SHA256,
    };
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

/// `H(data)` with the record's hash.
fn h(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    let alg = match hash {
        ScramHash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        ScramHash::Sha256 => &digest::SHA256,
    };
    digest::digest(alg, data).as_ref().to_vec()
}

/// `SaltedPassword := Hi(Normalize(password), salt, i)` (RFC 5802 §3); `password` is prepared.
pub(super) fn salted_password(
    hash: ScramHash,
    password: &[u8],
    salt: &[u8],
    iterations: NonZeroU32,
) -> Secret {
    let alg = match hash {
        ScramHash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
        ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
    };
    let mut out = Secret(vec![0u8; output_len(hash)]);
    pbkdf2::derive(alg, iterations, salt, password, &mut out.0);
    out
}

/// `StoredKey := H(HMAC(SaltedPassword, "Client Key"))`.
pub(super) fn stored_key(hash: ScramHash, salted: &[u8]) -> Vec<u8> {
    let client_key = Secret(hmac(hash, salted, b"Client Key"));
    h(hash, &client_key.0)
}

/// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
pub(super) fn server_key(hash: ScramHash, salted: &[u8]) -> Vec<u8> {
    hmac(hash, salted, b"Server Key")
}

/// What the client-first-message says about who is logging in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The authentication identity, unescaped and SASLprepped.
    pub username: String,
    /// The authorization identity (`a=`), unescaped but otherwise as sent; the caller decides.
    pub authzid: Option<String>,
}

/// Where the exchange stands.
enum State {
    Start,
    GotFirst {
        /// gs2-header followed by the channel-binding data: what `c=` must decode to.
        cbind_input: Vec<u8>,
        client_first_bare: String,
        client_nonce: String,
    },
    SentFirst {
        cbind_input: Vec<u8>,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        /// `None` when the exchange cannot succeed (unusable record, no randomness).
        record: Option<ScramRecord>,
    },
    Done,
    Failed,
}

/// The server side of one SCRAM exchange.
pub struct ScramServer {
    hash: ScramHash,
    plus: bool,
    bindings: ChannelBindings,
    server_offers_plus: bool,
    channel_binding: Option<&'static str>,
    state: State,
    /// Whether `client_final` got as far as comparing the proof, i.e. checked a password.
    proof_checked: bool,
    #[cfg(test)]
    test_nonce: Option<String>,
}

impl std::fmt::Debug for ScramServer {
    // The state holds the record's keys: show only what is harmless.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Start => "start",
            State::GotFirst { .. } => "got-client-first",
            State::SentFirst { .. } => "sent-server-first",
            State::Done => "done",
            State::Failed => "failed",
        };
        f.debug_struct("ScramServer")
            .field("hash", &self.hash)
            .field("plus", &self.plus)
            .field("channel_binding", &self.channel_binding)
            .field("state", &state)
            .finish()
    }
}

/// The gs2-cbind-flag of RFC 5802 §7.
enum CbindFlag<'a> {
    /// `n`: the client does not do channel binding.
    No,
    /// `y`: the client does, but thinks the server does not.
    Unused,
    /// `p=name`: the client binds to this type.
    Bound(&'a str),
}

impl ScramServer {
    /// Starts an exchange. `plus`: the client chose a -PLUS mechanism. `bindings`: what TLS
    /// offers. `server_offers_plus`: whether we advertised -PLUS (for the RFC 5802 §6 downgrade
    /// check).
    pub fn new(
        hash: ScramHash,
        plus: bool,
        bindings: ChannelBindings,
        server_offers_plus: bool,
    ) -> Self {
        ScramServer {
            hash,
            plus,
            bindings,
            server_offers_plus,
            channel_binding: None,
            state: State::Start,
            proof_checked: false,
            #[cfg(test)]
            test_nonce: None,
        }
    }

    /// Fixes the server's part of the nonce so that RFC test vectors can be replayed.
    #[cfg(test)]
    pub(crate) fn with_nonce_for_test(mut self, server_nonce: &str) -> Self {
        self.test_nonce = Some(server_nonce.to_owned());
        self
    }

    /// The channel-binding type the client bound to, once `client_first` has accepted it.
    pub fn channel_binding(&self) -> Option<&'static str> {
        self.channel_binding
    }

    /// Whether [`ScramServer::client_final`] compared a proof against the stored key: only then
    /// was a password checked (and the attempt counts toward login limits). A malformed final
    /// message, a wrong nonce or channel binding, or an unusable record do not.
    pub fn proof_checked(&self) -> bool {
        self.proof_checked
    }

    /// Parses the client-first-message (already base64-decoded). Returns the SASLprepped username
    /// and the optional authzid.
    ///
    /// Errors: `MalformedRequest` for syntax, an unsupported mandatory extension (`m=`), `n`/`y`
    /// with a -PLUS mechanism or `p=` without one; `NotAuthorized` for a downgrade (`y` while we
    /// offer -PLUS) or a binding type we cannot provide.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslFailure> {
        if !matches!(
            std::mem::replace(&mut self.state, State::Failed),
            State::Start
        ) {
            return Err(SaslFailure::MalformedRequest);
        }
        let s = as_text(msg)?;

        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = s.split_once(',').ok_or(SaslFailure::MalformedRequest)?;
        let (authz, bare) = rest.split_once(',').ok_or(SaslFailure::MalformedRequest)?;
        let gs2_header = &s[..flag.len() + authz.len() + 2];
        let flag = parse_cbind_flag(flag)?;
        let authzid = match authz {
            "" => None,
            _ => Some(decode_saslname(
                authz
                    .strip_prefix("a=")
                    .ok_or(SaslFailure::MalformedRequest)?,
            )?),
        };

        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut attrs = bare.split(',');
        let user_attr = attrs.next().ok_or(SaslFailure::MalformedRequest)?;
        // We implement no mandatory extension, and RFC 5802 §5.1 says to fail on any.
        let raw_username = user_attr
            .strip_prefix("n=")
            .ok_or(SaslFailure::MalformedRequest)?;
        let username = saslprep(&decode_saslname(raw_username)?)?.into_owned();
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslFailure::MalformedRequest)?;
        if !is_printable(client_nonce) {
            return Err(SaslFailure::MalformedRequest);
        }
        check_extensions(attrs)?;

        // Syntax is fine; now the channel-binding policy of RFC 5802 §6.
        let cb_data = match flag {
            CbindFlag::No | CbindFlag::Unused if self.plus => {
                return Err(SaslFailure::MalformedRequest);
            }
            CbindFlag::No => None,
            // The client could have bound but believes we cannot: someone stripped -PLUS from
            // our offer.
            CbindFlag::Unused if self.server_offers_plus => {
                return Err(SaslFailure::NotAuthorized);
            }
            CbindFlag::Unused => None,
            CbindFlag::Bound(_) if !self.plus => return Err(SaslFailure::MalformedRequest),
            CbindFlag::Bound(name) => {
                // NotAuthorized rather than MalformedRequest: the request is well-formed, we just
                // cannot bind to that type (RFC 5802's "unsupported-channel-binding-type"), and
                // an unbindable channel is an authentication failure like any other.
                let (known, data) = match name {
                    super::TLS_EXPORTER => (super::TLS_EXPORTER, &self.bindings.tls_exporter),
                    super::TLS_SERVER_END_POINT => (
                        super::TLS_SERVER_END_POINT,
                        &self.bindings.tls_server_end_point,
                    ),
                    _ => return Err(SaslFailure::NotAuthorized),
                };
                let data = data.as_deref().ok_or(SaslFailure::NotAuthorized)?;
                self.channel_binding = Some(known);
                Some(data)
            }
        };

        let mut cbind_input = gs2_header.as_bytes().to_vec();
        cbind_input.extend_from_slice(cb_data.unwrap_or_default());
        self.state = State::GotFirst {
            cbind_input,
            client_first_bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        };
        Ok(ClientFirst { username, authzid })
    }

    /// Given the user's record (or a [`super::fake_record`]), produces the server-first-message
    /// `r=<client nonce><server nonce>,s=<salt>,i=<iterations>`.
    ///
    /// Never fails visibly, so that every problem looks like a wrong password: called out of
    /// order it returns an empty message; with a record for another hash or with unusable fields,
    /// or if the random generator fails, the message looks normal but `client_final` will answer
    /// `TemporaryAuthFailure`.
    pub fn server_first(&mut self, record: ScramRecord) -> Vec<u8> {
        let State::GotFirst {
            cbind_input,
            client_first_bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Vec::new();
        };
        let key_len = output_len(self.hash);
        let usable = record.hash == self.hash
            && record.iterations > 0
            && !record.salt.is_empty()
            && record.stored_key.len() == key_len
            && record.server_key.len() == key_len;
        let (server_nonce, random_ok) = self.server_nonce();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&record.salt),
            record.iterations
        );
        let message = server_first.clone().into_bytes();
        self.state = State::SentFirst {
            cbind_input,
            client_first_bare,
            server_first,
            nonce,
            record: (usable && random_ok).then_some(record),
        };
        message
    }

    /// The server's part of the nonce: 24 random bytes, base64 (printable, no commas). The flag
    /// is false if the random generator failed.
    fn server_nonce(&mut self) -> (String, bool) {
        #[cfg(test)]
        if let Some(nonce) = self.test_nonce.take() {
            return (nonce, true);
        }
        let mut buf = [0u8; SERVER_NONCE_LEN];
        let ok = rand::fill(&mut buf).is_ok();
        (STANDARD.encode(buf), ok)
    }

    /// Verifies the client-final-message (already base64-decoded) and returns the
    /// server-final-message `v=<ServerSignature>`.
    ///
    /// Checks, in this order: syntax (`MalformedRequest`), that `c=` is the gs2 header plus the
    /// binding data, that the nonce is ours, and the proof in constant time (all
    /// `NotAuthorized`).
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let State::SentFirst {
            cbind_input,
            client_first_bare,
            server_first,
            nonce,
            record,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(SaslFailure::MalformedRequest);
        };
        let s = as_text(msg)?;

        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = s.rsplit_once(",p=").ok_or(SaslFailure::MalformedRequest)?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(SaslFailure::MalformedRequest)?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(SaslFailure::MalformedRequest)?;
        check_extensions(attrs)?;
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| SaslFailure::MalformedRequest)?;
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| SaslFailure::MalformedRequest)?;
        if proof.len() != output_len(self.hash) {
            return Err(SaslFailure::MalformedRequest);
        }

        let record = record.ok_or(SaslFailure::TemporaryAuthFailure)?;
        constant_time::verify_slices_are_equal(&cbind, &cbind_input)
            .map_err(|_| SaslFailure::NotAuthorized)?;
        if client_nonce != nonce {
            return Err(SaslFailure::NotAuthorized);
        }

        // AuthMessage := client-first-message-bare "," server-first-message ","
        //                client-final-message-without-proof
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(self.hash, &record.stored_key, auth_message.as_bytes());
        let client_key = Secret(
            proof
                .iter()
                .zip(&client_signature)
                .map(|(p, s)| p ^ s)
                .collect(),
        );
        let candidate = h(self.hash, &client_key.0);
        self.proof_checked = true;
        constant_time::verify_slices_are_equal(&candidate, &record.stored_key)
            .map_err(|_| SaslFailure::NotAuthorized)?;

        let server_signature = hmac(self.hash, &record.server_key, auth_message.as_bytes());
        self.state = State::Done;
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

/// Checks the size bound and decodes UTF-8; NUL is never valid in SCRAM (RFC 5802 §7).
fn as_text(msg: &[u8]) -> Result<&str, SaslFailure> {
    if msg.len() > MAX_MESSAGE_LEN || msg.contains(&0) {
        return Err(SaslFailure::MalformedRequest);
    }
    std::str::from_utf8(msg).map_err(|_| SaslFailure::MalformedRequest)
}

/// `gs2-cbind-flag = ("p=" cb-name) / "n" / "y"`, `cb-name = 1*(ALPHA / DIGIT / "." / "-")`.
fn parse_cbind_flag(flag: &str) -> Result<CbindFlag<'_>, SaslFailure> {
    match flag {
        "n" => Ok(CbindFlag::No),
        "y" => Ok(CbindFlag::Unused),
        _ => match flag.strip_prefix("p=") {
            Some(name)
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
            {
                Ok(CbindFlag::Bound(name))
            }
            _ => Err(SaslFailure::MalformedRequest),
        },
    }
}

/// Unescapes a `saslname` (`=2C` is ",", `=3D` is "="; any other "=" is an error). Commas and
/// NUL cannot reach here: the caller split on commas and `as_text` refused NUL.
fn decode_saslname(s: &str) -> Result<String, SaslFailure> {
    if s.is_empty() {
        return Err(SaslFailure::MalformedRequest);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let escape = rest.get(pos..pos + 3);
        match escape {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslFailure::MalformedRequest),
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `printable = %x21-2B / %x2D-7E` (no comma), at least one character.
fn is_printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| matches!(b, 0x21..=0x2B | 0x2D..=0x7E))
}

/// Optional extensions `attr-val = ALPHA "=" value` are ignored, but must be well-formed; an `m`
/// (mandatory) extension is refused wherever it appears.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), SaslFailure> {
    for attr in attrs {
        let b = attr.as_bytes();
        if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' || b[0] == b'm' {
            return Err(SaslFailure::MalformedRequest);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "scram_tests.rs"]
mod tests;
