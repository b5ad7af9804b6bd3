//! The byte relay once nothing is left to decide: both directions copied until both ends close,
//! with an idle timeout and byte counts that survive errors.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const BUFFER: usize = 16 * 1024;

/// Bytes moved each way and how the relay ended.
#[derive(Debug)]
pub struct RelayOutcome {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub end: RelayEnd,
}

#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed (the normal end after QUIT).
    Closed,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the server failed.
    ServerError(io::Error),
}

/// Relays `client` ↔ `server`. `client_prefix` (already read from the client) is sent to the
/// server first, `server_prefix` to the client. Returns when both directions have ended.
pub async fn relay<C, S>(
    client: C,
    client_prefix: Vec<u8>,
    server: S,
    server_prefix: Vec<u8>,
    idle: Duration,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let start = Instant::now();
    let last_activity = AtomicU64::new(0);
    let (client_r, client_w) = tokio::io::split(client);
    let (server_r, server_w) = tokio::io::split(server);
    let upstream = pump(
        client_r,
        server_w,
        client_prefix,
        &up,
        &last_activity,
        start,
    );
    let downstream = pump(
        server_r,
        client_w,
        server_prefix,
        &down,
        &last_activity,
        start,
    );
    tokio::pin!(upstream, downstream);
    let watchdog = async {
        loop {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let deadline = start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::pin!(watchdog);

    let (mut up_done, mut down_done) = (false, false);
    let end = loop {
        tokio::select! {
            r = &mut upstream, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(PumpError::Read(e)) => break RelayEnd::ClientError(e),
                Err(PumpError::Write(e)) => break RelayEnd::ServerError(e),
            },
            r = &mut downstream, if !down_done => match r {
                Ok(()) => down_done = true,
                Err(PumpError::Read(e)) => break RelayEnd::ServerError(e),
                Err(PumpError::Write(e)) => break RelayEnd::ClientError(e),
            },
            _ = &mut watchdog => break RelayEnd::IdleTimeout,
        }
        if up_done && down_done {
            break RelayEnd::Closed;
        }
    };
    RelayOutcome {
        client_to_server: up.load(Ordering::Relaxed),
        server_to_client: down.load(Ordering::Relaxed),
        end,
    }
}

enum PumpError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies one direction until EOF, then half-closes the writer so the peer sees the end too.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    prefix: Vec<u8>,
    counter: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !prefix.is_empty() {
        to.write_all(&prefix).await.map_err(PumpError::Write)?;
        counter.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    drop(prefix);
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(n) => n,
            // Most SMTP clients hang up after QUIT without TLS close_notify; that is an end,
            // not a failure (nothing after QUIT can be truncated).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(PumpError::Read(e)),
        };
        if n == 0 {
            // The peer may already be gone; its absence is not our error.
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await.map_err(PumpError::Write)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
