use super::*;

fn line(
    time: &str,
    direction: &str,
    domain: Option<&str>,
    tls: Option<&str>,
    verified: bool,
    result: &str,
) -> String {
    serde_json::json!({
        "time": time, "node": "n1", "direction": direction, "domain": domain,
        "policy_type": "no-policy-found", "policy_strings": [], "mx_host": null, "mx_ip": null,
        "client_ip": null, "tls_version": tls, "cipher": tls.map(|_| "TLS_AES_256_GCM_SHA384"),
        "verified": verified, "result": result, "session_id": "s"
    })
    .to_string()
}

#[test]
fn rows_count_sessions_tls_verification_versions_and_the_last_failure() {
    let dir = std::env::temp_dir().join(format!("stp-coverage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let day1 = [
        line(
            "2026-12-01T10:00:00Z",
            "outbound",
            Some("bank.test"),
            Some("TLSv1.3"),
            true,
            "success",
        ),
        line(
            "2026-12-01T11:00:00Z",
            "outbound",
            Some("bank.test"),
            Some("TLSv1.2"),
            false,
            "certificate-host-mismatch",
        ),
        line(
            "2026-12-01T12:00:00Z",
            "inbound",
            Some("partner.test"),
            None,
            false,
            "starttls-not-supported",
        ),
        "{\"torn".to_string(),
    ];
    let day2 = [
        line(
            "2026-12-02T09:00:00Z",
            "outbound",
            Some("bank.test"),
            Some("TLSv1.3"),
            true,
            "success",
        ),
        line(
            "2026-12-02T10:00:00Z",
            "inbound",
            None,
            Some("TLSv1.3"),
            false,
            "success",
        ),
        // Outside the period: not counted.
        line(
            "2026-12-02T23:30:00Z",
            "outbound",
            Some("bank.test"),
            None,
            false,
            "starttls-not-supported",
        ),
    ];
    std::fs::write(dir.join("n1-2026-12-01.jsonl"), day1.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("n2-2026-12-02.jsonl"), day2.join("\n") + "\n").unwrap();
    std::fs::write(dir.join("n1-2026-11-01.jsonl"), day2.join("\n") + "\n").unwrap();
    let c = compute(&dir, "2026-12-01T00:00:00Z", "2026-12-02T23:00:00Z").unwrap();
    assert_eq!((c.files, c.lines, c.skipped), (2, 7, 1));
    let bank = c
        .rows
        .iter()
        .find(|r| r.domain.as_deref() == Some("bank.test"))
        .unwrap();
    assert_eq!(bank.sessions, 3);
    assert_eq!(bank.tls_share, 1.0);
    assert!((bank.verified_share - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        bank.versions,
        BTreeMap::from([("TLSv1.2".into(), 1), ("TLSv1.3".into(), 2)])
    );
    assert_eq!(
        bank.last_failure,
        Some(LastFailure {
            time: "2026-12-01T11:00:00Z".into(),
            result: "certificate-host-mismatch".into()
        })
    );
    let partner = c
        .rows
        .iter()
        .find(|r| r.domain.as_deref() == Some("partner.test"))
        .unwrap();
    assert_eq!(
        (
            partner.direction.as_str(),
            partner.sessions,
            partner.tls_share
        ),
        ("inbound", 1, 0.0)
    );
    let anonymous = c.rows.iter().find(|r| r.domain.is_none()).unwrap();
    assert_eq!(anonymous.last_failure, None);
    let csv = c.render(Format::Csv);
    assert!(
        csv.starts_with(
            "direction,domain,sessions,tls_share,verified_share,versions,last_failure\n"
        ),
        "{csv}"
    );
    assert!(csv.contains("outbound,bank.test,3,1.0000,0.6667,TLSv1.2=1;TLSv1.3=2,2026-12-01T11:00:00Z certificate-host-mismatch\n"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&c.render(Format::Json)).unwrap();
    let bank = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["domain"] == "bank.test")
        .unwrap();
    assert_eq!(bank["direction"], "outbound");
    assert_eq!(bank["versions"]["TLSv1.3"], 2);
    assert_eq!(bank["last_failure"]["result"], "certificate-host-mismatch");
    assert!(c.render(Format::Table).contains("bank.test"));
}
