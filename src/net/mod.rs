//! The network edge of a session, below the SMTP phases: who the client is (the TCP peer, or
//! what a trusted balancer's PROXY header says), the PROXY protocol's wire format, and the
//! backend connection that passes the client on (`client_address`), and inline interception
//! (`original_dst`, with the one loop guard).

pub mod backend;
pub mod client;
pub mod original_dst;
pub mod proxy_protocol;
