//! The end-of-data scanner over a body cut into fuzz-chosen chunks, against a one-pass model of
//! the whole stream (which begins at a line start, just after DATA's 354):
//! - it reports the first bare LF or the end of the first `CRLF.CRLF`, whichever comes first,
//!   at the right offset of the right chunk, whatever the cut;
//! - `End(n)` has 1 <= n <= chunk length; no event means the model has none either.

#![no_main]

use fuzz_support::Input;
use libfuzzer_sys::fuzz_target;
use starttls_proxy::smtp::data::{EndOfData, Scan};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// Offset just past the terminator's LF.
    End(usize),
    /// Offset of the LF.
    BareLf(usize),
}

fuzz_target!(|bytes: &[u8]| {
    let mut input = Input::new(bytes);
    let sizes: Vec<usize> = input.piece_sizes().into_iter().map(|s| s.max(1)).collect();
    let repeat = usize::from(input.byte());
    let data = input.stream(repeat, 1, 64 * 1024);

    let want = model(&data);
    let mut scanner = EndOfData::default();
    let mut start = 0;
    let mut i = 0;
    let got = loop {
        if start == data.len() {
            break None;
        }
        let size = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(data.len());
        i += 1;
        let chunk = &data[start..(start + size).min(data.len())];
        match scanner.scan(chunk) {
            Scan::Body => start += chunk.len(),
            Scan::End(n) => {
                assert!(
                    n >= 1 && n <= chunk.len(),
                    "End({n}) in a chunk of {}",
                    chunk.len()
                );
                break Some(Event::End(start + n));
            }
            Scan::BareLf(n) => {
                assert!(n < chunk.len(), "BareLf({n}) in a chunk of {}", chunk.len());
                break Some(Event::BareLf(start + n));
            }
        }
    };
    assert_eq!(got, want, "body {data:?} cut at {sizes:?}");
});

fn model(data: &[u8]) -> Option<Event> {
    // The stream as if it started right after a CRLF.
    let mut seen = b"\r\n".to_vec();
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && seen.last() != Some(&b'\r') {
            return Some(Event::BareLf(i));
        }
        seen.push(b);
        if seen.ends_with(b"\r\n.\r\n") {
            return Some(Event::End(i + 1));
        }
    }
    None
}
