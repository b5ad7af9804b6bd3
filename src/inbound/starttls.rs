//! The TLS handshake after our `220 Ready to start TLS`. It consumes the plaintext reader, so
//! anything the client pipelined after STARTTLS dies here (invariant 5, CVE-2011-0411 class).

use super::{Context, InboundError};
use crate::log;
use crate::session::{SessionRecord, TlsFacts};
use crate::smtp::LineReader;
use crate::tls;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

pub async fn handshake(
    ctx: &Context,
    mut client: LineReader<TcpStream>,
    record: &mut SessionRecord,
) -> Result<TlsStream<TcpStream>, InboundError> {
    let discarded = client.discard_buffered();
    if discarded > 0 {
        log::warn("pipelined_after_starttls")
            .field("id", &record.id)
            .field("listener", &ctx.listener.name)
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
    let accepted = tokio::time::timeout(
        timeout,
        TlsAcceptor::from(server_tls.config.clone()).accept(stream),
    )
    .await;
    let stream = match accepted {
        Ok(Ok(stream)) => stream,
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
    let connection = stream.get_ref().1;
    let facts = TlsFacts {
        version: tls::version_name(connection.protocol_version()),
        cipher: tls::cipher_name(connection.negotiated_cipher_suite().map(|s| s.suite())),
        sni: connection.server_name().map(str::to_string),
        verdict: "none",
    };
    ctx.metrics
        .handshake_ok(facts.version, facts.cipher, started.elapsed());
    record.tls = Some(facts);
    Ok(stream)
}
