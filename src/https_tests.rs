use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HOST: &str = "mta-sts.example.test";

/// A CA, a server certificate for `names` signed by it, and a client verifying against the CA.
struct Pki {
    client: HttpsClient,
    server: Arc<rustls::ServerConfig>,
}

fn pki(names: &[&str], timeout: Duration, max_body: usize) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "HTTPS Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        crate::tls::provider(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        client: HttpsClient::new(verifier, timeout, max_body),
        server: Arc::new(server),
    }
}

/// Serves one connection: reads the request (head and Content-Length body), answers `reply`
/// bytes as given (written in pieces when `pieces`), returns the request.
async fn serve_once(
    server: Arc<rustls::ServerConfig>,
    reply: Vec<u8>,
) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, request_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(server).accept(tcp).await else {
            return;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let _ = tls.write_all(&reply).await;
        let _ = tls.flush().await;
        let _ = seen.send(request);
        // Hold the connection open: a response must end by its own framing, not by EOF.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    (addr, request_rx)
}

fn client(p: &Pki) -> &HttpsClient {
    &p.client
}

#[tokio::test]
async fn get_returns_status_media_type_and_body() {
    let p = pki(&[HOST], Duration::from_secs(5), 64 * 1024);
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n";
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: Text/Plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{policy}",
        policy.len()
    );
    let (addr, server) = serve_once(p.server.clone(), reply.into_bytes()).await;
    let r = client(&p)
        .get(HOST, &[addr], "/.well-known/mta-sts.txt")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.media_type.as_deref(), Some("text/plain"));
    assert_eq!(r.body, policy.as_bytes());
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        request.contains("user-agent: starttls-proxy/")
            || request.contains("User-Agent: starttls-proxy/"),
        "{request}"
    );
}

#[tokio::test]
async fn chunked_bodies_and_statuses_pass_through_and_redirects_are_not_followed() {
    let p = pki(&[HOST], Duration::from_secs(5), 64 * 1024);
    let (addr, _server) = serve_once(
        p.server.clone(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let r = client(&p).get(HOST, &[addr], "/x").await.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice(), r.media_type),
        (200, &b"hello world"[..], None)
    );

    let (addr, server) = serve_once(
        p.server.clone(),
        b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere.test/\r\nContent-Length: 0\r\n\r\n"
            .to_vec(),
    )
    .await;
    let r = client(&p).get(HOST, &[addr], "/x").await.unwrap();
    assert_eq!(r.status, 301);
    // One connection only: the redirect was not followed.
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(request.starts_with("GET /x HTTP/1.1\r\n"), "{request}");
    assert!(
        request
            .to_ascii_lowercase()
            .contains("host: mta-sts.example.test"),
        "{request}"
    );
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let p = pki(&[HOST], Duration::from_secs(5), 1024);
    let mut reply =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5000\r\n\r\n".to_vec();
    reply.extend_from_slice(&[b'x'; 5000]);
    let (addr, _server) = serve_once(p.server.clone(), reply).await;
    let e = client(&p).get(HOST, &[addr], "/x").await.unwrap_err();
    assert!(matches!(e, HttpsError::TooLarge(1024)), "{e}");
}

#[tokio::test]
async fn a_silent_or_trickling_server_meets_the_deadline() {
    let p = pki(&[HOST], Duration::from_millis(300), 1024);
    // Headers promise more body than ever comes.
    let (addr, _server) = serve_once(
        p.server.clone(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
    )
    .await;
    let e = client(&p).get(HOST, &[addr], "/x").await.unwrap_err();
    assert!(matches!(e, HttpsError::Timeout(_)), "{e}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_certificate_error() {
    let p = pki(&["somebody-else.test"], Duration::from_secs(5), 1024);
    let (addr, _server) = serve_once(p.server.clone(), Vec::new()).await;
    let e = client(&p).get(HOST, &[addr], "/x").await.unwrap_err();
    assert!(matches!(e, HttpsError::Certificate { .. }), "{e}");
}

#[tokio::test]
async fn post_sends_the_body_with_its_media_type_and_unreachable_addresses_are_skipped() {
    let p = pki(&[HOST], Duration::from_secs(5), 1024);
    let (addr, server) = serve_once(
        p.server.clone(),
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n".to_vec(),
    )
    .await;
    // A closed port first: the next address is tried.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let r = client(&p)
        .post(
            HOST,
            &[dead, addr],
            "/report",
            "application/tlsrpt+gzip",
            b"\x1f\x8bbody".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let request = server.await.unwrap();
    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
    assert!(text.starts_with("post /report http/1.1"), "{text}");
    assert!(
        text.contains("content-type: application/tlsrpt+gzip"),
        "{text}"
    );
    assert!(request.ends_with(b"\x1f\x8bbody"));
    let e = client(&p).get(HOST, &[dead], "/x").await.unwrap_err();
    assert!(matches!(e, HttpsError::Connect(..)), "{e}");
}
