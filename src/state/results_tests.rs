use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stp-results-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sample(time: &str, id: &str) -> SessionResult {
    SessionResult {
        time: time.to_string(),
        node: "mx1.example.org".into(),
        direction: Direction::Outbound,
        domain: Some("partner.example".into()),
        policy_type: PolicyType::Sts,
        policy_strings: vec!["version: STSv1".into(), "mode: enforce".into()],
        mx_host: Some("mx.partner.example".into()),
        mx_ip: Some("192.0.2.7".parse().unwrap()),
        local_ip: Some("198.51.100.1".parse().unwrap()),
        client_ip: None,
        tls_version: Some("TLSv1.3".into()),
        cipher: Some("TLS_AES_256_GCM_SHA384".into()),
        verified: true,
        result: Outcome::Success,
        session_id: id.to_string(),
        report_delivery: false,
    }
}

fn today() -> String {
    time::OffsetDateTime::now_utc().date().to_string()
}

#[tokio::test]
async fn a_result_is_one_json_line_with_the_contract_keys() {
    let dir = temp_dir("keys");
    let log = ResultsLog::open(&dir, "mx1.example.org", 400).unwrap();
    let time = format!("{}T10:00:00Z", today());
    let mut failed = sample(&time, "s2");
    failed.result = Outcome::Failure(ResultType::CertificateHostMismatch);
    failed.report_delivery = true;
    log.record(&sample(&time, "s1")).await.unwrap();
    log.record(&failed).await.unwrap();
    let text =
        std::fs::read_to_string(dir.join(format!("mx1.example.org-{}.jsonl", today()))).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let keys: Vec<&str> = lines[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "time",
        "node",
        "direction",
        "domain",
        "policy_type",
        "policy_strings",
        "mx_host",
        "mx_ip",
        "client_ip",
        "tls_version",
        "cipher",
        "verified",
        "result",
        "session_id",
    ] {
        assert!(keys.contains(&key), "{key} missing: {keys:?}");
    }
    assert!(!keys.contains(&"report_delivery"), "{keys:?}");
    assert_eq!(lines[0]["result"], "success");
    assert_eq!(lines[0]["policy_type"], "sts");
    assert_eq!(lines[0]["direction"], "outbound");
    assert_eq!(lines[1]["result"], "certificate-host-mismatch");
    assert_eq!(lines[1]["report_delivery"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_share_syncs_and_lose_nothing() {
    let dir = temp_dir("concurrent");
    let log = ResultsLog::open(&dir, "n1", 400).unwrap();
    let time = format!("{}T11:00:00Z", today());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let log = log.clone();
            let time = time.clone();
            tokio::spawn(async move { log.record(&sample(&time, &format!("id{i}"))).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut ids = Vec::new();
    let stats = read_days(&dir, &today(), &today(), |r| ids.push(r.session_id)).unwrap();
    assert_eq!((stats.files, stats.lines, stats.skipped), (1, 200, 0));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

#[tokio::test]
async fn days_go_to_their_own_files_and_readers_pick_a_range() {
    let dir = temp_dir("days");
    let log = ResultsLog::open(&dir, "n1", 100_000).unwrap();
    for (time, id) in [
        ("2026-01-01T23:59:59Z", "a"),
        ("2026-01-02T00:00:00Z", "b"),
        ("2026-01-02T12:00:00Z", "c"),
        ("2026-01-03T00:00:01Z", "d"),
    ] {
        log.record(&sample(time, id)).await.unwrap();
    }
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        assert!(dir.join(format!("n1-{day}.jsonl")).exists(), "{day}");
    }
    let mut ids = Vec::new();
    read_days(&dir, "2026-01-02", "2026-01-02", |r| ids.push(r.session_id)).unwrap();
    assert_eq!(ids, ["b", "c"]);
}

#[tokio::test]
async fn a_torn_last_line_is_dropped_at_open_and_garbage_is_skipped_when_read() {
    let dir = temp_dir("torn");
    let day = today();
    let line = serde_json::to_string(&sample(&format!("{day}T01:00:00Z"), "whole")).unwrap();
    let ours = dir.join(format!("n1-{day}.jsonl"));
    std::fs::write(
        &ours,
        format!("{line}\n{{\"time\":\"{day}T01:00:01Z\",\"no"),
    )
    .unwrap();
    // Another node's file is not ours to repair; its garbage line is skipped by readers.
    let theirs = dir.join(format!("n2-{day}.jsonl"));
    std::fs::write(&theirs, format!("not json\n{line}\n")).unwrap();
    let log = ResultsLog::open(&dir, "n1", 400).unwrap();
    assert_eq!(std::fs::read_to_string(&ours).unwrap(), format!("{line}\n"));
    log.record(&sample(&format!("{day}T02:00:00Z"), "after"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    let stats = read_days(&dir, &day, &day, |r| ids.push(r.session_id)).unwrap();
    ids.sort();
    assert_eq!(ids, ["after", "whole", "whole"]);
    assert_eq!((stats.files, stats.skipped), (2, 1));
}

#[test]
fn files_older_than_the_retention_are_removed_at_open() {
    let dir = temp_dir("retention");
    let old = time::OffsetDateTime::now_utc().date() - time::Duration::days(401);
    let kept = time::OffsetDateTime::now_utc().date() - time::Duration::days(399);
    for day in [old, kept] {
        std::fs::write(dir.join(format!("n9-{day}.jsonl")), "").unwrap();
    }
    std::fs::write(dir.join("unrelated.txt"), "").unwrap();
    let _log = ResultsLog::open(&dir, "n1", 400).unwrap();
    assert!(!dir.join(format!("n9-{old}.jsonl")).exists());
    assert!(dir.join(format!("n9-{kept}.jsonl")).exists());
    assert!(dir.join("unrelated.txt").exists());
}

#[test]
fn an_unusable_directory_is_an_error_at_open() {
    let dir = temp_dir("unusable");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = ResultsLog::open(&file.join("results"), "n1", 400)
        .err()
        .expect("a directory under a file cannot be made");
    assert!(err.to_string().contains("results directory"), "{err}");
}

#[test]
fn file_names_give_their_node_and_day() {
    let p = Path::new("/x/mx1.example.org-2026-12-06.jsonl");
    assert_eq!(file_day(p).as_deref(), Some("2026-12-06"));
    assert_eq!(file_node(p).as_deref(), Some("mx1.example.org"));
    for bad in [
        "/x/2026-12-06.jsonl",
        "/x/n-2026-1-06.jsonl",
        "/x/n-2026-12-06.json",
    ] {
        assert_eq!(file_day(Path::new(bad)), None, "{bad}");
    }
}
