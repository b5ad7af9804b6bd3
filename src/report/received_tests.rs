use super::*;
use std::io::Write;

/// A report as Google sends them (RFC 8460 §4.4 with `mx-host` and extra fields).
const GOOGLE_JSON: &str = r#"{"organization-name":"Google Inc.","date-range":{"start-datetime":"2026-12-05T00:00:00Z","end-datetime":"2026-12-05T23:59:59Z"},"contact-info":"smtp-tls-reporting@google.com","report-id":"2026-12-05T00:00:00Z_example.org","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx1.example.org","max_age: 86400"],"policy-domain":"example.org","mx-host":["mx1.example.org"]},"summary":{"total-successful-session-count":120,"total-failure-session-count":3},"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"209.85.220.41","receiving-mx-hostname":"mx1.example.org","receiving-ip":"192.0.2.25","failed-session-count":3,"additional-information":"x"}]}]}"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn mail(content_type: &str, part_type: &str, encoding: &str, body: &str) -> Vec<u8> {
    format!(
        "From: noreply-smtp-tls-reporting@google.com\r\n\
         Subject: Report Domain: example.org Submitter: google.com Report-ID: <x>\r\n\
         TLS-Report-Domain: example.org\r\n\
         Content-Type: {content_type}\r\n\r\n\
         preamble\r\n\
         --b1\r\n\
         Content-Type: text/plain\r\n\r\n\
         hello\r\n\
         --b1\r\n\
         Content-Type: {part_type}; name=\"r.json.gz\"\r\n\
         Content-Transfer-Encoding: {encoding}\r\n\r\n\
         {body}\r\n\
         --b1--\r\n"
    )
    .into_bytes()
}

fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[test]
fn a_report_mail_is_read_in_each_form_senders_use() {
    let gz = base64_lines(&gzip(GOOGLE_JSON.as_bytes()));
    let report = parse_message(&mail(
        "multipart/report; report-type=\"tlsrpt\"; boundary=\"b1\"",
        GZIP_TYPE,
        "base64",
        &gz,
    ))
    .unwrap();
    assert_eq!(report.organization_name, "Google Inc.");
    assert_eq!(report.policies[0].summary.failed, 3);
    assert_eq!(
        report.policies[0].failure_details[0].result_type.as_str(),
        "certificate-expired"
    );
    // Unquoted boundary, JSON part in 7bit, LF line endings.
    let json = mail(
        "multipart/report; report-type=tlsrpt; boundary=b1",
        JSON_TYPE,
        "7bit",
        GOOGLE_JSON,
    );
    let lf: Vec<u8> = String::from_utf8(json)
        .unwrap()
        .replace("\r\n", "\n")
        .into();
    assert_eq!(parse_message(&lf).unwrap(), report);
    // Nested in multipart/mixed (a forwarded report), folded Content-Type header.
    let inner = mail(
        "multipart/report;\r\n\treport-type=\"tlsrpt\"; boundary=\"b1\"",
        GZIP_TYPE,
        "base64",
        &gz,
    );
    let outer = format!(
        "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n{}\r\n--outer--\r\n",
        String::from_utf8(inner).unwrap()
    );
    assert_eq!(parse_message(outer.as_bytes()).unwrap(), report);
    // The bare files.
    assert_eq!(
        parse_file("r.json", GOOGLE_JSON.as_bytes()).unwrap(),
        report
    );
    assert_eq!(
        parse_file("r.json.gz", &gzip(GOOGLE_JSON.as_bytes())).unwrap(),
        report
    );
}

#[test]
fn our_own_mailed_report_reads_back() {
    let reporting = crate::config::TlsReporting {
        organization: "Example Org".into(),
        contact: "mailto:postmaster@example.org".into(),
        submitter: "example.org".into(),
        send_via: None,
        from: "tlsrpt-noreply@example.org".into(),
        only_with_failures: false,
        send_spread: std::time::Duration::ZERO,
        suppress_after_days: 0,
        receive: Vec::new(),
    };
    let report = parse_json(GOOGLE_JSON.as_bytes()).unwrap();
    let gz = report.to_gzip();
    let message = crate::report::deliver::MailedReport {
        reporting: &reporting,
        domain: "example.org",
        report_id: &report.report_id,
        file_name: "x.json.gz",
        gzip: &gz,
        to: "tlsrpt@example.org",
    }
    .message(time::OffsetDateTime::UNIX_EPOCH);
    assert_eq!(parse_message(&message).unwrap(), report);
}

#[test]
fn what_is_not_a_well_formed_report_is_refused_with_its_reason() {
    let gz = base64_lines(&gzip(GOOGLE_JSON.as_bytes()));
    let report_type = "multipart/report; report-type=tlsrpt; boundary=b1";
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Wrong media types: a generic gzip, a DMARC report.
        (
            mail(report_type, "application/gzip", "base64", &gz),
            "not_a_report",
        ),
        (b"Subject: hi\r\n\r\nhello\r\n".to_vec(), "not_a_report"),
        // No closing boundary, no boundary at all.
        (
            mail(report_type, GZIP_TYPE, "base64", &gz)
                .strip_suffix(b"--b1--\r\n")
                .unwrap()
                .to_vec(),
            "malformed",
        ),
        (
            mail("multipart/report", GZIP_TYPE, "base64", &gz),
            "malformed",
        ),
        // Broken base64, quoted-printable, gzip that is not, JSON that is not a report.
        (
            mail(report_type, GZIP_TYPE, "base64", "!!!notbase64"),
            "malformed",
        ),
        (
            mail(report_type, GZIP_TYPE, "quoted-printable", "x"),
            "malformed",
        ),
        (
            mail(report_type, GZIP_TYPE, "base64", &base64_lines(b"plain")),
            "malformed",
        ),
        (
            mail(report_type, JSON_TYPE, "7bit", "{\"organization-name\":1}"),
            "malformed",
        ),
        (
            mail(
                report_type,
                JSON_TYPE,
                "7bit",
                &GOOGLE_JSON.replace("certificate-expired", "made-up-type"),
            ),
            "malformed",
        ),
        (
            mail(report_type, JSON_TYPE, "7bit", &GOOGLE_JSON[..200]),
            "malformed",
        ),
    ];
    for (message, reason) in cases {
        let got = parse_message(&message);
        assert_eq!(
            got.as_ref().map_err(ReceivedError::reason).err(),
            Some(reason),
            "{got:?} for {}",
            String::from_utf8_lossy(&message)
        );
    }
}

#[test]
fn size_and_decompression_are_bounded() {
    let huge = vec![b'x'; MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        parse_message(&huge),
        Err(ReceivedError::TooLarge(MAX_MESSAGE_BYTES))
    );
    // A gzip bomb: 17 MiB of spaces in about 17 KB.
    let bomb = gzip(&vec![b' '; MAX_JSON_BYTES + 1024 * 1024]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    assert_eq!(
        parse_gzip(&bomb),
        Err(ReceivedError::TooLarge(MAX_JSON_BYTES))
    );
    // Nesting beyond the bound.
    let mut message = mail(
        "multipart/report; boundary=b1",
        JSON_TYPE,
        "7bit",
        GOOGLE_JSON,
    );
    for i in 0..6 {
        message = format!(
            "Content-Type: multipart/mixed; boundary=n{i}\r\n\r\n--n{i}\r\n{}\r\n--n{i}--\r\n",
            String::from_utf8(message).unwrap()
        )
        .into_bytes();
    }
    assert!(matches!(
        parse_message(&message),
        Err(ReceivedError::Mime(m)) if m.contains("nested")
    ));
}

#[test]
fn microsoft_style_reports_read_too() {
    // Dates without a zone, `mx-host` as one string, no failure details.
    let json = r#"{"organization-name":"Microsoft Corporation","date-range":{"start-datetime":"2026-12-05T00:00:00","end-datetime":"2026-12-05T23:59:59"},"contact-info":"tlsrpt-noreply@microsoft.com","report-id":"133","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"example.org","mx-host":"mx1.example.org"},"summary":{"total-successful-session-count":42,"total-failure-session-count":0}}]}"#;
    let report = parse_json(json.as_bytes()).unwrap();
    assert_eq!(report.policies[0].policy.mx_host, ["mx1.example.org"]);
    assert!(report.policies[0].failure_details.is_empty());
    assert_eq!(report.date_range.start, "2026-12-05T00:00:00");
}
