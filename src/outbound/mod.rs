//! One outbound session: legacy MTA → proxy (plaintext) → MX host (STARTTLS originated here).
//!
//! Phases, in the order bytes flow (relay mode):
//! greet the MTA ourselves → EHLO → MAIL FROM (kept) → first RCPT: `route` the domain, look up
//! its policy, `connect` to the MX hosts in order, `starttls` and verify, then replay MAIL and
//! relay RCPT replies → DATA body relayed with the end-of-data scanner, the MX's final reply
//! passed through → next transaction (the MX session is reused when the route is the same).
//! `envelope` holds the MTA dialogue; nothing of the envelope leaves before the policy allows.

mod connect;
pub mod discover;
mod envelope;
pub mod establish;
pub mod route;
mod starttls;
mod transparent;

use crate::config::{Config, Outbound, OutboundMode};
use crate::log;
use crate::metrics::ListenerMetrics;
use crate::net::client::Origin;
use crate::resolver::Resolve;
use crate::session::{CommandError, SessionRecord, Slot};
use crate::smtp::{reply, LineReader, Reply};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What a session needs from the listener that accepted it (a snapshot: reloads do not change
/// a session halfway).
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub listener: Arc<Outbound>,
    pub metrics: ListenerMetrics,
    pub resolver: Arc<dyn Resolve>,
    pub draining: watch::Receiver<bool>,
    /// Where every MX attempt's TLS result goes before the session's log line.
    pub results: crate::state::results::ResultsLog,
    /// MTA-STS discovery (`None`: `mta_sts = false`, or no usable WebPKI anchors).
    pub sts: Option<Arc<discover::StsDiscovery>>,
    /// Partner certificate inventory and MX TLS memory: every MX attempt goes there.
    pub monitor: crate::state::monitor::Monitor,
    /// The validating resolver for DANE (`None`: no domain wants DANE, or it could not be
    /// built: DANE unavailable).
    pub secure: Option<Arc<dyn crate::resolver::dnssec::ResolveSecure>>,
}

/// Why a session ended early. Variants say who failed: the MTA, the MX, or us.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("MTA closed the connection")]
    MtaClosed,
    #[error("MTA connection failed: {0}")]
    MtaIo(io::Error),
    #[error("MTA sent nothing for {0:?}")]
    MtaIdle(Duration),
    #[error("MTA made too many protocol errors")]
    TooManyErrors,
    #[error("bare LF in a message body")]
    BareLf,
    #[error("MX connection lost: {0}")]
    MxLost(String),
    #[error("proxy is shutting down")]
    Draining,
}

impl OutboundError {
    /// Label for `starttls_proxy_session_errors_total` and the log's `outcome`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MtaClosed => "client_closed",
            Self::MtaIo(_) => "client_error",
            Self::MtaIdle(_) => "idle_timeout",
            Self::TooManyErrors => "too_many_errors",
            Self::BareLf => "bare_lf",
            Self::MxLost(_) => "mx_lost",
            Self::Draining => "shutdown",
        }
    }

    /// The reply the MTA gets before we close; `None` where it cannot read one.
    fn reply(&self, hostname: &str) -> Option<Reply> {
        match self {
            Self::MtaClosed | Self::MtaIo(_) => None,
            Self::MtaIdle(_) => Some(reply::idle_timeout(hostname)),
            Self::TooManyErrors => Some(reply::too_many_errors(hostname)),
            Self::BareLf => Some(reply::bare_lf(hostname)),
            // The MTA never saw a 250 for what the MX did not accept: it keeps its copy.
            Self::MxLost(_) => Some(reply::backend_lost(hostname)),
            Self::Draining => Some(reply::shutting_down(hostname)),
        }
    }
}

impl From<CommandError> for OutboundError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Idle(d) => Self::MtaIdle(d),
            CommandError::TooManyErrors => Self::TooManyErrors,
            CommandError::Closed => Self::MtaClosed,
            CommandError::Io(e) => Self::MtaIo(e),
            CommandError::Draining => Self::Draining,
        }
    }
}

/// What every RCPT needs first, in either mode: a MAIL before it, a domain, and the policy that
/// applies to that domain now. `Err` is the reply the MTA gets instead.
fn rcpt_preconditions(
    ctx: &Context,
    mail: &Option<Vec<u8>>,
    domain: Option<String>,
) -> Result<(Vec<u8>, String, crate::policy::Applied), crate::smtp::Reply> {
    let mail = mail.clone().ok_or_else(crate::smtp::reply::need_mail)?;
    let domain = domain.ok_or_else(crate::smtp::reply::bad_recipient_syntax)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let applied = ctx.config.outbound_policy.lookup(&domain, now);
    Ok((mail, domain, applied))
}

/// Runs one session to its end and records it.
pub async fn run(ctx: Context, mta: TcpStream, origin: Origin, mut slot: Slot) {
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let peer = origin.peer;
    let mut record = SessionRecord::new(&ctx.listener.name, "outbound", peer, unspecified);
    record.client = origin.client;
    let _ = mta.set_nodelay(true);
    let transparent = ctx.listener.mode == OutboundMode::Transparent;
    let original = if transparent {
        Some(transparent::original_destination(&ctx, &mta))
    } else {
        None
    };
    let mut mta = LineReader::new(mta);
    let mut dialogue = envelope::Dialogue::new(&ctx);
    let result = match original {
        None => dialogue.run(&mut mta, &mut record).await,
        Some(Ok(original)) => transparent::session(&ctx, &mut mta, original, &mut record).await,
        Some(Err(refusal)) => {
            log::warn("loop_guard")
                .field("id", &record.id)
                .field("listener", &ctx.listener.name)
                .field("client", origin.client)
                .field("peer", peer)
                .field("reply", refusal.first_text())
                .emit();
            ctx.metrics.policy_rejection("loop_guard");
            record.outcome = "loop_guard";
            let bytes = refusal.to_bytes();
            if mta.get_mut().write_all(&bytes).await.is_ok() {
                record.bytes_to_peer += bytes.len() as u64;
            }
            Ok(())
        }
    };
    let tls = record.tls.is_some() && !record.tls_refused;
    if let Err(e) = &result {
        record.outcome = e.reason();
        record.detail = Some(e.to_string());
        if !matches!(e, OutboundError::MtaClosed) {
            ctx.metrics.session_error(e.reason());
        }
        if let Some(reply) = e.reply(&ctx.config.hostname) {
            let bytes = reply.to_bytes();
            if mta.get_mut().write_all(&bytes).await.is_ok() {
                record.bytes_to_peer += bytes.len() as u64;
            }
        }
    }
    dialogue.close().await;
    let _ = mta.get_mut().shutdown().await;
    ctx.metrics
        .session_ended(tls, record.bytes_from_peer + record.bytes_to_peer);
    slot.release();
    record
        .write_results(&ctx.results, &ctx.config.hostname)
        .await;
    record.emit();
}
