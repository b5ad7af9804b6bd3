//! A hostile MX: offers STARTTLS and answers it with `220` followed, in the same segment, by an
//! injected `250` (CVE-2011-0411 class). It records every line it receives, so a test can prove
//! no MAIL/RCPT ever reached it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

pub struct InjectingMx {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<String>>>,
}

impl InjectingMx {
    pub fn start(ip: Ipv4Addr) -> InjectingMx {
        let listener = TcpListener::bind((ip, 25)).expect("bind hostile MX");
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = stream.write_all(b"220 evil.test ESMTP\r\n");
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        let cmd = line.trim_end().to_string();
                        log.lock().unwrap().push(cmd.clone());
                        let upper = cmd.to_ascii_uppercase();
                        let answer: &[u8] = if upper.starts_with("EHLO") {
                            b"250-evil.test\r\n250 STARTTLS\r\n"
                        } else if upper.starts_with("STARTTLS") {
                            b"220 2.0.0 Ready to start TLS\r\n250 2.1.0 injected\r\n"
                        } else if upper.starts_with("QUIT") {
                            b"221 2.0.0 Bye\r\n"
                        } else {
                            b"250 2.0.0 Ok\r\n"
                        };
                        if stream.write_all(answer).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        InjectingMx { addr, received }
    }

    /// Every line received so far (the TLS handshake, if any, shows up as garbage lines).
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }
}
