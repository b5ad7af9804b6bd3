//! Shared pieces of the fuzz targets: an in-memory peer that delivers its bytes in
//! fuzz-chosen pieces, a poll loop that needs no runtime, and a reader for the input's header.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};

/// The line reader's own read size (`READ_CHUNK` in src/smtp/line.rs, private there).
pub const READ_CHUNK: usize = 4096;
/// Its largest read, a message body's (`BODY_CHUNK` there): the buffering bound the targets
/// check is "the limit plus one such read".
pub const LARGEST_READ: usize = 16 * 1024;

/// What the peer saw of the reader's reads, shared with the target while the reader owns the
/// stream.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bytes handed to the reader so far.
    pub delivered: Cell<usize>,
    /// Calls to `poll_read`.
    pub reads: Cell<usize>,
    /// Largest room (`ReadBuf::remaining`) one `poll_read` offered: how much the reader was
    /// prepared to take in one read.
    pub largest_request: Cell<usize>,
    /// Highest stream offset the reader was prepared to hold (bytes sent before a read plus
    /// its room), since the target last set it.
    pub reach: Cell<usize>,
}

/// A peer that sends `data` in pieces whose sizes come from `sizes` (cycled). A size of 0
/// answers `Pending` once (then the next piece comes), so cancel-safety paths are driven too.
pub struct Peer {
    data: Vec<u8>,
    sizes: Vec<usize>,
    next_size: usize,
    pos: usize,
    pending_last: bool,
    seen: Rc<Seen>,
}

impl Peer {
    pub fn new(data: Vec<u8>, sizes: Vec<usize>) -> (Self, Rc<Seen>) {
        let seen = Rc::new(Seen::default());
        let peer = Self {
            data,
            sizes,
            next_size: 0,
            pos: 0,
            pending_last: false,
            seen: seen.clone(),
        };
        (peer, seen)
    }

    fn piece(&mut self) -> usize {
        if self.sizes.is_empty() {
            return READ_CHUNK;
        }
        let size = self.sizes[self.next_size % self.sizes.len()];
        self.next_size += 1;
        size
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.seen.reads.set(this.seen.reads.get() + 1);
        let room = buf.remaining();
        if room > this.seen.largest_request.get() {
            this.seen.largest_request.set(room);
        }
        if this.pos + room > this.seen.reach.get() {
            this.seen.reach.set(this.pos + room);
        }
        let mut size = this.piece();
        if size == 0 && !this.pending_last {
            this.pending_last = true;
            return Poll::Pending;
        }
        this.pending_last = false;
        if size == 0 {
            size = 1;
        }
        let n = size.min(room).min(this.data.len() - this.pos);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        this.seen.delivered.set(this.pos);
        Poll::Ready(Ok(()))
    }
}

/// Runs a future whose only IO is a [`Peer`]: it never waits on anything but being polled again.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Reads the fixed-size header fields at the front of a fuzz input; missing bytes read as 0.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }

    pub fn rest(self) -> &'a [u8] {
        self.bytes
    }

    /// Piece sizes for a [`Peer`]: a count, then one byte each. 0 is `Pending`, 1..=127 that
    /// many bytes (trickling), 128..=255 a multiple of 1 KiB up to 128 KiB (bulk).
    pub fn piece_sizes(&mut self) -> Vec<usize> {
        let count = usize::from(self.byte() % 32);
        self.take(count)
            .iter()
            .map(|&b| {
                if b < 128 {
                    usize::from(b)
                } else {
                    usize::from(b - 127) * 1024
                }
            })
            .collect()
    }

    /// The peer's bytes: `pattern` repeated `repeat` times, then the tail, all of it `rounds`
    /// times, at most `cap` bytes. The rest of the input is split at its first 0xFF (absent:
    /// no tail); the counts are header fields. This makes many lines of tens of kilobytes
    /// reachable from a small input.
    pub fn stream(self, repeat: usize, rounds: usize, cap: usize) -> Vec<u8> {
        let rest = self.rest();
        let (pattern, tail) = match rest.iter().position(|&b| b == 0xFF) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let mut round = Vec::new();
        for _ in 0..repeat.max(1) {
            if round.len() + pattern.len() > cap {
                break;
            }
            round.extend_from_slice(pattern);
        }
        round.extend_from_slice(tail);
        let mut out = Vec::new();
        for _ in 0..rounds.max(1) {
            if out.len() + round.len() > cap {
                break;
            }
            out.extend_from_slice(&round);
        }
        out
    }
}
