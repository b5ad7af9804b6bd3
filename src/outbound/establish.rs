//! The one step that turns what an MX host offered into what happens, shared by relay and
//! transparent mode: `policy::decide`'s verdict becomes the MTA's reply ([`Refusal`]), the
//! metrics, the log lines and the session's result for this MX attempt ([`conclude`]). Relay
//! mode's [`establish`] walks the route's hosts through it; transparent mode judges each
//! recipient domain against its one connection through it.

use super::connect::{self, MxConn, MxError, MxPeer};
use super::{route, starttls, Context};
use crate::log;
use crate::policy::{decide, Applied, Decision, Mode, Offer, ResultType, TlsFailure};
use crate::session::{AttemptResult, SessionRecord, TlsFacts};
use crate::smtp::{reply, Reply};
use crate::state::results::Outcome;
use std::net::SocketAddr;

/// Why a recipient is refused before any of the envelope leaves. Each variant knows its reply,
/// its metric reason and, for TLS failures, its RFC 8460 result type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Policy forbids delivery over what this MX offered (`451 4.7.4` / `451 4.7.5`).
    Policy {
        failure: TlsFailure,
        domain: String,
        /// `host[ip]`.
        mx: String,
    },
    /// The MX is this proxy (Postfix's "mail for ... loops back to myself").
    MailLoop { domain: String },
    /// No MX host gave a session: the last one's error (`451 4.4.1`).
    NoMx { domain: String, error: MxError },
    /// The domain's MTA-STS policy (`enforce`) names none of its MX hosts (RFC 8461 §4.1).
    StsNoMatchingMx { domain: String, hosts: Vec<String> },
    /// DANE left no MX host to try (`451 4.7.5`).
    Dane {
        domain: String,
        problem: DaneProblem,
    },
}

/// Why DANE discovery left no MX host to try (RFC 7672 §2.1.1, §2.2): never plaintext instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneProblem {
    /// Records DANE needs (`name`: owner and type) failed this proxy's DNSSEC validation.
    Bogus { name: String, why: String },
    /// A validating look-up got no verdict (SERVFAIL, time-out): it may have been blocked.
    LookupFailed { name: String, why: String },
    /// `dane-only`: no MX host has usable secure TLSA records (`why` says what was found).
    Required { why: String },
}

impl DaneProblem {
    /// What failed, for the reply (the validator's own words go to the log).
    fn describe(&self) -> String {
        match self {
            DaneProblem::Bogus { name, .. } => format!("{name} does not validate (DNSSEC bogus)"),
            DaneProblem::LookupFailed { name, .. } => {
                format!("{name} could not be validated (DNSSEC look-up failed)")
            }
            DaneProblem::Required { why } => format!("no MX host qualifies: {why}"),
        }
    }

    /// The validator's words, for the log.
    pub fn detail(&self) -> &str {
        match self {
            DaneProblem::Bogus { why, .. }
            | DaneProblem::LookupFailed { why, .. }
            | DaneProblem::Required { why } => why,
        }
    }
}

impl Refusal {
    /// What the MTA is told; it keeps the message on every 4xx.
    pub fn reply(&self, hostname: &str) -> Reply {
        match self {
            Refusal::Policy {
                failure,
                domain,
                mx,
            } => failure.reply(domain, mx),
            Refusal::MailLoop { domain } => reply::mail_loops(domain, hostname),
            Refusal::NoMx { domain, error } => error.reply(domain),
            Refusal::StsNoMatchingMx { domain, hosts } => reply::tls_failed(
                domain,
                &hosts.join(", "),
                "MX host not named in the domain's MTA-STS policy",
            ),
            Refusal::Dane { domain, problem } => reply::dane_failed(domain, &problem.describe()),
        }
    }

    /// Label for the metrics and the session log's `outcome`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Policy { failure, .. } => failure.reason(),
            Refusal::MailLoop { .. } => "mail_loop",
            Refusal::NoMx { error, .. } => error.reason(),
            Refusal::StsNoMatchingMx { .. } => "mta_sts_mx_mismatch",
            Refusal::Dane { problem, .. } => match problem {
                DaneProblem::Bogus { .. } => "dnssec_bogus",
                DaneProblem::LookupFailed { .. } => "dnssec_error",
                DaneProblem::Required { .. } => "dane_required",
            },
        }
    }

    /// What a TLS report counts it as; `None` for failures that are not about TLS.
    pub fn result_type(&self) -> Option<ResultType> {
        match self {
            Refusal::Policy { failure, .. } => Some(failure.result_type()),
            Refusal::StsNoMatchingMx { .. } => Some(ResultType::ValidationFailure),
            Refusal::Dane { problem, .. } => Some(match problem {
                DaneProblem::Bogus { .. } | DaneProblem::LookupFailed { .. } => {
                    ResultType::DnssecInvalid
                }
                DaneProblem::Required { .. } => ResultType::DaneRequired,
            }),
            Refusal::MailLoop { .. } | Refusal::NoMx { .. } => None,
        }
    }
}

/// How delivery goes on after [`conclude`] let it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Go {
    /// Over this connection, as it is (TLS, or plaintext where the mode allows).
    AsIs,
    /// Over a fresh plaintext connection: this one's TLS state is broken.
    FreshPlaintext,
}

/// The one step: `decide` on what `mx` offered for `domain` under `applied`, then the metric,
/// the log line and the session's result for this attempt. `facts`: the handshake's, if one
/// was made (with the verdict for this domain); `chain`: the certificates it showed, leaf first.
// Each argument is a fact of this one attempt; bundling them would only move the list.
#[allow(clippy::too_many_arguments)]
pub fn conclude(
    ctx: &Context,
    applied: &Applied,
    domain: &str,
    mx: &MxPeer,
    offer: &Offer,
    facts: Option<&TlsFacts>,
    chain: &[rustls::pki_types::CertificateDer<'static>],
    record: &mut SessionRecord,
) -> Result<(Go, Option<TlsFailure>), Refusal> {
    ctx.monitor.mx_attempt(
        &crate::state::monitor::MxAttempt {
            session: &record.id,
            domain,
            mx: &mx.host,
            applied,
            offer,
            version: facts.map(|f| f.version),
            chain,
        },
        ctx.config.monitoring.downgrade_window,
    );
    let outcome = match crate::policy::failure(applied.judged_as, offer) {
        Some(f) => Outcome::Failure(f.result_type()),
        None => applied
            .sts_failure
            .map_or(Outcome::Success, Outcome::Failure),
    };
    record.results.push(AttemptResult {
        domain: Some(domain.to_string()),
        mx_host: Some(mx.host.clone()),
        remote: mx.addr,
        local: mx.local,
        tls: facts.cloned(),
        outcome,
        policy_type: applied.policy_type,
        policy_strings: applied.policy_strings.clone(),
    });
    let (go, relaxed) = match decide(applied.mode, applied.relaxed, offer) {
        Decision::Proceed { relaxed } => (Go::AsIs, relaxed),
        Decision::RetryPlain { relaxed } => (Go::FreshPlaintext, relaxed),
        Decision::Refuse(failure) => {
            let refusal = Refusal::Policy {
                failure,
                domain: domain.to_string(),
                mx: mx.label.clone(),
            };
            ctx.metrics.policy_rejection(refusal.reason());
            log::warn("policy_refused")
                .field("id", &record.id)
                .field("listener", &ctx.listener.name)
                .field("domain", domain)
                .field("policy", applied.source.as_str())
                .field("mode", applied.mode)
                .field("mx", &mx.label)
                .field("reason", refusal.reason())
                .field(
                    "reply",
                    connect::summary(&refusal.reply(&ctx.config.hostname)),
                )
                .emit();
            return Err(refusal);
        }
    };
    note_relaxed(
        ctx,
        applied,
        domain,
        &mx.label,
        relaxed.as_ref(),
        &record.id,
    );
    if go == Go::FreshPlaintext {
        log::warn("tls_fallback_plaintext")
            .field("id", &record.id)
            .field("domain", domain)
            .field("mx", &mx.label)
            .field("detail", format!("{offer:?}"))
            .emit();
    }
    Ok((go, relaxed))
}

/// An MX session is used for delivery to `domain`: counted per policy domain.
pub fn delivering(applied: &Applied, facts: Option<&TlsFacts>) {
    crate::metrics::outbound_domain_session(
        &applied.label,
        applied.mode.as_str(),
        applied.source.as_str(),
        facts.is_some(),
        facts.is_some_and(|f| f.verdict.is_verified()),
    );
}

/// An MX session ready for MAIL: TLS as policy demands, or plaintext where it allows.
pub struct Mx {
    pub conn: MxConn,
    /// The policy this host was judged by (its TLSA records, or the domain's policy).
    pub applied: Applied,
    /// Route key and policy entry: a later transaction with the same key may reuse the session.
    pub key: String,
    pub facts: Option<TlsFacts>,
    /// The failure a relaxation let through, if any.
    pub relaxed: Option<TlsFailure>,
}

/// What the session log shows of a refusal: the MX it was about and the TLS facts of that
/// attempt, when it got so far.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub mx: Option<SocketAddr>,
    pub facts: Option<TlsFacts>,
}

impl Refused {
    /// Puts the refusal on the session's record (its log line shows the last one: the reason,
    /// the reply, the MX and the TLS facts of that attempt) and gives the MTA's reply.
    /// `tls_stays`: the connection goes on with its TLS (transparent mode refuses one domain).
    pub fn note(self, record: &mut SessionRecord, hostname: &str, tls_stays: bool) -> Reply {
        let reply = self.refusal.reply(hostname);
        if matches!(self.refusal, Refusal::Dane { .. }) {
            record.policy = crate::policy::Source::Dane.as_str();
        }
        record.outcome = self.refusal.reason();
        record.detail = Some(connect::summary(&reply));
        if let Some(mx) = self.mx {
            record.next_hop = mx;
        }
        record.tls_refused = !tls_stays && self.facts.is_some();
        record.tls = self.facts;
        reply
    }
}

/// Relay mode: tries the route's hosts and addresses in order until one gives a session the
/// domain's policy accepts. Nothing of the envelope is sent here: a refusal leaves no trace at
/// the MX but EHLO.
pub async fn establish(
    ctx: &Context,
    route: &route::Route,
    domain_applied: &Applied,
    domain: &str,
    key: String,
    record: &mut SessionRecord,
) -> Result<Mx, Refused> {
    let mut refused: Option<Refused> = None;
    let mut last_error = MxError::Unreachable(String::from("no address to try"));
    let mut last_addr = None;
    for host in &route.hosts {
        // DANE judges a host with secure TLSA records by them (RFC 7672 §3), whatever else
        // applies to the domain.
        let host_applied;
        let applied = match &host.tlsa {
            Some(tlsa) => {
                host_applied = domain_applied.clone().under_dane(tlsa);
                &host_applied
            }
            None => domain_applied,
        };
        for ip in &host.addrs {
            let addr = SocketAddr::new(*ip, route.port);
            last_addr = Some(addr);
            let conn = match connect::open(ctx, &host.name, addr).await {
                Ok(c) => c,
                Err(e) => {
                    log::warn("mx_unreachable")
                        .field("id", &record.id)
                        .field("domain", domain)
                        .field("reason", e.reason())
                        .field("error", &e)
                        .emit();
                    last_error = e;
                    continue;
                }
            };
            if is_loop(ctx, &conn) {
                let refusal = Refusal::MailLoop {
                    domain: domain.to_string(),
                };
                log::warn("mail_loop")
                    .field("id", &record.id)
                    .field("domain", domain)
                    .field("mx", &conn.label)
                    .emit();
                ctx.metrics.policy_rejection(refusal.reason());
                conn.quit(ctx).await;
                return Err(Refused {
                    refusal,
                    mx: Some(addr),
                    facts: None,
                });
            }
            if applied.mode == Mode::None {
                record.results.push(AttemptResult {
                    domain: Some(domain.to_string()),
                    mx_host: Some(conn.host.clone()),
                    remote: conn.addr,
                    local: conn.local,
                    tls: None,
                    outcome: Outcome::Success,
                    policy_type: applied.policy_type,
                    policy_strings: applied.policy_strings.clone(),
                });
                return Ok(Mx {
                    conn,
                    applied: applied.clone(),
                    key,
                    facts: None,
                    relaxed: None,
                });
            }
            let label = conn.label.clone();
            let attempt = starttls::attempt(ctx, conn, applied, &record.id).await;
            let judged = conclude(
                ctx,
                applied,
                domain,
                &attempt.peer,
                &attempt.offer,
                attempt.facts.as_ref(),
                &attempt.chain,
                record,
            );
            match judged {
                Ok((Go::AsIs, relaxed)) => match attempt.conn {
                    Some(conn) => {
                        return Ok(Mx {
                            conn,
                            applied: applied.clone(),
                            key,
                            facts: attempt.facts,
                            relaxed,
                        })
                    }
                    None => last_error = MxError::Unreachable(format!("{label}: connection lost")),
                },
                Ok((Go::FreshPlaintext, relaxed)) => {
                    match connect::open(ctx, &host.name, addr).await {
                        Ok(conn) => {
                            return Ok(Mx {
                                conn,
                                applied: applied.clone(),
                                key,
                                facts: None,
                                relaxed,
                            })
                        }
                        Err(e) => last_error = e,
                    }
                }
                Err(refusal) => {
                    if let Some(conn) = attempt.conn {
                        conn.quit(ctx).await;
                    }
                    record.judged_by(applied);
                    refused = Some(Refused {
                        refusal,
                        mx: Some(addr),
                        facts: attempt.facts,
                    });
                }
            }
        }
    }
    Err(refused.unwrap_or(Refused {
        refusal: Refusal::NoMx {
            domain: domain.to_string(),
            error: last_error,
        },
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

fn note_relaxed(
    ctx: &Context,
    applied: &Applied,
    domain: &str,
    mx: &str,
    relaxed: Option<&TlsFailure>,
    id: &str,
) {
    let Some(failure) = relaxed else { return };
    crate::metrics::outbound_relaxed(&applied.label, failure.reason());
    log::warn("policy_relaxed")
        .field("id", id)
        .field("listener", &ctx.listener.name)
        .field("domain", domain)
        .field("policy", applied.mode)
        .field("mx", mx)
        .field("reason", failure.reason())
        .field(
            "relax_until",
            applied
                .relax_until
                .map_or("-".to_string(), crate::log::format_unix),
        )
        .emit();
}
