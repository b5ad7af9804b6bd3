use super::*;
use crate::policy::ResultType;
use std::io::Read;

#[test]
fn tlsrpt_records_table() {
    let ok = parse_records([
        "v=spf1 -all",
        "v=TLSRPTv1; rua=mailto:tlsrpt@rpt.test,https://tlsrpt.rpt.test/report",
    ])
    .unwrap();
    assert_eq!(
        ok.rua,
        [
            Rua::Mailto("tlsrpt@rpt.test".into()),
            Rua::Https("https://tlsrpt.rpt.test/report".into())
        ]
    );
    let spaced =
        parse_record("v=TLSRPTv1 ;rua=mailto:a%40b.test , ftp://x.test/y; ext=1;").unwrap();
    assert_eq!(spaced.rua, [Rua::Mailto("a@b.test".into())]);
    assert_eq!(spaced.ignored, ["ftp://x.test/y"]);
    assert_eq!(parse_records(["v=spf1"]), Err(TlsRptError::NoRecord));
    assert_eq!(
        parse_records(["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]),
        Err(TlsRptError::SeveralRecords(2))
    );
    for bad in [
        "v=TLSRPTv1",
        "v=TLSRPTv1;",
        "v=TLSRPTv1; rua=",
        "v=TLSRPTv1; rua=mailto:nobody",
        "v=TLSRPTv1; rua=https:x",
        "v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d",
        "v=TLSRPTv1; rua=mailto:a%zz@b",
        "v=TLSRPTv1; garbage",
    ] {
        assert!(
            matches!(parse_record(bad), Err(TlsRptError::Invalid(_))),
            "{bad}: {:?}",
            parse_record(bad)
        );
    }
}

fn result(domain: &str, policy: PolicyType, outcome: Outcome, mx: &str) -> SessionResult {
    SessionResult {
        time: "2026-12-05T10:00:00Z".into(),
        node: "n1".into(),
        direction: Direction::Outbound,
        domain: Some(domain.into()),
        policy_type: policy,
        policy_strings: match policy {
            PolicyType::Sts => vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: *.partner.test".into(),
                "max_age: 86400".into(),
            ],
            PolicyType::Tlsa => vec!["3 1 1 abcd".into()],
            PolicyType::NoPolicyFound => vec![],
        },
        mx_host: Some(mx.into()),
        mx_ip: Some("192.0.2.25".parse().unwrap()),
        local_ip: Some("198.51.100.1".parse().unwrap()),
        client_ip: None,
        tls_version: Some("TLSv1.3".into()),
        cipher: Some("TLS_AES_256_GCM_SHA384".into()),
        verified: outcome == Outcome::Success,
        result: outcome,
        session_id: "s".into(),
        report_delivery: false,
    }
}

fn reporter() -> Reporter {
    Reporter {
        organization: "Example Org".into(),
        contact: "mailto:postmaster@example.org".into(),
        submitter: "example.org".into(),
    }
}

#[test]
fn a_report_counts_each_policy_and_groups_failures() {
    let mut results = vec![
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Success,
            "mx1.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Success,
            "mx2.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Failure(ResultType::CertificateExpired),
            "mx1.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Failure(ResultType::CertificateExpired),
            "mx1.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Failure(ResultType::StsWebpkiInvalid),
            "mx2.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Tlsa,
            Outcome::Failure(ResultType::DaneRequired),
            "mx1.partner.test",
        ),
        // Not this report's: another domain, inbound, another day, a report delivery.
        result(
            "other.test",
            PolicyType::Sts,
            Outcome::Success,
            "mx.other.test",
        ),
    ];
    let mut inbound = result(
        "partner.test",
        PolicyType::NoPolicyFound,
        Outcome::Success,
        "x",
    );
    inbound.direction = Direction::Inbound;
    let mut yesterday = result(
        "partner.test",
        PolicyType::Sts,
        Outcome::Success,
        "mx1.partner.test",
    );
    yesterday.time = "2026-12-04T23:59:59Z".into();
    let mut delivery = result(
        "partner.test",
        PolicyType::Sts,
        Outcome::Failure(ResultType::ValidationFailure),
        "mx1.partner.test",
    );
    delivery.report_delivery = true;
    results.extend([inbound, yesterday, delivery]);

    let report = build(&reporter(), "partner.test", "2026-12-05", &results).unwrap();
    assert_eq!(report.date_range.start, "2026-12-05T00:00:00Z");
    assert_eq!(report.date_range.end, "2026-12-05T23:59:59Z");
    assert_eq!(report.policies.len(), 2);
    let sts = report
        .policies
        .iter()
        .find(|p| p.policy.policy_type == PolicyType::Sts)
        .unwrap();
    assert_eq!(
        sts.summary,
        Summary {
            successful: 2,
            failed: 3
        }
    );
    assert_eq!(sts.policy.mx_host, ["*.partner.test"]);
    assert_eq!(sts.failure_details.len(), 2);
    let expired = &sts.failure_details[0];
    assert_eq!(
        (
            expired.result_type,
            expired.failed_session_count,
            expired.receiving_mx_hostname.as_deref()
        ),
        (ResultType::CertificateExpired, 2, Some("mx1.partner.test"))
    );
    let tlsa = report
        .policies
        .iter()
        .find(|p| p.policy.policy_type == PolicyType::Tlsa)
        .unwrap();
    assert_eq!(tlsa.policy.mx_host, ["mx1.partner.test"]);
    assert_eq!(
        tlsa.summary,
        Summary {
            successful: 0,
            failed: 1
        }
    );
    assert!(build(&reporter(), "absent.test", "2026-12-05", &results).is_none());
}

#[test]
fn the_json_has_the_rfc_field_names_and_the_gzip_round_trips() {
    let results = [
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Success,
            "mx1.partner.test",
        ),
        result(
            "partner.test",
            PolicyType::Sts,
            Outcome::Failure(ResultType::CertificateHostMismatch),
            "mx1.partner.test",
        ),
    ];
    let report = build(&reporter(), "partner.test", "2026-12-05", &results).unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(report.to_gzip().as_slice())
        .read_to_string(&mut json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "organization-name",
        "date-range",
        "contact-info",
        "report-id",
        "policies",
    ] {
        assert!(v.get(key).is_some(), "{key}: {json}");
    }
    let policy = &v["policies"][0];
    assert_eq!(policy["policy"]["policy-type"], "sts");
    assert_eq!(policy["policy"]["policy-domain"], "partner.test");
    assert_eq!(policy["policy"]["policy-string"][1], "mode: enforce");
    assert_eq!(policy["policy"]["mx-host"][0], "*.partner.test");
    assert_eq!(policy["summary"]["total-successful-session-count"], 1);
    assert_eq!(policy["summary"]["total-failure-session-count"], 1);
    let detail = &policy["failure-details"][0];
    assert_eq!(detail["result-type"], "certificate-host-mismatch");
    assert_eq!(detail["sending-mta-ip"], "198.51.100.1");
    assert_eq!(detail["receiving-mx-hostname"], "mx1.partner.test");
    assert_eq!(detail["receiving-ip"], "192.0.2.25");
    assert_eq!(detail["failed-session-count"], 1);
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    assert_eq!(
        report.file_name("example.org"),
        "example.org!partner.test!1796428800!1796515199!2026-12-05_partner.test_example.org.json.gz"
    );
}
