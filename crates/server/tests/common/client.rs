//! The scripted XMPP client of the integration tests: TLS (any certificate accepted), stream
//! negotiation, SASL (SCRAM, -PLUS, PLAIN), bind, and bounded expectations on what arrives.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use zorg_proto::{Element, Frame, Limits, StreamParser, ns};

use super::WAIT;

#[derive(Debug)]
pub struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client config that trusts any certificate (tests only) for the given TLS versions.
pub fn client_tls(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth(),
    )
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scram {
    Sha1,
    Sha256,
}

/// A predicate on a stanza, named in [`Client::expect_unordered`]'s list.
pub type Expected<'a> = dyn Fn(&Element) -> bool + 'a;

/// A scripted client.
pub struct Client {
    pub io: Box<dyn Io>,
    parser: StreamParser,
    buf: Vec<u8>,
    pub jid: String,
    pub exporter: Option<Vec<u8>>,
    pub end_point: Option<Vec<u8>>,
    pub features: Option<Element>,
    /// Stanzas (message, presence, iq) read so far, mod 2^32: the client's XEP-0198 `h` once
    /// reset to 0 at `<enable/>`.
    pub handled: u32,
    /// The last SASL `<failure/>` (or stream error) an authentication got, with its `<text/>`.
    pub last_failure: Option<Element>,
}

/// A TCP connection to `addr` from the loopback address `source` (e.g. "127.0.0.2").
pub async fn tcp_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(addr).await
}

/// A SASL `<failure/>`'s condition, or "stream:" and the condition of a stream error; kept in
/// `last_failure`.
fn sasl_failure(c: &mut Client, e: Element) -> Result<(), String> {
    let condition = |e: &Element| {
        e.children()
            .find(|c| c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_default()
    };
    let r = if e.is("error", ns::STREAM) {
        Err(format!("stream:{}", condition(&e)))
    } else {
        assert!(e.is("failure", ns::SASL), "{}", e.to_xml(""));
        Err(condition(&e))
    };
    c.last_failure = Some(e);
    r
}

pub fn header(to: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
    )
}

impl Client {
    pub fn new(io: Box<dyn Io>) -> Client {
        Client {
            io,
            parser: StreamParser::new(Limits::default()),
            buf: Vec::new(),
            jid: String::new(),
            exporter: None,
            end_point: None,
            features: None,
            handled: 0,
            last_failure: None,
        }
    }

    /// TCP connect, stream header, STARTTLS, TLS 1.3, new stream, read features.
    pub async fn connect_starttls(addr: SocketAddr, domain: &str) -> Client {
        Self::connect_starttls_versions(addr, domain, &[&rustls::version::TLS13]).await
    }

    pub async fn connect_starttls_versions(
        addr: SocketAddr,
        domain: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::starttls_over(tcp, domain, versions).await
    }

    /// Like [`Client::connect_starttls`] from the loopback address `source` (any of
    /// 127.0.0.0/8), for per-address limits.
    pub async fn connect_starttls_from(source: &str, addr: SocketAddr, domain: &str) -> Client {
        let tcp = tcp_from(source, addr).await.unwrap();
        Self::starttls_over(tcp, domain, &[&rustls::version::TLS13]).await
    }

    /// STARTTLS on a connection the caller made (e.g. with a small receive buffer, to play a
    /// client that reads slowly).
    pub async fn starttls_over(
        mut tcp: TcpStream,
        domain: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        let mut parser = StreamParser::new(Limits::default());
        tcp.write_all(header(domain).as_bytes()).await.unwrap();
        let features = read_plain(&mut tcp, &mut parser, 2).await;
        let f = features.last().cloned().expect("features");
        assert!(f.has_child("starttls", ns::TLS), "{}", f.to_xml(""));
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await
            .unwrap();
        let p = read_plain(&mut tcp, &mut parser, 1).await;
        assert!(p[0].is("proceed", ns::TLS), "{}", p[0].to_xml(""));
        Self::tls_over(tcp, domain, versions).await
    }

    /// Direct TLS (XEP-0368).
    pub async fn connect_direct(addr: SocketAddr, domain: &str) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::tls_over(tcp, domain, &[&rustls::version::TLS13]).await
    }

    async fn tls_over(
        tcp: TcpStream,
        domain: &str,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Client {
        let connector = tokio_rustls::TlsConnector::from(client_tls(versions));
        let name = ServerName::try_from(domain.to_owned()).unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let conn = tls.get_ref().1;
        let exporter = if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let mut out = [0u8; 32];
            conn.export_keying_material(&mut out, b"EXPORTER-Channel-Binding", None)
                .unwrap();
            Some(out.to_vec())
        } else {
            None
        };
        let end_point = conn.peer_certificates().and_then(|c| c.first()).map(|c| {
            digest::digest(&digest::SHA256, c.as_ref())
                .as_ref()
                .to_vec()
        });
        let mut c = Client::new(Box::new(tls));
        c.exporter = exporter;
        c.end_point = end_point;
        c.open(domain).await;
        c
    }

    /// Sends a stream header and reads the server's header and features.
    pub async fn open(&mut self, domain: &str) {
        self.parser = StreamParser::new(Limits::default());
        self.send(&header(domain)).await;
        match self.frame().await {
            Some(Frame::StreamOpen(_)) => {}
            other => panic!("expected stream header, got {other:?}"),
        }
        let f = self.next().await;
        assert!(
            f.is("features", ns::STREAM),
            "expected features, got {}",
            f.to_xml("")
        );
        self.features = Some(f);
    }

    /// Opens a server stream (`jabber:server`) from `from` to `to` and reads the header and
    /// features, as another server would.
    pub async fn open_s2s(&mut self, from: &str, to: &str) {
        self.parser = StreamParser::new(Limits::default());
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='{from}' to='{to}' version='1.0'>"
        ))
        .await;
        match self.frame().await {
            Some(Frame::StreamOpen(_)) => {}
            other => panic!("expected stream header, got {other:?}"),
        }
        let f = self.next().await;
        assert!(f.is("features", ns::STREAM), "{}", f.to_xml(""));
        self.features = Some(f);
    }

    pub async fn send(&mut self, xml: &str) {
        self.io.write_all(xml.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    pub async fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.io.write_all(b).await?;
        self.io.flush().await
    }

    /// The next frame, or `None` if the connection closed.
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if !self.buf.is_empty() {
                    let mut data = &self.buf[..];
                    let r = self.parser.feed(&mut data);
                    let used = self.buf.len() - data.len();
                    self.buf.drain(..used);
                    match r {
                        Ok(Some(f)) => return Some(f),
                        Ok(None) => {}
                        Err(e) => panic!("server sent bad XML: {e}"),
                    }
                }
                let mut tmp = [0u8; 8192];
                match self.io.read(&mut tmp).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for the server")
    }

    /// The next top-level element; panics on close.
    pub async fn next(&mut self) -> Element {
        match self.frame().await {
            Some(Frame::Stanza(e)) => {
                if std::env::var("ZORG_TEST_TRACE").is_ok() {
                    eprintln!("[{}] {}", self.jid, e.to_xml(""));
                }
                if e.ns() == ns::CLIENT && matches!(e.name(), "message" | "presence" | "iq") {
                    self.handled = self.handled.wrapping_add(1);
                }
                e
            }
            other => panic!("[{}] expected a stanza, got {other:?}", self.jid),
        }
    }

    /// The next stanza, which must match `f`: anything else (an extra or missing stanza, or
    /// one in the wrong order) fails the test and is printed. The default expectation: an
    /// exchange whose order is fixed must be checked stanza by stanza.
    pub async fn expect_next(&mut self, what: &str, f: impl Fn(&Element) -> bool) -> Element {
        let e = self.next().await;
        assert!(
            f(&e),
            "[{}] expected {what}, got {}",
            self.jid,
            e.to_xml("")
        );
        e
    }

    /// Reads exactly `want.len()` stanzas that match the predicates one to one, in any order,
    /// and returns them in the order of `want`. For stanzas whose relative order is up to
    /// timing (presence from several sessions, a push racing a result); anything that matches
    /// none of the predicates still waiting fails the test. Each stanza is given to the first
    /// waiting predicate that takes it, so list the narrower ones first.
    pub async fn expect_unordered(&mut self, want: &[(&str, &Expected<'_>)]) -> Vec<Element> {
        let mut got: Vec<Option<Element>> = vec![None; want.len()];
        for _ in 0..want.len() {
            let e = self.next().await;
            let slot = want
                .iter()
                .enumerate()
                .position(|(i, (_, f))| got[i].is_none() && f(&e));
            match slot {
                Some(i) => got[i] = Some(e),
                None => {
                    let waiting: Vec<&str> = want
                        .iter()
                        .zip(&got)
                        .filter(|(_, g)| g.is_none())
                        .map(|((w, _), _)| *w)
                        .collect();
                    panic!(
                        "[{}] expected one of {waiting:?}, got {}",
                        self.jid,
                        e.to_xml("")
                    );
                }
            }
        }
        got.into_iter().map(|e| e.unwrap()).collect()
    }

    /// Skips stanzas until one matches (at most 50, each bounded by WAIT). Tolerant on
    /// purpose, and so unable to notice an extra stanza: only where what comes before is
    /// truly up to timing, with a comment at the call saying why. Prefer [`Client::expect_next`]
    /// or [`Client::expect_unordered`].
    pub async fn expect(&mut self, what: &str, f: impl Fn(&Element) -> bool) -> Element {
        let mut skipped = Vec::new();
        for _ in 0..50 {
            let e = self.next().await;
            if f(&e) {
                return e;
            }
            skipped.push(e.to_xml(""));
        }
        panic!(
            "[{}] no {what} within 50 stanzas; skipped: {skipped:#?}",
            self.jid
        );
    }

    /// Expects the next frame to be a stream error of this condition, and then the end of the
    /// stream. Only the server's stream header may come first (RFC 6120 §4.9.1.2: a stream is
    /// opened before it is ended with an error).
    pub async fn expect_stream_error(&mut self, condition: &str) {
        self.until_stream_error(condition, 0, |_| false, true).await;
    }

    /// Reads stanzas matching `allowed` (at most `max`), then expects a stream error of this
    /// condition and the end of the stream: for a stream that ends while stanzas are still on
    /// their way to it (a flood that trips a limit). Returns the stanzas read before the error.
    pub async fn stanzas_then_stream_error(
        &mut self,
        condition: &str,
        max: usize,
        allowed: impl Fn(&Element) -> bool,
    ) -> Vec<Element> {
        self.until_stream_error(condition, max, allowed, false)
            .await
    }

    async fn until_stream_error(
        &mut self,
        condition: &str,
        max: usize,
        allowed: impl Fn(&Element) -> bool,
        mut header_ok: bool,
    ) -> Vec<Element> {
        let mut before = Vec::new();
        loop {
            match self.frame().await {
                Some(Frame::StreamOpen(_)) if header_ok => header_ok = false,
                Some(Frame::Stanza(e)) if e.is("error", ns::STREAM) => {
                    self.stream_error_and_close(&e, condition).await;
                    return before;
                }
                Some(Frame::Stanza(e)) if allowed(&e) && before.len() < max => before.push(e),
                Some(Frame::Stanza(e)) => panic!(
                    "[{}] expected stream error {condition}, got {}",
                    self.jid,
                    e.to_xml("")
                ),
                other => panic!(
                    "[{}] expected stream error {condition}, got {other:?}",
                    self.jid
                ),
            }
        }
    }

    /// Checks the condition of the stream error `e`; the stream must end right after it
    /// (RFC 6120 §4.9.1.1).
    async fn stream_error_and_close(&mut self, e: &Element, condition: &str) {
        assert!(
            e.has_child(condition, ns::STREAM_ERRORS),
            "[{}] expected {condition}, got {}",
            self.jid,
            e.to_xml("")
        );
        self.expect_closed().await;
    }

    /// Expects the server to close the stream (`</stream:stream>` or the connection) next.
    pub async fn expect_closed(&mut self) {
        match self.frame().await {
            None | Some(Frame::StreamClose) => {}
            Some(Frame::Stanza(e)) => {
                panic!(
                    "[{}] expected the end of the stream, got {}",
                    self.jid,
                    e.to_xml("")
                )
            }
            Some(other) => panic!(
                "[{}] expected the end of the stream, got {other:?}",
                self.jid
            ),
        }
    }

    /// Asserts that nothing arrives: neither a stanza already read (in the buffer or begun in
    /// the parser) nor anything within `ms`. Whitespace keepalives are silence; the connection
    /// closing is not.
    pub async fn expect_silence(&mut self, ms: u64) {
        self.nothing_buffered();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let mut tmp = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.io.read(&mut tmp)).await {
                Err(_) => return,
                Ok(Ok(0)) => panic!(
                    "[{}] the connection closed instead of staying quiet",
                    self.jid
                ),
                Ok(Err(e)) => panic!("[{}] read failed while expecting silence: {e}", self.jid),
                Ok(Ok(n)) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    self.nothing_buffered();
                }
            }
        }
    }

    /// Fails if the bytes read so far hold a frame, or the start of one.
    fn nothing_buffered(&mut self) {
        while !self.buf.is_empty() {
            let mut data = &self.buf[..];
            let r = self.parser.feed(&mut data);
            let used = self.buf.len() - data.len();
            let rest = String::from_utf8_lossy(&self.buf[used..]).into_owned();
            self.buf.drain(..used);
            match r {
                Ok(Some(Frame::Stanza(e))) => {
                    panic!("[{}] expected silence, got {}", self.jid, e.to_xml(""))
                }
                Ok(Some(f)) => panic!("[{}] expected silence, got {f:?}", self.jid),
                Ok(None) => {
                    assert!(
                        self.buf.is_empty(),
                        "[{}] the parser left bytes unread: {rest}",
                        self.jid
                    );
                }
                Err(e) => panic!("[{}] server sent bad XML: {e}", self.jid),
            }
        }
        assert!(
            !self.parser.in_stanza(),
            "[{}] expected silence, but part of a stanza arrived",
            self.jid
        );
    }

    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.get_child("mechanisms", ns::SASL))
            .map(|m| m.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// PLAIN; returns the SASL failure condition on failure.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), String> {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{payload}</auth>"
        ))
        .await;
        self.sasl_outcome(None).await
    }

    async fn sasl_outcome(&mut self, expect_v: Option<Vec<u8>>) -> Result<(), String> {
        let e = self.next().await;
        if e.is("success", ns::SASL) {
            if let Some(v) = expect_v {
                let got = B64.decode(e.text().trim()).unwrap();
                assert_eq!(got, v, "server signature");
            }
            return Ok(());
        }
        sasl_failure(self, e)
    }

    /// SCRAM with optional channel binding ("tls-exporter" or "tls-server-end-point").
    pub async fn auth_scram(
        &mut self,
        user: &str,
        password: &str,
        hash: Scram,
        binding: Option<&str>,
    ) -> Result<(), String> {
        let (mech, alg, pbk, len) = match hash {
            Scram::Sha1 => (
                "SCRAM-SHA-1",
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                pbkdf2::PBKDF2_HMAC_SHA1,
                20,
            ),
            Scram::Sha256 => (
                "SCRAM-SHA-256",
                hmac::HMAC_SHA256,
                pbkdf2::PBKDF2_HMAC_SHA256,
                32,
            ),
        };
        let dig = match hash {
            Scram::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Scram::Sha256 => &digest::SHA256,
        };
        let (mech, gs2, cbdata) = match binding {
            None => (mech.to_string(), "n,,".to_string(), Vec::new()),
            Some(b) => {
                let data = match b {
                    "tls-exporter" => self.exporter.clone().unwrap(),
                    _ => self.end_point.clone().unwrap(),
                };
                (format!("{mech}-PLUS"), format!("p={b},,"), data)
            }
        };
        let cnonce = "fyko+d2lbbFgONRv9qkxdawL";
        let first_bare = format!("n={user},r={cnonce}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{}</auth>",
            B64.encode(format!("{gs2}{first_bare}"))
        ))
        .await;
        let ch = self.next().await;
        if !ch.is("challenge", ns::SASL) {
            return sasl_failure(self, ch);
        }
        assert!(ch.is("challenge", ns::SASL), "{}", ch.to_xml(""));
        let server_first = String::from_utf8(B64.decode(ch.text().trim()).unwrap()).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iter = 0u32;
        for part in server_first.split(',') {
            match part.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iter = v.parse().unwrap(),
                _ => {}
            }
        }
        let mut salted = vec![0u8; len];
        pbkdf2::derive(
            pbk,
            std::num::NonZeroU32::new(iter).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let sign = |key: &[u8], data: &[u8]| {
            hmac::sign(&hmac::Key::new(alg, key), data)
                .as_ref()
                .to_vec()
        };
        let client_key = sign(&salted, b"Client Key");
        let stored = digest::digest(dig, &client_key).as_ref().to_vec();
        let mut cb = gs2.into_bytes();
        cb.extend_from_slice(&cbdata);
        let without_proof = format!("c={},r={nonce}", B64.encode(&cb));
        let auth_msg = format!("{first_bare},{server_first},{without_proof}");
        let sig = sign(&stored, auth_msg.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = sign(&salted, b"Server Key");
        let v = format!("v={}", B64.encode(sign(&server_key, auth_msg.as_bytes())));
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(format!("{without_proof},p={}", B64.encode(proof)))
        ))
        .await;
        self.sasl_outcome(Some(v.into_bytes())).await
    }

    /// After SASL success: restart the stream and bind.
    pub async fn bind(&mut self, resource: Option<&str>) -> String {
        self.bind_at("localhost", resource).await
    }

    /// After SASL success: restart the stream to `domain` and bind.
    pub async fn bind_at(&mut self, domain: &str, resource: Option<&str>) -> String {
        self.open(domain).await;
        let f = self.features.clone().unwrap();
        assert!(f.has_child("bind", ns::BIND), "{}", f.to_xml(""));
        let r = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{r}</bind></iq>"
        ))
        .await;
        let res = self.next().await;
        assert_eq!(res.attr("type"), Some("result"), "{}", res.to_xml(""));
        let jid = res
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
            .map(|j| j.text())
            .unwrap();
        self.jid = jid.clone();
        jid
    }

    /// Sends an IQ and returns the response with the same id, which must be the next stanza.
    pub async fn iq(&mut self, xml: &str, id: &str) -> Element {
        self.send(xml).await;
        self.expect_next(&format!("the answer to iq {id}"), is_answer(id))
            .await
    }

    /// Returns once the server handled everything this client sent before: a ping round trip
    /// (a session handles its stanzas in order), whose answer must be the next stanza, so that
    /// nothing (a bounce, an error) came before it.
    pub async fn routed(&mut self) {
        let domain = self
            .jid
            .split_once('@')
            .and_then(|(_, d)| d.split('/').next())
            .unwrap_or("localhost")
            .to_owned();
        self.iq(
            &format!("<iq type='get' id='sync' to='{domain}'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "sync",
        )
        .await;
    }

    /// Sends available presence and expects its reflection next.
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        let me = self.jid.clone();
        self.expect_next("own presence", |e| {
            e.name() == "presence" && e.attr("from") == Some(me.as_str())
        })
        .await;
    }
}

/// Whether `e` is the result or error answering the IQ `id`.
pub fn is_answer(id: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e| {
        e.name() == "iq"
            && e.attr("id") == Some(id)
            && matches!(e.attr("type"), Some("result") | Some("error"))
    }
}

/// Reads `n` frames (header counts as one) from a plain TCP stream, byte by byte so that nothing
/// after them is consumed (it would belong to TLS).
async fn read_plain(tcp: &mut TcpStream, parser: &mut StreamParser, n: usize) -> Vec<Element> {
    let mut out = Vec::new();
    let mut frames = 0;
    tokio::time::timeout(WAIT, async {
        while frames < n {
            let mut b = [0u8; 1];
            let got = tcp.read(&mut b).await.unwrap();
            assert!(got == 1, "connection closed");
            let mut d = &b[..];
            while let Some(f) = parser.feed(&mut d).unwrap() {
                frames += 1;
                if let Frame::Stanza(e) = f {
                    out.push(e);
                }
            }
        }
    })
    .await
    .expect("timed out in plain-text phase");
    out
}
