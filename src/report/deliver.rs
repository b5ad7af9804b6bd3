//! Delivering one stored report to one `rua` (RFC 8460 §3): an HTTPS POST of the gzip'd JSON
//! (WebPKI), or an e-mail handed to `send_via` (the contract's `multipart/report` form). Each
//! attempt is bounded in time and answers `Ok(what the receiver said)` or why it failed.

use crate::config::TlsReporting;
use crate::https::HttpsClient;
use crate::resolver::Resolve;
use crate::smtp::{LineReader, Reply};
use base64::Engine as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One delivery, connect to last reply: a relay that stalls costs a run this much per report.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// What we read of an HTTPS receiver's answer (its body only goes to the ledger's detail).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The media type of a report, both ways (RFC 8460 §6.4).
pub const GZIP_MEDIA_TYPE: &str = "application/tlsrpt+gzip";

/// Why a delivery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("bad https URI {0:?}")]
    BadUri(String),
    #[error("DNS for {host}: {error}")]
    Dns {
        host: String,
        error: crate::resolver::DnsError,
    },
    #[error(
        "no trust anchors for https (outbound_policy.mta_sts_trust_anchors holds no usable CA)"
    )]
    NoTrustAnchors,
    #[error(transparent)]
    Https(#[from] crate::https::HttpsError),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    #[error("no tls_reporting.send_via relay for mailto: destinations")]
    NoRelay,
    #[error("relay {0}: {1}")]
    Relay(SocketAddr, String),
    #[error("relay {relay} refused {command}: {reply}")]
    Refused {
        relay: SocketAddr,
        command: &'static str,
        reply: String,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// `https://host[:port]/path` → host, port, path.
pub fn parse_https_uri(uri: &str) -> Option<(String, u16, String)> {
    let rest = uri
        .get(..8)
        .filter(|s| s.eq_ignore_ascii_case("https://"))
        .map(|_| &uri[8..])?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains(['@', '[', ']']) {
        return None; // userinfo and IPv6 literals: no reporting endpoint needs them
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 443),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    valid.then_some((host, port, path))
}

/// POSTs `gzip` to `uri` as `application/tlsrpt+gzip`; any 2xx is a delivery.
pub async fn https(
    client: Option<&HttpsClient>,
    resolver: &dyn Resolve,
    uri: &str,
    gzip: &[u8],
) -> Result<String, DeliveryError> {
    let (host, port, path) =
        parse_https_uri(uri).ok_or_else(|| DeliveryError::BadUri(uri.to_string()))?;
    let client = client.ok_or(DeliveryError::NoTrustAnchors)?;
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver
            .addrs(&host)
            .await
            .map_err(|error| DeliveryError::Dns {
                host: host.clone(),
                error,
            })?,
    };
    let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| (ip, port).into()).collect();
    let response = client
        .post(&host, &addrs, &path, GZIP_MEDIA_TYPE, gzip.to_vec())
        .await?;
    if (200..300).contains(&response.status) {
        Ok(format!("HTTP {}", response.status))
    } else {
        Err(DeliveryError::Status(response.status))
    }
}

/// What a mailed report is made of.
pub struct MailedReport<'a> {
    pub reporting: &'a TlsReporting,
    /// The policy domain.
    pub domain: &'a str,
    pub report_id: &'a str,
    /// The attachment's name (the stored file's).
    pub file_name: &'a str,
    pub gzip: &'a [u8],
    /// The `mailto:` address.
    pub to: &'a str,
}

impl MailedReport<'_> {
    /// The RFC 8460 §5.3 message: `multipart/report; report-type="tlsrpt"`, a text part and the
    /// report as an `application/tlsrpt+gzip` attachment; `TLS-Required: No` (RFC 8689) so that
    /// a report is not held up by the very failures it reports. CRLF line endings.
    pub fn message(&self, now: time::OffsetDateTime) -> Vec<u8> {
        let r = self.reporting;
        let token = random_hex(8);
        let boundary = format!("tlsrpt-{token}");
        let date = rfc5322_date(now);
        let mut m = String::new();
        let mut header = |name: &str, value: &str| {
            m.push_str(name);
            m.push_str(": ");
            m.push_str(value);
            m.push_str("\r\n");
        };
        header("From", &r.from);
        header("To", self.to);
        header("Date", &date);
        header(
            "Subject",
            &format!(
                "Report Domain: {} Submitter: {} Report-ID: <{}>",
                self.domain, r.submitter, self.report_id
            ),
        );
        header(
            "Message-ID",
            &format!("<{}.{token}@{}>", now.unix_timestamp(), r.submitter),
        );
        header("MIME-Version", "1.0");
        header("TLS-Report-Domain", self.domain);
        header("TLS-Report-Submitter", &r.submitter);
        header("TLS-Required", "No");
        header(
            "Content-Type",
            &format!("multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\""),
        );
        m.push_str("\r\nThis is a multipart message in MIME format.\r\n\r\n");
        m.push_str(&format!(
            "--{boundary}\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\n\
             This is an aggregate TLS report (RFC 8460) from {} for {},\r\n\
             attached as {}.\r\n\r\n",
            r.submitter, self.domain, self.file_name
        ));
        m.push_str(&format!(
            "--{boundary}\r\n\
             Content-Type: {GZIP_MEDIA_TYPE}; name=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n",
            name = self.file_name
        ));
        let encoded = base64::engine::general_purpose::STANDARD.encode(self.gzip);
        for chunk in encoded.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            m.push_str("\r\n");
        }
        m.push_str(&format!("--{boundary}--\r\n"));
        m.into_bytes()
    }
}

/// Hands `message` to the relay `send_via` for `to`, from `from` (plain SMTP: the relay is
/// ours, e.g. the legacy MTA, which queues and retries). `Ok`: the relay's final reply.
pub async fn mailto(
    send_via: Option<SocketAddr>,
    helo: &str,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<String, DeliveryError> {
    let relay = send_via.ok_or(DeliveryError::NoRelay)?;
    tokio::time::timeout(DELIVERY_TIMEOUT, smtp_send(relay, helo, from, to, message))
        .await
        .unwrap_or(Err(DeliveryError::Timeout(DELIVERY_TIMEOUT)))
}

async fn smtp_send(
    relay: SocketAddr,
    helo: &str,
    from: &str,
    to: &str,
    message: &[u8],
) -> Result<String, DeliveryError> {
    const MAX_LINE: usize = 4096;
    let io = |e: &dyn std::fmt::Display| DeliveryError::Relay(relay, e.to_string());
    let stream = TcpStream::connect(relay).await.map_err(|e| io(&e))?;
    let mut peer = LineReader::new(stream);
    let expect = |command: &'static str, reply: Reply, ok: &[u16]| {
        if ok.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(DeliveryError::Refused {
                relay,
                command,
                reply: describe(&reply),
            })
        }
    };
    let greeting = Reply::read(&mut peer, MAX_LINE).await.map_err(|e| io(&e))?;
    expect("the connection", greeting, &[220])?;
    let steps: [(&'static str, String, &[u16]); 4] = [
        ("EHLO", format!("EHLO {helo}"), &[250]),
        ("MAIL", format!("MAIL FROM:<{from}>"), &[250]),
        ("RCPT", format!("RCPT TO:<{to}>"), &[250, 251]),
        ("DATA", "DATA".to_string(), &[354]),
    ];
    for (name, command, ok) in steps {
        let stream = peer.get_mut();
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .await
            .map_err(|e| io(&e))?;
        let reply = Reply::read(&mut peer, MAX_LINE).await.map_err(|e| io(&e))?;
        expect(name, reply, ok)?;
    }
    let mut body = dot_stuff(message);
    body.extend_from_slice(b".\r\n");
    peer.get_mut().write_all(&body).await.map_err(|e| io(&e))?;
    let reply = Reply::read(&mut peer, MAX_LINE).await.map_err(|e| io(&e))?;
    let accepted = expect("the message", reply, &[250])?;
    let _ = peer.get_mut().write_all(b"QUIT\r\n").await;
    Ok(describe(&accepted))
}

/// RFC 5321 §4.5.2: a line that starts with a dot gets another.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn describe(reply: &Reply) -> String {
    let text = reply
        .lines
        .last()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    format!("{} {text}", reply.code).trim_end().to_string()
}

/// `Sun, 06 Dec 2026 07:09:51 +0000` (RFC 5322 §3.3), in UTC.
fn rfc5322_date(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    let weekday = &now.weekday().to_string()[..3];
    let month = &now.month().to_string()[..3];
    format!(
        "{weekday}, {:02} {month} {} {:02}:{:02}:{:02} +0000",
        now.day(),
        now.year(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "deliver_tests.rs"]
mod tests;
