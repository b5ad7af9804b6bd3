//! Who a session's client is: the TCP peer, or, on a connection from a trusted balancer
//! (`proxy_protocol_from`), the address its PROXY header carries. Read before anything is sent
//! to the peer, so the header is the first thing on the wire, as the protocol requires.

use super::proxy_protocol::{scan, Header, Rejected, Scan, TrustedBalancers};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How much one look at the socket takes: a v1 header, or a v2 one without large TLVs.
const PEEK_CHUNK: usize = 512;

/// The ends of an accepted connection as the session must report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer: the client itself, or the balancer in front of it (log field `peer=`).
    pub peer: SocketAddr,
    /// The real client (log field `client=`, session results, `client_address`): the peer,
    /// unless a trusted balancer's header said otherwise.
    pub client: SocketAddr,
    /// The header a trusted balancer sent, if one did.
    pub header: Option<Header>,
}

impl Origin {
    /// Where the client addressed its connection, as a balancer's header says (`None`: the
    /// connection's own local address).
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.header {
            Some(Header::Proxied { destination, .. }) => Some(canonical(destination)),
            _ => None,
        }
    }
}

impl Origin {
    /// A connection that speaks for itself.
    pub fn direct(peer: SocketAddr) -> Origin {
        let peer = canonical(peer);
        Origin {
            peer,
            client: peer,
            header: None,
        }
    }
}

/// An IPv4 client of a dual-stack listener as the IPv4 address it is (`1.2.3.4:5`, not
/// `[::ffff:1.2.3.4]:5`), so logs, results and headers sent on name it one way.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The origin of a freshly accepted connection: from a trusted balancer, its header is read
/// (within `timeout`) and consumed, so the stream continues with the client's own bytes;
/// from anyone else nothing is read.
pub async fn identify(
    stream: &mut TcpStream,
    peer: SocketAddr,
    trusted: &TrustedBalancers,
    timeout: Duration,
) -> Result<Origin, Rejected> {
    let direct = Origin::direct(peer);
    if !trusted.trusts(direct.peer.ip()) {
        return Ok(direct);
    }
    let header = read_header(stream, timeout).await?;
    let client = match header {
        Header::Proxied { source, .. } => canonical(source),
        Header::Local { .. } => direct.peer,
    };
    Ok(Origin {
        client,
        header: Some(header),
        ..direct
    })
}

/// Reads exactly the header: each look at the socket (MSG_PEEK) is judged first, and only
/// bytes that belong to the header are taken from it, so the first byte of the client's own
/// dialogue stays in the socket for the session (and for splice(2)).
async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Header, Rejected> {
    let deadline = Instant::now() + timeout;
    let mut taken: Vec<u8> = Vec::new();
    let mut chunk = [0u8; PEEK_CHUNK];
    // The contract's "not complete within handshake_timeout" includes a peer that sent nothing.
    let cut_short = |taken: &[u8], at_deadline: bool| match (taken.is_empty(), at_deadline) {
        (_, true) => Rejected::Timeout,
        (true, false) => Rejected::Missing,
        (false, false) => Rejected::Truncated,
    };
    loop {
        let seen = match tokio::time::timeout_at(deadline, stream.peek(&mut chunk)).await {
            Err(_) => return Err(cut_short(&taken, true)),
            Ok(Err(_)) | Ok(Ok(0)) => return Err(cut_short(&taken, false)),
            Ok(Ok(n)) => n,
        };
        let before = taken.len();
        taken.extend_from_slice(&chunk[..seen]);
        let wanted = match scan(&taken) {
            Scan::Invalid(rejected) => return Err(rejected),
            Scan::NeedMore => seen,
            Scan::Complete { len, header } => {
                consume(stream, &mut chunk[..len - before], &taken).await?;
                return Ok(header);
            }
        };
        consume(stream, &mut chunk[..wanted], &taken).await?;
    }
}

/// Takes from the socket what a peek just showed (it is there: reading cannot block).
async fn consume(stream: &mut TcpStream, buf: &mut [u8], taken: &[u8]) -> Result<(), Rejected> {
    stream.read_exact(buf).await.map(|_| ()).map_err(|_| {
        if taken.is_empty() {
            Rejected::Missing
        } else {
            Rejected::Truncated
        }
    })
}
