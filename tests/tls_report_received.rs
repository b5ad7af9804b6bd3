//! Issue 14, point 3 (incoming reports) against real peers: swaks, a raw SMTP client and a
//! Postfix sender deliver TLS reports (Google's JSON, gzip'd, as `multipart/report`) through
//! the proxy's inbound listener to our report address; Postfix is the legacy MTA behind it and
//! must never see them. Then `tls-report --received` and `tls-report import`.

mod common;

use base64::Engine as _;
use common::postfix::{Role, MAIL_DOMAIN};
use common::proxy::run_cli;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};

const REPORT_ADDRESS: &str = "tlsrpt@example.org";

const GOOGLE_JSON: &str = r#"{"organization-name":"Google Inc.","date-range":{"start-datetime":"2026-12-05T00:00:00Z","end-datetime":"2026-12-05T23:59:59Z"},"contact-info":"smtp-tls-reporting@google.com","report-id":"2026-12-05T00:00:00Z_example.org","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce","mx: mx1.example.org","max_age: 86400"],"policy-domain":"example.org","mx-host":["mx1.example.org"]},"summary":{"total-successful-session-count":120,"total-failure-session-count":3},"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":"209.85.220.41","receiving-mx-hostname":"mx1.example.org","receiving-ip":"192.0.2.25","failed-session-count":3}]}]}"#;

const REPORTING: &str = r#"
[tls_reporting]
organization = "Example Org"
contact = "mailto:postmaster@example.org"
submitter = "example.org"
from = "tlsrpt-noreply@example.org"
receive = ["TLSRPT@example.org"]
"#;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A report e-mail as Google sends them: multipart/report, the gzip'd JSON in base64.
fn report_mail(json: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzip(json));
    let lines: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: noreply-smtp-tls-reporting@google.com\r\n\
         To: {REPORT_ADDRESS}\r\n\
         Subject: Report Domain: example.org Submitter: google.com Report-ID: <2026-12-05T00:00:00Z_example.org@google.com>\r\n\
         TLS-Report-Domain: example.org\r\n\
         TLS-Report-Submitter: google.com\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; boundary=\"0000b\"; report-type=tlsrpt\r\n\r\n\
         --0000b\r\n\
         Content-Type: text/plain; charset=\"UTF-8\"\r\n\r\n\
         This is an aggregate TLS report from google.com\r\n\
         .leading dot\r\n\
         --0000b\r\n\
         Content-Type: application/tlsrpt+gzip; name=\"google.com!example.org!1796428800!1796515199!001.json.gz\"\r\n\
         Content-Disposition: attachment\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n\
         {}\r\n\
         --0000b--\r\n",
        lines.join("\r\n")
    )
}

struct Site {
    dir: TempDir,
    ca: Ca,
    backend: Postfix,
    proxy: Proxy,
}

fn site(tag: &str) -> Site {
    let (dir, ca, leaf) = setup(tag);
    let backend = Postfix::start(dir.path(), "legacy", Role::Backend { tls: None });
    let text = ProxyBuilder::new(dir.path(), &leaf, backend.addr).config_text() + REPORTING;
    let proxy = Proxy::start_text(dir.path(), &text);
    Site {
        dir,
        ca,
        backend,
        proxy,
    }
}

fn received_files(state: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state.join("received"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| !f.file_name().unwrap().to_string_lossy().starts_with('.'));
    files.sort();
    files
}

#[test]
fn a_report_to_our_address_is_kept_on_disk_and_never_reaches_the_backend() {
    let s = site("received-swaks");
    let mail = s.dir.join("report.eml");
    std::fs::write(&mail, report_mail(GOOGLE_JSON.as_bytes())).unwrap();
    let run = swaks(
        s.proxy.addr(),
        &[
            "--tls",
            "--tls-ca-path",
            s.ca.path.to_str().unwrap(),
            "--from",
            "noreply-smtp-tls-reporting@google.com",
            "--to",
            REPORT_ADDRESS,
            "--data",
            mail.to_str().unwrap(),
        ],
    );
    run.assert_success();
    assert!(
        run.all().contains("250 2.0.0 Ok: TLS report kept as"),
        "{}",
        run.all()
    );
    let state = s.dir.join("state");
    let files = received_files(&state);
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        kept.starts_with("Received: from [127.0.0.1] by proxy.test"),
        "{kept}"
    );
    assert!(kept.contains("TLSv1."), "the trace names the TLS: {kept}");
    // Dot-stuffing undone, the body byte for byte.
    assert!(kept.contains("\r\n.leading dot\r\n"), "{kept}");
    assert!(kept.contains("\r\n--0000b--\r\n"), "{kept:?}");
    s.proxy
        .wait_event("tls_report_received", &[("organization", "Google Inc.")]);
    s.proxy.assert_metric(
        "starttls_proxy_tls_reports_received_total",
        &[("result", "ok")],
        1.0,
    );
    s.proxy.assert_metric(
        "starttls_proxy_tls_report_failed_sessions_total",
        &[
            ("organization", "Google Inc."),
            ("result_type", "certificate-expired"),
        ],
        3.0,
    );
    // The backend saw a MAIL and a RSET, never the recipient or the message.
    assert!(s.backend.delivered().is_empty());
    let log = s.backend.wait_maillog("disconnect from");
    assert!(!log.contains("rcpt="), "{log}");

    let (code, out, err) = run_cli(&[
        "tls-report",
        "--received",
        "--day",
        "2026-12-05",
        "--config",
        s.proxy.config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Google Inc. (smtp-tls-reporting@google.com), example.org sts: 120 successful, 3 failed sessions"),
        "{out}"
    );
    assert!(
        out.contains("certificate-expired: 3 (from 209.85.220.41 to mx1.example.org 192.0.2.25)"),
        "{out}"
    );
}

#[test]
fn report_and_other_recipients_go_in_separate_transactions() {
    let s = site("received-split");
    let (mut c, _) = SmtpClient::greeted(s.proxy.addr());
    c.cmd("EHLO client.test").assert(250, "");
    let to = format!("bob@{MAIL_DOMAIN}");
    // The report address first: the transaction is ours, other recipients wait.
    c.cmd("MAIL FROM:<noreply@reporter.test>")
        .assert(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<{REPORT_ADDRESS}>"))
        .assert(250, "2.1.5");
    c.cmd(&format!("RCPT TO:<{to}>")).assert(452, "4.5.3");
    let data = c.cmd("DATA");
    assert_eq!(data.code, 354, "{data:?}");
    c.send(report_mail(GOOGLE_JSON.as_bytes()).as_bytes());
    c.send(b".\r\n");
    c.reply().assert(250, "2.0.0");
    // The other recipient first: the backend's transaction, the report waits.
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<{to}>")).assert(250, "2.1.5");
    c.cmd(&format!("RCPT TO:<{REPORT_ADDRESS}>"))
        .assert(452, "4.5.3");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: not a report\r\n\r\nhello\r\n.\r\n");
    c.reply().assert(250, "2.0.0");
    // BDAT (RFC 3030), in two chunks.
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.has_extension("CHUNKING"), "{ehlo:?}");
    c.cmd("MAIL FROM:<noreply@reporter.test>")
        .assert(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<{REPORT_ADDRESS}>"))
        .assert(250, "2.1.5");
    let json = GOOGLE_JSON.replace("2026-12-05T00:00:00Z_example.org", "chunked");
    let message = report_mail(json.as_bytes()).into_bytes();
    let (first, second) = message.split_at(100);
    c.send(format!("BDAT {}\r\n", first.len()).as_bytes());
    c.send(first);
    c.reply().assert(250, "2.0.0");
    c.send(format!("BDAT {} LAST\r\n", second.len()).as_bytes());
    c.send(second);
    c.reply().assert(250, "2.0.0");
    c.cmd("QUIT").assert(221, "2.0.0");
    let delivered = s.backend.wait_delivered(1);
    assert!(delivered[0].contains("not a report"));
    let files = received_files(&s.dir.join("state"));
    assert_eq!(files.len(), 2);
    assert!(files
        .iter()
        .any(|f| std::fs::read(f).unwrap().ends_with(&message)));
    s.proxy
        .wait_event("tls_report_received", &[("report_id", "chunked")]);
}

#[test]
fn postfix_delivers_a_report_and_other_mail_in_one_go_and_both_arrive() {
    let s = site("received-postfix");
    let sender = Postfix::start(s.dir.path(), "sender", Role::relay_to(s.proxy.addr()));
    let body = report_mail(GOOGLE_JSON.as_bytes());
    // One message, two recipients: the proxy answers one of them 452 4.5.3.
    let (mut c, _) = SmtpClient::greeted(sender.addr);
    c.cmd("EHLO client.test").assert(250, "");
    c.cmd("MAIL FROM:<noreply@reporter.test>")
        .assert(250, "2.1.0");
    c.cmd(&format!("RCPT TO:<bob@{MAIL_DOMAIN}>"))
        .assert(250, "2.1.5");
    c.cmd(&format!("RCPT TO:<{REPORT_ADDRESS}>"))
        .assert(250, "2.1.5");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(body.as_bytes());
    c.send(b".\r\n");
    c.reply().assert(250, "2.0.0");
    c.cmd("QUIT");
    s.backend.wait_delivered(1);
    let state = s.dir.join("state");
    eventually("the report in received/", || {
        sender.flush();
        (!received_files(&state).is_empty()).then_some(())
    });
    sender.wait_queue_empty();
    assert_eq!(received_files(&state).len(), 1);
    assert_eq!(s.backend.delivered().len(), 1);
}

#[test]
fn oversized_bombs_and_garbage_get_clear_answers() {
    let s = site("received-bad");
    let (mut c, _) = SmtpClient::greeted(s.proxy.addr());
    c.cmd("EHLO client.test").assert(250, "");
    // 100 MB would be refused the same way; 11 MB shows the bound without the wait.
    c.open_data("noreply@reporter.test", REPORT_ADDRESS);
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..(11 * 1024 * 1024 / line.len()) {
        c.send(line.as_bytes());
    }
    c.send(b".\r\n");
    c.reply().assert(552, "5.3.4");
    // A gzip bomb and a non-report are kept (the sender cannot fix them) and counted.
    let bomb = report_mail(&vec![b' '; 20 * 1024 * 1024]);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    c.open_data("noreply@reporter.test", REPORT_ADDRESS);
    c.send(bomb.as_bytes());
    c.send(b".\r\n");
    c.reply().assert(250, "2.0.0");
    let replies = c.mail("noreply@reporter.test", &[REPORT_ADDRESS], "just words");
    replies.last().unwrap().assert(250, "2.0.0");
    c.cmd("QUIT").assert(221, "2.0.0");
    s.proxy.wait_event("tls_report_unreadable", &[]);
    let metrics = s.proxy.metrics();
    assert_metric(
        &metrics,
        "starttls_proxy_tls_reports_received_total",
        &[("result", "too_large")],
        2.0,
    );
    assert_metric(
        &metrics,
        "starttls_proxy_tls_reports_received_total",
        &[("result", "not_a_report")],
        1.0,
    );
    assert_eq!(received_files(&s.dir.join("state")).len(), 2);
    assert!(s.backend.delivered().is_empty());
    let (code, out, _) = run_cli(&[
        "tls-report",
        "--received",
        "--config",
        s.proxy.config.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("(2 files unreadable)"), "{out}");
}

#[test]
fn import_takes_maildirs_and_files_and_refuses_what_is_not_a_report() {
    let s = site("received-import");
    let inbox = s.dir.join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(inbox.join(sub)).unwrap();
    }
    std::fs::write(inbox.join("new/1.eml"), report_mail(GOOGLE_JSON.as_bytes())).unwrap();
    std::fs::write(
        inbox.join("cur/2.eml"),
        "Subject: hello\r\n\r\nno report\r\n",
    )
    .unwrap();
    let microsoft = GOOGLE_JSON
        .replace("Google Inc.", "Microsoft Corporation")
        .replace("2026-12-05T00:00:00Z\"", "2026-12-05T00:00:00\"");
    let files = s.dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("ms.json"), &microsoft).unwrap();
    std::fs::write(files.join("g.json.gz"), gzip(GOOGLE_JSON.as_bytes())).unwrap();
    let config = s.proxy.config.to_str().unwrap();
    let import = |path: &Path| {
        run_cli(&[
            "tls-report",
            "import",
            path.to_str().unwrap(),
            "--config",
            config,
        ])
    };
    let (code, out, err) = import(&inbox);
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(
        out.contains("1 imported, 0 already kept, 1 not imported"),
        "{out}"
    );
    assert!(
        out.contains("2.eml: NOT imported: no application/tlsrpt+gzip"),
        "{out}"
    );
    let (code, out, _) = import(&files);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 imported"), "{out}");
    let (code, out, _) = import(&files.join("ms.json"));
    assert_eq!(code, 0);
    assert!(out.contains("already kept"), "{out}");
    let (code, _, err) = import(&s.dir.join("missing"));
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = run_cli(&[
        "tls-report",
        "--received",
        "--day",
        "2026-12-05",
        "--config",
        config,
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("3 reports"), "{out}");
    assert!(out.contains("Microsoft Corporation"), "{out}");
}

/// Nothing lost: a report that cannot be kept is answered 451, so the sender keeps it.
#[test]
fn a_report_that_cannot_be_stored_gets_451_and_the_sender_keeps_it() {
    let s = site("received-unwritable");
    // The directory (made at start) replaced by a file: no report can be written there.
    let received = s.dir.join("state/received");
    assert!(received.is_dir(), "made at start");
    std::fs::remove_dir(&received).unwrap();
    std::fs::write(&received, b"not a directory").unwrap();
    let (mut c, _) = SmtpClient::greeted(s.proxy.addr());
    c.cmd("EHLO client.test").assert(250, "");
    c.open_data("noreply@reporter.test", REPORT_ADDRESS);
    c.send(report_mail(GOOGLE_JSON.as_bytes()).as_bytes());
    c.send(b".\r\n");
    c.reply().assert(451, "4.3.0");
    s.proxy.wait_event("tls_report_not_stored", &[]);
    // The session goes on: the next transaction is served.
    c.cmd("MAIL FROM:<alice@sender.test>").assert(250, "2.1.0");
    c.cmd("QUIT").assert(221, "2.0.0");
}
