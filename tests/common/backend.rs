//! A tiny recording SMTP backend, for the few cases where the suite must see exactly which
//! lines reached the MTA (STARTTLS never forwarded, pipelined RSET discarded, refused MAIL not
//! passed on) or needs a reply no real MTA gives (EHLO answered with 502). Everything else runs
//! against real peers.

use super::unique_ip;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// How the fake answers EHLO.
#[derive(Debug, Clone)]
pub enum EhloMode {
    /// `250` with these extension lines (e.g. `["PIPELINING", "STARTTLS", "8BITMIME"]`).
    Extensions(Vec<String>),
    /// `502 5.5.1` (an MTA from before ESMTP): the proxy must fall back to HELO.
    Unsupported,
}

pub struct FakeBackend {
    pub addr: SocketAddr,
    /// Every command line received, across all connections, in order.
    lines: Arc<Mutex<Vec<String>>>,
    /// The TCP peer of every connection, in order (what the backend sees as the client).
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

impl FakeBackend {
    pub fn start(mode: EhloMode) -> FakeBackend {
        Self::start_at(SocketAddr::from((unique_ip(), 0)), mode)
    }

    /// Listens on `addr` (port 0: any).
    pub fn start_at(addr: SocketAddr, mode: EhloMode) -> FakeBackend {
        let listener = TcpListener::bind(addr).expect("bind fake backend");
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, stopping, seen) = (lines.clone(), stop.clone(), peers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(peer) = stream.peer_addr() {
                    seen.lock().unwrap().push(peer);
                }
                let (rec, mode) = (rec.clone(), mode.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, rec, mode);
                });
            }
        });
        FakeBackend {
            addr,
            lines,
            peers,
            stop,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, rec: Arc<Mutex<Vec<String>>>, mode: EhloMode) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 fake.backend.test ESMTP fake\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end_matches(['\r', '\n']).to_string();
        rec.lock().unwrap().push(cmd.clone());
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: String = match verb.as_str() {
            "EHLO" => match &mode {
                EhloMode::Unsupported => "502 5.5.1 Error: command not implemented\r\n".into(),
                EhloMode::Extensions(ext) => {
                    let mut r = String::from("250");
                    r += if ext.is_empty() { " " } else { "-" };
                    r += "fake.backend.test\r\n";
                    for (i, e) in ext.iter().enumerate() {
                        let sep = if i + 1 == ext.len() { ' ' } else { '-' };
                        r += &format!("250{sep}{e}\r\n");
                    }
                    r
                }
            },
            "HELO" => "250 fake.backend.test\r\n".into(),
            "MAIL" => "250 2.1.0 Ok\r\n".into(),
            "RCPT" => "250 2.1.5 Ok\r\n".into(),
            "RSET" | "NOOP" => "250 2.0.0 Ok\r\n".into(),
            "DATA" => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                loop {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                rec.lock().unwrap().push("<end of data>".into());
                "250 2.0.0 Ok: queued as FAKE\r\n".into()
            }
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            _ => "502 5.5.2 Error: command not recognized\r\n".into(),
        };
        out.write_all(reply.as_bytes())?;
    }
}
