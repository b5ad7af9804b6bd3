//! Shared harness for the integration suite: the proxy process, a CA made at test time, real
//! peers (Postfix as backend, sender or remote MX; smtp-sink, swaks, openssl; dnsmasq serving
//! MX records; a DNSSEC-signed zone served by Knot and validated by unbound; an HTTPS
//! responder for MTA-STS policies and TLS-RPT reports) and raw SMTP clients and servers for
//! adversarial cases.
//!
//! Every child process is owned by a guard whose `Drop` ends it, so a failing test leaves
//! nothing running. Addresses: each test process gets its own loopback /24
//! (`127.<100 + pid/256>.<pid%256>.0/24`), so tests never collide under nextest.

#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod client;
pub mod dns;
pub mod dnssec;
pub mod haproxy;
pub mod https;
pub mod mx;
pub mod netns;
pub mod peers;
pub mod pki;
pub mod postfix;
pub mod proxy;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub use backend::FakeBackend;
pub use client::{Reply, SmtpClient};
pub use dns::{Dns, Zone};
pub use mx::{Script, ScriptedMx, Starttls};
pub use peers::{openssl_s_client, swaks, SmtpSink};
pub use pki::{Ca, Leaf};
pub use postfix::Postfix;
pub use proxy::{Proxy, ProxyBuilder};

/// How long any wait on a peer may take before the test fails (a hang is a failure, never a
/// timing assertion: healthy waits end much sooner, though a Postfix queue run behind a TLS
/// handshake on a loaded machine can take seconds).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A fresh loopback address for this test process (its own /24 inside 127/8).
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

/// A fresh loopback address with a port nobody listens on (for peers that need a fixed port).
pub fn unique_addr(port: u16) -> SocketAddr {
    SocketAddr::from((unique_ip(), port))
}

/// An address where nothing listens: bound once to learn a free port, then released.
pub fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind((unique_ip(), 0)).expect("bind probe");
    listener.local_addr().expect("probe address")
}

/// A directory removed at the end of the test (kept when `KEEP_TEST_DIRS` is set).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let path = std::env::temp_dir().join(format!(
            "starttls-proxy-test-{tag}-{}-{}",
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

/// Removes `dir` when this test process exits, even when nothing drops its `TempDir` (one in a
/// `static`, shared by the tests of a binary): a `sh` child waits for its stdin, which closes
/// only when the process ends. Kept when `KEEP_TEST_DIRS` is set.
pub fn remove_at_exit(dir: &Path) {
    if std::env::var_os("KEEP_TEST_DIRS").is_some() {
        return;
    }
    let mut reaper = std::process::Command::new("sh")
        .args(["-c", r#"read -r _; rm -rf "$1""#, "sh"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn directory reaper");
    // Its stdin stays open until the process exits; a thread reaps it should it end sooner.
    std::mem::forget(reaper.stdin.take());
    std::thread::spawn(move || reaper.wait());
}

/// A test directory with a CA in it and the proxy's leaf for `mx.test` (files `mx.crt`/`mx.key`).
pub fn setup(tag: &str) -> (TempDir, Ca, Leaf) {
    let dir = TempDir::new(tag);
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf("mx", &["mx.test"]);
    (dir, ca, leaf)
}

/// Polls `check` until it returns `Some` or `PATIENCE` runs out (for facts with no readiness
/// signal, like a file a delivery agent writes).
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

/// The Debian package that provides each peer program the suite runs (tests/run.sh installs
/// them all).
const PROGRAMS: &[(&str, &str)] = &[
    ("postfix", "postfix"),
    ("postqueue", "postfix"),
    ("postconf", "postfix"),
    ("smtp-sink", "postfix"),
    ("swaks", "swaks"),
    ("openssl", "openssl"),
    ("dnsmasq", "dnsmasq-base"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("knotd", "knot"),
    ("unbound", "unbound"),
    ("dnssec-keygen", "bind9-utils"),
    ("dnssec-signzone", "bind9-utils"),
    ("dnssec-dsfromkey", "bind9-utils"),
    ("dig", "bind9-dnsutils"),
    ("curl", "curl"),
    ("haproxy", "haproxy"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
];

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
            let package = PROGRAMS
                .iter()
                .find(|(program, _)| *program == name)
                .map_or(name, |(_, package)| package);
            panic!(
                "required peer program `{name}` is not installed: run tests/run.sh as root \
                 (it installs the `{package}` package)"
            )
        })
}

/// Sends a signal to a process by pid with the `kill` program (no libc dependency).
pub fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Parses a `key=value` log line (values may be Rust-debug-quoted strings).
pub fn parse_log_line(line: &str) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b' ' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            continue;
        }
        let key = line[key_start..i].to_string();
        i += 1;
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b' ' {
                i += 1;
            }
            value = line[start..i].to_string();
        }
        fields.insert(key, value);
    }
    fields
}

/// One HTTP/1.0 GET on the admin endpoint: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to admin endpoint");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read admin response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one Prometheus sample whose labels include all of `labels`; `None` if absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text, name, labels).next()
}

/// Asserts the sample of `name` with `labels` in the metrics `text` is `value`.
#[track_caller]
pub fn assert_metric(text: &str, name: &str, labels: &[(&str, &str)], value: f64) {
    assert_eq!(metric(text, name, labels), Some(value), "{text}");
}

/// The sum of all samples of `name` whose labels include all of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text, name, labels).sum()
}

/// The values of the samples of `name` whose labels include all of `labels`, in order.
fn samples<'a>(
    text: &'a str,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = f64> + 'a {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
}
