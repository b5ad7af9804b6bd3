//! Metric names (the contract in DESIGN.md) and the Prometheus recorder behind `/metrics`.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

pub const CONNECTIONS_TOTAL: &str = "starttls_proxy_connections_total";
pub const CONNECTIONS_ACTIVE: &str = "starttls_proxy_connections_active";
pub const SESSIONS_TOTAL: &str = "starttls_proxy_sessions_total";
pub const TLS_HANDSHAKES_TOTAL: &str = "starttls_proxy_tls_handshakes_total";
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "starttls_proxy_tls_handshake_failures_total";
pub const TLS_HANDSHAKE_DURATION_SECONDS: &str = "starttls_proxy_tls_handshake_duration_seconds";
pub const POLICY_REJECTIONS_TOTAL: &str = "starttls_proxy_policy_rejections_total";
pub const CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "starttls_proxy_certificate_expiry_timestamp_seconds";
pub const BYTES_TOTAL: &str = "starttls_proxy_bytes_total";
/// Extension: sessions that ended on an error, by a reason from a fixed set.
pub const SESSION_ERRORS_TOTAL: &str = "starttls_proxy_session_errors_total";
pub const OUTBOUND_DOMAIN_SESSIONS_TOTAL: &str = "starttls_proxy_outbound_domain_sessions_total";
/// Extension: enforcement failures let through by an unexpired `relax_until`, by policy domain.
pub const OUTBOUND_RELAXED_TOTAL: &str = "starttls_proxy_outbound_relaxed_total";
/// Sessions that went without TLS where the partner is known to use it (DESIGN: downgrade
/// detection), by direction and domain (policy domains, or `other`).
pub const DOWNGRADE_SUSPECTED_TOTAL: &str = "starttls_proxy_downgrade_suspected_total";
/// notAfter of the certificate each MX host of a policy domain showed last, by `domain` and
/// `mx` (restored from the inventory at start).
pub const PARTNER_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: &str =
    "starttls_proxy_partner_certificate_expiry_timestamp_seconds";
/// Extension: state files (`certificates`, `mx_tls`) found corrupt at start (set aside, started
/// anew) or not written, by `file` and `reason` (`corrupt` | `write`).
pub const STATE_FILE_ERRORS_TOTAL: &str = "starttls_proxy_state_file_errors_total";
/// Extension: sessions whose results could not be written to `state_directory/results/`.
pub const RESULTS_WRITE_ERRORS_TOTAL: &str = "starttls_proxy_results_write_errors_total";
/// SIGHUP reloads, by `result` (`ok` | `failed`: the old configuration kept serving).
pub const CONFIG_RELOADS_TOTAL: &str = "starttls_proxy_config_reloads_total";
/// When the configuration in force was loaded (start or the last successful reload).
/// MTA-STS discoveries that looked something up, by `result` (DESIGN: ok | not_found |
/// fetch_error | invalid | webpki_invalid).
pub const MTA_STS_FETCHES_TOTAL: &str = "starttls_proxy_mta_sts_fetches_total";
pub const CONFIG_LOADED_TIMESTAMP_SECONDS: &str = "starttls_proxy_config_loaded_timestamp_seconds";
/// Whether DNSSEC validation works through the configured resolver (1) or not (0: DANE
/// unavailable), from the periodic self-test (resolver::dnssec).
pub const DNSSEC_AVAILABLE: &str = "starttls_proxy_dnssec_available";
/// DANE's validated look-ups (MX, A/AAAA, TLSA), by `result`: secure | insecure | bogus | error.
pub const DNSSEC_LOOKUPS_TOTAL: &str = "starttls_proxy_dnssec_lookups_total";
/// Connections from `proxy_protocol_from` closed for their PROXY header, by `listener` and
/// `reason` (DESIGN: missing | timeout | invalid_v1 | invalid_v2 | truncated).
pub const PROXY_PROTOCOL_ERRORS_TOTAL: &str = "starttls_proxy_proxy_protocol_errors_total";
/// Sessions of a `client_address = "xclient"` listener that went on as `none`: the backend did
/// not offer XCLIENT, or refused it.
pub const XCLIENT_UNAVAILABLE_TOTAL: &str = "starttls_proxy_xclient_unavailable_total";

/// TLS report deliveries, one per attempt at one destination, by `transport` (https | mailto)
/// and `result` (sent | failed).
pub const TLS_REPORTS_TOTAL: &str = "starttls_proxy_tls_reports_total";
/// TLS reports partners sent to our report address, by `result`: ok | too_large |
/// not_a_report | malformed.
pub const TLS_REPORTS_RECEIVED_TOTAL: &str = "starttls_proxy_tls_reports_received_total";
/// Failed sessions partners reported about delivering to us, by `organization` (the reporting
/// organisation; the first [`MAX_REPORTING_ORGANIZATIONS`] seen, then `other`) and
/// `result_type` (RFC 8460).
pub const TLS_REPORT_FAILED_SESSIONS_TOTAL: &str =
    "starttls_proxy_tls_report_failed_sessions_total";
/// Bound on the `organization` label values.
pub const MAX_REPORTING_ORGANIZATIONS: usize = 50;

const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(HANDSHAKE_BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (an embedding program's): keep theirs.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(CONNECTIONS_TOTAL, "Connections accepted");
    describe_gauge!(CONNECTIONS_ACTIVE, "Sessions in progress");
    describe_counter!(
        SESSIONS_TOTAL,
        "Sessions ended, by whether TLS was in place at the end"
    );
    describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "Completed TLS handshakes by version and cipher"
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "Failed TLS handshakes by reason"
    );
    describe_histogram!(
        TLS_HANDSHAKE_DURATION_SECONDS,
        Unit::Seconds,
        "TLS handshake duration"
    );
    describe_counter!(
        POLICY_REJECTIONS_TOTAL,
        "Commands refused because policy required TLS"
    );
    describe_gauge!(
        CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "notAfter of served certificates"
    );
    describe_counter!(BYTES_TOTAL, Unit::Bytes, "Bytes relayed, both ways");
    describe_counter!(
        SESSION_ERRORS_TOTAL,
        "Sessions ended by an error, by reason"
    );
    describe_counter!(
        OUTBOUND_DOMAIN_SESSIONS_TOTAL,
        "Outbound sessions to MX hosts used for delivery, by policy domain, mode, TLS and verification"
    );
    describe_counter!(
        MTA_STS_FETCHES_TOTAL,
        "MTA-STS record lookups and policy fetches, by result"
    );
    describe_counter!(
        DOWNGRADE_SUSPECTED_TOTAL,
        "Sessions without TLS from or to a partner known to use it, by direction and domain"
    );
    describe_gauge!(
        PARTNER_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "notAfter of the certificate each MX host of a policy domain showed last"
    );
    describe_counter!(
        STATE_FILE_ERRORS_TOTAL,
        "State files found corrupt at start (set aside, started anew) or not written, by file and reason"
    );
    describe_counter!(
        RESULTS_WRITE_ERRORS_TOTAL,
        "Sessions whose results could not be written to the results directory"
    );
    describe_counter!(
        OUTBOUND_RELAXED_TOTAL,
        "Enforcement failures let through by relax_until, by policy domain and failure"
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads (SIGHUP), by result; failed: the old configuration kept serving"
    );
    describe_gauge!(
        CONFIG_LOADED_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the configuration in force was loaded"
    );
    describe_gauge!(
        DNSSEC_AVAILABLE,
        "Whether DNSSEC validation works through the configured resolver (self-test); 0: DANE unavailable"
    );
    describe_counter!(
        XCLIENT_UNAVAILABLE_TOTAL,
        "Sessions whose backend did not offer or refused XCLIENT (they went on as client_address none)"
    );
    describe_counter!(
        PROXY_PROTOCOL_ERRORS_TOTAL,
        "Connections from trusted balancers closed because of their PROXY header, by reason"
    );
    describe_counter!(
        DNSSEC_LOOKUPS_TOTAL,
        "DANE's DNSSEC-validated look-ups (MX, A/AAAA, TLSA), by result"
    );
    describe_counter!(
        TLS_REPORTS_RECEIVED_TOTAL,
        "TLS reports received on the inbound path, by result"
    );
    describe_counter!(
        TLS_REPORT_FAILED_SESSIONS_TOTAL,
        "Failed sessions partners reported about delivering to us, by reporting organization and result type"
    );
    describe_counter!(
        TLS_REPORTS_TOTAL,
        "TLS report deliveries (RFC 8460), one per attempt at one destination, by transport and result"
    );
}

/// Labels shared by every per-listener metric.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    pub listener: String,
    pub direction: &'static str,
}

impl ListenerMetrics {
    pub fn new(listener: &str, direction: &'static str) -> Self {
        Self {
            listener: listener.to_string(),
            direction,
        }
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("listener", self.listener.clone()),
            ("direction", self.direction.to_string()),
        ]
    }

    /// Makes the listener's series visible at zero before the first session.
    pub fn register(&self) {
        counter!(CONNECTIONS_TOTAL, &self.labels()).absolute(0);
        gauge!(CONNECTIONS_ACTIVE, &self.labels()).increment(0.0);
        counter!(BYTES_TOTAL, &self.labels()).absolute(0);
        for tls in ["yes", "no"] {
            let mut labels = self.labels().to_vec();
            labels.push(("tls", tls.to_string()));
            counter!(SESSIONS_TOTAL, &labels).absolute(0);
        }
    }

    pub fn connection_opened(&self) {
        counter!(CONNECTIONS_TOTAL, &self.labels()).increment(1);
        gauge!(CONNECTIONS_ACTIVE, &self.labels()).increment(1.0);
    }

    pub fn connection_closed(&self) {
        gauge!(CONNECTIONS_ACTIVE, &self.labels()).decrement(1.0);
    }

    pub fn session_ended(&self, tls: bool, bytes: u64) {
        let mut labels = self.labels().to_vec();
        labels.push(("tls", if tls { "yes" } else { "no" }.to_string()));
        counter!(SESSIONS_TOTAL, &labels).increment(1);
        counter!(BYTES_TOTAL, &self.labels()).increment(bytes);
    }

    pub fn handshake_ok(&self, version: &'static str, cipher: &'static str, took: Duration) {
        let mut labels = self.labels().to_vec();
        labels.push(("version", version.to_string()));
        labels.push(("cipher", cipher.to_string()));
        counter!(TLS_HANDSHAKES_TOTAL, &labels).increment(1);
        histogram!(TLS_HANDSHAKE_DURATION_SECONDS, &self.labels()).record(took.as_secs_f64());
    }

    pub fn handshake_failed(&self, reason: &'static str, took: Duration) {
        let mut labels = self.labels().to_vec();
        labels.push(("reason", reason.to_string()));
        counter!(TLS_HANDSHAKE_FAILURES_TOTAL, &labels).increment(1);
        histogram!(TLS_HANDSHAKE_DURATION_SECONDS, &self.labels()).record(took.as_secs_f64());
    }

    pub fn policy_rejection(&self, reason: &'static str) {
        let mut labels = self.labels().to_vec();
        labels.push(("reason", reason.to_string()));
        counter!(POLICY_REJECTIONS_TOTAL, &labels).increment(1);
    }

    pub fn session_error(&self, reason: &'static str) {
        let mut labels = self.labels().to_vec();
        labels.push(("reason", reason.to_string()));
        counter!(SESSION_ERRORS_TOTAL, &labels).increment(1);
    }
}

/// Publishes a served certificate's notAfter.
pub fn certificate_expiry(label: &str, not_after: i64) {
    gauge!(CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS, "certificate" => label.to_string())
        .set(not_after as f64);
}

/// One MX session used for delivery: `domain` is a policy domain entry or `other`.
pub fn outbound_domain_session(
    domain: &str,
    mode: &'static str,
    policy: &'static str,
    tls: bool,
    verified: bool,
) {
    counter!(
        OUTBOUND_DOMAIN_SESSIONS_TOTAL,
        "domain" => domain.to_string(),
        "mode" => mode,
        "policy" => policy,
        "tls" => if tls { "yes" } else { "no" },
        "verified" => if verified { "yes" } else { "no" }
    )
    .increment(1);
}

/// An enforcement failure let through because the domain's `relax_until` has not passed.
pub fn outbound_relaxed(domain: &str, reason: &'static str) {
    counter!(OUTBOUND_RELAXED_TOTAL, "domain" => domain.to_string(), "reason" => reason)
        .increment(1);
}

/// A session's results could not be appended and synced.
pub fn results_write_failed() {
    counter!(RESULTS_WRITE_ERRORS_TOTAL).increment(1);
}

/// The configuration in force was loaded now (at start or by a reload); makes both reload
/// series visible at zero from the start.
pub fn config_loaded() {
    for result in ["ok", "failed"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(CONFIG_LOADED_TIMESTAMP_SECONDS).set(now);
}

/// One SIGHUP reload ended: applied (`ok`) or refused with the old configuration kept.
pub fn config_reload(ok: bool) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

/// One MTA-STS discovery that looked something up.
pub fn mta_sts_fetch(result: &'static str) {
    counter!(MTA_STS_FETCHES_TOTAL, "result" => result).increment(1);
}

/// The DNSSEC self-test's outcome; also makes every `result` series of the look-up counter
/// visible at zero, as the self-test runs at start.
pub fn dnssec_available(available: bool) {
    gauge!(DNSSEC_AVAILABLE).set(if available { 1.0 } else { 0.0 });
    for result in ["secure", "insecure", "bogus", "error"] {
        counter!(DNSSEC_LOOKUPS_TOTAL, "result" => result).increment(0);
    }
}

/// One validated DANE look-up and its `result` (`Validated::result`).
pub fn dnssec_lookup(result: &'static str) {
    counter!(DNSSEC_LOOKUPS_TOTAL, "result" => result).increment(1);
}

/// A session went without TLS where the partner is known to use it.
pub fn downgrade_suspected(direction: &'static str, domain: &str) {
    counter!(DOWNGRADE_SUSPECTED_TOTAL, "direction" => direction, "domain" => domain.to_string())
        .increment(1);
}

/// Makes a listener's PROXY header error series visible at zero (listeners that trust a
/// balancer only).
pub fn proxy_protocol_errors_register(listener: &str) {
    for reason in crate::net::proxy_protocol::Rejected::REASONS {
        counter!(PROXY_PROTOCOL_ERRORS_TOTAL, "listener" => listener.to_string(), "reason" => reason)
            .increment(0);
    }
}

/// A trusted balancer's connection closed for its PROXY header.
pub fn proxy_protocol_error(listener: &str, reason: &'static str) {
    counter!(PROXY_PROTOCOL_ERRORS_TOTAL, "listener" => listener.to_string(), "reason" => reason)
        .increment(1);
}

/// Makes a `client_address = "xclient"` listener's series visible at zero.
pub fn xclient_unavailable_register(listener: &str) {
    counter!(XCLIENT_UNAVAILABLE_TOTAL, "listener" => listener.to_string()).increment(0);
}

/// A session's backend did not offer XCLIENT or refused it.
pub fn xclient_unavailable(listener: &str) {
    counter!(XCLIENT_UNAVAILABLE_TOTAL, "listener" => listener.to_string()).increment(1);
}

/// The notAfter of the certificate `mx` showed last for the policy domain `domain`.
pub fn partner_certificate_expiry(domain: &str, mx: &str, not_after: i64) {
    gauge!(
        PARTNER_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS,
        "domain" => domain.to_string(),
        "mx" => mx.to_string()
    )
    .set(not_after as f64);
}

/// A state file was corrupt at start (`corrupt`) or could not be written (`write`).
pub fn state_file_error(file: &'static str, reason: &'static str) {
    counter!(STATE_FILE_ERRORS_TOTAL, "file" => file, "reason" => reason).increment(1);
}

/// One attempt to deliver a TLS report over `transport` (`https`, `mailto`).
pub fn tls_report(transport: &'static str, sent: bool) {
    let result = if sent { "sent" } else { "failed" };
    counter!(TLS_REPORTS_TOTAL, "transport" => transport, "result" => result).increment(1);
}

/// Shows every `tls_reports_total` series at 0 once reporting is configured, so a rate or an
/// alert on `failed` works before the first failure.
pub fn tls_reports_register() {
    for transport in ["https", "mailto"] {
        for result in ["sent", "failed"] {
            counter!(TLS_REPORTS_TOTAL, "transport" => transport, "result" => result).increment(0);
        }
    }
}

/// A TLS report received on the inbound path (`result`: ok, too_large, not_a_report, malformed).
pub fn tls_report_received(result: &'static str) {
    counter!(TLS_REPORTS_RECEIVED_TOTAL, "result" => result).increment(1);
}

/// `count` failed sessions of `result_type` reported by `organization`.
pub fn tls_report_failures_received(organization: &str, result_type: &'static str, count: u64) {
    counter!(
        TLS_REPORT_FAILED_SESSIONS_TOTAL,
        "organization" => organization_label(organization),
        "result_type" => result_type
    )
    .increment(count);
}

/// The label of a reporting organisation: its name (printable, at most 64 characters) for the
/// first [`MAX_REPORTING_ORGANIZATIONS`] names seen, `other` after, so a sender inventing names
/// cannot grow the series without bound.
fn organization_label(name: &str) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let clean: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(&clean) {
        return clean;
    }
    if seen.len() < MAX_REPORTING_ORGANIZATIONS {
        seen.push(clean.clone());
        return clean;
    }
    "other".to_string()
}
