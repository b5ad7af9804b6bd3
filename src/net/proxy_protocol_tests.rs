use super::*;

fn v2(version_command: u8, family_protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = V2_SIGNATURE.to_vec();
    bytes.push(version_command);
    bytes.push(family_protocol);
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

fn v4_body() -> Vec<u8> {
    let mut body = vec![192, 0, 2, 7, 10, 0, 0, 25];
    body.extend_from_slice(&40000u16.to_be_bytes());
    body.extend_from_slice(&25u16.to_be_bytes());
    body
}

fn reason(scan: Scan) -> &'static str {
    match scan {
        Scan::Invalid(r) => r.reason(),
        other => panic!("not invalid: {other:?}"),
    }
}

#[test]
fn v1_tcp4_names_the_client_and_ends_at_its_lf() {
    let mut bytes = b"PROXY TCP4 192.0.2.7 10.0.0.25 40000 25\r\n".to_vec();
    let len = bytes.len();
    bytes.extend_from_slice(b"EHLO early\r\n");
    assert_eq!(
        scan(&bytes),
        Scan::Complete {
            len,
            header: Header::Proxied {
                version: Version::V1,
                source: "192.0.2.7:40000".parse().unwrap(),
                destination: "10.0.0.25:25".parse().unwrap(),
            }
        }
    );
}

#[test]
fn v1_tcp6_and_unknown() {
    let line = b"PROXY TCP6 2001:db8::7 2001:db8::25 40000 25\r\n";
    match scan(line) {
        Scan::Complete {
            header: Header::Proxied { source, .. },
            ..
        } => assert_eq!(source, "[2001:db8::7]:40000".parse().unwrap()),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        scan(b"PROXY UNKNOWN\r\n"),
        Scan::Complete {
            len: 15,
            header: Header::Local {
                version: Version::V1
            }
        }
    );
}

#[test]
fn every_prefix_of_a_valid_header_needs_more() {
    let headers = [
        b"PROXY TCP4 192.0.2.7 10.0.0.25 40000 25\r\n".to_vec(),
        v2(0x21, 0x11, &v4_body()),
        v2(0x20, 0x00, &[]),
    ];
    for header in headers {
        for cut in 0..header.len() {
            assert_eq!(scan(&header[..cut]), Scan::NeedMore, "{:?}", &header[..cut]);
        }
        assert!(matches!(scan(&header), Scan::Complete { len, .. } if len == header.len()));
    }
}

#[test]
fn table_of_bad_headers_and_their_reasons() {
    let long = format!("PROXY TCP4 {} 10.0.0.25 1 2\r\n", "1".repeat(100));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "smtp instead of a header",
            b"EHLO client\r\n".to_vec(),
            "missing",
        ),
        ("lower-case proxy", b"proxy TCP4".to_vec(), "missing"),
        (
            "v2 signature broken",
            b"\r\n\r\n\0\r\nQUIX\n".to_vec(),
            "missing",
        ),
        ("v1 over 107 bytes", long.into_bytes(), "invalid_v1"),
        (
            "v1 107 bytes without end",
            [b"PROXY ".as_slice(), &[b'x'; 101]].concat(),
            "invalid_v1",
        ),
        (
            "v1 bad protocol",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
            "invalid_v1",
        ),
        (
            "v1 bad address",
            b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".to_vec(),
            "invalid_v1",
        ),
        (
            "v1 port too big",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(),
            "invalid_v1",
        ),
        (
            "v1 bare LF early",
            b"PROXY TCP4 1.2.3.4\n".to_vec(),
            "invalid_v1",
        ),
        (
            "v1 family mismatch",
            b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
            "invalid_v1",
        ),
        ("v2 version 1", v2(0x11, 0x11, &v4_body()), "invalid_v2"),
        ("v2 version 3", v2(0x31, 0x11, &v4_body()), "invalid_v2"),
        ("v2 command 2", v2(0x22, 0x11, &v4_body()), "invalid_v2"),
        ("v2 family 4", v2(0x21, 0x41, &v4_body()), "invalid_v2"),
        ("v2 protocol 3", v2(0x21, 0x13, &v4_body()), "invalid_v2"),
        (
            "v2 short address block",
            v2(0x21, 0x11, &[1, 2, 3, 4]),
            "invalid_v2",
        ),
        (
            "v2 short ipv6 block",
            v2(0x21, 0x21, &v4_body()),
            "invalid_v2",
        ),
        (
            "v2 TLV overrunning the length",
            v2(0x21, 0x11, &[v4_body(), vec![0x04, 0x00, 0x09, 1]].concat()),
            "invalid_v2",
        ),
        (
            "v2 TLV header cut short",
            v2(0x21, 0x11, &[v4_body(), vec![0x04, 0x00]].concat()),
            "invalid_v2",
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(reason(scan(&bytes)), want, "{what}");
    }
}

#[test]
fn v2_local_is_a_health_check_and_unspec_uses_the_connection() {
    assert_eq!(
        scan(&v2(0x20, 0x00, &[])),
        Scan::Complete {
            len: 16,
            header: Header::Local {
                version: Version::V2
            }
        }
    );
    // LOCAL with addresses (HAProxy's health checks may carry them): still the peer.
    assert!(matches!(
        scan(&v2(0x20, 0x11, &v4_body())),
        Scan::Complete {
            header: Header::Local { .. },
            ..
        }
    ));
    assert!(matches!(
        scan(&v2(0x21, 0x00, &[])),
        Scan::Complete {
            header: Header::Local { .. },
            ..
        }
    ));
}

#[test]
fn v2_with_valid_tlvs_is_complete_and_claims_only_itself() {
    let body = [v4_body(), vec![0x04, 0x00, 0x01, 0x2a]].concat();
    let mut bytes = v2(0x21, 0x11, &body);
    let len = bytes.len();
    bytes.extend_from_slice(b"EHLO x\r\n");
    match scan(&bytes) {
        Scan::Complete {
            len: got,
            header: Header::Proxied { source, .. },
        } => {
            assert_eq!(got, len);
            assert_eq!(source, "192.0.2.7:40000".parse().unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn encoded_headers_scan_back_to_the_same_addresses() {
    let pairs = [
        ("192.0.2.7:40000", "10.0.0.25:25"),
        ("[2001:db8::7]:40000", "[2001:db8::25]:25"),
        ("[2001:db8::7]:40000", "10.0.0.25:25"),
    ];
    for (client, local) in pairs {
        let client: SocketAddr = client.parse().unwrap();
        let local: SocketAddr = local.parse().unwrap();
        for bytes in [encode_v1(client, local), encode_v2(client, local)] {
            match scan(&bytes) {
                Scan::Complete {
                    len,
                    header: Header::Proxied { source, .. },
                } => {
                    assert_eq!(len, bytes.len());
                    assert_eq!(source.ip().to_canonical(), client.ip());
                    assert_eq!(source.port(), client.port());
                }
                other => panic!("{client} {local}: {other:?}"),
            }
        }
    }
    assert_eq!(
        encode_v1(
            "192.0.2.7:40000".parse().unwrap(),
            "10.0.0.25:25".parse().unwrap()
        ),
        b"PROXY TCP4 192.0.2.7 10.0.0.25 40000 25\r\n"
    );
}

#[test]
fn trusted_balancers_match_networks_and_mapped_addresses() {
    let trusted = TrustedBalancers::new(vec![
        "10.0.0.0/24".parse().unwrap(),
        "2001:db8::/64".parse().unwrap(),
    ]);
    assert!(trusted.trusts("10.0.0.9".parse().unwrap()));
    assert!(trusted.trusts("::ffff:10.0.0.9".parse().unwrap()));
    assert!(trusted.trusts("2001:db8::1".parse().unwrap()));
    assert!(!trusted.trusts("10.0.1.9".parse().unwrap()));
    assert!(!TrustedBalancers::default().trusts("10.0.0.9".parse().unwrap()));
}

#[test]
fn a_v2_header_read_as_lines_is_recognised_after_its_empty_line() {
    let header = v2(0x21, 0x11, &v4_body());
    let mut after = header[2..].to_vec();
    assert_eq!(v2_rest_after_empty_line(&after), Some(header.len() - 2));
    after.extend_from_slice(b"EHLO x\r\n");
    assert_eq!(v2_rest_after_empty_line(&after), Some(header.len() - 2));
    assert_eq!(v2_rest_after_empty_line(&header[2..10]), None);
    assert_eq!(v2_rest_after_empty_line(b"EHLO x\r\n"), None);
    assert_eq!(v2_rest_after_empty_line(b""), None);
}
