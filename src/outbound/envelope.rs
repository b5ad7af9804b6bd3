//! The MTA dialogue in relay mode. The proxy answers EHLO and MAIL itself, opens (or reuses) an
//! MX session at the first RCPT of a transaction, and from then on relays the MX's own replies:
//! the `250` after DATA is always the MX's (invariant 1).

use super::connect;
use super::establish::{self, Mx};
use super::{route, Context, OutboundError};
use crate::log;
use crate::session::{CommandReader, SessionRecord};
use crate::smtp::data::{EndOfData, Scan};
use crate::smtp::{reply, Command, LineError, LineReader, Reply};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub struct Dialogue<'a> {
    ctx: &'a Context,
    /// The MX session, kept between transactions for reuse.
    mx: Option<Mx>,
    /// The MTA's MAIL FROM line, replayed at the MX at the first RCPT.
    mail: Option<Vec<u8>>,
    /// Route key of the MX session carrying this transaction (MAIL was accepted there).
    txn_key: Option<String>,
    accepted: usize,
    commands: CommandReader,
}

impl<'a> Dialogue<'a> {
    pub fn new(ctx: &'a Context) -> Self {
        Self {
            ctx,
            mx: None,
            mail: None,
            txn_key: None,
            accepted: 0,
            commands: CommandReader::new(ctx.draining.clone()),
        }
    }

    pub async fn run(
        &mut self,
        mta: &mut LineReader<TcpStream>,
        record: &mut SessionRecord,
    ) -> Result<(), OutboundError> {
        let hostname = self.ctx.config.hostname.clone();
        self.send(mta, &reply::outbound_greeting(&hostname), record)
            .await?;
        loop {
            let line = self
                .commands
                .next(mta, &self.ctx.config.limits, record)
                .await?;
            let answer = match Command::parse(&line) {
                Command::Ehlo => {
                    self.reset().await;
                    reply::outbound_ehlo(&hostname)
                }
                Command::Helo => {
                    self.reset().await;
                    reply::outbound_helo(&hostname)
                }
                Command::Mail(_) if self.mail.is_some() => reply::nested_mail(),
                Command::Mail(_) => {
                    let from = self
                        .ctx
                        .config
                        .tls_reporting
                        .as_ref()
                        .map(|r| r.from.as_str());
                    record.mail_started(&line, from);
                    self.mail = Some(line);
                    reply::sender_ok()
                }
                Command::Rcpt(path) => self.rcpt(&line, path.domain, record).await?,
                Command::Data if self.mail.is_none() => reply::need_mail(),
                Command::Data if self.accepted == 0 => reply::no_valid_recipients(),
                Command::Data => {
                    self.data(mta, record).await?;
                    continue;
                }
                Command::Rset => {
                    self.reset().await;
                    reply::ok()
                }
                Command::Noop => reply::ok(),
                Command::Quit => {
                    self.send(mta, &reply::bye(), record).await?;
                    return Ok(());
                }
                // Not offered in our EHLO reply: STARTTLS (the MTA's leg is local), BDAT.
                Command::StartTls { .. } | Command::Bdat { .. } => reply::not_implemented(),
                // Never replayed: the MX might read the path otherwise than the policy did.
                Command::BadEnvelope => reply::unreadable_path(),
                Command::Proxy => reply::proxy_header_refused(),
                Command::Xclient | Command::Other => reply::not_recognized(),
            };
            self.send(mta, &answer, record).await?;
        }
    }

    /// A RCPT: route and policy for its domain, the MX session, MAIL replayed, RCPT relayed.
    async fn rcpt(
        &mut self,
        line: &[u8],
        domain: Option<String>,
        record: &mut SessionRecord,
    ) -> Result<Reply, OutboundError> {
        let ctx = self.ctx;
        let (mail, domain, applied) = match super::rcpt_preconditions(ctx, &self.mail, domain) {
            Ok(ready) => ready,
            Err(refusal) => return Ok(refusal),
        };
        record.judged_by(&applied);
        record.domain = Some(domain.clone());
        let route = match route::route(ctx, &domain).await {
            Ok(r) => r,
            Err(e) => {
                if let route::RouteError::Temporary(_) = e {
                    if let Some(refused) =
                        super::discover::bogus_mx(ctx, &applied, &domain, record).await
                    {
                        record.domain = Some(domain.clone());
                        return Ok(refused.note(record, &ctx.config.hostname, false));
                    }
                }
                log::warn("route_failed")
                    .field("id", &record.id)
                    .field("listener", &ctx.listener.name)
                    .field("domain", &domain)
                    .field("reason", e.reason())
                    .field("error", &e)
                    .emit();
                record.domain = Some(domain.clone());
                let reply = e.reply(&domain);
                record.outcome = e.reason();
                record.detail = Some(connect::summary(&reply));
                return Ok(reply);
            }
        };
        let route = match super::discover::with_dane(ctx, route, &applied, &domain, record).await {
            Ok(route) => route,
            Err(refused) => return Ok(refused.note(record, &ctx.config.hostname, false)),
        };
        let (route, applied) =
            match super::discover::with_mta_sts(ctx, route, applied, &domain, record).await {
                Ok(found) => found,
                Err(refused) => return Ok(refused.note(record, &ctx.config.hostname, false)),
            };
        record.judged_by(&applied);
        // Sessions are shared only under the same policy: a session verified for one domain's
        // MTA-STS policy is not what another domain's opportunistic delivery opened, nor back.
        let key = format!(
            "{} policy {} {} {}",
            route.key,
            applied
                .entry
                .map_or_else(|| "default".to_string(), |i| i.to_string()),
            applied.source.as_str(),
            applied.mode.as_str()
        );
        match &self.txn_key {
            Some(k) if *k != key => return Ok(reply::routes_elsewhere(&domain)),
            Some(_) => {}
            None => {
                if let Some(refusal) = self
                    .start_transaction(&route, &applied, &domain, &key, &mail, record)
                    .await?
                {
                    return Ok(refusal);
                }
            }
        }
        let Some(mx) = self.mx.as_mut() else {
            return Err(OutboundError::MxLost("no MX session".into()));
        };
        let reply = mx
            .conn
            .command(ctx, line)
            .await
            .map_err(OutboundError::MxLost)?;
        if reply.is_positive() {
            self.accepted += 1;
        }
        Ok(reply)
    }

    /// Opens or reuses the MX session for `key` and replays MAIL there. `Some(reply)`: the RCPT
    /// is answered with it (policy or routing refusal, or the MX refused MAIL).
    async fn start_transaction(
        &mut self,
        route: &route::Route,
        applied: &crate::policy::Applied,
        domain: &str,
        key: &str,
        mail: &[u8],
        record: &mut SessionRecord,
    ) -> Result<Option<Reply>, OutboundError> {
        let ctx = self.ctx;
        record.domain = Some(domain.to_string());
        record.judged_by(applied);
        if self.mx.as_ref().is_some_and(|m| m.key != key) {
            if let Some(old) = self.mx.take() {
                old.conn.quit(ctx).await;
            }
        }
        // A kept session may have been closed by the MX meanwhile: one fresh try then.
        for fresh_try in [false, true] {
            let reused = self.mx.is_some();
            if !reused {
                let mx = match establish::establish(
                    ctx,
                    route,
                    applied,
                    domain,
                    key.to_string(),
                    record,
                )
                .await
                {
                    Ok(mx) => mx,
                    // The MTA keeps the message; the log shows the last refusal.
                    Err(refused) => {
                        return Ok(Some(refused.note(record, &ctx.config.hostname, false)))
                    }
                };
                establish::delivering(&mx.applied, mx.facts.as_ref());
                record.judged_by(&mx.applied);
                log::info("mx_session")
                    .field("id", &record.id)
                    .field("listener", &ctx.listener.name)
                    .field("domain", domain)
                    .field("policy", mx.applied.source.as_str())
                    .field("mode", mx.applied.mode)
                    .field("tlsa", mx.applied.tlsa_found.unwrap_or("-"))
                    .field("mx", &mx.conn.label)
                    .field("tls", if mx.facts.is_some() { "yes" } else { "no" })
                    .field("version", mx.facts.as_ref().map_or("-", |f| f.version))
                    .field("cipher", mx.facts.as_ref().map_or("-", |f| f.cipher))
                    .field(
                        "verdict",
                        mx.facts.as_ref().map_or("-", |f| f.verdict.as_str()),
                    )
                    .field("relaxed", mx.relaxed.as_ref().map_or("no", |f| f.reason()))
                    .emit();
                record.next_hop = mx.conn.addr;
                record.tls.clone_from(&mx.facts);
                record.tls_refused = false;
                self.mx = Some(mx);
            }
            let Some(mx) = self.mx.as_mut() else {
                continue;
            };
            match mx.conn.command(ctx, mail).await {
                Ok(reply) if reply.is_positive() => {
                    self.txn_key = Some(key.to_string());
                    return Ok(None);
                }
                Ok(reply) => {
                    // The MX refused the sender: its reply answers this RCPT; the MTA decides.
                    let _ = mx.conn.command(ctx, b"RSET").await;
                    return Ok(Some(reply));
                }
                Err(e) if reused && !fresh_try => {
                    log::info("mx_session_closed")
                        .field("id", &record.id)
                        .field("detail", &e)
                        .emit();
                    self.mx = None;
                }
                Err(e) => return Err(OutboundError::MxLost(e)),
            }
        }
        Err(OutboundError::MxLost("MX session closed twice".into()))
    }

    /// DATA: the MX's 354, the body up to CRLF.CRLF, the MX's final reply.
    async fn data(
        &mut self,
        mta: &mut LineReader<TcpStream>,
        record: &mut SessionRecord,
    ) -> Result<(), OutboundError> {
        let ctx = self.ctx;
        let Some(mx) = self.mx.as_mut() else {
            return Err(OutboundError::MxLost("no MX session".into()));
        };
        let reply = mx
            .conn
            .command(ctx, b"DATA")
            .await
            .map_err(OutboundError::MxLost)?;
        self.send(mta, &reply, record).await?;
        if reply.code != 354 {
            self.reset().await;
            return Ok(());
        }
        let Some(mx) = self.mx.as_mut() else {
            return Err(OutboundError::MxLost("no MX session".into()));
        };
        if let Err(e) = relay_body(ctx, mta, &mut mx.conn, record).await {
            if matches!(e, OutboundError::BareLf) {
                self.mx = None;
            }
            return Err(e);
        }
        let Some(mx) = self.mx.as_mut() else {
            return Err(OutboundError::MxLost("no MX session".into()));
        };
        let last = mx
            .conn
            .read_reply(ctx)
            .await
            .map_err(OutboundError::MxLost)?;
        self.mail = None;
        self.txn_key = None;
        self.accepted = 0;
        self.send(mta, &last, record).await
    }

    /// Ends the transaction here and at the MX (RSET there if MAIL went out).
    async fn reset(&mut self) {
        if self.txn_key.take().is_some() {
            if let Some(mx) = self.mx.as_mut() {
                if mx.conn.command(self.ctx, b"RSET").await.is_err() {
                    self.mx = None;
                }
            }
        }
        self.mail = None;
        self.accepted = 0;
    }

    /// QUITs the MX session, if any.
    pub async fn close(&mut self) {
        if let Some(mx) = self.mx.take() {
            mx.conn.quit(self.ctx).await;
        }
    }

    async fn send(
        &self,
        mta: &mut LineReader<TcpStream>,
        reply: &Reply,
        record: &mut SessionRecord,
    ) -> Result<(), OutboundError> {
        let bytes = reply.to_bytes();
        record.bytes_to_peer += bytes.len() as u64;
        mta.get_mut()
            .write_all(&bytes)
            .await
            .map_err(OutboundError::MtaIo)
    }
}

/// Relays a DATA body from the MTA to the MX up to and including `CRLF.CRLF`. Bytes the MTA
/// pipelined after the terminator stay in `mta` for the dialogue.
pub async fn relay_body(
    ctx: &Context,
    mta: &mut LineReader<TcpStream>,
    mx: &mut connect::MxConn,
    record: &mut SessionRecord,
) -> Result<(), OutboundError> {
    let mut scanner = EndOfData::default();
    let idle = ctx.config.limits.idle_timeout;
    loop {
        let chunk = match tokio::time::timeout(idle, mta.fill_buf()).await {
            Err(_) => return Err(OutboundError::MtaIdle(idle)),
            Ok(Ok(chunk)) => chunk,
            Ok(Err(LineError::Io(e))) => return Err(OutboundError::MtaIo(e)),
            Ok(Err(_)) => return Err(OutboundError::MtaClosed),
        };
        match scanner.scan(chunk) {
            Scan::Body => {
                let n = chunk.len();
                mx.write(ctx, chunk).await.map_err(OutboundError::MxLost)?;
                mta.consume(n);
                record.bytes_from_peer += n as u64;
            }
            Scan::End(n) => {
                mx.write(ctx, &chunk[..n])
                    .await
                    .map_err(OutboundError::MxLost)?;
                mta.consume(n);
                record.bytes_from_peer += n as u64;
                return Ok(());
            }
            // The MX holds a partial message without terminator: closing makes it drop it.
            Scan::BareLf(_) => return Err(OutboundError::BareLf),
        }
    }
}
