//! What every session shares, whatever its direction: reading the peer's commands under the
//! limits, and what it leaves behind (one log line in the contract's fields, its TLS facts).

use crate::config::Limits;
use crate::log;
use crate::smtp::{reply, LineError, LineReader};
use crate::state::results::{Direction, PolicyType, ResultsLog, SessionResult};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Facts of a completed handshake, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFacts {
    pub version: &'static str,
    pub cipher: &'static str,
    pub sni: Option<String>,
    /// What the peer's certificate came to; only a verifier can make a verified one.
    pub verdict: crate::tls::Verdict,
}

/// One TLS result of a session, as the session results file keeps it: per MX attempt
/// outbound (one session may try several hosts, or judge one connection for several recipient
/// domains in transparent mode), per accepted connection inbound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    /// Outbound: the recipient domain; inbound: the MAIL FROM domain where seen.
    pub domain: Option<String>,
    /// Outbound: the MX host name as routed (an IP in transparent mode).
    pub mx_host: Option<String>,
    /// The remote end: the MX (outbound) or the client (inbound).
    pub remote: SocketAddr,
    /// Our end of that connection.
    pub local: Option<SocketAddr>,
    /// The TLS facts of this attempt (`None`: no TLS).
    pub tls: Option<TlsFacts>,
    pub outcome: crate::state::results::Outcome,
    /// The policy it was judged by, as a TLS report names it.
    pub policy_type: PolicyType,
    pub policy_strings: Vec<String>,
}

/// Everything the end-of-session log line reports.
#[derive(Debug)]
pub struct SessionRecord {
    pub id: String,
    pub listener: String,
    pub direction: &'static str,
    /// The TCP peer: the client, or the balancer in front of it.
    pub peer: SocketAddr,
    /// The real client: the peer, or what a trusted balancer's PROXY header named.
    pub client: SocketAddr,
    /// Inbound: how the backend was told about the client, as it turned out (`xclient`
    /// becomes `none` where the backend would not take it); `None` until that is known.
    pub client_address: Option<&'static str>,
    pub next_hop: SocketAddr,
    /// Our local address towards the next hop (lets the demo sink match its peer to a session).
    pub next_hop_local: Option<SocketAddr>,
    pub tls: Option<TlsFacts>,
    /// `tls` holds the facts of an outbound attempt that policy refused: logged, but TLS was
    /// not in place when the session ended (`sessions_total{tls="no"}`).
    pub tls_refused: bool,
    /// Policy in force: inbound `opportunistic`, `require_tls` or `require_tls_listed`;
    /// outbound where it came from (`dane`, `mta-sts`, `configured`, `none`: the metric label).
    pub policy: &'static str,
    /// Outbound: the mode the MX was judged by, what DANE found for it and the MTA-STS mode.
    pub mode: Option<&'static str>,
    pub tlsa: Option<&'static str>,
    pub sts_mode: Option<&'static str>,
    /// The domain a policy decision was about (the last one refused), if any.
    pub domain: Option<String>,
    /// `ok`, or the reason the session ended badly (a metric label too).
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub bytes_from_peer: u64,
    pub bytes_to_peer: u64,
    pub started: Instant,
    /// The session's TLS results, in the order they happened.
    pub results: Vec<AttemptResult>,
    /// Inbound: the domain of the client's MAIL FROM, where one was seen.
    pub mail_from_domain: Option<String>,
    /// Outbound: where each transaction's results start in `results`, and whether it delivers
    /// a TLS report (MAIL FROM = `tls_reporting.from`), so a session that carries a report
    /// among other mail marks only that transaction's attempts.
    transactions: Vec<(usize, bool)>,
}

impl SessionRecord {
    /// An outbound session's policy fields, from the policy the MX (or its domain) was
    /// judged by.
    pub fn judged_by(&mut self, applied: &crate::policy::Applied) {
        self.policy = applied.source.as_str();
        self.mode = Some(applied.mode.as_str());
        self.tlsa = applied.tlsa_found;
        self.sts_mode = applied.sts_mode.map(|m| m.as_str());
    }

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
            client: peer,
            client_address: None,
            next_hop,
            next_hop_local: None,
            tls: None,
            tls_refused: false,
            policy: "opportunistic",
            mode: None,
            tlsa: None,
            sts_mode: None,
            domain: None,
            outcome: "ok",
            detail: None,
            bytes_from_peer: 0,
            bytes_to_peer: 0,
            started: Instant::now(),
            results: Vec::new(),
            mail_from_domain: None,
            transactions: Vec::new(),
        }
    }

    /// A MAIL command was accepted: the results that follow belong to its transaction, which
    /// delivers a TLS report when its sender is `report_sender` (RFC 8460 §5.3: such sessions
    /// are never counted in a report).
    pub fn mail_started(&mut self, mail_line: &[u8], report_sender: Option<&str>) {
        let is_report = report_sender.is_some_and(|from| {
            crate::smtp::command::reverse_path_mailbox(mail_line)
                .is_some_and(|m| m.eq_ignore_ascii_case(from))
        });
        self.transactions.push((self.results.len(), is_report));
    }

    /// Whether result `index` belongs to a transaction that delivered a TLS report.
    fn is_report_delivery(&self, index: usize) -> bool {
        self.transactions
            .iter()
            .rev()
            .find(|(start, _)| *start <= index)
            .is_some_and(|(_, report)| *report)
    }

    /// Appends the session's results to the results log and waits until they are on disk, so
    /// that the log line written next never tells of a session the results miss. A failure is
    /// logged and counted; the session is not held up by it beyond the log's own bound.
    pub async fn write_results(&self, log: &ResultsLog, node: &str) {
        if self.results.is_empty() {
            return;
        }
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let inbound = self.direction == "inbound";
        let lines: Vec<SessionResult> = self
            .results
            .iter()
            .enumerate()
            .map(|(i, r)| SessionResult {
                time: time.clone(),
                node: node.to_string(),
                direction: if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                domain: r.domain.clone(),
                policy_type: r.policy_type,
                policy_strings: r.policy_strings.clone(),
                mx_host: r.mx_host.clone(),
                mx_ip: (!inbound).then_some(r.remote.ip()),
                local_ip: r.local.map(|a| a.ip()),
                client_ip: inbound.then_some(r.remote.ip()),
                tls_version: r.tls.as_ref().map(|t| t.version.to_string()),
                cipher: r.tls.as_ref().map(|t| t.cipher.to_string()),
                verified: r.tls.as_ref().is_some_and(|t| t.verdict.is_verified()),
                result: r.outcome,
                session_id: self.id.clone(),
                report_delivery: self.is_report_delivery(i),
            })
            .collect();
        if let Err(e) = log.record_all(&lines).await {
            crate::metrics::results_write_failed();
            log::warn("results_write_failed")
                .field("id", &self.id)
                .field("dir", log.dir().display())
                .field("error", e)
                .emit();
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
            .field("client", self.client)
            .field("peer", self.peer)
            // No next hop was reached (a route that failed in DNS): say so, not 0.0.0.0:0.
            .field(
                "backend",
                match self.next_hop.port() {
                    0 => "-".to_string(),
                    _ => self.next_hop.to_string(),
                },
            )
            .field("client_address", self.client_address.unwrap_or("-"))
            .field("tls", if tls.is_some() { "yes" } else { "no" })
            .field("version", tls.map_or("-", |t| t.version))
            .field("cipher", tls.map_or("-", |t| t.cipher))
            .field("sni", tls.and_then(|t| t.sni.as_deref()).unwrap_or("-"))
            .field("verdict", tls.map_or("-", |t| t.verdict.as_str()))
            .field("policy", self.policy);
        for (key, value) in [
            ("mode", self.mode),
            ("tlsa", self.tlsa),
            ("sts_mode", self.sts_mode),
        ] {
            if let Some(value) = value {
                event = event.field(key, value);
            }
        }
        event = event
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

/// A session's place in its listener's counts (the active-connections gauge, the
/// `max_connections` slot). The session gives it back just before it writes its log line, so
/// whoever has read the line sees the counts without it; dropping it (a panic, an aborted task)
/// gives it back too.
pub struct Slot {
    release: Option<Box<dyn FnOnce() + Send>>,
}

impl Slot {
    pub fn new(release: impl FnOnce() + Send + 'static) -> Slot {
        Slot {
            release: Some(Box::new(release)),
        }
    }

    /// Gives the place back (once; later calls and the drop do nothing).
    pub fn release(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
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

/// Why the peer's next command could not be had.
#[derive(Debug)]
pub enum CommandError {
    /// Nothing for `idle_timeout`.
    Idle(Duration),
    /// `max_errors` over-long lines.
    TooManyErrors,
    Closed,
    Io(std::io::Error),
    /// The proxy is shutting down.
    Draining,
}

/// Reads the commands of the peer that talks to us: idle timeout, shutdown, and over-long lines
/// answered with `500 5.5.2` as soon as they pass the limit, until `max_errors` (a line that
/// goes on counts once more for every further `max_line_length` bytes, without a reply).
pub struct CommandReader {
    errors: u32,
    draining: watch::Receiver<bool>,
}

impl CommandReader {
    pub fn new(draining: watch::Receiver<bool>) -> Self {
        Self {
            errors: 0,
            draining,
        }
    }

    pub async fn next<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        peer: &mut LineReader<S>,
        limits: &Limits,
        record: &mut SessionRecord,
    ) -> Result<Vec<u8>, CommandError> {
        loop {
            let read =
                tokio::time::timeout(limits.idle_timeout, peer.read_line(limits.max_line_length));
            let result = tokio::select! {
                r = read => r,
                _ = self.draining.wait_for(|d| *d) => return Err(CommandError::Draining),
            };
            match result {
                Err(_) => return Err(CommandError::Idle(limits.idle_timeout)),
                Ok(Ok(line)) => {
                    record.bytes_from_peer += line.len() as u64 + 2;
                    return Ok(line);
                }
                Ok(Err(LineError::StillTooLong(_))) => {
                    self.errors += 1;
                    if self.errors >= limits.max_errors {
                        return Err(CommandError::TooManyErrors);
                    }
                }
                Ok(Err(LineError::TooLong(_))) => {
                    self.errors += 1;
                    if self.errors >= limits.max_errors {
                        return Err(CommandError::TooManyErrors);
                    }
                    let refusal = reply::line_too_long().to_bytes();
                    record.bytes_to_peer += refusal.len() as u64;
                    let stream = peer.get_mut();
                    stream.write_all(&refusal).await.map_err(CommandError::Io)?;
                    stream.flush().await.map_err(CommandError::Io)?;
                }
                Ok(Err(LineError::Eof)) => return Err(CommandError::Closed),
                Ok(Err(LineError::Io(e))) => return Err(CommandError::Io(e)),
            }
        }
    }
}
