//! Streams: the byte-level XML stream ([`io`]) client negotiation ([`c2s`]) and its SASL phase ([`auth`]).

pub mod auth;
pub mod c2s;
pub mod io;
