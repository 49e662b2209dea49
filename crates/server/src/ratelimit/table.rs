//! A map with a cap, for state keyed by what an attacker chooses (addresses, account names).
//!
//! Entries that say nothing any more (a refilled bucket, a decayed score) are swept when the
//! map reaches its cap. If it is still over half full after that, the entries under the least
//! pressure are forgotten, never those in use (a connection or a password check holding a
//! slot), so that reservations stay exact. Forgetting an entry gives its key a fresh
//! allowance: the map fails open for that key rather than locking anybody out. After a
//! sweep the map is at most half full (plus the entries in use), so the sweep costs O(1)
//! amortised per insert even under a flood of new keys.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::time::Instant;

/// What the table needs to know about an entry.
pub(super) trait Slot {
    /// Says nothing any more: removing it changes no decision. `rate` is the table's.
    fn idle(&self, now: Instant, rate: f64) -> bool;
    /// Held by a connection or a check in progress: never removed.
    fn busy(&self) -> bool;
    /// How much the entry restrains its key; the lowest go first when room must be made.
    fn pressure(&self, now: Instant, rate: f64) -> f64;
}

/// A capped map; `rate` is the refill or decay rate its entries are computed with.
pub(super) struct Table<K, V> {
    map: HashMap<K, V>,
    cap: usize,
    pub(super) rate: f64,
}

impl<K: Eq + Hash + Clone, V: Slot> Table<K, V> {
    pub(super) fn new(cap: usize, rate: f64) -> Self {
        Table {
            map: HashMap::new(),
            cap: cap.max(2),
            rate,
        }
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The entry for `key`, made with `new` if absent (making room first when full).
    /// Returns whether entries had to be forgotten to make room (for the caller's log).
    pub(super) fn entry(
        &mut self,
        key: K,
        now: Instant,
        new: impl FnOnce() -> V,
    ) -> (&mut V, bool) {
        let mut forgot = false;
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            forgot = self.make_room(now);
        }
        (self.map.entry(key).or_insert_with(new), forgot)
    }

    /// Sweeps idle entries; if that leaves the map over half full, forgets the idle-most of
    /// the entries not in use until it is half full. Returns whether any live entry went.
    fn make_room(&mut self, now: Instant) -> bool {
        let rate = self.rate;
        self.map.retain(|_, v| !v.idle(now, rate));
        let target = self.cap / 2;
        if self.map.len() <= target {
            return false;
        }
        let mut free: Vec<(f64, K)> = self
            .map
            .iter()
            .filter(|(_, v)| !v.busy())
            .map(|(k, v)| (v.pressure(now, rate), k.clone()))
            .collect();
        let n = (self.map.len() - target).min(free.len());
        if n == 0 {
            return false;
        }
        free.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0));
        for (_, k) in free.drain(..n) {
            self.map.remove(&k);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E {
        pressure: f64,
        busy: bool,
    }

    impl Slot for E {
        fn idle(&self, _: Instant, _: f64) -> bool {
            self.pressure == 0.0 && !self.busy
        }
        fn busy(&self) -> bool {
            self.busy
        }
        fn pressure(&self, _: Instant, _: f64) -> f64 {
            self.pressure
        }
    }

    #[test]
    fn stays_bounded_and_keeps_busy_and_pressured_entries() {
        let now = Instant::now();
        let mut t = Table::new(100, 1.0);
        // Idle entries are swept first.
        for k in 0..100u32 {
            t.entry(k, now, || E {
                pressure: 0.0,
                busy: false,
            });
        }
        assert_eq!(t.len(), 100);
        let (_, forgot) = t.entry(1000, now, || E {
            pressure: 5.0,
            busy: true,
        });
        assert!(!forgot, "only idle entries went");
        assert_eq!(t.len(), 1);
        // A flood of live keys: the table never exceeds its cap, busy entries and the most
        // pressured ones survive.
        for k in 0..10_000u32 {
            let (e, _) = t.entry(k, now, || E {
                pressure: f64::from(k % 7) + 0.5,
                busy: false,
            });
            e.pressure += 0.0;
            assert!(t.len() <= 100);
        }
        assert!(t.get(&1000).is_some(), "a busy entry is never forgotten");
        assert!(t.get(&9_999).is_some(), "the newest entry is there");
    }

    #[test]
    fn all_busy_grows_past_the_cap_rather_than_break_a_reservation() {
        let now = Instant::now();
        let mut t = Table::new(4, 1.0);
        for k in 0..10u32 {
            t.entry(k, now, || E {
                pressure: 1.0,
                busy: true,
            });
        }
        // Busy entries are bounded by whatever bounds the work in progress (connections).
        assert_eq!(t.len(), 10);
    }
}
