//! Proves the DANE/DNSSEC and MTA-STS fixtures (tests/common/dnssec.rs, tests/common/https.rs)
//! give each outcome the outbound-authentication tests rely on, judged by independent tools:
//! `dig` through unbound and against Knot, `openssl` for the TLSA hashes, `curl --cacert`
//! for the policy host. No proxy runs here.

mod common;

use common::dnssec::{self, dig, tlsa_owner, Delegation, Dnssec, SignedZone};
use common::https::{policy_text, PolicyHost, Response, POLICY_PATH};
use common::peers::run_with_deadline;
use common::pki::{Ca, Leaf};
use common::{require_program, unique_ip, TempDir};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The MX port the TLSA records are published for (not 25, as tests with `mx_port` use).
const PORT: u16 = 2525;

struct World {
    dns: Dnssec,
    web: PolicyHost,
    ca: Ca,
    mx: Leaf,
    mx_ip: Ipv4Addr,
    dir: TempDir,
}

/// One world per test binary (under nextest, per test process).
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = TempDir::new("fixtures");
        // The world lives in a static, never dropped: its directory goes when the process ends.
        common::remove_at_exit(dir.path());
        let ca = Ca::new(dir.path(), "test-ca");
        let mx = ca.leaf("mx", &["mx.dane-ee.test", "mx.dane-ta.test"]);
        let wrong = ca.leaf("wrong", &["somebody-else.test"]);
        // A host whose chain carries the CA, as a DANE-TA MX must send it.
        let dane = ca.leaf("dane", &["mta-sts.sts-dane.test"]);
        let dane = Leaf {
            cert: dir.join("dane-chain.crt"),
            cert_pem: format!("{}{}", dane.cert_pem, ca.cert_pem),
            ..dane
        };
        std::fs::write(&dane.cert, &dane.cert_pem).unwrap();
        let enforce = policy_text("enforce", &["mx.sts-enforce.test"], 86400);
        let web = PolicyHost::builder(&ca)
            .policy("sts-enforce.test", Response::policy(&enforce))
            .policy("sts-404.test", Response::status(404))
            .policy(
                "sts-redirect.test",
                Response::redirect("https://mta-sts.sts-target.test/.well-known/mta-sts.txt"),
            )
            .policy("sts-target.test", Response::policy(&enforce))
            .policy("sts-change.test", Response::status(404))
            .policy(
                "sts-ctype.test",
                Response::policy(&enforce).content_type(Some("text/html")),
            )
            .policy("sts-badcert.test", Response::policy(&enforce))
            .host_cert("mta-sts.sts-badcert.test", &wrong)
            .policy("sts-big.test", Response::policy(&enforce).pad_to(100_000))
            .policy(
                "sts-slow.test",
                Response::policy(&enforce).trickle(Duration::from_millis(200)),
            )
            .host("tlsrpt.rpt.test")
            .host_cert("mta-sts.sts-dane.test", &dane)
            .start();
        let mx_ip = unique_ip();
        let mut zone = dnssec::dane_catalogue(mx_ip, &mx.cert_pem, &ca.cert_pem, PORT);
        for domain in ["sts-enforce.test", "sts-404.test", "sts-badcert.test"] {
            zone = zone.mta_sts(domain, "20260101", web.ip);
        }
        zone = zone.tls_rpt("sts-enforce.test", "https://tlsrpt.rpt.test/report");
        let dns = zone.start();
        common::remove_at_exit(dns.dir());
        World {
            dns,
            web,
            ca,
            mx,
            mx_ip,
            dir,
        }
    })
}

// ---- DNSSEC through unbound ----

#[test]
fn secure_tlsa_has_ad_and_the_hash_openssl_computes() {
    let w = world();
    let owner = tlsa_owner("mx.dane-ee.test", PORT);
    let answer = dig(w.dns.resolver, &owner, "TLSA", &[]);
    assert_eq!(answer.status, "NOERROR", "{}", answer.output);
    assert!(answer.ad(), "no AD: {}", answer.output);
    let spki = openssl_spki_sha256(w, &w.mx.cert);
    assert_eq!(
        answer.rdata("TLSA"),
        [format!("3 1 1 {}", spki.to_uppercase())]
    );
    // DANE-TA: the CA's SPKI, and the MX records around it validate too.
    let ta = dig(
        w.dns.resolver,
        &tlsa_owner("mx.dane-ta.test", PORT),
        "TLSA",
        &[],
    );
    assert!(ta.ad(), "{}", ta.output);
    let ca_spki = openssl_spki_sha256(w, &w.ca.path);
    assert_eq!(
        ta.rdata("TLSA"),
        [format!("2 1 1 {}", ca_spki.to_uppercase())]
    );
    let mx = dig(w.dns.resolver, "dane-ee.test", "MX", &[]);
    assert!(mx.ad(), "{}", mx.output);
    assert_eq!(mx.rdata("MX"), ["10 mx.dane-ee.test."]);
    let a = dig(w.dns.resolver, "mx.dane-ee.test", "A", &[]);
    assert!(a.ad(), "{}", a.output);
    assert_eq!(a.rdata("A"), [w.mx_ip.to_string()]);
}

#[test]
fn tlsa_helpers_agree_with_openssl() {
    let w = world();
    let spki = openssl_spki_sha256(w, &w.mx.cert);
    assert_eq!(dnssec::tlsa_3_1_1(&w.mx.cert_pem), format!("3 1 1 {spki}"));
    let ca_spki = openssl_spki_sha256(w, &w.ca.path);
    assert_eq!(
        dnssec::tlsa_2_1_1(&w.ca.cert_pem),
        format!("2 1 1 {ca_spki}")
    );
    let der = openssl(&["x509", "-in", path(&w.mx.cert), "-outform", "DER"]);
    let der_hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        dnssec::tlsa(3, 0, 0, &w.mx.cert_pem),
        format!("3 0 0 {der_hex}")
    );
    let dgst = |algo: &str| {
        let file = scratch(w, "der");
        std::fs::write(&file, &der).unwrap();
        let out = openssl(&["dgst", algo, "-r", path(&file)]);
        String::from_utf8(out).unwrap()[..]
            .split(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        dnssec::tlsa(3, 0, 1, &w.mx.cert_pem),
        format!("3 0 1 {}", dgst("-sha256"))
    );
    assert_eq!(
        dnssec::tlsa(2, 0, 2, &w.mx.cert_pem),
        format!("2 0 2 {}", dgst("-sha512"))
    );
}

#[test]
fn openssl_dane_matches_the_tlsa_helpers_in_a_handshake() {
    let w = world();
    let chain = std::fs::read_to_string(w.dir.join("dane-chain.crt")).unwrap();
    let s_client = |rrdata: &str| {
        let mut command = Command::new(require_program("openssl"));
        command
            .args(["s_client", "-brief", "-connect", &w.web.addr.to_string()])
            .args(["-servername", "mta-sts.sts-dane.test"])
            .args(["-dane_tlsa_domain", "mta-sts.sts-dane.test"])
            .args(["-dane_tlsa_rrdata", rrdata, "-verify_return_error"]);
        run_with_deadline(command, b"")
    };
    let ee = s_client(&dnssec::tlsa_3_1_1(&chain));
    assert!(ee.stderr.contains("Verification: OK"), "{}", ee.all());
    assert!(
        ee.stderr.contains("matched EE certificate at depth 0"),
        "{}",
        ee.all()
    );
    let ta = s_client(&dnssec::tlsa_2_1_1(&w.ca.cert_pem));
    assert!(ta.stderr.contains("Verification: OK"), "{}", ta.all());
    assert!(
        ta.stderr.contains("matched TA certificate at depth 1"),
        "{}",
        ta.all()
    );
    let other = s_client(&dnssec::tlsa_3_1_1(&w.mx.cert_pem));
    assert_ne!(other.code, 0, "{}", other.all());
    assert!(
        other.all().contains("no matching DANE TLSA records"),
        "{}",
        other.all()
    );
}

#[test]
fn bogus_tlsa_is_servfail_with_ede_6_and_its_data_exists() {
    let w = world();
    let owner = tlsa_owner("mx.dane-bogus.test", PORT);
    let answer = dig(w.dns.resolver, &owner, "TLSA", &[]);
    assert_eq!(answer.status, "SERVFAIL", "{}", answer.output);
    assert!(
        answer.ede.iter().any(|e| e.starts_with("6 ")),
        "no EDE 6: {}",
        answer.output
    );
    let unchecked = dig(w.dns.resolver, &owner, "TLSA", &["+cd"]);
    assert_eq!(unchecked.status, "NOERROR", "{}", unchecked.output);
    assert_eq!(unchecked.rdata("TLSA").len(), 1, "{}", unchecked.output);
    // Only that RRset is broken: the MX host's address still validates.
    let a = dig(w.dns.resolver, "mx.dane-bogus.test", "A", &[]);
    assert_eq!(a.status, "NOERROR", "{}", a.output);
    assert!(a.ad(), "{}", a.output);
}

#[test]
fn insecure_child_answers_without_ad() {
    let w = world();
    let owner = tlsa_owner("mx.insecure.test", PORT);
    let answer = dig(w.dns.resolver, &owner, "TLSA", &[]);
    assert_eq!(answer.status, "NOERROR", "{}", answer.output);
    assert!(!answer.ad(), "AD on insecure data: {}", answer.output);
    assert_eq!(answer.rdata("TLSA").len(), 1, "{}", answer.output);
    // The parent proves there is no DS (NSEC, validated).
    let ds = dig(w.dns.resolver, "insecure.test", "DS", &[]);
    assert_eq!(ds.status, "NOERROR", "{}", ds.output);
    assert!(ds.ad() && ds.rdata("DS").is_empty(), "{}", ds.output);
}

#[test]
fn missing_tlsa_is_a_secure_nxdomain() {
    let w = world();
    let owner = tlsa_owner("mx.dane-none.test", PORT);
    let answer = dig(w.dns.resolver, &owner, "TLSA", &[]);
    assert_eq!(answer.status, "NXDOMAIN", "{}", answer.output);
    assert!(answer.ad(), "denial not validated: {}", answer.output);
    // TLSA for another port than the one published does not exist either.
    let other = dig(
        w.dns.resolver,
        &tlsa_owner("mx.dane-ee.test", 25),
        "TLSA",
        &[],
    );
    assert_eq!(other.status, "NXDOMAIN", "{}", other.output);
}

#[test]
fn expired_and_wrong_ds_children_are_servfail_a_signed_child_is_secure() {
    let w = world();
    for domain in ["expired.test", "wrongds.test"] {
        let answer = dig(w.dns.resolver, domain, "MX", &[]);
        assert_eq!(answer.status, "SERVFAIL", "{domain}: {}", answer.output);
        assert!(
            answer.ede.iter().any(|e| !e.is_empty()),
            "{domain}: no EDE: {}",
            answer.output
        );
        let unchecked = dig(w.dns.resolver, domain, "MX", &["+cd"]);
        assert_eq!(unchecked.rdata("MX"), [format!("10 mx.{domain}.")]);
    }
    let child = dig(
        w.dns.resolver,
        &tlsa_owner("mx.dane-child.test", PORT),
        "TLSA",
        &[],
    );
    assert_eq!(child.status, "NOERROR", "{}", child.output);
    assert!(child.ad(), "{}", child.output);
}

#[test]
fn knot_serves_signatures_but_never_sets_ad() {
    let w = world();
    let answer = dig(w.dns.authoritative, "dane-ee.test", "MX", &["+norecurse"]);
    assert_eq!(answer.status, "NOERROR", "{}", answer.output);
    assert!(answer.flags.iter().any(|f| f == "aa"), "{}", answer.output);
    assert!(!answer.ad(), "{}", answer.output);
    assert_eq!(answer.rdata("RRSIG").len(), 1, "{}", answer.output);
}

#[test]
fn trust_anchor_is_one_dnskey_line_with_class() {
    let w = world();
    let text = std::fs::read_to_string(&w.dns.anchor).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("test. 300 IN DNSKEY 257 3 13 "),
        "{text}"
    );
    // The same key the zone publishes.
    let published = dig(w.dns.resolver, "test", "DNSKEY", &[]);
    assert!(published.ad(), "{}", published.output);
    let key: String = lines[0].split(' ').skip(7).collect();
    assert!(
        published
            .rdata("DNSKEY")
            .iter()
            .any(|r| r.replace(' ', "").ends_with(&key)),
        "{text} not in {}",
        published.output
    );
    let resolv = std::fs::read_to_string(&w.dns.resolv_conf).unwrap();
    assert_eq!(
        resolv,
        format!("nameserver {}\noptions trust-ad\n", w.dns.resolver.ip())
    );
}

#[test]
fn own_zone_with_bogus_a_record_per_test() {
    // A test with its own zone: started and stopped within the test.
    let ip = unique_ip();
    let dns = SignedZone::new("test")
        .mx_at("own.test", "mx.own.test", ip)
        .aaaa("mx.own.test", "fd00::25".parse().unwrap())
        .txt("own.test", "hello \"world\"")
        .bogus("mx.own.test", "A")
        .child(
            SignedZone::new("sub.own.test").a("host.sub.own.test", ip),
            Delegation::Secure,
        )
        .start();
    assert!(dig(dns.resolver, "own.test", "MX", &[]).ad());
    let txt = dig(dns.resolver, "own.test", "TXT", &[]);
    assert_eq!(txt.rdata("TXT"), ["\"hello \\\"world\\\"\""]);
    assert_eq!(
        dig(dns.resolver, "mx.own.test", "A", &[]).status,
        "SERVFAIL"
    );
    let sub = dig(dns.resolver, "host.sub.own.test", "A", &[]);
    assert!(sub.ad(), "{}", sub.output);
    let resolver = dns.resolver;
    drop(dns);
    assert_eq!(
        dnssec::query(resolver, "test", 6, false),
        None,
        "unbound still answers"
    );
}

// ---- MTA-STS policy host and TLS-RPT endpoint ----

#[test]
fn policy_is_served_as_text_plain_and_found_through_dns() {
    let w = world();
    let fetch = curl(w, "sts-enforce.test", &[]);
    assert_eq!(fetch.code, 0, "{}", fetch.stderr);
    assert_eq!(fetch.status, "200");
    assert_eq!(fetch.content_type, "text/plain");
    assert_eq!(
        fetch.body,
        policy_text("enforce", &["mx.sts-enforce.test"], 86400)
    );
    assert_eq!(w.web.fetches("sts-enforce.test"), 1);
    let requests = w.web.requests();
    let request = requests
        .iter()
        .find(|r| r.host == "mta-sts.sts-enforce.test")
        .expect("request recorded");
    assert_eq!(request.sni.as_deref(), Some("mta-sts.sts-enforce.test"));
    // Discovery records, validated.
    let txt = dig(w.dns.resolver, "_mta-sts.sts-enforce.test", "TXT", &[]);
    assert!(txt.ad(), "{}", txt.output);
    assert_eq!(txt.rdata("TXT"), ["\"v=STSv1; id=20260101;\""]);
    let a = dig(w.dns.resolver, "mta-sts.sts-enforce.test", "A", &[]);
    assert_eq!(a.rdata("A"), [w.web.ip.to_string()]);
    let rpt = dig(w.dns.resolver, "_smtp._tls.sts-enforce.test", "TXT", &[]);
    assert_eq!(
        rpt.rdata("TXT"),
        ["\"v=TLSRPTv1; rua=https://tlsrpt.rpt.test/report\""]
    );
}

#[test]
fn not_found_redirect_and_html_are_served_as_configured() {
    let w = world();
    let missing = curl(w, "sts-404.test", &[]);
    assert_eq!((missing.code, missing.status.as_str()), (0, "404"));
    let redirect = curl(w, "sts-redirect.test", &[]);
    assert_eq!((redirect.code, redirect.status.as_str()), (0, "301"));
    assert_eq!(
        redirect.redirect_url,
        "https://mta-sts.sts-target.test/.well-known/mta-sts.txt"
    );
    assert_eq!(w.web.fetches("sts-target.test"), 0, "redirect followed");
    let html = curl(w, "sts-ctype.test", &[]);
    assert_eq!(
        (html.status.as_str(), html.content_type.as_str()),
        ("200", "text/html")
    );
    // A host nobody configured: 404 under the fallback certificate (webpki-invalid).
    let unknown = curl(w, "sts-unknown.test", &[]);
    assert_eq!(unknown.code, 60, "{}", unknown.stderr);
}

#[test]
fn wrong_certificate_fails_webpki_and_right_one_needs_the_test_ca() {
    let w = world();
    let bad = curl(w, "sts-badcert.test", &[]);
    assert_eq!(bad.code, 60, "{}", bad.stderr);
    // The handshake began (SNI seen), no request followed.
    let sni = Some("mta-sts.sts-badcert.test".to_string());
    assert!(w.web.hellos().contains(&sni), "{:?}", w.web.hellos());
    assert_eq!(w.web.fetches("sts-badcert.test"), 0);
    let no_ca = Command::new(require_program("curl"))
        .args(["-sS", "-o", "/dev/null", "--resolve"])
        .arg(format!("mta-sts.sts-enforce.test:443:{}", w.web.ip))
        .arg(format!("https://mta-sts.sts-enforce.test{POLICY_PATH}"))
        .status()
        .unwrap();
    assert_eq!(no_ca.code(), Some(60));
}

#[test]
fn oversized_and_trickled_policies() {
    let w = world();
    let big = curl(w, "sts-big.test", &[]);
    assert_eq!((big.code, big.status.as_str()), (0, "200"));
    assert_eq!(big.body.len(), 100_000);
    assert!(big.body.starts_with("version: STSv1\r\n"));
    let started = std::time::Instant::now();
    let slow = curl(w, "sts-slow.test", &["--max-time", "1"]);
    assert_eq!(slow.code, 28, "not timed out: {}", slow.stderr);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn posts_are_stored_with_headers_and_body() {
    let w = world();
    let dir = TempDir::new("post");
    let report = dir.join("report.json.gz");
    let body: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    std::fs::write(&report, &body).unwrap();
    let out = Command::new(require_program("curl"))
        .args(["-sS", "--cacert", path(&w.ca.path), "--resolve"])
        .arg(format!("tlsrpt.rpt.test:443:{}", w.web.ip))
        .args(["-H", "Content-Type: application/tlsrpt+gzip"])
        .args(["--data-binary", &format!("@{}", path(&report))])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg("https://tlsrpt.rpt.test/report")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "201");
    let posts: Vec<_> = w
        .web
        .posts()
        .into_iter()
        .filter(|p| p.path == "/report")
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].host, "tlsrpt.rpt.test");
    assert_eq!(posts[0].path, "/report");
    assert_eq!(
        posts[0].header("content-type"),
        Some("application/tlsrpt+gzip")
    );
    assert_eq!(posts[0].body, body);
    // Chunked uploads too.
    let chunked = Command::new(require_program("curl"))
        .args(["-sS", "--cacert", path(&w.ca.path), "--resolve"])
        .arg(format!("tlsrpt.rpt.test:443:{}", w.web.ip))
        .args(["-H", "Transfer-Encoding: chunked"])
        .args(["--data-binary", &format!("@{}", path(&report))])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg("https://tlsrpt.rpt.test/other")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&chunked.stdout), "201");
    let other: Vec<_> = w
        .web
        .posts()
        .into_iter()
        .filter(|p| p.path == "/other")
        .collect();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(other[0].body, body);
}

#[test]
fn replies_change_at_run_time() {
    let w = world();
    assert_eq!(curl(w, "sts-change.test", &[]).status, "404");
    let testing = policy_text("testing", &["*.sts-change.test"], 600);
    w.web
        .set_policy("sts-change.test", Response::policy(&testing));
    let fetch = curl(w, "sts-change.test", &[]);
    assert_eq!(
        (fetch.status.as_str(), fetch.body.as_str()),
        ("200", testing.as_str())
    );
    assert_eq!(w.web.fetches("sts-change.test"), 2);
}

// ---- helpers ----

struct Fetch {
    code: i32,
    status: String,
    content_type: String,
    redirect_url: String,
    body: String,
    stderr: String,
}

/// `curl --cacert <test CA>` of `https://mta-sts.<domain>/.well-known/mta-sts.txt`, resolved to
/// the policy host; never follows redirects.
fn curl(w: &World, domain: &str, extra: &[&str]) -> Fetch {
    let host = format!("mta-sts.{domain}");
    let body_file = scratch(w, &host);
    let out = Command::new(require_program("curl"))
        .args(["-sS", "--cacert", path(&w.ca.path), "--resolve"])
        .arg(format!("{host}:443:{}", w.web.ip))
        .args(["-o", path(&body_file)])
        .args(["-w", "%{http_code}\n%{content_type}\n%{redirect_url}"])
        .args(extra)
        .arg(format!("https://{host}{POLICY_PATH}"))
        .output()
        .expect("run curl");
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = written.split('\n');
    let mut next = || lines.next().unwrap_or_default().to_string();
    Fetch {
        code: out.status.code().unwrap_or(-1),
        status: next(),
        content_type: next(),
        redirect_url: next(),
        body: std::fs::read_to_string(&body_file).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `openssl x509 -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256`, lowercase hex.
fn openssl_spki_sha256(w: &World, cert: &std::path::Path) -> String {
    let pubkey = openssl(&["x509", "-in", path(cert), "-noout", "-pubkey"]);
    let spki_file = scratch(w, "spki");
    std::fs::write(&spki_file, pubkey).unwrap();
    let der = openssl(&["pkey", "-pubin", "-in", path(&spki_file), "-outform", "DER"]);
    std::fs::write(&spki_file, der).unwrap();
    let out = openssl(&["dgst", "-sha256", "-r", path(&spki_file)]);
    String::from_utf8(out).unwrap()[..]
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(require_program("openssl"))
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// A fresh file name in the world's directory.
fn scratch(w: &World, name: &str) -> std::path::PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    w.mx.cert
        .with_file_name(format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}
