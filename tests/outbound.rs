//! Outbound STARTTLS origination against real peers: Postfix as the legacy sender relaying
//! through the proxy, Postfix as remote MX hosts (valid, wrong-name, self-signed certificates,
//! or no STARTTLS at all), dnsmasq serving the MX records, a CA made at test time, and a hostile
//! MX that injects a response after its 220 to STARTTLS.
//!
//! Refusals are proven on both sides: the sender's queue still holds the message (with the
//! proxy's 4xx as the delay reason) and the MX never saw MAIL/RCPT.

mod common;

use common::dns::TEMPFAIL_DOMAIN;
use common::mx;
use common::netns;
use common::pki;
use common::postfix::Role;
use common::proxy::run_cli;
use common::*;
use std::net::{Ipv4Addr, SocketAddr};

/// The proxy's configuration for one test: its own addresses, the test's DNS server and CA,
/// and `policy` appended (domain entries).
fn proxy_config(dns: &Dns, ca: &Ca, ip: Ipv4Addr, policy: &str) -> String {
    format!(
        r#"hostname = "relay.proxy.test"
[admin]
listen = "{ip}:0"
[resolver]
nameservers = ["{dns}"]
[limits]
handshake_timeout = "10s"
connect_timeout = "5s"
[[outbound]]
name = "relay"
listen = "{ip}:0"
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

fn entry(domain: &str, mode: &str, extra: &str) -> String {
    format!("[[outbound_policy.domain]]\ndomain = \"{domain}\"\nmode = \"{mode}\"\n{extra}\n")
}

/// One remote domain served by one Postfix MX, the proxy, and a Postfix sender relaying
/// through it.
struct World {
    sender: Postfix,
    proxy: Proxy,
    mx: Postfix,
    _dns: Dns,
    _ca: Ca,
    /// Last: removed after every process using it has stopped.
    _dir: TempDir,
}

enum Cert {
    /// Signed by the test CA for the MX host name.
    Valid,
    /// Signed by the test CA for another name.
    WrongName,
    /// Self-signed for the MX host name.
    SelfSigned,
    /// No STARTTLS at all.
    None,
}

impl World {
    fn new(tag: &str, domain: &str, cert: Cert, policy: &str) -> World {
        let dir = TempDir::new(tag);
        let ca = Ca::new(dir.path(), "test-ca");
        let mx_host = format!("mx.{domain}");
        let mx_ip = unique_ip();
        let dns = Dns::start(Zone::default().mx_at(domain, &mx_host, mx_ip));
        let leaf: Option<Leaf> = match cert {
            Cert::Valid => Some(ca.leaf("mx", &[&mx_host])),
            Cert::WrongName => Some(ca.leaf("mx", &["somebody-else.test"])),
            Cert::SelfSigned => Some(pki::self_signed(dir.path(), "mx", &[&mx_host])),
            Cert::None => None,
        };
        let mx = Postfix::mx(dir.path(), "mx", mx_ip, &[domain], leaf.as_ref());
        let proxy = Proxy::start_text(dir.path(), &proxy_config(&dns, &ca, unique_ip(), policy));
        let sender = Postfix::start(
            dir.path(),
            "sender",
            Role::relay_to(proxy.listener("relay")),
        );
        World {
            sender,
            proxy,
            mx,
            _dns: dns,
            _ca: ca,
            _dir: dir,
        }
    }

    fn send(&self, to: &str, body: &str) {
        self.sender.submit("alice@sender.test", to, body);
    }

    /// Sends `body` to `to` and waits until the sender's queue holds it with a delay reason
    /// containing `reason` (e.g. "4.7.5"); returns that queue entry.
    fn send_deferred(&self, to: &str, body: &str, reason: &str) -> String {
        self.send(to, body);
        self.sender.wait_deferred(reason)
    }

    /// The MX saw a session end without any MAIL or RCPT (Postfix's disconnect summary).
    fn assert_mx_saw_no_envelope(&self) {
        let line = self.mx.wait_maillog("disconnect from");
        assert!(
            !line.contains("mail=") && !line.contains("rcpt="),
            "the MX saw an envelope: {line}"
        );
        assert!(self.mx.delivered().is_empty(), "the MX delivered mail");
    }
}

#[test]
fn verify_partner_gets_mail_over_verified_tls_from_postfix() {
    let w = World::new(
        "verify-ok",
        "bank.test",
        Cert::Valid,
        &entry("bank.test", "verify", ""),
    );
    w.send("bob@bank.test", "hello over verified TLS");
    let mail = w.mx.wait_delivered(1);
    assert!(mail[0].contains("hello over verified TLS"), "{}", mail[0]);
    assert!(
        mail[0].contains("using TLSv1.3") || mail[0].contains("using TLSv1.2"),
        "the MX did not receive it over TLS: {}",
        mail[0]
    );
    let session = w.proxy.wait_event(
        "mx_session",
        &[
            ("domain", "bank.test"),
            ("policy", "configured"),
            ("mode", "verify"),
        ],
    );
    assert_eq!(session["tls"], "yes");
    assert_eq!(session["verdict"], "verified");
    let end = w.proxy.wait_event(
        "session",
        &[("direction", "outbound"), ("domain", "bank.test")],
    );
    assert_eq!(end["sni"], "mx.bank.test");
    assert_eq!(end["verdict"], "verified");
    let results = w.proxy.results();
    assert_eq!(results.len(), 1, "one MX attempt: {results:#?}");
    let r = &results[0];
    assert_eq!(
        (&r["result"], &r["verified"], &r["domain"], &r["mx_host"]),
        (
            &serde_json::json!("success"),
            &serde_json::json!(true),
            &serde_json::json!("bank.test"),
            &serde_json::json!("mx.bank.test")
        )
    );
    assert_eq!(r["session_id"].as_str(), Some(end["id"].as_str()));
    let m = w.proxy.metrics();
    let sessions = metric(
        &m,
        "starttls_proxy_outbound_domain_sessions_total",
        &[
            ("domain", "bank.test"),
            ("mode", "verify"),
            ("tls", "yes"),
            ("verified", "yes"),
        ],
    );
    assert_eq!(sessions, Some(1.0), "{m}");
    assert!(
        metric(
            &m,
            "starttls_proxy_tls_handshakes_total",
            &[("listener", "relay"), ("direction", "outbound")]
        )
        .is_some(),
        "{m}"
    );
    w.sender.wait_queue_empty();
}

#[test]
fn encrypt_without_starttls_defers_and_mail_stays_queued() {
    let w = World::new(
        "encrypt-nostarttls",
        "partner.test",
        Cert::None,
        &entry("partner.test", "encrypt", ""),
    );
    let queued = w.send_deferred("bob@partner.test", "must not leave in plaintext", "4.7.4");
    assert!(
        queued.contains("TLS is required, but was not offered by host mx.partner.test"),
        "{queued}"
    );
    assert!(queued.contains("partner.test"), "{queued}");
    w.assert_mx_saw_no_envelope();
    let refused = w
        .proxy
        .wait_event("policy_refused", &[("domain", "partner.test")]);
    assert_eq!(refused["reason"], "starttls_not_offered");
    w.proxy.assert_metric(
        "starttls_proxy_policy_rejections_total",
        &[
            ("direction", "outbound"),
            ("reason", "starttls_not_offered"),
        ],
        1.0,
    );
}

#[test]
fn verify_refuses_wrong_name_certificate_and_mail_stays_queued() {
    let w = World::new(
        "verify-wrongname",
        "bank.test",
        Cert::WrongName,
        &entry("bank.test", "verify", ""),
    );
    let queued = w.send_deferred("bob@bank.test", "wrong name", "4.7.5");
    assert!(
        queued.contains("Server certificate not verified"),
        "{queued}"
    );
    assert!(queued.contains("name does not match"), "{queued}");
    assert!(queued.contains("mx.bank.test"), "{queued}");
    w.assert_mx_saw_no_envelope();
    // Issue 14: the refused attempt is a result with its RFC 8460 type and TLS facts.
    w.proxy.wait_sessions(1);
    let results = w.proxy.results();
    let refused = results
        .iter()
        .find(|r| r["result"] == "certificate-host-mismatch")
        .unwrap_or_else(|| panic!("{results:#?}"));
    assert_eq!(refused["direction"], "outbound");
    assert_eq!(refused["domain"], "bank.test");
    assert_eq!(refused["mx_host"], "mx.bank.test");
    assert_eq!(refused["mx_ip"], w.mx.addr.ip().to_string());
    assert_eq!(refused["verified"], false);
    assert!(refused["tls_version"].as_str().is_some(), "{refused}");
}

#[test]
fn verify_accepts_a_configured_match_name() {
    let dir_tag = "verify-match";
    let w = World::new(
        dir_tag,
        "bank.test",
        Cert::WrongName,
        &entry("bank.test", "verify", "match = [\"somebody-else.test\"]"),
    );
    w.send("bob@bank.test", "matched by name");
    let mail = w.mx.wait_delivered(1);
    assert!(mail[0].contains("matched by name"));
    let session = w.proxy.wait_event("mx_session", &[("domain", "bank.test")]);
    assert_eq!(session["verdict"], "verified");
}

#[test]
fn verify_refuses_self_signed_certificate_and_mail_stays_queued() {
    let w = World::new(
        "verify-selfsigned",
        "bank.test",
        Cert::SelfSigned,
        &entry("bank.test", "verify", ""),
    );
    let queued = w.send_deferred("bob@bank.test", "self signed", "4.7.5");
    assert!(queued.contains("not signed by a trusted CA"), "{queued}");
    w.assert_mx_saw_no_envelope();
}

#[test]
fn opportunistic_accepts_self_signed_and_records_the_verdict() {
    let w = World::new(
        "opportunistic-selfsigned",
        "other.test",
        Cert::SelfSigned,
        "",
    );
    w.send("bob@other.test", "any certificate will do");
    let mail = w.mx.wait_delivered(1);
    assert!(mail[0].contains("using TLSv1."), "{}", mail[0]);
    let session = w
        .proxy
        .wait_event("mx_session", &[("domain", "other.test")]);
    assert_eq!(session["tls"], "yes");
    assert_eq!(session["verdict"], "untrusted");
    assert_eq!(session["policy"], "none");
    assert_eq!(session["mode"], "opportunistic");
    w.proxy.assert_metric(
        "starttls_proxy_outbound_domain_sessions_total",
        &[
            ("domain", "other"),
            ("mode", "opportunistic"),
            ("tls", "yes"),
            ("verified", "no"),
        ],
        1.0,
    );
}

#[test]
fn opportunistic_delivers_in_plaintext_when_starttls_is_not_offered() {
    let w = World::new("opportunistic-plain", "legacy.test", Cert::None, "");
    w.send("bob@legacy.test", "plaintext is allowed here");
    let mail = w.mx.wait_delivered(1);
    assert!(!mail[0].contains("using TLS"), "{}", mail[0]);
    let session = w
        .proxy
        .wait_event("mx_session", &[("domain", "legacy.test")]);
    assert_eq!(session["tls"], "no");
    // Delivered, but the partner's missing STARTTLS is what a TLS report tells it.
    w.proxy.wait_sessions(1);
    let results = w.proxy.results();
    assert_eq!(results.len(), 1, "{results:#?}");
    assert_eq!(results[0]["result"], "starttls-not-supported");
    assert_eq!(results[0]["tls_version"], serde_json::Value::Null);
}

#[test]
fn relax_until_in_the_future_lets_a_verify_failure_through_and_counts_it() {
    let w = World::new(
        "verify-relaxed",
        "moving.test",
        Cert::SelfSigned,
        &entry(
            "moving.test",
            "verify",
            "relax_until = \"2999-01-01T00:00:00Z\"",
        ),
    );
    w.send("bob@moving.test", "relaxed for now");
    let mail = w.mx.wait_delivered(1);
    assert!(mail[0].contains("using TLSv1."), "{}", mail[0]);
    let relaxed = w
        .proxy
        .wait_event("policy_relaxed", &[("domain", "moving.test")]);
    assert_eq!(relaxed["reason"], "certificate_not_verified");
    w.proxy.assert_metric(
        "starttls_proxy_outbound_relaxed_total",
        &[
            ("domain", "moving.test"),
            ("reason", "certificate_not_verified"),
        ],
        1.0,
    );
}

/// A raw client on the proxy's MTA side, with DNS and MX hosts but no Postfix sender.
struct Bench {
    proxy: Proxy,
    _dns: Dns,
    ca: Ca,
    /// Last: removed after every process using it has stopped.
    dir: TempDir,
}

impl Bench {
    fn new(tag: &str, zone: Zone, policy: &str) -> Bench {
        let dir = TempDir::new(tag);
        let ca = Ca::new(dir.path(), "test-ca");
        let dns = Dns::start(zone);
        let proxy = Proxy::start_text(dir.path(), &proxy_config(&dns, &ca, unique_ip(), policy));
        Bench {
            proxy,
            _dns: dns,
            ca,
            dir,
        }
    }

    fn client(&self) -> SmtpClient {
        let (mut c, greeting) = SmtpClient::connected(self.proxy.listener("relay"));
        greeting.assert_text(220, "relay.proxy.test");
        assert_eq!(c.cmd("EHLO legacy.sender.test").code, 250);
        c
    }
}

#[test]
fn response_injection_after_starttls_aborts_and_nothing_leaves() {
    let evil_ip = unique_ip();
    let evil = ScriptedMx::with(evil_ip, Starttls::Inject);
    let b = Bench::new(
        "injection",
        Zone::default().mx_at("evil.test", "mx.evil.test", evil_ip),
        &entry("evil.test", "encrypt", ""),
    );
    let mut c = b.client();
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let reply = c.cmd("RCPT TO:<bob@evil.test>");
    reply.assert(451, "4.7.5");
    assert!(reply.text().contains("response injection"), "{reply:?}");
    assert!(reply.text().contains("evil.test"), "{reply:?}");
    c.cmd("QUIT");
    let seen = evil.received();
    assert!(
        seen.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with("MAIL")
                || l.to_ascii_uppercase().starts_with("RCPT")),
        "envelope leaked to the injecting MX: {seen:?}"
    );
    b.proxy.wait_event("response_injection", &[]);
}

#[test]
fn dns_answers_map_to_the_contract_replies() {
    let dead_ip = unique_ip();
    let b = Bench::new(
        "dns",
        Zone::default()
            .mx("null.test", ".", 0)
            .mx("dangling.test", "gone.dangling.test", 10)
            .mx_at("down.test", "mx.down.test", dead_ip),
        "",
    );
    let mut c = b.client();
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let table = [
        ("nx.test", 550, "5.1.2"),
        ("null.test", 556, "5.1.10"),
        ("dangling.test", 451, "4.4.1"),
        ("down.test", 451, "4.4.1"),
        (TEMPFAIL_DOMAIN, 451, "4.4.3"),
    ];
    for (domain, code, enhanced) in table {
        let reply = c.cmd(&format!("RCPT TO:<bob@{domain}>"));
        reply.assert(code, enhanced);
        assert!(reply.text().contains(domain), "{reply:?}");
    }
    c.cmd("DATA").assert(554, "5.5.1");
    c.cmd("QUIT").assert(221, "2.0.0");
}

#[test]
fn transactions_route_apart_and_reuse_the_mx_session() {
    let dir_ip = unique_ip();
    let other_ip = unique_ip();
    let dead_ip = unique_ip();
    let b = Bench::new(
        "routing",
        Zone::default()
            // a.test and b.test share their MX hosts: the first is down, the second takes it.
            .mx("a.test", "down.shared.test", 10)
            .mx("a.test", "mx.shared.test", 20)
            .mx("b.test", "down.shared.test", 10)
            .mx("b.test", "mx.shared.test", 20)
            .a("down.shared.test", dead_ip)
            .a("mx.shared.test", dir_ip)
            .mx_at("c.test", "mx.c.test", other_ip),
        "",
    );
    let leaf = b.ca.leaf("shared", &["mx.shared.test"]);
    let shared = Postfix::mx(
        b.dir.path(),
        "shared",
        dir_ip,
        &["a.test", "b.test"],
        Some(&leaf),
    );
    let other = Postfix::mx(b.dir.path(), "other", other_ip, &["c.test"], None);
    let mut c = b.client();
    let replies = {
        c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
        c.cmd("RCPT TO:<one@a.test>").assert(250, "2.1.5");
        c.cmd("RCPT TO:<two@b.test>").assert(250, "2.1.5");
        let elsewhere = c.cmd("RCPT TO:<three@c.test>");
        elsewhere.assert(452, "4.5.3");
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(b"Subject: first\r\n\r\nfirst transaction\r\n.\r\n");
        c.reply()
    };
    // The final 250 is the MX's own (Postfix says "queued as").
    replies.assert(250, "2.0.0");
    assert!(replies.text().contains("queued as"), "{replies:?}");
    let second = c.mail("alice@sender.test", &["four@a.test"], "second transaction");
    second.last().unwrap().assert(250, "2.0.0");
    let third = c.mail("alice@sender.test", &["three@c.test"], "third transaction");
    third.last().unwrap().assert(250, "2.0.0");
    c.cmd("QUIT").assert(221, "2.0.0");
    shared.wait_delivered(2);
    other.wait_delivered(1);
    b.proxy.wait_event("session", &[("direction", "outbound")]);
    let sessions = b.proxy.events("mx_session");
    assert_eq!(
        sessions.len(),
        2,
        "one MX session per route, reused across transactions: {sessions:?}"
    );
    assert_eq!(sessions[0]["mx"], format!("mx.shared.test[{dir_ip}]"));
    let unreachable = b
        .proxy
        .wait_event("mx_unreachable", &[("domain", "a.test")]);
    assert!(unreachable["error"].contains(&dead_ip.to_string()));
}

#[test]
fn policy_subcommand_prints_route_and_policy() {
    let mx_ip = unique_ip();
    let b = Bench::new(
        "policy-cli",
        Zone::default()
            .mx("bank.test", "mx2.bank.test", 20)
            .mx_at("bank.test", "mx1.bank.test", mx_ip)
            .a("mx2.bank.test", mx_ip),
        &entry(
            "bank.test",
            "verify",
            "match = [\"mail.bank.test\"]\nrelax_until = \"2999-01-01T00:00:00Z\"",
        ),
    );
    let config = b.proxy.config.clone();
    let config = config.to_str().unwrap();
    let (code, out, err) = run_cli(&["policy", "bank.test", "--config", config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy: verify"), "{out}");
    assert!(out.contains("mail.bank.test"), "{out}");
    assert!(out.contains("relaxed until 2999-01-01"), "{out}");
    assert!(
        out.contains(&format!("1. mx1.bank.test port 25: {mx_ip}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("2. mx2.bank.test port 25: {mx_ip}")),
        "{out}"
    );
    // No route (NXDOMAIN): printed, and exit 1 (issue 15).
    let (code, out, _) = run_cli(&["policy", "elsewhere.test", "--config", config]);
    assert_eq!(code, 1);
    assert!(out.contains("policy: opportunistic"), "{out}");
    assert!(out.contains("550 5.1.2"), "{out}");
    // A relaxation that has already expired: warned about at load, not applied.
    let past = std::fs::read_to_string(config)
        .unwrap()
        .replace("2999-01-01T00:00:00Z", "2020-01-01T00:00:00Z");
    let past_path = b.dir.join("past.toml");
    std::fs::write(&past_path, past).unwrap();
    let (code, out, err) = run_cli(&[
        "policy",
        "bank.test",
        "--config",
        past_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("event=config"), "{err}");
    assert!(err.contains("in the past"), "{err}");
    assert!(out.contains("policy: verify"), "{out}");
    assert!(!out.contains("relaxed until"), "{out}");
    let (code, _, err) = run_cli(&["policy", "x.test", "--config", "/nonexistent.toml"]);
    assert_eq!(code, 2, "{err}");
}

/// Transparent mode needs a network namespace of its own (nft rules, fixed port).
#[test]
fn transparent_mode_intercepts_port_25_in_a_network_namespace() {
    if netns::inside() {
        return transparent_mode_scenario();
    }
    netns::rerun_inside("transparent_mode_intercepts_port_25_in_a_network_namespace");
}

const TRANSPARENT_PORT: u16 = 10026;

/// The namespace half: only ever called with the marker set, inside `unshare --net`.
fn transparent_mode_scenario() {
    netns::loopback_up();
    let dir = TempDir::new("transparent");
    let ca = Ca::new(dir.path(), "test-ca");
    let mx_ip = unique_ip();
    let sender_ip = unique_ip();
    let dns = Dns::start(
        Zone::default()
            .mx_at("bank.test", "mx.bank.test", mx_ip)
            .mx_at("strict.test", "mx.strict.test", mx_ip)
            .mx("v6.test", "mx.v6.test", 10)
            .aaaa("mx.v6.test", std::net::Ipv6Addr::LOCALHOST),
    );
    let leaf = ca.leaf("mx", &["mx.bank.test"]);
    let mx = Postfix::mx(
        dir.path(),
        "mx",
        mx_ip,
        &["bank.test", "strict.test"],
        Some(&leaf),
    );
    let config = format!(
        r#"hostname = "relay.proxy.test"
[resolver]
nameservers = ["{dns}"]
[[outbound]]
name = "intercept"
listen = "127.0.0.1:{TRANSPARENT_PORT}"
mode = "transparent"
[[outbound]]
name = "relay"
listen = "127.0.0.1:0"
[outbound_policy]
default = "opportunistic"
trust_anchors = "{ca}"
{bank}{strict}"#,
        dns = dns.addr,
        ca = ca.path.display(),
        bank = entry("bank.test", "verify", ""),
        strict = entry("strict.test", "verify", ""),
    );
    let proxy = Proxy::start_text(dir.path(), &config);
    // The legacy MTA's port-25 traffic (from its own address) goes to the proxy; the proxy's
    // own connections (from 127.0.0.1) are left alone.
    netns::redirect_port_25(sender_ip, TRANSPARENT_PORT, dir.path());

    // A raw MTA connection to the MX is intercepted: STARTTLS is gone from the EHLO reply, the
    // strict domain (certificate names another host) is refused before its RCPT leaves.
    let mut c = netns::connect_from(sender_ip, SocketAddr::from((mx_ip, 25)));
    let ehlo = c.cmd("EHLO legacy.sender.test");
    assert_eq!(ehlo.code, 250, "{ehlo:?}");
    assert!(!ehlo.text().contains("STARTTLS"), "{ehlo:?}");
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let refused = c.cmd("RCPT TO:<bob@strict.test>");
    refused.assert(451, "4.7.5");
    assert!(refused.text().contains("strict.test"), "{refused:?}");
    c.cmd("RCPT TO:<bob@bank.test>").assert(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: intercepted\r\n\r\nthrough the transparent proxy\r\n.\r\n");
    c.reply().assert(250, "2.0.0");
    c.cmd("QUIT");
    let mail = mx.wait_delivered(1);
    assert!(mail[0].contains("through the transparent proxy"));
    assert!(mail[0].contains("using TLSv1."), "{}", mail[0]);
    assert!(
        !mx.maillog().contains("bob@strict.test"),
        "{}",
        mx.maillog()
    );

    // A real Postfix sending straight to the MX is intercepted the same way.
    let sender = Postfix::start(
        dir.path(),
        "sender",
        Role::Sender {
            relayhost: SocketAddr::from((mx_ip, 25)),
            level: "none",
            ca: None,
            bind: Some(sender_ip),
        },
    );
    sender.submit("alice@sender.test", "carol@bank.test", "from postfix");
    let mail = mx.wait_delivered(2);
    assert!(mail
        .iter()
        .any(|m| m.contains("from postfix") && m.contains("using TLSv1.")));
    sender.submit("alice@sender.test", "dave@strict.test", "never in clear");
    let queued = sender.wait_deferred("4.7.5");
    assert!(queued.contains("strict.test"), "{queued}");

    // Relay mode reaches an MX that only has an IPv6 address (this namespace owns ::1).
    let v6 = ScriptedMx::on(std::net::Ipv6Addr::LOCALHOST.into(), Starttls::Refuse);
    let (mut r, greeting) = SmtpClient::connected(proxy.listener("relay"));
    greeting.assert_text(220, "relay.proxy.test");
    r.cmd("EHLO legacy.sender.test");
    let replies = r.mail("alice@sender.test", &["erin@v6.test"], "over IPv6");
    replies.last().unwrap().assert(250, "2.0.0");
    r.cmd("QUIT");
    assert!(mx::has_envelope(&v6.received()), "{:?}", v6.received());
    proxy.wait_event(
        "mx_session",
        &[("domain", "v6.test"), ("mx", "mx.v6.test[::1]")],
    );

    // Loop guard: a connection straight to the proxy has the proxy as original destination.
    let (mut direct, greeting) =
        SmtpClient::connected(SocketAddr::from(([127, 0, 0, 1], TRANSPARENT_PORT)));
    greeting.assert(554, "5.4.6");
    let _ = direct.try_reply();
    proxy.wait_event("loop_guard", &[]);
    drop(sender);
}

#[test]
fn starttls_refused_is_4_7_4_for_encrypt_and_plaintext_for_opportunistic() {
    let ip = unique_ip();
    let mx = ScriptedMx::with(ip, Starttls::Refuse);
    let b = Bench::new(
        "starttls-refused",
        Zone::default()
            .mx("enc.test", "mx.scripted.test", 10)
            .mx_at("opp.test", "mx.scripted.test", ip),
        &entry("enc.test", "encrypt", ""),
    );
    let mut c = b.client();
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let refused = c.cmd("RCPT TO:<bob@enc.test>");
    refused.assert(451, "4.7.4");
    assert!(
        refused
            .text()
            .contains("refused to start TLS: 454 4.7.0 TLS not available"),
        "{refused:?}"
    );
    c.cmd("RSET").assert(250, "2.0.0");
    let replies = c.mail(
        "alice@sender.test",
        &["carol@opp.test"],
        "plaintext is fine",
    );
    let last = replies.last().unwrap();
    last.assert(250, "2.0.0");
    assert!(last.text().contains("queued by scripted"), "{replies:?}");
    c.cmd("QUIT");
    let sessions = mx.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    assert!(!mx::has_envelope(&sessions[0]), "{sessions:?}");
    assert!(mx::has_envelope(&sessions[1]), "{sessions:?}");
}

#[test]
fn broken_handshake_falls_back_to_a_fresh_plaintext_connection_only_when_opportunistic() {
    for behaviour in [Starttls::Garbage, Starttls::Inject] {
        let ip = unique_ip();
        let mx = ScriptedMx::with(ip, behaviour);
        let b = Bench::new(
            "broken-handshake",
            Zone::default()
                .mx("enc.test", "mx.scripted.test", 10)
                .mx_at("opp.test", "mx.scripted.test", ip),
            &entry("enc.test", "encrypt", ""),
        );
        let mut c = b.client();
        c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
        c.cmd("RCPT TO:<bob@enc.test>").assert(451, "4.7.5");
        c.cmd("RSET").assert(250, "2.0.0");
        let replies = c.mail("alice@sender.test", &["carol@opp.test"], "fallback");
        replies.last().unwrap().assert(250, "2.0.0");
        c.cmd("QUIT");
        let sessions = mx.sessions();
        // enc.test: one aborted attempt; opp.test: aborted attempt, then a fresh connection
        // that never tries STARTTLS.
        assert_eq!(sessions.len(), 3, "{behaviour:?}: {sessions:?}");
        assert!(!mx::has_envelope(&sessions[0]), "{sessions:?}");
        assert!(!mx::has_envelope(&sessions[1]), "{sessions:?}");
        assert!(mx::has_envelope(&sessions[2]), "{sessions:?}");
        assert!(
            !sessions[2]
                .iter()
                .any(|l| l.eq_ignore_ascii_case("STARTTLS")),
            "{sessions:?}"
        );
        b.proxy
            .wait_event("tls_fallback_plaintext", &[("domain", "opp.test")]);
    }
}

#[test]
fn next_hop_by_name_gets_sni_and_verification_for_that_name() {
    let dir = TempDir::new("next-hop");
    let ca = Ca::new(dir.path(), "test-ca");
    let hop_ip = unique_ip();
    let dns = Dns::start(Zone::default().a("smtp.hop.test", hop_ip));
    let leaf = ca.leaf("hop", &["smtp.hop.test"]);
    let hop = Postfix::mx(
        dir.path(),
        "hop",
        hop_ip,
        &["anywhere.example"],
        Some(&leaf),
    );
    let config = proxy_config(&dns, &ca, unique_ip(), "")
        .replace("mx_port = 25", "next_hop = \"smtp.hop.test:25\"")
        + &entry("anywhere.example", "verify", "");
    let proxy = Proxy::start_text(dir.path(), &config);
    let sender = Postfix::start(
        dir.path(),
        "sender",
        Role::relay_to(proxy.listener("relay")),
    );
    // anywhere.example has no DNS at all: the next hop does not need it.
    sender.submit(
        "alice@sender.test",
        "bob@anywhere.example",
        "via the smarthost",
    );
    let mail = hop.wait_delivered(1);
    assert!(mail[0].contains("using TLSv1."), "{}", mail[0]);
    let end = proxy.wait_event(
        "session",
        &[("direction", "outbound"), ("domain", "anywhere.example")],
    );
    assert_eq!(end["sni"], "smtp.hop.test");
    assert_eq!(end["verdict"], "verified");
    drop(sender);
    drop(proxy);
    drop(hop);
}

#[test]
fn postfix_sends_recipients_of_other_routes_in_another_transaction() {
    let dir = TempDir::new("postfix-452");
    let ca = Ca::new(dir.path(), "test-ca");
    let a_ip = unique_ip();
    let c_ip = unique_ip();
    let dns = Dns::start(Zone::default().mx_at("a.test", "mx.a.test", a_ip).mx_at(
        "c.test",
        "mx.c.test",
        c_ip,
    ));
    let a_leaf = ca.leaf("a", &["mx.a.test"]);
    let a = Postfix::mx(dir.path(), "a", a_ip, &["a.test"], Some(&a_leaf));
    let c = Postfix::mx(dir.path(), "c", c_ip, &["c.test"], None);
    let proxy = Proxy::start_text(dir.path(), &proxy_config(&dns, &ca, unique_ip(), ""));
    let sender = Postfix::start(
        dir.path(),
        "sender",
        Role::relay_to(proxy.listener("relay")),
    );
    let (mut s, _) = SmtpClient::connected(sender.addr);
    s.cmd("EHLO submitter.test");
    let replies = s.mail(
        "alice@sender.test",
        &["one@a.test", "two@c.test"],
        "two routes",
    );
    replies.last().unwrap().assert(250, "2.0.0");
    s.cmd("QUIT");
    a.wait_delivered(1);
    // c.test got 452 4.5.3 in the first transaction; Postfix sends it in a new one when it
    // retries. Flushing asks for that retry now rather than at a queue run a loaded machine may
    // delay for a minute (a flush before the deferral is recorded is simply a no-op).
    let mut polls = 0u32;
    eventually("c.test delivered in a second transaction", || {
        if polls.is_multiple_of(40) {
            sender.flush(); // about once a second
        }
        polls += 1;
        (!c.delivered().is_empty()).then_some(())
    });
    sender.wait_queue_empty();
    drop(sender);
    drop(proxy);
    drop(c);
    drop(a);
}

#[test]
fn mx_pointing_back_at_the_proxy_is_a_loop() {
    let proxy_ip = unique_ip();
    let dir = TempDir::new("loop");
    let ca = Ca::new(dir.path(), "test-ca");
    let dns = Dns::start(Zone::default().mx_at("loop.test", "mx.loop.test", proxy_ip));
    // The relay listener on port 25 of the address the MX record names.
    let config = proxy_config(&dns, &ca, proxy_ip, "").replace(
        &format!("listen = \"{proxy_ip}:0\"\nmode"),
        &format!("listen = \"{proxy_ip}:25\"\nmode"),
    );
    let proxy = Proxy::start_text(dir.path(), &config);
    let (mut c, greeting) = SmtpClient::connected(proxy.listener("relay"));
    greeting.assert_text(220, "relay.proxy.test");
    c.cmd("EHLO legacy.sender.test");
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let reply = c.cmd("RCPT TO:<bob@loop.test>");
    reply.assert(554, "5.4.6");
    assert!(reply.text().contains("loops back to myself"), "{reply:?}");
    c.cmd("QUIT");
    proxy.wait_event("mail_loop", &[("domain", "loop.test")]);
}

#[test]
fn sighup_applies_a_stricter_policy_to_new_transactions() {
    let ip = unique_ip();
    let mx = ScriptedMx::with(ip, Starttls::Refuse);
    let b = Bench::new(
        "reload",
        Zone::default().mx_at("partner.test", "mx.partner.test", ip),
        "",
    );
    let mut c = b.client();
    let replies = c.mail("alice@sender.test", &["bob@partner.test"], "before");
    replies.last().unwrap().assert(250, "2.0.0");
    c.cmd("QUIT");

    let path = b.proxy.config.clone();
    let text = std::fs::read_to_string(&path).unwrap() + &entry("partner.test", "encrypt", "");
    std::fs::write(&path, text).unwrap();
    b.proxy.signal("HUP");
    b.proxy.wait_event("reloaded", &[]);
    // Change control (issue 12, point 5): the reload says what it changed.
    b.proxy.wait_event(
        "policy_changed",
        &[("domain", "partner.test"), ("from", "-"), ("to", "encrypt")],
    );

    let mut c = b.client();
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    c.cmd("RCPT TO:<bob@partner.test>").assert(451, "4.7.4");
    c.cmd("QUIT");
    let sessions = mx.sessions();
    assert!(mx::has_envelope(&sessions[0]), "{sessions:?}");
    assert!(!mx::has_envelope(sessions.last().unwrap()), "{sessions:?}");
}

#[test]
fn shutdown_tells_an_idle_mta_421_and_check_config_summarises_outbound() {
    let b = Bench::new("drain", Zone::default(), &entry("bank.test", "verify", ""));
    let path = b.proxy.config.clone();
    let (code, out, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("outbound relay (relay)"), "{out}");
    assert!(
        out.contains("outbound policy: default opportunistic"),
        "{out}"
    );

    let mut c = b.client();
    b.proxy.signal("TERM");
    c.reply().assert(421, "4.3.2");
}

#[test]
fn per_domain_trust_anchors_verify_a_partner_private_ca() {
    let mx_ip = unique_ip();
    let b = Bench::new(
        "private-ca",
        Zone::default().mx("bank.test", "mx.bank.test", 10).mx_at(
            "other-bank.test",
            "mx.bank.test",
            mx_ip,
        ),
        "",
    );
    // The partner's own CA, known only to its domain entry.
    let private = Ca::new(b.dir.path(), "bank-private-ca");
    let leaf = private.leaf("mx", &["mx.bank.test"]);
    let mx = Postfix::mx(
        b.dir.path(),
        "mx",
        mx_ip,
        &["bank.test", "other-bank.test"],
        Some(&leaf),
    );
    let path = b.proxy.config.clone();
    let text = std::fs::read_to_string(&path).unwrap()
        + &entry(
            "bank.test",
            "verify",
            &format!("trust_anchors = \"{}\"", private.path.display()),
        )
        + &entry("other-bank.test", "verify", "");
    std::fs::write(&path, text).unwrap();
    b.proxy.signal("HUP");
    b.proxy.wait_event("reloaded", &[]);

    let mut c = b.client();
    let ok = c.mail("alice@sender.test", &["bob@bank.test"], "private CA");
    ok.last().unwrap().assert(250, "2.0.0");
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let refused = c.cmd("RCPT TO:<bob@other-bank.test>");
    refused.assert(451, "4.7.5");
    assert!(
        refused.text().contains("not signed by a trusted CA"),
        "{refused:?}"
    );
    c.cmd("QUIT");
    let mail = mx.wait_delivered(1);
    assert!(mail[0].contains("private CA"));
}

/// Issue 15: however the legacy MTA spells RCPT, the domain's policy applies; a line that looks
/// like MAIL or RCPT but cannot be read is refused, never replayed at the MX.
#[test]
fn rcpt_spellings_in_the_relay_dialogue_all_meet_the_policy() {
    let ip = unique_ip();
    let mx = ScriptedMx::with(ip, Starttls::Refuse);
    let b = Bench::new(
        "relay-spellings",
        Zone::default().mx_at("enc.test", "mx.scripted.test", ip),
        &entry("enc.test", "encrypt", ""),
    );
    let mut c = b.client();
    for mail in [
        "MAIL\tFROM:<alice@sender.test>",
        " mail  from: <alice@sender.test>",
    ] {
        c.cmd(mail).assert(250, "2.1.0");
        for rcpt in [
            "RCPT TO:<bob@enc.test>",
            "RCPT\tTO:<bob@enc.test>",
            "rcpt  to: <bob@ENC.test.>",
            "RCPT TO:<bob@(comment)enc.test>",
            "RCPT TO:<bob @ enc .test>",
            "RCPT TO:bob@enc.test",
        ] {
            c.cmd(rcpt).assert(451, "4.7.4");
        }
        for unreadable in [
            "RCPT TO :<bob@enc.test>",
            "RCPTTO:<bob@enc.test>",
            "RCPT TO:<bob@enc.test",
        ] {
            c.cmd(unreadable).assert(501, "5.5.4");
        }
        c.cmd("RSET").assert(250, "2.0.0");
    }
    c.cmd("MAIL FROM :<alice@sender.test>").assert(501, "5.5.4");
    c.cmd("QUIT");
    let sessions = mx.sessions();
    assert!(
        sessions.iter().all(|s| !mx::has_envelope(s)),
        "{sessions:?}"
    );
}

/// Issue 15: the legacy MTA's over-long line is answered at once in the relay dialogue too.
#[test]
fn overlong_line_from_the_mta_is_answered_before_its_end_arrives() {
    let b = Bench::new("relay-overlong", Zone::default(), "");
    let mut c = b.client();
    c.send(format!("MAIL FROM:<{}@sender.test>", "a".repeat(3000)).as_bytes());
    c.reply().assert(500, "5.5.2");
    c.send(b"@rest.of.the.line>\r\n");
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    c.cmd("QUIT").assert(221, "2.0.0");
}

/// Issue 15, item 5: an MX answering STARTTLS with `421` or `221` is closing the channel
/// (RFC 5321 §3.8): nothing more is sent on it; opportunistic delivery takes a fresh plaintext
/// connection, enforcement defers with 4.7.4 quoting the reply.
#[test]
fn starttls_answered_421_or_221_ends_the_attempt_fresh_plaintext_or_4_7_4() {
    for closing in ["421 4.3.2 Service shutting down", "221 2.0.0 Bye"] {
        let ip = unique_ip();
        let mx = ScriptedMx::scripted(ip, Script::starttls(Starttls::Closing(closing)));
        let b = Bench::new(
            "starttls-closing",
            Zone::default()
                .mx("enc.test", "mx.scripted.test", 10)
                .mx_at("opp.test", "mx.scripted.test", ip),
            &entry("enc.test", "encrypt", ""),
        );
        let mut c = b.client();
        c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
        let refused = c.cmd("RCPT TO:<bob@enc.test>");
        refused.assert(451, "4.7.4");
        assert!(
            refused.text().contains(&format!(
                "mx.scripted.test[{ip}] refused to start TLS: {closing}"
            )),
            "{refused:?}"
        );
        c.cmd("RSET").assert(250, "2.0.0");
        let replies = c.mail("alice@sender.test", &["carol@opp.test"], "after a 421");
        let last = replies.last().unwrap();
        last.assert(250, "2.0.0");
        assert!(last.text().contains("queued by scripted"), "{replies:?}");
        c.cmd("QUIT").assert(221, "2.0.0");
        drop(c);
        // The session line is written after the MX session is closed: all recorded by then.
        b.proxy.wait_sessions(1);
        let sessions = mx.sessions();
        let ehlo = "EHLO relay.proxy.test".to_string();
        let upgrade = vec![ehlo.clone(), "STARTTLS".to_string()];
        assert_eq!(sessions.len(), 3, "{closing}: {sessions:?}");
        // Nothing at all (no MAIL, not even QUIT) after the closing reply.
        assert_eq!(sessions[0], upgrade, "{closing}");
        assert_eq!(sessions[1], upgrade, "{closing}");
        assert!(mx::has_envelope(&sessions[2]), "{sessions:?}");
        assert!(
            !sessions[2]
                .iter()
                .any(|l| l.eq_ignore_ascii_case("STARTTLS")),
            "{sessions:?}"
        );
        b.proxy
            .wait_event("tls_fallback_plaintext", &[("domain", "opp.test")]);
        b.proxy.wait_event("starttls_closing", &[]);
    }
}

/// Issue 15, item 5: an MX that rejects the greeting or EHLO is quoted in the deferral (not
/// "no MX host reachable"), is sent QUIT, and the session log names it.
#[test]
fn greeting_or_ehlo_rejection_is_quoted_in_the_451_and_answered_with_quit() {
    let greet_ip = unique_ip();
    let ehlo_ip = unique_ip();
    let greet = ScriptedMx::scripted(
        greet_ip,
        Script {
            greeting: "554 5.7.1 go away",
            ..Script::starttls(Starttls::Refuse)
        },
    );
    let ehlo = ScriptedMx::scripted(
        ehlo_ip,
        Script {
            ehlo: Some("550 5.7.1 no thanks"),
            ..Script::starttls(Starttls::Refuse)
        },
    );
    let b = Bench::new(
        "mx-rejects",
        Zone::default()
            .mx_at("greet.test", "mx.greet.test", greet_ip)
            .mx_at("ehlo.test", "mx.ehlo.test", ehlo_ip),
        "",
    );
    let mut c = b.client();
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    let r = c.cmd("RCPT TO:<bob@greet.test>");
    r.assert(451, "4.4.1");
    assert_eq!(
        r.text(),
        format!("4.4.1 mx.greet.test[{greet_ip}]:25 said: 554 5.7.1 go away (greeting)"),
        "{r:?}"
    );
    let r = c.cmd("RCPT TO:<bob@ehlo.test>");
    r.assert(451, "4.4.1");
    assert_eq!(
        r.text(),
        format!("4.4.1 mx.ehlo.test[{ehlo_ip}]:25 said: 550 5.7.1 no thanks (in reply to EHLO)"),
        "{r:?}"
    );
    c.cmd("QUIT").assert(221, "2.0.0");
    drop(c);
    let session = b.proxy.wait_sessions(1).swap_remove(0);
    assert_eq!(session["outcome"], "mx_rejected", "{session:?}");
    assert_eq!(session["backend"], format!("{ehlo_ip}:25"), "{session:?}");
    assert!(
        session["detail"].contains("said: 550 5.7.1 no thanks"),
        "{session:?}"
    );
    assert_eq!(greet.sessions(), vec![vec!["QUIT".to_string()]]);
    assert_eq!(
        ehlo.sessions(),
        vec![vec![
            "EHLO relay.proxy.test".to_string(),
            "QUIT".to_string()
        ]]
    );
    let logged = b
        .proxy
        .wait_event("mx_unreachable", &[("domain", "greet.test")]);
    assert_eq!(logged["reason"], "mx_rejected", "{logged:?}");
}

/// Issue 15, item 5, with Postfix as the legacy MTA: the deferral it keeps in its queue says
/// what the remote answered.
#[test]
fn postfix_queue_shows_what_a_rejecting_mx_said() {
    let ip = unique_ip();
    let _mx = ScriptedMx::scripted(
        ip,
        Script {
            greeting: "554 5.7.1 go away",
            ..Script::starttls(Starttls::Refuse)
        },
    );
    let b = Bench::new(
        "mx-rejects-postfix",
        Zone::default().mx_at("greet.test", "mx.greet.test", ip),
        "",
    );
    let sender = Postfix::start(
        b.dir.path(),
        "sender",
        Role::relay_to(b.proxy.listener("relay")),
    );
    sender.submit("alice@sender.test", "bob@greet.test", "to a rejecting MX");
    let queued = sender.wait_deferred("4.4.1");
    assert!(
        queued.contains(&format!("mx.greet.test[{ip}]:25 said: 554 5.7.1 go away")),
        "{queued}"
    );
}

/// Issue 15, item 4: a session refused by policy after a handshake logs the MX it was about
/// and the TLS facts and verdict of that attempt.
#[test]
fn refused_session_logs_the_mx_and_the_tls_verdict_of_the_attempt() {
    let w = World::new(
        "refused-log",
        "bank.test",
        Cert::WrongName,
        &entry("bank.test", "verify", ""),
    );
    w.send_deferred("bob@bank.test", "wrong name", "4.7.5");
    let session = w
        .proxy
        .wait_sessions(1)
        .into_iter()
        .find(|s| s["outcome"] == "certificate_not_verified")
        .unwrap_or_else(|| panic!("no refused session:\n{}", w.proxy.log_text()));
    assert_eq!(session["backend"], format!("{}", w.mx.addr), "{session:?}");
    assert_eq!(session["tls"], "yes", "{session:?}");
    assert_eq!(session["verdict"], "name_mismatch", "{session:?}");
    assert!(session["version"].starts_with("TLSv1."), "{session:?}");
    assert_eq!(session["sni"], "mx.bank.test", "{session:?}");
    assert_eq!(session["domain"], "bank.test", "{session:?}");
    // Logged, but TLS was not in place when the session ended: no TLS session is counted.
    w.proxy.assert_metric(
        "starttls_proxy_sessions_total",
        &[("direction", "outbound"), ("tls", "yes")],
        0.0,
    );
}

/// Issue 15, item 4: `policy DOMAIN` exits 1 when the domain has no route, 0 when it has one.
#[test]
fn policy_subcommand_exits_1_without_a_route() {
    let mx_ip = unique_ip();
    let b = Bench::new(
        "policy-exit",
        Zone::default()
            .mx_at("ok.test", "mx.ok.test", mx_ip)
            .mx("null.test", ".", 0),
        "",
    );
    let config = b.proxy.config.to_str().unwrap().to_string();
    let (code, out, err) = run_cli(&["policy", "ok.test", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    for (domain, reply) in [
        ("nx.test", "550 5.1.2"),
        ("null.test", "556 5.1.10"),
        (TEMPFAIL_DOMAIN, "451 4.4.3"),
    ] {
        let (code, out, err) = run_cli(&["policy", domain, "--config", &config]);
        assert_eq!(code, 1, "{domain}: {out}{err}");
        assert!(out.contains(&format!("no route: {reply}")), "{out}");
        assert!(
            err.contains(&format!(
                "no route for {domain} via outbound relay: {reply}"
            )),
            "{err}"
        );
    }
}
