//! A line reader with a hard bound: a peer can never make us buffer more than `max` bytes.

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much we ask the kernel for at once when more is expected (a long line, a message body).
const READ_CHUNK: usize = 4096;
/// What a message body is read in: one TLS record's worth, so relaying a body to a TLS peer
/// writes full records (4 KiB reads cost four records, four writes and four scans each).
const BODY_CHUNK: usize = 16 * 1024;
/// What an empty reader asks for: commands and most replies fit, and a session waiting for
/// its peer's next command holds no more than this (many idle sessions are the common case).
const FIRST_READ: usize = 512;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line passed the limit without an end; the rest of it is dropped as it arrives.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The over-long line went on for another `max` bytes (still dropped): one more error for
    /// the caller's limit, without another reply to the one line.
    #[error("line still going on after another {0} bytes")]
    StillTooLong(usize),
    /// The peer closed the connection (possibly mid-line).
    #[error("connection closed by peer")]
    Eof,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Buffered reader over a stream that hands out whole lines (CRLF or bare LF terminated).
///
/// Bounds (issue 15): every read asks the kernel for no more than the line still may hold, so
/// a line never buffers more than `max` bytes; each byte is searched for LF once, however the
/// peer splits its segments; and an over-long line is refused as soon as it passes `max`, not
/// when (or if) its end arrives. Its remainder is dropped as it comes, with a `StillTooLong` for
/// every further `max` bytes, so an endless line runs into the caller's error limit.
pub struct LineReader<S> {
    stream: S,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// How many unconsumed bytes are known to hold no LF.
    scanned: usize,
    /// Inside an over-long line: bytes up to its LF are dropped; how many so far.
    discarding: Option<usize>,
}

impl<S: AsyncRead + Unpin> LineReader<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            discarding: None,
        }
    }

    /// The underlying stream, for writing replies.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Memory the reader holds (tests check its bounds).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Drops what was received but not consumed and says how much that was
    /// (STARTTLS: nothing sent before the handshake may leak into the TLS session).
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buf.len() - self.pos;
        self.buf = Vec::new();
        self.pos = 0;
        self.scanned = 0;
        n
    }

    /// Drops the first `n` received bytes if they are all here (a binary PROXY v2 header that
    /// arrived where lines were expected); `false`, and nothing dropped, otherwise.
    pub fn skip_buffered(&mut self, n: usize) -> bool {
        if self.buf.len() - self.pos < n {
            return false;
        }
        self.pos += n;
        self.scanned = 0;
        true
    }

    /// Gives back the stream and whatever was read ahead of the last line.
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        self.buf.drain(..self.pos);
        (self.stream, self.buf)
    }

    /// Reads one line of at most `max` bytes including its terminator; returns it without CRLF.
    pub async fn read_line(&mut self, max: usize) -> Result<Vec<u8>, LineError> {
        let max = max.max(1);
        loop {
            if let Some(dropped) = self.discarding {
                let lf = self.buffered().iter().position(|&b| b == b'\n');
                match lf {
                    Some(nl) => {
                        self.discarding = None;
                        self.consume(nl + 1);
                    }
                    None => {
                        let dropped = dropped + self.buffered().len();
                        self.consume(self.buffered().len());
                        if dropped >= max {
                            self.discarding = Some(0);
                            return Err(LineError::StillTooLong(max));
                        }
                        self.discarding = Some(dropped);
                        self.fill(READ_CHUNK.min(max - dropped)).await?;
                    }
                }
                continue;
            }
            let unscanned = &self.buffered()[self.scanned..];
            if let Some(i) = unscanned.iter().position(|&b| b == b'\n') {
                let len = self.scanned + i + 1;
                if len > max {
                    self.consume(len);
                    return Err(LineError::TooLong(max));
                }
                let mut line = self.buffered()[..len - 1].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.consume(len);
                return Ok(line);
            }
            self.scanned = self.buffered().len();
            if self.scanned >= max {
                // No end within `max`: refuse now and drop the rest as it arrives.
                self.consume(self.scanned);
                self.discarding = Some(0);
                return Err(LineError::TooLong(max));
            }
            let want = if self.scanned == 0 {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            self.fill(want.min(max - self.scanned)).await?;
        }
    }

    /// What is buffered, reading more first if nothing is (for relaying a message body).
    pub async fn fill_buf(&mut self) -> Result<&[u8], LineError> {
        if self.buffered().is_empty() {
            self.fill(BODY_CHUNK).await?;
        }
        Ok(self.buffered())
    }

    /// Marks `n` bytes of `fill_buf`'s slice as used.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        self.scanned = self.scanned.saturating_sub(n);
        self.compact();
    }

    /// Reads at most `want` bytes. Cancel-safe (only what was read is appended), so callers
    /// may race it; `Take` keeps the read within `want` whatever capacity `buf` has.
    async fn fill(&mut self, want: usize) -> Result<(), LineError> {
        // Consumed bytes would otherwise count against the bound (at most `max` move).
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve_exact(want);
        let mut limited = (&mut self.stream).take(want as u64);
        match limited.read_buf(&mut self.buf).await? {
            0 => Err(LineError::Eof),
            _ => Ok(()),
        }
    }

    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            // Everything consumed: give the memory back rather than hold it while the peer
            // thinks; the next read allocates what it needs.
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.pos > READ_CHUNK {
            self.buf.drain(..self.pos);
            self.pos = 0;
            if self.buf.capacity() > 2 * READ_CHUNK.max(self.buf.len()) {
                self.buf.shrink_to(READ_CHUNK.max(self.buf.len()));
            }
        }
    }
}
