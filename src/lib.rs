//! starttls-proxy: STARTTLS in front of plaintext MTAs.
//!
//! Bytes flow one way through the modules.
//! Inbound: `server` (accept, limits) → `net` (a trusted balancer's PROXY header) →
//! `inbound` (greeting → EHLO → STARTTLS → EHLO → envelope checks; a transaction to a TLS report
//! address ends in `inbound::intake`, which keeps it under `state`) → `splice`.
//! Outbound: `server` → `outbound` (the MTA's dialogue → at RCPT: `route` → `connect` →
//! `starttls` → `establish`, the one verdict step, which also hands each MX attempt to
//! `state::monitor` (certificate inventory, downgrade memory) → envelope replayed) → `splice`;
//! `discover` (MTA-STS, DANE) takes its place between `route` and `connect` as it is wired in.
//! `smtp` parses and formats the wire protocol without IO policy; `policy` decides, purely;
//! `resolver`, `tls` and `https` reach the network for them; `state` keeps what outlives the
//! process (session results, the MTA-STS cache, partner certificates, MX TLS memory,
//! configuration history, TLS reports sent and received); `report` (built and delivered daily by
//! `report::schedule` inside `server`), `cli` (coverage, evidence, tls-report) and `admin`
//! (`/certificates`) read it back; `metrics` and `session` record what happened.
#![deny(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod https;
pub mod inbound;
pub mod log;
pub mod metrics;
pub mod net;
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
