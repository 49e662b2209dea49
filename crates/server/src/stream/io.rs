//! One XML stream over one byte stream: reading with a rate limit into the framing parser,
//! and a write buffer that is flushed with one write per batch.
//!
//! `next_frame` is cancel-safe (all state lives in `self`), so a session can `select!` between it
//! and its outbound queue without losing bytes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use zorg_proto::{Element, Frame, FramingError, Limits, StreamError, StreamParser, ns};

/// Size of one read. Small on purpose: idle sessions keep no large buffers (see `release`).
const READ_CHUNK: usize = 4096;

/// Size of the first read after `release`: the session waits for its next stanza with this
/// much instead of a full chunk, and grows the buffer once bytes arrive.
const IDLE_READ: usize = 64;

/// How long a write may take before the peer is considered stuck.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why reading a frame failed.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the TCP connection (or TLS close_notify).
    Closed,
    /// An I/O error.
    Io(std::io::Error),
    /// The XML was bad or over a limit: answer with this stream error.
    Framing(FramingError),
}

/// A token bucket on bytes read: sustained `rate` bytes/s with a burst of `burst` bytes.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate_per_sec: u64, burst: u64) -> RateLimit {
        RateLimit {
            rate: rate_per_sec.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes; returns how long to wait before reading again (zero if none).
    pub fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// An XML stream on `S`.
pub struct XmlStream<S> {
    io: S,
    rbuf: Vec<u8>,
    rstart: usize,
    parser: StreamParser,
    limits: Limits,
    rate: RateLimit,
    wbuf: Vec<u8>,
    /// When the last byte was read (for idle detection).
    pub last_read: Instant,
    /// When the last byte was written (for whitespace keepalive).
    pub last_write: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    /// A stream reading with `limits` and `rate` bytes/s.
    pub fn new(io: S, limits: Limits, rate: u64) -> XmlStream<S> {
        let now = Instant::now();
        XmlStream {
            io,
            rbuf: Vec::new(),
            rstart: 0,
            parser: StreamParser::new(limits),
            limits,
            rate: RateLimit::new(rate, limits.max_stanza_size as u64),
            wbuf: Vec::new(),
            last_read: now,
            last_write: now,
        }
    }

    /// The underlying I/O object.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Starts a new stream on the same connection (after SASL success): a fresh parser.
    /// Bytes already received after the restart point stay buffered for the new parser.
    pub fn restart(&mut self) {
        self.parser = StreamParser::new(self.limits);
    }

    /// Changes the framing limits from the next stanza on (and for every restarted stream):
    /// streams start with the small pre-authentication limits and get the full ones once the
    /// peer has authenticated. The read burst follows the stanza limit.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.parser.set_limits(limits);
        self.rate.burst = limits.max_stanza_size.max(1) as f64;
    }

    /// Gives back the I/O object for a TLS upgrade. Fails if the peer pipelined data after
    /// `<starttls/>` (RFC 6120 §5.4.3.3 forbids it, and it would be read in the clear);
    /// whitespace (go-xmpp sends a newline after each element) is dropped.
    pub fn into_inner(self) -> Result<S, S> {
        if self.rbuf[self.rstart..]
            .iter()
            .any(|b| !b" \t\r\n".contains(b))
        {
            Err(self.io)
        } else {
            Ok(self.io)
        }
    }

    /// Reads until a frame is complete.
    pub async fn next_frame(&mut self) -> Result<Frame, ReadError> {
        loop {
            if self.rstart < self.rbuf.len() {
                let mut data = &self.rbuf[self.rstart..];
                let before = data.len();
                let r = self.parser.feed(&mut data);
                self.rstart += before - data.len();
                if self.rstart == self.rbuf.len() {
                    self.rbuf.clear();
                    self.rstart = 0;
                }
                match r {
                    Ok(Some(frame)) => return Ok(frame),
                    Ok(None) => {}
                    Err(e) => return Err(ReadError::Framing(e)),
                }
            }
            // Need more bytes. `read_buf` appends into spare capacity and is cancel-safe: if the
            // session's `select!` drops this future, no bytes are lost and none are invented.
            let want = if self.rbuf.capacity() == 0 {
                IDLE_READ
            } else {
                READ_CHUNK
            };
            self.rbuf.reserve(want);
            let n = match self.io.read_buf(&mut self.rbuf).await {
                Ok(n) => n,
                Err(e) => return Err(ReadError::Io(e)),
            };
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.last_read = Instant::now();
            let wait = self.rate.take(n);
            if !wait.is_zero() {
                // Over the read rate: stop reading for a while. TCP flow control pushes back
                // on the sender; nothing is dropped.
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Queues raw bytes.
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Queues an element serialised for a `jabber:client` stream.
    pub fn queue(&mut self, el: &Element) {
        el.write_to(&mut self.wbuf, ns::CLIENT);
    }

    /// Queues `<stream:features>` with these children.
    pub fn queue_features(&mut self, features: &[Element]) {
        self.wbuf.extend_from_slice(b"<stream:features>");
        for f in features {
            f.write_to(&mut self.wbuf, ns::CLIENT);
        }
        self.wbuf.extend_from_slice(b"</stream:features>");
    }

    /// Whether anything is waiting to be written.
    pub fn has_pending_writes(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Writes everything queued, bounded by [`WRITE_TIMEOUT`].
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(WRITE_TIMEOUT, async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        })
        .await;
        self.wbuf.clear();
        self.last_write = Instant::now();
        match r {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer does not read",
            )),
        }
    }

    /// Sends a stream error and the closing tag, then shuts the connection down.
    pub async fn fail(&mut self, err: &StreamError) {
        self.wbuf.extend_from_slice(&err.to_bytes());
        self.close().await;
    }

    /// Sends `</stream:stream>` and shuts the write side down.
    pub async fn close(&mut self) {
        self.wbuf.extend_from_slice(b"</stream:stream>");
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
    }

    /// Frees buffers while the connection is idle, so idle sessions stay small.
    pub fn release(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = Vec::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = Vec::new();
        }
        if !self.parser.in_stanza() {
            self.parser.release_temporaries();
        }
    }
}

/// The opening tag the server sends on a client stream.
pub fn stream_header(from: &str, id: &str, lang: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='");
    zorg_proto::element::escape_into(&mut out, id, true);
    out.extend_from_slice(b"' from='");
    zorg_proto::element::escape_into(&mut out, from, true);
    out.extend_from_slice(b"' version='1.0' xml:lang='");
    zorg_proto::element::escape_into(&mut out, lang, true);
    out.extend_from_slice(b"'>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limit_waits_when_over() {
        let mut r = RateLimit::new(1000, 1000);
        assert_eq!(r.take(500), Duration::ZERO);
        assert_eq!(r.take(500), Duration::ZERO);
        let w = r.take(500);
        assert!(
            w >= Duration::from_millis(499) && w <= Duration::from_millis(501),
            "{w:?}"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(r.take(400), Duration::ZERO);
    }

    #[tokio::test]
    async fn whitespace_around_restarts_is_tolerated() {
        let (client, server) = tokio::io::duplex(1024);
        let mut s = XmlStream::new(server, Limits::default(), 1 << 20);
        let mut c = client;
        c.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><auth/>\n").await.unwrap();
        assert!(matches!(
            s.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        assert!(matches!(s.next_frame().await.unwrap(), Frame::Stanza(_)));
        s.restart();
        c.write_all(b"\n<?xml version='1.0'?>\n<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><x/>").await.unwrap();
        assert!(matches!(
            s.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        assert!(matches!(s.next_frame().await.unwrap(), Frame::Stanza(e) if e.name() == "x"));
    }

    #[tokio::test]
    async fn released_stream_waits_with_a_small_buffer() {
        let (client, server) = tokio::io::duplex(8192);
        let mut c = client;
        let mut s = XmlStream::new(server, Limits::default(), 1 << 20);
        c.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><a/>").await.unwrap();
        s.next_frame().await.unwrap();
        s.next_frame().await.unwrap();
        assert!(s.rbuf.capacity() >= READ_CHUNK);
        s.release();
        assert_eq!(s.rbuf.capacity(), 0);
        // Waiting for the next stanza (cancelled, as the session's select! does) holds only
        // the small idle buffer.
        let waited = tokio::time::timeout(Duration::from_millis(20), s.next_frame()).await;
        assert!(waited.is_err());
        assert!(s.rbuf.capacity() < READ_CHUNK, "{}", s.rbuf.capacity());
        // A stanza longer than that buffer still arrives whole.
        let body = "x".repeat(3000);
        c.write_all(format!("<message><body>{body}</body></message>").as_bytes())
            .await
            .unwrap();
        match s.next_frame().await.unwrap() {
            Frame::Stanza(e) => assert_eq!(e.get_child("body", ns::CLIENT).unwrap().text(), body),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn into_inner_allows_trailing_whitespace_only() {
        let (client, server) = tokio::io::duplex(1024);
        let mut c = client;
        let mut s = XmlStream::new(server, Limits::default(), 1 << 20);
        c.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><starttls/>\n").await.unwrap();
        s.next_frame().await.unwrap();
        s.next_frame().await.unwrap();
        assert!(s.into_inner().is_ok());
        let (client, server) = tokio::io::duplex(1024);
        let mut c2 = client;
        let mut s = XmlStream::new(server, Limits::default(), 1 << 20);
        c2.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><starttls/><auth/>").await.unwrap();
        s.next_frame().await.unwrap();
        s.next_frame().await.unwrap();
        assert!(
            s.into_inner().is_err(),
            "pipelined data after starttls is refused"
        );
        drop(c);
    }

    #[tokio::test]
    async fn reads_frames_across_chunks_and_restarts() {
        let (client, server) = tokio::io::duplex(64);
        let mut s = XmlStream::new(server, Limits::default(), 1 << 20);
        let w = tokio::spawn(async move {
            let mut c = client;
            c.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='x'>").await.unwrap();
            c.write_all(b"<a/><b>text</b>").await.unwrap();
            c.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><c/>").await.unwrap();
            c
        });
        assert!(matches!(
            s.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        assert!(matches!(s.next_frame().await.unwrap(), Frame::Stanza(e) if e.name() == "a"));
        assert!(matches!(s.next_frame().await.unwrap(), Frame::Stanza(e) if e.name() == "b"));
        s.restart();
        assert!(matches!(
            s.next_frame().await.unwrap(),
            Frame::StreamOpen(_)
        ));
        assert!(matches!(s.next_frame().await.unwrap(), Frame::Stanza(e) if e.name() == "c"));
        drop(w.await.unwrap());
        assert!(matches!(s.next_frame().await, Err(ReadError::Closed)));
    }

    #[tokio::test]
    async fn limits_grow_after_authentication() {
        // Before authentication a 10 KB stanza ends the stream; after `set_limits` (dialback,
        // same stream) or `set_limits` + `restart` (SASL) it passes.
        let full = Limits::default();
        let pre = full.before_authentication(8192);
        let header = b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
        let big = format!("<message><body>{}</body></message>", "x".repeat(10_000));
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut c = client;
        let mut s = XmlStream::new(server, pre, 1 << 20);
        c.write_all(header).await.unwrap();
        c.write_all(big.as_bytes()).await.unwrap();
        s.next_frame().await.unwrap();
        assert!(matches!(
            s.next_frame().await,
            Err(ReadError::Framing(FramingError::TooLarge(8192)))
        ));
        for restart in [false, true] {
            let (client, server) = tokio::io::duplex(1 << 16);
            let mut c = client;
            let mut s = XmlStream::new(server, pre, 1 << 20);
            c.write_all(header).await.unwrap();
            c.write_all(b"<auth/>").await.unwrap();
            s.next_frame().await.unwrap();
            s.next_frame().await.unwrap();
            s.set_limits(full);
            if restart {
                s.restart();
                c.write_all(header).await.unwrap();
                s.next_frame().await.unwrap();
            }
            c.write_all(big.as_bytes()).await.unwrap();
            assert!(
                matches!(s.next_frame().await.unwrap(), Frame::Stanza(e) if e.name() == "message")
            );
        }
    }
}
