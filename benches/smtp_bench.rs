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
    /// Plaintext SMTP sink.
    Sink {
        #[arg(long)]
        listen: SocketAddr,
        /// Every connection begins with a PROXY v1 or v2 header (read and dropped), as from a
        /// proxy with `client_address = "proxy-v2"`.
        #[arg(long)]
        proxy_header: bool,
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
        } => rt.block_on(sink(listen, proxy_header)),
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

async fn sink(listen: SocketAddr, proxy_header: bool) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("event=listening role=sink addr={}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if proxy_header && skip_proxy_header(&mut stream).await.is_err() {
                return;
            }
            let _ = sink_session(stream).await;
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

/// Replies without pipelining tricks; DATA bodies are scanned with memmem and never stored.
async fn sink_session(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream
        .write_all(b"220 sink.bench.example ESMTP\r\n")
        .await?;
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
                return Ok(());
            }
            end += n;
        };
        let verb = buf[start..line_end.min(start + 4)].to_ascii_uppercase();
        start = line_end;
        match &verb[..] {
            b"EHLO" => stream
                .write_all(
                    b"250-sink.bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
                )
                .await?,
            b"HELO" => stream.write_all(b"250 sink.bench.example\r\n").await?,
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => stream.write_all(b"250 2.0.0 ok\r\n").await?,
            b"QUIT" => {
                stream.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
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
                        return Ok(());
                    }
                }
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
    fn pids(&self) -> Vec<u32> {
        let Some(root) = self.root else {
            return Vec::new();
        };
        let mut pids = vec![root];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<u32>().ok())
                else {
                    continue;
                };
                if stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) == Some(root) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// utime + stime of the tree, in seconds (USER_HZ is 100 on Linux).
    fn cpu_seconds(&self) -> f64 {
        let (user, sys) = self.cpu_split();
        user + sys
    }

    /// (utime, stime) of the tree, in seconds.
    fn cpu_split(&self) -> (f64, f64) {
        self.pids()
            .into_iter()
            .filter_map(stat_fields)
            .map(|f| {
                let t = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                (t(11) as f64 / 100.0, t(12) as f64 / 100.0)
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

/// Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime.
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
            let started = Instant::now();
            let (user0, sys0) = meter.cpu_split();
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut workers = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (next, tls, chunk) = (next.clone(), tls.clone(), chunk.clone());
                let (count, size, target) = (args.count, args.size, args.target);
                workers.spawn(async move {
                    let mut lat = Vec::new();
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
                            }
                        }
                    }
                    (lat, errors, first_error)
                });
            }
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            while let Some(r) = workers.join_next().await {
                let (l, e, f) = r.map_err(io::Error::other)?;
                lat.extend(l);
                errors += e;
                first_error = first_error.or(f);
            }
            let wall = started.elapsed().as_secs_f64();
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
            if let Some(e) = first_error {
                out += &format!(" first_error=\"{}\"", e.replace('"', "'"));
            }
        }
        Scenario::Bulk => {
            let bytes = args.size * 1024 * 1024;
            let mut buf = Vec::new();
            let mut session = open(args.target, tls.as_ref(), &mut buf).await?;
            let cpu0 = meter.cpu_seconds();
            let started = Instant::now();
            match &mut session {
                Session::Tls(s) => transaction(&mut **s, &mut buf, bytes, &chunk).await?,
                Session::Plain(s) => transaction(s, &mut buf, bytes, &chunk).await?,
            }
            let wall = started.elapsed().as_secs_f64();
            drop(session);
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
