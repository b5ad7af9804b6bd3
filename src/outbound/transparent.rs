//! Transparent mode: the legacy MTA's own port-25 connections are redirected to the proxy (nft
//! or iptables REDIRECT); the original destination comes from SO_ORIGINAL_DST.
//!
//! Phases: original destination (loop guard) → connect, greeting, EHLO, STARTTLS as soon as it
//! is offered (a failed handshake: fresh plaintext connection) → relay the greeting and the
//! EHLO reply (without STARTTLS) to the MTA → MAIL kept → each RCPT's domain policy checked
//! against the TLS state obtained, before MAIL/RCPT leave → DATA relayed, the MX's final reply
//! passed through. The MX's name is unknown here: no SNI is sent, and `verify` checks the
//! certificate against the recipient domain's MX host names, the domain and its `match` names.

use super::connect::{self, MxConn, MxError};
use super::envelope::relay_body;
use super::establish;
use super::starttls::{self, Attempt};
use super::{Context, OutboundError};
use crate::log;
use crate::net::original_dst::Interception;
use crate::policy::{Applied, Offer};
use crate::session::{CommandReader, SessionRecord};
use crate::smtp::{ehlo, reply, Command, LineReader, Reply};
use crate::tls::CertVerdict;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where the MTA meant to go, or why we will not take it there.
pub fn original_destination(ctx: &Context, mta: &TcpStream) -> Result<SocketAddr, Reply> {
    let sock = socket2::SockRef::from(mta);
    let local = mta.local_addr().ok();
    if ctx.listener.interception == Interception::Tproxy {
        // TPROXY leaves the address the MTA connected to as the socket's own.
        let Some(original) = local.map(crate::net::client::canonical) else {
            return Err(reply::no_original_destination(&ctx.config.hostname));
        };
        if crate::net::original_dst::loops_back(&ctx.config, original) {
            return Err(reply::loop_detected(&ctx.config.hostname));
        }
        return Ok(original);
    }
    let original = match local {
        Some(SocketAddr::V6(_)) => sock.original_dst_ipv6(),
        _ => sock.original_dst(),
    }
    .ok()
    .and_then(|a| a.as_socket());
    let Some(original) = original else {
        return Err(reply::no_original_destination(&ctx.config.hostname));
    };
    if is_self(ctx, original, local) {
        return Err(reply::loop_detected(&ctx.config.hostname));
    }
    Ok(original)
}

/// The loop guard: a connection made to the proxy itself (not redirected: the original
/// destination is our own address) or redirected to one of our listeners would loop.
fn is_self(ctx: &Context, original: SocketAddr, local: Option<SocketAddr>) -> bool {
    Some(original) == local || crate::net::original_dst::loops_back(&ctx.config, original)
}

/// The TLS state of the MX session, against which every RCPT is checked.
struct TlsState {
    /// What the STARTTLS attempt came to (`Tls(_)` with the handshake's own verdict).
    offer: Offer,
    chain: Vec<CertificateDer<'static>>,
}

pub async fn session(
    ctx: &Context,
    mta: &mut LineReader<TcpStream>,
    original: SocketAddr,
    record: &mut SessionRecord,
) -> Result<(), OutboundError> {
    record.next_hop = original;
    let host = original.ip().to_string();
    let (mut conn, state) = match connect_upgraded(ctx, &host, original, record).await {
        Ok(c) => c,
        Err(e) => {
            log::warn("mx_unreachable")
                .field("id", &record.id)
                .field("reason", e.reason())
                .field("error", &e)
                .emit();
            // RFC 5321 §3.8: the MTA keeps the message and tries later (its next MX, as for a
            // 5xx greeting: Postfix's smtp_skip_5xx_greeting); it is told what the host said.
            let r = match &e {
                MxError::Unreachable(_) => reply::backend_unavailable(&ctx.config.hostname),
                MxError::Rejected {
                    host, stage, said, ..
                } => reply::mx_rejected(421, host, said, stage),
            };
            record.outcome = e.reason();
            record.detail = Some(e.to_string());
            send(mta, &r, record).await?;
            return Ok(());
        }
    };
    let mut d = Transparent {
        ctx,
        mail: None,
        mail_sent: false,
        commands: CommandReader::new(ctx.draining.clone()),
    };
    send(mta, &conn.greeting.clone(), record).await?;
    let result = d.run(mta, &mut conn, &state, record).await;
    conn.quit(ctx).await;
    result
}

/// Connect, EHLO, STARTTLS when offered; a broken handshake gets a fresh plaintext connection.
async fn connect_upgraded(
    ctx: &Context,
    host: &str,
    addr: SocketAddr,
    record: &mut SessionRecord,
) -> Result<(MxConn, TlsState), MxError> {
    let conn = connect::open(ctx, host, addr).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // No domain yet: the policy-wide trust anchors, no extra names.
    let applied = ctx.config.outbound_policy.lookup("", now);
    let Attempt {
        offer,
        conn,
        facts,
        chain,
        ..
    } = starttls::attempt(ctx, conn, &applied, &record.id).await;
    let conn = match conn {
        Some(c) => c,
        None => {
            log::warn("tls_fallback_plaintext")
                .field("id", &record.id)
                .field("mx", addr)
                .field("detail", format!("{offer:?}"))
                .emit();
            connect::open(ctx, host, addr).await?
        }
    };
    record.tls.clone_from(&facts);
    if let Some(f) = record.tls.as_mut() {
        // Verified per recipient domain later; the handshake alone knows no name.
        f.verdict = crate::tls::Verdict::PerDomain;
    }
    Ok((conn, TlsState { offer, chain }))
}

struct Transparent<'a> {
    ctx: &'a Context,
    mail: Option<Vec<u8>>,
    mail_sent: bool,
    commands: CommandReader,
}

impl Transparent<'_> {
    async fn run(
        &mut self,
        mta: &mut LineReader<TcpStream>,
        mx: &mut MxConn,
        state: &TlsState,
        record: &mut SessionRecord,
    ) -> Result<(), OutboundError> {
        let ctx = self.ctx;
        loop {
            let line = self
                .commands
                .next(mta, &self.ctx.config.limits, record)
                .await?;
            let answer = match Command::parse(&line) {
                Command::Ehlo => {
                    self.reset(mx).await?;
                    match &mx.ehlo {
                        // The MTA must not try STARTTLS itself: we already did, for it.
                        Some(r) => ehlo::rewrite(r, false),
                        None => Reply::new(250, mx.host.clone()),
                    }
                }
                Command::Helo => {
                    self.reset(mx).await?;
                    Reply::new(250, mx.host.clone())
                }
                Command::StartTls { .. } | Command::Bdat { .. } => reply::not_implemented(),
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
                Command::Rcpt(path) => self.rcpt(&line, path.domain, mx, state, record).await?,
                Command::Data if !self.mail_sent => reply::no_valid_recipients(),
                Command::Data => {
                    let r = mx
                        .command(ctx, b"DATA")
                        .await
                        .map_err(OutboundError::MxLost)?;
                    send(mta, &r, record).await?;
                    if r.code != 354 {
                        self.reset(mx).await?;
                        continue;
                    }
                    relay_body(ctx, mta, mx, record).await?;
                    let last = mx.read_reply(ctx).await.map_err(OutboundError::MxLost)?;
                    self.mail = None;
                    self.mail_sent = false;
                    last
                }
                Command::Rset => {
                    self.reset(mx).await?;
                    reply::ok()
                }
                Command::Noop => reply::ok(),
                Command::Quit => {
                    send(mta, &reply::bye(), record).await?;
                    return Ok(());
                }
                // Never forwarded: the MX might read the path otherwise than the policy did.
                Command::BadEnvelope => reply::unreadable_path(),
                Command::Proxy => reply::proxy_header_refused(),
                // VRFY, EXPN, HELP...: the MX's business.
                Command::Xclient | Command::Other => mx
                    .command(ctx, &line)
                    .await
                    .map_err(OutboundError::MxLost)?,
            };
            send(mta, &answer, record).await?;
        }
    }

    async fn rcpt(
        &mut self,
        line: &[u8],
        domain: Option<String>,
        mx: &mut MxConn,
        state: &TlsState,
        record: &mut SessionRecord,
    ) -> Result<Reply, OutboundError> {
        let ctx = self.ctx;
        let (mail, domain, applied) = match super::rcpt_preconditions(ctx, &self.mail, domain) {
            Ok(ready) => ready,
            Err(refusal) => return Ok(refusal),
        };
        record.domain = Some(domain.clone());
        record.judged_by(&applied);
        let (applied, dane_host) = match super::discover::dane_for_connected(
            ctx, &applied, &domain, mx.addr, record,
        )
        .await
        {
            Ok(Some((host, tlsa))) => (applied.under_dane(&tlsa), Some(host)),
            Ok(None) => (applied, None),
            Err(mut refused) => {
                // The connection keeps its TLS: the log line keeps its facts.
                refused.mx = Some(mx.addr);
                refused.facts.clone_from(&record.tls);
                return Ok(refused.note(record, &ctx.config.hostname, true));
            }
        };
        record.judged_by(&applied);
        if applied.mode != crate::policy::Mode::None {
            let offer = match &state.offer {
                Offer::Tls(_) => Offer::Tls(match (&applied.tlsa, &dane_host) {
                    (Some(records), Some(host)) => dane_verdict(records, host, state),
                    _ => self.verdict(&domain, &applied, state).await,
                }),
                other => other.clone(),
            };
            // The facts with the verdict for this domain, not the handshake's placeholder.
            let mut facts = record.tls.clone();
            if let (Some(f), Offer::Tls(verdict)) = (facts.as_mut(), &offer) {
                f.verdict = crate::tls::Verdict::Cert(*verdict);
            }
            let mut peer = mx.peer();
            // DANE found which MX host this address is: results name it.
            if let Some(host) = &dane_host {
                peer.host.clone_from(host);
            }
            match establish::conclude(
                ctx,
                &applied,
                &domain,
                &peer,
                &offer,
                facts.as_ref(),
                &state.chain,
                record,
            ) {
                Err(refusal) => {
                    let refused = establish::Refused {
                        refusal,
                        mx: Some(peer.addr),
                        facts,
                    };
                    return Ok(refused.note(record, &ctx.config.hostname, true));
                }
                Ok(_) => establish::delivering(&applied, facts.as_ref()),
            }
        }
        if !self.mail_sent {
            let r = mx
                .command(ctx, &mail)
                .await
                .map_err(OutboundError::MxLost)?;
            if !r.is_positive() {
                let _ = mx.command(ctx, b"RSET").await;
                return Ok(r);
            }
            self.mail_sent = true;
        }
        mx.command(ctx, line).await.map_err(OutboundError::MxLost)
    }

    /// The certificate's verdict for `domain`: valid chain, and a name among the domain's MX
    /// host names, the domain itself and its `match` names.
    async fn verdict(&self, domain: &str, applied: &Applied, state: &TlsState) -> CertVerdict {
        let Some((leaf, intermediates)) = state.chain.split_first() else {
            return CertVerdict::Invalid;
        };
        let mut names: Vec<String> = match self.ctx.resolver.mx(domain).await {
            Ok(records) => records
                .into_iter()
                .map(|(_, n)| n)
                .filter(|n| !n.is_empty())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.push(domain.to_string());
        names.extend(applied.match_names.iter().cloned());
        let Ok(first) = ServerName::try_from(domain.to_string()) else {
            return CertVerdict::Invalid;
        };
        applied
            .trust_anchors
            .verdict(leaf, intermediates, &first, &names, UnixTime::now())
    }

    async fn reset(&mut self, mx: &mut MxConn) -> Result<(), OutboundError> {
        if self.mail_sent {
            mx.command(self.ctx, b"RSET")
                .await
                .map_err(OutboundError::MxLost)?;
        }
        self.mail = None;
        self.mail_sent = false;
        Ok(())
    }
}

/// The certificate's verdict by the connected MX host's TLSA records (RFC 7672 §3; DANE-TA
/// checks the chain for `host`).
fn dane_verdict(
    records: &[crate::policy::dane::Tlsa],
    host: &str,
    state: &TlsState,
) -> CertVerdict {
    let Some((leaf, intermediates)) = state.chain.split_first() else {
        return CertVerdict::Invalid;
    };
    let Ok(name) = ServerName::try_from(host.to_string()) else {
        return CertVerdict::Invalid;
    };
    crate::tls::dane::verify(
        records,
        leaf,
        intermediates,
        &name,
        UnixTime::now(),
        &crate::tls::provider(),
    )
    .cert_verdict()
}

async fn send(
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
