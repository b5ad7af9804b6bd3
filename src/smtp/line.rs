//! A line reader with a hard bound: a peer can never make us buffer more than `max` bytes.

use tokio::io::{AsyncRead, AsyncReadExt};

/// How much we ask the kernel for at once when more is expected (a long line, a message body).
const READ_CHUNK: usize = 4096;
/// What an empty reader asks for: commands and most replies fit, and a session waiting for
/// its peer's next command holds no more than this (many idle sessions are the common case).
const FIRST_READ: usize = 512;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line exceeded the limit; its remainder up to the next LF was read and dropped.
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    /// The peer closed the connection (possibly mid-line).
    #[error("connection closed by peer")]
    Eof,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Buffered reader over a stream that hands out whole lines (CRLF or bare LF terminated).
pub struct LineReader<S> {
    stream: S,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
}

impl<S: AsyncRead + Unpin> LineReader<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// The underlying stream, for writing replies.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes received but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Drops what was received but not consumed and says how much that was
    /// (STARTTLS: nothing sent before the handshake may leak into the TLS session).
    pub fn discard_buffered(&mut self) -> usize {
        let n = self.buf.len() - self.pos;
        self.buf.clear();
        self.pos = 0;
        n
    }

    /// Gives back the stream and whatever was read ahead of the last line.
    pub fn into_parts(mut self) -> (S, Vec<u8>) {
        self.buf.drain(..self.pos);
        (self.stream, self.buf)
    }

    /// Reads one line of at most `max` bytes including its terminator; returns it without CRLF.
    pub async fn read_line(&mut self, max: usize) -> Result<Vec<u8>, LineError> {
        loop {
            if let Some(nl) = self.buffered().iter().position(|&b| b == b'\n') {
                let end = self.pos + nl + 1;
                if nl + 1 > max {
                    self.pos = end;
                    self.compact();
                    return Err(LineError::TooLong(max));
                }
                let mut line = self.buf[self.pos..end - 1].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.pos = end;
                self.compact();
                return Ok(line);
            }
            if self.buffered().len() >= max {
                self.skip_to_newline().await?;
                return Err(LineError::TooLong(max));
            }
            let want = if self.buffered().is_empty() {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            self.fill(want).await?;
        }
    }

    /// What is buffered, reading more first if nothing is (for relaying a message body).
    pub async fn fill_buf(&mut self) -> Result<&[u8], LineError> {
        if self.buffered().is_empty() {
            self.fill(READ_CHUNK).await?;
        }
        Ok(self.buffered())
    }

    /// Marks `n` bytes of `fill_buf`'s slice as used.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        self.compact();
    }

    /// Drops bytes up to and including the next LF without keeping them.
    async fn skip_to_newline(&mut self) -> Result<(), LineError> {
        loop {
            if let Some(nl) = self.buffered().iter().position(|&b| b == b'\n') {
                self.pos += nl + 1;
                self.compact();
                return Ok(());
            }
            self.buf.clear();
            self.pos = 0;
            self.fill(READ_CHUNK).await?;
        }
    }

    /// Cancel-safe (`read_buf` only appends what was read), so callers may race it.
    async fn fill(&mut self, want: usize) -> Result<(), LineError> {
        self.buf.reserve(want);
        match self.stream.read_buf(&mut self.buf).await? {
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
        }
    }
}
