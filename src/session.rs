//! What a session leaves behind: one log line in the contract's fields, and its TLS facts.

use crate::log;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// Facts of a completed handshake, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    pub version: &'static str,
    pub cipher: &'static str,
    pub sni: Option<String>,
    /// Certificate verdict: `none` when no certificate was asked for (inbound clients).
    pub verdict: &'static str,
}

/// Everything the end-of-session log line reports.
#[derive(Debug)]
pub struct SessionRecord {
    pub id: String,
    pub listener: String,
    pub direction: &'static str,
    pub peer: SocketAddr,
    pub next_hop: SocketAddr,
    /// Our local address towards the next hop (lets the demo sink match its peer to a session).
    pub next_hop_local: Option<SocketAddr>,
    pub tls: Option<TlsFacts>,
    /// Policy in force: inbound `opportunistic`, `require_tls` or `require_tls_listed`.
    pub policy: &'static str,
    /// The domain a policy decision was about (the last one refused), if any.
    pub domain: Option<String>,
    /// `ok`, or the reason the session ended badly (a metric label too).
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub bytes_from_peer: u64,
    pub bytes_to_peer: u64,
    pub started: Instant,
}

impl SessionRecord {
    pub fn new(
        listener: &str,
        direction: &'static str,
        peer: SocketAddr,
        next_hop: SocketAddr,
    ) -> Self {
        Self {
            id: next_id(),
            listener: listener.to_string(),
            direction,
            peer,
            next_hop,
            next_hop_local: None,
            tls: None,
            policy: "opportunistic",
            domain: None,
            outcome: "ok",
            detail: None,
            bytes_from_peer: 0,
            bytes_to_peer: 0,
            started: Instant::now(),
        }
    }

    pub fn emit(&self) {
        let tls = self.tls.as_ref();
        let mut event = if self.outcome == "ok" {
            log::info("session")
        } else {
            log::warn("session")
        };
        event = event
            .field("id", &self.id)
            .field("listener", &self.listener)
            .field("direction", self.direction)
            .field("peer", self.peer)
            .field("backend", self.next_hop)
            .field("tls", if tls.is_some() { "yes" } else { "no" })
            .field("version", tls.map_or("-", |t| t.version))
            .field("cipher", tls.map_or("-", |t| t.cipher))
            .field("sni", tls.and_then(|t| t.sni.as_deref()).unwrap_or("-"))
            .field("verdict", tls.map_or("-", |t| t.verdict))
            .field("policy", self.policy)
            .field("domain", self.domain.as_deref().unwrap_or("-"))
            .field("outcome", self.outcome);
        if let Some(detail) = &self.detail {
            event = event.field("detail", detail);
        }
        event
            .field("bytes_in", self.bytes_from_peer)
            .field("bytes_out", self.bytes_to_peer)
            .field("duration_ms", self.started.elapsed().as_millis())
            .emit();
    }
}

/// Session ids: a per-process random prefix (so restarts don't repeat ids) and a counter.
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        u32::from_le_bytes(bytes)
    });
    format!(
        "{prefix:08x}{:08x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
