//! The connection to an inbound listener's backend, and how the backend learns who the client
//! is (`client_address`): not at all, or by a PROXY header written before anything else. The
//! XCLIENT mode speaks SMTP, so it lives with the dialogue (`inbound::xclient`).

use super::client::Origin;
use super::proxy_protocol::{encode_v1, encode_v2};
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `[[inbound]] client_address`: how the backend learns the client's address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ClientAddress {
    /// The backend sees the proxy's address.
    #[default]
    #[serde(rename = "none")]
    None,
    /// A PROXY v1 line first (Postfix `smtpd_upstream_proxy_protocol = haproxy`).
    #[serde(rename = "proxy-v1")]
    ProxyV1,
    /// A PROXY v2 header first (the same Postfix setting reads both).
    #[serde(rename = "proxy-v2")]
    ProxyV2,
    /// Postfix's XCLIENT command at the client's first EHLO, where the backend offers it
    /// (`inbound::xclient`).
    #[serde(rename = "xclient")]
    Xclient,
}

impl ClientAddress {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAddress::None => "none",
            ClientAddress::ProxyV1 => "proxy-v1",
            ClientAddress::ProxyV2 => "proxy-v2",
            ClientAddress::Xclient => "xclient",
        }
    }

    /// The bytes the backend must read before its greeting is relayed, if any: the client and
    /// the address it reached us at.
    fn preamble(self, origin: &Origin, reached: SocketAddr) -> Option<Vec<u8>> {
        match self {
            ClientAddress::ProxyV1 => Some(encode_v1(origin.client, reached)),
            ClientAddress::ProxyV2 => Some(encode_v2(origin.client, reached)),
            ClientAddress::None | ClientAddress::Xclient => None,
        }
    }
}

/// Why no backend could be had: the last address tried and what went wrong there.
#[derive(Debug)]
pub struct Unreachable {
    pub addr: SocketAddr,
    pub why: String,
}

/// Connects to `addrs` in order (a host name may have several) within `timeout` each, and
/// writes the `mode`'s PROXY header first. `reached`: where the client's connection arrived
/// (the header's destination).
pub async fn connect(
    addrs: &[SocketAddr],
    timeout: Duration,
    mode: ClientAddress,
    origin: &Origin,
    reached: SocketAddr,
) -> Result<(TcpStream, SocketAddr), Unreachable> {
    let preamble = mode.preamble(origin, reached);
    let mut failure = None;
    for &addr in addrs {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            if let Some(header) = &preamble {
                stream.write_all(header).await?;
            }
            Ok::<_, std::io::Error>(stream)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => failure = Some((addr, e.to_string())),
            Err(_) => failure = Some((addr, "connect timed out".into())),
        }
    }
    let (addr, why) = failure.unwrap_or_else(|| {
        (
            addrs
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            "no address".into(),
        )
    });
    Err(Unreachable { addr, why })
}
