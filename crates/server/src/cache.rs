//! Bounded caches of per-account data that every routed stanza reads (XEP-0191 blocklists,
//! XEP-0313 archiving preferences).
//!
//! Two rules keep them honest (DESIGN §6: no cache keyed by a name an attacker chooses unless it
//! is bounded):
//! - bounded: a `moka` cache with a capacity counted in weight (one per account plus one per
//!   JID it holds), evicting the least useful entries; the caller caches only accounts that
//!   exist, so addresses an attacker makes up never take a place;
//! - never older than storage: a load that began before a write must not put what it read
//!   into the cache after the write invalidated it. Every write bumps a counter and then
//!   removes the entry under moka's per-key compute lock; a load notes the counter before it
//!   reads storage and fills the entry, under the same lock, only if the counter has not moved.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::ops::compute::Op;

/// A bounded cache of per-account values; see the module documentation.
pub struct AccountCache<V> {
    entries: moka::sync::Cache<String, Arc<V>>,
    /// Bumped by every [`AccountCache::invalidate`]. One counter for all accounts: writes are
    /// rare (a user blocks someone, changes archiving preferences), and a load that overlaps
    /// any write is simply not cached, which costs one more read later, never a stale answer.
    writes: AtomicU64,
}

/// What a load returned: the value, and whether it may be cached (the account exists and the
/// read succeeded).
pub struct Loaded<V> {
    /// The value to use now.
    pub value: V,
    /// Whether to keep it.
    pub cache: bool,
}

impl<V: Send + Sync + 'static> AccountCache<V> {
    /// A cache holding at most `capacity` weight, where an entry weighs `1 + weight(value)`.
    pub fn new(capacity: u64, weight: fn(&V) -> usize) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .weigher(move |_: &String, v: &Arc<V>| {
                u32::try_from(weight(v).saturating_add(1)).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            entries,
            writes: AtomicU64::new(0),
        }
    }

    /// The cached value for `owner`, if any.
    pub fn get(&self, owner: &str) -> Option<Arc<V>> {
        self.entries.get(owner)
    }

    /// The cached value for `owner`, or the result of `load`, cached if it says so and no write
    /// to any account was invalidated while it ran.
    pub async fn get_or_load(&self, owner: &str, load: impl Future<Output = Loaded<V>>) -> Arc<V> {
        if let Some(v) = self.get(owner) {
            return v;
        }
        // Before the read: a write that commits after this point bumps the counter.
        let seen = self.writes.load(Ordering::SeqCst);
        let loaded = load.await;
        let value = Arc::new(loaded.value);
        if loaded.cache {
            let v = value.clone();
            self.entries.entry_by_ref(owner).and_compute_with(|_| {
                if self.writes.load(Ordering::SeqCst) == seen {
                    Op::Put(v)
                } else {
                    Op::Nop
                }
            });
        }
        value
    }

    /// Forgets `owner`'s value. Call after a write to storage has committed.
    pub fn invalidate(&self, owner: &str) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        // Under the per-key lock, so that a load that checked the counter before the bump and
        // is putting its (now old) value in finishes first and is removed here.
        self.entries
            .entry_by_ref(owner)
            .and_compute_with(|_| Op::Remove);
    }

    /// How many accounts are cached, after pending evictions ran (for tests and metrics).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> AccountCache<Vec<String>> {
        AccountCache::new(1000, Vec::len)
    }

    fn loaded(items: &[&str], cache: bool) -> Loaded<Vec<String>> {
        Loaded {
            value: items.iter().map(|s| s.to_string()).collect(),
            cache,
        }
    }

    #[tokio::test]
    async fn loads_once_and_caches_only_what_it_may() {
        let c = cache();
        let v = c.get_or_load("a@x", async { loaded(&["b@x"], true) }).await;
        assert_eq!(*v, ["b@x"]);
        // Cached: a second load is not run.
        let v = c.get_or_load("a@x", async { unreachable!("cached") }).await;
        assert_eq!(*v, ["b@x"]);
        // A value the loader says not to keep (no such account) is used, not kept.
        let v = c.get_or_load("ghost@x", async { loaded(&[], false) }).await;
        assert!(v.is_empty());
        assert!(c.get("ghost@x").is_none());
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn a_load_that_overlaps_a_write_is_not_cached() {
        let c = cache();
        // The load reads the old list, then a block commits and invalidates before the load
        // finishes: the old list must not land in the cache.
        let v = c
            .get_or_load("a@x", async {
                let old = loaded(&[], true);
                c.invalidate("a@x");
                old
            })
            .await;
        assert!(v.is_empty(), "the caller still gets what it read");
        assert!(
            c.get("a@x").is_none(),
            "an old list was put back in the cache"
        );
        // The next read loads the new list.
        let v = c.get_or_load("a@x", async { loaded(&["b@x"], true) }).await;
        assert_eq!(*v, ["b@x"]);
        assert!(c.get("a@x").is_some());
    }

    #[tokio::test]
    async fn invalidate_removes_a_cached_value() {
        let c = cache();
        c.get_or_load("a@x", async { loaded(&["b@x"], true) }).await;
        c.invalidate("a@x");
        assert!(c.get("a@x").is_none());
    }

    #[tokio::test]
    async fn capacity_bounds_the_cache() {
        // Weight 1 + items per account: 100 accounts with 9 items each weigh 1000.
        let c = AccountCache::new(100, Vec::<String>::len);
        for i in 0..1000 {
            let owner = format!("u{i}@x");
            c.get_or_load(&owner, async { loaded(&["a"; 9], true) })
                .await;
        }
        assert!(c.len() <= 10, "{} accounts cached", c.len());
    }
}
