//! TLS reports partners send to our report address (`tls_reporting.receive`): the proxy is
//! that address's final destination. The message is read within [`MAX_MESSAGE_BYTES`], kept
//! under `state_directory/received/` (fsynced) and only then answered 250: never a 250 for what
//! is not on disk. It is parsed after that, for the log and the metrics; a report that does not
//! parse is kept all the same (the sender cannot fix it, an operator may want to see it).

use super::message::read_client;
use super::{Context, InboundError};
use crate::report::received::{self, MAX_MESSAGE_BYTES};
use crate::session::SessionRecord;
use crate::smtp::data::{EndOfData, Scan};
use crate::smtp::{reply, LineReader, Reply};
use crate::state::received::{Form, ReceivedStore};
use tokio::io::{AsyncRead, AsyncWrite};

/// A transaction whose recipients are report addresses.
#[derive(Debug, Default)]
pub struct Intake {
    pub recipients: Vec<String>,
    /// BDAT chunks so far (`None` past the size bound: the rest is read and dropped).
    chunks: Option<Vec<u8>>,
}

impl Intake {
    pub fn new() -> Intake {
        Intake {
            recipients: Vec::new(),
            chunks: Some(Vec::new()),
        }
    }
}

/// Reads a DATA body (after our 354) up to `CRLF.CRLF`, keeps it, and returns the final reply.
pub async fn data<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &mut LineReader<S>,
    record: &mut SessionRecord,
    intake: &Intake,
) -> Result<Reply, InboundError> {
    let mut scanner = EndOfData::default();
    let mut body: Option<Vec<u8>> = Some(Vec::new());
    loop {
        let chunk = read_client(ctx, client).await?;
        let (taken, end) = match scanner.scan(chunk) {
            Scan::Body => (chunk.len(), false),
            Scan::End(n) => (n, true),
            Scan::BareLf(_) => return Err(InboundError::BareLf),
        };
        if let Some(b) = &mut body {
            b.extend_from_slice(&chunk[..taken]);
            // The terminator's five bytes are not message.
            if b.len() > MAX_MESSAGE_BYTES + 5 {
                body = None;
            }
        }
        client.consume(taken);
        record.bytes_from_peer += taken as u64;
        if end {
            break;
        }
    }
    let Some(mut body) = body else {
        return Ok(refuse_too_large(ctx, record));
    };
    body.truncate(body.len().saturating_sub(3)); // ".\r\n": the CRLF before it ends the message
    Ok(keep(ctx, record, intake, &unstuff(&body)))
}

/// Reads one BDAT chunk of `size` octets (RFC 3030) into the intake; the last one is kept.
pub async fn chunk<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &mut LineReader<S>,
    record: &mut SessionRecord,
    intake: &mut Intake,
    size: u64,
    last: bool,
) -> Result<Reply, InboundError> {
    let mut left = size;
    while left > 0 {
        let chunk = read_client(ctx, client).await?;
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if let Some(b) = &mut intake.chunks {
            b.extend_from_slice(&chunk[..n]);
            if b.len() > MAX_MESSAGE_BYTES {
                intake.chunks = None;
            }
        }
        client.consume(n);
        record.bytes_from_peer += n as u64;
        left -= n as u64;
    }
    if !last {
        return Ok(reply::report_chunk_ok(size));
    }
    match intake.chunks.take() {
        Some(message) => Ok(keep(ctx, record, intake, &message)),
        None => Ok(refuse_too_large(ctx, record)),
    }
}

fn refuse_too_large(ctx: &Context, record: &SessionRecord) -> Reply {
    crate::metrics::tls_report_received("too_large");
    crate::log::warn("tls_report_refused")
        .field("id", &record.id)
        .field("listener", &ctx.listener.name)
        .field("peer", record.peer)
        .field("reason", "too_large")
        .emit();
    reply::report_too_large(MAX_MESSAGE_BYTES)
}

/// Stores `message` with our trace header in front, then parses it for the log and metrics.
fn keep(ctx: &Context, record: &SessionRecord, intake: &Intake, message: &[u8]) -> Reply {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let tls = record.tls.as_ref().map_or("no TLS".to_string(), |t| {
        format!("{} {}", t.version, t.cipher)
    });
    let mut stored = format!(
        "Received: from [{}] by {} (starttls-proxy) id {} for <{}> ({tls}); {now}\r\n",
        record.peer.ip(),
        ctx.config.hostname,
        record.id,
        intake.recipients.join(">, <"),
    )
    .into_bytes();
    stored.extend_from_slice(message);
    let dir = ctx.config.state.directory.join("received");
    let kept = ReceivedStore::open(&dir).and_then(|s| s.store(&stored, Form::Message));
    let path = match kept {
        Ok((path, _)) => path,
        Err(e) => {
            crate::log::warn("tls_report_not_stored")
                .field("id", &record.id)
                .field("dir", dir.display())
                .field("error", e)
                .emit();
            return reply::report_not_stored();
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match received::parse_message(message) {
        Ok(report) => {
            crate::metrics::tls_report_received("ok");
            let mut failed = 0;
            for p in &report.policies {
                for f in &p.failure_details {
                    failed += f.failed_session_count;
                    crate::metrics::tls_report_failures_received(
                        &report.organization_name,
                        f.result_type.as_str(),
                        f.failed_session_count,
                    );
                }
            }
            let event = match failed {
                0 => crate::log::info("tls_report_received"),
                _ => crate::log::warn("tls_report_received"),
            };
            event
                .field("id", &record.id)
                .field("organization", &report.organization_name)
                .field("report_id", &report.report_id)
                .field("start", &report.date_range.start)
                .field("failed_sessions", failed)
                .field("file", &name)
                .emit();
        }
        Err(e) => {
            crate::metrics::tls_report_received(e.reason());
            crate::log::warn("tls_report_unreadable")
                .field("id", &record.id)
                .field("peer", record.peer)
                .field("file", &name)
                .field("error", e)
                .emit();
        }
    }
    reply::report_received(&name)
}

/// RFC 5321 §4.5.2: a line that starts with a dot lost one.
fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}
