//! The connection to an inbound listener's backend, and how the backend learns who the client
//! is (`client_address`): not at all, or by a PROXY header written before anything else. The
//! XCLIENT mode speaks SMTP, so it lives with the dialogue (`inbound::xclient`).

use super::client::Origin;
use super::proxy_protocol::{encode_v1, encode_v2};
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};
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
    /// The backend connection is made from the client's own IP address (IP_TRANSPARENT), so an
    /// unmodified backend sees the client; its replies must be routed back through us.
    #[serde(rename = "transparent")]
    Transparent,
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
            ClientAddress::Transparent => "transparent",
            ClientAddress::Xclient => "xclient",
        }
    }

    /// The bytes the backend must read before its greeting is relayed, if any: the client and
    /// the address it reached us at.
    fn preamble(self, origin: &Origin, reached: SocketAddr) -> Option<Vec<u8>> {
        match self {
            ClientAddress::ProxyV1 => Some(encode_v1(origin.client, reached)),
            ClientAddress::ProxyV2 => Some(encode_v2(origin.client, reached)),
            ClientAddress::None | ClientAddress::Transparent | ClientAddress::Xclient => None,
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
            let mut stream = match mode {
                ClientAddress::Transparent => connect_from(origin.client, addr).await?,
                _ => TcpStream::connect(addr).await?,
            };
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

/// A connection to `backend` from the client's own address (any port): IP_TRANSPARENT lets us
/// bind an address that is not ours. The backend's replies reach this socket only if routing
/// sends them through us (README: the fwmark rule).
async fn connect_from(client: SocketAddr, backend: SocketAddr) -> std::io::Result<TcpStream> {
    if client.is_ipv4() != backend.is_ipv4() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("client_address = \"transparent\": the client {client} and the backend {backend} are of different IP families"),
        ));
    }
    let socket = transparent_socket(backend)?;
    socket.bind(&SocketAddr::new(client.ip(), 0).into())?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    socket.connect(backend).await
}

/// A TCP socket of `toward`'s family with IP_TRANSPARENT set: this fails without CAP_NET_ADMIN
/// or CAP_NET_RAW. Linux takes the IPv4 option on an IPv6 socket too (the same flag as
/// IPV6_TRANSPARENT).
fn transparent_socket(toward: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(toward),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_ip_transparent(true)?;
    Ok(socket)
}

/// Whether this process may make transparent connections towards `backend`'s family: checked
/// at start (and reload) for every `client_address = "transparent"` listener, so a missing
/// capability is a start-up error, never a silent fallback.
pub fn check_transparent(backend: SocketAddr) -> std::io::Result<()> {
    transparent_socket(backend).map(drop)
}
