//! A minimal XMPP client for load: TCP, STARTTLS or direct TLS (no session resumption, so every
//! login pays a full handshake), SCRAM-SHA-1/256 or PLAIN, resource binding, and raw writes.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use zorg_proto::{Element, Frame, Limits, StreamParser, ns};

use crate::scram;

/// What went wrong with one client; the variant name is the error kind in the report.
#[derive(Debug, Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// TLS handshake failed.
    #[error("tls: {0}")]
    Tls(std::io::Error),
    /// Reading or writing failed, or the server closed the connection.
    #[error("io: {0}")]
    Io(String),
    /// The server sent something this client did not expect.
    #[error("protocol: {0}")]
    Protocol(String),
    /// SASL failed with this condition.
    #[error("auth: {0}")]
    Auth(String),
}

impl ClientError {
    /// A short name for error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Io(_) => "io",
            ClientError::Protocol(_) => "protocol",
            ClientError::Auth(_) => "auth",
        }
    }
}

/// SASL mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mech {
    /// SCRAM-SHA-256 (RFC 7677).
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-1 (RFC 5802).
    #[value(name = "SCRAM-SHA-1")]
    ScramSha1,
    /// PLAIN (RFC 4616), for servers that store plain passwords.
    #[value(name = "PLAIN")]
    Plain,
}

/// How to reach the server.
#[derive(Clone)]
pub struct Target {
    /// Address of the client port.
    pub addr: SocketAddr,
    /// The XMPP domain.
    pub domain: String,
    /// Direct TLS (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
    /// TLS settings (no resumption).
    pub tls: Arc<rustls::ClientConfig>,
    /// SASL mechanism.
    pub mech: Mech,
}

/// Accepts exactly one certificate (the server's self-signed one), or any with `None`: the
/// load tool talks to test servers on loopback, whose certificates chain to no public root.
#[derive(Debug)]
struct Pinned {
    cert: Option<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.cert {
            Some(c) if c.as_ref() != end_entity.as_ref() => Err(rustls::Error::General(
                "server certificate is not the pinned one".into(),
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            msg,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            msg,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client configuration without session resumption, pinning `ca` (a PEM file whose first
/// certificate must be the server's) or accepting any certificate when `ca` is `None`.
pub fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = match ca {
        Some(p) => Some(
            CertificateDer::pem_file_iter(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .next()
                .ok_or_else(|| format!("{}: no certificate", p.display()))?
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { cert, provider }))
        .with_no_client_auth();
    // Every login pays a full handshake, as the issue asks.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

fn io_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Io(e.to_string())
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// One logged-in (or negotiating) client connection.
pub struct Conn {
    io: TlsStream<TcpStream>,
    parser: StreamParser,
    rbuf: Vec<u8>,
    /// Bytes to write at the next flush.
    pub wbuf: Vec<u8>,
    /// Full JID after binding.
    pub jid: String,
}

/// Reads frames from a plain TCP stream one byte at a time, so that nothing that belongs to
/// TLS is consumed (only used for the few bytes before STARTTLS).
async fn plain_frames(
    tcp: &mut TcpStream,
    parser: &mut StreamParser,
    n: usize,
) -> Result<Vec<Element>, ClientError> {
    let mut out = Vec::new();
    let mut frames = 0;
    while frames < n {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.map_err(io_err)? == 0 {
            return Err(ClientError::Io("closed before TLS".into()));
        }
        let mut d = &b[..];
        while let Some(f) = parser
            .feed(&mut d)
            .map_err(|e| ClientError::Protocol(e.to_string()))?
        {
            frames += 1;
            if let Frame::Stanza(e) = f {
                out.push(e);
            }
        }
    }
    Ok(out)
}

impl Conn {
    /// TCP, STARTTLS or direct TLS, then a stream header and the server's features.
    pub async fn connect(t: &Target) -> Result<(Conn, Element), ClientError> {
        let mut tcp = TcpStream::connect(t.addr)
            .await
            .map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        if !t.direct_tls {
            let mut parser = StreamParser::new(Limits::default());
            tcp.write_all(header(&t.domain).as_bytes())
                .await
                .map_err(io_err)?;
            plain_frames(&mut tcp, &mut parser, 2).await?;
            tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await
                .map_err(io_err)?;
            let p = plain_frames(&mut tcp, &mut parser, 1).await?;
            if !p.first().is_some_and(|e| e.is("proceed", ns::TLS)) {
                return Err(ClientError::Protocol("no <proceed/>".into()));
            }
        }
        let name = ServerName::try_from(t.domain.clone())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let io = tokio_rustls::TlsConnector::from(t.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(ClientError::Tls)?;
        let mut c = Conn {
            io,
            parser: StreamParser::new(Limits::default()),
            rbuf: Vec::with_capacity(8192),
            wbuf: Vec::with_capacity(1024),
            jid: String::new(),
        };
        let f = c.open(&t.domain).await?;
        Ok((c, f))
    }

    /// A TLS connection with no XMPP on it (for the bare relay).
    pub async fn raw(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ClientError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("relay.invalid")
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let io = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(ClientError::Tls)?;
        Ok(Conn {
            io,
            parser: StreamParser::new(Limits::default()),
            rbuf: Vec::new(),
            wbuf: Vec::with_capacity(1024),
            jid: String::new(),
        })
    }

    async fn open(&mut self, domain: &str) -> Result<Element, ClientError> {
        self.parser = StreamParser::new(Limits::default());
        self.send(header(domain).as_bytes()).await?;
        match self.frame().await? {
            Frame::StreamOpen(_) => {}
            _ => return Err(ClientError::Protocol("no stream header".into())),
        }
        let f = self.element().await?;
        if !f.is("features", ns::STREAM) {
            return Err(ClientError::Protocol("no stream features".into()));
        }
        Ok(f)
    }

    /// Writes and flushes.
    pub async fn send(&mut self, b: &[u8]) -> Result<(), ClientError> {
        self.io.write_all(b).await.map_err(io_err)?;
        self.io.flush().await.map_err(io_err)
    }

    /// Writes what is queued in `wbuf`.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.wbuf).await.map_err(io_err)?;
        self.wbuf.clear();
        self.io.flush().await.map_err(io_err)
    }

    /// Reads raw bytes (for the measurement loop, which scans instead of parsing).
    pub async fn read_raw(&mut self, buf: &mut Vec<u8>) -> Result<usize, ClientError> {
        if !self.rbuf.is_empty() {
            buf.extend_from_slice(&self.rbuf);
            let n = self.rbuf.len();
            self.rbuf.clear();
            return Ok(n);
        }
        let n = self.io.read_buf(buf).await.map_err(io_err)?;
        if n == 0 {
            return Err(ClientError::Io("server closed the connection".into()));
        }
        Ok(n)
    }

    async fn frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if !self.rbuf.is_empty() {
                let mut d = &self.rbuf[..];
                let r = self.parser.feed(&mut d);
                let used = self.rbuf.len() - d.len();
                self.rbuf.drain(..used);
                match r {
                    Ok(Some(f)) => return Ok(f),
                    Ok(None) => {}
                    Err(e) => return Err(ClientError::Protocol(e.to_string())),
                }
            }
            let n = self.io.read_buf(&mut self.rbuf).await.map_err(io_err)?;
            if n == 0 {
                return Err(ClientError::Io("server closed the connection".into()));
            }
        }
    }

    /// The next top-level element.
    pub async fn element(&mut self) -> Result<Element, ClientError> {
        match self.frame().await? {
            Frame::Stanza(e) if e.is("error", ns::STREAM) => Err(ClientError::Protocol(format!(
                "stream error {}",
                e.children()
                    .next()
                    .map(|c| c.name().to_owned())
                    .unwrap_or_default()
            ))),
            Frame::Stanza(e) => Ok(e),
            Frame::StreamClose => Err(ClientError::Io("stream closed".into())),
            Frame::StreamOpen(_) => Err(ClientError::Protocol("unexpected header".into())),
        }
    }

    /// SASL, stream restart and resource binding.
    pub async fn login(
        &mut self,
        t: &Target,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Result<(), ClientError> {
        match t.mech {
            Mech::Plain => {
                let p = B64.encode(format!("\0{user}\0{password}"));
                self.send(format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{p}</auth>").as_bytes())
                    .await?;
                self.sasl_outcome().await?;
            }
            Mech::ScramSha1 | Mech::ScramSha256 => {
                let hash = if t.mech == Mech::ScramSha1 {
                    scram::Hash::Sha1
                } else {
                    scram::Hash::Sha256
                };
                let mut sc = scram::Client::new(hash, user, password);
                self.send(
                    format!(
                        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
                        hash.mechanism(),
                        B64.encode(sc.first())
                    )
                    .as_bytes(),
                )
                .await?;
                let ch = self.element().await?;
                if ch.is("failure", ns::SASL) {
                    return Err(failure(&ch));
                }
                let server_first = B64
                    .decode(ch.text().trim())
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let fin = sc
                    .final_message(&server_first)
                    .map_err(ClientError::Protocol)?;
                self.send(
                    format!(
                        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                        B64.encode(fin)
                    )
                    .as_bytes(),
                )
                .await?;
                let ok = self.sasl_outcome().await?;
                if !sc.verify_server(&ok) {
                    return Err(ClientError::Auth("server signature mismatch".into()));
                }
            }
        }
        self.open(&t.domain).await?;
        self.send(
            format!("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
                .as_bytes(),
        )
        .await?;
        loop {
            let e = self.element().await?;
            if e.name() == "iq" && e.attr("id") == Some("bind") {
                if e.attr("type") != Some("result") {
                    return Err(ClientError::Protocol("bind failed".into()));
                }
                self.jid = e
                    .get_child("bind", ns::BIND)
                    .and_then(|b| b.get_child("jid", ns::BIND))
                    .map(|j| j.text())
                    .unwrap_or_default();
                break;
            }
        }
        // Old servers still want the session IQ; it is harmless elsewhere.
        Ok(())
    }

    /// Sends initial presence.
    pub async fn presence(&mut self) -> Result<(), ClientError> {
        self.send(b"<presence/>").await
    }

    async fn sasl_outcome(&mut self) -> Result<Vec<u8>, ClientError> {
        let e = self.element().await?;
        if e.is("success", ns::SASL) {
            let t = e.text();
            return B64
                .decode(t.trim())
                .map_err(|e| ClientError::Protocol(e.to_string()));
        }
        Err(failure(&e))
    }

    /// In-band registration (XEP-0077) on a fresh, unauthenticated stream. `Ok(true)` if
    /// created, `Ok(false)` if the name was taken.
    pub async fn register(&mut self, user: &str, password: &str) -> Result<bool, ClientError> {
        self.send(
            format!(
                "<iq type='set' id='reg'><query xmlns='jabber:iq:register'><username>{user}</username><password>{password}</password></query></iq>"
            )
            .as_bytes(),
        )
        .await?;
        loop {
            let e = self.element().await?;
            if e.name() == "iq" && e.attr("id") == Some("reg") {
                return match e.attr("type") {
                    Some("result") => Ok(true),
                    _ => {
                        let cond = e
                            .get_child("error", ns::CLIENT)
                            .and_then(|er| er.children().next())
                            .map(|c| c.name().to_owned())
                            .unwrap_or_default();
                        if cond == "conflict" {
                            Ok(false)
                        } else {
                            Err(ClientError::Protocol(format!(
                                "registration refused: {cond}"
                            )))
                        }
                    }
                };
            }
        }
    }
}

fn failure(e: &Element) -> ClientError {
    ClientError::Auth(
        e.children()
            .next()
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "failure".into()),
    )
}
