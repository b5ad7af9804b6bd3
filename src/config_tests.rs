use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/starttls-proxy/test.toml"))
}

fn error(text: &str) -> String {
    parse(text)
        .expect_err("configuration must be refused")
        .to_string()
}

const MINIMAL: &str = r#"
hostname = "mx.example.org"
[tls]
self_signed = true
[[inbound]]
listen = "127.0.0.1:2525"
backend = "127.0.0.1:2526"
"#;

#[test]
fn minimal_configuration_gets_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.hostname, "mx.example.org");
    assert_eq!(config.shutdown_grace, Duration::from_secs(30));
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.limits.handshake_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.inbound[0].name, "127.0.0.1:2525");
    assert!(!config.inbound[0].enforces_tls());
    assert!(config.admin.is_none());
}

#[test]
fn durations_parse_table() {
    let table = [
        ("250ms", Some(250)),
        ("10s", Some(10_000)),
        ("5m", Some(300_000)),
        ("2h", Some(7_200_000)),
        ("1d", Some(86_400_000)),
        ("0s", Some(0)),
        ("10", None),
        ("s", None),
        ("1.5s", None),
        ("-1s", None),
        ("10 s", None),
        ("99999999999999999999d", None),
    ];
    for (text, ms) in table {
        assert_eq!(
            parse_duration(text),
            ms.map(Duration::from_millis),
            "{text}"
        );
    }
}

#[test]
fn unknown_key_names_file_line_column_and_key() {
    let text = format!("{MINIMAL}\n[limits]\nidle_timout = \"5m\"\n");
    let e = error(&text);
    assert!(e.starts_with("/etc/starttls-proxy/test.toml:10:1: "), "{e}");
    assert!(e.contains("idle_timout"), "{e}");
}

#[test]
fn bad_duration_names_key_and_position() {
    let e = error(&format!("{MINIMAL}[limits]\nhandshake_timeout = \"10x\"\n"));
    assert!(e.contains(":9:21: key `limits.handshake_timeout`"), "{e}");
    assert!(e.contains("invalid duration \"10x\""), "{e}");
}

#[test]
fn bad_backend_address_names_the_listener() {
    let e = error(MINIMAL.replace("127.0.0.1:2526", "mta.internal").as_str());
    assert!(e.contains("key `inbound[0].backend`"), "{e}");
    assert!(e.contains(":7:"), "{e}");
}

#[test]
fn unreadable_certificate_names_the_key() {
    let text = MINIMAL.replace(
        "self_signed = true",
        "certificate = \"missing.pem\"\nprivate_key = \"missing.key\"",
    );
    let e = error(&text);
    assert!(e.contains(":4:15: key `tls.certificate`"), "{e}");
    assert!(e.contains("/etc/starttls-proxy/missing.pem"), "{e}");
}

#[test]
fn certificate_without_key_is_refused() {
    let e = error(&MINIMAL.replace("self_signed = true", "certificate = \"c.pem\""));
    assert!(e.contains("key `tls.private_key`"), "{e}");
}

#[test]
fn inbound_without_tls_is_refused() {
    let e = error(&MINIMAL.replace("[tls]\nself_signed = true\n", ""));
    assert!(
        e.contains("key `inbound[0]`") && e.contains("needs [tls]"),
        "{e}"
    );
}

#[test]
fn duplicate_listen_address_is_refused() {
    let text =
        format!("{MINIMAL}[[inbound]]\nlisten = \"127.0.0.1:2525\"\nbackend = \"127.0.0.1:25\"\n");
    let e = error(&text);
    assert!(
        e.contains("key `inbound[1].listen`") && e.contains("used by another listener"),
        "{e}"
    );
}

#[test]
fn domain_lists_match_exact_and_subdomains() {
    let text = MINIMAL.to_string()
        + "require_tls_senders = [\"Bank.Example.\", \".partner.example\"]\nrequire_tls_recipients = [\"x.example\"]\n";
    let config = parse(&text).unwrap();
    let l = &config.inbound[0];
    assert!(l.enforces_tls());
    assert!(l.require_tls_senders.contains("bank.example"));
    assert!(!l.require_tls_senders.contains("sub.bank.example"));
    assert!(l.require_tls_senders.contains("mx.partner.example"));
    assert!(!l.require_tls_senders.contains("partner.example"));
    assert!(!l.require_tls_senders.contains("evilpartner.example"));
    assert!(l.require_tls_recipients.contains("x.example"));
}

#[test]
fn invalid_domain_in_list_is_refused() {
    let e = error(&(MINIMAL.to_string() + "require_tls_recipients = [\"not a domain\"]\n"));
    assert!(e.contains("key `inbound[0].require_tls_recipients`"), "{e}");
}

#[test]
fn limits_are_range_checked() {
    let e = error(&format!("{MINIMAL}[limits]\nmax_line_length = 100\n"));
    assert!(e.contains("key `limits.max_line_length`"), "{e}");
    let e = error(&format!("{MINIMAL}[limits]\nmax_connections = 0\n"));
    assert!(e.contains("key `limits.max_connections`"), "{e}");
}

#[test]
fn credentials_directory_without_systemd_is_explained() {
    std::env::remove_var("CREDENTIALS_DIRECTORY");
    let text = MINIMAL.replace(
        "self_signed = true",
        "certificate = \"c.pem\"\nprivate_key = \"${CREDENTIALS_DIRECTORY}/key\"",
    );
    let e = error(&text);
    assert!(
        e.contains("key `tls.private_key`") && e.contains("CREDENTIALS_DIRECTORY is not set"),
        "{e}"
    );
}

#[test]
fn shipped_example_configurations_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    parse_file(&dir.join("demo.toml"));

    // The reference names tls/cert.pem beside itself: give it a real pair in a scratch copy.
    let scratch =
        std::env::temp_dir().join(format!("starttls-proxy-config-test-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("tls")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["mx1.example.org".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(scratch.join("tls/cert.pem"), cert.pem()).unwrap();
    std::fs::write(scratch.join("tls/key.pem"), key.serialize_pem()).unwrap();
    std::fs::copy(
        dir.join("starttls-proxy.toml"),
        scratch.join("starttls-proxy.toml"),
    )
    .unwrap();
    parse_file(&scratch.join("starttls-proxy.toml"));
    std::fs::remove_dir_all(&scratch).unwrap();
}

fn parse_file(path: &Path) {
    if let Err(e) = Config::load(path) {
        panic!("{e}");
    }
}
