//! Fixed-window counters keyed by account or IP address: failed logins and registrations.

use std::hash::Hash;
use std::time::Duration;

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
