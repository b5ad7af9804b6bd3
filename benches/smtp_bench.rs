//! Load generator, sink and helpers for `benches/compare.sh` (a `harness = false` bench target).
//!
//! Subcommands (each runs on a single-threaded runtime, so `taskset` pins it to one core):
//! - `sink`    a fast plaintext SMTP sink (no STARTTLS, large reads, memmem for `CRLF.CRLF`);
//! - `auth`    nginx's `auth_http` endpoint: `Auth-Status: OK` pointing at the sink;
//! - `forward` a bare TCP forwarder over `splice::relay_tcp` or `splice::relay` (relay cost alone);
//! - `load`    the client side: `sessions`, `latency`, `bulk` or `idle`, reading the proxy's own
//!   CPU accounting (`/proc/PID/stat` utime+stime of PID and its children) and RSS around the run,
//!   and printing one `key=value` line;
//! - `report`  medians over rounds and the comparison table from those lines.
//!
//! One session = greeting, EHLO, STARTTLS, TLS handshake (full: no resumption), EHLO, MAIL,
//! RCPT, DATA with a 10 KiB body, QUIT. The client does not verify the certificate (its cost is
//! the client's, not the proxy's).

use clap::{Parser, Subcommand, ValueEnum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "starttls-proxy benchmark helpers (see benches/compare.sh)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SMTP sink; with `--tls-cert` and `--tls-key` it offers STARTTLS (the outbound MX).
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        /// Every connection begins with a PROXY v1 or v2 header (read and dropped), as from a
        /// proxy with `client_address = "proxy-v2"`.
        #[arg(long)]
        proxy_header: bool,
        /// PEM certificate chain for STARTTLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// PEM private key for STARTTLS.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
        /// Where to answer `tls_sessions=N messages=M` to every connection.
        #[arg(long)]
        stats: Option<SocketAddr>,
    },
    /// MTA-STS policy host: HTTPS, `GET /.well-known/mta-sts.txt` answered with `policy`;
    /// one `event=fetch` line on stderr per request (the bench counts them).
    PolicyHost {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        tls_cert: std::path::PathBuf,
        #[arg(long)]
        tls_key: std::path::PathBuf,
        /// The policy text (RFC 8461 §3.2).
        #[arg(long)]
        policy: std::path::PathBuf,
    },
    /// nginx mail `auth_http` responder that sends every session to `backend`.
    Auth {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        backend: SocketAddr,
    },
    /// Plain TCP forwarder through starttls-proxy's relay (splice or buffered).
    Forward {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        backend: SocketAddr,
        #[arg(long, value_enum)]
        mode: ForwardMode,
    },
    /// Client load against `target`; prints one key=value line.
    Load(LoadArgs),
    /// Medians and the comparison table from the lines `load` printed.
    Report {
        /// File with `load` lines (other lines are ignored).
        results: std::path::PathBuf,
        /// File with `openssl speed` ceilings (`key=value` lines), optional.
        #[arg(long)]
        ceilings: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ForwardMode {
    Splice,
    Buffered,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    /// Many full sessions, `concurrency` at a time: CPU per session, session rate.
    Sessions,
    /// Sessions one after another from one client: latency percentiles.
    Latency,
    /// One session carrying one large message: CPU per MB relayed.
    Bulk,
    /// Sessions that stop after the second EHLO and stay open: RSS per idle session.
    Idle,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Tls {
    #[value(name = "1.3")]
    V13,
    #[value(name = "1.2")]
    V12,
    /// No STARTTLS (plaintext relay).
    Plain,
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, value_enum)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value = "1.3")]
    tls: Tls,
    /// Sessions (sessions, latency, idle).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Sessions in flight at once (sessions, idle set-up).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop starting sessions after this many seconds (the count is then what finished).
    #[arg(long, default_value_t = 30.0)]
    max_seconds: f64,
    /// Message size in bytes (sessions, latency), or in MiB for bulk.
    #[arg(long, default_value_t = 10 * 1024)]
    size: usize,
    /// Process whose CPU (with its children) and RSS are measured.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to hold idle sessions before measuring RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// The sink's `--stats` address: a message counts as done only once the sink has it (a
    /// store-and-forward relay answers before delivering), and CPU is read after that.
    #[arg(long)]
    await_delivered: Option<SocketAddr>,
    /// Printed first on the result line (system=..., cert=..., round=...).
    #[arg(long, default_value = "")]
    tag: String,
}

fn main() {
    // `cargo bench` passes `--bench`; drop it so the same binary runs both ways.
    let args = std::env::args().filter(|a| a != "--bench");
    let cli = Cli::parse_from(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Command::Sink {
            listen,
            proxy_header,
            tls_cert,
            tls_key,
            stats,
        } => match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => sink_tls(&cert, &key)
                .and_then(|tls| rt.block_on(sink(listen, Some(tls), stats, proxy_header))),
            _ => rt.block_on(sink(listen, None, stats, proxy_header)),
        },
        Command::PolicyHost {
            listen,
            tls_cert,
            tls_key,
            policy,
        } => sink_tls(&tls_cert, &tls_key).and_then(|tls| {
            let policy = std::fs::read(&policy)?;
            rt.block_on(policy_host(listen, tls, policy))
        }),
        Command::Auth { listen, backend } => rt.block_on(auth(listen, backend)),
        Command::Forward {
            listen,
            backend,
            mode,
        } => rt.block_on(forward(listen, backend, mode)),
        Command::Load(args) => rt.block_on(load(args)),
        Command::Report { results, ceilings } => report(&results, ceilings.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("smtp_bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Sink

/// What the sink has seen, for `--stats` (the outbound benches wait on `messages`).
#[derive(Default)]
struct SinkCounters {
    /// Sessions that completed a TLS handshake.
    tls_sessions: AtomicU64,
    /// Messages accepted (`250` after the body).
    messages: AtomicU64,
}

async fn sink(
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    stats: Option<SocketAddr>,
    proxy_header: bool,
) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("event=listening role=sink addr={}", listener.local_addr()?);
    let counters = Arc::new(SinkCounters::default());
    if let Some(stats) = stats {
        let stats = TcpListener::bind(stats).await?;
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = stats.accept().await {
                let line = format!(
                    "tls_sessions={} messages={}\n",
                    counters.tls_sessions.load(Ordering::Relaxed),
                    counters.messages.load(Ordering::Relaxed)
                );
                let _ = s.write_all(line.as_bytes()).await;
            }
        });
    }
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (mut stream, _) = listener.accept().await?;
        let (acceptor, counters) = (acceptor.clone(), counters.clone());
        tokio::spawn(async move {
            if proxy_header && skip_proxy_header(&mut stream).await.is_err() {
                return;
            }
            let _ = sink_session(stream, acceptor, &counters).await;
        });
    }
}

/// Reads a PROXY v2 header (16 bytes and the length they announce) or a v1 line, exactly.
async fn skip_proxy_header(stream: &mut TcpStream) -> io::Result<()> {
    let mut first = [0u8; 16];
    stream.read_exact(&mut first[..1]).await?;
    if first[0] == b'P' {
        let mut byte = [0u8; 1];
        for _ in 0..107 {
            stream.read_exact(&mut byte).await?;
            if byte[0] == b'\n' {
                return Ok(());
            }
        }
        return Err(io::Error::other("PROXY v1 line too long"));
    }
    stream.read_exact(&mut first[1..]).await?;
    let len = u16::from_be_bytes([first[14], first[15]]) as usize;
    let mut rest = vec![0u8; len];
    stream.read_exact(&mut rest).await.map(drop)
}

/// The sink's certificate for `STARTTLS`, without session resumption (no session cache, no
/// tickets): every system under test pays a full handshake per TLS session, as a first
/// contact with an MX does.
fn sink_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let loaded =
        starttls_proxy::tls::load_server(cert, key, starttls_proxy::tls::MinVersion::Tls12)
            .map_err(io::Error::other)?;
    let mut config = (*loaded.config).clone();
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Greeting, then commands; with `acceptor`, `STARTTLS` is offered and the session goes on
/// over TLS after it.
async fn sink_session(
    mut stream: TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    counters: &SinkCounters,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream
        .write_all(b"220 sink.bench.example ESMTP\r\n")
        .await?;
    match sink_commands(&mut stream, acceptor.is_some(), counters).await? {
        SinkEnd::Closed => Ok(()),
        SinkEnd::StartTls => {
            let acceptor = acceptor.expect("STARTTLS is offered only with a certificate");
            let mut tls = acceptor.accept(stream).await?;
            counters.tls_sessions.fetch_add(1, Ordering::Relaxed);
            sink_commands(&mut tls, false, counters).await?;
            let _ = tls.shutdown().await;
            Ok(())
        }
    }
}

/// How a run of [`sink_commands`] ended.
enum SinkEnd {
    /// QUIT or the peer closed.
    Closed,
    /// `220` sent to `STARTTLS`: the caller starts the handshake.
    StartTls,
}

/// Replies without pipelining tricks; DATA bodies are scanned with memmem and never stored.
async fn sink_commands<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    offer_starttls: bool,
    counters: &SinkCounters,
) -> io::Result<SinkEnd> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        // One command line.
        let line_end = loop {
            if let Some(i) = memchr::memchr(b'\n', &buf[start..end]) {
                break start + i + 1;
            }
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            }
            if end == buf.len() {
                return Err(io::Error::other("line too long"));
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Ok(SinkEnd::Closed);
            }
            end += n;
        };
        let verb = buf[start..line_end.min(start + 4)].to_ascii_uppercase();
        start = line_end;
        match &verb[..] {
            b"EHLO" if offer_starttls => stream
                .write_all(
                    b"250-sink.bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLS\r\n250 SIZE 0\r\n",
                )
                .await?,
            b"EHLO" => stream
                .write_all(
                    b"250-sink.bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
                )
                .await?,
            b"STAR" if offer_starttls => {
                // Bytes pipelined after STARTTLS are dropped with `buf` (RFC 3207 §4.2).
                stream.write_all(b"220 2.0.0 go ahead\r\n").await?;
                return Ok(SinkEnd::StartTls);
            }
            b"HELO" => stream.write_all(b"250 sink.bench.example\r\n").await?,
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => stream.write_all(b"250 2.0.0 ok\r\n").await?,
            b"QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(SinkEnd::Closed);
            }
            b"DATA" => {
                stream.write_all(b"354 go ahead\r\n").await?;
                let mut scan = EndOfData::new();
                loop {
                    if let Some(after) = scan.find(&buf[start..end]) {
                        start += after;
                        break;
                    }
                    start = 0;
                    end = stream.read(&mut buf).await?;
                    if end == 0 {
                        return Ok(SinkEnd::Closed);
                    }
                }
                counters.messages.fetch_add(1, Ordering::Relaxed);
                stream.write_all(b"250 2.0.0 queued\r\n").await?;
            }
            _ => stream.write_all(b"502 5.5.2 not here\r\n").await?,
        }
    }
}

/// Finds `CRLF.CRLF` across reads: the last 4 bytes seen are kept to match a terminator that
/// spans two reads. Starts as if after a CRLF (the body begins at a line start).
struct EndOfData {
    tail: Vec<u8>,
}

impl EndOfData {
    fn new() -> EndOfData {
        EndOfData {
            tail: b"\r\n".to_vec(),
        }
    }

    /// Offset just past the terminator in `data`, if it ends there.
    fn find(&mut self, data: &[u8]) -> Option<usize> {
        const END: &[u8] = b"\r\n.\r\n";
        let mut head = self.tail.clone();
        head.extend_from_slice(&data[..data.len().min(4)]);
        if let Some(i) = memchr::memmem::find(&head, END) {
            return Some(i + END.len() - self.tail.len());
        }
        if let Some(i) = memchr::memmem::find(data, END) {
            return Some(i + END.len());
        }
        self.tail = if data.len() >= 4 {
            data[data.len() - 4..].to_vec()
        } else {
            // `head` is the old tail followed by all of `data`.
            head[head.len().saturating_sub(4)..].to_vec()
        };
        None
    }
}

// ---------------------------------------------------------------------------------------------
// MTA-STS policy host

async fn policy_host(
    listen: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    policy: Vec<u8>,
) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "event=listening role=policy_host addr={}",
        listener.local_addr()?
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        policy.len()
    )
    .into_bytes();
    reply.extend_from_slice(&policy);
    let reply: Arc<[u8]> = reply.into();
    loop {
        let (stream, peer) = listener.accept().await?;
        let (acceptor, reply) = (acceptor.clone(), reply.clone());
        tokio::spawn(async move {
            let Ok(mut stream) = acceptor.accept(stream).await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let line = seen.split(|b| *b == b'\r').next().unwrap_or_default();
            eprintln!(
                "event=fetch peer={peer} request=\"{}\"",
                String::from_utf8_lossy(line)
            );
            let _ = stream.write_all(&reply).await;
            let _ = stream.shutdown().await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// nginx auth_http

async fn auth(listen: SocketAddr, backend: SocketAddr) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("event=listening role=auth addr={}", listener.local_addr()?);
    let reply = format!(
        "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: {}\r\nAuth-Port: {}\r\nContent-Length: 0\r\n\r\n",
        backend.ip(),
        backend.port()
    );
    let reply: Arc<[u8]> = reply.into_bytes().into();
    loop {
        let (mut stream, _) = listener.accept().await?;
        let reply = reply.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(&reply).await;
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarder over the product's relay

async fn forward(listen: SocketAddr, backend: SocketAddr, mode: ForwardMode) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "event=listening role=forward addr={}",
        listener.local_addr()?
    );
    loop {
        let (mut client, _) = listener.accept().await?;
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let idle = Duration::from_secs(60);
            let outcome = match mode {
                ForwardMode::Splice => {
                    starttls_proxy::splice::relay_tcp(
                        &mut client,
                        Vec::new(),
                        &mut server,
                        Vec::new(),
                        idle,
                    )
                    .await
                }
                ForwardMode::Buffered => {
                    starttls_proxy::splice::relay(
                        &mut client,
                        Vec::new(),
                        &mut server,
                        Vec::new(),
                        idle,
                    )
                    .await
                }
            };
            if !matches!(outcome.end, starttls_proxy::splice::RelayEnd::Closed) {
                eprintln!("event=relay_end end={:?}", outcome.end);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Load

/// The client does not check the proxy's certificate: verification is client cost, not ours.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector(tls: Tls) -> Option<TlsConnector> {
    let version: &'static rustls::SupportedProtocolVersion = match tls {
        Tls::V13 => &rustls::version::TLS13,
        Tls::V12 => &rustls::version::TLS12,
        Tls::Plain => return None,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    // Full handshakes every time (the worst case, and what MTAs mostly do).
    config.resumption = rustls::client::Resumption::disabled();
    Some(TlsConnector::from(Arc::new(config)))
}

/// Reads one (possibly multi-line) reply; returns its code.
async fn reply<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> io::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut line_start = 0;
        while let Some(i) = memchr::memchr(b'\n', &buf[line_start..]) {
            let line = &buf[line_start..line_start + i + 1];
            if line.len() >= 4 && line[3] == b' ' {
                let code = std::str::from_utf8(&line[..3])
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| io::Error::other("bad reply"))?;
                buf.drain(..line_start + i + 1);
                return Ok(code);
            }
            line_start += i + 1;
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    line: &[u8],
    want: u16,
) -> io::Result<()> {
    s.write_all(line).await?;
    let code = reply(s, buf).await?;
    if code != want {
        return Err(io::Error::other(format!(
            "{} answered {code}",
            String::from_utf8_lossy(line).trim_end()
        )));
    }
    Ok(())
}

/// 76 characters and CRLF per line, 840 lines: one 64 KiB-ish chunk of body.
fn body_chunk() -> Vec<u8> {
    let mut line = vec![b'x'; 76];
    line.extend_from_slice(b"\r\n");
    line.repeat(840)
}

/// The transaction after the (TLS) EHLO: MAIL, RCPT, DATA with `size` bytes, then QUIT.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    size: usize,
    chunk: &[u8],
) -> io::Result<()> {
    command(s, buf, b"MAIL FROM:<load@client.bench.example>\r\n", 250).await?;
    command(s, buf, b"RCPT TO:<user@bench.example>\r\n", 250).await?;
    command(s, buf, b"DATA\r\n", 354).await?;
    let mut left = size;
    let mut last: &[u8] = b"\r\n";
    while left > 0 {
        last = &chunk[..left.min(chunk.len())];
        s.write_all(last).await?;
        left -= last.len();
    }
    // The body ends in CRLF only if the cut fell on a line end; make it so.
    if !last.ends_with(b"\r\n") {
        s.write_all(b"\r\n").await?;
    }
    command(s, buf, b".\r\n", 250).await?;
    command(s, buf, b"QUIT\r\n", 221).await?;
    Ok(())
}

/// A stream after the second EHLO: TLS or (for `--tls plain`) the TCP stream itself.
enum Session {
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// Connect, greeting, EHLO, STARTTLS, handshake, EHLO (plain: greeting and EHLO only).
async fn open(
    target: SocketAddr,
    tls: Option<&TlsConnector>,
    buf: &mut Vec<u8>,
) -> io::Result<Session> {
    let mut tcp = TcpStream::connect(target).await?;
    tcp.set_nodelay(true)?;
    let code = reply(&mut tcp, buf).await?;
    if code != 220 {
        return Err(io::Error::other(format!("greeting {code}")));
    }
    command(&mut tcp, buf, b"EHLO client.bench.example\r\n", 250).await?;
    let Some(connector) = tls else {
        return Ok(Session::Plain(tcp));
    };
    command(&mut tcp, buf, b"STARTTLS\r\n", 220).await?;
    buf.clear();
    let name = ServerName::try_from("mx.bench.example").expect("valid name");
    let mut stream = connector.connect(name, tcp).await?;
    command(&mut stream, buf, b"EHLO client.bench.example\r\n", 250).await?;
    Ok(Session::Tls(Box::new(stream)))
}

async fn full_session(
    target: SocketAddr,
    tls: Option<&TlsConnector>,
    size: usize,
    chunk: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    match open(target, tls, &mut buf).await? {
        Session::Tls(mut s) => {
            transaction(&mut *s, &mut buf, size, chunk).await?;
            let _ = s.shutdown().await;
        }
        Session::Plain(mut s) => transaction(&mut s, &mut buf, size, chunk).await?,
    }
    Ok(())
}

/// CPU and memory of a process tree, from its own accounting in /proc.
struct Meter {
    root: Option<u32>,
}

impl Meter {
    /// The root and all its descendants (Postfix's master starts its daemons as children).
    fn pids(&self) -> Vec<u32> {
        let Some(root) = self.root else {
            return Vec::new();
        };
        let mut parent_of = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
                    parent_of.push((pid, ppid));
                }
            }
        }
        let mut pids = vec![root];
        let mut i = 0;
        while i < pids.len() {
            let parent = pids[i];
            pids.extend(
                parent_of
                    .iter()
                    .filter(|(_, pp)| *pp == parent)
                    .map(|(p, _)| *p),
            );
            i += 1;
        }
        pids
    }

    /// utime + stime of the tree, in seconds (USER_HZ is 100 on Linux).
    fn cpu_seconds(&self) -> f64 {
        let (user, sys) = self.cpu_split();
        user + sys
    }

    /// (utime, stime) of the tree, in seconds, with what its processes' reaped children used
    /// (cutime, cstime): a Postfix daemon that exits during the run is still counted.
    fn cpu_split(&self) -> (f64, f64) {
        self.pids()
            .into_iter()
            .filter_map(stat_fields)
            .map(|f| {
                let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                (
                    (t(11) + t(13)) as f64 / 100.0,
                    (t(12) + t(14)) as f64 / 100.0,
                )
            })
            .fold((0.0, 0.0), |(u, s), (a, b)| (u + a, s + b))
    }

    /// VmRSS of the tree, KiB.
    fn rss_kib(&self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .sum()
    }
}

/// Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime,
/// [13] cutime, [14] cstime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The sink's counters: (TLS sessions, messages).
async fn sink_stats(addr: SocketAddr) -> io::Result<(u64, u64)> {
    let mut s = TcpStream::connect(addr).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    let row = parse_line(&text);
    let get = |k: &str| {
        row.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("sink stats without {k}: {text:?}")))
    };
    Ok((get("tls_sessions")?, get("messages")?))
}

/// Polls the sink until it has `want` messages or `limit` passed; returns its last counters.
async fn await_messages(addr: SocketAddr, want: u64, limit: Duration) -> io::Result<(u64, u64)> {
    let started = Instant::now();
    loop {
        let stats = sink_stats(addr).await?;
        if stats.1 >= want || started.elapsed() > limit {
            return Ok(stats);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn load(args: LoadArgs) -> io::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let tls = connector(args.tls);
    let meter = Meter { root: args.pid };
    let chunk = Arc::new(body_chunk());
    let deadline = Duration::from_secs_f64(args.max_seconds);
    let tls_name = match args.tls {
        Tls::V13 => "1.3",
        Tls::V12 => "1.2",
        Tls::Plain => "plain",
    };
    let mut out = format!(
        "{} scenario={:?} tls={tls_name}",
        args.tag.trim(),
        args.scenario
    )
    .trim()
    .to_lowercase();
    match args.scenario {
        Scenario::Sessions | Scenario::Latency => {
            let concurrency = if args.scenario == Scenario::Latency {
                1
            } else {
                args.concurrency.max(1)
            };
            let stats0 = match args.await_delivered {
                Some(addr) => Some(sink_stats(addr).await?),
                None => None,
            };
            // One client waiting for each message to reach the sink: end-to-end latency too.
            let each = stats0.filter(|_| concurrency == 1).map(|s| s.1);
            let started = Instant::now();
            let (user0, sys0) = meter.cpu_split();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (next, tls, chunk) = (next.clone(), tls.clone(), chunk.clone());
                let (count, size, target) = (args.count, args.size, args.target);
                let stats_addr = args.await_delivered;
                workers.spawn(async move {
                    let mut lat = Vec::new();
                    let mut e2e = Vec::new();
                    let mut errors = 0usize;
                    let mut first_error = None;
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count
                        && started.elapsed() < deadline
                    {
                        let t = Instant::now();
                        match full_session(target, tls.as_ref(), size, &chunk).await {
                            Ok(()) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert(e.to_string());
                                continue;
                            }
                        }
                        if let (Some(m0), Some(addr)) = (each, stats_addr) {
                            let want = m0 + lat.len() as u64;
                            match await_messages(addr, want, Duration::from_secs(60)).await {
                                Ok((_, m)) if m >= want => {
                                    e2e.push(t.elapsed().as_secs_f64() * 1000.0)
                                }
                                Ok(_) => {
                                    errors += 1;
                                    first_error.get_or_insert("not delivered in 60 s".into());
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Ok((lat, e2e, errors, first_error))
                });
            }
            let mut lat = Vec::new();
            let mut e2e = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            while let Some(r) = workers.join_next().await {
                let (l, d, e, f) = r.map_err(io::Error::other)??;
                lat.extend(l);
                e2e.extend(d);
                errors += e;
                first_error = first_error.or(f);
            }
            let wall = started.elapsed().as_secs_f64();
            let mut delivered = String::new();
            if let (Some((tls0, m0)), Some(addr)) = (stats0, args.await_delivered) {
                let want = m0 + lat.len() as u64;
                let (tls1, m1) = await_messages(addr, want, Duration::from_secs(300)).await?;
                let (n, handshakes) = (m1 - m0, tls1 - tls0);
                let secs = started.elapsed().as_secs_f64();
                if m1 < want {
                    errors += (want - m1) as usize;
                    first_error
                        .get_or_insert(format!("{} message(s) never reached the sink", want - m1));
                }
                e2e.sort_by(f64::total_cmp);
                delivered = format!(
                    " delivered={n} delivered_s={secs:.2} delivered_rate_per_s={:.0} sink_tls_sessions={handshakes} msgs_per_tls_session={:.2}",
                    n as f64 / secs,
                    n as f64 / handshakes.max(1) as f64
                );
                if !e2e.is_empty() {
                    delivered += &format!(
                        " e2e_p50_ms={:.2} e2e_p99_ms={:.2}",
                        percentile(&e2e, 0.5),
                        percentile(&e2e, 0.99)
                    );
                }
            }
            // Let the proxy finish closing (its last log lines) before reading its clock.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (user1, sys1) = meter.cpu_split();
            let (user, sys) = (user1 - user0, sys1 - sys0);
            let cpu = user + sys;
            lat.sort_by(f64::total_cmp);
            let done = lat.len();
            out += &format!(
                " sessions={done} errors={errors} wall_s={wall:.2} rate_per_s={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2}",
                done as f64 / wall,
                percentile(&lat, 0.5),
                percentile(&lat, 0.9),
                percentile(&lat, 0.99),
            );
            if args.pid.is_some() && done > 0 {
                out += &format!(
                    " cpu_s={cpu:.2} cpu_us_per_session={:.0} kernel_share={:.2}",
                    cpu * 1e6 / done as f64,
                    if cpu > 0.0 { sys / cpu } else { f64::NAN }
                );
            }
            out += &delivered;
            if let Some(e) = first_error {
                out += &format!(" first_error=\"{}\"", e.replace('"', "'"));
            }
        }
        Scenario::Bulk => {
            let bytes = args.size * 1024 * 1024;
            let mut buf = Vec::new();
            let stats0 = match args.await_delivered {
                Some(addr) => Some(sink_stats(addr).await?.1),
                None => None,
            };
            let mut session = open(args.target, tls.as_ref(), &mut buf).await?;
            let cpu0 = meter.cpu_seconds();
            let started = Instant::now();
            match &mut session {
                Session::Tls(s) => transaction(&mut **s, &mut buf, bytes, &chunk).await?,
                Session::Plain(s) => transaction(s, &mut buf, bytes, &chunk).await?,
            }
            drop(session);
            if let (Some(m0), Some(addr)) = (stats0, args.await_delivered) {
                let (_, m1) = await_messages(addr, m0 + 1, Duration::from_secs(300)).await?;
                if m1 <= m0 {
                    return Err(io::Error::other("the bulk message never reached the sink"));
                }
            }
            let wall = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(200)).await;
            let cpu = meter.cpu_seconds() - cpu0;
            let mb = bytes as f64 / 1e6;
            out += &format!(" mb={mb:.0} wall_s={wall:.2} mb_per_s={:.0}", mb / wall);
            if args.pid.is_some() {
                out += &format!(" cpu_s={cpu:.2} cpu_ms_per_mb={:.3}", cpu * 1000.0 / mb);
            }
        }
        Scenario::Idle => {
            let rss0 = meter.rss_kib();
            let started = Instant::now();
            let sem = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..args.count {
                let (sem, tls, target) = (sem.clone(), tls.clone(), args.target);
                opening.spawn(async move {
                    let _permit = sem.acquire_owned().await.ok()?;
                    let mut buf = Vec::new();
                    open(target, tls.as_ref(), &mut buf).await.ok()
                });
            }
            let mut held = Vec::with_capacity(args.count);
            while let Some(r) = opening.join_next().await {
                if let Ok(Some(s)) = r {
                    held.push(s);
                }
            }
            let setup = started.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
            let rss1 = meter.rss_kib();
            // A new session must still be served while the idle ones are held.
            let t = Instant::now();
            let probe = full_session(args.target, tls.as_ref(), args.size, &chunk).await;
            let probe_ms = t.elapsed().as_secs_f64() * 1000.0;
            out += &format!(
                " idle_held={} idle_wanted={} setup_s={setup:.2} probe={} probe_ms={probe_ms:.2}",
                held.len(),
                args.count,
                if probe.is_ok() { "ok" } else { "failed" },
            );
            if args.pid.is_some() && !held.is_empty() {
                out += &format!(
                    " rss_before_kib={rss0:.0} rss_idle_kib={rss1:.0} rss_kib_per_session={:.1}",
                    (rss1 - rss0) / held.len() as f64
                );
            }
            drop(held);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("{out}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report

type Row = BTreeMap<String, String>;

fn parse_line(line: &str) -> Row {
    let mut row = Row::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            value = quoted[..end].to_string();
            rest = quoted.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        row.insert(key, value);
        rest = rest.trim_start();
    }
    row
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Median of `key` over the outbound rows of `system` and `scenario`.
fn outbound_value(rows: &[Row], system: &str, scenario: &str, key: &str) -> Option<f64> {
    median(
        rows.iter()
            .filter(|r| {
                r.get("cert").map(String::as_str) == Some("outbound")
                    && r.get("system").map(String::as_str) == Some(system)
                    && r.get("scenario").map(String::as_str) == Some(scenario)
            })
            .filter_map(|r| r.get(key)?.parse().ok())
            .collect(),
    )
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// The outbound tables: the three relays side by side, then starttls-proxy without and with
/// DANE (MX routing through the signed zone, caches warm).
fn report_outbound(rows: &[Row]) {
    let metrics: [(&str, &str, &str); 9] = [
        (
            "CPU per relayed message, 32 clients (µs)",
            "sessions",
            "cpu_us_per_session",
        ),
        (
            "  of which in the kernel (share)",
            "sessions",
            "kernel_share",
        ),
        (
            "messages delivered per second, 32 clients (wall)",
            "sessions",
            "delivered_rate_per_s",
        ),
        (
            "messages per TLS session at the sink",
            "sessions",
            "msgs_per_tls_session",
        ),
        (
            "latency p50, one client, to the relay's 250 (ms)",
            "latency",
            "p50_ms",
        ),
        (
            "latency p50, one client, until delivered (ms)",
            "latency",
            "e2e_p50_ms",
        ),
        (
            "latency p99, one client, until delivered (ms)",
            "latency",
            "e2e_p99_ms",
        ),
        (
            "CPU per MB, one large message (ms)",
            "bulk",
            "cpu_ms_per_mb",
        ),
        (
            "bulk throughput until delivered (MB/s, wall)",
            "bulk",
            "mb_per_s",
        ),
    ];
    let has = |system: &str| {
        rows.iter().any(|r| {
            r.get("cert").map(String::as_str) == Some("outbound")
                && r.get("system").map(String::as_str) == Some(system)
        })
    };
    if has("starttls-proxy") || has("postfix") || has("stunnel") {
        println!();
        println!(
            "Outbound: legacy MTA (plaintext) → relay → STARTTLS sink, one 10 KiB message per \
             session; CPU = the relay's process tree (Postfix: master and every daemon)."
        );
        println!();
        println!(
            "| {:<50} | {:>14} | {:>10} | {:>10} | {:>9} | {:>9} |",
            "metric", "starttls-proxy", "postfix", "stunnel", "/postfix", "/stunnel"
        );
        println!(
            "|{:-<52}|{:->16}|{:->12}|{:->12}|{:->11}|{:->11}|",
            "", "", "", "", "", ""
        );
        for (label, scenario, key) in metrics {
            let v: Vec<Option<f64>> = ["starttls-proxy", "postfix", "stunnel"]
                .iter()
                .map(|s| outbound_value(rows, s, scenario, key))
                .collect();
            println!(
                "| {:<50} | {:>14} | {:>10} | {:>10} | {:>9} | {:>9} |",
                label,
                fmt_value(v[0]),
                fmt_value(v[1]),
                fmt_value(v[2]),
                fmt_ratio(v[0], v[1]),
                fmt_ratio(v[0], v[2])
            );
        }
    }
    if has("proxy-nodane") || has("proxy-dane") {
        println!();
        println!(
            "starttls-proxy routed by MX through the signed zone, caches warm: without DANE or \
             MTA-STS (opportunistic, mta_sts = false); with DANE (the defaults: dane, MTA-STS on; \
             TLSA 3 1 1); verify (WebPKI, configured); with MTA-STS alone (opportunistic, enforce \
             policy, WebPKI). Postfix: dane level."
        );
        println!();
        println!(
            "| {:<50} | {:>8} | {:>9} | {:>8} | {:>8} | {:>8} | {:>10} | {:>12} |",
            "metric",
            "without",
            "with DANE",
            "verify",
            "MTA-STS",
            "DANE/w/o",
            "STS/verify",
            "postfix dane"
        );
        println!(
            "|{:-<52}|{:->10}|{:->11}|{:->10}|{:->10}|{:->10}|{:->12}|{:->14}|",
            "", "", "", "", "", "", "", ""
        );
        for (label, scenario, key) in metrics {
            let a = outbound_value(rows, "proxy-nodane", scenario, key);
            let b = outbound_value(rows, "proxy-dane", scenario, key);
            let v = outbound_value(rows, "proxy-verify", scenario, key);
            let c = outbound_value(rows, "proxy-sts", scenario, key);
            let d = outbound_value(rows, "postfix-dane", scenario, key);
            println!(
                "| {:<50} | {:>8} | {:>9} | {:>8} | {:>8} | {:>8} | {:>10} | {:>12} |",
                label,
                fmt_value(a),
                fmt_value(b),
                fmt_value(v),
                fmt_value(c),
                fmt_ratio(b, a),
                fmt_ratio(c, v),
                fmt_value(d)
            );
        }
        // Per round: the variants ran back to back, so their ratio is less exposed to the
        // machine's load drifting between rounds than the ratio of medians.
        let per_round = |variant: &str, base: &str| -> Vec<f64> {
            let cpu = |system: &str, round: &str| -> Option<f64> {
                rows.iter()
                    .find(|r| {
                        r.get("system").map(String::as_str) == Some(system)
                            && r.get("scenario").map(String::as_str) == Some("sessions")
                            && r.get("round").map(String::as_str) == Some(round)
                    })?
                    .get("cpu_us_per_session")?
                    .parse()
                    .ok()
            };
            rows.iter()
                .filter(|r| {
                    r.get("system").map(String::as_str) == Some(variant)
                        && r.get("scenario").map(String::as_str) == Some("sessions")
                })
                .filter_map(|r| {
                    let round = r.get("round")?;
                    Some(cpu(variant, round)? / cpu(base, round)?)
                })
                .collect()
        };
        println!();
        for (variant, base, name) in [
            ("proxy-dane", "proxy-nodane", "DANE / without"),
            ("proxy-verify", "proxy-nodane", "verify / without"),
            ("proxy-sts", "proxy-nodane", "MTA-STS / without"),
            ("proxy-sts", "proxy-verify", "MTA-STS / verify"),
        ] {
            let mut ratios = per_round(variant, base);
            if ratios.is_empty() {
                continue;
            }
            ratios.sort_by(f64::total_cmp);
            println!(
                "CPU per message, {name}, per run pair ({}): median {:.3}, \
                 quartiles {:.3}–{:.3}, range {:.3}–{:.3}",
                ratios.len(),
                median(ratios.clone()).unwrap_or(f64::NAN),
                percentile(&ratios, 0.25),
                percentile(&ratios, 0.75),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
        let total = |system: &str, key: &str| -> u64 {
            rows.iter()
                .filter(|r| {
                    r.get("cert").map(String::as_str) == Some("outbound")
                        && r.get("system").map(String::as_str) == Some(system)
                })
                .filter_map(|r| r.get(key)?.parse::<u64>().ok())
                .sum()
        };
        let sessions = |system: &str| total(system, "sessions");
        for system in [
            "proxy-nodane",
            "proxy-dane",
            "proxy-verify",
            "proxy-sts",
            "postfix-dane",
        ] {
            if has(system) {
                println!(
                    "{system}: {} DNS queries reached the resolver and {} policy fetches the \
                     policy host during the measured runs ({} sessions)",
                    total(system, "dns_queries"),
                    total(system, "https_fetches"),
                    sessions(system)
                );
            }
        }
    }
}

fn report(results: &std::path::Path, ceilings: Option<&std::path::Path>) -> io::Result<()> {
    let text = std::fs::read_to_string(results)?;
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| l.contains("scenario="))
        .map(parse_line)
        .collect();
    let value = |system: &str, cert: &str, scenario: &str, tls: &str, key: &str| {
        let vals: Vec<f64> = rows
            .iter()
            .filter(|r| {
                r.get("system").map(String::as_str) == Some(system)
                    && r.get("cert").map(String::as_str) == Some(cert)
                    && r.get("scenario").map(String::as_str) == Some(scenario)
                    && r.get("tls").map(String::as_str) == Some(tls)
            })
            .filter_map(|r| r.get(key)?.parse().ok())
            .collect();
        let n = vals.len();
        median(vals).map(|m| (m, n))
    };
    let rounds = rows
        .iter()
        .filter_map(|r| r.get("round")?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    println!();
    println!(
        "Medians over {rounds} interleaved round(s). CPU = the proxy process's own utime+stime \
         (/proc/PID/stat, 10 ms ticks);"
    );
    println!(
        "wall-clock figures (rate, latency, MB/s) depend on the machine's load and are noisy."
    );
    println!();
    let inbound = rows
        .iter()
        .any(|r| matches!(r.get("cert").map(String::as_str), Some("ecdsa" | "rsa")));
    if inbound {
        let systems = ["starttls-proxy", "nginx", "stunnel"];
        println!(
            "| {:<44} | {:>14} | {:>10} | {:>10} | {:>8} | {:>10} | {:>10} |",
            "metric", "starttls-proxy", "nginx", "stunnel", "/nginx", "/stunnel", "target"
        );
        println!(
            "|{:-<46}|{:->16}|{:->12}|{:->12}|{:->10}|{:->12}|{:->12}|",
            "", "", "", "", "", "", ""
        );
        type Metric = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            &'static str,
        );
        let metrics: [Metric; 14] = [
            (
                "CPU per session, TLS 1.3, ECDSA (µs)",
                "ecdsa",
                "sessions",
                "1.3",
                "cpu_us_per_session",
                "≤ 150",
            ),
            (
                "  of which in the kernel (share)",
                "ecdsa",
                "sessions",
                "1.3",
                "kernel_share",
                "",
            ),
            (
                "CPU per session, TLS 1.2, ECDSA (µs)",
                "ecdsa",
                "sessions",
                "1.2",
                "cpu_us_per_session",
                "",
            ),
            (
                "CPU per session, TLS 1.3, RSA-2048 (µs)",
                "rsa",
                "sessions",
                "1.3",
                "cpu_us_per_session",
                "",
            ),
            (
                "CPU per session, TLS 1.2, RSA-2048 (µs)",
                "rsa",
                "sessions",
                "1.2",
                "cpu_us_per_session",
                "",
            ),
            (
                "session rate, TLS 1.3 ECDSA (/s, wall)",
                "ecdsa",
                "sessions",
                "1.3",
                "rate_per_s",
                "",
            ),
            (
                "latency p50, one client, TLS 1.3 (ms, wall)",
                "ecdsa",
                "latency",
                "1.3",
                "p50_ms",
                "≤ 1",
            ),
            (
                "latency p99, one client, TLS 1.3 (ms, wall)",
                "ecdsa",
                "latency",
                "1.3",
                "p99_ms",
                "",
            ),
            (
                "CPU per MB through TLS 1.3 (ms)",
                "ecdsa",
                "bulk",
                "1.3",
                "cpu_ms_per_mb",
                "≤ 0.35",
            ),
            (
                "bulk throughput through TLS 1.3 (MB/s, wall)",
                "ecdsa",
                "bulk",
                "1.3",
                "mb_per_s",
                "",
            ),
            (
                "CPU per MB, plaintext session (ms)",
                "ecdsa",
                "bulk",
                "plain",
                "cpu_ms_per_mb",
                "≤ 0.38",
            ),
            (
                "RSS per idle TLS 1.3 session (KiB)",
                "ecdsa",
                "idle",
                "1.3",
                "rss_kib_per_session",
                "≤ 12",
            ),
            (
                "idle TLS sessions held",
                "ecdsa",
                "idle",
                "1.3",
                "idle_held",
                "",
            ),
            (
                "new session while idle ones held (ms, wall)",
                "ecdsa",
                "idle",
                "1.3",
                "probe_ms",
                "",
            ),
        ];
        for (label, cert, scenario, tls, key, target) in metrics {
            let vals: Vec<Option<f64>> = systems
                .iter()
                .map(|s| value(s, cert, scenario, tls, key).map(|(m, _)| m))
                .collect();
            let fmt = |v: Option<f64>| match v {
                Some(x) if x >= 100.0 => format!("{x:.0}"),
                Some(x) if x >= 10.0 => format!("{x:.1}"),
                Some(x) => format!("{x:.2}"),
                None => "-".into(),
            };
            let ratio = |other: Option<f64>| match (vals[0], other) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            println!(
                "| {:<44} | {:>14} | {:>10} | {:>10} | {:>8} | {:>10} | {:>10} |",
                label,
                fmt(vals[0]),
                fmt(vals[1]),
                fmt(vals[2]),
                ratio(vals[1]),
                ratio(vals[2]),
                target
            );
        }
    }
    report_outbound(&rows);
    let errors: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.get("errors").is_some_and(|e| e != "0") || r.get("probe").is_some_and(|p| p != "ok")
        })
        .map(|r| {
            format!(
                "{} {} {} tls={} round={}: errors={} {}",
                r.get("system").map_or("?", |s| s),
                r.get("cert").map_or("?", |s| s),
                r.get("scenario").map_or("?", |s| s),
                r.get("tls").map_or("?", |s| s),
                r.get("round").map_or("?", |s| s),
                r.get("errors").map_or("-", |s| s),
                r.get("first_error").map_or("", |s| s)
            )
        })
        .collect();
    // The product's relay alone (bare forwarder, plaintext), if measured.
    let relay_rows: Vec<(String, f64)> = ["relay_tcp-splice", "relay-buffered"]
        .iter()
        .filter_map(|s| {
            value(s, "none", "bulk", "plain", "cpu_ms_per_mb").map(|(m, _)| (s.to_string(), m))
        })
        .collect();
    if !relay_rows.is_empty() {
        println!();
        println!("Relay alone (bare TCP forwarder on the proxy core, one plaintext bulk session):");
        for (name, v) in relay_rows {
            println!("  {name:<20} CPU per MB {v:.3} ms");
        }
    }
    if let Some(path) = ceilings {
        if let Ok(text) = std::fs::read_to_string(path) {
            let c = parse_line(&text.replace('\n', " "));
            let get = |k: &str| c.get(k).and_then(|v| v.parse::<f64>().ok());
            println!();
            println!("Ceilings from `openssl speed` in this run (one core, the proxy's):");
            if let Some(sign) = get("ecdsap256_sign_per_s") {
                println!(
                    "  ECDSA P-256 sign       {sign:>10.0} /s  = {:.1} µs",
                    1e6 / sign
                );
            }
            if let Some(x) = get("x25519_per_s") {
                println!("  X25519 derive          {x:>10.0} /s  = {:.1} µs", 1e6 / x);
            }
            if let (Some(sign), Some(x)) = (get("ecdsap256_sign_per_s"), get("x25519_per_s")) {
                let floor = 1e6 / sign + 1e6 / x;
                println!(
                    "  handshake crypto floor {floor:>10.1} µs (sign + X25519) → {:.0} handshakes/s/core; 2.5× = {:.0} µs",
                    1e6 / floor,
                    2.5 * floor
                );
            }
            if let Some(rsa) = get("rsa2048_sign_per_s") {
                println!(
                    "  RSA-2048 sign          {rsa:>10.0} /s  = {:.1} µs",
                    1e6 / rsa
                );
            }
            if let Some(gcm) = get("aes256gcm_mb_per_s") {
                println!(
                    "  AES-256-GCM (16 KiB)   {gcm:>10.0} MB/s = {:.3} ms per MB",
                    1000.0 / gcm
                );
            }
        }
    }
    // compare.sh --only client_address: the same proxy in each `client_address` mode.
    let base = value("ca-none", "ecdsa", "sessions", "1.3", "cpu_us_per_session");
    if let Some((none, n)) = base {
        println!();
        println!("client_address modes (CPU per session, TLS 1.3, ECDSA; medians of {n} rounds):");
        for mode in ["none", "proxy-v2", "transparent", "xclient"] {
            let system = format!("ca-{mode}");
            if let Some((cpu, _)) = value(&system, "ecdsa", "sessions", "1.3", "cpu_us_per_session")
            {
                println!(
                    "  {mode:<12} {cpu:>8.0} µs  {:>+6.1}% over none",
                    (cpu / none - 1.0) * 100.0
                );
            }
        }
    }
    if !errors.is_empty() {
        println!();
        println!("Runs with errors:");
        for e in errors {
            println!("  {e}");
        }
    }
    Ok(())
}
