//! Listeners: binding, the accept loops, and handing each connection to client or server
//! negotiation under the matching limits on unauthenticated connections: per address first
//! (`ratelimit::conn`: a rate of new connections and a cap), then server-wide. A refused
//! connection is closed at once (why: see `ratelimit::conn`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Server;
use crate::ratelimit::UnauthPermit;
use crate::ratelimit::conn::Refusal;
use crate::stream::{c2s, s2s};

/// Binds a listener with a backlog for reconnect storms (std's default of 128 drops SYNs when
/// thousands of clients come back after a restart).
pub(super) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: u32 = 1024;

/// What a listener serves.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    /// Clients, STARTTLS.
    C2s,
    /// Clients, direct TLS (XEP-0368).
    C2sDirect,
    /// Servers, STARTTLS.
    S2s,
    /// Servers, direct TLS (XEP-0368).
    S2sDirect,
}

pub(super) async fn accept_loop(server: Arc<Server>, listener: TcpListener, kind: Kind) {
    let mut shutdown = server.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(handle_connection(server.clone(), tcp, peer, kind));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Give sessions time to send <system-shutdown/> and flush.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

async fn handle_connection(server: Arc<Server>, tcp: TcpStream, peer: SocketAddr, kind: Kind) {
    let (direct_tls, fed) = match kind {
        Kind::C2s => (false, None),
        Kind::C2sDirect => (true, None),
        Kind::S2s => (false, server.federation.clone()),
        Kind::S2sDirect => (true, server.federation.clone()),
    };
    // Cap unauthenticated connections, clients and servers separately, per address and then
    // server-wide; the permit is released once the session is bound or the link authenticated.
    let (semaphore, per_ip) = match &fed {
        Some(f) => (f.unauthenticated.clone(), &server.s2s_per_ip),
        None => (server.unauthenticated.clone(), &server.c2s_per_ip),
    };
    let Ok(address) = per_ip.admit(peer.ip()) else {
        return;
    };
    let Ok(global) = semaphore.try_acquire_owned() else {
        per_ip.refused(peer.ip(), Refusal::ServerWide);
        return;
    };
    let permit = UnauthPermit::new(global, address);
    // The inbound s2s future is large and would otherwise be inline in every client
    // connection's task for its whole life (measured: 2.6 KiB per idle client session).
    match fed {
        Some(fed) => {
            Box::pin(s2s::inbound::serve(
                server, fed, tcp, peer, direct_tls, permit,
            ))
            .await
        }
        None => c2s::serve(server, tcp, peer, direct_tls, permit).await,
    }
}
