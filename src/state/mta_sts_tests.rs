use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stp-sts-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cached(domain: &str, id: &str, fetched_at: i64) -> CachedPolicy {
    let text = "version: STSv1\r\nmode: enforce\r\nmx: mx.partner.test\r\nmax_age: 86400\r\n";
    CachedPolicy {
        domain: domain.into(),
        id: id.into(),
        text: text.into(),
        policy: parse_policy(text.as_bytes()).unwrap(),
        fetched_at,
    }
}

#[test]
fn policies_survive_a_restart_and_expire_by_max_age() {
    let dir = temp_dir("restart");
    let cache = StsCache::open(&dir).unwrap();
    cache
        .put(cached("partner.test", "20261206", 1_000))
        .unwrap();
    drop(cache);
    let reopened = StsCache::open(&dir).unwrap();
    let p = reopened.get("partner.test").expect("kept across a restart");
    assert_eq!(p, cached("partner.test", "20261206", 1_000));
    assert_eq!(p.expires_at(), 1_000 + 86_400);
    assert!(p.is_valid_at(86_000));
    assert!(!p.is_valid_at(1_000 + 86_400));
    assert_eq!(
        p.policy_strings(),
        [
            "version: STSv1",
            "mode: enforce",
            "mx: mx.partner.test",
            "max_age: 86400"
        ]
    );
    reopened.remove("partner.test");
    assert!(StsCache::open(&dir).unwrap().get("partner.test").is_none());
}

#[test]
fn corrupt_or_foreign_files_are_dropped_at_open_not_fatal() {
    let dir = temp_dir("corrupt");
    let cache = StsCache::open(&dir).unwrap();
    cache.put(cached("good.test", "1", 5)).unwrap();
    std::fs::write(dir.join("truncated.test.json"), b"{\"domain\":\"trunc").unwrap();
    std::fs::write(
        dir.join("bad-policy.test.json"),
        br#"{"domain":"bad-policy.test","id":"1","text":"mode: enforce","fetched_at":1}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("renamed.test.json"),
        br#"{"domain":"other.test","id":"1","text":"version: STSv1\nmode: none\nmax_age: 1\n","fetched_at":1}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"not ours").unwrap();
    let reopened = StsCache::open(&dir).unwrap();
    let domains: Vec<String> = reopened.all().into_iter().map(|p| p.domain).collect();
    assert_eq!(domains, ["good.test"]);
    assert!(!dir.join("truncated.test.json").exists());
    assert!(dir.join("notes.txt").exists());
}
