//! starttls-proxy: STARTTLS in front of plaintext MTAs.
//!
//! Bytes flow one way through the modules:
//! `server` (accept, limits) → `inbound` (greeting → EHLO → STARTTLS → EHLO) → `splice`.
//! `smtp` parses and formats the wire protocol without doing IO policy; `tls` builds rustls
//! configurations; `metrics` and `session` record what happened.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod https;
pub mod inbound;
pub mod log;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod report;
pub mod resolver;
pub mod server;
pub mod session;
pub mod smtp;
pub mod splice;
pub mod state;
pub mod tls;
pub mod tls_stream;

#[cfg(test)]
mod test_support;
