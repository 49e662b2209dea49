//! Server-to-server streams (RFC 6120 with XEP-0178 SASL EXTERNAL): what inbound
//! ([`inbound`]) and outbound ([`outbound`]) negotiation share — the `jabber:server` header,
//! header checks and the SASL EXTERNAL authorization identity. [`dialback`] is XEP-0220, used
//! only with `[federation] dialback = true`.

pub mod dialback;
pub mod inbound;
pub mod outbound;

use tokio::io::{AsyncRead, AsyncWrite};
use zorg_proto::{Frame, StreamCondition, StreamError, ns};

use crate::stream::io::{ReadError, XmlStream};

/// The opening tag of a server stream from `from` to `to`.
pub fn header(from: &str, to: &str, id: Option<&str>) -> Vec<u8> {
    header_with(from, to, id, false)
}

/// [`header`], declaring the `db:` prefix of XEP-0220 dialback when `dialback` (its
/// "traditional" advertisement, which some servers still look for).
pub fn header_with(from: &str, to: &str, id: Option<&str>, dialback: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(260);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' ");
    if dialback {
        out.extend_from_slice(b"xmlns:db='jabber:server:dialback' ");
    }
    out.extend_from_slice(b"from='");
    zorg_proto::element::escape_into(&mut out, from, true);
    // RFC 6120 §4.7.2: `to` echoes the peer's `from`, which it may have left out before TLS.
    if !to.is_empty() {
        out.extend_from_slice(b"' to='");
        zorg_proto::element::escape_into(&mut out, to, true);
    }
    if let Some(id) = id {
        out.extend_from_slice(b"' id='");
        zorg_proto::element::escape_into(&mut out, id, true);
    }
    out.extend_from_slice(b"' version='1.0'>");
    out
}

/// The addresses of a checked peer header, lower-cased, trailing dot removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// The header's `from` (empty when absent).
    pub from: String,
    /// The header's `to` (empty when absent).
    pub to: String,
    /// The stream ID (empty when absent): on an outbound stream the one the peer gave it
    /// (dialback keys are made with it); inbound streams set the one they give.
    pub id: String,
}

/// Why a header could not be read: a stream error to send, or a connection already gone.
#[derive(Debug)]
pub enum HeaderError {
    /// Answer with this stream error.
    Stream(StreamError),
    /// The connection closed or failed.
    Gone,
}

/// Reads the peer's stream header and checks it is an XMPP 1.0 `jabber:server` stream.
pub async fn read_header<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
) -> Result<Peers, HeaderError> {
    let h = match s.next_frame().await {
        Ok(Frame::StreamOpen(h)) => h,
        Ok(_) => {
            return Err(HeaderError::Stream(StreamError::new(
                StreamCondition::BadFormat,
            )));
        }
        Err(ReadError::Framing(e)) => return Err(HeaderError::Stream(StreamError::from(&e))),
        Err(_) => return Err(HeaderError::Gone),
    };
    if h.name != "stream" || h.ns != ns::STREAM || h.default_ns.as_deref() != Some(ns::SERVER) {
        let e =
            StreamError::new(StreamCondition::InvalidNamespace).with_text("expected jabber:server");
        return Err(HeaderError::Stream(e));
    }
    if h.attr("version").and_then(|v| v.split('.').next()) != Some("1") {
        let e = StreamError::new(StreamCondition::UnsupportedVersion)
            .with_text("XMPP 1.0 streams only");
        return Err(HeaderError::Stream(e));
    }
    let norm = |a: Option<&str>| a.unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
    Ok(Peers {
        from: norm(h.attr("from")),
        to: norm(h.attr("to")),
        id: h.attr("id").unwrap_or("").to_owned(),
    })
}

/// The XEP-0178 authorization identity in an `<auth/>` or `<success/>`: empty ("=") or the
/// base64 of a domain. `None` when it is not valid base64 or UTF-8.
pub fn decode_authzid(text: &str) -> Option<String> {
    use base64::Engine;
    let t = text.trim();
    if t.is_empty() || t == "=" {
        return Some(String::new());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(t).ok()?;
    String::from_utf8(bytes)
        .ok()
        .map(|s| s.to_ascii_lowercase())
}

/// The base64 authorization identity for `domain` (XEP-0178 §3: the initiating domain).
pub fn encode_authzid(domain: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authzid_round_trip() {
        assert_eq!(decode_authzid("="), Some(String::new()));
        assert_eq!(decode_authzid(""), Some(String::new()));
        assert_eq!(
            decode_authzid(&encode_authzid("A.Example")),
            Some("a.example".into())
        );
        assert_eq!(decode_authzid("!!"), None);
    }

    #[test]
    fn header_escapes_and_names_both_ends() {
        let h = String::from_utf8(header("a.test", "b'.test", Some("x"))).unwrap();
        assert!(h.contains("xmlns='jabber:server'"));
        assert!(h.contains("from='a.test' to='b&apos;.test' id='x'"), "{h}");
        let h = String::from_utf8(header("a.test", "", None)).unwrap();
        assert!(h.contains("from='a.test' version='1.0'"), "{h}");
        assert!(!h.contains("xmlns:db"), "{h}");
        let h = String::from_utf8(header_with("a.test", "b.test", None, true)).unwrap();
        assert!(
            h.contains("xmlns:db='jabber:server:dialback' from='a.test'"),
            "{h}"
        );
    }
}
