//! Issue 2, point 6: TLS 1.2 minimum (1.3 configurable), forward-secret suites only, ECDSA
//! and RSA certificates, PEM chains, PKCS#8/PKCS#1/SEC1 keys — checked with openssl s_client.

mod common;

use common::peers::{s_client_session, Run};
use common::pki::KeyKind;
use common::proxy::run_cli;
use common::*;

const HANDSHAKES: &str = "starttls_proxy_tls_handshakes_total";
const FAILURES: &str = "starttls_proxy_tls_handshake_failures_total";

fn s_client(proxy: &Proxy, ca: &Ca, extra: &[&str]) -> Run {
    let ca_path = ca.path.display().to_string();
    let mut args = vec![
        "-CAfile",
        ca_path.as_str(),
        "-verify_return_error",
        "-servername",
        "mx.test",
    ];
    args.extend_from_slice(extra);
    openssl_s_client(proxy.addr(), &args, "EHLO openssl.test\nQUIT\n")
}

fn labels<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut l = vec![("listener", "mx"), ("direction", "inbound")];
    l.extend_from_slice(extra);
    l
}

#[test]
fn tls13_and_tls12_are_accepted_by_default_with_iana_cipher_labels() {
    let (dir, ca, leaf) = setup("versions");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();

    let v13 = s_client(&proxy, &ca, &["-tls1_3"]);
    let (p, c) = s_client_session(&v13).unwrap_or_else(|| panic!("{}", v13.all()));
    assert_eq!(p, "TLSv1.3");
    assert!(
        v13.stdout.contains("Verify return code: 0 (ok)"),
        "{}",
        v13.all()
    );

    let v12 = s_client(&proxy, &ca, &["-tls1_2"]);
    let (p12, c12) = s_client_session(&v12).unwrap_or_else(|| panic!("{}", v12.all()));
    assert_eq!(p12, "TLSv1.2");
    assert!(c12.starts_with("ECDHE-ECDSA-"), "not forward secret: {c12}");
    v12.assert_stdout_contains("221");

    proxy.wait_sessions(2);
    let metrics = proxy.metrics();
    assert_eq!(
        metric(
            &metrics,
            HANDSHAKES,
            &labels(&[("version", "TLSv1.3"), ("cipher", c.as_str())])
        ),
        Some(1.0),
        "TLS 1.3 cipher label must be the IANA name {c}:\n{metrics}"
    );
    let iana12 = format!(
        "TLS_ECDHE_ECDSA_WITH_{}",
        c12.trim_start_matches("ECDHE-ECDSA-")
            .replace("AES256-GCM-SHA384", "AES_256_GCM_SHA384")
            .replace("AES128-GCM-SHA256", "AES_128_GCM_SHA256")
            .replace("CHACHA20-POLY1305", "CHACHA20_POLY1305_SHA256")
    );
    assert_eq!(
        metric(
            &metrics,
            HANDSHAKES,
            &labels(&[("version", "TLSv1.2"), ("cipher", iana12.as_str())])
        ),
        Some(1.0),
        "TLS 1.2 cipher label must be the IANA name {iana12}:\n{metrics}"
    );
    let sessions = proxy.sessions();
    assert!(sessions.iter().any(|s| s["version"] == "TLSv1.2"));
    assert!(sessions.iter().any(|s| s["version"] == "TLSv1.3"));
}

#[test]
fn tls11_is_refused_and_counted() {
    let (dir, ca, leaf) = setup("tls11");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    let run = s_client(&proxy, &ca, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(
        s_client_session(&run).is_none(),
        "TLS 1.1 negotiated:\n{}",
        run.all()
    );
    proxy.wait_sessions(1);
    let metrics = proxy.metrics();
    assert_eq!(
        metric_sum(&metrics, FAILURES, &labels(&[])),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, HANDSHAKES, &labels(&[])),
        0.0,
        "{metrics}"
    );
}

#[test]
fn min_version_13_refuses_tls12() {
    let (dir, ca, leaf) = setup("min13");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr)
        .min_version("1.3")
        .start();
    let v12 = s_client(&proxy, &ca, &["-tls1_2"]);
    assert!(
        s_client_session(&v12).is_none(),
        "TLS 1.2 negotiated despite min_version = 1.3:\n{}",
        v12.all()
    );
    let v13 = s_client(&proxy, &ca, &["-tls1_3"]);
    let (p, _) = s_client_session(&v13).unwrap_or_else(|| panic!("{}", v13.all()));
    assert_eq!(p, "TLSv1.3");
    proxy.wait_sessions(2);
    let metrics = proxy.metrics();
    assert_metric(
        &metrics,
        FAILURES,
        &labels(&[("reason", "protocol_version")]),
        1.0,
    );
    assert_eq!(
        metric_sum(&metrics, HANDSHAKES, &labels(&[("version", "TLSv1.2")])),
        0.0
    );
}

#[test]
fn non_forward_secret_suites_are_refused() {
    let dir = TempDir::new("no-fs");
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf_with("mx", &["mx.test"], KeyKind::RsaPkcs8, 30);
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    // Static RSA key exchange (no forward secrecy).
    let rsa_kx = s_client(
        &proxy,
        &ca,
        &["-tls1_2", "-cipher", "AES256-GCM-SHA384:AES128-SHA"],
    );
    assert!(
        s_client_session(&rsa_kx).is_none(),
        "static RSA key exchange negotiated:\n{}",
        rsa_kx.all()
    );
    // The ECDHE variant of the same suite works.
    let ecdhe = s_client(
        &proxy,
        &ca,
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
    );
    let (_, c) = s_client_session(&ecdhe).unwrap_or_else(|| panic!("{}", ecdhe.all()));
    assert_eq!(c, "ECDHE-RSA-AES256-GCM-SHA384");
}

/// Serves a certificate with the given key kind and checks openssl verifies it and sees the
/// expected key.
fn serves(kind: KeyKind, key_bits: &str) {
    let dir = TempDir::new(&format!("{kind:?}").to_lowercase());
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf_with("mx", &["mx.test"], kind, 30);
    let sink = SmtpSink::start(dir.path(), &[]);
    let builder = ProxyBuilder::new(dir.path(), &leaf, sink.addr);
    let config = builder.write_config();
    let (code, out, err) = run_cli(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "check-config rejected a {kind:?} key: {out}{err}");
    let proxy = builder.start();
    for version in ["-tls1_2", "-tls1_3"] {
        let run = s_client(&proxy, &ca, &[version, "-verify_hostname", "mx.test"]);
        assert!(
            run.stdout.contains("Verify return code: 0 (ok)"),
            "{kind:?} {version}:\n{}",
            run.all()
        );
        assert!(
            run.stdout
                .contains(&format!("Server public key is {key_bits} bit")),
            "{kind:?} {version}: wrong key served:\n{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("250-"),
            "no EHLO inside TLS:\n{}",
            run.stdout
        );
    }
}

#[test]
fn ecdsa_certificate_with_pkcs8_key_is_served() {
    serves(KeyKind::EcdsaPkcs8, "256");
}

#[test]
fn ecdsa_certificate_with_sec1_key_is_served() {
    serves(KeyKind::EcdsaSec1, "256");
}

#[test]
fn rsa_certificate_with_pkcs8_key_is_served() {
    serves(KeyKind::RsaPkcs8, "2048");
}

#[test]
fn rsa_certificate_with_pkcs1_key_is_served() {
    serves(KeyKind::RsaPkcs1, "2048");
}

#[test]
fn pem_chain_with_intermediate_is_sent_whole() {
    let dir = TempDir::new("chain");
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf_via_intermediate("mx", &["mx.test"]);
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    // The client trusts only the root: verification needs the intermediate from the proxy.
    let run = s_client(&proxy, &ca, &["-showcerts"]);
    assert!(
        run.stdout.contains("Verify return code: 0 (ok)"),
        "{}",
        run.all()
    );
    assert_eq!(
        run.stdout.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "leaf and intermediate expected:\n{}",
        run.stdout
    );
    // swaks, verifying against the same root, delivers through it.
    let ca_path = ca.path.display().to_string();
    let swaks_run = swaks(
        proxy.addr(),
        &[
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            &ca_path,
            "--tls-sni",
            "mx.test",
            "--from",
            "a@partner.example",
            "--to",
            "u@example.org",
        ],
    );
    swaks_run.assert_success();
    sink.wait_messages(1);
}

#[test]
fn rustls_client_pinned_to_each_version_completes_a_message() {
    let (dir, ca, leaf) = setup("rustls-versions");
    let sink = SmtpSink::start(dir.path(), &[]);
    let proxy = ProxyBuilder::new(dir.path(), &leaf, sink.addr).start();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let (mut client, _) = SmtpClient::greeted(proxy.addr());
        client.cmd("EHLO client.test");
        client.cmd("STARTTLS").assert(220, "2.0.0");
        client
            .handshake(&ca.path, "mx.test", Some(version))
            .expect("handshake");
        client.cmd("EHLO client.test");
        let r = client
            .send_mail(
                "a@partner.example",
                "u@example.org",
                "Subject: v\r\n\r\nb\r\n",
            )
            .expect("final reply");
        assert_eq!(r.code, 250, "{r:?}");
    }
    sink.wait_messages(2);
}
