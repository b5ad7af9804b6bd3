//! `client_address = "xclient"`: Postfix's XCLIENT (XCLIENT_README), by which a trusted proxy
//! tells the backend who its client is. At the client's first EHLO (or HELO), before that
//! command is forwarded, the proxy says EHLO itself; if the reply offers XCLIENT it sends the
//! client's ADDR, PORT, HELO and NAME in one command, which the backend applies whole or not at
//! all, and answers with a new greeting (220) that the client never sees: the client's own
//! EHLO, forwarded next, is the new EHLO that greeting asks for. The attributes hold for the
//! rest of the connection, so nothing is replayed after STARTTLS: the client's EHLO inside TLS
//! is forwarded as it is. A backend that does not offer XCLIENT, or refuses it, keeps the
//! proxy as its client: the session goes on as `none`, counted and logged.

use crate::smtp::{ehlo, Reply};
use std::net::{IpAddr, SocketAddr};

/// How the backend came out of the introduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introduction {
    /// XCLIENT accepted: the backend now sees the client.
    Accepted,
    /// The backend's EHLO reply has no XCLIENT (or none with ADDR): it does not trust us.
    NotOffered,
    /// XCLIENT was sent and answered with something other than 220.
    Refused(Reply),
}

impl Introduction {
    /// `reason` of `event=xclient_unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Introduction::Accepted => "accepted",
            Introduction::NotOffered => "not_offered",
            Introduction::Refused(_) => "refused",
        }
    }
}

/// The XCLIENT command line for `client`, who said `EHLO helo` (`esmtp`) or `HELO helo`, with
/// only the attributes `ehlo_reply` offers; `None` when the reply offers no XCLIENT with ADDR.
pub fn command(
    ehlo_reply: &Reply,
    client: SocketAddr,
    helo: &[u8],
    esmtp: bool,
) -> Option<Vec<u8>> {
    let offered = ehlo::offered(ehlo_reply, b"XCLIENT")?;
    let offers = |name: &[u8]| offered.iter().any(|o| o == name);
    if !offers(b"ADDR") {
        return None;
    }
    let mut line = b"XCLIENT ADDR=".to_vec();
    match client.ip() {
        IpAddr::V4(v4) => line.extend_from_slice(v4.to_string().as_bytes()),
        // XCLIENT_README: an IPv6 address carries the `IPV6:` prefix.
        IpAddr::V6(v6) => line.extend_from_slice(format!("IPV6:{v6}").as_bytes()),
    }
    if offers(b"PORT") {
        line.extend_from_slice(format!(" PORT={}", client.port()).as_bytes());
    }
    let helo = helo.trim_ascii();
    if offers(b"HELO") && !helo.is_empty() {
        line.extend_from_slice(b" HELO=");
        xtext(helo, &mut line);
    }
    // No reverse look-up here: the backend is told the name is unknown rather than left with
    // the proxy's own name next to the client's address.
    if offers(b"NAME") {
        line.extend_from_slice(b" NAME=[UNAVAILABLE]");
    }
    if offers(b"PROTO") {
        line.extend_from_slice(if esmtp {
            b" PROTO=ESMTP"
        } else {
            b" PROTO=SMTP"
        });
    }
    Some(line)
}

/// RFC 3461 §4 xtext, as XCLIENT wants attribute values: `+` and `=`, and bytes outside
/// `!`..`~`, as `+HH`.
fn xtext(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("+{b:02X}").as_bytes());
        }
    }
}

#[cfg(test)]
#[path = "xclient_tests.rs"]
mod tests;
