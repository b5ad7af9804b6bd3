//! The PROXY protocol (HAProxy's proxy-protocol.txt), v1 and v2, as pure functions: what a
//! trusted balancer's first bytes say about the client, and the header the proxy sends a backend
//! that wants one (`client_address = "proxy-v1" | "proxy-v2"`). The `ppp` crate knows the
//! format; this module adds what a stream needs (a header is recognised, bounded and judged
//! before it is complete) and the contract's error reasons. No IO: `net::client` reads.

use ipnet::IpNet;
use ppp::{v1, v2};
use std::net::{IpAddr, SocketAddr};

/// A v1 header is one line of at most 107 bytes, CRLF included (proxy-protocol.txt §2.1).
pub const V1_MAX_LEN: usize = 107;
/// The v2 signature: its `QUIT\n` makes a server that does not expect a header hang up.
pub const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;
/// Signature, version/command, family/protocol and the 16-bit length.
const V2_FIXED_LEN: usize = 16;
/// The largest v2 header: the fixed part and what its 16-bit length can announce.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// Which version of the protocol a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// What a complete, valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer relays a TCP connection of the client at `source`, addressed to
    /// `destination`.
    Proxied {
        version: Version,
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The connection's own endpoints stand: v2 LOCAL (a balancer's health check), v1
    /// UNKNOWN, or v2 PROXY for something other than TCP over IP (the specification says to
    /// use the real connection's addresses then).
    Local { version: Version },
}

/// Why a trusted balancer's connection is closed without a reply; each is a `reason` of
/// `starttls_proxy_proxy_protocol_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The first bytes cannot begin a header (or none came at all).
    #[error("no PROXY header")]
    Missing,
    /// The header began but was not complete within `handshake_timeout`.
    #[error("PROXY header not complete in time")]
    Timeout,
    /// The connection closed in the middle of the header.
    #[error("connection closed inside the PROXY header")]
    Truncated,
    #[error("invalid PROXY v1 header: {0}")]
    InvalidV1(String),
    #[error("invalid PROXY v2 header: {0}")]
    InvalidV2(String),
}

impl Rejected {
    /// The metric label, from the contract's fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Missing => "missing",
            Rejected::Timeout => "timeout",
            Rejected::Truncated => "truncated",
            Rejected::InvalidV1(_) => "invalid_v1",
            Rejected::InvalidV2(_) => "invalid_v2",
        }
    }

    /// Every reason, to show the counters at zero before the first error.
    pub const REASONS: [&'static str; 5] = [
        "missing",
        "timeout",
        "invalid_v1",
        "invalid_v2",
        "truncated",
    ];
}

/// What the bytes received so far come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Every byte so far belongs to a header that is not complete yet: they may be consumed,
    /// and more must be read.
    NeedMore,
    /// A valid header fills the first `len` bytes; what follows is the client's.
    Complete {
        len: usize,
        header: Header,
    },
    Invalid(Rejected),
}

/// Judges the first bytes of a connection from a trusted balancer. Never asks for more than
/// `V1_MAX_LEN` bytes of a v1 header or `V2_MAX_LEN` of a v2 one, and never claims a byte
/// after the header's end (a v1 header ends at its first LF).
pub fn scan(buf: &[u8]) -> Scan {
    match buf.first() {
        None => Scan::NeedMore,
        Some(b'\r') => scan_v2(buf),
        Some(b'P') => scan_v1(buf),
        Some(_) => Scan::Invalid(Rejected::Missing),
    }
}

fn scan_v2(buf: &[u8]) -> Scan {
    let signature = buf.len().min(V2_SIGNATURE.len());
    if buf[..signature] != V2_SIGNATURE[..signature] {
        return Scan::Invalid(Rejected::Missing);
    }
    if buf.len() < V2_FIXED_LEN {
        return Scan::NeedMore;
    }
    let parsed = match v2::Header::try_from(buf) {
        Ok(parsed) => parsed,
        Err(v2::ParseError::Incomplete(_) | v2::ParseError::Partial(..)) => return Scan::NeedMore,
        Err(e) => return Scan::Invalid(Rejected::InvalidV2(e.to_string())),
    };
    // ppp reads TLVs lazily; one that overruns the announced length makes the header invalid.
    if let Some(Err(e)) = parsed.tlvs().find(Result::is_err) {
        return Scan::Invalid(Rejected::InvalidV2(e.to_string()));
    }
    let header = match (parsed.command, parsed.protocol, parsed.addresses) {
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => Header::Proxied {
            version: Version::V2,
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => Header::Proxied {
            version: Version::V2,
            source: SocketAddr::from((a.source_address, a.source_port)),
            destination: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        _ => Header::Local {
            version: Version::V2,
        },
    };
    Scan::Complete {
        len: parsed.header.len(),
        header,
    }
}

fn scan_v1(buf: &[u8]) -> Scan {
    let signature = buf.len().min(V1_SIGNATURE.len());
    if buf[..signature] != V1_SIGNATURE[..signature] {
        return Scan::Invalid(Rejected::Missing);
    }
    // Judged whole: ppp's own partial-line detection takes `... 40000 ` for a bad port.
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(lf) if lf < V1_MAX_LEN => &buf[..=lf],
        None if buf.len() < V1_MAX_LEN => return Scan::NeedMore,
        _ => {
            return Scan::Invalid(Rejected::InvalidV1(format!(
                "no line end within {V1_MAX_LEN} bytes"
            )))
        }
    };
    match v1::Header::try_from(line) {
        // A CR inside the line ends ppp's header early; the line is ours up to its LF.
        Ok(parsed) if parsed.header.len() != line.len() => {
            Scan::Invalid(Rejected::InvalidV1("bytes after the CR".to_string()))
        }
        Ok(parsed) => {
            let header = match parsed.addresses {
                v1::Addresses::Tcp4(a) => Header::Proxied {
                    version: Version::V1,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Tcp6(a) => Header::Proxied {
                    version: Version::V1,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Unknown => Header::Local {
                    version: Version::V1,
                },
            };
            Scan::Complete {
                len: line.len(),
                header,
            }
        }
        Err(e) => Scan::Invalid(Rejected::InvalidV1(e.to_string())),
    }
}

/// Where no header is expected, a line reader sees a v2 header as an empty line (the
/// signature's first CRLF) followed by `after_empty_line`: how many of those bytes are the
/// rest of the header, when they begin like one and its length is already there.
pub fn v2_rest_after_empty_line(after_empty_line: &[u8]) -> Option<usize> {
    let signature_rest = &V2_SIGNATURE[2..];
    let fixed_rest = V2_FIXED_LEN - 2;
    if after_empty_line.len() < fixed_rest || !after_empty_line.starts_with(signature_rest) {
        return None;
    }
    let len = u16::from_be_bytes([
        after_empty_line[fixed_rest - 2],
        after_empty_line[fixed_rest - 1],
    ]);
    Some(fixed_rest + usize::from(len))
}

/// The v1 line telling a backend about `client`, which reached us at `local` (`TCP4` or
/// `TCP6`; a mixed pair is written as IPv6 with the IPv4 one mapped, as the format needs one
/// family).
pub fn encode_v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    v1::Addresses::from((client, local))
        .to_string()
        .into_bytes()
}

/// The v2 PROXY header (TCP over IPv4 or IPv6) telling a backend about `client`.
pub fn encode_v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    let version_command = v2::Version::Two | v2::Command::Proxy;
    v2::Builder::with_addresses(version_command, v2::Protocol::Stream, (client, local))
        .build()
        // Building into a Vec writes no more than the fixed part and 36 address bytes.
        .unwrap_or_default()
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    match (a, b) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (a, b),
        _ => (to_v6(a), to_v6(b)),
    }
}

fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    }
}

/// `proxy_protocol_from`: the networks whose connections must begin with a PROXY header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedBalancers {
    networks: Vec<IpNet>,
}

impl TrustedBalancers {
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self { networks }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether a connection from `ip` must carry a header (an IPv4-mapped IPv6 peer counts
    /// as its IPv4 address, as a dual-stack listener reports IPv4 clients that way).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.networks.iter().any(|n| n.contains(&ip))
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
