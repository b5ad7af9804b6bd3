//! An HTTPS responder for MTA-STS policy hosts and TLS-RPT report endpoints, in the test
//! process (std threads and rustls with ring): it answers by `Host` header and path with the
//! configured [`Response`] (policy, any status, content type, redirect, trickled or oversized
//! body), records every request (POSTs with their headers and body) for later inspection, and
//! presents per host, selected by SNI, a certificate from the test CA naming that host, or one
//! the test supplies (the "webpki invalid" case). It listens on a loopback address of its own,
//! port 443.
//!
//! ```ignore
//! let web = PolicyHost::builder(&ca)
//!     .policy("sts-enforce.test", Response::policy(&policy_text("enforce", &["mx.sts-enforce.test"], 86400)))
//!     .policy("sts-404.test", Response::status(404))
//!     .policy("sts-slow.test", Response::policy("…").trickle(Duration::from_millis(200)))
//!     .policy("sts-badcert.test", Response::policy("…"))
//!     .host_cert("mta-sts.sts-badcert.test", &ca.leaf("wrong", &["other.test"]))
//!     .host("tlsrpt.rpt.test")                      // POSTs answered 201 and kept
//!     .start();
//! // DNS: zone.mta_sts("sts-enforce.test", "1", web.ip); later web.fetches(..), web.posts()
//! ```

use super::pki::{Ca, Leaf};
use super::unique_ip;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where RFC 8461 §3.3 puts the policy.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// Bound on a request's header block and body (a test client never comes near it).
const MAX_REQUEST: usize = 16 << 20;

/// A policy text with CRLF line endings: `version: STSv1`, `mode`, one `mx:` per pattern,
/// `max_age`.
pub fn policy_text(mode: &str, mx: &[&str], max_age: u64) -> String {
    let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
    for pattern in mx {
        text.push_str(&format!("mx: {pattern}\r\n"));
    }
    text.push_str(&format!("max_age: {max_age}\r\n"));
    text
}

/// What the responder answers to one host and path.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trickle: Option<Duration>,
}

impl Response {
    /// `200` `text/plain` with `text` as the body (e.g. from [`policy_text`]).
    pub fn policy(text: &str) -> Response {
        Response::status(200).body(text.as_bytes())
    }

    /// `status` with an empty `text/plain` body.
    pub fn status(status: u16) -> Response {
        Response {
            status,
            content_type: Some("text/plain".to_string()),
            headers: Vec::new(),
            body: Vec::new(),
            trickle: None,
        }
    }

    /// `301` to `location` (RFC 8461 §3.3: a client must not follow it).
    pub fn redirect(location: &str) -> Response {
        Response::status(301).header("Location", location)
    }

    /// Replaces the body.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// Replaces the Content-Type (`None`: no Content-Type header at all).
    pub fn content_type(mut self, content_type: Option<&str>) -> Self {
        self.content_type = content_type.map(str::to_string);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Pads the body with newlines up to `len` bytes (an oversized policy: still a valid
    /// policy at its start).
    pub fn pad_to(mut self, len: usize) -> Self {
        if self.body.len() < len {
            self.body.resize(len, b'\n');
        }
        self
    }

    /// Sends the whole response (status line, headers and body) one byte every `every`: a slow
    /// or hostile policy host. It stops when the client goes away or the responder is dropped.
    pub fn trickle(mut self, every: Duration) -> Self {
        self.trickle = Some(every);
        self
    }
}

/// One request as received (after TLS), in arrival order.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The `Host` header without a port, lowercased (the SNI name when there is none).
    pub host: String,
    /// The server name the client sent in its TLS ClientHello.
    pub sni: Option<String>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Collects hosts, certificates and replies; [`HttpsBuilder::start`] starts the responder.
pub struct HttpsBuilder<'a> {
    ca: &'a Ca,
    certs: HashMap<String, Arc<CertifiedKey>>,
    routes: HashMap<(String, String), Response>,
}

impl<'a> HttpsBuilder<'a> {
    /// `https://mta-sts.<domain>/.well-known/mta-sts.txt` answers `response`.
    pub fn policy(self, domain: &str, response: Response) -> Self {
        let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
        self.route(&host, POLICY_PATH, response)
    }

    /// `https://<host><path>` answers `response` (to GET and POST alike).
    pub fn route(mut self, host: &str, path: &str, response: Response) -> Self {
        self = self.host(host);
        self.routes
            .insert((host.to_ascii_lowercase(), path.to_string()), response);
        self
    }

    /// Serves `host` with a certificate from the test CA naming it (if it has none yet), with no
    /// route: GET answers 404, POST 201 (e.g. a TLS-RPT endpoint).
    pub fn host(mut self, host: &str) -> Self {
        let host = host.to_ascii_lowercase();
        if !self.certs.contains_key(&host) {
            let leaf = self.ca.leaf(&format!("https-{host}"), &[&host]);
            self.certs.insert(host, load(&leaf));
        }
        self
    }

    /// Presents `leaf` to clients asking for `host` by SNI (a certificate that does not name
    /// the host, an expired or a self-signed one: "webpki invalid").
    pub fn host_cert(mut self, host: &str, leaf: &Leaf) -> Self {
        self.certs.insert(host.to_ascii_lowercase(), load(leaf));
        self
    }

    /// Binds `<fresh loopback address>:443` and serves until dropped.
    pub fn start(self) -> PolicyHost {
        let ip = unique_ip();
        let listener = TcpListener::bind((ip, 443)).expect("bind HTTPS responder");
        let addr = listener.local_addr().expect("responder address");
        // Clients that send no SNI or an unknown name get a certificate naming nobody's host.
        let fallback = load(&self.ca.leaf("https-fallback", &["no-such-host.invalid"]));
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let resolver = SniCerts {
            by_name: self.certs,
            fallback,
            hellos: hellos.clone(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            routes: Mutex::new(self.routes),
            requests: Mutex::new(Vec::new()),
            hellos,
            stop: AtomicBool::new(false),
        });
        let state = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if state.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                std::thread::spawn(move || serve(&state, stream));
            }
        });
        PolicyHost {
            addr,
            ip,
            shared,
            accept: Some(accept),
        }
    }
}

/// A running HTTPS responder; stops on drop.
pub struct PolicyHost {
    /// `<ip>:443`.
    pub addr: SocketAddr,
    /// The address to publish as `mta-sts.<domain>` A (or pass to `curl --resolve`).
    pub ip: Ipv4Addr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl PolicyHost {
    /// A responder whose certificates come from `ca`; add hosts and replies to the builder.
    pub fn builder(ca: &Ca) -> HttpsBuilder<'_> {
        HttpsBuilder {
            ca,
            certs: HashMap::new(),
            routes: HashMap::new(),
        }
    }

    /// Changes what `mta-sts.<domain>` answers from now on (its certificate stays: a domain not
    /// given to the builder gets the fallback certificate, which names no test host).
    pub fn set_policy(&self, domain: &str, response: Response) {
        let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
        self.set_route(&host, POLICY_PATH, response);
    }

    /// Changes what `https://<host><path>` answers from now on.
    pub fn set_route(&self, host: &str, path: &str, response: Response) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert((host.to_ascii_lowercase(), path.to_string()), response);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The server name (SNI) of every TLS ClientHello received so far, in order, including
    /// handshakes the client then abandoned (e.g. over a certificate it did not trust, where no
    /// request follows).
    pub fn hellos(&self) -> Vec<Option<String>> {
        self.shared.hellos.lock().unwrap().clone()
    }

    /// Every POST received so far, in order (TLS-RPT reports).
    pub fn posts(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// How many times the policy of `domain` was fetched (GET on its policy path).
    pub fn fetches(&self, domain: &str) -> usize {
        let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.host == host && r.path == POLICY_PATH)
            .count()
    }
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

struct Shared {
    config: Arc<rustls::ServerConfig>,
    routes: Mutex<HashMap<(String, String), Response>>,
    requests: Mutex<Vec<Request>>,
    hellos: Arc<Mutex<Vec<Option<String>>>>,
    stop: AtomicBool,
}

#[derive(Debug)]
struct SniCerts {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    fallback: Arc<CertifiedKey>,
    hellos: Arc<Mutex<Vec<Option<String>>>>,
}

impl ResolvesServerCert for SniCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.hellos
            .lock()
            .unwrap()
            .push(hello.server_name().map(str::to_string));
        let cert = hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(cert.unwrap_or(&self.fallback).clone())
    }
}

fn load(leaf: &Leaf) -> Arc<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
        .expect("open certificate")
        .collect::<Result<_, _>>()
        .expect("parse certificate chain");
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("parse private key");
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).expect("usable key");
    Arc::new(CertifiedKey::new(chain, signer))
}

/// One connection: one request, one response, then close.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(conn) = rustls::ServerConnection::new(shared.config.clone()) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let Some(mut request) = read_request(&mut tls) else {
        return;
    };
    request.sni = tls.conn.server_name().map(str::to_string);
    if request.host.is_empty() {
        request.host = request.sni.clone().unwrap_or_default();
    }
    let reply = shared
        .routes
        .lock()
        .unwrap()
        .get(&(request.host.clone(), request.path.clone()))
        .cloned();
    let reply = match (reply, request.method.as_str()) {
        (Some(reply), _) => reply,
        (None, "POST") => Response::status(201),
        (None, _) => Response::status(404).body(b"not found\n"),
    };
    shared.requests.lock().unwrap().push(request);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    if let Some(content_type) = &reply.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut response = head.into_bytes();
    response.extend_from_slice(&reply.body);
    match reply.trickle {
        None => {
            if tls.write_all(&response).is_err() {
                return;
            }
        }
        Some(every) => {
            for byte in response {
                if shared.stop.load(Ordering::Relaxed)
                    || tls.write_all(&[byte]).and_then(|()| tls.flush()).is_err()
                {
                    return;
                }
                std::thread::sleep(every);
            }
        }
    }
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Reads one HTTP/1.1 request (Content-Length or chunked body; answers `Expect:
/// 100-continue`). `None` when the client goes away or sends something else.
fn read_request(tls: &mut impl ReadWrite) -> Option<Request> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST || read_more(tls, &mut buf)? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let host = header("Host")
        .map(|h| {
            h.rsplit_once(':')
                .map_or(h.as_str(), |(name, _)| name)
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if header("Expect").is_some_and(|e| e.eq_ignore_ascii_case("100-continue")) {
        tls.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
        tls.flush().ok()?;
    }
    let body = if header("Transfer-Encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(tls, rest)?
    } else {
        let length: usize = header("Content-Length").map_or(Some(0), |l| l.parse().ok())?;
        if length > MAX_REQUEST {
            return None;
        }
        while rest.len() < length {
            if read_more(tls, &mut rest)? == 0 {
                return None;
            }
        }
        rest.truncate(length);
        rest
    };
    Some(Request {
        method,
        host,
        sni: None,
        path,
        headers,
        body,
    })
}

fn read_chunked(tls: &mut impl ReadWrite, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf, b"\r\n") {
                break i;
            }
            if read_more(tls, &mut buf)? == 0 {
                return None;
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            return Some(body);
        }
        if body.len() + size > MAX_REQUEST {
            return None;
        }
        while buf.len() < size + 2 {
            if read_more(tls, &mut buf)? == 0 {
                return None;
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn read_more(tls: &mut impl ReadWrite, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 16384];
    let n = tls.read(&mut chunk).ok()?;
    buf.extend_from_slice(&chunk[..n]);
    Some(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
