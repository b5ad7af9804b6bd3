//! EHLO rewriting and synthesis on any reply the parser can produce (1 to 127 lines of text
//! without LF; a 128th would be our STARTTLS), checked as an SMTP client reads the result.
//! A client takes a line as offering STARTTLS when, after leading blanks, it starts with the
//! keyword followed by the end, whitespace or `=` (Postfix splits EHLO words on SP, HTAB and
//! `=`, and drops trailing CR and blanks). Then:
//! - STARTTLS is offered exactly once when we offer it (as the last line) and never otherwise:
//!   the backend's own offer, however spelled, never reaches the client;
//! - the greeting line and code are kept, and every other backend line, in order;
//! - the result reads back with `Reply::read` as the same reply.

#![no_main]

use fuzz_support::{block_on, Input, Peer};
use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::{ehlo, LineReader, Reply};

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    let code = 200 + input.u16() % 400;
    let offer = input.byte() & 1 == 1;
    let lines: Vec<Vec<u8>> = input
        .rest()
        .split(|&b| b == b'\n')
        .take(127)
        .map(<[u8]>::to_vec)
        .collect();
    let reply = Reply { code, lines };

    let out = ehlo::rewrite(&reply, offer);
    assert_eq!(out.code, reply.code);
    assert_eq!(out.lines[0], reply.lines[0], "greeting line changed");
    let offered = out.lines[1..].iter().filter(|l| offers_starttls(l)).count();
    assert_eq!(
        offered,
        usize::from(offer),
        "STARTTLS offered {offered} times in {out:?}"
    );
    if offer {
        assert_eq!(out.lines.last().unwrap(), b"STARTTLS");
    }
    let kept: Vec<&Vec<u8>> = reply.lines[1..]
        .iter()
        .filter(|l| !offers_starttls(l))
        .collect();
    let passed: Vec<&Vec<u8>> = out.lines[1..out.lines.len() - usize::from(offer)]
        .iter()
        .collect();
    assert_eq!(passed, kept, "backend lines dropped or changed");
    reads_back(&out);

    let synth = ehlo::synthesise(&reply, offer);
    assert_eq!(synth.code, 250);
    let mut want = vec![reply.lines[0].clone()];
    if offer {
        want.push(b"STARTTLS".to_vec());
    }
    assert_eq!(synth.lines, want);
    reads_back(&synth);
});

fn offers_starttls(line: &[u8]) -> bool {
    let line = line.trim_ascii_start();
    line.len() >= 8
        && line[..8].eq_ignore_ascii_case(b"STARTTLS")
        && line
            .get(8)
            .is_none_or(|&b| b.is_ascii_whitespace() || b == b'=')
}

fn reads_back(reply: &Reply) {
    let (peer, _) = Peer::new(reply.to_bytes(), Vec::new());
    let mut reader = LineReader::new(peer);
    let again = block_on(Reply::read(&mut reader, usize::MAX));
    assert_eq!(again.as_ref().ok(), Some(reply), "read back as {again:?}");
}
