use super::*;
use crate::test_support::{pair, pattern, talk};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream as ClientStream;
use tokio_rustls::TlsConnector;

struct Pki {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn pki(version: &'static rustls::SupportedProtocolVersion) -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = CertificateDer::from(cert.der().to_vec());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    // As in the product (tls::server_config); the client leaves no unread tickets behind.
    server.send_tls13_tickets = 0;
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

/// A handshake between a tokio-rustls client and our server stream.
async fn connected(
    version: &'static rustls::SupportedProtocolVersion,
) -> (ClientStream<TcpStream>, TlsServerStream, Negotiated) {
    let pki = pki(version);
    let (client_tcp, server_tcp) = pair().await;
    let connector = TlsConnector::from(pki.client.clone());
    let name = ServerName::try_from("mx.test").unwrap();
    let (client, server) = tokio::join!(
        connector.connect(name, client_tcp),
        accept(server_tcp, &pki.server)
    );
    let (server, negotiated) = server.unwrap();
    (client.unwrap(), server, negotiated)
}

fn holds_no_buffer(s: &TlsServerStream) -> bool {
    s.incoming.capacity() == 0 && s.plaintext.capacity() == 0 && s.outgoing.capacity() == 0
}

#[tokio::test]
async fn handshake_reports_version_suite_and_sni() {
    for (version, name) in [
        (&rustls::version::TLS13, "TLSv1.3"),
        (&rustls::version::TLS12, "TLSv1.2"),
    ] {
        let (_client, server, negotiated) = connected(version).await;
        assert_eq!(crate::tls::version_name(negotiated.version), name);
        assert!(negotiated.suite.is_some());
        assert_eq!(negotiated.sni.as_deref(), Some("mx.test"));
        assert!(holds_no_buffer(&server), "buffers held after the handshake");
    }
}

/// Megabytes each way at once, read through small buffers on our side (the leftover path) and
/// large ones on the client's, then close_notify each way.
#[tokio::test]
async fn bulk_both_ways_through_small_and_large_reads() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let (mut client, mut server, _) = connected(version).await;
        let up = pattern(3 * 1024 * 1024 + 11, 1);
        let down = pattern(1024 * 1024 + 5, 2);
        // Our side reads through a buffer smaller than a record: the leftover path.
        let (at_client, at_server) = tokio::join!(
            talk(&mut client, &up, 64 * 1024),
            talk(&mut server, &down, 700)
        );
        assert!(at_server == up, "client → server bytes differ");
        assert!(at_client == down, "server → client bytes differ");
        assert!(holds_no_buffer(&server), "buffers held after the transfer");
    }
}

/// The client's EHLO in the same flight as its Finished is kept for the first read, and a
/// server waiting for the next command holds no buffer.
#[tokio::test]
async fn data_with_the_finished_is_kept_and_nothing_is_held_while_idle() {
    let pki = pki(&rustls::version::TLS13);
    let (client_tcp, server_tcp) = pair().await;
    let connector = TlsConnector::from(pki.client.clone());
    let name = ServerName::try_from("mx.test").unwrap();
    let client = async {
        let mut client = connector.connect(name, client_tcp).await.unwrap();
        client.write_all(b"EHLO client.test\r\n").await.unwrap();
        client.flush().await.unwrap();
        client
    };
    let (mut client, server) = tokio::join!(client, accept(server_tcp, &pki.server));
    let (mut server, _) = server.unwrap();
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"EHLO client.test\r\n");
    server.write_all(b"250 mx.test\r\n").await.unwrap();
    server.flush().await.unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"250 mx.test\r\n");
    // Waiting for the next command: the read is pending and nothing is allocated.
    let waiting = tokio::time::timeout(Duration::from_millis(50), server.read(&mut buf)).await;
    assert!(waiting.is_err(), "read should be waiting");
    assert!(holds_no_buffer(&server), "buffers held while idle");
}

#[tokio::test]
async fn eof_without_close_notify_is_an_unexpected_eof() {
    let (client, mut server, _) = connected(&rustls::version::TLS13).await;
    let (tcp, _) = client.into_inner();
    drop(tcp);
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

/// Plaintext SMTP where a ClientHello belongs: an InvalidData error carrying rustls's error (for
/// the `not_tls` label), a fatal alert to the client, and every later call fails cleanly
/// instead of driving rustls again.
#[tokio::test]
async fn garbage_gets_an_alert_and_the_stream_stays_failed() {
    let pki = pki(&rustls::version::TLS13);
    let (mut client_tcp, server_tcp) = pair().await;
    client_tcp
        .write_all(b"EHLO this is not a ClientHello\r\n")
        .await
        .unwrap();
    let err = accept(server_tcp, &pki.server).await.err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(crate::tls::handshake_failure_reason(&err), "not_tls");
    let mut alert = Vec::new();
    client_tcp.read_to_end(&mut alert).await.unwrap();
    assert_eq!(
        alert.first(),
        Some(&0x15),
        "expected an alert record: {alert:?}"
    );
}

#[tokio::test]
async fn a_failed_stream_refuses_further_io_without_panicking() {
    let (client, mut server, _) = connected(&rustls::version::TLS13).await;
    let (mut tcp, _) = client.into_inner();
    // A record with a valid header but a body that cannot decrypt.
    let mut bogus = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bogus.extend_from_slice(&[0u8; 32]);
    tcp.write_all(&bogus).await.unwrap();
    let mut buf = [0u8; 16];
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let again = server.write_all(b"250 ok\r\n").await.unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::BrokenPipe);
    server.shutdown().await.unwrap();
}

/// A TLS 1.3 KeyUpdate from the client (asking for ours in return) arrives while we only read:
/// rustls answers it through our read path, and data keeps flowing both ways afterwards.
#[tokio::test]
async fn client_key_update_is_answered_and_data_flows_on() {
    let (mut client, mut server, _) = connected(&rustls::version::TLS13).await;
    let mut buf = [0u8; 64];
    for round in 0..3u8 {
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let line = format!("NOOP {round}\r\n");
        client.write_all(line.as_bytes()).await.unwrap();
        client.flush().await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], line.as_bytes());
        server.write_all(b"250 2.0.0 ok\r\n").await.unwrap();
        server.flush().await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"250 2.0.0 ok\r\n");
    }
}

/// A client whose bytes arrive a few at a time: every ClientHello, Finished and data record is
/// read in pieces, and the handshake and the first command still come out whole.
#[tokio::test]
async fn a_trickling_client_is_read_in_pieces() {
    let pki = pki(&rustls::version::TLS13);
    let (client_tcp, mut relay_near) = pair().await;
    let (mut relay_far, server_tcp) = pair().await;
    relay_far.set_nodelay(true).unwrap();
    // Client → server in 7-byte pieces, 1 ms apart; server → client as it comes.
    let trickle = tokio::spawn(async move {
        let (mut from_client, mut to_client) = relay_near.split();
        let (mut from_server, mut to_server) = relay_far.split();
        let up = async {
            let mut piece = [0u8; 7];
            loop {
                let n = from_client.read(&mut piece).await.unwrap_or(0);
                if n == 0 || to_server.write_all(&piece[..n]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        let down = tokio::io::copy(&mut from_server, &mut to_client);
        let _ = tokio::join!(up, down);
    });
    let connector = TlsConnector::from(pki.client.clone());
    let name = ServerName::try_from("mx.test").unwrap();
    let (client, server) = tokio::join!(
        connector.connect(name, client_tcp),
        accept(server_tcp, &pki.server)
    );
    let (mut client, (mut server, negotiated)) = (client.unwrap(), server.unwrap());
    assert_eq!(negotiated.sni.as_deref(), Some("mx.test"));
    client
        .write_all(b"EHLO slow.client.test\r\n")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\r\n") {
        let n = server.read(&mut buf).await.unwrap();
        assert!(n > 0, "EOF before the whole line: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"EHLO slow.client.test\r\n");
    drop(client);
    drop(server);
    trickle.await.unwrap();
}
