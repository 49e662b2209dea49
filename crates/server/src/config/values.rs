//! Value types and checks shared by the config sections: durations written as `"10m"`, domain
//! names, `host:port` pairs and log filter directives.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration written in the config as `"<n><unit>"`, unit one of `s`, `m`, `h`, `d`
/// (`"30s"`, `"10m"`, `"2h"`, `"365d"`).
///
/// Whole seconds only: nothing in the config needs less, and a plain unsigned count keeps
/// parsing, printing and comparing exact. Displays in the largest unit that divides it evenly,
/// so `"600s"` prints as `"10m"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationStr {
    secs: u64,
}

impl DurationStr {
    /// The zero duration, `"0s"`; where a key allows it, it means "disabled".
    pub const ZERO: Self = Self { secs: 0 };

    /// The longest duration a config may write, 100 years: anything longer is a typo, and timers
    /// must not overflow when it is added to the current time.
    pub const MAX: Self = Self {
        secs: 36_500 * 86_400,
    };

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    /// A duration of `mins` minutes (saturating, for constants).
    pub const fn from_mins(mins: u64) -> Self {
        Self {
            secs: mins.saturating_mul(60),
        }
    }

    /// Whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    /// As a [`Duration`], for timers.
    pub const fn get(self) -> Duration {
        Duration::from_secs(self.secs)
    }

    /// Whether this is `"0s"`.
    pub const fn is_zero(self) -> bool {
        self.secs == 0
    }
}

impl From<DurationStr> for Duration {
    fn from(d: DurationStr) -> Self {
        d.get()
    }
}

/// Units from largest to smallest, with their length in seconds.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

impl fmt::Display for DurationStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secs == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in UNITS {
            if self.secs.is_multiple_of(len) {
                return write!(f, "{}{unit}", self.secs / len);
            }
        }
        // Unreachable: every count divides by 1 second.
        write!(f, "{}s", self.secs)
    }
}

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseDurationError {}

impl FromStr for DurationStr {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseDurationError {
            input: s.to_owned(),
            reason,
        };
        let Some(unit) = s.chars().next_back() else {
            return Err(fail(
                "empty; write a number and a unit (s, m, h or d), e.g. \"30s\"",
            ));
        };
        let digits = &s[..s.len() - unit.len_utf8()];
        if unit.is_ascii_digit() {
            return Err(fail("no unit; add s, m, h or d, e.g. \"30s\""));
        }
        let Some(&(_, len)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(fail("unknown unit; use s, m, h or d, e.g. \"30s\""));
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(
                "must be a whole non-negative number followed by s, m, h or d, e.g. \"30s\"",
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| fail("too large; at most 36500d"))?;
        match n.checked_mul(len) {
            Some(secs) if secs <= Self::MAX.secs => Ok(Self { secs }),
            _ => Err(fail("too large; at most 36500d")),
        }
    }
}

impl Serialize for DurationStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"30s\", \"10m\", \"2h\" or \"1d\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationStr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

/// Checks an XMPP domainpart as the server accepts it in `[[domain]] name`: an ASCII DNS name
/// (RFC 1123 labels) or IPv4 address, case-insensitive. Returns what to fix.
pub(crate) fn check_domain_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required; set it to the domain, e.g. \"example.org\"".to_owned());
    }
    if !name.is_ascii() {
        return Err(format!(
            "{name:?} is not ASCII; write an internationalised name in its xn-- (punycode) form"
        ));
    }
    if name.ends_with('.') {
        return Err(format!("{name:?} ends with a dot; remove it"));
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label (two dots in a row?)"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?} has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "{name:?} may only contain letters, digits, hyphens and dots"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "{name:?} has a label that starts or ends with a hyphen"
            ));
        }
    }
    Ok(())
}

/// Checks a `host[:port]` as sent in RFC 6120 `<see-other-host/>`: a domain name, an IPv4 address
/// or a bracketed IPv6 address, each with an optional non-zero port.
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    const HINT: &str =
        "write host[:port], e.g. \"xmpp2.example.net:5222\" or \"[2001:db8::1]:5222\"";
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("{s:?}: missing `]`; {HINT}"));
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: {v6:?} is not an IPv6 address; {HINT}"));
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, port),
                None => return Err(format!("{s:?}: unexpected text after `]`; {HINT}")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (Some(host), port),
            None => (Some(s), ""),
        }
    };
    if let Some(host) = host
        && host.parse::<Ipv4Addr>().is_err()
    {
        check_domain_name(host).map_err(|e| format!("host {e}; {HINT}"))?;
    }
    if host.is_none() || !port.is_empty() || s.ends_with(':') {
        match port.parse::<u16>() {
            Ok(p) if p != 0 => {}
            _ => return Err(format!("{s:?}: port must be between 1 and 65535; {HINT}")),
        }
    }
    Ok(())
}

/// Log levels accepted in `log.level`, alone or as `target=level`.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks `log.level` against the subset of tracing-subscriber's `EnvFilter` syntax we promise:
/// comma-separated directives, each `level` or `target=level` (target a Rust module path such as
/// `zorg_server::stream`). Keeps the config crate free of tracing-subscriber.
pub(crate) fn check_log_level(s: &str) -> Result<(), String> {
    const HINT: &str = "use trace, debug, info, warn, error or off, optionally per target as \
                        in \"info,zorg_server::stream=debug\"";
    if s.trim().is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    for directive in s.split(',') {
        let directive = directive.trim();
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, directive),
        };
        if let Some(target) = target {
            let ok = !target.is_empty()
                && target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'));
            if !ok {
                return Err(format!("{directive:?}: {target:?} is not a target; {HINT}"));
            }
        }
        if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            let context = match target {
                Some(_) => format!("{directive:?}: "),
                None => String::new(),
            };
            return Err(format!("{context}{level:?} is not a level; {HINT}"));
        }
    }
    Ok(())
}

/// Whether `IpAddr` parsing would accept `s`; used to tell operators a listen address needs a port.
pub(crate) fn is_bare_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("2h", 7200),
            ("365d", 365 * 86_400),
            ("0s", 0),
        ] {
            let d: DurationStr = text.parse().unwrap();
            assert_eq!(d.as_secs(), secs, "{text}");
            assert_eq!(d.get(), std::time::Duration::from_secs(secs));
            assert_eq!(d.to_string(), text);
        }
        assert_eq!("600s".parse::<DurationStr>().unwrap().to_string(), "10m");
        assert_eq!("90s".parse::<DurationStr>().unwrap().to_string(), "90s");
        assert_eq!("36500d".parse::<DurationStr>().unwrap(), DurationStr::MAX);
        assert_eq!("48h".parse::<DurationStr>().unwrap().to_string(), "2d");
        let rejected = [
            ("10", "no unit"),
            ("-1s", "whole non-negative"),
            ("+1s", "whole non-negative"),
            ("1y", "unknown unit"),
            ("s", "whole non-negative"),
            ("", "empty"),
            ("1.5h", "whole non-negative"),
            (" 1s", "whole non-negative"),
            ("99999999999999999999s", "too large"),
            ("213503982334602d", "too large"),
            ("36501d", "too large"),
        ];
        for (text, why) in rejected {
            let err = text.parse::<DurationStr>().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
