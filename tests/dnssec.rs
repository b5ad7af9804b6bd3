//! The validating resolver for DANE (src/resolver/dnssec.rs) against real peers: a signed zone
//! with broken parts served by Knot (asked directly) and validated by unbound (asked as the
//! upstream), from tests/common/dnssec.rs. Each DNSSEC status is proven both ways; the
//! availability self-test with the right and a wrong trust anchor; the routing resolver's TXT
//! look-ups; and what goes on the wire (DO=1, CD=1).

mod common;

use common::dnssec::{self, tlsa_owner, Dnssec};
use common::pki::{Ca, Leaf};
use common::{unique_ip, TempDir};
use starttls_proxy::config::ResolverConfig;
use starttls_proxy::resolver::dnssec::{Denial, ResolveSecure, Tlsa, Validated, Validating};
use starttls_proxy::resolver::{DnsError, Hickory, Resolve};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The port the TLSA records are published for.
const PORT: u16 = 25;

struct World {
    dns: &'static Dnssec,
    mx: Leaf,
    mx_ip: Ipv4Addr,
    /// A trust anchor for `test.` with the right algorithm and a key nobody signs with.
    wrong_anchor: PathBuf,
    _dir: TempDir,
}

/// One world per test process (nextest runs each test in its own).
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = TempDir::new("dnssec");
        common::remove_at_exit(dir.path());
        let ca = Ca::new(dir.path(), "test-ca");
        let mx = ca.leaf("mx", &["mx.dane-ee.test"]);
        let mx_ip = unique_ip();
        let dns = dnssec::shared(|| {
            dnssec::dane_catalogue(mx_ip, &mx.cert_pem, &ca.cert_pem, PORT)
                .txt("_mta-sts.dane-ee.test", "v=STSv1; id=20260101;")
                .txt(
                    "_smtp._tls.dane-ee.test",
                    &format!("v=TLSRPTv1; rua=mailto:{}", "r".repeat(300)),
                )
                .record("two.dane-ee.test", "TXT", "\"first\" \"second\"")
                .record("two.dane-ee.test", "TXT", "\"other\"")
                .record("www.dane-ee.test", "CNAME", "mx.dane-ee.test.")
        });
        // The right anchor with one character of the key changed: parses, never validates.
        let anchor = std::fs::read_to_string(&dns.anchor).unwrap();
        let mut fields: Vec<String> = anchor.split_whitespace().map(str::to_string).collect();
        let key = fields.last_mut().unwrap();
        let flipped = if key.starts_with('A') { "B" } else { "A" };
        key.replace_range(0..1, flipped);
        let wrong_anchor = dir.join("wrong-anchor.key");
        std::fs::write(&wrong_anchor, fields.join(" ") + "\n").unwrap();
        World {
            dns,
            mx,
            mx_ip,
            wrong_anchor,
            _dir: dir,
        }
    })
}

/// Where a validating resolver asks: unbound (validating upstream) or Knot (authoritative).
#[derive(Debug, Clone, Copy)]
enum Via {
    Unbound,
    Knot,
}

fn server(via: Via) -> SocketAddr {
    let w = world();
    match via {
        Via::Unbound => w.dns.resolver,
        Via::Knot => w.dns.authoritative,
    }
}

fn validating(via: Via) -> Validating {
    Validating::new(&[server(via)], Some(&world().dns.anchor)).expect("validating resolver")
}

const BOTH: [Via; 2] = [Via::Unbound, Via::Knot];

fn tlsa_data(rdata: &str) -> Tlsa {
    let fields: Vec<&str> = rdata.split(' ').collect();
    let hex = fields[3];
    Tlsa {
        usage: fields[0].parse().unwrap(),
        selector: fields[1].parse().unwrap(),
        matching: fields[2].parse().unwrap(),
        data: (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect(),
    }
}

// ---- each status, through unbound and against Knot ----

#[tokio::test]
async fn signed_tlsa_mx_and_address_are_secure() {
    let w = world();
    let expected = tlsa_data(&dnssec::tlsa_3_1_1(&w.mx.cert_pem));
    for via in BOTH {
        let r = validating(via);
        assert_eq!(
            r.tlsa("mx.dane-ee.test", PORT).await,
            Validated::Secure(vec![expected.clone()]),
            "{via:?}"
        );
        assert_eq!(
            r.mx("dane-ee.test").await,
            Validated::Secure(vec![(10, "mx.dane-ee.test".to_string())]),
            "{via:?}"
        );
        // A secure, AAAA a proven NODATA: secure together.
        assert_eq!(
            r.addrs("mx.dane-ee.test").await,
            Validated::Secure(vec![IpAddr::V4(w.mx_ip)]),
            "{via:?}"
        );
        // A signed child zone under a correct DS.
        assert!(
            matches!(r.tlsa("mx.dane-child.test", PORT).await, Validated::Secure(t) if t == vec![expected.clone()]),
            "{via:?}"
        );
    }
}

#[tokio::test]
async fn corrupted_tlsa_signature_is_bogus_not_error() {
    for via in BOTH {
        let r = validating(via);
        let answer = r.tlsa("mx.dane-bogus.test", PORT).await;
        assert!(matches!(answer, Validated::Bogus(_)), "{via:?}: {answer:?}");
        // Only that RRset is broken: the MX and the host's address still validate.
        assert!(r.mx("dane-bogus.test").await.is_secure(), "{via:?}");
        assert!(r.addrs("mx.dane-bogus.test").await.is_secure(), "{via:?}");
    }
}

#[tokio::test]
async fn expired_and_wrong_ds_children_are_bogus() {
    for via in BOTH {
        let r = validating(via);
        for domain in ["expired.test", "wrongds.test"] {
            let answer = r.mx(domain).await;
            assert!(
                matches!(answer, Validated::Bogus(_)),
                "{via:?} {domain}: {answer:?}"
            );
        }
        let answer = r.tlsa("mx.expired.test", PORT).await;
        assert!(matches!(answer, Validated::Bogus(_)), "{via:?}: {answer:?}");
    }
}

#[tokio::test]
async fn unsigned_child_is_insecure() {
    let w = world();
    let expected = tlsa_data(&dnssec::tlsa_3_1_1(&w.mx.cert_pem));
    for via in BOTH {
        let r = validating(via);
        assert_eq!(
            r.tlsa("mx.insecure.test", PORT).await,
            Validated::Insecure(vec![expected.clone()]),
            "{via:?}"
        );
        assert_eq!(
            r.mx("insecure.test").await,
            Validated::Insecure(vec![(10, "mx.insecure.test".to_string())]),
            "{via:?}"
        );
        assert_eq!(
            r.addrs("mx.insecure.test").await,
            Validated::Insecure(vec![IpAddr::V4(w.mx_ip)]),
            "{via:?}"
        );
        assert_eq!(
            r.mx("nothing-here.insecure.test").await,
            Validated::InsecureDenial(Denial::NoSuchName),
            "{via:?}"
        );
        assert_eq!(
            r.tlsa("insecure.test", PORT).await,
            Validated::InsecureDenial(Denial::NoSuchName),
            "{via:?}"
        );
    }
}

#[tokio::test]
async fn proven_absence_is_a_secure_denial() {
    for via in BOTH {
        let r = validating(via);
        // No TLSA at all under dane-none: the TLSA owner does not exist (NSEC).
        assert_eq!(
            r.tlsa("mx.dane-none.test", PORT).await,
            Validated::SecureDenial(Denial::NoSuchName),
            "{via:?}"
        );
        assert_eq!(
            r.mx("no-such-domain.test").await,
            Validated::SecureDenial(Denial::NoSuchName),
            "{via:?}"
        );
        // The name exists, the type does not (NODATA).
        assert_eq!(
            r.mx("mx.dane-ee.test").await,
            Validated::SecureDenial(Denial::NoRecords),
            "{via:?}"
        );
    }
}

#[tokio::test]
async fn cname_to_a_signed_host_is_secure() {
    let w = world();
    // Both records on the way (the CNAME and the target's A) are judged.
    for via in BOTH {
        let r = validating(via);
        assert_eq!(
            r.addrs("www.dane-ee.test").await,
            Validated::Secure(vec![IpAddr::V4(w.mx_ip)]),
            "{via:?}"
        );
    }
}

#[tokio::test]
async fn no_answer_and_refusal_are_errors() {
    let w = world();
    // Nothing listens there.
    let dead = common::dead_addr();
    let r = Validating::new(&[dead], Some(&w.dns.anchor)).unwrap();
    let answer = r.tlsa("mx.dane-ee.test", PORT).await;
    assert!(matches!(answer, Validated::Error(_)), "{answer:?}");
    // Knot refuses names outside its zones.
    let answer = validating(Via::Knot).mx("example.org").await;
    assert!(matches!(answer, Validated::Error(_)), "{answer:?}");
}

// ---- the wire: DO=1 and CD=1, and why CD matters ----

#[tokio::test]
async fn queries_carry_do_and_cd() {
    let w = world();
    let socket = tokio::net::UdpSocket::bind((unique_ip(), 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let r = Validating::new(&[addr], Some(&w.dns.anchor)).unwrap();
    let lookup = tokio::spawn(async move { r.tlsa("mx.dane-ee.test", PORT).await });
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(common::PATIENCE, socket.recv_from(&mut buf))
        .await
        .expect("a query arrives")
        .unwrap();
    lookup.abort();
    let query = &buf[..n];
    let flags = query[3];
    assert_ne!(flags & 0x10, 0, "CD not set: {query:02x?}");
    // The question, then the OPT record (root owner, type 41) with DO in its flags.
    let mut i = 12;
    while query[i] != 0 {
        i += 1 + query[i] as usize;
    }
    let qtype = u16::from_be_bytes([query[i + 1], query[i + 2]]);
    assert_eq!(qtype, 52, "TLSA asked first");
    let opt = &query[i + 5..];
    assert_eq!(&opt[..3], &[0, 0, 41], "no OPT record: {query:02x?}");
    let do_bit = u16::from_be_bytes([opt[7], opt[8]]) & 0x8000;
    assert_ne!(do_bit, 0, "DO not set: {query:02x?}");
}

/// hickory's own validating resolver (CD=0): through unbound a bogus answer is a SERVFAIL, no
/// different from a broken server; against Knot it is `DnssecBogus`. This is why the proxy's
/// resolver sets CD=1.
#[tokio::test]
async fn without_cd_unbound_hides_bogus_behind_servfail() {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig as Hc};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    use hickory_resolver::proto::dnssec::TrustAnchors;
    use hickory_resolver::proto::rr::RecordType;
    let w = world();
    let stock = |addr: SocketAddr| {
        let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
        udp.port = addr.port();
        tcp.port = addr.port();
        let servers = vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])];
        let anchors = TrustAnchors::from_file(&w.dns.anchor).unwrap();
        hickory_resolver::Resolver::builder_with_config(
            Hc::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
        .with_trust_anchor(std::sync::Arc::new(anchors))
        .build()
        .unwrap()
    };
    let owner = format!("{}.", tlsa_owner("mx.dane-bogus.test", PORT));
    let through_unbound = stock(w.dns.resolver)
        .lookup(owner.as_str(), RecordType::TLSA)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        through_unbound.contains("Server Failure"),
        "{through_unbound}"
    );
    let direct = stock(w.dns.authoritative)
        .lookup(owner.as_str(), RecordType::TLSA)
        .await
        .unwrap_err()
        .to_string();
    assert!(direct.contains("DNSSEC validation failed"), "{direct}");
}

// ---- the answer cache ----

/// A UDP relay to `to` that counts the queries it passes: how many round trips a look-up cost.
struct CountingRelay {
    addr: SocketAddr,
    queries: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingRelay {
    async fn start(to: SocketAddr) -> CountingRelay {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let front = Arc::new(tokio::net::UdpSocket::bind((unique_ip(), 0)).await.unwrap());
        let addr = front.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let query = buf[..n].to_vec();
                let front = front.clone();
                tokio::spawn(async move {
                    let back = tokio::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                        .await
                        .unwrap();
                    back.connect(to).await.unwrap();
                    back.send(&query).await.unwrap();
                    let mut reply = [0u8; 4096];
                    if let Ok(Ok(m)) =
                        tokio::time::timeout(common::PATIENCE, back.recv(&mut reply)).await
                    {
                        let _ = front.send_to(&reply[..m], client).await;
                    }
                });
            }
        });
        CountingRelay {
            addr,
            queries,
            task,
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn cached_verdicts_cost_no_round_trip() {
    let w = world();
    let relay = CountingRelay::start(w.dns.authoritative).await;
    let r = Validating::new(&[relay.addr], Some(&w.dns.anchor)).unwrap();
    let first = r.tlsa("mx.dane-ee.test", PORT).await;
    assert!(first.is_secure(), "{first:?}");
    let cold = relay.queries();
    assert!(cold >= 2, "TLSA and DNSKEY at least: {cold}");
    // Secure records, a secure denial, an insecure answer: asked once each.
    assert_eq!(r.tlsa("mx.dane-ee.test", PORT).await, first);
    assert_eq!(relay.queries(), cold, "a cached TLSA went to the wire");
    let denial = r.tlsa("mx.dane-none.test", PORT).await;
    let insecure = r.tlsa("mx.insecure.test", PORT).await;
    let before = relay.queries();
    assert_eq!(r.tlsa("mx.dane-none.test", PORT).await, denial);
    assert_eq!(r.tlsa("mx.insecure.test", PORT).await, insecure);
    assert_eq!(relay.queries(), before, "cached verdicts went to the wire");
    // Bogus data is asked again (it may be fixed by the next look-up).
    assert!(matches!(
        r.tlsa("mx.dane-bogus.test", PORT).await,
        Validated::Bogus(_)
    ));
    let before = relay.queries();
    assert!(matches!(
        r.tlsa("mx.dane-bogus.test", PORT).await,
        Validated::Bogus(_)
    ));
    assert!(relay.queries() > before, "bogus answer was cached");
    // The self-test always asks.
    r.self_test().await.unwrap();
    let before = relay.queries();
    r.self_test().await.unwrap();
    assert!(
        relay.queries() > before,
        "the self-test answered from the cache"
    );
}

// ---- the availability self-test ----

#[tokio::test]
async fn self_test_passes_with_the_zone_anchor() {
    for via in BOTH {
        let r = validating(via);
        assert_eq!(r.self_test().await, Ok(()), "{via:?}");
        assert!(!r.is_available(), "unknown until checked");
        assert!(r.check_availability().await);
        assert!(r.is_available());
    }
}

#[tokio::test]
async fn self_test_fails_with_a_wrong_anchor() {
    let w = world();
    for via in BOTH {
        let r = Validating::new(&[server(via)], Some(&w.wrong_anchor)).unwrap();
        let e = r.self_test().await.unwrap_err();
        assert!(e.contains("test."), "{via:?}: {e}");
        assert!(!r.check_availability().await);
        assert!(!r.is_available());
        // With the wrong anchor nothing in the zone is secure any more.
        let answer = r.tlsa("mx.dane-ee.test", PORT).await;
        assert!(!answer.is_secure(), "{via:?}: {answer:?}");
    }
}

#[tokio::test]
async fn self_test_fails_with_the_root_anchors_and_no_root() {
    // The built-in IANA root KSKs, and a name server with no root zone (Knot refuses `.`).
    let r = Validating::new(&[server(Via::Knot)], None).unwrap();
    let e = r.self_test().await.unwrap_err();
    assert!(e.contains("zone ."), "{e}");
}

#[tokio::test]
async fn availability_task_sets_the_gauge_and_counts_lookups() {
    let handle = starttls_proxy::metrics::install();
    let r = std::sync::Arc::new(validating(Via::Unbound));
    let task = starttls_proxy::resolver::dnssec::spawn_availability_check(
        r.clone(),
        Duration::from_secs(3600),
    );
    let deadline = Instant::now() + common::PATIENCE;
    while !handle
        .render()
        .contains("starttls_proxy_dnssec_available 1")
    {
        assert!(Instant::now() < deadline, "{}", handle.render());
        // Polls the exporter for the first check's result (no fixed sleep decides anything).
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert!(r.is_available());
    r.tlsa("mx.dane-ee.test", PORT).await;
    r.tlsa("mx.dane-bogus.test", PORT).await;
    r.tlsa("mx.insecure.test", PORT).await;
    let text = handle.render();
    for result in ["secure", "bogus", "insecure"] {
        let line = format!("starttls_proxy_dnssec_lookups_total{{result=\"{result}\"}} 1");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert!(text.contains("starttls_proxy_dnssec_lookups_total{result=\"error\"} 0"));
}

/// dnsmasq answers `.test` itself, unsigned, with no RRSIG, DNSKEY or NSEC: the kind of resolver
/// that passes no DNSSEC. Validation cannot work through it (the self-test says so, and the
/// anchor's zone cannot be proven), while routing through it works as before.
#[tokio::test]
async fn through_a_resolver_without_dnssec_the_self_test_fails_and_routing_works() {
    let w = world();
    let dns = common::dns::Dns::start(common::dns::Zone::default().mx_at(
        "plain.test",
        "mx.plain.test",
        w.mx_ip,
    ));
    let r = Validating::new(&[dns.addr], Some(&w.dns.anchor)).unwrap();
    let e = r.self_test().await.unwrap_err();
    assert!(e.contains("test."), "{e}");
    assert!(!r.check_availability().await);
    let answer = r.mx("plain.test").await;
    assert!(!answer.is_secure(), "{answer:?}");
    let routing = Hickory::new(&ResolverConfig {
        nameservers: vec![dns.addr],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        routing.mx("plain.test").await.unwrap(),
        [(10, "mx.plain.test".to_string())]
    );
}

// ---- routing: TXT, and no validation ----

fn routing(via: Via) -> Hickory {
    Hickory::new(&ResolverConfig {
        nameservers: vec![server(via)],
        ..Default::default()
    })
    .expect("routing resolver")
}

#[tokio::test]
async fn txt_records_are_joined_per_record() {
    let mut two = routing(Via::Unbound).txt("two.dane-ee.test").await.unwrap();
    two.sort();
    assert_eq!(two, ["firstsecond", "other"]);
    for via in BOTH {
        let r = routing(via);
        assert_eq!(
            r.txt("_mta-sts.dane-ee.test").await.unwrap(),
            ["v=STSv1; id=20260101;"]
        );
        // Over 255 bytes: several character-strings, joined back.
        let rpt = r.txt("_smtp._tls.dane-ee.test").await.unwrap();
        assert_eq!(rpt, [format!("v=TLSRPTv1; rua=mailto:{}", "r".repeat(300))]);
        assert_eq!(
            r.txt("_mta-sts.dane-none.test").await,
            Err(DnsError::NoSuchName)
        );
        assert_eq!(r.txt("dane-ee.test").await, Err(DnsError::NoRecords));
    }
}

#[tokio::test]
async fn routing_ignores_dnssec() {
    let w = world();
    // Bogus and insecure data route as before: routing does not validate.
    let r = routing(Via::Knot);
    assert_eq!(
        r.mx("expired.test").await.unwrap(),
        [(10, "mx.expired.test".to_string())]
    );
    assert_eq!(
        r.addrs("mx.insecure.test").await.unwrap(),
        [IpAddr::V4(w.mx_ip)]
    );
    // Through a validating upstream, bogus data is its SERVFAIL: temporary.
    let r = routing(Via::Unbound);
    assert!(matches!(
        r.mx("expired.test").await,
        Err(DnsError::Temporary(_))
    ));
    assert_eq!(r.mx("nope.test").await, Err(DnsError::NoSuchName));
}

// ---- latency (figures printed, nothing asserted) ----

#[tokio::test]
async fn validated_lookup_latency() {
    world();
    for via in BOTH {
        let r = validating(via);
        let mut report = Vec::new();
        for (label, host) in [
            ("first TLSA (cold: DNSKEY fetched)", "mx.dane-ee.test"),
            ("second TLSA (same zone)", "mx.dane-ta.test"),
            ("repeated TLSA (answer cache)", "mx.dane-ta.test"),
            ("TLSA in signed child (DS + DNSKEY)", "mx.dane-child.test"),
            ("TLSA insecure child", "mx.insecure.test"),
            ("TLSA bogus", "mx.dane-bogus.test"),
        ] {
            let start = Instant::now();
            let answer = r.tlsa(host, PORT).await;
            report.push(format!(
                "  {label}: {:.2} ms ({})",
                start.elapsed().as_secs_f64() * 1000.0,
                answer.result()
            ));
        }
        let start = Instant::now();
        let n = 50;
        for _ in 0..n {
            let _ = r.mx("dane-ee.test").await;
            let _ = r.addrs("mx.dane-ee.test").await;
            let _ = r.tlsa("mx.dane-ee.test", PORT).await;
        }
        report.push(format!(
            "  MX + A/AAAA + TLSA for one domain, cached, mean of {n}: {:.3} ms",
            start.elapsed().as_secs_f64() * 1000.0 / n as f64
        ));
        eprintln!("validated look-ups via {via:?}:\n{}", report.join("\n"));
    }
}
