//! Scripted MX hosts for what no well-behaved server does: injecting a response after the 220
//! to STARTTLS (CVE-2011-0411 class), refusing STARTTLS with 454, or answering the handshake
//! with garbage. They accept every other command with 250/354 and record every line received
//! (per connection), so a test can prove where MAIL/RCPT went and where they did not.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// How the scripted MX answers STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Starttls {
    /// `220`, plus an injected `250` in the same segment.
    Inject,
    /// `454 4.7.0 TLS not available due to local problem`.
    Refuse,
    /// `220`, then plaintext garbage instead of a ServerHello.
    Garbage,
    /// This reply (`421 ...` or `221 ...`), then the MX stops writing (half-close) but goes on
    /// recording whatever the client still sends, until the client closes.
    Closing(&'static str),
}

/// What a scripted MX says, where it is not a well-behaved server.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// The greeting line (`220 ...`, or a rejection such as `554 5.7.1 go away`, after which
    /// every command but QUIT gets `503`).
    pub greeting: &'static str,
    /// The reply line to both EHLO and HELO; `None`: a 250 offering STARTTLS.
    pub ehlo: Option<&'static str>,
    pub starttls: Starttls,
}

impl Script {
    pub fn starttls(starttls: Starttls) -> Script {
        Script {
            greeting: "220 scripted.test ESMTP",
            ehlo: None,
            starttls,
        }
    }
}

pub struct ScriptedMx {
    pub addr: SocketAddr,
    /// Lines received, one list per connection.
    sessions: Arc<Mutex<Vec<Vec<String>>>>,
}

impl ScriptedMx {
    /// On `ip:25`.
    pub fn with(ip: Ipv4Addr, starttls: Starttls) -> ScriptedMx {
        Self::on(IpAddr::V4(ip), starttls)
    }

    /// On any address, IPv6 included.
    pub fn on(ip: IpAddr, starttls: Starttls) -> ScriptedMx {
        Self::scripted(ip, Script::starttls(starttls))
    }

    /// On `ip:25`, following `script`.
    pub fn scripted(ip: impl Into<IpAddr>, script: Script) -> ScriptedMx {
        let Script {
            greeting,
            ehlo,
            starttls,
        } = script;
        let listener = TcpListener::bind((ip.into(), 25)).expect("bind scripted MX");
        let addr = listener.local_addr().unwrap();
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let log = sessions.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let index = {
                    let mut all = log.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = stream.write_all(format!("{greeting}\r\n").as_bytes());
                    let rejected = !greeting.starts_with("220");
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    let mut in_data = false;
                    let mut closing = false;
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        let cmd = line.trim_end().to_string();
                        log.lock().unwrap()[index].push(cmd.clone());
                        line.clear();
                        if closing {
                            continue;
                        }
                        if in_data {
                            if cmd == "." {
                                in_data = false;
                                let _ = stream.write_all(b"250 2.0.0 Ok: queued by scripted\r\n");
                            }
                            continue;
                        }
                        let upper = cmd.to_ascii_uppercase();
                        let custom_ehlo = ehlo.map(|l| format!("{l}\r\n"));
                        let answer: &[u8] = if rejected && !upper.starts_with("QUIT") {
                            b"503 5.5.1 Error: rejected in the greeting\r\n"
                        } else if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            match &custom_ehlo {
                                Some(reply) => reply.as_bytes(),
                                None if upper.starts_with("HELO") => b"250 scripted.test\r\n",
                                None => b"250-scripted.test\r\n250 STARTTLS\r\n",
                            }
                        } else if upper.starts_with("STARTTLS") {
                            match starttls {
                                Starttls::Inject => {
                                    b"220 2.0.0 Ready to start TLS\r\n250 2.1.0 injected\r\n"
                                }
                                Starttls::Refuse => {
                                    b"454 4.7.0 TLS not available due to local problem\r\n"
                                }
                                Starttls::Garbage => {
                                    let _ = stream.write_all(b"220 2.0.0 Ready to start TLS\r\n");
                                    // Wait for the ClientHello, answer with plaintext.
                                    let _ = reader.fill_buf();
                                    let _ = stream.write_all(b"this is not a TLS record\r\n");
                                    break;
                                }
                                Starttls::Closing(reply) => {
                                    let _ = stream.write_all(format!("{reply}\r\n").as_bytes());
                                    let _ = stream.shutdown(std::net::Shutdown::Write);
                                    closing = true;
                                    continue;
                                }
                            }
                        } else if upper.starts_with("DATA") {
                            in_data = true;
                            b"354 End data with <CR><LF>.<CR><LF>\r\n"
                        } else if upper.starts_with("QUIT") {
                            b"221 2.0.0 Bye\r\n"
                        } else {
                            b"250 2.0.0 Ok\r\n"
                        };
                        if stream.write_all(answer).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        ScriptedMx { addr, sessions }
    }

    /// Every line received so far, all connections in order.
    pub fn received(&self) -> Vec<String> {
        self.sessions.lock().unwrap().concat()
    }

    /// Lines received, per connection.
    pub fn sessions(&self) -> Vec<Vec<String>> {
        self.sessions.lock().unwrap().clone()
    }
}

/// Whether `lines` hold an envelope command.
pub fn has_envelope(lines: &[String]) -> bool {
    lines.iter().any(|l| {
        let u = l.to_ascii_uppercase();
        u.starts_with("MAIL") || u.starts_with("RCPT") || u.starts_with("DATA")
    })
}
