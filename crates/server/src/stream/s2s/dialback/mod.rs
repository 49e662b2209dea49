//! XEP-0220 Server Dialback, used only with `[federation] dialback = true`.
//!
//! Dialback proves that a peer controls the DNS of the domain it claims (the receiving server
//! asks that domain's authoritative server whether a key is genuine), not that the auditor
//! vouches for it: it is a deliberate weakening an operator opts into, so every link it lets in
//! is logged at warn level. Certificates stay the normal way in; dialback is tried only where a
//! certificate was refused for a reason that leaves room for it (see [`overridable`]).
//!
//! The three roles, all here:
//! - **initiating** ([`authenticate`]): an outbound link sends `<db:result>` with a key and
//!   waits for `type='valid'`. That answer proves nothing about the server that gives it (a man
//!   in the middle says `valid` as readily), so the receiving server must already have been
//!   authenticated by its certificate or by DANE (see [`super::outbound::connect`]); dialback
//!   only stands in for *our* certificate where the peer does not accept it;
//! - **receiving** ([`Inbound`]): an inbound link checks a `<db:result>` by asking the sender's
//!   authoritative server (found like outbound links find peers) with `<db:verify>` on a
//!   connection of its own, and authorises the domain pair when the answer is valid;
//! - **authoritative** ([`Inbound::handle`]): answers `<db:verify>` for keys this server made.
//!
//! Keys are HMAC-SHA256(SHA-256(secret), receiving ' ' originating ' ' stream-id) in hex
//! (XEP-0185), with a secret of 32 random bytes made at every start; they are never logged.

use aws_lc_rs::{constant_time, digest, hmac, rand};
use tokio::io::{AsyncRead, AsyncWrite};
use zorg_proto::Element;
use zorg_proto::jid::Jid;

use super::outbound::Failure;
use crate::stream::c2s::next_element;
use crate::stream::io::XmlStream;

mod inbound;

pub use inbound::{Inbound, Verdict};

/// The namespace of `<db:result/>` and `<db:verify/>`.
pub const NS: &str = "jabber:server:dialback";
/// The stream feature announcing dialback with error handling (XEP-0220 §2.4.2).
pub const FEATURE_NS: &str = "urn:xmpp:features:dialback";
/// Verifications one inbound link may have under way at once; further requests get a
/// `resource-constraint` dialback error until one ends.
pub const MAX_PENDING: usize = 4;
/// Domain pairs one inbound link may carry (XEP-0220 §2.5 multiplexing); beyond, requests get
/// `policy-violation`.
pub const MAX_PAIRS: usize = 16;
/// Stream IDs longer than this in a `<db:verify/>` are not ours: answered `invalid` unread.
const MAX_ID: usize = 256;
/// Keys longer than this are refused (`not-acceptable`) rather than passed on to another
/// server; real ones are 64 hex digits or thereabouts.
const MAX_KEY: usize = 1024;

/// Whether a certificate refusal leaves room for dialback. A certificate that is merely not
/// vouched for (another CA, another name, expired, none) does; a policy refusal (`not-allowed`
/// by allow/deny), a certificate the auditor revoked and a DANE mismatch never do: those are
/// decisions or warnings, not a missing voucher.
pub fn overridable(reason: &str) -> bool {
    !matches!(reason, "not-allowed" | "revoked" | "dane-mismatch")
}

/// `<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>`.
pub fn feature() -> Element {
    Element::new("dialback", FEATURE_NS).with_child(Element::new("errors", FEATURE_NS))
}

/// Whether `features` announce dialback (with error handling or not).
pub fn offered(features: &Element) -> bool {
    features.has_child("dialback", FEATURE_NS)
}

/// Whether `el` is a `<db:result/>` or `<db:verify/>`.
pub fn is_dialback(el: &Element) -> bool {
    el.ns() == NS
}

// ---------------------------------------------------------------------------------------------
// Keys

/// The dialback secret: the HMAC key SHA-256(secret). One per server run, kept in
/// [`Federation`]: keys from before a restart are simply invalid, which costs a peer one new
/// negotiation.
pub struct Secret(hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// A secret from its bytes.
    pub fn new(secret: &[u8]) -> Secret {
        let hashed = digest::digest(&digest::SHA256, secret);
        Secret(hmac::Key::new(hmac::HMAC_SHA256, hashed.as_ref()))
    }

    /// 32 random bytes; `None` if the system has no randomness to give.
    pub fn random() -> Option<Secret> {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes).ok()?;
        Some(Secret::new(&bytes))
    }

    /// The key for a stream from `originating` to `receiving` with this stream ID, hex.
    pub fn key(&self, receiving: &str, originating: &str, id: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in [receiving, " ", originating, " ", id] {
            ctx.update(part.as_bytes());
        }
        let tag = ctx.sign();
        let mut out = String::with_capacity(64);
        for b in tag.as_ref() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
        out
    }

    /// Whether `key` is the key for these three (compared in constant time).
    pub fn verify(&self, receiving: &str, originating: &str, id: &str, key: &str) -> bool {
        let ours = self.key(receiving, originating, id);
        constant_time::verify_slices_are_equal(ours.as_bytes(), key.as_bytes()).is_ok()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

// ---------------------------------------------------------------------------------------------
// Elements

/// A dialback answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The key is genuine.
    Valid,
    /// The key is not.
    Invalid,
    /// No verdict: a stanza error condition (XEP-0220 §2.4.2) and its type.
    Error(&'static str, &'static str),
}

/// What an incoming `<db:result/>` or `<db:verify/>` says, its domains checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `verify` rather than `result`.
    pub verify: bool,
    /// The `from` domain.
    pub from: String,
    /// The `to` domain.
    pub to: String,
    /// The `id` (only for `verify`; empty otherwise).
    pub id: String,
    /// The `type`, if any: only answers carry one.
    pub kind: Option<String>,
    /// The key (character data, trimmed).
    pub key: String,
}

impl Request {
    /// Reads a dialback element; `None` when it is not one or its `from` or `to` is not a
    /// domain.
    pub fn parse(el: &Element) -> Option<Request> {
        let verify = match el.name() {
            "verify" if el.ns() == NS => true,
            "result" if el.ns() == NS => false,
            _ => return None,
        };
        let domain = |a: &str| {
            let j = Jid::new(el.attr(a)?.trim_end_matches('.')).ok()?;
            (j.node().is_none() && j.resource().is_none()).then(|| j.domain().to_string())
        };
        Some(Request {
            verify,
            from: domain("from")?,
            to: domain("to")?,
            id: el.attr("id").unwrap_or_default().to_owned(),
            kind: el.attr("type").map(str::to_owned),
            key: el.text().trim().to_owned(),
        })
    }

    /// The `<error/>` condition of a `type='error'` answer.
    fn condition(el: &Element) -> String {
        el.children()
            .find(|c| c.name() == "error")
            .and_then(|e| e.children().next())
            .map_or_else(|| "undefined-condition".to_owned(), |c| c.name().to_owned())
    }
}

/// `<db:NAME from to [id] [type]>` with a key or an error inside, as XEP-0220 wants it: with
/// the `db:` prefix the stream header declared.
fn element(name: &str, from: &str, to: &str, id: Option<&str>, body: Body<'_>) -> Vec<u8> {
    use zorg_proto::element::escape_into;
    let mut out = Vec::with_capacity(200);
    out.extend_from_slice(b"<db:");
    out.extend_from_slice(name.as_bytes());
    for (attr, value) in [("from", Some(from)), ("to", Some(to)), ("id", id)] {
        let Some(value) = value else { continue };
        out.extend_from_slice(format!(" {attr}='").as_bytes());
        escape_into(&mut out, value, true);
        out.push(b'\'');
    }
    let kind = match body {
        Body::Key(_) => None,
        Body::Answer(Answer::Valid) => Some("valid"),
        Body::Answer(Answer::Invalid) => Some("invalid"),
        Body::Answer(Answer::Error(..)) => Some("error"),
    };
    if let Some(kind) = kind {
        out.extend_from_slice(format!(" type='{kind}'").as_bytes());
    }
    match body {
        Body::Key(key) => {
            out.push(b'>');
            escape_into(&mut out, key, false);
        }
        Body::Answer(Answer::Error(condition, kind)) => out.extend_from_slice(
            format!(
                "><error type='{kind}'><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
            )
            .as_bytes(),
        ),
        Body::Answer(_) => {
            out.extend_from_slice(b"/>");
            return out;
        }
    }
    out.extend_from_slice(format!("</db:{name}>").as_bytes());
    out
}

/// What goes inside a dialback element.
#[derive(Clone, Copy)]
enum Body<'a> {
    Key(&'a str),
    Answer(&'a Answer),
}

// ---------------------------------------------------------------------------------------------
// Initiating server (outbound)

/// XEP-0220 §2.1.1: asks the receiving server on `s` to accept stanzas from `local` to `remote`
/// and waits for its verdict. The caller bounds the wait (`connect_timeout`).
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut XmlStream<S>,
    secret: Option<&Secret>,
    local: &str,
    remote: &str,
    stream_id: &str,
) -> Result<(), Failure> {
    let gone = || Failure::Unreachable(format!("{remote} closed the stream during dialback"));
    let Some(secret) = secret else {
        return Err(Failure::Unreachable(
            "no randomness for a dialback key".into(),
        ));
    };
    let key = secret.key(remote, local, stream_id);
    s.queue_raw(&element("result", local, remote, None, Body::Key(&key)));
    s.flush().await.map_err(|_| gone())?;
    let el = next_element(s).await.ok_or_else(gone)?;
    // Only the answer to what was asked on this stream counts (XEP-0220 §3.1).
    let answer = Request::parse(&el)
        .filter(|r| !r.verify && r.from == remote && r.to == local)
        .ok_or_else(|| Failure::Unreachable(format!("{remote} did not answer dialback")))?;
    let refused = |sentence: String, reason| Err(Failure::Refused { sentence, reason });
    match answer.kind.as_deref() {
        Some("valid") => Ok(()),
        Some("invalid") => refused(
            format!(
                "{remote} refused the dialback key of {local} (its authoritative server said invalid)"
            ),
            "dialback-invalid",
        ),
        Some("error") => refused(
            format!(
                "{remote} could not verify {local} by dialback ({})",
                Request::condition(&el)
            ),
            "dialback-error",
        ),
        _ => Err(Failure::Unreachable(format!(
            "{remote} did not answer dialback"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently with Python's hmac module:
    /// `hmac.new(hashlib.sha256(SECRET).digest(), MSG, hashlib.sha256).hexdigest()`.
    #[test]
    fn keys_match_an_independent_computation() {
        // XEP-0220's example values (its printed keys are not what its inputs give).
        let s = Secret::new(b"s3cr3tf0rd14lb4ck");
        assert_eq!(
            s.key("montague.example", "capulet.example", "D60000229F"),
            "aab5380e8ad0cc667bd99a6c991b557871897829214c537e217b61936bbf4381"
        );
        let s = Secret::new(b"d14lb4ck43v3r");
        assert_eq!(
            s.key("capulet.example", "montague.example", "417GAF25"),
            "be00cf342f89707752799cc0edb721a67c0dd1b1811e50f3db6145eff10deeaa"
        );
        let bytes: Vec<u8> = (0u8..32).collect();
        let s = Secret::new(&bytes);
        assert_eq!(
            s.key("b.test", "a.test", "abc123"),
            "71e9d2862cea3c1e1d13959124ee570d42d4504d35173837e2cfd4f1d8325ce7"
        );
    }

    #[test]
    fn verify_accepts_own_keys_only() {
        let s = Secret::random().unwrap();
        let key = s.key("b.test", "a.test", "id1");
        assert!(s.verify("b.test", "a.test", "id1", &key));
        // Another stream, other domains, another secret, a changed or shortened key.
        assert!(!s.verify("b.test", "a.test", "id2", &key));
        assert!(!s.verify("a.test", "b.test", "id1", &key));
        assert!(
            !Secret::random()
                .unwrap()
                .verify("b.test", "a.test", "id1", &key)
        );
        let mut wrong = key.clone();
        wrong.replace_range(0..1, if key.starts_with('0') { "1" } else { "0" });
        assert!(!s.verify("b.test", "a.test", "id1", &wrong));
        assert!(!s.verify("b.test", "a.test", "id1", &key[..63]));
        assert!(!s.verify("b.test", "a.test", "id1", ""));
        // A fresh random secret works the same.
        let p = Secret::random().unwrap();
        assert!(p.verify("x", "y", "z", &p.key("x", "y", "z")));
    }

    #[test]
    fn elements_are_prefixed_and_escaped() {
        let e = element("result", "a.test", "b'.test", None, Body::Key("k<"));
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "<db:result from='a.test' to='b&apos;.test'>k&lt;</db:result>"
        );
        let e = element(
            "verify",
            "b.test",
            "a.test",
            Some("i1"),
            Body::Answer(&Answer::Valid),
        );
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "<db:verify from='b.test' to='a.test' id='i1' type='valid'/>"
        );
        let err = Answer::Error("item-not-found", "cancel");
        let e = element("result", "b.test", "a.test", None, Body::Answer(&err));
        assert_eq!(
            String::from_utf8(e).unwrap(),
            "<db:result from='b.test' to='a.test' type='error'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
        );
    }

    #[test]
    fn requests_are_parsed_strictly() {
        let el = Element::new("result", NS)
            .with_attr("from", "A.Test.")
            .with_attr("to", "b.test")
            .with_text("  abc \n");
        let r = Request::parse(&el).unwrap();
        assert_eq!(
            (r.verify, r.from.as_str(), r.to.as_str(), r.key.as_str()),
            (false, "a.test", "b.test", "abc")
        );
        assert_eq!(r.kind, None);
        let v = Element::new("verify", NS)
            .with_attr("from", "b.test")
            .with_attr("to", "a.test")
            .with_attr("id", "x")
            .with_attr("type", "valid");
        let r = Request::parse(&v).unwrap();
        assert!(r.verify && r.id == "x" && r.kind.as_deref() == Some("valid"));
        for bad in [
            Element::new("result", NS).with_attr("to", "b.test"),
            Element::new("result", NS)
                .with_attr("from", "user@a.test")
                .with_attr("to", "b.test"),
            Element::new("result", NS)
                .with_attr("from", "a.test")
                .with_attr("to", "b.test/r"),
            Element::new("result", "jabber:client")
                .with_attr("from", "a.test")
                .with_attr("to", "b.test"),
            Element::new("other", NS)
                .with_attr("from", "a.test")
                .with_attr("to", "b.test"),
        ] {
            assert_eq!(Request::parse(&bad), None, "{}", bad.to_xml(""));
        }
    }

    #[test]
    fn what_dialback_may_override() {
        for r in [
            "untrusted-root",
            "name-mismatch",
            "expired",
            "no-certificate",
        ] {
            assert!(overridable(r), "{r}");
        }
        for r in ["not-allowed", "revoked", "dane-mismatch"] {
            assert!(!overridable(r), "{r}");
        }
    }
}
