//! SASL on a client stream (RFC 6120 §6): mechanisms offered, the exchange for SCRAM (with
//! channel binding) and PLAIN, and XEP-0077 registration before authentication.
//!
//! Every password check is guarded ([`guard`]): the audit log must be able to take the
//! outcome, attempts on an account under attack wait (bounded), and a place is reserved in the
//! login throttle (`ratelimit::login`) before the check and settled right after it. A checked
//! attempt is recorded durably before it is answered; if that fails the stream is closed with
//! the same error whatever the outcome, so that no unaudited check tells anyone anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncRead, AsyncWrite};
use zorg_proto::{Element, StreamCondition, StreamError, ns};

use crate::audit::Event;
use crate::modules::register;
use crate::ratelimit::login::Reservation;
use crate::sasl::{self, ChannelBindings, Mechanism, SaslFailure, ScramServer};
use crate::server::Server;
use crate::storage::{AccountStore, ScramHash};
use crate::stream::c2s::next_element;
use crate::stream::io::XmlStream;

/// SASL attempts allowed on one stream before it is closed (RFC 6120 §6.4.5: 2 to 5).
const MAX_SASL_ATTEMPTS: u32 = 3;

/// The `<text/>` of a refusal because the audit log cannot take the record.
const UNAUDITED: &str = "the server cannot record logins at the moment; try again later";

/// The `<text/>` of a refusal by the login throttle.
const THROTTLED: &str = "too many failed attempts; wait a few minutes and try again";

/// What one connection's authentication needs to know.
pub(crate) struct Auth<'a> {
    /// Shared server state.
    pub server: &'a Arc<Server>,
    /// The domain the stream is for.
    pub domain: &'a str,
    /// The client's address (for failure limits and logs).
    pub peer: SocketAddr,
    /// Channel-binding data of this TLS connection.
    pub bindings: &'a ChannelBindings,
    /// The mechanisms advertised on this stream.
    pub offered: Vec<Mechanism>,
}

pub(crate) fn offered_mechanisms(server: &Server, bindings: &ChannelBindings) -> Vec<Mechanism> {
    let mut m = Vec::with_capacity(5);
    if bindings.any() {
        m.push(Mechanism::ScramSha256Plus);
    }
    m.push(Mechanism::ScramSha256);
    if bindings.any() {
        m.push(Mechanism::ScramSha1Plus);
    }
    m.push(Mechanism::ScramSha1);
    if server.config.c2s.allow_plain {
        m.push(Mechanism::Plain);
    }
    m
}

/// Failure of one SASL attempt: report it and maybe allow another.
enum AttemptError {
    Failure(SaslFailure),
    /// The stream is gone or was closed with a stream error.
    Gone,
}

impl From<SaslFailure> for AttemptError {
    fn from(f: SaslFailure) -> Self {
        AttemptError::Failure(f)
    }
}

/// What became of one attempt besides its result: for its audit record and its answer.
#[derive(Default)]
struct Tried {
    /// The account named, normalised.
    account: Option<String>,
    /// Whether a password was checked: only then does the attempt count toward the login
    /// limits, and only then must its record be durable before the answer.
    checked: bool,
    /// How long the answer to a failure waits (growing with failures in a row).
    delay: Duration,
    /// The failure's `<text/>`.
    text: Option<&'static str>,
}

/// Closes the stream when the audit log could not take the record of a checked attempt: the
/// same error whether the password was right or wrong.
async fn close_unaudited<S: AsyncRead + AsyncWrite + Unpin>(s: &mut XmlStream<S>) {
    let e = StreamError::new(StreamCondition::InternalServerError).with_text(UNAUDITED);
    s.fail(&e).await;
}

/// The SASL phase (RFC 6120 §6), with in-band registration allowed before it. Returns the
/// authenticated account's bare JID.
pub(crate) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    a: &Auth<'_>,
    s: &mut XmlStream<S>,
) -> Option<String> {
    let (server, domain, peer) = (a.server, a.domain, a.peer);
    let mut attempts = 0;
    loop {
        let el = next_element(s).await?;
        if el.is("auth", ns::SASL) {
            let mechanism = el
                .attr("mechanism")
                .and_then(Mechanism::parse)
                .filter(|m| a.offered.contains(m));
            let mut tried = Tried::default();
            match attempt(a, s, &el, &mut tried).await {
                Ok((bare, success)) => {
                    // NEN 7513: a login that cannot be recorded does not happen.
                    if let Some(m) = mechanism {
                        let ev = Event::AuthSucceeded {
                            account: bare.clone(),
                            mechanism: m.into(),
                            ip: peer.ip(),
                        };
                        if server.audit.record_durable(ev).await.is_err() {
                            close_unaudited(s).await;
                            return None;
                        }
                    }
                    s.queue_raw(&success);
                    s.flush().await.ok()?;
                    tracing::info!(account = %bare, %peer, "authenticated");
                    return Some(bare);
                }
                Err(AttemptError::Gone) => return None,
                Err(AttemptError::Failure(f)) => {
                    let ev = Event::AuthFailed {
                        account: tried.account.clone(),
                        mechanism: mechanism.map(Into::into),
                        ip: peer.ip(),
                        reason: f.into(),
                    };
                    if tried.checked {
                        // No unaudited password check: recorded before it is answered.
                        if server.audit.record_durable(ev).await.is_err() {
                            close_unaudited(s).await;
                            return None;
                        }
                    } else {
                        // No password was checked, so nothing is learnt from the answer;
                        // a log that cannot take the record refuses the next check anyway.
                        let _ = server.audit.record(ev).await;
                    }
                    tracing::info!(%peer, account = tried.account.as_deref().unwrap_or("-"), condition = f.element_name(), "authentication failed");
                    let mut fail = Element::new("failure", ns::SASL)
                        .with_child(Element::new(f.element_name(), ns::SASL));
                    if let Some(text) = tried.text {
                        fail.push_child(Element::new("text", ns::SASL).with_text(text));
                    }
                    if !tried.delay.is_zero() {
                        tokio::time::sleep(tried.delay).await;
                    }
                    s.queue(&fail);
                    s.flush().await.ok()?;
                    attempts += 1;
                    if attempts >= MAX_SASL_ATTEMPTS {
                        s.fail(&StreamError::new(StreamCondition::NotAuthorized))
                            .await;
                        return None;
                    }
                }
            }
        } else if el.is("iq", ns::CLIENT) && el.has_child("query", ns::REGISTER) {
            let reply = register::handle_pre_auth(server, domain, peer.ip(), &el).await;
            s.queue(&reply);
            s.flush().await.ok()?;
        } else {
            s.fail(&StreamError::new(StreamCondition::NotAuthorized))
                .await;
            return None;
        }
    }
}

/// Clears the way for one password check, right before it: waits while the account is under
/// pressure (bounded), refuses when the audit log cannot take the outcome, then reserves a
/// place in the login throttle (or refuses, unchecked). The caller settles the reservation as
/// soon as the check is done.
async fn guard<'s>(
    server: &'s Server,
    peer: SocketAddr,
    account: Option<&str>,
    tried: &mut Tried,
) -> Result<Reservation<'s>, SaslFailure> {
    let throttle = &server.login_throttle;
    if let Some(account) = account {
        let wait = throttle.account_delay(account);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
    if !server.audit.available() {
        tried.text = Some(UNAUDITED);
        return Err(SaslFailure::TemporaryAuthFailure);
    }
    throttle.reserve(peer.ip(), account).map_err(|refused| {
        tracing::debug!(%peer, ?refused, "login throttled; password not checked");
        tried.text = Some(THROTTLED);
        SaslFailure::TemporaryAuthFailure
    })
}

/// Decodes a SASL payload: empty element = no data, "=" = empty data (RFC 6120 §6.4.2).
fn decode_payload(el: &Element) -> Result<Option<Vec<u8>>, SaslFailure> {
    let t = el.text();
    let t = t.trim();
    match t {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        _ => B64
            .decode(t)
            .map(Some)
            .map_err(|_| SaslFailure::IncorrectEncoding),
    }
}

fn challenge(data: &[u8]) -> Element {
    let mut c = Element::new("challenge", ns::SASL);
    if !data.is_empty() {
        c.push_text(B64.encode(data));
    }
    c
}

/// Sends `challenge` and waits for `<response/>` (or `<abort/>`).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
    data: &[u8],
) -> Result<Vec<u8>, AttemptError> {
    s.queue(&challenge(data));
    s.flush().await.map_err(|_| AttemptError::Gone)?;
    let el = next_element(s).await.ok_or(AttemptError::Gone)?;
    if el.is("abort", ns::SASL) {
        return Err(SaslFailure::Aborted.into());
    }
    if !el.is("response", ns::SASL) {
        s.fail(&StreamError::new(StreamCondition::NotAuthorized))
            .await;
        return Err(AttemptError::Gone);
    }
    Ok(decode_payload(&el)?.unwrap_or_default())
}

/// The account's bare JID for a SASL username on `domain`, normalised (nodeprep).
fn account_jid(username: &str, domain: &str) -> Result<String, SaslFailure> {
    if username.is_empty() || username.contains(['@', '/']) {
        return Err(SaslFailure::NotAuthorized);
    }
    jid::BareJid::new(&format!("{username}@{domain}"))
        .map(|j| j.to_string())
        .map_err(|_| SaslFailure::NotAuthorized)
}

fn check_authzid(authzid: Option<&str>, bare: &str) -> Result<(), SaslFailure> {
    match authzid {
        None => Ok(()),
        Some(a) => match jid::Jid::new(a) {
            Ok(j) if j.to_bare().to_string() == bare && j.resource().is_none() => Ok(()),
            _ => Err(SaslFailure::InvalidAuthzid),
        },
    }
}

async fn attempt<S: AsyncRead + AsyncWrite + Unpin>(
    a: &Auth<'_>,
    s: &mut XmlStream<S>,
    el: &Element,
    tried: &mut Tried,
) -> Result<(String, Vec<u8>), AttemptError> {
    let (server, domain, peer, bindings, offered) =
        (a.server, a.domain, a.peer, a.bindings, &a.offered[..]);
    let mech = el
        .attr("mechanism")
        .and_then(Mechanism::parse)
        .filter(|m| offered.contains(m))
        .ok_or(SaslFailure::InvalidMechanism)?;
    let initial = match decode_payload(el)? {
        Some(d) => d,
        None => exchange(s, &[]).await?,
    };
    let iterations = server.config.c2s.sasl_iterations;
    match mech.scram_hash() {
        None => {
            // PLAIN (only offered when allowed, and always over TLS here).
            let creds = sasl::parse_plain(&initial)?;
            let bare = account_jid(&creds.username, domain)?;
            tried.account = Some(bare.clone());
            check_authzid(creds.authzid.as_deref(), &bare)?;
            let record = server
                .storage
                .credentials(&bare, ScramHash::Sha256)
                .await
                .map_err(|_| SaslFailure::TemporaryAuthFailure)?;
            let reservation = guard(server, peer, Some(&bare), tried).await?;
            let (secret, name) = (server.fake_secret, bare.clone());
            tried.checked = true;
            let ok = tokio::task::spawn_blocking(move || {
                let rec = record.unwrap_or_else(|| {
                    sasl::fake_record(ScramHash::Sha256, &name, &secret, iterations)
                });
                sasl::verify_password(&rec, creds.password.expose())
            })
            .await
            .unwrap_or(false);
            if !ok {
                tried.delay = reservation.failed();
                return Err(SaslFailure::NotAuthorized.into());
            }
            reservation.succeeded();
            let mut out = Vec::new();
            Element::new("success", ns::SASL).write_to(&mut out, ns::CLIENT);
            Ok((bare, out))
        }
        Some(hash) => {
            let offers_plus = offered.iter().any(|m| m.is_plus());
            let mut scram = ScramServer::new(hash, mech.is_plus(), bindings.clone(), offers_plus);
            let first = scram.client_first(&initial)?;
            let bare = account_jid(&first.username, domain);
            let record = match &bare {
                Ok(b) => {
                    tried.account = Some(b.clone());
                    check_authzid(first.authzid.as_deref(), b)?;
                    server
                        .storage
                        .credentials(b, hash)
                        .await
                        .map_err(|_| SaslFailure::TemporaryAuthFailure)?
                }
                Err(_) => None,
            };
            // Unknown accounts get a made-up but stable record, so that the exchange looks
            // the same and fails only at the proof: no account enumeration. It is derived
            // from the normalised name, as the real lookup is ("Bob" and "bob" are one
            // account, so they must get one salt); a name that is no account name at all
            // cannot be compared with a real one and keeps its own.
            let record = record.unwrap_or_else(|| {
                let name = bare.as_deref().unwrap_or(&first.username);
                sasl::fake_record(hash, name, &server.fake_secret, iterations)
            });
            let server_first = scram.server_first(record);
            let last = exchange(s, &server_first).await?;
            let reservation = guard(server, peer, bare.as_deref().ok(), tried).await?;
            let result = scram.client_final(&last);
            if !scram.proof_checked() {
                reservation.not_checked();
            } else {
                tried.checked = true;
                match (&result, &bare) {
                    (Ok(_), Ok(_)) => reservation.succeeded(),
                    _ => tried.delay = reservation.failed(),
                }
            }
            let server_final = result?;
            let bare = bare?;
            let mut out = Vec::new();
            Element::new("success", ns::SASL)
                .with_text(B64.encode(server_final))
                .write_to(&mut out, ns::CLIENT);
            Ok((bare, out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_are_normalised_or_refused() {
        assert_eq!(
            account_jid("Alice", "localhost").unwrap(),
            "alice@localhost"
        );
        assert!(account_jid("a@b", "localhost").is_err());
        assert!(account_jid("", "localhost").is_err());
        assert!(check_authzid(Some("alice@localhost"), "alice@localhost").is_ok());
        assert!(check_authzid(Some("bob@localhost"), "alice@localhost").is_err());
        assert!(check_authzid(None, "alice@localhost").is_ok());
    }
}
