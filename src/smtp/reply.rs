//! Server replies: parsing the next hop's (passed through byte for byte) and naming our own.
//!
//! Every reply the proxy writes itself is a constructor here, with its RFC 3463 enhanced code.

use super::line::{LineError, LineReader};
use tokio::io::AsyncRead;

/// A reply never has more lines than this (EHLO replies run to ~20).
const MAX_REPLY_LINES: usize = 128;

/// A complete (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of each line after `NNN-` / `NNN `.
    pub lines: Vec<Vec<u8>>,
}

/// Why the next hop's reply could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error(transparent)]
    Line(#[from] LineError),
}

impl Reply {
    pub fn new(code: u16, text: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// Reads one reply: lines `NNN-text` continue it, `NNN text` (or bare `NNN`) ends it.
    pub async fn read<S: AsyncRead + Unpin>(
        reader: &mut LineReader<S>,
        max_line: usize,
    ) -> Result<Reply, ReplyError> {
        let mut lines = Vec::new();
        let mut code = None;
        loop {
            let line = reader.read_line(max_line).await?;
            let (this_code, last, text) = parse_reply_line(&line)
                .ok_or_else(|| ReplyError::Malformed(String::from_utf8_lossy(&line).into()))?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(ReplyError::Malformed(String::from_utf8_lossy(&line).into()));
            }
            lines.push(text.to_vec());
            if last {
                return Ok(Reply {
                    code: this_code,
                    lines,
                });
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
        }
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// Wire form, CRLF-terminated lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let count = self.lines.len().max(1);
        for i in 0..count {
            let text = self.lines.get(i).map(Vec::as_slice).unwrap_or_default();
            out.extend_from_slice(self.code.to_string().as_bytes());
            out.push(if i + 1 == count { b' ' } else { b'-' });
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// First line's text, for logs and for synthesising an EHLO reply from HELO's.
    pub fn first_text(&self) -> String {
        String::from_utf8_lossy(self.lines.first().map(Vec::as_slice).unwrap_or_default()).into()
    }
}

fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return None;
    }
    let code = std::str::from_utf8(&line[..3]).ok()?.parse().ok()?;
    match line.get(3) {
        None => Some((code, true, &[][..])),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

// The proxy's own replies. Codes follow DESIGN.md; enhanced codes RFC 3463.

/// RFC 3207 §4: the proxy itself accepts STARTTLS.
pub fn ready_to_start_tls() -> Reply {
    Reply::new(220, "2.0.0 Ready to start TLS")
}

/// RFC 3207 §4: STARTTLS takes no parameters.
pub fn starttls_syntax() -> Reply {
    Reply::new(501, "5.5.4 Syntax error (no parameters allowed)")
}

/// A second STARTTLS inside TLS.
pub fn tls_already_active() -> Reply {
    Reply::new(554, "5.5.1 Error: TLS already active")
}

/// RFC 3207 §4: the certificate cannot be used.
pub fn tls_not_available() -> Reply {
    Reply::new(454, "4.7.0 TLS not available due to local problem")
}

/// STARTTLS inside a mail transaction (session still inspected because of enforcement).
pub fn starttls_in_transaction() -> Reply {
    Reply::new(503, "5.5.1 Error: MAIL transaction in progress")
}

/// RFC 3207 §4: listener-wide `require_tls`.
pub fn must_issue_starttls() -> Reply {
    Reply::new(530, "5.7.0 Must issue a STARTTLS command first")
}

/// A listed sender or recipient domain: temporary so the partner keeps the message.
pub fn encryption_required() -> Reply {
    Reply::new(450, "4.7.1 Session encryption is required")
}

/// A MAIL or RCPT whose path the proxy cannot read where a policy must read it: the next hop
/// might read it differently, so it is not passed on (RFC 3463 5.5.4: invalid arguments).
pub fn unreadable_path() -> Reply {
    Reply::new(
        501,
        "5.5.4 Syntax: MAIL FROM:<address> or RCPT TO:<address> (path not understood)",
    )
}

/// A PROXY header from a peer not in `proxy_protocol_from`, or after the session began
/// (DESIGN: the client's address): a bad command, and the session goes on.
pub fn proxy_header_refused() -> Reply {
    Reply::new(500, "5.5.2 Error: PROXY header not accepted here")
}

/// XCLIENT/XFORWARD from a client: only the proxy speaks for clients (Postfix's own answer to
/// an unauthorized XCLIENT is this code).
pub fn xclient_refused() -> Reply {
    Reply::new(
        550,
        "5.7.0 Error: XCLIENT and XFORWARD are reserved to the proxy",
    )
}

/// RFC 5321 §4.5.3.1.4: command line over the limit.
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2 Error: line too long")
}

/// Repeated protocol errors: hang up rather than read garbage forever.
pub fn too_many_errors(hostname: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {hostname} Error: too many errors"))
}

/// Bare LF in a message body the proxy must delimit itself (SMTP smuggling defence).
pub fn bare_lf(hostname: &str) -> Reply {
    Reply::new(421, format!("4.5.2 {hostname} Error: bare <LF> received"))
}

/// `max_connections` reached.
pub fn too_many_connections(hostname: &str) -> Reply {
    Reply::new(
        421,
        format!("4.7.0 {hostname} Error: too many connections, try again later"),
    )
}

/// The backend could not be reached (or did not greet).
pub fn backend_unavailable(hostname: &str) -> Reply {
    Reply::new(
        421,
        format!("4.4.1 {hostname} Service not available: mail server unreachable"),
    )
}

/// The backend went away or broke protocol mid-session.
pub fn backend_lost(hostname: &str) -> Reply {
    Reply::new(
        421,
        format!("4.4.2 {hostname} Error: connection to mail server lost"),
    )
}

/// Draining for shutdown.
pub fn shutting_down(hostname: &str) -> Reply {
    Reply::new(
        421,
        format!("4.3.2 {hostname} Service shutting down, try again later"),
    )
}

/// The client was silent past `idle_timeout` (RFC 5321 §4.5.3.2.7).
pub fn idle_timeout(hostname: &str) -> Reply {
    Reply::new(421, format!("4.4.2 {hostname} Error: timeout exceeded"))
}

// ---- Outbound: replies the proxy gives the legacy MTA itself (Postfix's wording) ----

/// Our greeting to the legacy MTA in relay mode.
pub fn outbound_greeting(hostname: &str) -> Reply {
    Reply::new(220, format!("{hostname} ESMTP starttls-proxy"))
}

/// Our EHLO reply in relay mode: no PIPELINING/8BITMIME/SIZE promises we cannot check against
/// a next hop we have not picked yet; no STARTTLS (the MTA cannot use it).
pub fn outbound_ehlo(hostname: &str) -> Reply {
    Reply {
        code: 250,
        lines: vec![
            hostname.as_bytes().to_vec(),
            b"ENHANCEDSTATUSCODES".to_vec(),
        ],
    }
}

pub fn outbound_helo(hostname: &str) -> Reply {
    Reply::new(250, hostname)
}

pub fn ok() -> Reply {
    Reply::new(250, "2.0.0 Ok")
}

pub fn sender_ok() -> Reply {
    Reply::new(250, "2.1.0 Ok")
}

pub fn bye() -> Reply {
    Reply::new(221, "2.0.0 Bye")
}

pub fn need_mail() -> Reply {
    Reply::new(503, "5.5.1 Error: need MAIL command")
}

pub fn nested_mail() -> Reply {
    Reply::new(503, "5.5.1 Error: nested MAIL command")
}

pub fn no_valid_recipients() -> Reply {
    Reply::new(554, "5.5.1 Error: no valid recipients")
}

pub fn bad_recipient_syntax() -> Reply {
    Reply::new(501, "5.1.3 Bad recipient address syntax")
}

pub fn not_implemented() -> Reply {
    Reply::new(502, "5.5.1 Error: command not implemented")
}

pub fn not_recognized() -> Reply {
    Reply::new(502, "5.5.2 Error: command not recognized")
}

/// RFC 5321 §3.3: the MTA retries the recipient in a new transaction (which we route apart).
pub fn routes_elsewhere(domain: &str) -> Reply {
    Reply::new(
        452,
        format!("4.5.3 Error: too many recipients: {domain} routes to another host, send it in a new transaction"),
    )
}

/// Encrypt/verify: the MX did not offer STARTTLS.
pub fn tls_not_offered(domain: &str, host: &str) -> Reply {
    Reply::new(
        451,
        format!("4.7.4 TLS is required, but was not offered by host {host} (domain {domain})"),
    )
}

/// Encrypt/verify: the MX answered STARTTLS with an error.
pub fn starttls_refused(domain: &str, host: &str, reply: &str) -> Reply {
    Reply::new(
        451,
        format!("4.7.4 TLS is required, but host {host} refused to start TLS: {reply} (domain {domain})"),
    )
}

/// Encrypt/verify: handshake or certificate failure; `what` says which.
pub fn tls_failed(domain: &str, host: &str, what: &str) -> Reply {
    Reply::new(
        451,
        format!("4.7.5 TLS is required for domain {domain}, but host {host} failed: {what}"),
    )
}

/// DANE stopped delivery before any connection (RFC 7672 §2.1.1: never plaintext instead).
pub fn dane_failed(domain: &str, what: &str) -> Reply {
    Reply::new(
        451,
        format!("4.7.5 DANE authentication is required for domain {domain}, but {what}"),
    )
}

pub fn dns_temporary(domain: &str, why: &str) -> Reply {
    Reply::new(
        451,
        format!("4.4.3 Host or domain name not found. Name service error for name={domain}: {why}, try again"),
    )
}

pub fn no_such_domain(domain: &str) -> Reply {
    Reply::new(
        550,
        format!("5.1.2 Host or domain name not found. Name service error for name={domain}: Host not found"),
    )
}

/// RFC 7505: the domain publishes a null MX.
pub fn null_mx(domain: &str) -> Reply {
    Reply::new(
        556,
        format!("5.1.10 Recipient address rejected: Domain {domain} does not accept mail (nullMX)"),
    )
}

pub fn no_mx_reachable(domain: &str, why: &str) -> Reply {
    Reply::new(
        451,
        format!("4.4.1 Cannot deliver to {domain}: no MX host reachable ({why})"),
    )
}

/// The MX host answered but would not talk (its greeting, or its reply to EHLO/HELO): what it
/// said, for the MTA's queue and bounce. Relay mode: `451` (every MX failed; the MTA keeps the
/// message); transparent mode: `421` in place of the greeting the MTA waits for.
pub fn mx_rejected(code: u16, host: &str, said: &str, stage: &str) -> Reply {
    Reply::new(code, format!("4.4.1 {host} said: {said} ({stage})"))
}

/// Transparent mode: the intercepted connection was meant for the proxy itself.
pub fn loop_detected(hostname: &str) -> Reply {
    Reply::new(
        554,
        format!("5.4.6 {hostname} Error: mail loops back to myself"),
    )
}

/// Transparent mode: the connection carries no original destination (not redirected).
pub fn no_original_destination(hostname: &str) -> Reply {
    Reply::new(
        421,
        format!("4.3.0 {hostname} Error: cannot determine the original destination"),
    )
}

/// Relay mode: the MX found for `domain` is this proxy (Postfix's wording and code).
pub fn mail_loops(domain: &str, hostname: &str) -> Reply {
    Reply::new(
        554,
        format!("5.4.6 mail for {domain} loops back to myself ({hostname})"),
    )
}

/// A TLS report address (`tls_reporting.receive`): the proxy takes the message itself.
pub fn report_recipient_ok() -> Reply {
    Reply::new(250, "2.1.5 Ok (TLS report address, taken by this host)")
}

/// A report address and other recipients in one transaction: the report is ours, the rest the
/// backend's, so the client sends them in separate transactions (RFC 5321 §3.3: 452 is "too
/// many recipients", which every client retries in a new transaction).
pub fn report_send_separately() -> Reply {
    Reply::new(
        452,
        "4.5.3 Error: TLS reports and other mail must go in separate transactions",
    )
}

/// DATA for a report transaction.
pub fn report_start_input() -> Reply {
    Reply::new(354, "End data with <CR><LF>.<CR><LF>")
}

/// A report chunk (BDAT, not the last) taken.
pub fn report_chunk_ok(size: u64) -> Reply {
    Reply::new(250, format!("2.0.0 {size} octets received"))
}

/// The report is on disk (fsynced): only now may the client forget it.
pub fn report_received(name: &str) -> Reply {
    Reply::new(250, format!("2.0.0 Ok: TLS report kept as {name}"))
}

/// A report message over the size bound (RFC 5321 §4.5.3.1.10; RFC 3463 5.3.4).
pub fn report_too_large(limit: usize) -> Reply {
    Reply::new(
        552,
        format!("5.3.4 Error: message too big for a TLS report (limit {limit} bytes)"),
    )
}

/// The report could not be stored: the client keeps it and tries again.
pub fn report_not_stored() -> Reply {
    Reply::new(
        451,
        "4.3.0 Error: cannot store the TLS report now, try again later",
    )
}
