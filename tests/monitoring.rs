//! Operator monitoring against real peers (DESIGN, "Contract: operator monitoring"): Postfix
//! remote MX hosts with certificates from a test CA, a Postfix sender relaying through the
//! proxy, dnsmasq serving the MX records. The partner certificate inventory (`GET
//! /certificates`, the expiry gauge, the changed-certificate warning, kept across restarts)
//! and downgrade detection (an MX that stops offering STARTTLS), and the state files' bad
//! input (a corrupt inventory at start).

mod common;

use common::postfix::Role;
use common::proxy::run_cli;
use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::net::Ipv4Addr;

/// Fixed ports on the test's own address, so a restarted proxy is where the sender and the
/// test expect it.
fn proxy_config(dns: &Dns, ca: &Ca, ip: Ipv4Addr, policy: &str) -> String {
    format!(
        r#"hostname = "relay.proxy.test"
shutdown_grace = "5s"
[admin]
listen = "{ip}:9125"
[resolver]
nameservers = ["{dns}"]
[[outbound]]
name = "relay"
listen = "{ip}:10025"
mode = "relay"
mx_port = 25
[outbound_policy]
default = "opportunistic"
trust_anchors = "{ca}"
{policy}
"#,
        dns = dns.addr,
        ca = ca.path.display()
    )
}

/// Lowercase hex SHA-256 of the leaf of a PEM chain, as the inventory names certificates.
fn sha256_of(leaf: &Leaf) -> String {
    let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("PEM leaf");
    ring::digest::digest(&ring::digest::SHA256, der.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn certificates(proxy: &Proxy) -> Vec<serde_json::Value> {
    let (status, body) = http_get(proxy.admin.expect("admin"), "/certificates");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /certificates: {e}: {body}"))
}

/// One partner domain on one Postfix MX, the proxy, and a Postfix sender relaying through it.
struct World {
    sender: Postfix,
    proxy: Proxy,
    mx: Postfix,
    ca: Ca,
    /// Outbound sessions the running proxy has ended so far.
    ended: usize,
    _dns: Dns,
    /// Last: removed after every process using it has stopped.
    dir: TempDir,
}

impl World {
    fn new(tag: &str, domain: &str, leaf_names: &[&str], policy: &str) -> (World, Leaf) {
        let dir = TempDir::new(tag);
        let ca = Ca::new(dir.path(), "test-ca");
        let mx_host = format!("mx.{domain}");
        let mx_ip = unique_ip();
        let dns = Dns::start(Zone::default().mx_at(domain, &mx_host, mx_ip));
        let leaf = ca.leaf("mx-first", leaf_names);
        let mx = Postfix::mx(dir.path(), "mx", mx_ip, &[domain], Some(&leaf));
        let proxy = Proxy::start_text(dir.path(), &proxy_config(&dns, &ca, unique_ip(), policy));
        let sender = Postfix::start(
            dir.path(),
            "sender",
            Role::relay_to(proxy.listener("relay")),
        );
        let world = World {
            sender,
            proxy,
            mx,
            ca,
            ended: 0,
            _dns: dns,
            dir,
        };
        (world, leaf)
    }

    /// Sends one message and waits until the MX has `n` and the proxy logged the end of its
    /// session (so the next message opens a new MX session).
    fn deliver(&mut self, to: &str, n: usize) -> String {
        self.sender
            .submit("alice@sender.test", to, &format!("message {n}"));
        let mail = self.mx.wait_delivered(n);
        self.ended += 1;
        self.proxy.wait_log_count(
            |l| l.contains(" event=session ") && l.contains("direction=outbound"),
            self.ended,
            "outbound session ends",
        );
        mail[n - 1].clone()
    }

    /// Stops the proxy cleanly and starts it again on the same configuration.
    fn restart_proxy(&mut self) {
        self.proxy.signal("TERM");
        assert!(
            self.proxy.wait_exit().success(),
            "{}",
            self.proxy.log_text()
        );
        let config = self.proxy.config.clone();
        self.proxy = Proxy::start_with(&config, false);
        self.ended = 0;
    }
}

#[test]
fn partner_certificates_are_inventoried_kept_across_restarts_and_changes_are_warned() {
    let (mut w, first) = World::new(
        "inventory",
        "bank.test",
        &["mx.bank.test", "alt.bank.test"],
        "[[outbound_policy.domain]]\ndomain = \"bank.test\"\nmode = \"verify\"\n",
    );
    let mail = w.deliver("bob@bank.test", 1);
    assert!(mail.contains("using TLSv1."), "not over TLS: {mail}");

    let listed = certificates(&w.proxy);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let c = &listed[0];
    assert_eq!(c["domain"], "bank.test");
    assert_eq!(c["mx"], "mx.bank.test");
    assert_eq!(c["sha256"], sha256_of(&first).as_str());
    assert_eq!(
        c["sans"],
        serde_json::json!(["mx.bank.test", "alt.bank.test"])
    );
    assert!(
        c["subject"]
            .as_str()
            .is_some_and(|s| s.contains("mx.bank.test")),
        "{c}"
    );
    assert!(
        c["issuer"].as_str().is_some_and(|s| s.contains("test-ca")),
        "{c}"
    );
    assert_eq!(c["verified"], true);
    assert_eq!(c["policy"], "configured");
    assert_eq!(
        c["not_after"].as_str(),
        Some(starttls_proxy::log::format_unix(first.not_after_unix).as_str())
    );
    for key in ["first_seen", "last_seen"] {
        let t = c[key].as_str().unwrap_or_else(|| panic!("{key}: {c}"));
        assert!(t.len() == 20 && t.ends_with('Z'), "{key} = {t}");
    }
    let expiry = "starttls_proxy_partner_certificate_expiry_timestamp_seconds";
    let labels = [("domain", "bank.test"), ("mx", "mx.bank.test")];
    w.proxy
        .assert_metric(expiry, &labels, first.not_after_unix as f64);

    // The partner changes its certificate (a longer-lived one from the same CA).
    let second = w.ca.leaf_with(
        "mx-second",
        &["mx.bank.test"],
        common::pki::KeyKind::EcdsaPkcs8,
        90,
    );
    let chain = format!("{}, {}", second.key.display(), second.cert.display());
    w.mx.reconfigure(&[("smtpd_tls_chain_files", chain.as_str())]);
    w.deliver("bob@bank.test", 2);
    let changed = w.proxy.wait_event(
        "partner_certificate_changed",
        &[("domain", "bank.test"), ("mx", "mx.bank.test")],
    );
    assert_eq!(changed["level"], "warn");
    assert_eq!(changed["old_sha256"], sha256_of(&first));
    assert_eq!(changed["new_sha256"], sha256_of(&second));
    w.proxy
        .assert_metric(expiry, &labels, second.not_after_unix as f64);
    assert_eq!(certificates(&w.proxy).len(), 2);

    // A restart keeps the inventory and restores the gauge before any session.
    w.restart_proxy();
    let listed = certificates(&w.proxy);
    let shas: Vec<&str> = listed.iter().filter_map(|c| c["sha256"].as_str()).collect();
    assert_eq!(shas.len(), 2, "{listed:#?}");
    assert!(
        shas.contains(&sha256_of(&first).as_str()) && shas.contains(&sha256_of(&second).as_str())
    );
    w.proxy
        .assert_metric(expiry, &labels, second.not_after_unix as f64);
    assert!(w.dir.join("state/certificates.json").is_file());

    // The same certificate again after the restart is no change.
    w.deliver("bob@bank.test", 3);
    assert!(w.proxy.events("partner_certificate_changed").is_empty());
    w.sender.wait_queue_empty();

    // The auditor's document shows both certificates and the outbound sessions as recorded.
    let config = w.proxy.config.to_str().unwrap().to_string();
    let (code, json, err) = run_cli(&[
        "evidence", "--config", &config, "--days", "1", "--format", "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let e: serde_json::Value = serde_json::from_str(&json).unwrap();
    let certs = e["partner_certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 2, "{certs:#?}");
    assert!(certs
        .iter()
        .all(|c| c["domain"] == "bank.test" && c["policy_domain"] == true));
    assert!(certs
        .iter()
        .any(|c| c["sha256"] == sha256_of(&second).as_str()
            && c["days_left"]
                .as_i64()
                .is_some_and(|d| (88..=90).contains(&d))));
    let outbound = w.proxy.results().len() as u64;
    assert_eq!(e["summary"][0]["direction"], "outbound");
    assert_eq!(e["summary"][0]["sessions"], outbound);
    assert_eq!(e["summary"][0]["verified_sessions"], outbound);
}

#[test]
fn an_mx_that_stops_offering_starttls_is_a_suspected_downgrade_even_after_a_restart() {
    let (mut w, _leaf) = World::new(
        "downgrade",
        "partner.test",
        &["mx.partner.test"],
        "[[outbound_policy.domain]]\ndomain = \"partner.test\"\nmode = \"opportunistic\"\n\
         [monitoring]\ndowngrade_window = \"30d\"\n",
    );
    let mail = w.deliver("bob@partner.test", 1);
    assert!(mail.contains("using TLSv1."), "not over TLS: {mail}");
    let downgrades = "starttls_proxy_downgrade_suspected_total";
    let labels = [("direction", "outbound"), ("domain", "partner.test")];
    assert_eq!(metric(&w.proxy.metrics(), downgrades, &labels), None);

    // What the MX offered is remembered across a restart.
    w.restart_proxy();
    w.mx.reconfigure(&[("smtpd_tls_security_level", "none")]);
    let mail = w.deliver("bob@partner.test", 2);
    assert!(!mail.contains("using TLSv1."), "still TLS: {mail}");
    let warned = w.proxy.wait_event(
        "downgrade_suspected",
        &[("domain", "partner.test"), ("mx", "mx.partner.test")],
    );
    assert_eq!(warned["level"], "warn");
    assert_eq!(warned["direction"], "outbound");
    w.proxy.assert_metric(downgrades, &labels, 1.0);

    // Every such session counts.
    w.deliver("bob@partner.test", 3);
    w.proxy.assert_metric(downgrades, &labels, 2.0);
    w.sender.wait_queue_empty();
}

#[test]
fn a_corrupt_inventory_at_start_is_set_aside_counted_and_started_anew() {
    let (dir, _ca, leaf) = setup("inventory-corrupt");
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let garbage = b"[{\"domain\": \"bank.test\", \"mx\": \"mx.ba".to_vec();
    std::fs::write(state.join("certificates.json"), &garbage).unwrap();
    std::fs::write(state.join("mx-tls.json"), b"\x00\x01 not json").unwrap();
    let proxy = ProxyBuilder::new(dir.path(), &leaf, dead_addr()).start();
    let warned = proxy.wait_event("state_file_corrupt", &[]);
    assert_eq!(warned["level"], "warn");
    assert_eq!(certificates(&proxy), Vec::<serde_json::Value>::new());
    let m = proxy.metrics();
    for file in ["certificates", "mx_tls"] {
        assert_metric(
            &m,
            "starttls_proxy_state_file_errors_total",
            &[("file", file), ("reason", "corrupt")],
            1.0,
        );
    }
    let kept: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("certificates.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(state.join(&kept[0])).unwrap(), garbage);
}

#[test]
fn a_bad_downgrade_window_is_a_configuration_error_naming_the_key() {
    let (dir, _ca, leaf) = setup("monitoring-config");
    let builder = ProxyBuilder::new(dir.path(), &leaf, dead_addr());
    let path = builder.write_config();
    for bad in ["\"tomorrow\"", "\"1s\"", "30"] {
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.split("\n[monitoring]").next().unwrap().to_string();
        std::fs::write(
            &path,
            format!("{text}\n[monitoring]\ndowngrade_window = {bad}\n"),
        )
        .unwrap();
        let (code, _out, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("downgrade_window"), "{bad}: {err}");
    }
}

#[test]
fn a_certificate_policy_refuses_is_inventoried_too() {
    // The MX shows a test-CA certificate for another name: verify refuses it (451 4.7.5), and
    // the inventory still records what was presented, as not verified.
    let (w, leaf) = World::new(
        "inventory-refused",
        "strict.test",
        &["somebody-else.test"],
        "[[outbound_policy.domain]]\ndomain = \"strict.test\"\nmode = \"verify\"\n",
    );
    w.sender
        .submit("alice@sender.test", "bob@strict.test", "must not leave");
    w.sender.wait_deferred("4.7.5");
    let listed = eventually("the refused certificate in the inventory", || {
        let listed = certificates(&w.proxy);
        (!listed.is_empty()).then_some(listed)
    });
    let c = &listed[0];
    assert_eq!(c["domain"], "strict.test");
    assert_eq!(c["mx"], "mx.strict.test");
    assert_eq!(c["sha256"], sha256_of(&leaf).as_str());
    assert_eq!(c["verified"], false);
    assert_eq!(c["sans"], serde_json::json!(["somebody-else.test"]));
    assert!(w.mx.delivered().is_empty());
}

#[test]
fn a_giant_name_list_from_a_real_mx_is_kept_bounded() {
    let names: Vec<String> = std::iter::once("mx.many.test".to_string())
        .chain((0..1500).map(|i| format!("alias{i}.many.test")))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut w, leaf) = World::new("inventory-giant", "many.test", &refs, "");
    w.deliver("bob@many.test", 1);
    let listed = certificates(&w.proxy);
    assert_eq!(listed.len(), 1, "{}", listed.len());
    let c = &listed[0];
    assert_eq!(c["sha256"], sha256_of(&leaf).as_str());
    assert_eq!(c["sans"].as_array().map(Vec::len), Some(100));
    assert_eq!(c["sans_omitted"], 1401);
    assert_eq!(c["sans"][0], "mx.many.test");
    assert_eq!(c["policy_domain"], false);
    // Not a policy domain: no gauge series for it (labels stay the operator's).
    assert_eq!(
        metric(
            &w.proxy.metrics(),
            "starttls_proxy_partner_certificate_expiry_timestamp_seconds",
            &[("domain", "many.test")]
        ),
        None
    );
}

#[test]
fn an_mx_that_falls_back_to_an_older_tls_version_is_a_suspected_downgrade() {
    let (mut w, _leaf) = World::new("downgrade-version", "old.test", &["mx.old.test"], "");
    let mail = w.deliver("bob@old.test", 1);
    assert!(
        mail.contains("using TLSv1.3"),
        "the first session is not TLS 1.3: {mail}"
    );
    // The MX now speaks TLS 1.2 at most.
    let protocols = "!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3";
    w.mx.reconfigure(&[
        ("smtpd_tls_protocols", protocols),
        ("smtpd_tls_mandatory_protocols", protocols),
    ]);
    let mail = w.deliver("bob@old.test", 2);
    assert!(mail.contains("using TLSv1.2"), "not TLS 1.2: {mail}");
    let warned = w.proxy.wait_event(
        "downgrade_suspected",
        &[("domain", "old.test"), ("mx", "mx.old.test")],
    );
    assert!(warned["detail"].contains("TLSv1.2"), "{warned:?}");
    // A domain without a policy entry counts as `other`.
    w.proxy.assert_metric(
        "starttls_proxy_downgrade_suspected_total",
        &[("direction", "outbound"), ("domain", "other")],
        1.0,
    );
}
