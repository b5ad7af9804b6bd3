//! A raw SMTP client (plaintext, then rustls after STARTTLS) for the cases swaks and openssl
//! cannot express: pipelined bytes, garbage, over-long lines, half-finished transactions.

use super::PATIENCE;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

/// A parsed SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text after `NNN-`/`NNN ` on each line.
    pub lines: Vec<String>,
}

impl Reply {
    /// The RFC 3463 enhanced code at the start of the first line (`"5.5.2"`), or `""`.
    pub fn enhanced(&self) -> &str {
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        let word = first.split(' ').next().unwrap_or("");
        let looks_enhanced = word.split('.').count() == 3
            && word
                .split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
        if looks_enhanced {
            word
        } else {
            ""
        }
    }

    /// Asserts both the reply code and the enhanced status code.
    #[track_caller]
    pub fn assert(&self, code: u16, enhanced: &str) {
        assert!(
            self.code == code && self.enhanced() == enhanced,
            "expected {code} {enhanced}, got {self:?}"
        );
    }

    /// Asserts the reply code and that the first line starts with `text` (a greeting's host).
    #[track_caller]
    pub fn assert_text(&self, code: u16, text: &str) {
        assert!(
            self.code == code && self.lines.first().is_some_and(|l| l.starts_with(text)),
            "expected {code} {text}, got {self:?}"
        );
    }

    /// Whether an EHLO reply advertises `keyword` (case-insensitive, first word of a line).
    pub fn has_extension(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
        })
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
            Conn::Gone => Err(ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Gone => Ok(()),
        }
    }
}

/// A connected client with its own read buffer.
pub struct SmtpClient {
    conn: Conn,
    buf: Vec<u8>,
}

/// Why no reply could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection (cleanly or not).
    Closed(String),
    /// Nothing arrived within `PATIENCE`: the peer hangs.
    Hung,
    Malformed(String),
}

impl SmtpClient {
    pub fn connect(addr: SocketAddr) -> SmtpClient {
        let stream = TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("connect to the proxy at {addr}: {e}"));
        SmtpClient::from_stream(stream)
    }

    /// Wraps a connected stream (e.g. one bound to a chosen source address).
    pub fn from_stream(stream: TcpStream) -> SmtpClient {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        SmtpClient {
            conn: Conn::Plain(stream),
            buf: Vec::new(),
        }
    }

    /// Connects and reads the greeting, whatever its code.
    pub fn connected(addr: SocketAddr) -> (SmtpClient, Reply) {
        let mut client = SmtpClient::connect(addr);
        let greeting = client.reply();
        (client, greeting)
    }

    /// Connects and reads the greeting, which must be a 220.
    pub fn greeted(addr: SocketAddr) -> (SmtpClient, Reply) {
        let (client, greeting) = SmtpClient::connected(addr);
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        (client, greeting)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    /// Writes raw bytes in one write call.
    pub fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).expect("write to the proxy");
        self.conn.flush().expect("flush to the proxy");
    }

    /// Writes raw bytes, tolerating a peer that has gone away.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.write_all(bytes)?;
        self.conn.flush()
    }

    /// Sends `line` + CRLF and reads one reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn reply(&mut self) -> Reply {
        self.try_reply()
            .unwrap_or_else(|e| panic!("no reply from the proxy: {e:?}"))
    }

    pub fn try_reply(&mut self) -> Result<Reply, ReadError> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            if line.len() < 3 || !line.is_char_boundary(3) {
                return Err(ReadError::Malformed(line));
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| ReadError::Malformed(line.clone()))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
            let mut chunk = [0u8; 4096];
            match self.conn.read(&mut chunk) {
                Ok(0) => return Err(ReadError::Closed("EOF".into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(ReadError::Hung)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Closed(e.to_string())),
            }
        }
    }

    /// Asserts the proxy closes the connection (after any replies, returned) without hanging.
    #[track_caller]
    pub fn expect_closed(&mut self) -> Vec<Reply> {
        let mut replies = Vec::new();
        loop {
            match self.try_reply() {
                Ok(r) => replies.push(r),
                Err(ReadError::Closed(_)) => return replies,
                Err(ReadError::Hung) => panic!(
                    "the proxy neither replied nor closed within {PATIENCE:?}; replies so far: \
                     {replies:?}"
                ),
                Err(ReadError::Malformed(l)) => panic!("malformed reply line {l:?}"),
            }
        }
    }

    /// Asserts the proxy sends exactly one reply, `code` with `enhanced`, and then closes.
    #[track_caller]
    pub fn expect_closed_after(&mut self, code: u16, enhanced: &str) {
        let replies = self.expect_closed();
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies[0].assert(code, enhanced);
    }

    /// Bytes buffered but not yet consumed as replies.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// EHLO, STARTTLS (expects `220 2.0.0`), handshake trusting `ca`, with SNI `server_name`.
    pub fn starttls(&mut self, ca: &Path, server_name: &str) {
        let r = self.cmd("STARTTLS");
        r.assert(220, "2.0.0");
        assert!(
            self.buf.is_empty(),
            "bytes after the 220 before the handshake: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.handshake(ca, server_name, None)
            .unwrap_or_else(|e| panic!("TLS handshake with the proxy failed: {e}"));
    }

    /// EHLO, STARTTLS and the handshake (see `starttls`), then EHLO again inside TLS; returns
    /// that second EHLO reply.
    pub fn ehlo_tls(&mut self, ca: &Path, server_name: &str) -> Reply {
        self.cmd("EHLO client.test");
        self.starttls(ca, server_name);
        self.cmd("EHLO client.test")
    }

    /// Runs the TLS handshake on the plaintext connection, optionally pinning one version.
    pub fn handshake(
        &mut self,
        ca: &Path,
        server_name: &str,
        version: Option<&'static rustls::SupportedProtocolVersion>,
    ) -> Result<(), String> {
        let config = client_config(ca, version);
        let name = ServerName::try_from(server_name.to_string()).expect("server name");
        let connection = ClientConnection::new(Arc::new(config), name).expect("client connection");
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            panic!("handshake on a connection that is not plaintext");
        };
        let mut stream = StreamOwned::new(connection, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        self.conn = Conn::Tls(Box::new(stream));
        Ok(())
    }

    /// The negotiated protocol version and suite (rustls names).
    pub fn tls_facts(&self) -> Option<(String, String)> {
        match &self.conn {
            Conn::Tls(s) => Some((
                format!("{:?}", s.conn.protocol_version()?),
                format!("{:?}", s.conn.negotiated_cipher_suite()?.suite()),
            )),
            _ => None,
        }
    }

    /// The server's leaf certificate, after a handshake.
    pub fn peer_leaf(&self) -> Option<Vec<u8>> {
        match &self.conn {
            Conn::Tls(s) => s
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
            _ => None,
        }
    }

    /// MAIL (`250 2.1.0`), RCPT (`250 2.1.5`) and DATA (`354`): the client may send the body.
    #[track_caller]
    pub fn open_data(&mut self, from: &str, to: &str) {
        self.cmd(&format!("MAIL FROM:<{from}>"))
            .assert(250, "2.1.0");
        self.cmd(&format!("RCPT TO:<{to}>")).assert(250, "2.1.5");
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA: {r:?}");
    }

    /// MAIL, RCPT, DATA (354), the body, and the final reply (or the read error).
    pub fn send_mail(&mut self, from: &str, to: &str, body: &str) -> Result<Reply, ReadError> {
        self.open_data(from, to);
        self.send(body.as_bytes());
        self.send(b".\r\n");
        self.try_reply()
    }

    /// One whole transaction without assertions: MAIL, every RCPT, DATA and, after a 354, a
    /// `Subject: test` message with `body`. The replies in order (the last is the reply to the
    /// final dot, or the refusal of DATA).
    pub fn mail(&mut self, from: &str, to: &[&str], body: &str) -> Vec<Reply> {
        let mut replies = vec![self.cmd(&format!("MAIL FROM:<{from}>"))];
        for rcpt in to {
            replies.push(self.cmd(&format!("RCPT TO:<{rcpt}>")));
        }
        let data = self.cmd("DATA");
        let go = data.code == 354;
        replies.push(data);
        if go {
            self.send(format!("Subject: test\r\n\r\n{body}\r\n.\r\n").as_bytes());
            replies.push(self.reply());
        }
        replies
    }
}

/// A rustls client config that trusts only `ca`.
pub fn client_config(
    ca: &Path,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca).expect("read CA");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    builder
        .with_protocol_versions(&versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}
