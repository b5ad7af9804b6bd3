//! The proxy under test: the real binary, driven through the contract (CLI, TOML, signals,
//! stderr log lines, the admin endpoint). Readiness is the `event=ready` log line.

use super::{http_get, parse_log_line, send_signal, unique_ip, Leaf, PATIENCE};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Path of the binary cargo built for this test run.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_starttls-proxy")
}

/// Runs `starttls-proxy ARGS` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run starttls-proxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One `[[inbound]]` listener.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub listen: SocketAddr,
    pub backend: SocketAddr,
    pub require_tls: bool,
    pub senders: Vec<String>,
    pub recipients: Vec<String>,
    /// Further `key = value` lines (TOML values), e.g. `proxy_protocol_from`.
    pub extra: Vec<(String, String)>,
}

/// Writes a configuration file and starts the proxy on it.
pub struct ProxyBuilder {
    dir: PathBuf,
    hostname: String,
    shutdown_grace: String,
    tls: String,
    admin: bool,
    limits: Vec<(String, String)>,
    listeners: Vec<ListenerSpec>,
    json_logs: bool,
}

impl ProxyBuilder {
    /// A proxy whose files live in `dir`, serving `leaf`, with one listener `mx` → `backend`.
    pub fn new(dir: &Path, leaf: &Leaf, backend: SocketAddr) -> ProxyBuilder {
        ProxyBuilder {
            dir: dir.to_owned(),
            hostname: "proxy.test".into(),
            shutdown_grace: "10s".into(),
            tls: format!(
                "certificate = {:?}\nprivate_key = {:?}\n",
                leaf.cert.display().to_string(),
                leaf.key.display().to_string()
            ),
            admin: true,
            limits: Vec::new(),
            listeners: vec![ListenerSpec {
                name: "mx".into(),
                listen: SocketAddr::from((unique_ip(), 0)),
                backend,
                require_tls: false,
                senders: Vec::new(),
                recipients: Vec::new(),
                extra: Vec::new(),
            }],
            json_logs: false,
        }
    }

    /// Replaces the body of the `[tls]` table.
    pub fn tls_table(mut self, body: &str) -> Self {
        self.tls = body.to_string();
        self
    }

    pub fn min_version(mut self, version: &str) -> Self {
        self.tls += &format!("min_version = {version:?}\n");
        self
    }

    /// Sets `[limits] key = value` (`value` is TOML, e.g. `"\"1s\""` or `"2"`).
    pub fn limit(mut self, key: &str, value: &str) -> Self {
        self.limits.push((key.into(), value.into()));
        self
    }

    pub fn shutdown_grace(mut self, grace: &str) -> Self {
        self.shutdown_grace = grace.into();
        self
    }

    pub fn require_tls(mut self) -> Self {
        self.listeners[0].require_tls = true;
        self
    }

    pub fn require_tls_senders(mut self, domains: &[&str]) -> Self {
        self.listeners[0].senders = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    pub fn require_tls_recipients(mut self, domains: &[&str]) -> Self {
        self.listeners[0].recipients = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Listens on `addr` instead of a fresh address with port 0.
    pub fn listen_on(mut self, addr: SocketAddr) -> Self {
        self.listeners[0].listen = addr;
        self
    }

    /// Sets `key = value` on the listener (`value` is TOML, e.g. `"[\"127.0.0.1\"]"`).
    pub fn listener_key(mut self, key: &str, value: &str) -> Self {
        self.listeners[0].extra.push((key.into(), value.into()));
        self
    }

    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// The configuration text this builder writes.
    pub fn config_text(&self) -> String {
        let mut text = format!(
            "hostname = {:?}\nshutdown_grace = {:?}\nstate_directory = {:?}\n\n[tls]\n{}\n",
            self.hostname,
            self.shutdown_grace,
            self.dir.join("state").display().to_string(),
            self.tls
        );
        if self.admin {
            text += &format!("[admin]\nlisten = \"{}:0\"\n\n", unique_ip());
        }
        if !self.limits.is_empty() {
            text += "[limits]\n";
            for (k, v) in &self.limits {
                text += &format!("{k} = {v}\n");
            }
            text += "\n";
        }
        for l in &self.listeners {
            text += &format!(
                "[[inbound]]\nname = {:?}\nlisten = \"{}\"\nbackend = \"{}\"\nrequire_tls = {}\n\
                 require_tls_senders = {:?}\nrequire_tls_recipients = {:?}\n\n",
                l.name, l.listen, l.backend, l.require_tls, l.senders, l.recipients
            );
            text.truncate(text.len() - 1);
            for (k, v) in &l.extra {
                text += &format!("{k} = {v}\n");
            }
            text += "\n";
        }
        text
    }

    /// Writes the configuration file without starting anything; returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir.join("starttls-proxy.toml");
        std::fs::write(&path, self.config_text()).expect("write proxy configuration");
        path
    }

    pub fn start(self) -> Proxy {
        let path = self.write_config();
        Proxy::start_with(&path, self.json_logs)
    }
}

/// Log lines collected from the proxy's stderr by a reader thread.
#[derive(Default)]
struct LogSink {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// A running `starttls-proxy run`; killed on drop if still running.
pub struct Proxy {
    child: Child,
    logs: Arc<LogSink>,
    pub config: PathBuf,
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
    exit: Option<ExitStatus>,
}

impl Proxy {
    /// Writes `config` (TOML written by the test, e.g. outbound listeners) into `dir` and
    /// starts the proxy on it; the file is `self.config`.
    pub fn start_text(dir: &Path, config: &str) -> Proxy {
        let path = dir.join("starttls-proxy.toml");
        // The test's own state directory, unless the test chose one.
        let config = match config.contains("state_directory") {
            true => config.to_string(),
            false => format!(
                "state_directory = {:?}\n{config}",
                dir.join("state").display().to_string()
            ),
        };
        std::fs::write(&path, config).expect("write proxy configuration");
        Proxy::start_with(&path, false)
    }

    /// Starts `run --config PATH` and waits for `event=ready`.
    pub fn start_with(config: &Path, json_logs: bool) -> Proxy {
        Proxy::start_wrapped(&[], config, json_logs)
    }

    /// Starts `WRAPPER... starttls-proxy run --config PATH` (e.g. `ip netns exec NS`).
    pub fn start_wrapped(wrapper: &[&str], config: &Path, json_logs: bool) -> Proxy {
        let mut command = match wrapper.split_first() {
            None => Command::new(binary()),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
        };
        if json_logs {
            command.args(["--log-format", "json"]);
        }
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn starttls-proxy");
        let logs = Arc::new(LogSink::default());
        let stderr = child.stderr.take().expect("stderr piped");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("PROXY_LOG_ECHO").is_some() {
                    eprintln!("proxy: {line}");
                }
                sink.lines.lock().unwrap().0.push(line);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        let mut proxy = Proxy {
            child,
            logs,
            config: config.to_owned(),
            listeners: HashMap::new(),
            admin: None,
            exit: None,
        };
        let ready = if json_logs {
            "\"event\":\"ready\""
        } else {
            "event=ready"
        };
        proxy.wait_log(|l| l.contains(ready), "event=ready");
        for line in proxy.lines() {
            let fields = if json_logs {
                json_fields(&line)
            } else {
                parse_log_line(&line)
            };
            if fields.get("event").map(String::as_str) != Some("listening") {
                continue;
            }
            let addr: SocketAddr = fields["addr"].parse().expect("listening addr");
            match fields.get("listener").map(String::as_str) {
                Some("admin") | None => proxy.admin = Some(addr),
                Some(name) => {
                    proxy.listeners.insert(name.to_string(), addr);
                }
            }
        }
        proxy
    }

    /// The address of the inbound listener `mx` (the builder's default).
    pub fn addr(&self) -> SocketAddr {
        self.listener("mx")
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}; log:\n{}", self.log_text()))
    }

    /// Every session result the proxy wrote (`state_directory/results/*.jsonl`, the test's
    /// own state directory), in file order.
    pub fn results(&self) -> Vec<serde_json::Value> {
        let dir = self
            .config
            .parent()
            .expect("config in a directory")
            .join("state/results");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every stderr line so far.
    pub fn lines(&self) -> Vec<String> {
        self.logs.lines.lock().unwrap().0.clone()
    }

    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits for a log line matching `pred`; panics with the whole log if it never comes.
    pub fn wait_log(&self, pred: impl Fn(&str) -> bool, what: &str) -> String {
        self.wait_log_count(pred, 1, what).pop().expect("one line")
    }

    /// Waits until at least `count` lines match `pred`; returns them.
    pub fn wait_log_count(
        &self,
        pred: impl Fn(&str) -> bool,
        count: usize,
        what: &str,
    ) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.logs.lines.lock().unwrap();
        loop {
            let matching: Vec<String> = guard.0.iter().filter(|l| pred(l)).cloned().collect();
            if matching.len() >= count {
                return matching;
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                let log = guard.0.join("\n");
                drop(guard);
                panic!(
                    "proxy log never showed {count} x {what} ({}); log so far:\n{log}",
                    if now >= deadline {
                        "timed out"
                    } else {
                        "stderr closed"
                    }
                );
            }
            guard = self
                .logs
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// `event=session` lines so far, parsed.
    pub fn sessions(&self) -> Vec<HashMap<String, String>> {
        self.events("session")
    }

    /// Waits for the `n`-th `event=session` line and returns all of them, parsed.
    pub fn wait_sessions(&self, n: usize) -> Vec<HashMap<String, String>> {
        self.wait_log_count(|l| l.contains(" event=session "), n, "event=session");
        self.sessions()
    }

    /// Waits for the first `event=session` line, asserts its `outcome`, returns its fields.
    #[track_caller]
    pub fn wait_session_outcome(&self, outcome: &str) -> HashMap<String, String> {
        let first = self.wait_sessions(1).swap_remove(0);
        assert_eq!(first["outcome"], outcome, "{first:?}");
        first
    }

    /// Waits for an `event=NAME` line with all of `want` as fields; returns its fields.
    pub fn wait_event(&self, name: &str, want: &[(&str, &str)]) -> HashMap<String, String> {
        let line = self.wait_log(
            |l| {
                let f = parse_log_line(l);
                f.get("event").map(String::as_str) == Some(name)
                    && want
                        .iter()
                        .all(|(k, v)| f.get(*k).map(String::as_str) == Some(*v))
            },
            &format!("event={name} {want:?}"),
        );
        parse_log_line(&line)
    }

    /// Every `event=NAME` line so far, parsed.
    pub fn events(&self, name: &str) -> Vec<HashMap<String, String>> {
        self.lines()
            .iter()
            .map(|l| parse_log_line(l))
            .filter(|f| f.get("event").map(String::as_str) == Some(name))
            .collect()
    }

    pub fn signal(&self, signal: &str) {
        send_signal(self.pid(), signal);
    }

    /// Waits for the process to exit (the test fails if it does not within `PATIENCE`).
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "proxy did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// `GET /metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.admin.expect("admin endpoint configured"), "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Fetches `GET /metrics` and asserts the sample of `name` with `labels` is `value`.
    #[track_caller]
    pub fn assert_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        super::assert_metric(&self.metrics(), name, labels, value);
    }

    pub fn healthz(&self) -> (u16, String) {
        http_get(self.admin.expect("admin endpoint configured"), "/healthz")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- proxy log ----\n{}\n-------------------",
                self.log_text()
            );
        }
    }
}

/// Fields of a flat JSON object of strings, as `--log-format json` writes them.
pub fn json_fields(line: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    let mut chars = body.chars().peekable();
    let mut strings = Vec::new();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(e) = chars.next() {
                        s.push(e);
                    }
                }
                '"' => break,
                c => s.push(c),
            }
        }
        strings.push(s);
    }
    for pair in strings.chunks(2) {
        if let [k, v] = pair {
            fields.insert(k.clone(), v.clone());
        }
    }
    fields
}
