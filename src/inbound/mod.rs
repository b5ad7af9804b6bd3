//! One inbound session: internet client → proxy (STARTTLS terminated here) → plaintext backend.
//!
//! Phases, in the order bytes flow:
//! connect backend → relay greeting → plaintext dialogue → STARTTLS → TLS dialogue → splice.
//! The dialogues stop parsing at the first command that starts a mail transaction, unless
//! `require_tls*` obliges the proxy to inspect a plaintext envelope.

mod dialogue;
mod intake;
mod message;
mod starttls;
pub mod xclient;

use crate::config::{BackendTarget, Config, Inbound};
use crate::metrics::ListenerMetrics;
use crate::net::backend::{self, ClientAddress};
use crate::net::client::{canonical, Origin};
use crate::net::original_dst;
use crate::policy::{PolicyType, ResultType};
use crate::session::{AttemptResult, CommandError, SessionRecord, Slot};
use crate::smtp::{reply, LineReader, Reply};
use crate::splice::{self, RelayEnd, RelayOutcome};
use crate::state::results::{Outcome, ResultsLog};
use dialogue::{Dialogue, Step};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Called with the session record once TLS is up (the demo's sink uses it to print TLS facts).
pub type Observer = Arc<dyn Fn(&SessionRecord) + Send + Sync>;

/// What a session needs from the listener that accepted it; a snapshot, so a reload does not
/// change a session halfway.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub listener: Arc<Inbound>,
    pub metrics: ListenerMetrics,
    pub draining: watch::Receiver<bool>,
    pub observer: Option<Observer>,
    /// Where every session's TLS result goes before its log line.
    pub results: ResultsLog,
}

/// Why a session ended early. Variants say who failed: the client, the backend, TLS, or us.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("client closed the connection")]
    ClientClosed,
    #[error("client connection failed: {0}")]
    ClientIo(io::Error),
    #[error("client sent nothing for {0:?}")]
    ClientIdle(Duration),
    #[error("client made too many protocol errors")]
    TooManyErrors,
    #[error("bare LF in a message body")]
    BareLf,
    #[error("backend {0} unreachable: {1}")]
    BackendUnreachable(SocketAddr, String),
    #[error("backend connection lost: {0}")]
    BackendLost(String),
    #[error("backend broke protocol: {0}")]
    BackendProtocol(String),
    #[error("TLS handshake failed ({0}): {1}")]
    Handshake(&'static str, String),
    #[error("proxy is shutting down")]
    Draining,
    /// Interception: the connection was addressed to one of our own listeners.
    #[error("original destination {0} is this proxy (loop guard)")]
    LoopGuard(SocketAddr),
}

impl InboundError {
    /// Label for `starttls_proxy_session_errors_total` and the log's `outcome`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::ClientIo(_) => "client_error",
            Self::ClientIdle(_) => "idle_timeout",
            Self::TooManyErrors => "too_many_errors",
            Self::BareLf => "bare_lf",
            Self::BackendUnreachable(..) => "backend_unreachable",
            Self::BackendLost(_) => "backend_lost",
            Self::BackendProtocol(_) => "backend_protocol",
            Self::Handshake(..) => "tls_handshake",
            Self::Draining => "shutdown",
            Self::LoopGuard(_) => "loop_guard",
        }
    }

    /// The reply the client gets before we close; `None` where the client cannot read one.
    fn reply(&self, hostname: &str) -> Option<Reply> {
        match self {
            Self::ClientClosed | Self::ClientIo(_) | Self::Handshake(..) => None,
            Self::ClientIdle(_) => Some(reply::idle_timeout(hostname)),
            Self::TooManyErrors => Some(reply::too_many_errors(hostname)),
            Self::BareLf => Some(reply::bare_lf(hostname)),
            // RFC 5321 §3.8: 421 when the service must close; the client keeps its message.
            Self::BackendUnreachable(..) => Some(reply::backend_unavailable(hostname)),
            Self::BackendLost(_) | Self::BackendProtocol(_) => Some(reply::backend_lost(hostname)),
            Self::Draining => Some(reply::shutting_down(hostname)),
            // Relaying it would connect to ourselves, again and again.
            Self::LoopGuard(_) => Some(reply::loop_detected(hostname)),
        }
    }
}

impl From<CommandError> for InboundError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Idle(d) => Self::ClientIdle(d),
            CommandError::TooManyErrors => Self::TooManyErrors,
            CommandError::Closed => Self::ClientClosed,
            CommandError::Io(e) => Self::ClientIo(e),
            CommandError::Draining => Self::Draining,
        }
    }
}

/// Runs one session to its end and records it.
pub async fn run(ctx: Context, client: TcpStream, origin: Origin, mut slot: Slot) {
    let mut record = SessionRecord::new(
        &ctx.listener.name,
        "inbound",
        origin.peer,
        ctx.listener.backend,
    );
    record.client = origin.client;
    // XCLIENT is decided at the client's first EHLO; the other modes hold from the connect.
    record.client_address = match ctx.listener.client_address {
        ClientAddress::Xclient => None,
        mode => Some(mode.as_str()),
    };
    record.policy = if ctx.listener.require_tls {
        "require_tls"
    } else if ctx.listener.enforces_tls() {
        "require_tls_listed"
    } else {
        "opportunistic"
    };
    let result = session(&ctx, client, &origin, &mut record).await;
    if let Err(e) = &result {
        record.outcome = e.reason();
        record.detail = Some(e.to_string());
        // A client that hangs up early is normal SMTP life, not an error worth alerting on.
        if !matches!(e, InboundError::ClientClosed) {
            ctx.metrics.session_error(e.reason());
        }
    }
    ctx.metrics.session_ended(
        record.tls.is_some(),
        record.bytes_from_peer + record.bytes_to_peer,
    );
    slot.release();
    // One result per accepted connection: a client that stayed in plaintext did not use the
    // STARTTLS we offered (the figure coverage is made of).
    record.results.push(AttemptResult {
        domain: record.mail_from_domain.clone(),
        mx_host: None,
        remote: record.client,
        local: None,
        tls: record.tls.clone(),
        outcome: match record.tls {
            Some(_) => Outcome::Success,
            None => Outcome::Failure(ResultType::StarttlsNotSupported),
        },
        policy_type: PolicyType::NoPolicyFound,
        policy_strings: Vec::new(),
    });
    record
        .write_results(&ctx.results, &ctx.config.hostname)
        .await;
    record.emit();
}

async fn session(
    ctx: &Context,
    client: TcpStream,
    origin: &Origin,
    record: &mut SessionRecord,
) -> Result<(), InboundError> {
    let _ = client.set_nodelay(true);
    let connected = connect_backend(ctx, &client, origin).await;
    let mut client = LineReader::new(client);
    let backend = match connected {
        Ok((b, addr)) => {
            record.next_hop = addr;
            b
        }
        Err(e) => {
            if let InboundError::LoopGuard(to) = e {
                ctx.metrics.policy_rejection("loop_guard");
                crate::log::warn("loop_guard")
                    .field("id", &record.id)
                    .field("listener", &ctx.listener.name)
                    .field("client", record.client)
                    .field("peer", record.peer)
                    .field("original", to)
                    .emit();
            }
            return refuse(&mut client, e, ctx, record).await;
        }
    };
    // Only an observer (the demo) reads it: no getsockname(2) per session otherwise.
    if ctx.observer.is_some() {
        record.next_hop_local = backend.local_addr().ok();
    }
    let mut backend = LineReader::new(backend);

    let step = match Dialogue::new(ctx, false)
        .greet_and_run(&mut client, &mut backend, record)
        .await
    {
        Ok(step) => step,
        Err(e) => return refuse(&mut client, e, ctx, record).await,
    };
    match step {
        Step::Quit => Ok(()),
        Step::Splice(pending) => {
            Box::pin(splice_plain(ctx, client, backend, pending, record)).await
        }
        Step::StartTls => {
            // Boxed, like the relays: a task is as big as its largest phase, and an idle session
            // should not keep the handshake's or the relay's state allocated.
            let tls = Box::pin(starttls::handshake(ctx, client, record)).await?;
            let mut client = LineReader::new(tls);
            if let Some(observer) = &ctx.observer {
                observer(record);
            }
            match Dialogue::new(ctx, true)
                .run(&mut client, &mut backend, record)
                .await
            {
                Ok(Step::Splice(pending)) => {
                    Box::pin(splice(ctx, client, backend, pending, record)).await
                }
                Ok(_) => Ok(()),
                Err(e) => refuse(&mut client, e, ctx, record).await,
            }
        }
    }
}

/// Connects to the backend (the configured one, or where an intercepted connection was
/// going), telling it who the client is as `client_address` says.
async fn connect_backend(
    ctx: &Context,
    client: &TcpStream,
    origin: &Origin,
) -> Result<(TcpStream, SocketAddr), InboundError> {
    let listener = &ctx.listener;
    // Only interception and a PROXY header need it: no getsockname(2) per session otherwise.
    let local = match (listener.backend_target, listener.client_address) {
        (BackendTarget::OriginalDestination, _)
        | (_, ClientAddress::ProxyV1 | ClientAddress::ProxyV2) => {
            client.local_addr().ok().map(canonical)
        }
        _ => None,
    };
    let original;
    let addrs = match listener.backend_target {
        BackendTarget::Configured => listener.backend_addrs.as_slice(),
        BackendTarget::OriginalDestination => {
            // TPROXY leaves the address the client connected to as the socket's own.
            let Some(to) = local else {
                return Err(InboundError::BackendUnreachable(
                    listener.backend,
                    "no original destination".into(),
                ));
            };
            if original_dst::loops_back(&ctx.config, to) {
                return Err(InboundError::LoopGuard(to));
            }
            original = [to];
            &original[..]
        }
    };
    let reached = origin.destination().or(local).unwrap_or(listener.listen);
    backend::connect(
        addrs,
        ctx.config.limits.connect_timeout,
        listener.client_address,
        origin,
        reached,
    )
    .await
    .map_err(|u| InboundError::BackendUnreachable(u.addr, u.why))
}

/// Sends the error's reply (if the client can take one), closes, and passes the error on.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut LineReader<S>,
    err: InboundError,
    ctx: &Context,
    record: &mut SessionRecord,
) -> Result<(), InboundError> {
    if let Some(reply) = err.reply(&ctx.config.hostname) {
        let bytes = reply.to_bytes();
        let stream = client.get_mut();
        if stream.write_all(&bytes).await.is_ok() {
            record.bytes_to_peer += bytes.len() as u64;
        }
        let _ = stream.shutdown().await;
    }
    Err(err)
}

/// Nothing is left to decide on a plaintext session: splice(2) the two sockets.
async fn splice_plain(
    ctx: &Context,
    client: LineReader<TcpStream>,
    backend: LineReader<TcpStream>,
    pending: Vec<u8>,
    record: &mut SessionRecord,
) -> Result<(), InboundError> {
    let (mut client, to_backend) = take_with_pending(client, pending);
    let (mut backend, to_client) = backend.into_parts();
    let idle = ctx.config.limits.idle_timeout;
    let outcome = splice::relay_tcp(&mut client, to_backend, &mut backend, to_client, idle).await;
    finish_relay(ctx, client, outcome, record).await
}

/// Nothing is left to decide inside TLS: relay decrypted bytes until both sides close.
async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: LineReader<S>,
    backend: LineReader<TcpStream>,
    pending: Vec<u8>,
    record: &mut SessionRecord,
) -> Result<(), InboundError> {
    let (mut client, to_backend) = take_with_pending(client, pending);
    let (mut backend, to_client) = backend.into_parts();
    let idle = ctx.config.limits.idle_timeout;
    let outcome = splice::relay(&mut client, to_backend, &mut backend, to_client, idle).await;
    finish_relay(ctx, client, outcome, record).await
}

/// The stream, and what the backend must get first: the command that ended the dialogue and
/// whatever the client pipelined after it.
fn take_with_pending<S: AsyncRead + Unpin>(
    reader: LineReader<S>,
    mut pending: Vec<u8>,
) -> (S, Vec<u8>) {
    let (stream, rest) = reader.into_parts();
    pending.extend_from_slice(&rest);
    (stream, pending)
}

async fn finish_relay<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: S,
    outcome: RelayOutcome,
    record: &mut SessionRecord,
) -> Result<(), InboundError> {
    record.bytes_from_peer += outcome.client_to_server;
    record.bytes_to_peer += outcome.server_to_client;
    match outcome.end {
        RelayEnd::Closed => Ok(()),
        RelayEnd::IdleTimeout => {
            let idle = ctx.config.limits.idle_timeout;
            refuse(
                &mut LineReader::new(client),
                InboundError::ClientIdle(idle),
                ctx,
                record,
            )
            .await
        }
        RelayEnd::ClientError(e) => Err(InboundError::ClientIo(e)),
        // Mid-stream: the client cannot tell a reply from message text, so it gets the close;
        // it never saw a 250 for what the backend did not accept, and keeps its copy.
        RelayEnd::ServerError(e) => Err(InboundError::BackendLost(e.to_string())),
    }
}
