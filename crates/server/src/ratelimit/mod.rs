//! Limits keyed by address or account: new connections per address ([`conn`]), password
//! checks ([`login`]), and fixed-window counters (registrations). Every map here is keyed by
//! something an attacker chooses, so every one is bounded ([`table`]).

pub mod conn;
pub mod login;
mod table;

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

pub use conn::{ConnLimiter, ConnLimits, IpSlot, UnauthPermit};
pub use login::{LoginLimits, LoginThrottle};

/// The unit an address-based limit counts: an IPv4 address, or the /64 network of an IPv6
/// address (one subscriber usually gets a whole /64, so counting single IPv6 addresses would
/// hand an attacker 2^64 fresh allowances). IPv4-mapped IPv6 addresses (a dual-stack listener)
/// count as the IPv4 address they are.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
    }
}

use dashmap::DashMap;
use tokio::time::Instant;

/// Counts events per key in windows of `window`; more than `limit` in one window is "over".
#[derive(Debug)]
pub struct WindowCounter<K: Eq + Hash> {
    map: DashMap<K, (Instant, u32)>,
    limit: u32,
    window: Duration,
}

/// Above this many keys, expired entries are swept on insert so the map cannot grow without bound.
const SWEEP_AT: usize = 10_000;

impl<K: Eq + Hash + Clone> WindowCounter<K> {
    /// A counter allowing `limit` events per `window` per key.
    pub fn new(limit: u32, window: Duration) -> Self {
        WindowCounter {
            map: DashMap::new(),
            limit,
            window,
        }
    }

    /// Whether `key` has used up its allowance in the current window.
    pub fn is_over(&self, key: &K) -> bool {
        match self.map.get(key) {
            Some(e) => e.0.elapsed() < self.window && e.1 >= self.limit,
            None => false,
        }
    }

    /// Counts one event for `key`.
    pub fn record(&self, key: &K) {
        if self.map.len() > SWEEP_AT {
            let window = self.window;
            self.map.retain(|_, v| v.0.elapsed() < window);
        }
        let now = Instant::now();
        let mut e = self.map.entry(key.clone()).or_insert((now, 0));
        if e.0.elapsed() >= self.window {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
    }

    /// Forgets `key` (e.g. after a successful login).
    pub fn clear(&self, key: &K) {
        self.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_eq!(ip_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(ip_key(a), ip_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
    }

    #[tokio::test(start_paused = true)]
    async fn limits_within_window_and_resets() {
        let c = WindowCounter::new(2, Duration::from_secs(60));
        let k = "a".to_string();
        assert!(!c.is_over(&k));
        c.record(&k);
        c.record(&k);
        assert!(c.is_over(&k));
        assert!(!c.is_over(&"b".to_string()));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!c.is_over(&k));
        c.record(&k);
        assert!(!c.is_over(&k));
        c.clear(&k);
        assert!(!c.is_over(&k));
    }
}
