//! The command dialogue before splicing: EHLO rewriting, STARTTLS interception and, when
//! `require_tls*` applies to a plaintext session, envelope inspection.

use super::intake::{self, Intake};
use super::xclient::{self, Introduction};
use super::{message, Context, InboundError};
use crate::net::proxy_protocol::v2_rest_after_empty_line;
use crate::session::{CommandReader, SessionRecord};
use crate::smtp::command::Path;
use crate::smtp::{ehlo, reply, Command, LineError, LineReader, Reply};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the dialogue ended.
#[derive(Debug)]
pub enum Step {
    /// The client sent STARTTLS and got our 220; the handshake comes next.
    StartTls,
    /// Nothing left to decide; `pending` (the command that got us here, CRLF-terminated) goes
    /// to the backend first.
    Splice(Vec<u8>),
    /// QUIT was relayed.
    Quit,
}

/// One dialogue: before TLS, or inside TLS.
pub struct Dialogue<'a> {
    ctx: &'a Context,
    tls_active: bool,
    /// Plaintext with `require_tls*`: every MAIL/RCPT is checked, so the session is never spliced.
    inspect: bool,
    /// Report addresses are configured: every envelope is read (never spliced), so a report
    /// in any transaction of the session is taken here.
    keep_dialogue: bool,
    in_transaction: bool,
    /// Recipients the backend accepted in this transaction.
    backend_recipients: usize,
    /// This transaction is a TLS report for one of our report addresses.
    intake: Option<Intake>,
    commands: CommandReader,
}

impl<'a> Dialogue<'a> {
    pub fn new(ctx: &'a Context, tls_active: bool) -> Self {
        let inspect = !tls_active && ctx.listener.enforces_tls();
        let receives = ctx
            .config
            .tls_reporting
            .as_ref()
            .is_some_and(|r| !r.receive.is_empty());
        Self {
            ctx,
            tls_active,
            inspect,
            keep_dialogue: inspect || receives,
            in_transaction: false,
            backend_recipients: 0,
            intake: None,
            commands: CommandReader::new(ctx.draining.clone()),
        }
    }

    /// Relays the backend's greeting, then runs the dialogue.
    pub async fn greet_and_run<S: AsyncRead + AsyncWrite + Unpin>(
        self,
        client: &mut LineReader<S>,
        backend: &mut LineReader<TcpStream>,
        record: &mut SessionRecord,
    ) -> Result<Step, InboundError> {
        let greeting = self
            .read_backend_reply(backend)
            .await
            .map_err(|e| match e {
                InboundError::BackendLost(why) => InboundError::BackendUnreachable(
                    self.ctx.listener.backend,
                    format!("no greeting: {why}"),
                ),
                other => other,
            })?;
        self.send(client, &greeting, record).await?;
        self.run(client, backend, record).await
    }

    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        client: &mut LineReader<S>,
        backend: &mut LineReader<TcpStream>,
        record: &mut SessionRecord,
    ) -> Result<Step, InboundError> {
        loop {
            let line = self
                .commands
                .next(client, &self.ctx.config.limits, record)
                .await?;
            // A binary PROXY v2 header where none is expected: as bad a command as a v1 line,
            // and not to be spliced to the backend (its signature holds a QUIT).
            if line.is_empty() {
                let rest = v2_rest_after_empty_line(client.buffered());
                if let Some(rest) = rest.filter(|&n| client.skip_buffered(n)) {
                    record.bytes_from_peer += rest as u64;
                    self.send(client, &reply::proxy_header_refused(), record)
                        .await?;
                    continue;
                }
            }
            let command = Command::parse(&line);
            // The envelope is still ours (so STARTTLS inside a transaction gets our 503); the
            // body and anything we do not know are the backend's business.
            if !self.keep_dialogue && command.ends_dialogue() {
                let mut pending = line;
                pending.extend_from_slice(b"\r\n");
                return Ok(Step::Splice(pending));
            }
            match command {
                Command::Ehlo => {
                    self.introduce_client(&line, true, backend, record).await?;
                    let reply = self.ehlo(&line, backend).await?;
                    self.end_transaction();
                    self.send(client, &reply, record).await?;
                }
                Command::StartTls { has_args: true } => {
                    self.send(client, &reply::starttls_syntax(), record).await?
                }
                Command::StartTls { .. } if self.tls_active => {
                    self.send(client, &reply::tls_already_active(), record)
                        .await?
                }
                Command::StartTls { .. } if self.in_transaction => {
                    self.send(client, &reply::starttls_in_transaction(), record)
                        .await?
                }
                Command::StartTls { .. } if self.ctx.config.tls.is_none() => {
                    self.send(client, &reply::tls_not_available(), record)
                        .await?
                }
                Command::StartTls { .. } => {
                    self.send(client, &reply::ready_to_start_tls(), record)
                        .await?;
                    return Ok(Step::StartTls);
                }
                Command::Proxy => {
                    self.send(client, &reply::proxy_header_refused(), record)
                        .await?
                }
                Command::Quit => {
                    let reply = self.forward(&line, backend).await?;
                    self.send(client, &reply, record).await?;
                    let _ = client.get_mut().shutdown().await;
                    return Ok(Step::Quit);
                }
                Command::Mail(ref path) => {
                    record.mail_from_domain.clone_from(&path.domain);
                    if let Some(refusal) = self.refusal(Some(path), true, record) {
                        self.send(client, &refusal, record).await?;
                        continue;
                    }
                    let reply = self.forward(&line, backend).await?;
                    if reply.is_positive() && !self.in_transaction {
                        self.end_transaction();
                        self.in_transaction = true;
                    }
                    self.send(client, &reply, record).await?;
                }
                Command::Rcpt(ref path) => {
                    if let Some(refusal) = self.refusal(Some(path), false, record) {
                        self.send(client, &refusal, record).await?;
                        continue;
                    }
                    if let Some(reply) = self.report_recipient(&line) {
                        self.send(client, &reply, record).await?;
                        continue;
                    }
                    let reply = self.forward(&line, backend).await?;
                    if reply.is_positive() {
                        self.backend_recipients += 1;
                    }
                    self.send(client, &reply, record).await?;
                }
                Command::Data if self.intake.is_some() => {
                    self.send(client, &reply::report_start_input(), record)
                        .await?;
                    let intake = self.intake.take().unwrap_or_default();
                    let reply = intake::data(self.ctx, client, record, &intake).await?;
                    // The client hears first: a backend lost at the RSET must not cost it
                    // the answer for a report already kept.
                    self.send(client, &reply, record).await?;
                    self.close_backend_transaction(backend).await?;
                }
                Command::Bdat { size, last } if self.intake.is_some() => {
                    let mut intake = self.intake.take().unwrap_or_default();
                    let reply =
                        intake::chunk(self.ctx, client, record, &mut intake, size, last).await?;
                    self.send(client, &reply, record).await?;
                    if last {
                        self.close_backend_transaction(backend).await?;
                    } else {
                        self.intake = Some(intake);
                    }
                }
                // Looks like MAIL or RCPT but cannot be read: checked like one whose domain
                // is unknown, so under enforcement it never reaches the backend.
                Command::BadEnvelope => {
                    if let Some(refusal) = self.refusal(None, true, record) {
                        self.send(client, &refusal, record).await?;
                        continue;
                    }
                    let reply = self.forward(&line, backend).await?;
                    self.send(client, &reply, record).await?;
                }
                Command::Data => {
                    let reply = self.forward(&line, backend).await?;
                    self.send(client, &reply, record).await?;
                    if reply.code == 354 {
                        record.bytes_from_peer +=
                            message::relay_data(self.ctx, client, backend).await?;
                        let reply = self.read_backend_reply(backend).await?;
                        self.end_transaction();
                        self.send(client, &reply, record).await?;
                    }
                }
                Command::Bdat { size, last } => {
                    self.write_backend(backend, &line).await?;
                    record.bytes_from_peer +=
                        message::relay_chunk(self.ctx, client, backend, size).await?;
                    let reply = self.read_backend_reply(backend).await?;
                    if last || !reply.is_positive() {
                        self.end_transaction();
                    }
                    self.send(client, &reply, record).await?;
                }
                Command::Xclient => self.send(client, &reply::xclient_refused(), record).await?,
                Command::Helo => {
                    self.introduce_client(&line, false, backend, record).await?;
                    let reply = self.forward(&line, backend).await?;
                    self.end_transaction();
                    self.send(client, &reply, record).await?;
                }
                Command::Rset => {
                    let reply = self.forward(&line, backend).await?;
                    self.end_transaction();
                    self.send(client, &reply, record).await?;
                }
                Command::Noop | Command::Other => {
                    let reply = self.forward(&line, backend).await?;
                    self.send(client, &reply, record).await?;
                }
            }
        }
    }

    fn end_transaction(&mut self) {
        self.in_transaction = false;
        self.backend_recipients = 0;
        self.intake = None;
    }

    /// A RCPT in a transaction the backend has (MAIL went through): to one of our report
    /// addresses, the transaction becomes ours unless the backend already has recipients in
    /// it; any other recipient of a report transaction is sent in another. `None`: the
    /// backend's business.
    fn report_recipient(&mut self, line: &[u8]) -> Option<Reply> {
        let reporting = self.ctx.config.tls_reporting.as_ref()?;
        if !self.in_transaction {
            return None;
        }
        let mailbox = crate::smtp::command::forward_path_mailbox(line);
        let is_report = mailbox
            .as_deref()
            .is_some_and(|m| reporting.is_report_address(m));
        match (&mut self.intake, is_report) {
            (Some(intake), true) => {
                intake.recipients.extend(mailbox);
                Some(reply::report_recipient_ok())
            }
            (Some(_), false) => Some(reply::report_send_separately()),
            (None, true) if self.backend_recipients > 0 => Some(reply::report_send_separately()),
            (None, true) => {
                let mut intake = Intake::new();
                intake.recipients.extend(mailbox);
                self.intake = Some(intake);
                Some(reply::report_recipient_ok())
            }
            (None, false) => None,
        }
    }

    /// The backend holds the MAIL of a transaction we took: RSET ends it there.
    async fn close_backend_transaction(
        &mut self,
        backend: &mut LineReader<TcpStream>,
    ) -> Result<(), InboundError> {
        self.forward(b"RSET", backend).await?;
        self.end_transaction();
        Ok(())
    }

    /// EHLO to the backend; STARTTLS offered by us. A backend that only knows HELO gets HELO,
    /// and the client a synthesised EHLO reply so it can still upgrade.
    async fn ehlo(
        &mut self,
        line: &[u8],
        backend: &mut LineReader<TcpStream>,
    ) -> Result<Reply, InboundError> {
        let reply = self.forward(line, backend).await?;
        let offer = !self.tls_active;
        if reply.code == 250 {
            // XCLIENT and XFORWARD are the proxy's to use, never the client's.
            let reply = ehlo::without(&reply, &[b"XCLIENT", b"XFORWARD"]);
            return Ok(ehlo::rewrite(&reply, offer));
        }
        // 500/502: command unrecognised or not implemented (RFC 5321 §4.2.4); not for 421 etc.
        if matches!(reply.code, 500 | 502) {
            let mut helo = b"HELO".to_vec();
            helo.extend_from_slice(line.get(4..).unwrap_or_default());
            let helo_reply = self.forward(&helo, backend).await?;
            if helo_reply.code == 250 {
                return Ok(ehlo::synthesise(&helo_reply, offer));
            }
            return Ok(helo_reply);
        }
        Ok(reply)
    }

    /// `client_address = "xclient"`, at the client's first EHLO or HELO (`line`, `esmtp`), before
    /// it is forwarded: introduces the client to the backend (see `xclient`), or settles that
    /// the session goes on as `none`, counted and logged. Does nothing once that is decided.
    async fn introduce_client(
        &self,
        line: &[u8],
        esmtp: bool,
        backend: &mut LineReader<TcpStream>,
        record: &mut SessionRecord,
    ) -> Result<(), InboundError> {
        if record.client_address.is_some() {
            return Ok(());
        }
        let ours = format!("EHLO {}", self.ctx.config.hostname);
        let offer = self.forward(ours.as_bytes(), backend).await?;
        let helo = line.get(4..).unwrap_or_default();
        let introduction = match xclient::command(&offer, record.client, helo, esmtp) {
            None => Introduction::NotOffered,
            Some(command) => match self.forward(&command, backend).await? {
                // The backend's new greeting: the client's own EHLO, next, answers it.
                greeting if greeting.code == 220 => Introduction::Accepted,
                refusal => Introduction::Refused(refusal),
            },
        };
        if introduction == Introduction::Accepted {
            record.client_address = Some("xclient");
            return Ok(());
        }
        record.client_address = Some("none");
        let listener = &self.ctx.listener.name;
        crate::metrics::xclient_unavailable(listener);
        let mut event = crate::log::warn("xclient_unavailable")
            .field("id", &record.id)
            .field("listener", listener)
            .field("client", record.client)
            .field("peer", record.peer)
            .field("reason", introduction.reason());
        if let Introduction::Refused(refusal) = &introduction {
            event = event.field(
                "reply",
                format!("{} {}", refusal.code, refusal.first_text()),
            );
        }
        event.emit();
        Ok(())
    }

    /// The policy refusal for a MAIL (`is_sender`) or RCPT path, if one applies; `None` for the
    /// path: the line looked like MAIL or RCPT but could not be read.
    fn refusal(
        &self,
        path: Option<&Path>,
        is_sender: bool,
        record: &mut SessionRecord,
    ) -> Option<Reply> {
        if !self.inspect {
            return None;
        }
        let listener = &self.ctx.listener;
        if listener.require_tls {
            record.domain = path.and_then(|p| p.domain.clone());
            self.ctx.metrics.policy_rejection("require_tls");
            return Some(reply::must_issue_starttls());
        }
        let Some(path) = path else {
            self.ctx.metrics.policy_rejection("unreadable_path");
            return Some(reply::unreadable_path());
        };
        let (listed, reason) = if is_sender {
            (&listener.require_tls_senders, "sender_requires_tls")
        } else {
            (&listener.require_tls_recipients, "recipient_requires_tls")
        };
        // Any domain the path names: the backend may route by the `%` hack or a bang path.
        let (domain, entry) = path
            .domains()
            .find_map(|d| listed.entry_for(d).map(|e| (d, e)))?;
        record.domain = Some(domain.to_string());
        self.ctx.metrics.policy_rejection(reason);
        if is_sender {
            // A partner that must send over TLS arrived in plaintext: STARTTLS may have been
            // stripped on the way (DESIGN, downgrade detection, inbound).
            crate::metrics::downgrade_suspected("inbound", entry);
            crate::log::warn("downgrade_suspected")
                .field("id", &record.id)
                .field("listener", &listener.name)
                .field("direction", "inbound")
                .field("domain", entry)
                .field("client", record.client)
                .field("peer", record.peer)
                .emit();
        }
        Some(reply::encryption_required())
    }

    async fn forward(
        &self,
        line: &[u8],
        backend: &mut LineReader<TcpStream>,
    ) -> Result<Reply, InboundError> {
        self.write_backend(backend, line).await?;
        self.read_backend_reply(backend).await
    }

    async fn write_backend(
        &self,
        backend: &mut LineReader<TcpStream>,
        line: &[u8],
    ) -> Result<(), InboundError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
        backend
            .get_mut()
            .write_all(&bytes)
            .await
            .map_err(|e| InboundError::BackendLost(e.to_string()))
    }

    async fn read_backend_reply(
        &self,
        backend: &mut LineReader<TcpStream>,
    ) -> Result<Reply, InboundError> {
        let limits = &self.ctx.config.limits;
        match tokio::time::timeout(
            limits.idle_timeout,
            Reply::read(backend, limits.max_line_length),
        )
        .await
        {
            Err(_) => Err(InboundError::BackendLost(format!(
                "no reply within {:?}",
                limits.idle_timeout
            ))),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(crate::smtp::reply::ReplyError::Line(LineError::Eof))) => {
                Err(InboundError::BackendLost("connection closed".into()))
            }
            Ok(Err(crate::smtp::reply::ReplyError::Line(LineError::Io(e)))) => {
                Err(InboundError::BackendLost(e.to_string()))
            }
            Ok(Err(e)) => Err(InboundError::BackendProtocol(e.to_string())),
        }
    }

    async fn send<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut LineReader<S>,
        reply: &Reply,
        record: &mut SessionRecord,
    ) -> Result<(), InboundError> {
        let bytes = reply.to_bytes();
        record.bytes_to_peer += bytes.len() as u64;
        let stream = client.get_mut();
        stream
            .write_all(&bytes)
            .await
            .map_err(InboundError::ClientIo)?;
        stream.flush().await.map_err(InboundError::ClientIo)
    }
}
