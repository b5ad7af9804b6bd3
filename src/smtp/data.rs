//! Finding the end of a DATA body (`CRLF.CRLF`) in a stream of chunks, for sessions the proxy
//! must keep parsing. Bare LF is refused: an MTA that took `LF.LF` as the end while we did not
//! would let a sender smuggle commands past our checks.

/// What a chunk of body bytes contained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// No terminator yet: the whole chunk is body.
    Body,
    /// The terminator ends at this offset: bytes before it are body, bytes after are commands.
    End(usize),
    /// A LF not preceded by CR at this offset.
    BareLf(usize),
}

/// Scanner state carried across chunks.
#[derive(Debug, Clone)]
pub struct EndOfData {
    /// How far into `\r\n.\r\n` we are; starts at 2 because DATA begins at a line start.
    matched: usize,
    last_was_cr: bool,
}

const TERMINATOR: &[u8] = b"\r\n.\r\n";

impl Default for EndOfData {
    fn default() -> Self {
        Self {
            matched: 2,
            last_was_cr: false,
        }
    }
}

impl EndOfData {
    pub fn scan(&mut self, chunk: &[u8]) -> Scan {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' && !self.last_was_cr {
                return Scan::BareLf(i);
            }
            self.last_was_cr = b == b'\r';
            if b == TERMINATOR[self.matched] {
                self.matched += 1;
            } else {
                self.matched = usize::from(b == b'\r');
            }
            if self.matched == TERMINATOR.len() {
                return Scan::End(i + 1);
            }
        }
        Scan::Body
    }
}
