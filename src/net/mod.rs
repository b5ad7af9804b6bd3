//! The network edge of a session, below the SMTP phases: who the client is (the TCP peer, or
//! what a trusted balancer's PROXY header says) and the PROXY protocol's wire format.

pub mod client;
pub mod proxy_protocol;
