use super::listeners::parse_next_hop;
use super::*;
use crate::policy::Mode;

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
    // It takes the key as the systemd credential `tls-key`. CREDENTIALS_DIRECTORY is
    // process-wide and tests run in parallel (one removes it), so the copy names the key file
    // directly; tests/cli.rs checks the credential path through the binary with the variable set.
    let reference = std::fs::read_to_string(dir.join("starttls-proxy.toml")).unwrap();
    assert!(reference.contains("private_key = \"${CREDENTIALS_DIRECTORY}/tls-key\""));
    std::fs::write(
        scratch.join("starttls-proxy.toml"),
        reference.replace("${CREDENTIALS_DIRECTORY}/tls-key", "tls/key.pem"),
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

// ---- outbound: [resolver], [[outbound]], [outbound_policy] ----

const OUTBOUND: &str = r#"
hostname = "relay.example.org"
[resolver]
nameservers = ["127.0.0.53", "[::1]:5353"]
[[outbound]]
name = "relay"
listen = "127.0.0.1:10025"
mx_port = 2525
[outbound_policy]
default = "opportunistic"
[[outbound_policy.domain]]
domain = "bank.example"
mode = "verify"
match = ["mx.bank.example"]
relax_until = "2999-01-01T00:00:00Z"
[[outbound_policy.domain]]
domain = ".partner.example"
mode = "encrypt"
"#;

#[test]
fn outbound_configuration_parses() {
    let config = parse(OUTBOUND).unwrap();
    assert_eq!(
        config.resolver.nameservers,
        vec![
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    let relay = &config.outbound[0];
    assert_eq!(relay.name, "relay");
    assert_eq!(relay.mode, OutboundMode::Relay);
    assert_eq!(relay.mx_port, 2525);
    assert!(relay.next_hop.is_none());
    let policy = &config.outbound_policy;
    assert_eq!(policy.default, Mode::Opportunistic);
    let bank = policy.lookup("bank.example", 0);
    assert_eq!(bank.mode, Mode::Verify);
    assert!(bank.relaxed);
    assert_eq!(bank.match_names, vec!["mx.bank.example".to_string()]);
    assert_eq!(policy.lookup("a.partner.example", 0).mode, Mode::Encrypt);
    assert_eq!(
        policy.lookup("partner.example", 0).mode,
        Mode::Opportunistic
    );
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert!(config.summary().contains("outbound relay (relay)"));
}

#[test]
fn next_hop_forms() {
    let table = [
        ("smtp.isp.example:587", Some(("smtp.isp.example", 587))),
        ("smtp.isp.example", Some(("smtp.isp.example", 25))),
        ("192.0.2.1:2525", Some(("192.0.2.1", 2525))),
        ("[2001:db8::1]:25", Some(("2001:db8::1", 25))),
        ("bad host:25", None),
        ("host:0", None),
        ("host:x", None),
        ("2001:db8::1", None),
    ];
    for (text, expected) in table {
        let got = parse_next_hop(text).map(|h| (h.host, h.port));
        assert_eq!(got, expected.map(|(h, p)| (h.to_string(), p)), "{text}");
    }
}

#[test]
fn bad_next_hop_names_the_key() {
    let text = OUTBOUND.replace("mx_port = 2525", "next_hop = \"not a host\"");
    let e = error(&text);
    assert!(e.contains(":8:12: key `outbound[0].next_hop`"), "{e}");
    assert!(e.contains("is not a next hop"), "{e}");
}

#[test]
fn next_hop_is_refused_in_transparent_mode() {
    let text = OUTBOUND.replace(
        "mx_port = 2525",
        "mode = \"transparent\"\nnext_hop = \"192.0.2.1:25\"",
    );
    let e = error(&text);
    assert!(e.contains("key `outbound[0].next_hop`"), "{e}");
}

#[test]
fn unknown_policy_mode_is_an_error() {
    let e = error(&OUTBOUND.replace("mode = \"encrypt\"", "mode = \"must\""));
    assert!(e.contains("key `outbound_policy.domain[1].mode`"), "{e}");
    assert!(e.contains("unknown variant `must`"), "{e}");
    assert!(e.contains(":18:8"), "{e}");
}

#[test]
fn unknown_outbound_key_is_an_error() {
    let e = error(&OUTBOUND.replace("mx_port = 2525", "mx-port = 2525"));
    assert!(e.contains(":8:1:"), "{e}");
    assert!(e.contains("mx-port"), "{e}");
}

#[test]
fn bad_policy_domain_and_duplicates_are_errors() {
    let e = error(&OUTBOUND.replace("\".partner.example\"", "\"bad domain\""));
    assert!(e.contains("key `outbound_policy.domain[1].domain`"), "{e}");
    let e = error(&OUTBOUND.replace(".partner.example", "bank.example"));
    assert!(e.contains("has another entry"), "{e}");
}

#[test]
fn bad_relax_until_names_the_key() {
    let e = error(&OUTBOUND.replace("2999-01-01T00:00:00Z", "next week"));
    assert!(
        e.contains(":15:15: key `outbound_policy.domain[0].relax_until`"),
        "{e}"
    );
    assert!(e.contains("RFC 3339"), "{e}");
}

#[test]
fn relax_until_in_the_past_is_ignored_with_a_warning() {
    let config = parse(&OUTBOUND.replace("2999-01-01", "2020-01-01")).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(!config.outbound_policy.lookup("bank.example", now).relaxed);
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(
        config.warnings[0].contains("relax_until") && config.warnings[0].contains("in the past"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn missing_trust_anchors_file_is_an_error() {
    let text = OUTBOUND.replace(
        "default = \"opportunistic\"",
        "default = \"opportunistic\"\ntrust_anchors = \"/nonexistent/ca.pem\"",
    );
    let e = error(&text);
    assert!(e.contains("key `outbound_policy.trust_anchors`"), "{e}");
    assert!(e.contains("cannot load trust anchors"), "{e}");
}

#[test]
fn outbound_listener_cannot_share_an_inbound_address() {
    let text = format!("{MINIMAL}\n[[outbound]]\nlisten = \"127.0.0.1:2525\"\n");
    let e = error(&text);
    assert!(e.contains("key `outbound[0].listen`"), "{e}");
    assert!(e.contains("used by another listener"), "{e}");
}

#[test]
fn bad_nameserver_is_an_error() {
    let e = error(&OUTBOUND.replace("127.0.0.53", "dns.example"));
    assert!(e.contains("key `resolver.nameservers`"), "{e}");
}

// ---- issue 15: listeners, host names, runtime versus configuration errors ----

#[test]
fn a_configuration_without_listeners_is_refused() {
    for text in [
        "",
        "hostname = \"mx.example.org\"\n[admin]\nlisten = \"127.0.0.1:9125\"\n",
    ] {
        let e = parse(text).expect_err("no listener must be refused");
        assert!(!e.runtime, "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(e.starts_with("/etc/starttls-proxy/test.toml:1:1: "), "{e}");
        assert!(e.contains("no listener is configured"), "{e}");
        assert!(
            e.contains("[[inbound]]") && e.contains("[[outbound]]"),
            "{e}"
        );
    }
}

#[test]
fn backend_and_admin_accept_host_names_resolved_at_load() {
    let text = MINIMAL.replace("127.0.0.1:2526", "localhost:2526")
        + "[admin]\nlisten = \"localhost:9125\"\n";
    let config = parse(&text).unwrap();
    let l = &config.inbound[0];
    assert_eq!(l.backend_name, "localhost:2526");
    assert!(!l.backend_addrs.is_empty());
    assert!(
        l.backend_addrs
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 2526),
        "{:?}",
        l.backend_addrs
    );
    assert_eq!(l.backend, l.backend_addrs[0]);
    let admin = config.admin.as_ref().unwrap().listen;
    assert!(admin.ip().is_loopback() && admin.port() == 9125, "{admin}");
    assert!(
        config.summary().contains("localhost:2526 ("),
        "{}",
        config.summary()
    );
    // A bare name or address gets port 25; IPv6 literals keep working.
    let config = parse(&MINIMAL.replace("127.0.0.1:2526", "localhost")).unwrap();
    assert_eq!(config.inbound[0].backend.port(), 25);
    let config = parse(&MINIMAL.replace("127.0.0.1:2526", "[::1]:2526")).unwrap();
    assert_eq!(config.inbound[0].backend, "[::1]:2526".parse().unwrap());
}

#[test]
fn a_host_name_that_does_not_resolve_is_a_runtime_failure() {
    let e = parse(&MINIMAL.replace("127.0.0.1:2526", "mta.invalid:25"))
        .expect_err("unresolvable backend");
    assert!(e.runtime, "{e}");
    assert_eq!(e.exit_code(), 1);
    let e = e.to_string();
    assert!(e.contains(":7:11: key `inbound[0].backend`"), "{e}");
    assert!(
        e.contains("cannot resolve host name \"mta.invalid\""),
        "{e}"
    );
}

#[test]
fn malformed_addresses_say_what_is_expected() {
    let e = parse(&MINIMAL.replace("127.0.0.1:2526", "mta:port")).unwrap_err();
    assert!(!e.runtime);
    let e = e.to_string();
    assert!(e.contains("key `inbound[0].backend`"), "{e}");
    assert!(e.contains("\"mta.internal:25\""), "{e}");
    let e = error(&MINIMAL.replace("listen = \"127.0.0.1:2525\"", "listen = \"localhost:25\""));
    assert!(e.contains(":6:10: key `inbound[0].listen`"), "{e}");
    assert!(e.contains("is not an IP address and port"), "{e}");
    let e = error(&format!("{MINIMAL}[admin]\nlisten = \"localhost\"\n"));
    assert!(e.contains("key `admin.listen`"), "{e}");
}

#[test]
fn unreadable_certificate_is_a_runtime_failure_and_bad_content_is_not() {
    let text = MINIMAL.replace(
        "self_signed = true",
        "certificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/nonexistent/key.pem\"",
    );
    let e = parse(&text).unwrap_err();
    assert!(e.runtime, "{e}");
    assert_eq!(e.exit_code(), 1);
    // A file that is there but holds no certificate: the content is wrong, exit 2.
    let dir = std::env::temp_dir().join(format!("config-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let text = MINIMAL.replace(
        "self_signed = true",
        &format!("certificate = {junk:?}\nprivate_key = {junk:?}"),
    );
    let e = parse(&text).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!e.runtime, "{e}");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("key `tls.certificate`"), "{e}");
}

#[test]
fn the_sha256_is_of_the_configuration_text() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.sha256.len(), 64);
    assert_eq!(config.sha256, sha256_hex(MINIMAL.as_bytes()));
    assert_eq!(
        sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn proxy_protocol_from_takes_cidrs_and_addresses() {
    let text = MINIMAL.to_string()
        + "proxy_protocol_from = [\"10.0.0.9/24\", \"2001:db8::1\", \"192.0.2.1\"]\n";
    let config = parse(&text).unwrap();
    let trusted = &config.inbound[0].proxy_protocol_from;
    assert!(trusted.trusts("10.0.0.200".parse().unwrap()));
    assert!(trusted.trusts("2001:db8::1".parse().unwrap()));
    assert!(!trusted.trusts("2001:db8::2".parse().unwrap()));
    assert!(trusted.trusts("192.0.2.1".parse().unwrap()));
    assert!(!trusted.trusts("192.0.2.2".parse().unwrap()));
    let summary = config.summary();
    assert!(
        summary.contains("(PROXY header from 10.0.0.0/24, 2001:db8::1/128, 192.0.2.1/32)"),
        "{summary}"
    );
    assert!(parse(MINIMAL).unwrap().inbound[0]
        .proxy_protocol_from
        .is_empty());
}

#[test]
fn bad_proxy_protocol_from_names_the_key() {
    let e = error(&(MINIMAL.to_string() + "proxy_protocol_from = [\"10.0.0.0/33\"]\n"));
    assert!(
        e.contains("key `inbound[0].proxy_protocol_from`") && e.contains("is not a network"),
        "{e}"
    );
}

#[test]
fn client_address_modes_parse_and_unknown_ones_are_refused() {
    use crate::net::backend::ClientAddress;
    assert_eq!(
        parse(MINIMAL).unwrap().inbound[0].client_address,
        ClientAddress::None
    );
    for (text, mode) in [
        ("none", ClientAddress::None),
        ("proxy-v1", ClientAddress::ProxyV1),
        ("proxy-v2", ClientAddress::ProxyV2),
        ("xclient", ClientAddress::Xclient),
        ("transparent", ClientAddress::Transparent),
    ] {
        let config = parse(&format!("{MINIMAL}client_address = {text:?}\n")).unwrap();
        assert_eq!(config.inbound[0].client_address, mode);
    }
    let e = error(&format!("{MINIMAL}client_address = \"proxy-v3\"\n"));
    assert!(e.contains("inbound") && e.contains("client_address"), "{e}");
}

#[test]
fn original_destination_needs_tproxy_interception() {
    use crate::net::original_dst::Interception;
    let base = "hostname = \"mx.example.org\"\n[tls]\nself_signed = true\n[[inbound]]\nlisten = \"0.0.0.0:10025\"\nbackend = \"original-destination\"\n";
    let e = error(base);
    assert!(
        e.contains("key `inbound[0].backend`") && e.contains("interception = \"tproxy\""),
        "{e}"
    );
    let config = parse(&format!("{base}interception = \"tproxy\"\n")).unwrap();
    let l = &config.inbound[0];
    assert_eq!(l.interception, Interception::Tproxy);
    assert_eq!(l.backend_target, BackendTarget::OriginalDestination);
    assert!(l.backend_addrs.is_empty());
    assert!(
        config.summary().contains("original-destination"),
        "{}",
        config.summary()
    );
    let e = error(&format!("{MINIMAL}interception = \"redirect\"\n"));
    assert!(e.contains("interception"), "{e}");
}

#[test]
fn outbound_tproxy_is_for_transparent_mode() {
    use crate::net::original_dst::Interception;
    let base = "[[outbound]]\nlisten = \"0.0.0.0:10027\"\ninterception = \"tproxy\"\n";
    let e = error(base);
    assert!(
        e.contains("key `outbound[0].interception`") && e.contains("mode = \"transparent\""),
        "{e}"
    );
    let config = parse(&format!("{base}mode = \"transparent\"\n")).unwrap();
    assert_eq!(config.outbound[0].interception, Interception::Tproxy);
}

#[test]
fn dane_is_the_default_and_both_dane_modes_parse() {
    let config = parse(OUTBOUND).unwrap();
    assert_eq!(config.resolver.dnssec_trust_anchor, None);
    let text = OUTBOUND.replace("mode = \"encrypt\"", "mode = \"dane-only\"");
    let policy = parse(&text).unwrap().outbound_policy;
    assert!(policy.domains.iter().any(|d| d.mode == Mode::DaneOnly));
    let without_default: String = OUTBOUND
        .lines()
        .filter(|l| !l.starts_with("default ="))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        parse(&without_default).unwrap().outbound_policy.default,
        Mode::Dane
    );
}

#[test]
fn a_broken_dnssec_trust_anchor_names_the_key() {
    let dir = std::env::temp_dir().join(format!("stp-anchor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.key");
    std::fs::write(&empty, "; no keys here\n").unwrap();
    for path in [empty.display().to_string(), "/nonexistent/root.key".into()] {
        let e = error(&OUTBOUND.replace(
            "[[outbound]]",
            &format!("dnssec_trust_anchor = \"{path}\"\n[[outbound]]"),
        ));
        assert!(e.contains("resolver.dnssec_trust_anchor"), "{e}");
        assert!(e.contains(&path), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn monitoring_defaults_to_a_30_day_downgrade_window_and_expired_relaxations_are_kept() {
    let text = format!(
        "{MINIMAL}[[outbound]]\nlisten = \"127.0.0.1:10025\"\n[outbound_policy]\ndefault = \"opportunistic\"\n\
         [[outbound_policy.domain]]\ndomain = \"bank.example\"\nmode = \"verify\"\nrelax_until = \"2020-01-01T00:00:00Z\"\n"
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.monitoring.downgrade_window,
        Duration::from_secs(30 * 86_400)
    );
    assert_eq!(
        config.expired_relaxations,
        vec![ExpiredRelaxation {
            domain: "bank.example".into(),
            relax_until: 1_577_836_800
        }]
    );
    let summary = config.summary();
    assert!(summary.contains("downgrade window 30d"), "{summary}");
    assert!(
        summary.contains("expired: bank.example relax_until 2020-01-01T00:00:00Z"),
        "{summary}"
    );
    let config = parse(&format!("{text}[monitoring]\ndowngrade_window = \"12h\"\n")).unwrap();
    assert_eq!(
        config.monitoring.downgrade_window,
        Duration::from_secs(12 * 3600)
    );
    let err = error(&format!(
        "{MINIMAL}[monitoring]\ndowngrade_windows = \"1d\"\n"
    ));
    assert!(err.contains("downgrade_windows"), "{err}");
}

const REPORTING: &str = r#"
[tls_reporting]
organization = "Example Org"
contact = "mailto:postmaster@example.org"
submitter = "Example.org"
send_via = "10.0.0.25:25"
from = "tlsrpt-noreply@example.org"
"#;

#[test]
fn tls_reporting_table_is_read_and_checked() {
    assert!(parse(MINIMAL).unwrap().tls_reporting.is_none());
    let config = parse(&format!("{MINIMAL}{REPORTING}")).unwrap();
    let r = config.tls_reporting.unwrap();
    assert_eq!(r.submitter, "example.org");
    assert_eq!(r.send_via, Some("10.0.0.25:25".parse().unwrap()));
    assert_eq!(r.from, "tlsrpt-noreply@example.org");
    let without_relay = REPORTING.replace("send_via = \"10.0.0.25:25\"\n", "");
    assert!(parse(&format!("{MINIMAL}{without_relay}"))
        .unwrap()
        .tls_reporting
        .unwrap()
        .send_via
        .is_none());
    for (from, to, key) in [
        ("10.0.0.25:25", "mail.example.org", "tls_reporting.send_via"),
        (
            "tlsrpt-noreply@example.org",
            "not a mailbox",
            "tls_reporting.from",
        ),
        ("Example.org", "example org!", "tls_reporting.submitter"),
        ("Example Org", "", "tls_reporting.organization"),
    ] {
        let e = error(&format!("{MINIMAL}{}", REPORTING.replace(from, to)));
        assert!(e.contains(key), "{e}");
    }
    let e = error(&format!("{MINIMAL}{REPORTING}unknown = 1\n"));
    assert!(e.contains("unknown"), "{e}");
}

#[test]
fn tls_reporting_schedule_keys_have_defaults_and_bounds() {
    let r = parse(&format!("{MINIMAL}{REPORTING}"))
        .unwrap()
        .tls_reporting
        .unwrap();
    assert!(!r.only_with_failures);
    assert_eq!(r.send_spread, Duration::from_secs(4 * 3600));
    assert_eq!(r.suppress_after_days, 5);
    let text = format!(
        "{MINIMAL}{REPORTING}only_with_failures = true\nsend_spread = \"30m\"\nsuppress_after_days = 0\n"
    );
    let r = parse(&text).unwrap().tls_reporting.unwrap();
    assert!(r.only_with_failures);
    assert_eq!(r.send_spread, Duration::from_secs(1800));
    assert_eq!(r.suppress_after_days, 0);
    let e = error(&format!("{MINIMAL}{REPORTING}send_spread = \"21h\"\n"));
    assert!(e.contains("tls_reporting.send_spread"), "{e}");
}

#[test]
fn tls_reporting_receive_addresses_are_mailboxes() {
    let text = format!("{MINIMAL}{REPORTING}receive = [\"TLSRPT@Example.org\"]\n");
    let r = parse(&text).unwrap().tls_reporting.unwrap();
    assert_eq!(r.receive, ["tlsrpt@example.org"]);
    assert!(r.is_report_address("tlsrpt@example.org"));
    assert!(!r.is_report_address("postmaster@example.org"));
    let e = error(&format!("{MINIMAL}{REPORTING}receive = [\"tlsrpt\"]\n"));
    assert!(e.contains("tls_reporting.receive"), "{e}");
}
