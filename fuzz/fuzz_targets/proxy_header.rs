//! `net::proxy_protocol::scan` on the first bytes of a trusted balancer's connection, which
//! `net::client` judges as they arrive:
//! - no panic, and a complete header never claims more than the input or the protocol's bound;
//! - a verdict, once given, stands: every longer input gets the same one (so judging a prefix
//!   as it arrives equals judging it whole), and every prefix shorter than a complete header
//!   needs more (so reading stops exactly at the header's end);
//! - headers we encode for a backend scan back to the addresses encoded.

#![no_main]

use libfuzzer_sys::fuzz_target;
use starttls_proxy::net::proxy_protocol::{
    encode_v1, encode_v2, scan, Header, Scan, V1_MAX_LEN, V2_MAX_LEN,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fuzz_target!(|bytes: &[u8]| {
    let whole = scan(bytes);
    if let Scan::Complete { len, header } = &whole {
        assert!(*len <= bytes.len());
        let bound = match header {
            Header::Proxied { version, .. } | Header::Local { version } => match version {
                starttls_proxy::net::proxy_protocol::Version::V1 => V1_MAX_LEN,
                starttls_proxy::net::proxy_protocol::Version::V2 => V2_MAX_LEN,
            },
        };
        assert!(*len <= bound, "{len} over {bound}");
        for cut in 0..*len {
            assert_eq!(
                scan(&bytes[..cut]),
                Scan::NeedMore,
                "prefix {cut} of a {len}-byte header"
            );
        }
    }
    // Every prefix that already has a verdict has the whole input's.
    for cut in 0..bytes.len().min(256) {
        match scan(&bytes[..cut]) {
            Scan::NeedMore => {}
            decided => assert_eq!(decided, whole, "verdict at {cut} changed"),
        }
    }
    round_trip(bytes);
});

fn round_trip(bytes: &[u8]) {
    if bytes.len() < 36 {
        return;
    }
    let ip = |b: &[u8], v6: bool| -> IpAddr {
        if v6 {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            IpAddr::V6(Ipv6Addr::from(octets))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let client = SocketAddr::new(ip(&bytes[0..16], bytes[32] & 1 == 1), port(&bytes[32..34]));
    let local = SocketAddr::new(ip(&bytes[16..32], bytes[32] & 2 == 2), port(&bytes[34..36]));
    for encoded in [encode_v1(client, local), encode_v2(client, local)] {
        match scan(&encoded) {
            Scan::Complete {
                len,
                header: Header::Proxied { source, .. },
            } => {
                assert_eq!(len, encoded.len());
                assert_eq!(source.ip().to_canonical(), client.ip().to_canonical());
                assert_eq!(source.port(), client.port());
            }
            other => panic!("{client} {local} encoded as {encoded:?} scans as {other:?}"),
        }
    }
}
