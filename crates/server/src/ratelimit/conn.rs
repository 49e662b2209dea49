//! Per-address limits on new connections, one limiter for clients and one for servers: a
//! token bucket of new connections and a cap on connections not yet authenticated, both per
//! IPv4 address or IPv6 /64 ([`super::ip_key`]). They stand before the server-wide cap on
//! unauthenticated connections, so that one address cannot take all of it.
//!
//! A refused connection is closed at once, before TLS and without a stream error: the refusal
//! must cost less than the connection (no handshake, no parsing), a stream error on the
//! STARTTLS port would be plaintext the client cannot trust anyway and on a direct-TLS port it
//! would need a whole handshake, and clients treat a closed connection as a transient failure
//! and retry with their back-off. Operators see a warning, at most one per 10 seconds per
//! limiter, with the count of refusals.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::ip_key;
use super::table::{Slot, Table};

/// Addresses tracked at most per limiter (about 64 bytes each).
const MAX_ADDRESSES: usize = 65_536;

/// At most one warning per this long about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits of one kind of listener.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections from one address that have not authenticated yet.
    pub max_unauthenticated_per_ip: u32,
    /// New connections per second per address, sustained.
    pub rate_per_second: u32,
    /// New connections one address may open at once (the bucket's size).
    pub burst: u32,
}

impl ConnLimits {
    /// The client limits `[limits]` sets.
    pub fn c2s(l: &crate::config::LimitsConfig) -> Self {
        ConnLimits {
            max_unauthenticated_per_ip: l.max_unauthenticated_per_ip,
            rate_per_second: l.connection_rate_per_ip,
            burst: l.connection_burst_per_ip,
        }
    }

    /// The server limits `[s2s]` sets.
    pub fn s2s(s: &crate::config::S2sConfig) -> Self {
        ConnLimits {
            max_unauthenticated_per_ip: s.max_unauthenticated_per_ip,
            rate_per_second: s.connection_rate_per_ip,
            burst: s.connection_burst_per_ip,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address opened connections faster than its rate.
    Rate,
    /// The address has its share of unauthenticated connections already.
    PerAddress,
    /// The server-wide cap on unauthenticated connections is reached.
    ServerWide,
}

impl Refusal {
    fn as_str(self) -> &'static str {
        match self {
            Refusal::Rate => "too many new connections from this address",
            Refusal::PerAddress => "too many unauthenticated connections from this address",
            Refusal::ServerWide => "too many unauthenticated connections, server-wide",
        }
    }
}

/// Per-address connection limits of one kind of listener (clients or servers).
#[derive(Clone)]
pub struct ConnLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    limits: ConnLimits,
    /// "client" or "server", for the log.
    what: &'static str,
    state: Mutex<State>,
}

struct State {
    table: Table<IpAddr, Entry>,
    /// Refusals since the last warning.
    refused: u64,
    last_warning: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    unauthenticated: u32,
    tokens: f64,
    at: Instant,
    /// When the bucket will be full again: from then on, with no connection open, the entry
    /// says nothing and may go.
    full_at: Instant,
}

impl Slot for Entry {
    fn idle(&self, now: Instant, _: f64) -> bool {
        self.unauthenticated == 0 && now >= self.full_at
    }
    fn busy(&self) -> bool {
        self.unauthenticated > 0
    }
    fn pressure(&self, now: Instant, _: f64) -> f64 {
        self.full_at.saturating_duration_since(now).as_secs_f64()
    }
}

impl ConnLimiter {
    /// A limiter for `what` ("client" or "server") connections.
    pub fn new(limits: ConnLimits, what: &'static str) -> Self {
        let rate = f64::from(limits.rate_per_second.max(1));
        ConnLimiter {
            inner: Arc::new(Inner {
                limits,
                what,
                state: Mutex::new(State {
                    table: Table::new(MAX_ADDRESSES, rate),
                    refused: 0,
                    last_warning: None,
                }),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent at every unlock; a panic elsewhere must not stop accepts.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection from `ip`, or says why not. The slot counts the connection as
    /// unauthenticated until it is dropped.
    pub fn admit(&self, ip: IpAddr) -> Result<IpSlot, Refusal> {
        let key = ip_key(ip);
        let now = Instant::now();
        let l = self.inner.limits;
        let burst = f64::from(l.burst.max(1));
        let mut st = self.state();
        let rate = st.table.rate;
        let (e, forgot) = st.table.entry(key, now, || Entry {
            unauthenticated: 0,
            tokens: burst,
            at: now,
            full_at: now,
        });
        let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
        e.tokens = (e.tokens + elapsed * rate).min(burst);
        e.at = now;
        let verdict = if e.tokens < 1.0 {
            Err(Refusal::Rate)
        } else if e.unauthenticated >= l.max_unauthenticated_per_ip {
            Err(Refusal::PerAddress)
        } else {
            e.tokens -= 1.0;
            e.unauthenticated += 1;
            e.full_at = now + Duration::from_secs_f64((burst - e.tokens) / rate);
            Ok(())
        };
        if forgot {
            tracing::warn!(
                what = self.inner.what,
                "more addresses connect than the connection limits can track; the least \
                 active are forgotten (and get a fresh allowance)"
            );
        }
        drop(st);
        match verdict {
            Ok(()) => Ok(IpSlot {
                limiter: self.clone(),
                key,
            }),
            Err(r) => {
                self.refused(ip, r);
                Err(r)
            }
        }
    }

    /// Counts a refusal, and warns at most once per [`WARN_EVERY`].
    pub fn refused(&self, ip: IpAddr, why: Refusal) {
        let now = Instant::now();
        let mut st = self.state();
        st.refused += 1;
        if st
            .last_warning
            .is_none_or(|t| now.saturating_duration_since(t) >= WARN_EVERY)
        {
            let count = std::mem::take(&mut st.refused);
            st.last_warning = Some(now);
            drop(st);
            tracing::warn!(
                peer = %ip,
                what = self.inner.what,
                refused = count,
                "{}; connections closed at once (count since the last warning)",
                why.as_str()
            );
        } else {
            tracing::debug!(peer = %ip, what = self.inner.what, "{}", why.as_str());
        }
    }

    /// Unauthenticated connections counted for `ip`'s address (or /64) now.
    pub fn unauthenticated(&self, ip: IpAddr) -> u32 {
        self.state()
            .table
            .get(&ip_key(ip))
            .map_or(0, |e| e.unauthenticated)
    }

    /// Addresses tracked now (bounded by the table's cap plus connections in negotiation).
    pub fn tracked(&self) -> usize {
        self.state().table.len()
    }
}

/// One unauthenticated connection counted against its address; released when dropped.
pub struct IpSlot {
    limiter: ConnLimiter,
    key: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut st = self.limiter.state();
        let rate = st.table.rate;
        let gone = match st.table.get_mut(&self.key) {
            Some(e) => {
                e.unauthenticated = e.unauthenticated.saturating_sub(1);
                e.idle(now, rate)
            }
            None => false,
        };
        if gone {
            st.table.remove(&self.key);
        }
    }
}

/// What a connection holds until it has authenticated: its place under the server-wide cap
/// and under its address's cap. Dropping it frees both.
pub struct UnauthPermit {
    _global: OwnedSemaphorePermit,
    _address: IpSlot,
}

impl UnauthPermit {
    /// Both places, taken.
    pub fn new(global: OwnedSemaphorePermit, address: IpSlot) -> Self {
        UnauthPermit {
            _global: global,
            _address: address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(cap: u32, rate: u32, burst: u32) -> ConnLimiter {
        ConnLimiter::new(
            ConnLimits {
                max_unauthenticated_per_ip: cap,
                rate_per_second: rate,
                burst,
            },
            "client",
        )
    }

    #[tokio::test(start_paused = true)]
    async fn caps_unauthenticated_per_address_and_frees_on_drop() {
        let l = limiter(2, 1000, 1000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.admit(a).unwrap();
        let _s2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::PerAddress));
        assert!(l.admit(b).is_ok(), "another address is not affected");
        assert_eq!(l.unauthenticated(a), 2);
        drop(s1);
        assert_eq!(l.unauthenticated(a), 1);
        assert!(l.admit(a).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_addresses_of_one_64_share_a_cap() {
        let l = limiter(1, 1000, 1000);
        let _s = l.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("2001:db8::2".parse().unwrap()).err(),
            Some(Refusal::PerAddress)
        );
        assert!(l.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn new_connections_per_address_are_a_token_bucket() {
        let l = limiter(1000, 2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // A burst of 3, then refused…
        for _ in 0..3 {
            drop(l.admit(a).unwrap());
        }
        assert_eq!(l.admit(a).err(), Some(Refusal::Rate));
        // …then 2 per second.
        tokio::time::advance(Duration::from_millis(500)).await;
        drop(l.admit(a).unwrap());
        assert_eq!(l.admit(a).err(), Some(Refusal::Rate));
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            drop(l.admit(a).unwrap());
        }
        assert_eq!(l.admit(a).err(), Some(Refusal::Rate));
    }

    #[tokio::test(start_paused = true)]
    async fn state_is_bounded_and_forgotten_when_it_says_nothing() {
        let l = limiter(10, 1, 1);
        for i in 0..(3 * MAX_ADDRESSES as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(l.admit(ip).unwrap());
            assert!(l.tracked() <= MAX_ADDRESSES);
        }
        // An address that refills its bucket and holds no connection leaves no trace at the
        // next sweep; one holding a connection stays.
        let held = l.admit("192.0.2.1".parse().unwrap()).unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..(MAX_ADDRESSES as u32) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            drop(l.admit(ip).unwrap());
        }
        assert_eq!(l.unauthenticated("192.0.2.1".parse().unwrap()), 1);
        drop(held);
        assert!(l.tracked() <= MAX_ADDRESSES);
    }
}
