//! Streams: the byte-level XML stream ([`io`]), client negotiation ([`c2s`]) and its SASL phase
//! ([`auth`]), and server-to-server negotiation ([`s2s`]).

pub mod auth;
pub mod c2s;
pub mod io;
pub mod s2s;

use std::net::SocketAddr;

use crate::server::Server;

/// Runs a negotiation (pass it boxed) under `[limits] pre_auth_timeout`, giving up when the
/// server shuts down. `None` when it failed, timed out (logged as `what`) or was cut short.
pub(crate) async fn pre_auth<T>(
    server: &Server,
    peer: SocketAddr,
    what: &'static str,
    negotiation: impl Future<Output = Option<T>>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + server.config.limits.pre_auth_timeout.get();
    let mut shutdown = server.shutdown.clone();
    tokio::select! {
        r = tokio::time::timeout_at(deadline, negotiation) => r.unwrap_or_else(|_| {
            tracing::debug!(%peer, "{what}: pre-authentication timeout");
            None
        }),
        _ = shutdown.changed() => None,
    }
}
