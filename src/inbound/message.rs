//! Message bodies of inspected plaintext sessions: the proxy must find where each ends so it can
//! check the next transaction's envelope. Memory stays bounded: bytes go through as they come.

use super::{Context, InboundError};
use crate::smtp::data::{EndOfData, Scan};
use crate::smtp::{LineError, LineReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Relays a DATA body up to and including `CRLF.CRLF`; returns the bytes relayed. Bytes the
/// client pipelined after the terminator stay in `client` for the dialogue.
pub async fn relay_data<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &mut LineReader<S>,
    backend: &mut LineReader<TcpStream>,
) -> Result<u64, InboundError> {
    let mut scanner = EndOfData::default();
    let mut relayed = 0u64;
    loop {
        let chunk = read_client(ctx, client).await?;
        match scanner.scan(chunk) {
            Scan::Body => {
                let n = chunk.len();
                write_backend(backend, chunk).await?;
                client.consume(n);
                relayed += n as u64;
            }
            Scan::End(n) => {
                write_backend(backend, &chunk[..n]).await?;
                client.consume(n);
                return Ok(relayed + n as u64);
            }
            // The backend has a partial message without its terminator: when we close, it
            // discards it, and the client, told 421, keeps its copy.
            Scan::BareLf(_) => return Err(InboundError::BareLf),
        }
    }
}

/// Relays exactly `size` octets of a BDAT chunk (RFC 3030); returns the bytes relayed.
pub async fn relay_chunk<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &mut LineReader<S>,
    backend: &mut LineReader<TcpStream>,
    size: u64,
) -> Result<u64, InboundError> {
    let mut left = size;
    while left > 0 {
        let chunk = read_client(ctx, client).await?;
        let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        write_backend(backend, &chunk[..n]).await?;
        client.consume(n);
        left -= n as u64;
    }
    Ok(size)
}

/// What the client sent next, within the idle timeout (the body readers' one read).
pub(super) async fn read_client<'c, S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Context,
    client: &'c mut LineReader<S>,
) -> Result<&'c [u8], InboundError> {
    let idle = ctx.config.limits.idle_timeout;
    match tokio::time::timeout(idle, client.fill_buf()).await {
        Err(_) => Err(InboundError::ClientIdle(idle)),
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(LineError::Io(e))) => Err(InboundError::ClientIo(e)),
        Ok(Err(_)) => Err(InboundError::ClientClosed),
    }
}

async fn write_backend(
    backend: &mut LineReader<TcpStream>,
    bytes: &[u8],
) -> Result<(), InboundError> {
    backend
        .get_mut()
        .write_all(bytes)
        .await
        .map_err(|e| InboundError::BackendLost(e.to_string()))
}
