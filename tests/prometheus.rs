//! config/prometheus/ against the real tools: `promtool check rules` and `promtool test rules`,
//! the Grafana dashboard's structure and queries, every metric the rules and the dashboard
//! query being one the proxy exports, and a real Prometheus (Debian package) scraping a
//! running proxy until one of the rules' alerts fires.

mod common;

use common::pki::KeyKind;
use common::*;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const RULES: &str = "starttls-proxy-rules.yml";
const RULE_TESTS: &str = "starttls-proxy-rules.test.yml";
const DASHBOARD: &str = "starttls-proxy-dashboard.json";

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs promtool in config/prometheus/; panics with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = Command::new(require_program("promtool"))
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every `starttls_proxy_*` metric name in `text` (histogram series folded to their metric).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("starttls_proxy_") {
        let start = i + at;
        let preceded_by_word =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_word {
            let name = &text[start..end];
            let folded = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| base.ends_with("_seconds"))
                })
                .unwrap_or(name);
            names.insert(folded.to_string());
        }
        i = end.max(start + 1);
    }
    names
}

/// What the proxy exports: the names in src/metrics.rs and in the README's metrics table.
fn exported_metrics() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = metric_names(&read(&root.join("src/metrics.rs")));
    let readme = read(&root.join("README.md"));
    let table = readme
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Metrics section");
    for line in table
        .lines()
        .filter(|l| l.starts_with("| `starttls_proxy_"))
    {
        names.extend(metric_names(line.split('|').nth(1).unwrap_or("")));
    }
    names
}

/// Contract metrics (DESIGN.md) that the rules watch but that another feature of the proxy
/// exports: the TLS-RPT report deliveries (DESIGN, "Contract: session results and TLS
/// reporting"). Listed here so a typo elsewhere is still caught.
const CONTRACT_METRICS_FROM_OTHER_FEATURES: &[&str] = &["starttls_proxy_tls_reports_total"];

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(&prometheus_dir().join(DASHBOARD))).expect("dashboard is JSON")
}

/// Every PromQL query of the dashboard (panel targets and template variables).
fn dashboard_queries(d: &serde_json::Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap_or("").to_string());
        }
    }
    for variable in d["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = variable["definition"].as_str() {
            queries.push(q.to_string());
        }
    }
    queries
}

#[test]
fn promtool_accepts_the_rules() {
    let out = promtool(&["check", "rules", RULES]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has at least one unit test that sees it fire.
    let rules = read(&prometheus_dir().join(RULES));
    let tests = read(&prometheus_dir().join(RULE_TESTS));
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 12, "{alerts:?}");
    for alert in alerts {
        let fired = tests.split("- eval_time:").any(|case| {
            case.contains(&format!("alertname: {alert}\n")) && case.contains("exp_labels")
        });
        assert!(fired, "no unit test sees {alert} fire");
    }
}

#[test]
fn the_rules_cover_what_operators_must_be_alerted_on() {
    let rules = read(&prometheus_dir().join(RULES));
    for (what, metric) in [
        (
            "enforced-TLS failures",
            "starttls_proxy_policy_rejections_total",
        ),
        (
            "coverage drop",
            "starttls_proxy:sessions_tls_share:ratio_rate1h",
        ),
        (
            "own certificate expiry",
            "starttls_proxy_certificate_expiry_timestamp_seconds",
        ),
        (
            "partner certificate expiry",
            "starttls_proxy_partner_certificate_expiry_timestamp_seconds",
        ),
        (
            "suspected downgrade",
            "starttls_proxy_downgrade_suspected_total",
        ),
        (
            "handshake failure ratio",
            "starttls_proxy:tls_handshake_failure_ratio:rate15m",
        ),
        ("DNSSEC unavailable", "starttls_proxy_dnssec_available == 0"),
        (
            "DNSSEC bogus",
            "starttls_proxy_dnssec_lookups_total{result=\"bogus\"}",
        ),
        (
            "report delivery failures",
            "starttls_proxy_tls_reports_total{result=\"failed\"}",
        ),
        (
            "reload failed",
            "starttls_proxy_config_reloads_total{result=\"failed\"}",
        ),
        ("proxy down", "up{job=\"starttls-proxy\"} == 0"),
    ] {
        let alerted = rules
            .split("- alert: ")
            .skip(1)
            .any(|alert| alert.contains(metric));
        assert!(alerted, "no alert on {what} ({metric})");
    }
}

#[test]
fn rules_and_dashboard_query_only_metrics_the_proxy_exports() {
    let exported = exported_metrics();
    assert!(
        exported.contains("starttls_proxy_sessions_total")
            && exported.contains("starttls_proxy_partner_certificate_expiry_timestamp_seconds"),
        "{exported:?}"
    );
    let rules = read(&prometheus_dir().join(RULES));
    let d = dashboard();
    let queries = dashboard_queries(&d).join("\n");
    for (file, text, allowed) in [
        (RULES, rules.as_str(), CONTRACT_METRICS_FROM_OTHER_FEATURES),
        (DASHBOARD, queries.as_str(), &[][..]),
    ] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} queries no metric");
        let unknown: Vec<&String> = used
            .iter()
            .filter(|m| !exported.contains(*m) && !allowed.contains(&m.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics the proxy does not export: {unknown:?}"
        );
    }
    // Recording rules used by the alerts are defined in the same file.
    let recorded: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .collect();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("starttls_proxy:") {
            assert!(recorded.contains(word), "{word} is used but never recorded");
        }
    }
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_whose_queries_parse() {
    let d = dashboard();
    assert_eq!(d["uid"], "starttls-proxy");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 30),
        "{}",
        d["schemaVersion"]
    );
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let kind = p["type"].as_str().expect("panel type");
        assert!(
            ["row", "timeseries", "stat", "table", "gauge", "bargauge"].contains(&kind),
            "panel type {kind}"
        );
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        assert!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0),
            "panel {id}: gridPos {g}"
        );
        let title = p["title"].as_str().expect("panel title");
        titles.push(title.to_lowercase());
        if kind == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
        }
    }
    for topic in [
        "coverage per listener",
        "coverage per policy domain",
        "enforced-tls failures",
        "latency",
        "versions and ciphers",
        "expire",
        "downgrade",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(topic)),
            "no panel about {topic}: {titles:?}"
        );
    }
    // Each query parses as PromQL: promtool checks them as recording rules, with Grafana's
    // variables given values.
    let dir = TempDir::new("dashboard-queries");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries(&d).iter().enumerate() {
        if q.starts_with("label_values(") {
            continue;
        }
        let expr = q
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        rules += &format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        );
    }
    let path = dir.join("dashboard-rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()]);
}

/// A Prometheus server run from its own directory; killed on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        let rules = prometheus_dir().join(RULES);
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: starttls-proxy\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules = rules.display().to_string()
            ),
        )
        .unwrap();
        let addr = std::net::SocketAddr::from((unique_ip(), 9090));
        let log = dir.join("prometheus.log");
        let child = Command::new(require_program("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log_text());
        }
    }
}

#[test]
fn a_real_prometheus_scraping_the_proxy_fires_the_certificate_expiry_alert() {
    let dir = TempDir::new("prometheus");
    let ca = Ca::new(dir.path(), "test-ca");
    // Served certificate valid for 5 more days: inside the 14-day alert.
    let leaf = ca.leaf_with("served", &["mx.test"], KeyKind::EcdsaPkcs8, 5);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    let admin = proxy.admin.expect("admin endpoint");
    let prometheus = Prometheus::start(dir.path(), admin);
    let alert = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            "Prometheus to fire StarttlsProxyCertificateExpiringSoon",
            || {
                let (status, body) =
                    std::panic::catch_unwind(|| http_get(prometheus.addr, "/api/v1/alerts"))
                        .ok()?;
                if status != 200 {
                    return None;
                }
                let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
                answer["data"]["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == "StarttlsProxyCertificateExpiringSoon"
                            && a["state"] == "firing"
                    })
                    .cloned()
            },
        )
    }))
    .unwrap_or_else(|_| panic!("no alert fired; prometheus log:\n{}", prometheus.log_text()));
    assert_eq!(alert["labels"]["instance"], admin.to_string().as_str());
    assert_eq!(alert["labels"]["job"], "starttls-proxy");
    assert_eq!(
        alert["labels"]["certificate"],
        leaf.cert.display().to_string().as_str()
    );
    assert_eq!(alert["labels"]["severity"], "warning");
    // The scrape itself is healthy: the alert is about the certificate, not the target.
    let (_, body) = http_get(prometheus.addr, "/api/v1/query?query=up");
    let up: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{body}");
}
