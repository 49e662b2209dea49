//! XEP-0077: In-Band Registration. Creating accounts before authentication is off by default
//! and rate-limited per address when on; changing one's password and removing one's account
//! work for every authenticated user.

use crate::audit::event::{AccountChange, Actor, Event};

use std::net::IpAddr;
use std::sync::Arc;

use zorg_proto::{
    Element, ErrorType, StanzaCondition, StanzaError, StreamCondition, StreamError, ns,
};

use crate::modules::iq_result;
use crate::router::Outbound;
use crate::sasl;
use crate::server::Server;
use crate::session::Ctx;
use crate::storage::{AccountStore, ScramHash, ScramRecord, StorageError};

fn error_reply(el: &Element, e: StanzaError) -> Element {
    e.reply_to(el).unwrap_or_else(|| iq_result(el, None))
}

fn field(q: &Element, name: &str) -> Option<String> {
    q.get_child(name, ns::REGISTER).map(|e| e.text())
}
/// The error for an account change refused because it could not be audited.
fn unaudited() -> StanzaError {
    StanzaError::new(StanzaCondition::InternalServerError)
        .with_text("the server cannot record account changes at the moment; try again later")
}

/// Makes SCRAM-SHA-1 and SCRAM-SHA-256 credentials for `password` (PBKDF2 runs off the async
/// threads).
pub async fn make_credentials(
    password: String,
    iterations: u32,
) -> Result<Vec<ScramRecord>, StanzaError> {
    tokio::task::spawn_blocking(move || {
        let a = sasl::make_record(ScramHash::Sha1, &password, iterations)?;
        let b = sasl::make_record(ScramHash::Sha256, &password, iterations)?;
        Ok::<_, sasl::SaslFailure>(vec![a, b])
    })
    .await
    .map_err(|_| StanzaError::new(StanzaCondition::InternalServerError))?
    .map_err(|_| {
        StanzaError::new(StanzaCondition::NotAcceptable)
            .with_text("the password is empty or contains characters that are not allowed")
    })
}

/// Registration before authentication (XEP-0077 §3.1).
pub async fn handle_pre_auth(
    server: &Arc<Server>,
    domain: &str,
    ip: IpAddr,
    el: &Element,
) -> Element {
    if !server.config.registration.enabled {
        return error_reply(el, StanzaError::new(StanzaCondition::ServiceUnavailable));
    }
    let Some(q) = el.get_child("query", ns::REGISTER) else {
        return error_reply(el, StanzaError::new(StanzaCondition::BadRequest));
    };
    match el.attr("type") {
        Some("get") => {
            let q = Element::new("query", ns::REGISTER)
                .with_child(
                    Element::new("instructions", ns::REGISTER)
                        .with_text("Choose a user name and a password."),
                )
                .with_child(Element::new("username", ns::REGISTER))
                .with_child(Element::new("password", ns::REGISTER));
            iq_result(el, Some(q))
        }
        Some("set") => {
            if server.registrations_by_ip.is_over(&ip) {
                return error_reply(
                    el,
                    StanzaError::new(StanzaCondition::ResourceConstraint)
                        .with_type(ErrorType::Wait)
                        .with_text("too many registrations from your address; try again later"),
                );
            }
            server.registrations_by_ip.record(&ip);
            let (Some(user), Some(pw)) = (field(q, "username"), field(q, "password")) else {
                return error_reply(
                    el,
                    StanzaError::new(StanzaCondition::NotAcceptable)
                        .with_text("username and password are required"),
                );
            };
            let Ok(bare) = jid::BareJid::new(&format!("{user}@{domain}")) else {
                return error_reply(
                    el,
                    StanzaError::new(StanzaCondition::NotAcceptable)
                        .with_text("that user name is not allowed"),
                );
            };
            if user.contains(['@', '/']) || bare.node().is_none() {
                return error_reply(
                    el,
                    StanzaError::new(StanzaCondition::NotAcceptable)
                        .with_text("that user name is not allowed"),
                );
            }
            if !server.audit.available() {
                return error_reply(el, unaudited());
            }
            let creds = match make_credentials(pw, server.config.c2s.sasl_iterations).await {
                Ok(c) => c,
                Err(e) => return error_reply(el, e),
            };
            match server
                .storage
                .create_account(&bare.to_string(), &creds)
                .await
            {
                Ok(()) => {
                    let ev = Event::AccountCreated {
                        account: bare.to_string(),
                        by: Actor::Account {
                            jid: bare.to_string(),
                            ip,
                        },
                    };
                    let _ = server.audit.record_durable(ev).await;
                    tracing::info!(account = %bare, %ip, "account registered in-band");
                    iq_result(el, None)
                }
                Err(StorageError::Conflict) => error_reply(
                    el,
                    StanzaError::new(StanzaCondition::Conflict)
                        .with_text("that user name is taken"),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "registration failed");
                    error_reply(el, StanzaError::new(StanzaCondition::InternalServerError))
                }
            }
        }
        _ => error_reply(el, StanzaError::new(StanzaCondition::BadRequest)),
    }
}

/// Registration requests of an authenticated user: status, password change (XEP-0077 §3.3),
/// account removal (§3.2).
pub async fn handle_bound(ctx: &mut Ctx<'_>, el: Element) {
    let Some(q) = el.get_child("query", ns::REGISTER) else {
        return;
    };
    let bare = ctx.bare().to_owned();
    let node = bare
        .split_once('@')
        .map(|(n, _)| n.to_owned())
        .unwrap_or_default();
    let server = ctx.server.clone();
    match el.attr("type") {
        Some("get") => {
            let q = Element::new("query", ns::REGISTER)
                .with_child(Element::new("registered", ns::REGISTER))
                .with_child(Element::new("username", ns::REGISTER).with_text(node))
                .with_child(Element::new("password", ns::REGISTER));
            ctx.to_self.push(iq_result(&el, Some(q)));
        }
        Some("set") if q.has_child("remove", ns::REGISTER) => {
            if !server.audit.available() {
                ctx.reply_error(&el, unaudited());
                return;
            }
            match server.storage.delete_account(&bare).await {
                Ok(_) => {
                    let ev = Event::AccountDeleted {
                        account: bare.clone(),
                        by: Actor::Account {
                            jid: ctx.full().to_owned(),
                            ip: ctx.sess.peer.ip(),
                        },
                    };
                    let _ = server.audit.record_durable(ev).await;
                    tracing::info!(account = %bare, "account removed by its user");
                    server.blocklists.invalidate(&bare);
                    server.archive_prefs.invalidate(&bare);
                    ctx.to_self.push(iq_result(&el, None));
                    for h in server.router.sessions(&bare) {
                        let _ = h.tx.try_send(Outbound::close(
                            StreamError::new(StreamCondition::NotAuthorized)
                                .with_text("the account was removed"),
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "account removal failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                }
            }
        }
        Some("set") => {
            let (Some(user), Some(pw)) = (field(q, "username"), field(q, "password")) else {
                ctx.reply_error(
                    &el,
                    StanzaError::new(StanzaCondition::BadRequest)
                        .with_text("username and password are required"),
                );
                return;
            };
            if !user.eq_ignore_ascii_case(&node)
                && jid::BareJid::new(&format!("{user}@x"))
                    .map(|j| j.node().map(|n| n.to_string()))
                    .ok()
                    .flatten()
                    != Some(node.clone())
            {
                ctx.reply_error(
                    &el,
                    StanzaError::new(StanzaCondition::NotAuthorized)
                        .with_text("you can only change your own password"),
                );
                return;
            }
            if !server.audit.available() {
                ctx.reply_error(&el, unaudited());
                return;
            }
            let creds = match make_credentials(pw, server.config.c2s.sasl_iterations).await {
                Ok(c) => c,
                Err(e) => {
                    ctx.reply_error(&el, e);
                    return;
                }
            };
            match server.storage.set_credentials(&bare, &creds).await {
                Ok(()) => {
                    let ev = Event::AccountChanged {
                        account: bare.clone(),
                        change: AccountChange::Password,
                        by: Actor::Account {
                            jid: ctx.full().to_owned(),
                            ip: ctx.sess.peer.ip(),
                        },
                    };
                    let _ = server.audit.record_durable(ev).await;
                    tracing::info!(account = %bare, "password changed in-band");
                    ctx.to_self.push(iq_result(&el, None));
                }
                Err(e) => {
                    tracing::error!(error = %e, "password change failed");
                    ctx.reply_error(&el, StanzaError::new(StanzaCondition::InternalServerError));
                }
            }
        }
        _ => ctx.reply_error(&el, StanzaError::new(StanzaCondition::BadRequest)),
    }
}
