//! Issue 11, point 2: DANE for SMTP in relay mode against real peers. Knot serves the signed
//! catalogue of DANE cases (tests/common/dnssec.rs), unbound is the resolver the proxy asks
//! (routing and validation alike), and one Postfix MX with a test-CA certificate naming every
//! `mx.<domain>` host receives what the proxy delivers.

mod common;

use common::dnssec::{self, Delegation, SignedZone};
use common::netns;
use common::proxy::run_cli;
use common::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Every MX host of the catalogue, plus the hosts the extra domains point at.
const MX_HOSTS: [&str; 9] = [
    "mx.dane-ee.test",
    "mx.dane-ta.test",
    "mx.dane-bad.test",
    "mx.dane-bogus.test",
    "mx.dane-none.test",
    "mx.dane-child.test",
    "mx.insecure.test",
    "mx.expired.test",
    "mx.wrongds.test",
];

struct World {
    dns: dnssec::Dnssec,
    mx: Postfix,
    ca: Ca,
    dir: TempDir,
}

/// The zone, the MX (chain: leaf then CA, so DANE-TA has its anchor in the chain) and a proxy
/// configuration text for `default` with `extra` appended.
fn world(tag: &str, domains: &[&str]) -> World {
    let dir = TempDir::new(tag);
    let ca = Ca::new(dir.path(), "test-ca");
    let leaf = ca.leaf("mx", &MX_HOSTS);
    let chain_path = dir.join("mx-chain.crt");
    std::fs::write(&chain_path, format!("{}{}", leaf.cert_pem, ca.cert_pem)).unwrap();
    let chain = Leaf {
        cert: chain_path,
        ..leaf.clone()
    };
    let mx_ip = unique_ip();
    let dns = zone(mx_ip, &leaf.cert_pem, &ca.cert_pem).start();
    let mx = Postfix::mx(dir.path(), "mx", mx_ip, domains, Some(&chain));
    World { dns, mx, ca, dir }
}

/// The catalogue plus domains whose MX is a catalogue host (for `dane-only` entries) and one
/// with a second, broken MX host (bogus TLSA) before a good one.
fn zone(mx_ip: Ipv4Addr, leaf_pem: &str, ca_pem: &str) -> SignedZone {
    dnssec::dane_catalogue(mx_ip, leaf_pem, ca_pem, 25)
        .record("only-ee.test", "MX", "10 mx.dane-ee.test.")
        .record("only-none.test", "MX", "10 mx.dane-none.test.")
        .record("mixed.test", "MX", "10 mx.dane-bogus.test.")
        .record("mixed.test", "MX", "20 mx.dane-ee.test.")
        .child(
            SignedZone::new("only-insecure.test").mx_at(
                "only-insecure.test",
                "mx.insecure.test",
                mx_ip,
            ),
            Delegation::Insecure,
        )
}

fn proxy_config(w: &World, anchor: &Path, extra: &str) -> String {
    format!(
        r#"hostname = "relay.proxy.test"
state_directory = "{state}"
[admin]
listen = "{ip}:0"
[resolver]
nameservers = ["{dns}"]
dnssec_trust_anchor = "{anchor}"
[[outbound]]
name = "relay"
listen = "{ip}:0"
[outbound_policy]
trust_anchors = "{ca}"
mta_sts = false
{extra}"#,
        state = w.dir.join("state").display(),
        ip = unique_ip(),
        dns = w.dns.resolver,
        anchor = anchor.display(),
        ca = w.ca.path.display(),
    )
}

fn send(proxy: &Proxy, to: &str) -> Vec<Reply> {
    let (mut c, _) = SmtpClient::greeted(proxy.listener("relay"));
    c.cmd("EHLO legacy.test");
    let replies = c.mail("alice@sender.test", &[to], &format!("to {to}"));
    c.cmd("QUIT");
    replies
}

fn wait_available(proxy: &Proxy, want: f64) {
    eventually("starttls_proxy_dnssec_available to be set", || {
        (metric(&proxy.metrics(), "starttls_proxy_dnssec_available", &[]) == Some(want))
            .then_some(())
    });
}

/// The session log line for recipient domain `domain` (written just after the QUIT).
fn session_for(proxy: &Proxy, domain: &str) -> HashMap<String, String> {
    eventually(&format!("the session log line for {domain}"), || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s.get("domain").map(String::as_str) == Some(domain))
    })
}

fn results_for(proxy: &Proxy, domain: &str) -> Vec<serde_json::Value> {
    proxy
        .results()
        .into_iter()
        .filter(|r| r["domain"] == domain)
        .collect()
}

#[test]
fn dane_authenticates_by_tlsa_defers_on_bogus_and_falls_back_without_records() {
    let domains = [
        "dane-ee.test",
        "dane-ta.test",
        "dane-bad.test",
        "dane-bogus.test",
        "dane-none.test",
        "dane-child.test",
        "expired.test",
        "only-ee.test",
        "only-none.test",
        "only-insecure.test",
        "mixed.test",
    ];
    let w = world("dane-relay", &domains);
    // `dane` is the default: not written here.
    let config = proxy_config(
        &w,
        &w.dns.anchor,
        r#"
[[outbound_policy.domain]]
domain = "only-ee.test"
mode = "dane-only"
[[outbound_policy.domain]]
domain = "only-none.test"
mode = "dane-only"
[[outbound_policy.domain]]
domain = "only-insecure.test"
mode = "dane-only"
"#,
    );
    let proxy = Proxy::start_text(w.dir.path(), &config);
    wait_available(&proxy, 1.0);

    let delivered = [
        "dane-ee.test",
        "dane-ta.test",
        "dane-child.test",
        "dane-none.test",
        "only-ee.test",
        "mixed.test",
    ];
    for domain in delivered {
        let r = send(&proxy, &format!("bob@{domain}"));
        let last = r.last().unwrap();
        assert_eq!(last.code, 250, "{domain}: {r:?}\n{}", proxy.log_text());
    }
    let refused = [
        // The certificate matches no TLSA record: never delivered unauthenticated.
        ("dane-bad.test", "certificate_not_verified"),
        // Bogus TLSA: the only MX host is not used.
        ("dane-bogus.test", "dnssec_bogus"),
        // Bogus MX RRset (a child signed for 2020): the domain is deferred.
        ("expired.test", "dnssec_bogus"),
        ("only-none.test", "dane_required"),
        ("only-insecure.test", "dane_required"),
    ];
    for (domain, reason) in refused {
        let r = send(&proxy, &format!("bob@{domain}"));
        r[1].assert(451, "4.7.5");
        assert!(
            r[1].text().contains(domain),
            "{domain}: the reply names the domain: {r:?}"
        );
        let s = session_for(&proxy, domain);
        assert_eq!(s["outcome"], reason, "{domain}: {s:?}");
    }
    let got = w.mx.wait_delivered(delivered.len());
    for domain in refused.map(|r| r.0) {
        assert!(
            !got.iter().any(|m| m.contains(&format!("bob@{domain}"))),
            "{domain} must not be delivered: {got:?}"
        );
    }

    // Log fields: where the policy came from, the mode, what DANE found.
    let ee = session_for(&proxy, "dane-ee.test");
    assert_eq!(
        (
            ee["policy"].as_str(),
            ee["mode"].as_str(),
            ee["tlsa"].as_str(),
            ee["verdict"].as_str()
        ),
        ("dane", "verify", "usable", "verified"),
        "{ee:?}"
    );
    let none = session_for(&proxy, "dane-none.test");
    assert_eq!(
        (none["policy"].as_str(), none["mode"].as_str()),
        ("none", "dane"),
        "{none:?}"
    );
    assert!(!none.contains_key("tlsa"), "{none:?}");

    // Session results: policy type tlsa with the records, the RFC 8460 result types.
    let ee = results_for(&proxy, "dane-ee.test");
    assert_eq!(ee.len(), 1, "{ee:?}");
    assert_eq!(
        (&ee[0]["policy_type"], &ee[0]["result"], &ee[0]["verified"]),
        (&"tlsa".into(), &"success".into(), &true.into())
    );
    let strings = ee[0]["policy_strings"].as_array().unwrap();
    assert!(
        strings
            .iter()
            .any(|s| s.as_str().unwrap().starts_with("3 1 1 ")),
        "{strings:?}"
    );
    let bad = results_for(&proxy, "dane-bad.test");
    assert_eq!(bad[0]["result"], "tlsa-invalid", "{bad:?}");
    let bogus = results_for(&proxy, "dane-bogus.test");
    assert_eq!(bogus[0]["result"], "dnssec-invalid", "{bogus:?}");
    let only = results_for(&proxy, "only-none.test");
    assert_eq!(only[0]["result"], "dane-required", "{only:?}");
    // mixed.test: the bogus host is skipped (and reported), the next one authenticates.
    let mixed = results_for(&proxy, "mixed.test");
    let outcomes: Vec<(&str, &str)> = mixed
        .iter()
        .map(|r| {
            (
                r["mx_host"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("mx.dane-bogus.test", "dnssec-invalid"),
            ("mx.dane-ee.test", "success")
        ],
        "{mixed:?}"
    );

    // `policy DOMAIN` shows the same discovery, without connecting anywhere.
    let config_path = proxy.config.to_str().unwrap().to_string();
    let policy = |domain: &str| run_cli(&["policy", domain, "--config", &config_path]);
    let (code, out, err) = policy("dane-ee.test");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("policy: dane (from outbound_policy.default)"),
        "{out}"
    );
    assert!(out.contains("DNSSEC: validation available"), "{out}");
    assert!(
        out.contains("DANE: MX records DNSSEC-signed (secure)"),
        "{out}"
    );
    assert!(out.contains("DANE: secure TLSA 3 1 1 "), "{out}");
    let (code, out, err) = policy("mixed.test");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("not used: mx.dane-bogus.test"), "{out}");
    let (code, out, _) = policy("dane-none.test");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("no TLSA, no MTA-STS policy: opportunistic"),
        "{out}"
    );
    for domain in ["dane-bogus.test", "expired.test", "only-none.test"] {
        let (code, out, err) = policy(domain);
        assert_eq!(code, 1, "{domain}: {out}{err}");
        assert!(out.contains("no route: 451 4.7.5"), "{domain}: {out}");
        assert!(err.contains(domain), "{domain}: {err}");
    }

    let m = proxy.metrics();
    assert_eq!(
        metric_sum(
            &m,
            "starttls_proxy_outbound_domain_sessions_total",
            &[("policy", "dane"), ("verified", "yes")]
        ),
        5.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "starttls_proxy_dnssec_lookups_total",
            &[("result", "bogus")]
        ) >= 2.0,
        "{m}"
    );
    assert!(
        metric_sum(
            &m,
            "starttls_proxy_dnssec_lookups_total",
            &[("result", "secure")]
        ) > 0.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "starttls_proxy_policy_rejections_total",
            &[("reason", "dane_required")]
        ),
        2.0,
        "{m}"
    );
}

/// While the trust anchor's zone does not validate, DANE is unavailable: the gauge is 0, a
/// warning is logged, `dane` domains go on as opportunistic and `dane-only` domains wait.
#[test]
fn without_working_validation_dane_domains_go_opportunistic_and_dane_only_waits() {
    let w = world("dane-unavailable", &["dane-ee.test", "only-ee.test"]);
    // The zone's own anchor with one character of the key changed: parses, never validates.
    let anchor = std::fs::read_to_string(&w.dns.anchor).unwrap();
    let mut fields: Vec<String> = anchor.split_whitespace().map(str::to_string).collect();
    let key = fields.last_mut().unwrap();
    let flipped = if key.starts_with('A') { "B" } else { "A" };
    key.replace_range(0..1, flipped);
    let wrong = w.dir.join("wrong-anchor.key");
    std::fs::write(&wrong, fields.join(" ") + "\n").unwrap();
    let config = proxy_config(
        &w,
        &wrong,
        r#"
[[outbound_policy.domain]]
domain = "only-ee.test"
mode = "dane-only"
"#,
    );
    let proxy = Proxy::start_text(w.dir.path(), &config);
    wait_available(&proxy, 0.0);
    proxy.wait_event("dnssec_unavailable", &[]);

    send(&proxy, "bob@dane-ee.test")
        .last()
        .unwrap()
        .assert(250, "2.0.0");
    let r = send(&proxy, "bob@only-ee.test");
    r[1].assert(451, "4.7.5");
    assert!(
        r[1].text().contains("DNSSEC validation is unavailable"),
        "{r:?}"
    );
    w.mx.wait_delivered(1);
    let ee = session_for(&proxy, "dane-ee.test");
    assert_eq!(
        (ee["policy"].as_str(), ee["mode"].as_str()),
        ("none", "dane"),
        "{ee:?}"
    );
}

const TRANSPARENT_PORT: u16 = 10026;

/// Transparent mode: the MTA chose the MX and the proxy reached it before any recipient was
/// known; at each RCPT the connected address is matched to the domain's secure MX hosts and
/// their TLSA records judge the certificate already presented. Needs a network namespace of its
/// own (nft rule, fixed port).
#[test]
fn transparent_mode_judges_each_recipient_domain_by_the_connected_hosts_tlsa() {
    if netns::inside() {
        return transparent_scenario();
    }
    netns::rerun_inside(
        "transparent_mode_judges_each_recipient_domain_by_the_connected_hosts_tlsa",
    );
}

fn transparent_scenario() {
    netns::loopback_up();
    let domains = [
        "dane-ee.test",
        "dane-bad.test",
        "dane-bogus.test",
        "only-none.test",
    ];
    let w = world("dane-transparent", &domains);
    let config = format!(
        r#"hostname = "relay.proxy.test"
state_directory = "{state}"
[admin]
listen = "127.0.0.1:0"
[resolver]
nameservers = ["{dns}"]
dnssec_trust_anchor = "{anchor}"
[[outbound]]
name = "intercept"
listen = "127.0.0.1:{TRANSPARENT_PORT}"
mode = "transparent"
[outbound_policy]
trust_anchors = "{ca}"
[[outbound_policy.domain]]
domain = "only-none.test"
mode = "dane-only"
"#,
        state = w.dir.join("state").display(),
        dns = w.dns.resolver,
        anchor = w.dns.anchor.display(),
        ca = w.ca.path.display(),
    );
    let proxy = Proxy::start_text(w.dir.path(), &config);
    wait_available(&proxy, 1.0);
    let sender_ip = unique_ip();
    netns::redirect_port_25(sender_ip, TRANSPARENT_PORT, w.dir.path());

    let mx_addr = w.mx.addr;
    let mut c = netns::connect_from(sender_ip, mx_addr);
    assert_eq!(c.cmd("EHLO legacy.sender.test").code, 250);
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    for (domain, reason) in [
        ("dane-bad.test", "certificate_not_verified"),
        ("dane-bogus.test", "dnssec_bogus"),
        ("only-none.test", "dane_required"),
    ] {
        let r = c.cmd(&format!("RCPT TO:<bob@{domain}>"));
        r.assert(451, "4.7.5");
        assert!(r.text().contains(domain), "{r:?}");
        proxy.wait_event("policy_refused", &[("domain", domain), ("reason", reason)]);
    }
    c.cmd("RCPT TO:<bob@dane-ee.test>").assert(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: intercepted\r\n\r\nauthenticated by TLSA\r\n.\r\n");
    c.reply().assert(250, "2.0.0");
    c.cmd("QUIT");
    let mail = w.mx.wait_delivered(1);
    assert!(mail[0].contains("bob@dane-ee.test"), "{}", mail[0]);
    let maillog = w.mx.maillog();
    for domain in ["dane-bad.test", "dane-bogus.test", "only-none.test"] {
        assert!(!maillog.contains(&format!("bob@{domain}")), "{maillog}");
    }
    eventually("the results of the transparent session", || {
        let results = results_for(&proxy, "dane-ee.test");
        (results.len() == 1).then_some(())
    });
    let ee = &results_for(&proxy, "dane-ee.test")[0];
    assert_eq!(
        (&ee["policy_type"], &ee["result"], &ee["verified"]),
        (&"tlsa".into(), &"success".into(), &true.into()),
        "{ee}"
    );
    assert_eq!(ee["mx_host"], "mx.dane-ee.test", "{ee}");
    assert_eq!(
        results_for(&proxy, "dane-bad.test")[0]["result"],
        "tlsa-invalid"
    );
}
