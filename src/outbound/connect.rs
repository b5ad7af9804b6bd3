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
    /// The last EHLO reply (`None`: the host only took HELO).
    pub ehlo: Option<Reply>,
    /// The host's greeting (transparent mode relays it to the MTA).
    pub greeting: Reply,
}

impl MxConn {
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
    let mut conn = MxConn {
        reader: LineReader::new(MxStream::Plain(stream)),
        label,
        host: host.to_string(),
        addr,
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

/// An MX session ready for MAIL: TLS as policy demands, or plaintext where it allows.
pub struct Mx {
    pub conn: MxConn,
    /// Route key and policy entry: a later transaction with the same key may reuse the session.
    pub key: String,
    pub facts: Option<crate::session::TlsFacts>,
    /// The failure a relaxation let through, if any.
    pub relaxed: Option<crate::policy::TlsFailure>,
}

/// Why no MX session came about: the reply for the MTA, its reason label, and what the
/// session log shows of the last attempt (its address, and the TLS facts if a handshake was
/// made before policy refused the host).
#[derive(Debug)]
pub struct Refusal {
    pub reply: Reply,
    pub reason: &'static str,
    pub mx: Option<SocketAddr>,
    pub facts: Option<crate::session::TlsFacts>,
}

/// Tries the route's hosts and addresses in order until one gives a session the domain's policy
/// accepts. Nothing of the envelope is sent here: a refusal leaves no trace at the MX but EHLO.
pub async fn establish(
    ctx: &Context,
    route: &super::route::Route,
    applied: &crate::policy::Applied,
    domain: &str,
    key: String,
    id: &str,
) -> Result<Mx, Refusal> {
    use crate::policy::{decide, Decision, Mode};
    let mut refusal: Option<Refusal> = None;
    let mut last_error = MxError::Unreachable(String::from("no address to try"));
    let mut last_addr = None;
    for host in &route.hosts {
        for ip in &host.addrs {
            let addr = SocketAddr::new(*ip, route.port);
            last_addr = Some(addr);
            let conn = match open(ctx, &host.name, addr).await {
                Ok(c) => c,
                Err(e) => {
                    crate::log::warn("mx_unreachable")
                        .field("id", id)
                        .field("domain", domain)
                        .field("reason", e.reason())
                        .field("error", &e)
                        .emit();
                    last_error = e;
                    continue;
                }
            };
            if is_loop(ctx, &conn) {
                // Postfix's "mail for ... loops back to myself": permanent, like its 5.4.6.
                crate::log::warn("mail_loop")
                    .field("id", id)
                    .field("domain", domain)
                    .field("mx", &conn.label)
                    .emit();
                ctx.metrics.policy_rejection("mail_loop");
                conn.quit(ctx).await;
                return Err(Refusal {
                    reply: crate::smtp::reply::mail_loops(domain, &ctx.config.hostname),
                    reason: "mail_loop",
                    mx: Some(addr),
                    facts: None,
                });
            }
            if applied.mode == Mode::None {
                return Ok(Mx {
                    conn,
                    key,
                    facts: None,
                    relaxed: None,
                });
            }
            let label = conn.label.clone();
            let attempt = super::starttls::attempt(ctx, conn, applied, id).await;
            match decide(applied.mode, applied.relaxed, &attempt.offer) {
                Decision::Proceed { relaxed } => {
                    note_relaxed(ctx, applied, domain, &label, relaxed.as_ref(), id);
                    match attempt.conn {
                        Some(conn) => {
                            return Ok(Mx {
                                conn,
                                key,
                                facts: attempt.facts,
                                relaxed,
                            })
                        }
                        None => {
                            last_error = MxError::Unreachable(format!("{label}: connection lost"))
                        }
                    }
                }
                Decision::RetryPlain { relaxed } => {
                    note_relaxed(ctx, applied, domain, &label, relaxed.as_ref(), id);
                    crate::log::warn("tls_fallback_plaintext")
                        .field("id", id)
                        .field("domain", domain)
                        .field("mx", &label)
                        .field("detail", format!("{:?}", attempt.offer))
                        .emit();
                    match open(ctx, &host.name, addr).await {
                        Ok(conn) => {
                            return Ok(Mx {
                                conn,
                                key,
                                facts: None,
                                relaxed,
                            })
                        }
                        Err(e) => last_error = e,
                    }
                }
                Decision::Refuse(failure) => {
                    ctx.metrics.policy_rejection(failure.reason());
                    let reply = refusal_reply(&failure, domain, &label);
                    crate::log::warn("policy_refused")
                        .field("id", id)
                        .field("listener", &ctx.listener.name)
                        .field("domain", domain)
                        .field("policy", applied.mode)
                        .field("mx", &label)
                        .field("reason", failure.reason())
                        .field("reply", summary(&reply))
                        .emit();
                    if let Some(conn) = attempt.conn {
                        conn.quit(ctx).await;
                    }
                    refusal = Some(Refusal {
                        reply,
                        reason: failure.reason(),
                        mx: Some(addr),
                        facts: attempt.facts,
                    });
                }
            }
        }
    }
    Err(refusal.unwrap_or_else(|| Refusal {
        reply: last_error.reply(domain),
        reason: last_error.reason(),
        mx: last_addr,
        facts: None,
    }))
}

/// The MX is this proxy: one of our listeners, or a host greeting with our own name.
fn is_loop(ctx: &Context, conn: &MxConn) -> bool {
    let ours = ctx
        .config
        .outbound
        .iter()
        .map(|l| l.listen)
        .chain(ctx.config.inbound.iter().map(|l| l.listen))
        .any(|listen| {
            listen.port() == conn.addr.port()
                && (listen.ip() == conn.addr.ip()
                    || (listen.ip().is_unspecified() && conn.addr.ip().is_loopback()))
        });
    let name = conn
        .ehlo
        .as_ref()
        .and_then(|r| r.lines.first())
        .map(|l| l.split(|&b| b == b' ').next().unwrap_or_default())
        .unwrap_or_default();
    ours || name.eq_ignore_ascii_case(ctx.config.hostname.as_bytes())
}

pub fn refusal_reply(failure: &crate::policy::TlsFailure, domain: &str, label: &str) -> Reply {
    use crate::policy::TlsFailure as F;
    use crate::smtp::reply;
    match failure {
        F::NotOffered => reply::tls_not_offered(domain, label),
        F::Refused(r) => reply::starttls_refused(domain, label, r),
        F::Injected => reply::tls_failed(
            domain,
            label,
            "response injection (data after its 220 to STARTTLS)",
        ),
        F::Handshake(e) => reply::tls_failed(domain, label, &format!("Cannot start TLS: {e}")),
        F::Certificate(v) => reply::tls_failed(
            domain,
            label,
            &format!("Server certificate not verified: {}", v.describe()),
        ),
    }
}

pub fn note_relaxed(
    ctx: &Context,
    applied: &crate::policy::Applied,
    domain: &str,
    label: &str,
    relaxed: Option<&crate::policy::TlsFailure>,
    id: &str,
) {
    let Some(failure) = relaxed else { return };
    crate::metrics::outbound_relaxed(&applied.label, failure.reason());
    crate::log::warn("policy_relaxed")
        .field("id", id)
        .field("listener", &ctx.listener.name)
        .field("domain", domain)
        .field("policy", applied.mode)
        .field("mx", label)
        .field("reason", failure.reason())
        .field(
            "relax_until",
            applied
                .relax_until
                .map_or("-".to_string(), crate::log::format_unix),
        )
        .emit();
}
