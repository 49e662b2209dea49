//! The speed of light: a bare TLS relay that pairs connections in the order they arrive and
//! forwards each one's bytes to its partner, doing nothing else. Zorg's figures are read
//! against what this does on the same machine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::client::Conn;
use crate::modes::{Pace, messages};

/// Runs the relay until the process is killed.
pub async fn serve(listen: SocketAddr, cert: &Path, key: &Path) -> Result<(), String> {
    let acceptor = acceptor(cert, key)?;
    let listener = bind(listen).await?;
    let mut waiting = None;
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let Ok(tls) = acceptor.accept(tcp).await else {
            continue;
        };
        match waiting.take() {
            None => waiting = Some(tls),
            Some(first) => {
                tokio::spawn(async move {
                    let (mut a, mut b) = (first, tls);
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
            }
        }
    }
}

/// A TLS acceptor (TLS 1.3 and 1.2, aws-lc-rs, as Zorg's) for this certificate and key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Listens on `listen` and says where on standard error.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    eprintln!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    Ok(listener)
}

/// Closed loop against the relay: the same message traffic as `closed`, without XMPP.
pub async fn client(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    pairs: usize,
    window: usize,
    duration: Duration,
) -> Value {
    let mut conns = Vec::with_capacity(2 * pairs);
    // One at a time, so that the relay pairs them as we do (2i with 2i + 1).
    for _ in 0..2 * pairs {
        match Conn::raw(addr, tls.clone()).await {
            Ok(c) => conns.push(c),
            Err(e) => return json!({"mode": "relay", "error": e.to_string()}),
        }
    }
    messages(
        conns,
        Vec::new(),
        Pace::Closed { window },
        duration,
        None,
        "relay",
    )
    .await
}
