//! The network edge of a session, below the SMTP phases: who the client is (the TCP peer, or
//! what a trusted balancer's PROXY header says), the PROXY protocol's wire format, and the
//! backend connection that passes the client on (`client_address`).

pub mod backend;
pub mod client;
pub mod proxy_protocol;
