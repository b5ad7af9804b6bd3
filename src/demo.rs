//! `starttls-proxy demo`: the proxy in front of a built-in recording MTA, on loopback, with
//! ready-to-paste commands. The sink prints a line per message with the TLS facts the proxy saw.

use crate::config::Config;
use crate::inbound::Observer;
use crate::server::Server;
use crate::session::TlsFacts;
use crate::smtp::data::{EndOfData, Scan};
use crate::smtp::{Command, LineReader};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};

const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// The sink keeps no message bodies; it only counts them, so this bounds nothing but lines.
const SINK_LINE_LIMIT: usize = 4096;

/// TLS facts by the proxy's local address towards the sink (the sink's peer address).
type Sessions = Arc<Mutex<HashMap<SocketAddr, TlsFacts>>>;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the demo sink on {0}: {1} (is another demo running?)")]
    Sink(SocketAddr, std::io::Error),
    #[error("{0} (is another demo running?)")]
    Server(#[from] crate::server::ServerError),
}

pub async fn run() -> Result<(), DemoError> {
    let mut config = Config::parse(DEMO_CONFIG, Path::new("config/demo.toml"))?;
    // The demo runs as anyone, anywhere: its session results go to a directory of its own.
    config.state.directory =
        std::env::temp_dir().join(format!("starttls-proxy-demo-{}", std::process::id()));
    let results = config.state.results_dir();
    let sink_addr = config.inbound[0].backend;
    let sink = TcpListener::bind(sink_addr)
        .await
        .map_err(|e| DemoError::Sink(sink_addr, e))?;
    let sessions: Sessions = Arc::default();
    let recorder = sessions.clone();
    let observer: Observer = Arc::new(move |record| {
        if let (Some(local), Some(tls)) = (record.next_hop_local, &record.tls) {
            recorder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(local, tls.clone());
        }
    });
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).expect("signal handler");
    let mut terminate = signal(SignalKind::terminate()).expect("signal handler");
    let server = Server::start(config, Some(observer)).await?;
    let proxy = server.inbound_addrs()["demo"];
    let admin = server
        .admin_addr()
        .map_or("disabled".to_string(), |a| format!("http://{a}/metrics"));
    println!("starttls-proxy demo");
    println!("  proxy (offers STARTTLS, self-signed certificate): {proxy}");
    println!("  recording MTA behind it (plaintext only):         {sink_addr}");
    println!("  metrics:                                          {admin}");
    println!(
        "  session results (one JSON line per session):      {}",
        results.display()
    );
    println!();
    println!("Send a message over STARTTLS:");
    println!(
        "  swaks --server {} --port {} --from demo@example.net --to user@example.org --tls",
        proxy.ip(),
        proxy.port()
    );
    println!("Or talk to it by hand:");
    // -nocommands: otherwise s_client takes a line starting with R (RCPT) as "renegotiate".
    println!("  openssl s_client -starttls smtp -connect {proxy} -crlf -nocommands");
    println!();
    println!("Waiting for mail; Ctrl-C stops.");
    let sink_task = tokio::spawn(serve_sink(sink, sessions));
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    sink_task.abort();
    server.shutdown().await;
    Ok(())
}

async fn serve_sink(listener: TcpListener, sessions: Sessions) {
    let mut next_id = 1u64;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let sessions = sessions.clone();
        let first_id = next_id;
        next_id += 1000;
        tokio::spawn(async move {
            let _ = sink_session(stream, peer, sessions, first_id).await;
        });
    }
}

/// A minimal MTA: accepts everything, keeps nothing but a count.
async fn sink_session(
    stream: TcpStream,
    peer: SocketAddr,
    sessions: Sessions,
    mut id: u64,
) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut reader = LineReader::new(read);
    let mut out = BufWriter::new(write);
    out.write_all(b"220 sink.demo.test ESMTP recording sink\r\n")
        .await?;
    out.flush().await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    loop {
        let Ok(line) = reader.read_line(SINK_LINE_LIMIT).await else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(&line).to_string();
        let reply: &[u8] = match Command::parse(&line) {
            Command::Ehlo => {
                b"250-sink.demo.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
            }
            Command::Helo => b"250 sink.demo.test\r\n",
            Command::Mail(_) => {
                from = address(&text);
                to.clear();
                b"250 2.1.0 Ok\r\n"
            }
            Command::Rcpt(_) => {
                to.push(address(&text));
                b"250 2.1.5 Ok\r\n"
            }
            Command::Data => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                out.flush().await?;
                let size = read_body(&mut reader).await?;
                let tls = sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&peer)
                    .cloned();
                let how = match tls {
                    Some(t) => format!(
                        "over {} {} (SNI {})",
                        t.version,
                        t.cipher,
                        t.sni.as_deref().unwrap_or("none")
                    ),
                    None => "in PLAINTEXT (no STARTTLS)".to_string(),
                };
                println!(
                    "message #{id}: from <{from}> to <{}>, {size} bytes, {how}",
                    to.join(">, <")
                );
                out.write_all(format!("250 2.0.0 Ok: queued as DEMO{id}\r\n").as_bytes())
                    .await?;
                out.flush().await?;
                id += 1;
                continue;
            }
            Command::Rset | Command::Noop => b"250 2.0.0 Ok\r\n",
            Command::Quit => {
                out.write_all(b"221 2.0.0 Bye\r\n").await?;
                return out.flush().await;
            }
            _ => b"502 5.5.2 Error: command not recognized\r\n",
        };
        out.write_all(reply).await?;
        out.flush().await?;
    }
}

async fn read_body(
    reader: &mut LineReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<usize> {
    let mut scanner = EndOfData::default();
    let mut size = 0;
    loop {
        let chunk = reader.fill_buf().await.map_err(std::io::Error::other)?;
        match scanner.scan(chunk) {
            Scan::Body => {
                let n = chunk.len();
                size += n;
                reader.consume(n);
            }
            Scan::End(n) => {
                reader.consume(n);
                return Ok(size + n);
            }
            Scan::BareLf(_) => return Err(std::io::Error::other("bare LF")),
        }
    }
}

fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_string()
}
