//! The Zorg XMPP server as a library: configuration, TLS, streams, SASL, the router, the
//! capability modules and storage. The `zorg` binary is a thin command line around it.
#![forbid(unsafe_code)]

/// The NEN 7513 audit trail: typed events in a hash-chained log with signed checkpoints.
pub mod audit;
/// Bounded per-account caches (blocklists, archiving preferences) that never go stale.
pub mod cache;
pub mod config;
/// Encryption at rest: key-encryption key, data keys, AES-256-GCM records.
pub mod crypto;
/// RFC 6120 server-to-server links: the link manager, bounces and delivery from other servers.
pub mod federation;
pub mod modules;
pub mod ratelimit;
pub mod router;
pub mod sasl;
pub mod server;
pub mod session;
/// XEP-0198: Stream Management (acknowledgements and resumption) for client sessions.
pub mod sm;
pub mod storage;
pub mod stream;
pub mod tls;
