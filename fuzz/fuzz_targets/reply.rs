//! `Reply::read` over a peer that sends the input in fuzz-chosen pieces, against a model of the
//! reply grammar (RFC 5321 §4.2: `NNN-text` continues, `NNN text` or bare `NNN` ends; first
//! digit 2 to 5; one code per reply; at most 128 lines; each line within `max`):
//! - every reply read equals the model's, and every error is the model's error;
//! - a reply written back with `to_bytes` reads back equal (what we relay is what we read).

#![no_main]

use fuzz_support::{block_on, Input, Peer};
use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::reply::ReplyError;
use starttls_proxy::smtp::{LineError, LineReader, Reply};

/// `MAX_REPLY_LINES` in src/smtp/reply.rs.
const MAX_LINES: usize = 128;

#[derive(Debug)]
enum Want {
    Reply(Reply),
    Malformed,
    TooManyLines,
    TooLong,
    /// The stream ended; `TooLong` is also right if the unterminated tail reached `max`.
    Eof {
        tail_too_long: bool,
    },
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    let max = usize::from(input.u16() % 8192) + 1;
    let sizes = input.piece_sizes();
    let repeat = usize::from(input.byte());
    let data = input.stream(repeat, 1, 64 * 1024);

    let (peer, _) = Peer::new(data.clone(), sizes.clone());
    let mut reader = LineReader::new(peer);
    let mut pos = 0;
    loop {
        let got = block_on(Reply::read(&mut reader, max));
        let want = model(&data, &mut pos, max);
        match (&got, &want) {
            (Ok(reply), Want::Reply(w)) => {
                assert_eq!(reply, w);
                assert_eq!(reply.is_positive(), (200..400).contains(&reply.code));
                let _ = reply.first_text();
                round_trip(reply, &sizes);
            }
            (Err(ReplyError::Malformed(_)), Want::Malformed)
            | (Err(ReplyError::TooManyLines), Want::TooManyLines)
            | (Err(ReplyError::Line(LineError::TooLong(_))), Want::TooLong)
            | (Err(ReplyError::Line(LineError::Eof)), Want::Eof { .. })
            | (
                Err(ReplyError::Line(LineError::TooLong(_))),
                Want::Eof {
                    tail_too_long: true,
                },
            ) => return,
            _ => panic!("got {got:?}, want {want:?} (max {max})"),
        }
    }
});

/// The next reply in `data` from `pos`, by the grammar.
fn model(data: &[u8], pos: &mut usize, max: usize) -> Want {
    let mut code = None;
    let mut lines = Vec::new();
    loop {
        let rest = &data[*pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Want::Eof {
                tail_too_long: rest.len() >= max,
            };
        };
        if nl + 1 > max {
            return Want::TooLong;
        }
        *pos += nl + 1;
        let mut line = &rest[..nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Want::Malformed;
        }
        let this = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Want::Malformed,
        };
        if *code.get_or_insert(this) != this {
            return Want::Malformed;
        }
        lines.push(line.get(4..).unwrap_or_default().to_vec());
        if last {
            return Want::Reply(Reply { code: this, lines });
        }
        if lines.len() >= MAX_LINES {
            return Want::TooManyLines;
        }
    }
}

fn round_trip(reply: &Reply, sizes: &[usize]) {
    let bytes = reply.to_bytes();
    assert!(bytes.ends_with(b"\r\n"));
    let (peer, _) = Peer::new(bytes.clone(), sizes.to_vec());
    let mut reader = LineReader::new(peer);
    let again = block_on(Reply::read(&mut reader, 65536));
    assert_eq!(
        again.as_ref().ok(),
        Some(reply),
        "{bytes:?} read back as {again:?}"
    );
    assert!(
        reader.buffered().is_empty(),
        "to_bytes wrote more than one reply"
    );
}
