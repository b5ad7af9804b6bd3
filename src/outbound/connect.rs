//! One connection to an MX host: TCP connect, greeting, EHLO (HELO for hosts that know no
//! better). The stream type covers both the plaintext and the TLS phase.

use super::Context;
use crate::smtp::{LineReader, Reply};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The connection to an MX host, before or after STARTTLS.
pub enum MxStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for MxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MxStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MxStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MxStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MxStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MxStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MxStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MxStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MxStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connected MX host after EHLO.
pub struct MxConn {
    pub reader: LineReader<MxStream>,
    /// `mx1.example[192.0.2.1]`, Postfix's way of naming a host in replies and logs.
    pub label: String,
    /// The host name (SNI, `verify`).
    pub host: String,
    pub addr: SocketAddr,
    /// Our address on this connection (`sending-mta-ip` in TLS reports).
    pub local: Option<SocketAddr>,
    /// The last EHLO reply (`None`: the host only took HELO).
    pub ehlo: Option<Reply>,
    /// The host's greeting (transparent mode relays it to the MTA).
    pub greeting: Reply,
}

/// Who a connection is with, for replies, logs and results; outlives a failed handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxPeer {
    /// `host[ip]`.
    pub label: String,
    pub host: String,
    pub addr: SocketAddr,
    pub local: Option<SocketAddr>,
}

impl MxConn {
    pub fn peer(&self) -> MxPeer {
        MxPeer {
            label: self.label.clone(),
            host: self.host.clone(),
            addr: self.addr,
            local: self.local,
        }
    }

    pub fn offers(&self, keyword: &str) -> bool {
        self.ehlo.as_ref().is_some_and(|r| {
            r.lines.iter().skip(1).any(|line| {
                let word_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
                line[..word_end].eq_ignore_ascii_case(keyword.as_bytes())
            })
        })
    }

    /// Sends one command line and reads the reply, with the idle timeout.
    pub async fn command(&mut self, ctx: &Context, line: &[u8]) -> Result<Reply, String> {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.write(ctx, &bytes).await?;
        self.read_reply(ctx).await
    }

    pub async fn write(&mut self, ctx: &Context, bytes: &[u8]) -> Result<(), String> {
        let idle = ctx.config.limits.idle_timeout;
        match tokio::time::timeout(idle, self.reader.get_mut().write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: write failed: {e}", self.label)),
            Err(_) => Err(format!("{}: write timed out", self.label)),
        }
    }

    pub async fn read_reply(&mut self, ctx: &Context) -> Result<Reply, String> {
        let idle = ctx.config.limits.idle_timeout;
        let max = ctx.config.limits.max_line_length;
        match tokio::time::timeout(idle, Reply::read(&mut self.reader, max)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(format!("{}: {e}", self.label)),
            Err(_) => Err(format!("{}: no reply within {idle:?}", self.label)),
        }
    }

    /// EHLO, or HELO when EHLO is refused as unknown (RFC 5321 §4.1.4, very old MTAs).
    pub async fn hello(&mut self, ctx: &Context) -> Result<(), MxError> {
        let ehlo = format!("EHLO {}", ctx.config.hostname);
        let reply = self
            .command(ctx, ehlo.as_bytes())
            .await
            .map_err(MxError::Unreachable)?;
        if reply.code == 250 {
            self.ehlo = Some(reply);
            return Ok(());
        }
        if matches!(reply.code, 500 | 502) {
            let helo = format!("HELO {}", ctx.config.hostname);
            let reply = self
                .command(ctx, helo.as_bytes())
                .await
                .map_err(MxError::Unreachable)?;
            if reply.code == 250 {
                self.ehlo = None;
                return Ok(());
            }
            return Err(self.rejected("in reply to HELO", &reply));
        }
        Err(self.rejected("in reply to EHLO", &reply))
    }

    fn rejected(&self, stage: &'static str, reply: &Reply) -> MxError {
        MxError::Rejected {
            host: format!("{}:{}", self.label, self.addr.port()),
            stage,
            code: reply.code,
            said: summary(reply),
        }
    }

    /// QUIT, politely and briefly; errors do not matter any more.
    pub async fn quit(mut self, ctx: &Context) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.command(ctx, b"QUIT").await;
            let _ = self.reader.get_mut().shutdown().await;
        })
        .await;
    }
}

/// Why one MX address gave no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxError {
    /// No connection, the connection broke, or the host said nothing in time.
    Unreachable(String),
    /// The host answered and would not talk: it rejected our connection in its greeting, or
    /// our EHLO/HELO. Postfix calls this "refused to talk to me" and defers (a 5xx greeting is
    /// a soft error, `smtp_skip_5xx_greeting`); the MTA must be told what the host said.
    Rejected {
        /// `mx.example[192.0.2.1]:25`.
        host: String,
        /// `greeting`, `in reply to EHLO`, `in reply to HELO`.
        stage: &'static str,
        code: u16,
        /// The host's reply on one line: `554 5.7.1 go away`.
        said: String,
    },
}

impl std::fmt::Display for MxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MxError::Unreachable(why) => f.write_str(why),
            MxError::Rejected {
                host, stage, said, ..
            } => write!(f, "{host} said: {said} ({stage})"),
        }
    }
}

impl MxError {
    /// Label for the session log's `outcome`.
    pub fn reason(&self) -> &'static str {
        match self {
            MxError::Unreachable(_) => "mx_unreachable",
            MxError::Rejected { .. } => "mx_rejected",
        }
    }

    /// The deferral the MTA gets when this was the last address tried (relay mode: `451`; the
    /// MTA keeps the message and retries, as Postfix does when every MX failed).
    pub fn reply(&self, domain: &str) -> Reply {
        match self {
            MxError::Unreachable(why) => crate::smtp::reply::no_mx_reachable(domain, why),
            MxError::Rejected {
                host, stage, said, ..
            } => crate::smtp::reply::mx_rejected(451, host, said, stage),
        }
    }
}

/// `250 text` on one line, for replies quoted inside ours.
pub fn summary(reply: &Reply) -> String {
    format!("{} {}", reply.code, reply.first_text())
}

/// Connects to `addr`, reads the greeting and says EHLO. A host that rejects either is sent
/// `QUIT` (RFC 5321 §3.1, §4.1.1.10) unless its reply was `421` (it is closing already).
pub async fn open(ctx: &Context, host: &str, addr: SocketAddr) -> Result<MxConn, MxError> {
    let label = format!("{host}[{}]", addr.ip());
    let timeout = ctx.config.limits.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(MxError::Unreachable(format!(
                "connect to {label}:{}: {e}",
                addr.port()
            )))
        }
        Err(_) => {
            return Err(MxError::Unreachable(format!(
                "connect to {label}:{}: timed out after {timeout:?}",
                addr.port()
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let mut conn = MxConn {
        reader: LineReader::new(MxStream::Plain(stream)),
        label,
        host: host.to_string(),
        addr,
        local,
        ehlo: None,
        greeting: Reply::new(220, ""),
    };
    let greeting = conn.read_reply(ctx).await.map_err(MxError::Unreachable)?;
    let result = match greeting.code {
        220 => {
            conn.greeting = greeting;
            conn.hello(ctx).await
        }
        _ => Err(conn.rejected("greeting", &greeting)),
    };
    match result {
        Ok(()) => Ok(conn),
        Err(e) => {
            if matches!(e, MxError::Rejected { code, .. } if code != 421) {
                conn.quit(ctx).await;
            }
            Err(e)
        }
    }
}
