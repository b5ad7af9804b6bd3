//! The proxy's one HTTPS client: MTA-STS policy fetches (RFC 8461 §3.3) and TLS-RPT report
//! POSTs (RFC 8460 §3). hyper frames HTTP/1.1; the TCP connect (to addresses the caller's
//! resolver found), the TLS session (WebPKI against the caller's verifier, SNI = the host) and
//! every bound are ours: one deadline for the whole exchange, a body cap, no redirects followed
//! (a 3xx is just a status for the caller).

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// A response: status, media type and the body (never over the client's cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `Content-Type` without parameters, lowercased (`text/plain`).
    pub media_type: Option<String>,
    pub body: Vec<u8>,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The server's certificate failed WebPKI validation (`sts-webpki-invalid`).
    #[error("certificate of {host}: {error}")]
    Certificate { host: String, error: rustls::Error },
    #[error("TLS with {host}: {error}")]
    Tls { host: String, error: std::io::Error },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("response body over {0} bytes")]
    TooLarge(usize),
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
}

/// A client with its trust decision and bounds; cheap to share.
#[derive(Clone)]
pub struct HttpsClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_body: usize,
}

impl HttpsClient {
    /// `verifier` decides which server certificates are valid (WebPKI against the configured
    /// anchors); `timeout` covers connect, handshake, request and the whole body.
    pub fn new(verifier: Arc<dyn ServerCertVerifier>, timeout: Duration, max_body: usize) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("ring supports TLS 1.2 and 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Self {
            tls: Arc::new(tls),
            timeout,
            max_body,
        }
    }

    /// `GET https://host/path`, connecting to the first of `addrs` that answers.
    pub async fn get(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        path: &str,
    ) -> Result<Response, HttpsError> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, user_agent())
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        self.exchange(host, addrs, request).await
    }

    /// `POST https://host/path` with `body` of `content_type`.
    pub async fn post(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Response, HttpsError> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::USER_AGENT, user_agent())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        self.exchange(host, addrs, request).await
    }

    async fn exchange(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Response, HttpsError> {
        tokio::time::timeout(self.timeout, self.exchange_unbounded(host, addrs, request))
            .await
            .unwrap_or(Err(HttpsError::Timeout(self.timeout)))
    }

    async fn exchange_unbounded(
        &self,
        host: &str,
        addrs: &[SocketAddr],
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<Response, HttpsError> {
        let tcp = connect_any(host, addrs).await?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| HttpsError::NoAddress(host.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|error| classify_tls_error(host, error))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        // The connection future drives the socket; it ends with the exchange (dropped with it).
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| HttpsError::Http(e.to_string()))?;
            let status = response.status().as_u16();
            let media_type = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                });
            let body = Limited::new(response.into_body(), self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpsError::TooLarge(self.max_body)
                    } else {
                        HttpsError::Http(e.to_string())
                    }
                })?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                media_type,
                body,
            })
        }
        .await;
        driver.abort();
        result
    }
}

fn user_agent() -> &'static str {
    concat!("starttls-proxy/", env!("CARGO_PKG_VERSION"))
}

async fn connect_any(host: &str, addrs: &[SocketAddr]) -> Result<TcpStream, HttpsError> {
    let mut last = HttpsError::NoAddress(host.to_string());
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = HttpsError::Connect(addr, e),
        }
    }
    Err(last)
}

/// A certificate the verifier refused is the peer's fault of a kind reports name apart.
fn classify_tls_error(host: &str, error: std::io::Error) -> HttpsError {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(e @ rustls::Error::InvalidCertificate(_)) => HttpsError::Certificate {
            host: host.to_string(),
            error: e.clone(),
        },
        _ => HttpsError::Tls {
            host: host.to_string(),
            error,
        },
    }
}

#[cfg(test)]
#[path = "https_tests.rs"]
mod tests;
