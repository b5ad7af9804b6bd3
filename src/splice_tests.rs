use super::*;
use crate::test_support::{pair, pattern, talk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Both directions at once, each with a prefix, a payload larger than a pipe, and a half-close.
async fn relays_both_directions(mode: Mode) -> Paths {
    let (client, mut client_proxy) = pair().await;
    let (server, mut server_proxy) = pair().await;
    let up = pattern(3 * 1024 * 1024 + 7, 1);
    let down = pattern(700 * 1024 + 3, 2);
    let relay = relay_tcp_with(
        &mut client_proxy,
        b"MAIL FROM:<a@b>\r\n".to_vec(),
        &mut server_proxy,
        b"250 ok\r\n".to_vec(),
        Duration::from_secs(10),
        mode,
    );
    let ((outcome, paths), at_server, at_client) = tokio::join!(
        relay,
        talk(server, &down, 64 * 1024),
        talk(client, &up, 64 * 1024)
    );
    assert!(matches!(outcome.end, RelayEnd::Closed), "{:?}", outcome.end);
    assert_eq!(&at_server[..17], b"MAIL FROM:<a@b>\r\n");
    assert!(at_server[17..] == up[..], "client → server bytes differ");
    assert_eq!(&at_client[..8], b"250 ok\r\n");
    assert!(at_client[8..] == down[..], "server → client bytes differ");
    assert_eq!(outcome.client_to_server, 17 + up.len() as u64);
    assert_eq!(outcome.server_to_client, 8 + down.len() as u64);
    paths
}

#[tokio::test]
async fn relay_tcp_splices_both_directions() {
    let paths = relays_both_directions(Mode::Auto).await;
    assert_eq!(
        paths,
        Paths {
            spliced: 2,
            buffered: 0
        }
    );
}

#[tokio::test]
async fn relay_tcp_forced_fallback_copies_both_directions() {
    let paths = relays_both_directions(Mode::Buffered).await;
    assert_eq!(
        paths,
        Paths {
            spliced: 0,
            buffered: 2
        }
    );
}

/// After the client half-closes, the server still answers (QUIT → 221) and is relayed.
async fn half_close_keeps_other_direction(mode: Mode) {
    let (mut client, mut client_proxy) = pair().await;
    let (mut server, mut server_proxy) = pair().await;
    let relay = relay_tcp_with(
        &mut client_proxy,
        Vec::new(),
        &mut server_proxy,
        Vec::new(),
        Duration::from_secs(10),
        mode,
    );
    let peers = async {
        client.write_all(b"QUIT\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"QUIT\r\n");
        server.write_all(b"221 bye\r\n").await.unwrap();
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"221 bye\r\n");
    };
    let ((outcome, _), ()) = tokio::join!(relay, peers);
    assert!(matches!(outcome.end, RelayEnd::Closed), "{:?}", outcome.end);
    assert_eq!((outcome.client_to_server, outcome.server_to_client), (6, 9));
}

#[tokio::test]
async fn relay_tcp_half_close_splice() {
    half_close_keeps_other_direction(Mode::Auto).await;
}

#[tokio::test]
async fn relay_tcp_half_close_fallback() {
    half_close_keeps_other_direction(Mode::Buffered).await;
}

/// A server that resets mid-session is the server's error, with the bytes counted so far.
async fn server_reset_is_server_error(mode: Mode) {
    let (mut client, mut client_proxy) = pair().await;
    let (mut server, mut server_proxy) = pair().await;
    let relay = relay_tcp_with(
        &mut client_proxy,
        Vec::new(),
        &mut server_proxy,
        Vec::new(),
        Duration::from_secs(10),
        mode,
    );
    let peers = async {
        client.write_all(b"DATA\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        server.read_exact(&mut buf).await.unwrap();
        // Linger zero: the close sends RST, as a crashed MTA would.
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
    };
    let ((outcome, _), ()) = tokio::join!(relay, peers);
    assert!(
        matches!(outcome.end, RelayEnd::ServerError(_)),
        "{:?}",
        outcome.end
    );
    assert_eq!(outcome.client_to_server, 6);
}

#[tokio::test]
async fn relay_tcp_server_reset_splice() {
    server_reset_is_server_error(Mode::Auto).await;
}

#[tokio::test]
async fn relay_tcp_server_reset_fallback() {
    server_reset_is_server_error(Mode::Buffered).await;
}

#[tokio::test]
async fn relay_tcp_idle_timeout() {
    for mode in [Mode::Auto, Mode::Buffered] {
        let (mut client, mut client_proxy) = pair().await;
        let (_server, mut server_proxy) = pair().await;
        client.write_all(b"NOOP\r\n").await.unwrap();
        let started = Instant::now();
        let (outcome, _) = relay_tcp_with(
            &mut client_proxy,
            Vec::new(),
            &mut server_proxy,
            Vec::new(),
            Duration::from_millis(150),
            mode,
        )
        .await;
        assert!(
            matches!(outcome.end, RelayEnd::IdleTimeout),
            "{:?}",
            outcome.end
        );
        assert_eq!(outcome.client_to_server, 6);
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}

#[test]
fn unsupported_errors_fall_back() {
    for (errno, fallback) in [
        (libc::EINVAL, true),
        (libc::ENOSYS, true),
        (libc::EOPNOTSUPP, true),
        (libc::ECONNRESET, false),
        (libc::EPIPE, false),
    ] {
        let e = io::Error::from_raw_os_error(errno);
        assert_eq!(linux::unsupported(&e), fallback, "errno {errno}");
    }
}

#[tokio::test]
async fn relay_generic_over_tcp_both_directions() {
    let (client, mut client_proxy) = pair().await;
    let (server, mut server_proxy) = pair().await;
    let up = pattern(2 * 1024 * 1024 + 1, 3);
    let down = pattern(100 * 1024, 4);
    let relay = relay(
        &mut client_proxy,
        b"RCPT TO:<x@y>\r\n".to_vec(),
        &mut server_proxy,
        Vec::new(),
        Duration::from_secs(10),
    );
    let (outcome, at_server, at_client) = tokio::join!(
        relay,
        talk(server, &down, 64 * 1024),
        talk(client, &up, 64 * 1024)
    );
    assert!(matches!(outcome.end, RelayEnd::Closed), "{:?}", outcome.end);
    assert_eq!(&at_server[..15], b"RCPT TO:<x@y>\r\n");
    assert!(at_server[15..] == up[..]);
    assert!(at_client == down);
    assert_eq!(outcome.client_to_server, 15 + up.len() as u64);
    assert_eq!(outcome.server_to_client, down.len() as u64);
}

/// A TLS writer holds bytes in its record buffer until flushed: an interactive exchange must
/// not stall behind it.
#[tokio::test]
async fn relay_flushes_a_buffering_writer_when_input_pauses() {
    let (mut client, client_proxy) = tokio::io::duplex(64 * 1024);
    let (mut server, server_proxy) = tokio::io::duplex(64 * 1024);
    let client_proxy = tokio::io::BufWriter::new(client_proxy);
    let server_proxy = tokio::io::BufWriter::new(server_proxy);
    let relay = relay(
        client_proxy,
        Vec::new(),
        server_proxy,
        Vec::new(),
        Duration::from_secs(10),
    );
    let peers = async {
        client.write_all(b"RSET\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"RSET\r\n");
        server.write_all(b"250 2.0.0 ok\r\n").await.unwrap();
        let mut buf = [0u8; 14];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"250 2.0.0 ok\r\n");
        drop(client);
        drop(server);
    };
    let (outcome, ()) = tokio::join!(relay, peers);
    assert!(matches!(outcome.end, RelayEnd::Closed), "{:?}", outcome.end);
    assert_eq!(
        (outcome.client_to_server, outcome.server_to_client),
        (6, 14)
    );
}

/// A TLS peer that vanishes without close_notify ends its direction, it is not an error.
#[tokio::test]
async fn relay_treats_unexpected_eof_as_end() {
    struct Truncated;
    impl AsyncRead for Truncated {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()))
        }
    }
    impl AsyncWrite for Truncated {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let (mut server, server_proxy) = tokio::io::duplex(1024);
    let relay = relay(
        Truncated,
        b"QUIT\r\n".to_vec(),
        server_proxy,
        Vec::new(),
        Duration::from_secs(10),
    );
    let backend = async {
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        drop(server);
        got
    };
    let (outcome, got) = tokio::join!(relay, backend);
    assert!(matches!(outcome.end, RelayEnd::Closed), "{:?}", outcome.end);
    assert_eq!(got, b"QUIT\r\n");
}

#[tokio::test]
async fn relay_idle_timeout_keeps_counts() {
    let (mut client, client_proxy) = tokio::io::duplex(1024);
    let (_server, server_proxy) = tokio::io::duplex(1024);
    client.write_all(b"NOOP\r\n").await.unwrap();
    let outcome = relay(
        client_proxy,
        Vec::new(),
        server_proxy,
        b"220 hi\r\n".to_vec(),
        Duration::from_millis(100),
    )
    .await;
    assert!(
        matches!(outcome.end, RelayEnd::IdleTimeout),
        "{:?}",
        outcome.end
    );
    assert_eq!((outcome.client_to_server, outcome.server_to_client), (6, 8));
}

#[test]
fn large_buffer_is_released_when_idle_and_not_in_flight() {
    let mut copy = BufferedCopy::new(Vec::new());
    copy.large = Some(vec![0; LARGE].into_boxed_slice());
    copy.in_large = true;
    copy.filled = 10;
    copy.written = 4;
    copy.release();
    assert!(copy.large.is_some(), "bytes in flight must survive");
    copy.written = 10;
    copy.release();
    assert!(copy.large.is_none());
}
