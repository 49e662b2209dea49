//! One audit record as a line of the log, and the hash chain through the lines.
//!
//! A record is one line of JSON:
//!
//! ```text
//! {"seq":42,"time":"2026-11-23T10:15:02.113Z","prev":"<64 hex>","event":"auth_succeeded",…,"hash":"<64 hex>"}
//! ```
//!
//! `hash` is the SHA-256 of the line's exact bytes before `,"hash":"`, so it covers the
//! sequence number, the time, the previous record's hash and every field of the event. A
//! record cannot be changed, dropped, moved or added without breaking either its own hash or
//! the `prev` of the record after it; signed checkpoints (see [`super::sign`]) stop someone
//! from recomputing the whole chain after a change.
//!
//! The exact bytes are hashed, not a re-serialisation, so the check does not depend on how a
//! JSON library orders or escapes fields.

use aws_lc_rs::digest;
use serde::Deserialize;

use super::event::Event;

/// The `prev` of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The marker between a record's hashed part and its hash.
const HASH_FIELD: &str = ",\"hash\":\"";

/// Where a chain ends: the last record's sequence number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last record (0 for an empty log).
    pub seq: u64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };
}

/// Appends the record line for `event` (ending in `\n`) to `out` and returns its hash.
pub fn encode(seq: u64, time: &str, prev: &[u8; 32], event: &Event, out: &mut Vec<u8>) -> [u8; 32] {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"time\":\"");
    out.extend_from_slice(time.as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    out.extend_from_slice(hex(prev).as_bytes());
    out.extend_from_slice(b"\",");
    // The event is an object with at least its "event" tag: splice its fields in.
    let ev_start = out.len();
    if serde_json::to_writer(&mut *out, event).is_err() || out.len() < ev_start + 2 {
        // Serialising plain data to memory does not fail; keep the line well-formed anyway.
        out.truncate(ev_start);
        out.extend_from_slice(b"{\"event\":\"unserialisable\"}");
    }
    out.remove(ev_start);
    out.pop();
    let h = sha256(&out[start..]);
    out.extend_from_slice(HASH_FIELD.as_bytes());
    out.extend_from_slice(hex(&h).as_bytes());
    out.extend_from_slice(b"\"}\n");
    h
}

/// A record read back from a line, its hash checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// When it was written (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The previous record's hash.
    pub prev: [u8; 32],
    /// This record's hash.
    pub hash: [u8; 32],
    /// The event.
    pub event: Event,
}

/// Why a line is not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Not a record at all (no hash, not JSON, a field missing or of the wrong type).
    Malformed(String),
    /// The hash does not match the line's content: the record was changed.
    HashMismatch,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::Malformed(why) => write!(f, "not a valid audit record ({why})"),
            LineError::HashMismatch => {
                f.write_str("the record was changed: its hash does not match its content")
            }
        }
    }
}

#[derive(Deserialize)]
struct RawRecord {
    seq: u64,
    time: String,
    prev: String,
    #[serde(flatten)]
    event: Event,
}

/// Parses one line (without its `\n`) and checks its hash.
pub fn parse(line: &str) -> Result<Record, LineError> {
    let (body, tail) = line
        .rsplit_once(HASH_FIELD)
        .ok_or_else(|| LineError::Malformed("no hash".into()))?;
    let hash = tail
        .strip_suffix("\"}")
        .and_then(unhex)
        .ok_or_else(|| LineError::Malformed("bad hash".into()))?;
    if sha256(body.as_bytes()) != hash {
        return Err(LineError::HashMismatch);
    }
    let raw: RawRecord = serde_json::from_str(&format!("{body}}}"))
        .map_err(|e| LineError::Malformed(e.to_string()))?;
    let prev = unhex(&raw.prev).ok_or_else(|| LineError::Malformed("bad prev".into()))?;
    Ok(Record {
        seq: raw.seq,
        time: raw.time,
        prev,
        hash,
        event: raw.event,
    })
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hexadecimal. (By table: the writer formats two hashes per record, and the
/// formatting machinery cost more than the hashing.)
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// 64 hexadecimal digits as 32 bytes.
pub fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A Unix-millisecond time as the log writes it: RFC 3339, UTC, always three fractional
/// digits, so that times sort as text.
pub fn timestamp(unix_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::Event;

    fn ev() -> Event {
        Event::SessionUnbound {
            session: "alice@example.org/phone".into(),
        }
    }

    #[test]
    fn a_line_round_trips_and_chains() {
        let mut out = Vec::new();
        let h1 = encode(1, &timestamp(0), &GENESIS, &ev(), &mut out);
        let h2 = encode(2, &timestamp(1), &h1, &ev(), &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "{{\"seq\":1,\"time\":\"1970-01-01T00:00:00.000Z\",\"prev\":\"{}\",\
                 \"event\":\"session_unbound\",\"session\":\"alice@example.org/phone\",\
                 \"hash\":\"{}\"}}",
                "0".repeat(64),
                hex(&h1)
            )
        );
        let r2 = parse(lines[1]).unwrap();
        assert_eq!((r2.seq, r2.prev, r2.hash, r2.event), (2, h1, h2, ev()));
        // Every line is plain JSON, for jq and friends.
        let v: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["event"], "session_unbound");
    }

    #[test]
    fn any_change_breaks_the_hash() {
        let mut out = Vec::new();
        encode(7, &timestamp(5), &GENESIS, &ev(), &mut out);
        let line = String::from_utf8(out).unwrap();
        let line = line.trim_end();
        for (from, to) in [
            ("alice", "mallory"),
            ("\"seq\":7", "\"seq\":8"),
            (":00.005Z", ":00.006Z"),
        ] {
            let changed = line.replace(from, to);
            assert_eq!(parse(&changed), Err(LineError::HashMismatch), "{from}");
        }
        // Spaces that leave the JSON equal still change the bytes.
        assert_eq!(
            parse(&line.replacen(',', ", ", 1)),
            Err(LineError::HashMismatch)
        );
        assert!(matches!(parse("{}"), Err(LineError::Malformed(_))));
    }

    #[test]
    fn times_have_fixed_width() {
        assert_eq!(timestamp(1_700_000_000_120), "2023-11-14T22:13:20.120Z");
        assert_eq!(unhex(&hex(&[0xab; 32])), Some([0xab; 32]));
        assert_eq!(unhex("zz"), None);
    }
}
