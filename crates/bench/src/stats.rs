//! Counting: latencies, errors, the server process's memory and CPU, and the message marker
//! the load tool puts in every body (so receiving needs a scan, not an XML parse).

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};

/// Length of the marker: `zb` + 8 hex digits of this run's tag + a space.
const MARKER_LEN: usize = 11;
/// Longest marker with its number: keep this many bytes of a read when a marker may be split.
const MARKER_MAX: usize = MARKER_LEN + 20;

static EPOCH: OnceLock<Instant> = OnceLock::new();
static MARKER: OnceLock<[u8; MARKER_LEN]> = OnceLock::new();

/// Every body starts with this run's marker, then the send time in nanoseconds since
/// [`now_ns`]'s epoch. The random tag keeps messages of an earlier run (delivered from offline
/// storage at login) from being counted in this one.
pub fn marker() -> &'static [u8] {
    MARKER.get_or_init(|| {
        let mut tag = [0u8; 4];
        let _ = aws_lc_rs::rand::fill(&mut tag);
        let mut m = [0u8; MARKER_LEN];
        let s = format!("zb{:08x} ", u32::from_be_bytes(tag));
        m.copy_from_slice(s.as_bytes());
        m
    })
}

/// Nanoseconds since the tool started (one monotonic clock for sender and receiver).
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Finds complete markers in `buf`, calls `on` with each send time, and drops what was
/// scanned, keeping a tail that may hold a marker cut by the read boundary.
pub fn scan(buf: &mut Vec<u8>, mut on: impl FnMut(u64)) {
    let marker = marker();
    let finder = memchr::memmem::Finder::new(marker);
    let mut i = 0;
    let mut consumed = 0;
    while let Some(pos) = finder.find(&buf[i..]) {
        let start = i + pos + marker.len();
        let mut j = start;
        let mut v: u64 = 0;
        while j < buf.len() && buf[j].is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(buf[j] - b'0'));
            j += 1;
        }
        if j >= buf.len() {
            break; // the number may go on in the next read
        }
        on(v);
        i = j;
        consumed = j;
    }
    let keep_from = consumed.max(buf.len().saturating_sub(MARKER_MAX));
    buf.drain(..keep_from);
}

/// What one task counted.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub delivered: u64,
    /// End-to-end latencies in microseconds.
    pub latencies_us: Vec<u32>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Records one received message sent at `sent_ns`.
    pub fn received(&mut self, sent_ns: u64) {
        self.delivered += 1;
        let us = now_ns().saturating_sub(sent_ns) / 1000;
        self.latencies_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    /// Counts an error.
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Adds another task's counts.
    pub fn merge(&mut self, other: Tally) {
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    /// p50/p90/p99/max of the latencies, in microseconds.
    pub fn latency_json(&mut self) -> Value {
        percentiles(&mut self.latencies_us)
    }
}

/// Percentiles of `v` (sorted in place).
pub fn percentiles(v: &mut [u32]) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort_unstable();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    json!({"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": v[v.len() - 1], "count": v.len()})
}

/// A sample of the server process's memory and CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set size in KiB.
    pub rss_kib: u64,
    /// User + system CPU seconds.
    pub cpu_s: f64,
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Reads `/proc/PID` (RSS from `status`, utime + stime from `stat`).
pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 ("state").
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some(ProcSample {
        rss_kib,
        cpu_s: (utime + stime) / clock_ticks(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_markers_across_reads() {
        let m = String::from_utf8(marker().to_vec()).unwrap();
        let mut got = Vec::new();
        let mut buf = format!("<message><body>{m}123 x</body></message><message><body>zb00000000 9 </body></message><message><body>{m}45").into_bytes();
        scan(&mut buf, |v| got.push(v));
        assert_eq!(got, vec![123]);
        buf.extend_from_slice(b"6 y</body></message>");
        scan(&mut buf, |v| got.push(v));
        assert_eq!(got, vec![123, 456]);
        buf.extend_from_slice(b"<presence/>");
        scan(&mut buf, |v| got.push(v));
        assert_eq!(got.len(), 2);
        assert!(buf.len() <= MARKER_MAX);
        // A marker split inside the marker itself.
        let mut buf = format!("....{}", &m[..3]).into_bytes();
        scan(&mut buf, |v| got.push(v));
        buf.extend_from_slice(format!("{}7 ", &m[3..]).as_bytes());
        scan(&mut buf, |v| got.push(v));
        assert_eq!(got, vec![123, 456, 7]);
    }

    #[test]
    fn percentiles_of_a_range() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let p = percentiles(&mut v);
        assert_eq!(p["p50"], 51);
        assert_eq!(p["p99"], 100);
        assert_eq!(p["max"], 100);
        assert_eq!(percentiles(&mut []), json!(null));
    }

    #[test]
    fn reads_own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
