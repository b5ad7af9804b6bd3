use super::*;

fn dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starttls-proxy-inventory-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cert(names: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("x"),
    );
    params.self_signed(&key).unwrap().der().to_vec()
}

fn sighting<'a>(domain: &'a str, mx: &'a str, leaf: &'a [u8], now: i64) -> Sighting<'a> {
    Sighting {
        domain,
        mx,
        leaf,
        verified: true,
        policy: "configured",
        mode: "verify",
        policy_domain: true,
        now,
    }
}

const T0: i64 = 1_790_000_000;

#[test]
fn a_new_certificate_is_described_and_a_repeat_only_moves_last_seen() {
    let d = dir("describe");
    let inv = Inventory::open(&d);
    let leaf = cert(&["mx.bank.test"]);
    let first = inv.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0));
    assert_eq!(first.replaced, None);
    assert_eq!(first.sha256.len(), 64);
    let again = inv.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0 + 60));
    assert_eq!(again.replaced, None);
    let list = inv.list();
    assert_eq!(list.len(), 1, "{list:#?}");
    let e = &list[0];
    assert_eq!(
        (e.domain.as_str(), e.mx.as_str()),
        ("bank.test", "mx.bank.test")
    );
    assert_eq!(e.subject, "CN=mx.bank.test");
    assert_eq!(e.issuer, "CN=mx.bank.test");
    assert_eq!(e.sans, vec!["mx.bank.test".to_string()]);
    assert_eq!(e.first_seen, crate::log::format_unix(T0));
    assert_eq!(e.last_seen, crate::log::format_unix(T0 + 60));
    assert!(e.not_after.as_deref().is_some_and(|t| t.ends_with('Z')));
    assert!(e.verified);
    assert_eq!(e.policy, "configured");
}

#[test]
fn another_certificate_for_the_same_host_names_the_one_it_replaced() {
    let d = dir("replace");
    let inv = Inventory::open(&d);
    let (old, new) = (cert(&["mx.bank.test"]), cert(&["mx.bank.test"]));
    let first = inv.observe(&sighting("bank.test", "mx.bank.test", &old, T0));
    let second = inv.observe(&sighting("bank.test", "mx.bank.test", &new, T0 + 1));
    assert_eq!(second.replaced.as_deref(), Some(first.sha256.as_str()));
    assert_ne!(second.sha256, first.sha256);
    assert_eq!(inv.list().len(), 2);
    // The other domain's view of the same host is its own.
    let other = inv.observe(&sighting("other.test", "mx.bank.test", &old, T0 + 2));
    assert_eq!(other.replaced, None);
    let expiries = inv.current_expiries();
    assert_eq!(expiries.len(), 2, "{expiries:?}");
}

#[test]
fn a_giant_name_list_is_kept_bounded() {
    let names: Vec<String> = (0..2_000).map(|i| format!("n{i}.mx.test")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let described = describe(&cert(&refs));
    assert_eq!(described.sans.len(), MAX_SANS);
    assert_eq!(described.sans_omitted, 2_000 - MAX_SANS);
    assert_eq!(described.error, None);
}

#[test]
fn garbage_instead_of_a_certificate_is_recorded_with_the_reason() {
    let d = dir("garbage");
    let inv = Inventory::open(&d);
    let garbage = b"\x30\x82\xff\xffnot a certificate at all".to_vec();
    let learnt = inv.observe(&sighting("bank.test", "mx.bank.test", &garbage, T0));
    assert_eq!(learnt.not_after, None);
    let e = &inv.list()[0];
    assert!(
        e.parse_error.as_deref().is_some_and(|r| !r.is_empty()),
        "{e:?}"
    );
    assert_eq!(e.not_after, None);
    assert!(e.sans.is_empty());
    // Truncated halfway through a real one.
    let real = cert(&["mx.bank.test"]);
    assert!(describe(&real[..real.len() / 2]).error.is_some());
}

#[test]
fn the_inventory_survives_a_restart() {
    let d = dir("restart");
    let leaf = cert(&["mx.bank.test"]);
    {
        let inv = Inventory::open(&d);
        inv.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0));
        inv.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0 + 5));
        inv.flush();
    }
    let reopened = Inventory::open(&d);
    let list = reopened.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].last_seen, crate::log::format_unix(T0 + 5));
    let again = reopened.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0 + 9));
    assert_eq!(again.replaced, None);
    let served: Vec<CertificateEntry> = serde_json::from_str(&reopened.to_json()).unwrap();
    assert_eq!(served.len(), 1);
}

#[test]
fn a_corrupt_or_truncated_file_is_set_aside_and_the_inventory_starts_anew() {
    for (tag, content) in [
        ("corrupt", b"{ this is not json".to_vec()),
        ("truncated", br#"[{"domain":"bank.test","mx":"mx.bank"#.to_vec()),
        ("bad-times", br#"[{"domain":"a","mx":"b","subject":"","issuer":"","sans":[],"not_after":null,"sha256":"00","first_seen":"yesterday","last_seen":"today","verified":false,"policy":"none"}]"#.to_vec()),
    ] {
        let d = dir(tag);
        std::fs::write(d.join(FILE_NAME), &content).unwrap();
        let inv = Inventory::open(&d);
        assert!(inv.list().is_empty(), "{tag}");
        let kept: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("certificates.json.corrupt-"))
            .collect();
        if tag != "bad-times" {
            assert_eq!(kept.len(), 1, "{tag}: the corrupt file is kept aside");
            assert_eq!(
                std::fs::read(d.join(&kept[0])).unwrap(),
                content,
                "{tag}: kept as it was"
            );
        }
        // And it works from there.
        let leaf = cert(&["mx.bank.test"]);
        inv.observe(&sighting("bank.test", "mx.bank.test", &leaf, T0));
        inv.flush();
        assert_eq!(Inventory::open(&d).list().len(), 1, "{tag}");
    }
}

#[test]
fn past_the_bound_the_oldest_entry_of_a_domain_without_policy_goes_first() {
    let d = dir("bound");
    let inv = Inventory::open_bounded(&d, 3);
    let leaf = cert(&["mx.test"]);
    let mut old_policy = sighting("bank.test", "mx.bank.test", &leaf, T0);
    old_policy.policy_domain = true;
    inv.observe(&old_policy);
    for (i, domain) in ["a.test", "b.test"].iter().enumerate() {
        let mut s = sighting(domain, "mx.test", &leaf, T0 + 10 + i as i64);
        s.policy_domain = false;
        inv.observe(&s);
    }
    let mut newest = sighting("c.test", "mx.test", &leaf, T0 + 20);
    newest.policy_domain = false;
    inv.observe(&newest);
    let domains: Vec<String> = inv.list().into_iter().map(|e| e.domain).collect();
    assert_eq!(domains, vec!["b.test", "bank.test", "c.test"]);
}

#[test]
fn a_malformed_name_list_is_named_and_the_rest_is_kept() {
    let mut der = cert(&["mx.bank.test", "alt.bank.test"]);
    // subjectAltName's OID (2.5.29.17), then its OCTET STRING holding a SEQUENCE: make that
    // SEQUENCE a SET, so the extension no longer parses while the certificate still frames.
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let at = der.windows(oid.len()).position(|w| w == oid).unwrap() + oid.len();
    let seq = at + der[at..].iter().position(|&b| b == 0x30).unwrap();
    der[seq] = 0x31;
    let described = describe(&der);
    assert!(described.error.is_some(), "{described:?}");
    assert!(described.sans.is_empty(), "{described:?}");
    assert_eq!(described.subject, "CN=mx.bank.test");
    assert!(described.not_after.is_some());
    let d = dir("malformed-san");
    let inv = Inventory::open(&d);
    let learnt = inv.observe(&sighting("bank.test", "mx.bank.test", &der, T0));
    assert_eq!(learnt.sha256.len(), 64);
    assert!(inv.list()[0].parse_error.is_some());
}
