//! `Command::parse` on MAIL FROM / RCPT TO lines built from the spellings Postfix accepts
//! (issue 15, item 3): runs of SP/HTAB between verb and keyword, spaces after the colon and
//! inside the brackets, any case, a trailing dot on the domain, ESMTP parameters. Each must
//! parse to that command with that domain, lowercased, without the dot: a line the backend
//! takes as MAIL but we do not would dodge listed-domain enforcement.

#![no_main]

use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::command::Path;
use starttls_proxy::smtp::Command;

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    let flags = input.byte();
    let case = input.u16();
    let is_mail = flags & 1 == 0;
    let (verb, keyword) = if is_mail {
        ("MAIL", "FROM:")
    } else {
        ("RCPT", "TO:")
    };
    let mut line = Vec::new();
    let mut bit = 0;
    let mut cased = |line: &mut Vec<u8>, word: &str| {
        for c in word.bytes() {
            line.push(if case >> (bit % 16) & 1 == 1 {
                c.to_ascii_lowercase()
            } else {
                c
            });
            bit += 1;
        }
    };
    cased(&mut line, verb);
    // One to four blanks, each SP or HTAB.
    let blanks = input.byte();
    for i in 0..=(blanks & 3) {
        line.push(if blanks >> (2 + i) & 1 == 1 {
            b'\t'
        } else {
            b' '
        });
    }
    cased(&mut line, keyword);
    for _ in 0..(flags >> 1 & 3) {
        line.push(b' ');
    }
    line.push(b'<');
    for _ in 0..(flags >> 3 & 1) {
        line.push(b' ');
    }
    let local = word(&mut input, b"abcdefghijklmnopqrstuvwxyz0123456789._+-", 1);
    line.extend_from_slice(&local);
    line.push(b'@');
    let mut domain = Vec::new();
    let labels = 1 + input.byte() % 3;
    for i in 0..labels {
        if i > 0 {
            domain.push(b'.');
        }
        domain.extend(word(
            &mut input,
            b"aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789-",
            1,
        ));
    }
    line.extend_from_slice(&domain);
    if flags >> 4 & 1 == 1 {
        line.push(b'.');
    }
    for _ in 0..(flags >> 5 & 1) {
        line.push(b' ');
    }
    line.push(b'>');
    if flags >> 6 & 1 == 1 {
        line.extend_from_slice(if is_mail {
            b" SIZE=1000 BODY=8BITMIME"
        } else {
            b" NOTIFY=NEVER"
        });
    }
    let path = Path {
        domain: Some(String::from_utf8(domain).unwrap().to_ascii_lowercase()),
        also_named: Vec::new(),
    };
    let want = if is_mail {
        Command::Mail(path)
    } else {
        Command::Rcpt(path)
    };
    assert_eq!(
        Command::parse(&line),
        want,
        "line {:?}",
        String::from_utf8_lossy(&line)
    );
});

/// One to eight characters of `alphabet`, picked by the input.
fn word(input: &mut Input, alphabet: &[u8], min: usize) -> Vec<u8> {
    let len = min + usize::from(input.byte() % 8);
    (0..len)
        .map(|_| alphabet[usize::from(input.byte()) % alphabet.len()])
        .collect()
}
