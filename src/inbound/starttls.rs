//! The TLS handshake after our `220 Ready to start TLS`. It consumes the plaintext reader, so
//! anything the client pipelined after STARTTLS dies here (invariant 5, CVE-2011-0411 class).

use super::{Context, InboundError};
use crate::log;
use crate::session::{SessionRecord, TlsFacts};
use crate::smtp::LineReader;
use crate::tls;
use crate::tls_stream::{self, TlsServerStream};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub async fn handshake(
    ctx: &Context,
    mut client: LineReader<TcpStream>,
    record: &mut SessionRecord,
) -> Result<TlsServerStream, InboundError> {
    let discarded = client.discard_buffered();
    if discarded > 0 {
        log::warn("pipelined_after_starttls")
            .field("id", &record.id)
            .field("listener", &ctx.listener.name)
            .field("client", record.client)
            .field("peer", record.peer)
            .field("discarded_bytes", discarded)
            .emit();
        ctx.metrics.policy_rejection("pipelined_after_starttls");
    }
    let (stream, _) = client.into_parts();
    let Some(server_tls) = ctx.config.tls.as_ref() else {
        return Err(InboundError::Handshake(
            "no_certificate",
            "no certificate configured".into(),
        ));
    };
    let started = Instant::now();
    let timeout = ctx.config.limits.handshake_timeout;
    let accepted =
        tokio::time::timeout(timeout, tls_stream::accept(stream, &server_tls.config)).await;
    let (stream, negotiated) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            let reason = tls::handshake_failure_reason(&e);
            ctx.metrics.handshake_failed(reason, started.elapsed());
            return Err(InboundError::Handshake(reason, e.to_string()));
        }
        Err(_) => {
            ctx.metrics.handshake_failed("timeout", started.elapsed());
            return Err(InboundError::Handshake(
                "timeout",
                format!("no handshake within {timeout:?}"),
            ));
        }
    };
    let facts = TlsFacts {
        version: tls::version_name(negotiated.version),
        cipher: tls::cipher_name(negotiated.suite),
        sni: negotiated.sni,
        verdict: tls::Verdict::NotAsked,
    };
    ctx.metrics
        .handshake_ok(facts.version, facts.cipher, started.elapsed());
    record.tls = Some(facts);
    Ok(stream)
}
