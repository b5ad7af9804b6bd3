use super::*;

/// A URI and what it should give: host, port, path.
type UriCase<'a> = (&'a str, Option<(&'a str, u16, &'a str)>);

#[test]
fn https_uris_give_host_port_and_path() {
    let table: &[UriCase] = &[
        (
            "https://tlsrpt.example/report",
            Some(("tlsrpt.example", 443, "/report")),
        ),
        (
            "HTTPS://Rpt.Example.:8443/v1/tls?x=1",
            Some(("rpt.example", 8443, "/v1/tls?x=1")),
        ),
        ("https://rpt.example", Some(("rpt.example", 443, "/"))),
        ("https://rpt.example?x", Some(("rpt.example", 443, "/?x"))),
        ("https://user@rpt.example/", None),
        ("https://[2001:db8::1]/", None),
        ("https://rpt.example:99999/", None),
        ("https:///report", None),
        ("http://rpt.example/", None),
        ("https://bad host/", None),
    ];
    for (uri, want) in table {
        let got = parse_https_uri(uri);
        let want = want.map(|(h, p, path)| (h.to_string(), p, path.to_string()));
        assert_eq!(got, want, "{uri}");
    }
}

fn reporting() -> TlsReporting {
    TlsReporting {
        organization: "Example Org".into(),
        contact: "mailto:postmaster@example.org".into(),
        submitter: "example.org".into(),
        send_via: None,
        from: "tlsrpt-noreply@example.org".into(),
        only_with_failures: false,
        send_spread: std::time::Duration::ZERO,
        suppress_after_days: 0,
        receive: Vec::new(),
    }
}

#[test]
fn a_mailed_report_has_the_contract_headers_and_the_report_attached() {
    let reporting = reporting();
    let gzip: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let mailed = MailedReport {
        reporting: &reporting,
        domain: "partner.example",
        report_id: "2026-12-05_partner.example_example.org",
        file_name: "example.org!partner.example!1!2!id.json.gz",
        gzip: &gzip,
        to: "tlsrpt@partner.example",
    };
    let now = time::OffsetDateTime::from_unix_timestamp(1_796_540_991).unwrap();
    let message = String::from_utf8(mailed.message(now)).unwrap();
    assert!(!message.replace("\r\n", "").contains('\n'), "bare LF");
    let (head, body) = message.split_once("\r\n\r\n").unwrap();
    let headers: Vec<&str> = head.split("\r\n").collect();
    for want in [
        "From: tlsrpt-noreply@example.org",
        "To: tlsrpt@partner.example",
        "Subject: Report Domain: partner.example Submitter: example.org Report-ID: <2026-12-05_partner.example_example.org>",
        "TLS-Report-Domain: partner.example",
        "TLS-Report-Submitter: example.org",
        "TLS-Required: No",
        "MIME-Version: 1.0",
    ] {
        assert!(headers.contains(&want), "{want} missing from {headers:#?}");
    }
    assert!(headers
        .iter()
        .any(|h| h.starts_with("Date: ") && h.ends_with(" +0000")));
    let content_type = headers
        .iter()
        .find(|h| h.starts_with("Content-Type: "))
        .unwrap();
    assert!(
        content_type
            .starts_with("Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\""),
        "{content_type}"
    );
    let boundary = content_type
        .rsplit("boundary=\"")
        .next()
        .unwrap()
        .trim_end_matches('"');
    let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
    // preamble, text, attachment, closing "--"
    assert_eq!(parts.len(), 4, "{body}");
    assert!(parts[1].contains("Content-Type: text/plain"));
    let attachment = parts[2];
    assert!(attachment.contains("Content-Type: application/tlsrpt+gzip"));
    assert!(attachment.contains(
        "Content-Disposition: attachment; filename=\"example.org!partner.example!1!2!id.json.gz\""
    ));
    let encoded: String = attachment
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .split("\r\n")
        .inspect(|l| assert!(l.len() <= 76))
        .collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(decoded, gzip);
    assert!(parts[3].starts_with("--"));
}

#[test]
fn lines_that_start_with_a_dot_are_stuffed() {
    assert_eq!(dot_stuff(b"a\r\n.b\r\n..\r\n"), b"a\r\n..b\r\n...\r\n");
    assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n");
}

#[test]
fn dates_are_rfc_5322_in_utc() {
    let t = time::OffsetDateTime::from_unix_timestamp(1_796_540_991).unwrap();
    assert_eq!(rfc5322_date(t), "Sun, 06 Dec 2026 07:09:51 +0000");
}

#[test]
fn a_destination_that_keeps_failing_is_suppressed_and_probed_weekly() {
    use crate::report::day::suppression;
    use std::collections::BTreeMap;
    const DAY: i64 = 86_400;
    let failing: BTreeMap<i64, bool> = (1..=5).map(|d| (d * DAY, false)).collect();
    // Five failed report days: the sixth is not tried...
    assert!(suppression(&failing, 6 * DAY, 5).is_some());
    assert!(suppression(&failing, 6 * DAY, 6).is_none());
    assert!(suppression(&failing, 6 * DAY, 0).is_none());
    // ...until a week after the last attempt.
    assert!(suppression(&failing, 11 * DAY, 5).is_some());
    assert!(suppression(&failing, 12 * DAY, 5).is_none());
    // One report that went ends the streak.
    let mut recovered = failing.clone();
    recovered.insert(4 * DAY, true);
    assert!(suppression(&recovered, 6 * DAY, 5).is_none());
    // Days at or after the report's own are not history.
    assert!(suppression(&failing, 3 * DAY, 2).is_some());
    assert!(suppression(&failing, 2 * DAY, 2).is_none());
}
