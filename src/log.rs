//! Structured log lines on stderr: `key=value` by default, JSON with `--log-format json`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the format once at start; later calls are ignored.
pub fn init(format: Format) {
    let _ = FORMAT.set(format);
}

/// One log line under construction: `log::info("session").field("peer", addr).emit()`.
#[must_use = "call emit()"]
pub struct Event {
    fields: Vec<(&'static str, String)>,
}

pub fn info(event: &str) -> Event {
    Event::new("info", event)
}
pub fn warn(event: &str) -> Event {
    Event::new("warn", event)
}
pub fn error(event: &str) -> Event {
    Event::new("error", event)
}

impl Event {
    fn new(level: &str, event: &str) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let ts = format!(
            "{}.{:03}Z",
            format_unix(now.as_secs() as i64).trim_end_matches('Z'),
            now.subsec_millis()
        );
        Event {
            fields: vec![
                ("ts", ts),
                ("level", level.to_string()),
                ("event", event.to_string()),
            ],
        }
    }

    pub fn field(mut self, key: &'static str, value: impl std::fmt::Display) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }

    pub fn emit(self) {
        let mut line = self.journal_priority().to_string();
        line.push_str(&match FORMAT.get().copied().unwrap_or_default() {
            Format::Text => self.text(),
            Format::Json => self.json(),
        });
        line.push('\n');
        // One write per line (stderr is unbuffered: `writeln!` would make two system calls).
        // A full or closed stderr must not take the proxy down.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// Under systemd, stderr goes to journald, which reads a `<N>` prefix as the syslog priority
    /// (and strips it), so `journalctl -p warning` finds our warnings.
    fn journal_priority(&self) -> &'static str {
        static UNDER_JOURNALD: OnceLock<bool> = OnceLock::new();
        if !*UNDER_JOURNALD.get_or_init(|| std::env::var_os("JOURNAL_STREAM").is_some()) {
            return "";
        }
        match self.fields.get(1).map(|(_, level)| level.as_str()) {
            Some("error") => "<3>",
            Some("warn") => "<4>",
            _ => "<6>",
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let plain = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
            if plain {
                let _ = write!(out, "{k}={v}");
            } else {
                let _ = write!(out, "{k}={v:?}");
            }
        }
        out
    }

    fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{k}\":\"{}\"", json_escape(v));
        }
        out.push('}');
        out
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339 UTC for a Unix time in seconds (`2026-11-22T11:00:00Z`).
pub fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (H. Hinnant's algorithm), valid far beyond any certificate date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
