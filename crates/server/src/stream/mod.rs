//! Streams: the byte-level XML stream ([`io`]) and client negotiation ([`c2s`]).

pub mod c2s;
pub mod io;
