use super::data::{EndOfData, Scan};
use super::*;
use tokio::io::AsyncWriteExt;

#[test]
fn commands_parse_table() {
    let table: &[(&[u8], Command)] = &[
        (b"EHLO client.example", Command::Ehlo),
        (b"ehlo x", Command::Ehlo),
        (b"HELO x", Command::Helo),
        (b"STARTTLS", Command::StartTls { has_args: false }),
        (b"starttls ", Command::StartTls { has_args: false }),
        (b"STARTTLS now", Command::StartTls { has_args: true }),
        (b"MAIL TO:<a@b>", Command::BadEnvelope),
        (b"MAIL FROM :<a@b>", Command::BadEnvelope),
        (b"MAIL FROM<a@b>", Command::BadEnvelope),
        (b"MAILFROM:<a@b>", Command::BadEnvelope),
        (b"MAIL", Command::BadEnvelope),
        (b"RCPT", Command::BadEnvelope),
        (b"rcptto:<a@b>", Command::BadEnvelope),
        (b"SEND FROM:<a@b>", Command::BadEnvelope),
        (b"MAIL FROM:<unterminated", Command::BadEnvelope),
        (b"MAIL FROM:<a@b\0>", Command::BadEnvelope),
        (b"MAIL FROM:<a@b\r>", Command::BadEnvelope),
        (b"MAIL FROM:<a@b\x7f>", Command::BadEnvelope),
        (b"MAIL FROM:<a@\xff>", Command::BadEnvelope),
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

/// `(line, domain, also_named)`: every spelling here is one Postfix 3.7 accepts (issue 15).
#[test]
fn envelope_paths_are_read_as_mtas_read_them() {
    let table: &[(&[u8], Option<&str>, &[&str])] = &[
        (b"MAIL FROM:<a@Example.ORG>", Some("example.org"), &[]),
        (
            b"MAIL FROM:<a@example.org.> SIZE=10",
            Some("example.org"),
            &[],
        ),
        (b"mail from: <a@b.example>", Some("b.example"), &[]),
        (b"MAIL FROM:<>", None, &[]),
        (b"MAIL FROM:a@bare.example", Some("bare.example"), &[]),
        (b"MAIL\tFROM:<a@s.test>", Some("s.test"), &[]),
        (b"MAIL  FROM:<a@s.test>", Some("s.test"), &[]),
        (b" MAIL FROM:<a@s.test>", Some("s.test"), &[]),
        (b"\tMAIL FROM:<a@s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:\t<a@s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:< a@s.test >", Some("s.test"), &[]),
        (b"MAIL FROM:<a @ s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s .test>", Some("s.test"), &[]),
        (b"MAIL FROM:a@s.test(c)", Some("s.test"), &[]),
        (b"MAIL FROM:<a@(c)s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<(c)a@s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test(c)>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test(>", Some("s.test"), &[]),
        (b"MAIL FROM:(c)<a@s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test>(c)", Some("s.test"), &[]),
        (
            b"MAIL FROM:(a (nested) comment)<a@s.test>",
            Some("s.test"),
            &[],
        ),
        (b"MAIL FROM:<a@\"s.test\">", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s\\.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<<a@s.test>>", Some("s.test"), &[]),
        (b"MAIL FROM:a@s.test>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test,>", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test>\t", Some("s.test"), &[]),
        (b"MAIL FROM:<a@s.test>  BODY=8BITMIME", Some("s.test"), &[]),
        (b"MAIL FROM:<\"a@b\"@s.test>", Some("s.test"), &["b"]),
        (b"MAIL FROM:<a\\@x@s.test>", Some("s.test"), &["x"]),
        (b"MAIL FROM:<@r.test:a@s.test>", Some("s.test"), &["r.test"]),
        (
            b"MAIL FROM:<@r1.test,@r2.test:a@s.test>",
            Some("s.test"),
            &["r1.test", "r2.test"],
        ),
        (
            b"MAIL FROM:<a@s.test@other.test>",
            Some("other.test"),
            &["s.test"],
        ),
        (
            b"MAIL FROM:<a%s.test@relay.test>",
            Some("relay.test"),
            &["s.test"],
        ),
        (b"MAIL FROM:<s.test!a>", Some("s.test"), &[]),
        (
            b"MAIL FROM:<s.test!a@relay.test>",
            Some("relay.test"),
            &["s.test"],
        ),
        (b"RCPT TO:<postmaster>", None, &[]),
        (
            b"RCPT TO:<u@d.example> NOTIFY=NEVER",
            Some("d.example"),
            &[],
        ),
        (b"RCPT\tTO:<u@d.example>", Some("d.example"), &[]),
        (b"rcpt to:u@D.Example.", Some("d.example"), &[]),
        (b"RCPT TO:(c)<u@d.example>", Some("d.example"), &[]),
    ];
    for (line, domain, also) in table {
        let path = match Command::parse(line) {
            Command::Mail(p) | Command::Rcpt(p) => p,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(line)),
        };
        let expected = command::Path {
            domain: domain.map(str::to_string),
            also_named: also.iter().map(|d| d.to_string()).collect(),
        };
        assert_eq!(path, expected, "{:?}", String::from_utf8_lossy(line));
    }
}

/// The first fuzzing pass (fuzz/corpus/command/regression-*): blanks and brackets were kept
/// in the domain, which then matched no listed domain.
#[test]
fn fuzz_command_domains_keep_no_blanks_or_brackets() {
    for line in [
        &b"MAIL FROM:< alice@secure.test >"[..],
        b"RCPT TO:<bob@secure.test\t>",
        b"MAIL FROM:alice@secure.test\tSIZE=100",
        b"MAIL FROM:alice@secure.test>",
        b"MAIL FROM:<alice@\"secure .test\">",
    ] {
        match Command::parse(line) {
            Command::Mail(p) | Command::Rcpt(p) => {
                assert_eq!(p.domain.as_deref(), Some("secure.test"), "{line:?}")
            }
            other => panic!("{line:?}: {other:?}"),
        }
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
    // The rest of the line counts once per further 512 bytes, then the next line is read.
    let mut more = 0;
    let next = loop {
        match reader.read_line(512).await {
            Err(LineError::StillTooLong(512)) => more += 1,
            other => break other,
        }
    };
    assert_eq!(more, (5002 - 512) / 512);
    assert_eq!(next.unwrap(), b"NOOP");
    assert_eq!(reader.read_line(512).await.unwrap(), b"RSET");
    assert!(matches!(reader.read_line(512).await, Err(LineError::Eof)));
}

/// Issue 15: the 500 came only when the line's end arrived (or the idle timeout).
#[tokio::test]
async fn over_long_line_is_refused_before_its_end_arrives() {
    let (mut peer, ours) = tokio::io::duplex(1 << 20);
    let mut reader = LineReader::new(ours);
    peer.write_all(&[b'x'; 600]).await.unwrap();
    assert!(matches!(
        reader.read_line(512).await,
        Err(LineError::TooLong(512))
    ));
    assert!(reader.held() <= 512, "held {}", reader.held());
    peer.write_all(b"still the same line\r\nNOOP\r\n")
        .await
        .unwrap();
    assert_eq!(reader.read_line(512).await.unwrap(), b"NOOP");
}

/// Issue 15: a line trickled a byte per read was rescanned whole after every read (O(n²)), and
/// `read_buf` filled whatever capacity `Vec` doubling left (twice the bound).
#[tokio::test]
async fn trickled_and_flooded_lines_stay_within_the_bound() {
    const MAX: usize = 65536;
    let mut line = vec![b'y'; MAX - 2];
    line.extend_from_slice(b"\r\n");
    let mut reader = LineReader::new(OneByteAtATime(&line));
    assert_eq!(reader.read_line(MAX).await.unwrap().len(), MAX - 2);

    let mut flood = Vec::new();
    for _ in 0..3 {
        flood.extend_from_slice(&[b'z'; 2000]);
        flood.extend_from_slice(b"\r\n");
    }
    let mut reader = LineReader::new(&flood[..]);
    for _ in 0..3 {
        assert_eq!(reader.read_line(2048).await.unwrap().len(), 2000);
        assert!(reader.held() <= 2048, "held {}", reader.held());
    }
}

/// Hands out one byte per read, as a peer sending one byte per TCP segment would.
struct OneByteAtATime<'a>(&'a [u8]);

impl tokio::io::AsyncRead for OneByteAtATime<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some((&first, rest)) = self.0.split_first() {
            buf.put_slice(&[first]);
            self.0 = rest;
        }
        std::task::Poll::Ready(Ok(()))
    }
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

#[test]
fn the_reverse_path_mailbox_is_read_as_the_mta_would() {
    use crate::smtp::command::reverse_path_mailbox;
    let table: &[(&[u8], Option<&str>)] = &[
        (
            b"MAIL FROM:<TLSRPT@Example.org>",
            Some("tlsrpt@example.org"),
        ),
        (
            b"mail from: <tlsrpt@example.org> SIZE=100",
            Some("tlsrpt@example.org"),
        ),
        (
            b"MAIL FROM:<@relay.example:tlsrpt@example.org>",
            Some("tlsrpt@example.org"),
        ),
        (
            b"MAIL FROM:<\"tlsrpt\"@example.org>",
            Some("tlsrpt@example.org"),
        ),
        (b"MAIL FROM:<>", None),
        (b"RCPT TO:<tlsrpt@example.org>", None),
        (b"MAIL FROM:<tlsrpt@example.org", None),
    ];
    assert_eq!(
        crate::smtp::command::forward_path_mailbox(b"rcpt to: <TLSRPT@example.org> NOTIFY=NEVER")
            .as_deref(),
        Some("tlsrpt@example.org")
    );
    assert_eq!(
        crate::smtp::command::forward_path_mailbox(b"MAIL FROM:<a@b.example>"),
        None
    );
    for (line, want) in table {
        assert_eq!(
            reverse_path_mailbox(line).as_deref(),
            *want,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}
