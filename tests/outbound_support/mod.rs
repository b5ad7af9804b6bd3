//! Harness for the outbound suite: a test CA, dnsmasq serving MX records, Postfix instances (the
//! legacy sender relaying through the proxy, and remote MX hosts), the proxy process, a raw
//! SMTP client and a hostile MX that injects bytes after its 220 to STARTTLS.
//!
//! Every child process is owned by a guard whose `Drop` ends it. Each test process gets its own
//! loopback /24 (`127.<100 + pid/256 % 128>.<pid % 256>.0/24`), so nextest runs tests in parallel.

#![allow(dead_code)]

pub mod dns;
pub mod mx;
pub mod pki;
pub mod postfix;
pub mod proxy;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub use dns::Dns;
pub use mx::{InjectingMx, ScriptedMx, Starttls};
pub use pki::Ca;
pub use postfix::Postfix;
pub use proxy::Proxy;

/// How long any wait on a peer may take before the test fails (a hang is a failure; healthy
/// waits end much sooner, and nothing asserts on timing).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh loopback address for this test process.
pub fn unique_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let pid = std::process::id();
    let host = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(host < 255, "ran out of per-process loopback addresses");
    Ipv4Addr::new(
        127,
        100 + ((pid >> 8) & 0x7f) as u8,
        (pid & 0xff) as u8,
        host,
    )
}

/// A directory removed at the end of the test (kept when `KEEP_TEST_DIRS` is set).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let path = std::env::temp_dir().join(format!(
            "starttls-proxy-outbound-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test directory");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Polls `check` until it returns `Some` (for facts with no readiness signal, like a file a
/// delivery agent writes or a queue entry).
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The absolute path of a peer program; panics (never skips) when it is not installed.
pub fn require_program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "required peer program `{name}` is not installed: run tests/run.sh as root \
                 (it installs postfix and dnsmasq-base)"
            )
        })
}

/// A reply: code and lines.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Asserts the code and the enhanced status code.
    pub fn assert(&self, code: u16, enhanced: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert!(
            self.lines[0].starts_with(enhanced),
            "expected {code} {enhanced}, got {self:?}"
        );
    }
}

/// A plain SMTP client for the proxy's MTA side.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
}

impl SmtpClient {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> (SmtpClient, Reply) {
        Self::from_stream(TcpStream::connect(addr).expect("connect to the proxy"))
    }

    /// Wraps a connected stream and reads the greeting.
    pub fn from_stream(stream: TcpStream) -> (SmtpClient, Reply) {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut client = SmtpClient {
            reader: BufReader::new(stream),
        };
        let greeting = client.reply();
        (client, greeting)
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed; lines so far {lines:?}");
            let line = line.trim_end().to_string();
            assert!(line.len() >= 3, "malformed reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// The next reply, or `None` when the peer closed.
    pub fn reply_or_closed(&mut self) -> Option<Reply> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(Reply {
                code: line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0),
                lines: vec![line.get(4..).unwrap_or("").trim_end().to_string()],
            }),
        }
    }

    /// One whole transaction; returns the reply to the final dot (or the first refusal).
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

/// Sends one message by SMTP (to a Postfix sender's smtpd) and asserts it was queued.
pub fn submit(addr: SocketAddr, from: &str, to: &str, body: &str) {
    let (mut c, greeting) = SmtpClient::connect(addr);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(c.cmd("EHLO submitter.test").code, 250);
    let replies = c.mail(from, &[to], body);
    let last = replies.last().unwrap();
    assert_eq!(last.code, 250, "submission refused: {replies:?}");
    c.cmd("QUIT");
}
