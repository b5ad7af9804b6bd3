//! `LineReader` over a peer that sends the input in fuzz-chosen pieces (1 byte to 128 KiB, with
//! `Pending` in between), checked against a model of the stream:
//! - a line of at most `max` bytes (terminator included) comes back exactly, CR LF stripped,
//!   and the reader then stands just after its LF; a longer one is `TooLong(max)` as soon as
//!   `max` bytes without an LF are in (never after its LF), then one `StillTooLong(max)` for
//!   every further `max` bytes before its LF;
//! - an unterminated tail is `Eof` (after `TooLong` and `StillTooLong`s if it reached `max`),
//!   and only once the peer has sent everything;
//! - `fill_buf` returns the next unconsumed bytes of the stream, `consume` advances by them;
//! - `buffered()` is always the stream's bytes between the reader's position and what was sent;
//! - memory: never more than `max` + one read (4 KiB) buffered, and no single read offered more
//!   room than that (the peer, not the reader's `Vec` growth, would decide what it holds);
//!   while reading a line that fits, the reader never stood ready to hold more than that from
//!   the line's start (bytes it had plus the room it offered).
//!   `FUZZ_LINE_READER_UNBOUNDED=1` in the environment skips these memory checks, to look for
//!   other failures in a reader known to break them.

#![no_main]

use fuzz_support::{block_on, Input, Peer, LARGEST_READ};
use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::{LineError, LineReader};
use std::sync::OnceLock;

/// Eight lines at the largest `max_line_length` (65536): trickled one byte per read, a reader
/// that rescans its whole buffer after each read spends ~1.7·10^10 byte comparisons on them,
/// which `-timeout` catches; a linear one takes a tenth of a second. (Twice this cap halves
/// the executions per second.)
const STREAM_CAP: usize = 512 * 1024 + 64;

fn skip_bounds() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("FUZZ_LINE_READER_UNBOUNDED").is_some_and(|v| v == "1"))
}

enum Op {
    ReadLine,
    /// `fill_buf`, then `consume` of up to this many bytes (as a body relay does after DATA).
    FillConsume(usize),
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    // The limits the proxy can be given (`max_line_length` 512–65536): below them, a stream of
    // one-byte lines spends the time budget on calls, not on finding bugs.
    let max = 512 + usize::from(input.u16()) % (65_536 - 512 + 1);
    let sizes = input.piece_sizes();
    let op_count = usize::from(input.byte() % 16);
    let ops: Vec<Op> = input
        .take(op_count)
        .iter()
        .map(|&b| {
            if b < 0xC0 {
                Op::ReadLine
            } else {
                Op::FillConsume((usize::from(b & 0x3f) + 1).pow(2))
            }
        })
        .collect();
    let repeat = usize::from(input.u16());
    let rounds = usize::from(input.byte());
    let data = input.stream(repeat, rounds, STREAM_CAP);

    let (peer, seen) = Peer::new(data.clone(), sizes);
    let mut reader = LineReader::new(peer);
    // The model's position: the start of the next line (or body byte) the reader must return.
    let mut pos = 0usize;
    // The unterminated tail reached `max`; one `TooLong` for it is allowed before `Eof`, then
    // `StillTooLong`s.
    let mut tail_too_long_reported = false;
    // `StillTooLong`s still due for the over-long line before `pos`.
    let mut still_due = 0usize;
    // fill_buf/consume only between whole lines, as the proxy uses them.
    let mut at_line_boundary = true;

    let check_buffer = |reader: &LineReader<Peer>, what: &str| {
        let delivered = seen.delivered.get();
        let buffered = reader.buffered();
        assert!(
            skip_bounds() || buffered.len() <= max + LARGEST_READ,
            "{what}: {} bytes buffered with max {max} (bound: max + {LARGEST_READ})",
            buffered.len()
        );
        assert!(
            skip_bounds() || seen.largest_request.get() <= max + LARGEST_READ,
            "{what}: one read offered room for {} bytes with max {max} (bound: max + {LARGEST_READ})",
            seen.largest_request.get()
        );
        assert!(
            buffered.len() <= delivered,
            "{what}: more buffered than sent"
        );
        // Both ends only: a full comparison per line would make the check quadratic itself.
        let at = delivered - buffered.len();
        let ends = buffered.len().min(32);
        assert!(
            buffered[..ends] == data[at..at + ends]
                && buffered[buffered.len() - ends..] == data[delivered - ends..delivered],
            "{what}: buffered bytes are not the stream's"
        );
        at
    };

    let mut ops = ops.into_iter();
    // Every call consumes at least one byte or ends the stream: this bounds the loop.
    for _ in 0..data.len() + 3 {
        match ops.next().unwrap_or(Op::ReadLine) {
            Op::FillConsume(n) if at_line_boundary => {
                match block_on(reader.fill_buf()) {
                    Ok(chunk) => {
                        assert!(!chunk.is_empty(), "fill_buf: empty chunk");
                        assert_eq!(
                            chunk,
                            &data[pos..pos + chunk.len()],
                            "fill_buf: wrong bytes"
                        );
                        let n = n.min(chunk.len());
                        reader.consume(n);
                        pos += n;
                    }
                    Err(LineError::Eof) => {
                        assert_eq!(pos, data.len(), "fill_buf: Eof with bytes left");
                        return;
                    }
                    Err(e) => panic!("fill_buf: unexpected {e:?}"),
                }
                let at = check_buffer(&reader, "fill_buf");
                assert_eq!(at, pos, "fill_buf/consume: reader position");
            }
            Op::FillConsume(_) | Op::ReadLine => {
                seen.reach.set(seen.delivered.get());
                let result = block_on(reader.read_line(max));
                if still_due > 0 {
                    assert!(
                        matches!(result, Err(LineError::StillTooLong(m)) if m == max),
                        "{still_due} StillTooLong due with max {max}: got {result:?}"
                    );
                    still_due -= 1;
                    continue;
                }
                let rest = &data[pos..];
                match rest.iter().position(|&b| b == b'\n') {
                    Some(nl) => {
                        let end = pos + nl + 1;
                        if nl + 1 > max {
                            assert!(
                                matches!(result, Err(LineError::TooLong(m)) if m == max),
                                "line of {} bytes with max {max}: got {result:?}",
                                nl + 1
                            );
                            // The reader may still be discarding the rest of this line: one more
                            // error for every further `max` bytes before its LF.
                            let at = check_buffer(&reader, "read_line TooLong");
                            assert!(at <= end, "TooLong: reader went past the line's LF");
                            if at < end {
                                assert!(
                                    at - pos >= max,
                                    "TooLong after {} bytes with max {max}",
                                    at - pos
                                );
                                still_due = (end - 1 - at) / max;
                            }
                            at_line_boundary = false;
                        } else {
                            let mut want = &rest[..nl];
                            if want.last() == Some(&b'\r') {
                                want = &want[..want.len() - 1];
                            }
                            match &result {
                                Ok(line) => assert_eq!(line.as_slice(), want, "wrong line"),
                                Err(e) => {
                                    panic!("line of {} bytes with max {max}: got {e:?}", nl + 1)
                                }
                            }
                            let at = check_buffer(&reader, "read_line Ok");
                            assert_eq!(at, end, "Ok: reader not just after the line's LF");
                            let held = seen.reach.get() - pos;
                            assert!(
                                skip_bounds() || held <= max + LARGEST_READ,
                                "read_line Ok: ready to hold {held} bytes with max {max}"
                            );
                            at_line_boundary = true;
                        }
                        pos = end;
                    }
                    None => match result {
                        Err(LineError::Eof) => {
                            assert_eq!(
                                seen.delivered.get(),
                                data.len(),
                                "Eof before the peer sent everything"
                            );
                            return;
                        }
                        Err(LineError::TooLong(m))
                            if m == max && rest.len() >= max && !tail_too_long_reported =>
                        {
                            tail_too_long_reported = true;
                            check_buffer(&reader, "read_line TooLong (tail)");
                            at_line_boundary = false;
                        }
                        Err(LineError::StillTooLong(m)) if m == max && tail_too_long_reported => {
                            check_buffer(&reader, "read_line StillTooLong (tail)");
                        }
                        other => panic!(
                            "unterminated tail of {} bytes with max {max}: got {other:?}",
                            rest.len()
                        ),
                    },
                }
            }
        }
    }
    panic!("read_line never reached Eof");
});
