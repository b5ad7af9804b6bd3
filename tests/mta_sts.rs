//! Issue 11, point 3 (discovery; the decision is wired later): MTA-STS discovery against real
//! peers: a signed zone served by Knot through unbound holds the `_mta-sts` TXT records, an
//! HTTPS policy host with test-CA certificates serves the policies (and the failures a policy
//! host can show), and the cache lives in a state directory of the test's own.

mod common;

use common::dnssec::{self, SignedZone};
use common::https::{policy_text, PolicyHost, Response};
use common::proxy::run_cli;
use common::*;
use starttls_proxy::config::ResolverConfig;
use starttls_proxy::https::HttpsClient;
use starttls_proxy::outbound::discover::{FetchResult, StsDiscovery};
use starttls_proxy::policy::mta_sts::StsMode;
use starttls_proxy::resolver::{self, Resolve};
use starttls_proxy::state::mta_sts::{CachedPolicy, StsCache};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct World {
    dns: dnssec::Dnssec,
    web: PolicyHost,
    ca: Ca,
    _dir: TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = TempDir::new("mta-sts");
        common::remove_at_exit(dir.path());
        let ca = Ca::new(dir.path(), "test-ca");
        let wrong = ca.leaf("wrong", &["somebody-else.test"]);
        let enforce = |d: &str| policy_text("enforce", &[&format!("mx.{d}")], 86400);
        let web = PolicyHost::builder(&ca)
            .policy("enforce.test", Response::policy(&enforce("enforce.test")))
            .policy("idchange.test", Response::policy(&enforce("idchange.test")))
            .policy("concurrent.test", Response::policy(&enforce("concurrent.test")))
            .policy("none.test", Response::policy(&policy_text("none", &[], 86400)))
            .policy("404.test", Response::status(404))
            .policy(
                "redirect.test",
                Response::redirect("https://mta-sts.enforce.test/.well-known/mta-sts.txt"),
            )
            .policy(
                "ctype.test",
                Response::policy(&enforce("ctype.test")).content_type(Some("text/html")),
            )
            .policy("badcert.test", Response::policy(&enforce("badcert.test")))
            .host_cert("mta-sts.badcert.test", &wrong)
            .policy("big.test", Response::policy(&enforce("big.test")).pad_to(100_000))
            .policy(
                "slow.test",
                Response::policy(&enforce("slow.test")).trickle(Duration::from_millis(300)),
            )
            .policy(
                "maxage.test",
                Response::policy("version: STSv1\r\nmode: enforce\r\nmx: mx.maxage.test\r\nmax_age: 99999999999\r\n"),
            )
            .start();
        let mut zone = SignedZone::new("test");
        for d in [
            "enforce.test",
            "concurrent.test",
            "none.test",
            "404.test",
            "redirect.test",
            "ctype.test",
            "badcert.test",
            "big.test",
            "slow.test",
            "maxage.test",
        ] {
            zone = zone.mta_sts(d, "20261206", web.ip);
        }
        zone = zone
            .mta_sts("idchange.test", "2", web.ip)
            .txt("_mta-sts.two.test", "v=STSv1; id=1;")
            .txt("_mta-sts.two.test", "v=STSv1; id=2;")
            .a("mta-sts.two.test", web.ip)
            .a("mta-sts.norecord.test", web.ip);
        let dns = zone.start();
        common::remove_at_exit(dns.dir());
        World {
            dns,
            web,
            ca,
            _dir: dir,
        }
    })
}

fn client(timeout: Duration) -> HttpsClient {
    let w = world();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&w.ca.path).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        starttls_proxy::tls::provider(),
    )
    .build()
    .unwrap();
    HttpsClient::new(verifier, timeout, 64 * 1024)
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap())
        .collect()
}

fn resolver() -> Arc<dyn Resolve> {
    resolver::build(&ResolverConfig {
        nameservers: vec![world().dns.resolver],
        ..Default::default()
    })
}

/// A discovery with a cache in a fresh directory of its own.
fn discovery(tag: &str, timeout: Duration) -> (StsDiscovery, TempDir) {
    let dir = TempDir::new(tag);
    let cache = Arc::new(StsCache::open(&dir.join("mta-sts")).unwrap());
    (StsDiscovery::new(cache, client(timeout), 443), dir)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn an_enforce_policy_is_fetched_once_cached_and_kept_across_a_restart() {
    let w = world();
    let r = resolver();
    let (d, dir) = discovery("sts-enforce", Duration::from_secs(10));
    let before = w.web.fetches("enforce.test");
    let first = d.discover(r.as_ref(), "enforce.test", now()).await;
    assert_eq!(first.fetch, Some(FetchResult::Ok), "{first:?}");
    let policy = first.in_force().expect("enforce policy in force");
    assert_eq!(policy.policy.mode, StsMode::Enforce);
    assert!(policy.policy.allows_mx("mx.enforce.test"));
    assert_eq!(policy.id, "20261206");
    // The same id: served from the cache, no HTTPS round trip.
    let second = d.discover(r.as_ref(), "enforce.test", now()).await;
    assert_eq!(second.fetch, None);
    assert_eq!(second.policy, first.policy);
    assert_eq!(w.web.fetches("enforce.test"), before + 1);
    // A restart: the cache on disk answers.
    let reopened = Arc::new(StsCache::open(&dir.join("mta-sts")).unwrap());
    let d2 = StsDiscovery::new(reopened, client(Duration::from_secs(10)), 443);
    let third = d2.discover(r.as_ref(), "enforce.test", now()).await;
    assert_eq!((third.fetch, third.policy), (None, first.policy));
    assert_eq!(w.web.fetches("enforce.test"), before + 1);
}

#[tokio::test]
async fn a_new_id_or_an_expired_policy_is_fetched_again() {
    let w = world();
    let r = resolver();
    let (d, _dir) = discovery("sts-idchange", Duration::from_secs(10));
    let stale = |id: &str, fetched_at: i64| {
        let text = policy_text("testing", &["old.idchange.test"], 86400);
        CachedPolicy {
            domain: "idchange.test".into(),
            id: id.into(),
            policy: starttls_proxy::policy::mta_sts::parse_policy(text.as_bytes()).unwrap(),
            text,
            fetched_at,
        }
    };
    let before = w.web.fetches("idchange.test");
    d.cache().put(stale("1", now())).unwrap();
    let found = d.discover(r.as_ref(), "idchange.test", now()).await;
    assert_eq!(found.fetch, Some(FetchResult::Ok));
    assert_eq!(found.policy.as_ref().unwrap().id, "2");
    assert_eq!(found.in_force().unwrap().policy.mode, StsMode::Enforce);
    // Expired under the same id: fetched again.
    d.cache().put(stale("2", now() - 2 * 86400)).unwrap();
    let again = d.discover(r.as_ref(), "idchange.test", now()).await;
    assert_eq!(again.fetch, Some(FetchResult::Ok));
    assert_eq!(w.web.fetches("idchange.test"), before + 2);
}

#[tokio::test]
async fn policies_past_half_their_max_age_are_refreshed_before_they_lapse() {
    let w = world();
    let r = resolver();
    let (d, _dir) = discovery("sts-refresh", Duration::from_secs(10));
    let first = d.discover(r.as_ref(), "enforce.test", now()).await;
    let fetched = first.policy.unwrap();
    let before = w.web.fetches("enforce.test");
    // Fresh: nothing is due.
    assert!(d.refresh_due(r.as_ref(), now()).await.is_empty());
    // Past half of max_age (86400 s), same id: fetched again, the new copy kept.
    let aged = CachedPolicy {
        fetched_at: now() - 50_000,
        ..fetched.clone()
    };
    d.cache().put(aged).unwrap();
    let refreshed = d.refresh_due(r.as_ref(), now()).await;
    assert_eq!(
        refreshed,
        vec![("enforce.test".to_string(), Some(FetchResult::Ok))]
    );
    assert_eq!(w.web.fetches("enforce.test"), before + 1);
    assert!(d.cache().get("enforce.test").unwrap().fetched_at >= now() - 5);
    // Expired policies are not in use any more: left alone.
    let expired = CachedPolicy {
        fetched_at: now() - 100_000,
        ..fetched
    };
    d.cache().put(expired).unwrap();
    assert!(d.refresh_due(r.as_ref(), now()).await.is_empty());
}

#[tokio::test]
async fn concurrent_sessions_share_one_fetch() {
    let w = world();
    let r = resolver();
    let (d, _dir) = discovery("sts-concurrent", Duration::from_secs(10));
    let d = Arc::new(d);
    let before = w.web.fetches("concurrent.test");
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (d, r) = (d.clone(), r.clone());
            tokio::spawn(async move { d.discover(r.as_ref(), "concurrent.test", now()).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().in_force().is_some());
    }
    assert_eq!(w.web.fetches("concurrent.test"), before + 1);
}

#[tokio::test]
async fn failures_are_told_apart_and_none_becomes_a_policy() {
    let r = resolver();
    let (d, _dir) = discovery("sts-failures", Duration::from_secs(2));
    for (domain, want) in [
        ("norecord.test", FetchResult::NotFound),
        ("two.test", FetchResult::Invalid),
        ("404.test", FetchResult::FetchError),
        ("redirect.test", FetchResult::FetchError),
        ("ctype.test", FetchResult::Invalid),
        ("badcert.test", FetchResult::WebpkiInvalid),
        ("big.test", FetchResult::FetchError),
        ("slow.test", FetchResult::FetchError),
        ("maxage.test", FetchResult::Invalid),
    ] {
        let found = d.discover(r.as_ref(), domain, now()).await;
        assert_eq!(found.fetch, Some(want), "{domain}: {found:?}");
        assert!(found.policy.is_none(), "{domain}: {found:?}");
    }
    let none = d.discover(r.as_ref(), "none.test", now()).await;
    assert_eq!(none.fetch, Some(FetchResult::Ok));
    assert!(
        none.policy.is_some() && none.in_force().is_none(),
        "{none:?}"
    );
}

#[tokio::test]
async fn a_failed_refetch_or_a_vanished_record_keeps_the_cached_policy() {
    let r = resolver();
    let (d, _dir) = discovery("sts-keep", Duration::from_secs(2));
    for domain in ["404.test", "norecord.test"] {
        let text = policy_text("enforce", &[&format!("mx.{domain}")], 86400);
        d.cache()
            .put(CachedPolicy {
                domain: domain.into(),
                id: "older".into(),
                policy: starttls_proxy::policy::mta_sts::parse_policy(text.as_bytes()).unwrap(),
                text,
                fetched_at: now(),
            })
            .unwrap();
        let found = d.discover(r.as_ref(), domain, now()).await;
        assert!(found.fetch.is_some(), "{domain}: {found:?}");
        let kept = found
            .in_force()
            .unwrap_or_else(|| panic!("{domain}: {found:?}"));
        assert_eq!(kept.id, "older");
    }
}

/// Issue 11, point 3: the relay applies a domain's published policy. One Postfix MX (its
/// certificate from the test CA names only `mx.stsok.test`) serves five domains; the zone gives
/// each its MX and its `_mta-sts` record, the policy host their policies.
#[test]
fn the_relay_applies_published_policies_to_domains_without_an_entry() {
    let dir = TempDir::new("sts-relay");
    let ca = Ca::new(dir.path(), "test-ca");
    let mx_ip = unique_ip();
    let enforce = |mx: &str| policy_text("enforce", &[mx], 86400);
    let web = PolicyHost::builder(&ca)
        .policy("stsok.test", Response::policy(&enforce("mx.stsok.test")))
        .policy(
            "stsbadmx.test",
            Response::policy(&enforce("mx.elsewhere.test")),
        )
        .policy(
            "stswrong.test",
            Response::policy(&enforce("*.stswrong.test")),
        )
        .policy(
            "ststesting.test",
            Response::policy(&policy_text("testing", &["mx.ststesting.test"], 86400)),
        )
        .policy(
            "stsentry.test",
            Response::policy(&enforce("mx.stsentry.test")),
        )
        .policy("sts404.test", Response::status(404))
        .start();
    let domains = [
        "stsok.test",
        "stsbadmx.test",
        "stswrong.test",
        "ststesting.test",
        "stsentry.test",
        "sts404.test",
    ];
    let mut zone = SignedZone::new("test");
    for d in domains {
        zone = zone
            .mx_at(d, &format!("mx.{d}"), mx_ip)
            .mta_sts(d, "1", web.ip);
    }
    let dns = zone.start();
    let leaf = ca.leaf("mx", &["mx.stsok.test"]);
    let mx = Postfix::mx(dir.path(), "mx", mx_ip, &domains, Some(&leaf));
    let config = format!(
        r#"hostname = "relay.proxy.test"
[admin]
listen = "{ip}:0"
[resolver]
nameservers = ["{dns}"]
[[outbound]]
name = "relay"
listen = "{ip}:0"
[outbound_policy]
default = "opportunistic"
trust_anchors = "{ca}"
[[outbound_policy.domain]]
domain = "stsentry.test"
mode = "encrypt"
[[outbound_policy.domain]]
domain = "stswrong.test"
mode = "opportunistic"
"#,
        ip = unique_ip(),
        dns = dns.resolver,
        ca = ca.path.display()
    );
    let proxy = Proxy::start_text(dir.path(), &config);
    let send = |to: &str| {
        let (mut c, _) = SmtpClient::greeted(proxy.listener("relay"));
        c.cmd("EHLO legacy.test");
        let replies = c.mail("alice@sender.test", &[to], "under MTA-STS");
        c.cmd("QUIT");
        replies
    };
    // enforce, MX named and certificate valid for it: delivered over verified TLS.
    send("bob@stsok.test").last().unwrap().assert(250, "2.0.0");
    // enforce, MX not in the policy: refused before any connection.
    let r = send("bob@stsbadmx.test");
    r[1].assert(451, "4.7.5");
    assert!(r[1].text().contains("MTA-STS"), "{r:?}");
    // enforce, certificate not naming the MX: refused, the MTA keeps the message (an
    // `opportunistic` entry takes the published policy like the default does).
    send("bob@stswrong.test")[1].assert(451, "4.7.5");
    // testing: delivered, the failure recorded.
    send("bob@ststesting.test")
        .last()
        .unwrap()
        .assert(250, "2.0.0");
    // An `encrypt` entry is applied exactly as configured, whatever the domain publishes.
    send("bob@stsentry.test")
        .last()
        .unwrap()
        .assert(250, "2.0.0");
    // A policy host that answers 404: delivered as before, the failure recorded.
    send("bob@sts404.test").last().unwrap().assert(250, "2.0.0");
    let delivered = mx.wait_delivered(4);
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    assert!(!delivered
        .iter()
        .any(|m| m.contains("stsbadmx") || m.contains("stswrong")));

    proxy.wait_sessions(6);
    let results = proxy.results();
    let result = |domain: &str| {
        results
            .iter()
            .find(|r| r["domain"] == domain)
            .unwrap_or_else(|| panic!("{domain}: {results:#?}"))
            .clone()
    };
    let ok = result("stsok.test");
    assert_eq!(
        (&ok["policy_type"], &ok["result"], &ok["verified"]),
        (&"sts".into(), &"success".into(), &true.into())
    );
    assert!(
        ok["policy_strings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "mode: enforce"),
        "{ok}"
    );
    let wrong = result("stswrong.test");
    assert_eq!(
        (&wrong["policy_type"], &wrong["result"]),
        (&"sts".into(), &"certificate-host-mismatch".into())
    );
    let testing = result("ststesting.test");
    assert_eq!(
        (&testing["policy_type"], &testing["result"]),
        (&"sts".into(), &"certificate-host-mismatch".into())
    );
    let unfetched = result("sts404.test");
    assert_eq!(
        (&unfetched["policy_type"], &unfetched["result"]),
        (&"sts".into(), &"sts-policy-fetch-error".into())
    );
    let entry = result("stsentry.test");
    assert_eq!(
        (&entry["policy_type"], &entry["result"]),
        (&"no-policy-found".into(), &"success".into())
    );
    // `policy DOMAIN` shows the policy, its age and how each host would be judged.
    let config_path = proxy.config.to_str().unwrap().to_string();
    let policy = |domain: &str| run_cli(&["policy", domain, "--config", &config_path]);
    let (code, out, err) = policy("stsok.test");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("MTA-STS: mode enforce, id 1, fetched "),
        "{out}"
    );
    assert!(out.contains("mx: mx.stsok.test"), "{out}");
    assert!(out.contains("MTA-STS enforce: TLS required"), "{out}");
    let (code, out, err) = policy("stsbadmx.test");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("not named by the policy"), "{out}");
    assert!(out.contains("no route: 451 4.7.5"), "{out}");
    let (code, out, _) = policy("ststesting.test");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MTA-STS testing"), "{out}");

    let m = proxy.metrics();
    assert_eq!(
        metric(
            &m,
            "starttls_proxy_outbound_domain_sessions_total",
            &[
                ("policy", "mta-sts"),
                ("mode", "verify"),
                ("verified", "yes")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "starttls_proxy_policy_rejections_total",
            &[("reason", "mta_sts_mx_mismatch")]
        ),
        1.0,
        "{m}"
    );
}

/// Issue 11, point 5: what a policy look-up costs a session (figures printed, not asserted):
/// a cold fetch (TXT + HTTPS), a cached one (TXT only), and a host that trickles its body,
/// which costs the fetch timeout and no more.
#[tokio::test]
async fn policy_lookup_latency() {
    let r = resolver();
    let (d, _dir) = discovery("sts-latency", Duration::from_secs(2));
    let mut report = Vec::new();
    for (label, domain) in [
        ("cold: TXT + HTTPS fetch", "concurrent.test"),
        ("cached: TXT only", "concurrent.test"),
        ("no record: TXT NXDOMAIN", "norecord.test"),
        ("trickling host, 2 s fetch timeout", "slow.test"),
    ] {
        let start = std::time::Instant::now();
        let found = d.discover(r.as_ref(), domain, now()).await;
        let elapsed = start.elapsed();
        if domain == "slow.test" {
            assert_eq!(found.fetch, Some(FetchResult::FetchError), "{found:?}");
        }
        report.push(format!(
            "  {label}: {:.2} ms ({:?})",
            elapsed.as_secs_f64() * 1000.0,
            found.fetch
        ));
    }
    eprintln!("MTA-STS look-ups:\n{}", report.join("\n"));
}
