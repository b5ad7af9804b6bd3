//! The proxy as a process (`starttls-proxy run --config PATH`), its log lines and metrics.

use super::PATIENCE;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_starttls-proxy")
}

/// Runs the binary with `args`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[derive(Default)]
struct Logs {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// A running proxy; killed on drop (its log printed if the test failed).
pub struct Proxy {
    child: Child,
    logs: Arc<Logs>,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl Proxy {
    pub fn start(dir: &Path, config: &str) -> Proxy {
        let path = dir.join("proxy.toml");
        std::fs::write(&path, config).expect("write proxy config");
        let mut child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starttls-proxy");
        let logs = Arc::new(Logs::default());
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().0.push(line);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        let mut proxy = Proxy {
            child,
            logs,
            listeners: HashMap::new(),
            admin: None,
        };
        proxy.wait_log(|l| l.contains("event=ready"), "event=ready");
        for line in proxy.lines() {
            let f = fields(&line);
            if f.get("event").map(String::as_str) != Some("listening") {
                continue;
            }
            let addr: SocketAddr = f["addr"].parse().expect("listening addr");
            match f.get("listener").map(String::as_str) {
                Some("admin") | None => proxy.admin = Some(addr),
                Some(name) => {
                    proxy.listeners.insert(name.to_string(), addr);
                }
            }
        }
        proxy
    }

    /// Sends a signal (`HUP`, `TERM`) with the `kill` program.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}; log:\n{}", self.log_text()))
    }

    pub fn lines(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().0.clone()
    }

    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a log line matching `pred`.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.logs.lines.lock().unwrap();
        loop {
            if let Some(l) = guard.0.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                let log = guard.0.join("\n");
                drop(guard);
                panic!("proxy log never showed {what}; log:\n{log}");
            }
            guard = self
                .logs
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for an `event=NAME` line with all of `want` as fields; returns its fields.
    pub fn wait_event(&self, name: &str, want: &[(&str, &str)]) -> HashMap<String, String> {
        let line = self.wait_log(
            |l| {
                let f = fields(l);
                f.get("event").map(String::as_str) == Some(name)
                    && want
                        .iter()
                        .all(|(k, v)| f.get(*k).map(String::as_str) == Some(*v))
            },
            &format!("event={name} {want:?}"),
        );
        fields(&line)
    }

    /// `GET /metrics` on the admin endpoint.
    pub fn metrics(&self) -> String {
        let addr = self.admin.expect("admin endpoint configured");
        let mut s = std::net::TcpStream::connect(addr).expect("connect admin");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- proxy log ----\n{}", self.log_text());
        }
    }
}

/// The value of a Prometheus sample whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, label_text) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().ok())
            .flatten()
        })
}

/// Parses a `key=value` log line (values may be quoted).
pub fn fields(line: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b' ' {
            i += 1;
        }
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        let key = line[start..i].to_string();
        i += 1;
        let mut value = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i] as char);
                i += 1;
            }
            i += 1;
        } else {
            let s = i;
            while i < b.len() && b[i] != b' ' {
                i += 1;
            }
            value = line[s..i].to_string();
        }
        out.insert(key, value);
    }
    out
}
