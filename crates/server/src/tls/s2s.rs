//! TLS for server-to-server links: the rustls configurations for inbound and outbound links.
//!
//! Both sides ask for the peer's certificate and check the handshake signatures with the
//! federation's verifiers, but leave the verdict on the chain to [`FederationTrust::check_peer`],
//! which runs right after the handshake and before a single stanza is read or written. Why not
//! let the TLS handshake fail: a failed handshake gives the operator a TLS alert, while
//! `check_peer` gives a sentence they can act on ("chains to an untrusted root", "revoked"),
//! and the claimed domain (the stream's `from`) is only known after the handshake anyway.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::trust::FederationTrust;
use super::{DomainCert, TlsError, TlsSetup};

/// ALPN protocol of XEP-0368 direct TLS for servers.
const ALPN_SERVER: &[u8] = b"xmpp-server";

/// A server configuration for inbound links: this server's certificates by SNI, a client
/// certificate requested (not required: a peer without one is refused by `check_peer` with a
/// readable reason instead of a TLS alert).
pub fn server_config(
    tls: &TlsSetup,
    trust: &FederationTrust,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(DeferredClient {
        inner: trust.verifiers().inbound.clone(),
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(tls.resolver.clone());
    cfg.alpn_protocols = vec![ALPN_SERVER.to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration for outbound links from the domain of `cert`, which it presents as
/// its client certificate. `direct_tls` offers ALPN "xmpp-server" (XEP-0368); after STARTTLS no
/// ALPN is sent, as a server may refuse a protocol it does not expect there.
pub fn client_config(
    cert: &DomainCert,
    trust: &FederationTrust,
    direct_tls: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(DeferredServer {
        inner: trust.verifiers().outbound.clone(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(OwnCert(cert.key.clone())));
    if direct_tls {
        cfg.alpn_protocols = vec![ALPN_SERVER.to_vec()];
    }
    Ok(Arc::new(cfg))
}

/// Always presents this domain's certificate.
#[derive(Debug)]
struct OwnCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks the handshake signatures (the peer holds the key of the certificate it sent) and
/// defers the chain to `check_peer`.
#[derive(Debug)]
struct DeferredServer {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for DeferredServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Decided by FederationTrust::check_peer before the link is used (see module docs).
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The inbound counterpart of [`DeferredServer`].
#[derive(Debug)]
struct DeferredClient {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClient {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Decided by FederationTrust::check_peer before the link is used (see module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
