//! Real peer programs: swaks and `openssl s_client` as clients, smtp-sink as a recording MTA.

use super::{eventually, require_program, send_signal, unique_addr, PATIENCE};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// What a peer program did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Asserts the program exited 0; shows all its output otherwise.
    #[track_caller]
    pub fn assert_success(&self) {
        assert_eq!(self.code, 0, "{}", self.all());
    }

    /// Asserts the program wrote `text` to stdout; shows its stdout otherwise.
    #[track_caller]
    pub fn assert_stdout_contains(&self, text: &str) {
        assert!(self.stdout.contains(text), "{}", self.stdout);
    }
}

/// Runs a command to completion with `stdin`, failing the test if it runs past `PATIENCE`.
pub fn run_with_deadline(mut command: Command, stdin: &[u8]) -> Run {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let bytes = stdin.to_vec();
    std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {PATIENCE:?}; stdout:\n{}\nstderr:\n{}",
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `swaks --server IP --port PORT ARGS` (with a timeout so a hang fails instead of blocking).
pub fn swaks(addr: SocketAddr, args: &[&str]) -> Run {
    let mut command = Command::new(require_program("swaks"));
    command
        .arg("--server")
        .arg(addr.ip().to_string())
        .arg("--port")
        .arg(addr.port().to_string())
        .args(["--timeout", "15"])
        .args(args);
    run_with_deadline(command, b"")
}

/// `openssl s_client -starttls smtp -connect ADDR -crlf -ign_eof ARGS`, `stdin` sent after the
/// handshake (end it with QUIT so the session closes).
pub fn openssl_s_client(addr: SocketAddr, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(require_program("openssl"));
    command
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(addr.to_string())
        .args(["-crlf", "-ign_eof"])
        .args(args);
    run_with_deadline(command, stdin.as_bytes())
}

/// The protocol and cipher an `openssl s_client` run reports (its `New, TLSv1.3, Cipher is X`
/// line), if a handshake completed.
pub fn s_client_session(run: &Run) -> Option<(String, String)> {
    run.stdout.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("New, ")?;
        let (protocol, cipher) = rest.split_once(", Cipher is ")?;
        (cipher != "(NONE)" && protocol != "(NONE)")
            .then(|| (protocol.to_string(), cipher.trim().to_string()))
    })
}

/// A running smtp-sink: a real (Postfix project) SMTP server that dumps each message to a file.
pub struct SmtpSink {
    child: Child,
    pub addr: SocketAddr,
    pub dump_dir: PathBuf,
}

impl SmtpSink {
    /// `smtp-sink -u root -d DIR/... EXTRA addr 64`; waits until it accepts connections.
    pub fn start(dir: &Path, extra: &[&str]) -> SmtpSink {
        let program = require_program("smtp-sink");
        let addr = unique_addr(2525);
        let dump_dir = dir.join(format!("sink-{}", addr.ip()));
        std::fs::create_dir_all(&dump_dir).expect("sink dump directory");
        let template = format!("{}/%H%M%S.", dump_dir.display());
        let child = Command::new(program)
            .args(["-u", "root", "-d", &template])
            .args(extra)
            .arg(addr.to_string())
            .arg("64")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        let mut sink = SmtpSink {
            child,
            addr,
            dump_dir,
        };
        eventually("smtp-sink to accept connections", || {
            if let Ok(Some(status)) = sink.child.try_wait() {
                panic!("smtp-sink exited at start: {status}");
            }
            TcpStream::connect(addr).ok()
        });
        sink
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the backend dies with every session it holds.
    pub fn kill(&mut self) {
        send_signal(self.pid(), "KILL");
        let _ = self.child.wait();
    }

    /// Dumped messages so far (envelope headers `X-Mail-Args:` etc., then the message).
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dump_dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            // A transaction's file exists from MAIL on; only those with a body are messages.
            .filter(|m| m.contains("\n\n"))
            .collect()
    }

    /// Waits until `n` messages have been dumped.
    pub fn wait_messages(&self, n: usize) -> Vec<String> {
        eventually(&format!("{n} message(s) in smtp-sink"), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
