use super::data::{EndOfData, Scan};
use super::*;

#[test]
fn commands_parse_table() {
    let table: &[(&[u8], Command)] = &[
        (b"EHLO client.example", Command::Ehlo),
        (b"ehlo x", Command::Ehlo),
        (b"HELO x", Command::Helo),
        (b"STARTTLS", Command::StartTls { has_args: false }),
        (b"starttls ", Command::StartTls { has_args: false }),
        (b"STARTTLS now", Command::StartTls { has_args: true }),
        (
            b"MAIL FROM:<a@Example.ORG>",
            Command::Mail {
                domain: Some("example.org".into()),
            },
        ),
        (
            b"MAIL FROM:<a@example.org.> SIZE=10",
            Command::Mail {
                domain: Some("example.org".into()),
            },
        ),
        (
            b"mail from: <a@b.example>",
            Command::Mail {
                domain: Some("b.example".into()),
            },
        ),
        (b"MAIL FROM:<>", Command::Mail { domain: None }),
        (
            b"MAIL FROM:<@relay.example:u@final.example>",
            Command::Mail {
                domain: Some("final.example".into()),
            },
        ),
        (
            b"MAIL FROM:<\"odd@local\"@quoted.example>",
            Command::Mail {
                domain: Some("quoted.example".into()),
            },
        ),
        (
            b"MAIL FROM:a@bare.example",
            Command::Mail {
                domain: Some("bare.example".into()),
            },
        ),
        (b"MAIL TO:<a@b>", Command::Other),
        (b"MAIL FROM:<unterminated", Command::Other),
        (b"RCPT TO:<postmaster>", Command::Rcpt { domain: None }),
        (
            b"RCPT TO:<u@d.example> NOTIFY=NEVER",
            Command::Rcpt {
                domain: Some("d.example".into()),
            },
        ),
        (b"DATA", Command::Data),
        (
            b"BDAT 100",
            Command::Bdat {
                size: 100,
                last: false,
            },
        ),
        (
            b"BDAT 0 LAST",
            Command::Bdat {
                size: 0,
                last: true,
            },
        ),
        (b"BDAT x", Command::Other),
        (b"BDAT 1 LAST extra", Command::Other),
        (b"RSET", Command::Rset),
        (b"NOOP", Command::Noop),
        (b"QUIT", Command::Quit),
        (b"AUTH PLAIN", Command::Other),
        (b"", Command::Other),
        (b"\xff\xfe garbage", Command::Other),
    ];
    for (line, expected) in table {
        assert_eq!(
            &Command::parse(line),
            expected,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn only_content_and_unknown_commands_end_the_dialogue() {
    for line in [
        &b"EHLO x"[..],
        b"HELO x",
        b"STARTTLS",
        b"RSET",
        b"NOOP",
        b"MAIL FROM:<>",
        b"RCPT TO:<a@b>",
        b"QUIT",
    ] {
        assert!(
            !Command::parse(line).ends_dialogue(),
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
    for line in [&b"DATA"[..], b"BDAT 10 LAST", b"AUTH PLAIN", b"VRFY x"] {
        assert!(Command::parse(line).ends_dialogue());
    }
}

fn reply(code: u16, lines: &[&str]) -> Reply {
    Reply {
        code,
        lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
    }
}

#[test]
fn ehlo_rewrite_strips_backend_starttls_and_adds_ours() {
    let backend = reply(
        250,
        &[
            "mta.example",
            "PIPELINING",
            "starttls",
            "8BITMIME",
            "STARTTLSX",
        ],
    );
    let rewritten = ehlo::rewrite(&backend, true);
    assert_eq!(
        rewritten.to_bytes(),
        b"250-mta.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-STARTTLSX\r\n250 STARTTLS\r\n"
    );
    let inside_tls = ehlo::rewrite(&backend, false);
    assert_eq!(
        inside_tls.to_bytes(),
        b"250-mta.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLSX\r\n"
    );
}

/// Found by the `ehlo` fuzz target: `250-STARTTLS\r\r\n` (text `STARTTLS\r`), a tab or `=`
/// after the keyword, or a blank before it, was passed through as a second STARTTLS.
#[test]
fn fuzz_ehlo_starttls_keyword_not_ended_by_space() {
    let backend = reply(
        250,
        &[
            "mta.example",
            "STARTTLS\r",
            "starttls\tREQUIRED",
            "STARTTLS=x",
            " STARTTLS",
            "\tSTARTTLS ",
            "STARTTLSX",
            "SIZE 1000",
        ],
    );
    assert_eq!(
        ehlo::rewrite(&backend, true).to_bytes(),
        b"250-mta.example\r\n250-STARTTLSX\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"
    );
    assert_eq!(
        ehlo::rewrite(&backend, false).to_bytes(),
        b"250-mta.example\r\n250-STARTTLSX\r\n250 SIZE 1000\r\n"
    );
}

#[test]
fn ehlo_rewrite_of_one_line_reply_offers_starttls() {
    let rewritten = ehlo::rewrite(&reply(250, &["mta.example Hello"]), true);
    assert_eq!(
        rewritten.to_bytes(),
        b"250-mta.example Hello\r\n250 STARTTLS\r\n"
    );
}

#[test]
fn synthesised_ehlo_reply_for_helo_only_backend() {
    let helo = reply(250, &["old.example"]);
    assert_eq!(
        ehlo::synthesise(&helo, true).to_bytes(),
        b"250-old.example\r\n250 STARTTLS\r\n"
    );
    assert_eq!(
        ehlo::synthesise(&helo, false).to_bytes(),
        b"250 old.example\r\n"
    );
}

async fn read_reply(input: &[u8]) -> Result<Reply, reply::ReplyError> {
    let mut reader = LineReader::new(input);
    Reply::read(&mut reader, 512).await
}

#[tokio::test]
async fn replies_parse_multiline_and_bare_code() {
    let r = read_reply(b"250-a\r\n250-b\r\n250 c\r\n").await.unwrap();
    assert_eq!(r, reply(250, &["a", "b", "c"]));
    let r = read_reply(b"220\r\n").await.unwrap();
    assert_eq!(r, reply(220, &[""]));
    let r = read_reply(b"354 go ahead\n").await.unwrap();
    assert_eq!(r.code, 354);
}

#[tokio::test]
async fn malformed_replies_are_errors() {
    for bad in [
        &b"25 short\r\n"[..],
        b"250-a\r\n251 b\r\n",
        b"hello\r\n",
        b"250xtext\r\n",
        b"650 no\r\n",
    ] {
        assert!(
            read_reply(bad).await.is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(matches!(
        read_reply(b"250-a\r\n").await,
        Err(reply::ReplyError::Line(LineError::Eof))
    ));
}

#[tokio::test]
async fn endless_multiline_reply_is_bounded() {
    let flood = b"250-x\r\n".repeat(1000);
    assert!(matches!(
        read_reply(&flood).await,
        Err(reply::ReplyError::TooManyLines)
    ));
}

#[tokio::test]
async fn line_reader_bounds_lines_and_recovers() {
    let mut input = vec![b'A'; 5000];
    input.extend_from_slice(b"\r\nNOOP\r\nRSET\nQUIT");
    let mut reader = LineReader::new(&input[..]);
    assert!(matches!(
        reader.read_line(512).await,
        Err(LineError::TooLong(512))
    ));
    assert_eq!(reader.read_line(512).await.unwrap(), b"NOOP");
    assert_eq!(reader.read_line(512).await.unwrap(), b"RSET");
    assert!(matches!(reader.read_line(512).await, Err(LineError::Eof)));
}

#[tokio::test]
async fn line_reader_limit_counts_the_terminator() {
    let mut reader = LineReader::new(&b"12345678\r\n1234567\r\n"[..]);
    assert!(matches!(
        reader.read_line(9).await,
        Err(LineError::TooLong(9))
    ));
    assert_eq!(reader.read_line(9).await.unwrap(), b"1234567");
}

#[tokio::test]
async fn pipelined_bytes_stay_buffered_and_can_be_discarded() {
    let mut reader = LineReader::new(&b"STARTTLS\r\nRSET\r\n"[..]);
    assert_eq!(reader.read_line(512).await.unwrap(), b"STARTTLS");
    assert_eq!(reader.buffered(), b"RSET\r\n");
    assert_eq!(reader.discard_buffered(), 6);
    let (_, rest) = reader.into_parts();
    assert!(rest.is_empty());
}

#[test]
fn end_of_data_found_across_chunks() {
    let mut scan = EndOfData::default();
    assert_eq!(scan.scan(b"Subject: x\r\n\r\nbody\r"), Scan::Body);
    assert_eq!(scan.scan(b"\n."), Scan::Body);
    assert_eq!(scan.scan(b"\r\nMAIL FROM:<>\r\n"), Scan::End(2));
}

#[test]
fn end_of_data_right_after_354_and_dot_stuffing() {
    assert_eq!(EndOfData::default().scan(b".\r\n"), Scan::End(3));
    let mut scan = EndOfData::default();
    assert_eq!(scan.scan(b"..stuffed\r\n.x\r\n"), Scan::Body);
    assert_eq!(scan.scan(b".\r\n"), Scan::End(3));
}

#[test]
fn bare_lf_in_body_is_refused() {
    assert_eq!(EndOfData::default().scan(b"line\n.\n"), Scan::BareLf(4));
    assert_eq!(EndOfData::default().scan(b"ok\r\nthen\n"), Scan::BareLf(8));
}
