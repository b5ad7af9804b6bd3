//! The byte relay once nothing is left to decide: both directions copied until both ends close,
//! with an idle timeout and byte counts that survive errors.
//!
//! Two entry points:
//! - [`relay`] for any pair of streams (a TLS client leg): one buffered copy per direction,
//!   polled from a single future (no `split`, no lock), large reads while data flows, and no
//!   heap buffer at all while a direction is quiet.
//! - [`relay_tcp`] for two plain TCP sockets: splice(2) through a pipe, so the payload never
//!   enters user space; it falls back to the buffered copy, direction by direction, when the
//!   kernel refuses (EINVAL, ENOSYS, EOPNOTSUPP) or no pipe can be had.
//!
//! # Why this module allows `unsafe`
//! splice(2) and pipe2(2) have no safe wrapper in std or tokio; calling them takes `libc` and
//! `unsafe`. Invariant 6 of DESIGN.md keeps that here: two small functions, [`Pipe::new`] and
//! [`splice_fds`], each with a `// SAFETY:` note, behind the safe [`relay_tcp`]. Descriptors are
//! held as `OwnedFd`/`BorrowedFd`, so none is used after close or closed twice.
//!
//! # kTLS
//! Not here yet: handing rustls's traffic secrets to the kernel (`setsockopt(SOL_TLS)`) would let
//! TLS legs splice too, but our CI kernel has no CONFIG_TLS and untested code does not ship.
//! When it comes it must handle what rustls's `conn/kernel.rs` documents: TLS 1.3 key updates
//! (the kernel cannot rekey on receive before 6.13) and close_notify/alert records arriving as
//! control messages.
#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Read buffer of a quiet direction, inline in the relay future: SMTP commands and replies fit.
const SMALL: usize = 1024;
/// Read buffer while data flows; allocated when a small read comes back full (a message body),
/// so a bulk transfer makes few large reads (up to four TLS records at a time).
const LARGE: usize = 64 * 1024;
/// A direction quiet for this long gives its large buffer (or its pipe) back.
const RELEASE_AFTER: Duration = Duration::from_secs(2);
/// Most bytes moved by one splice(2) call; the default pipe holds 16 pages.
#[cfg(target_os = "linux")]
const PIPE_CHUNK: usize = 64 * 1024;

/// Bytes moved each way and how the relay ended.
#[derive(Debug)]
pub struct RelayOutcome {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub end: RelayEnd,
}

#[derive(Debug)]
pub enum RelayEnd {
    /// Both sides closed (the normal end after QUIT).
    Closed,
    /// Nothing moved either way for the idle timeout.
    IdleTimeout,
    /// Reading from or writing to the client failed.
    ClientError(io::Error),
    /// Reading from or writing to the server failed.
    ServerError(io::Error),
}

/// Relays `client` ↔ `server`. `client_prefix` (already read from the client) is sent to the
/// server first, `server_prefix` to the client. When one side ends its stream, the other side's
/// write half is shut down and the opposite direction goes on. Returns when both directions have
/// ended, at the first error, or when nothing moved either way for `idle`.
pub async fn relay<C, S>(
    mut client: C,
    client_prefix: Vec<u8>,
    mut server: S,
    server_prefix: Vec<u8>,
    idle: Duration,
) -> RelayOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = BufferedCopy::new(client_prefix);
    let mut down = BufferedCopy::new(server_prefix);
    let mut clock = IdleClock::new(idle);
    let mut server_ended = false;
    let end = std::future::poll_fn(|cx| {
        let mut moved = false;
        let up_result = up.poll(cx, Pin::new(&mut client), Pin::new(&mut server), &mut moved);
        let down_result = down.poll(cx, Pin::new(&mut server), Pin::new(&mut client), &mut moved);
        let (up_done, down_done) = match judge(up_result, down_result, &mut server_ended) {
            Ok(done) => done,
            Err(end) => return Poll::Ready(end),
        };
        if up_done && down_done {
            return Poll::Ready(RelayEnd::Closed);
        }
        clock.poll(cx, moved, || {
            up.release();
            down.release();
        })
    })
    .await;
    RelayOutcome {
        client_to_server: up.bytes,
        server_to_client: down.bytes,
        end,
    }
}

/// [`relay`] for two plain TCP sockets, moving the payload with splice(2) through a pipe per
/// direction (created when the direction first has data, dropped again while it is quiet).
/// Same prefixes, half-close, idle timeout, byte counts and [`RelayEnd`] as [`relay`]; a
/// direction the kernel will not splice is copied through a buffer instead.
pub async fn relay_tcp(
    client: &mut TcpStream,
    client_prefix: Vec<u8>,
    server: &mut TcpStream,
    server_prefix: Vec<u8>,
    idle: Duration,
) -> RelayOutcome {
    relay_tcp_with(
        client,
        client_prefix,
        server,
        server_prefix,
        idle,
        Mode::Auto,
    )
    .await
    .0
}

/// Whether [`relay_tcp_with`] may try splice(2); tests force the fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    #[cfg_attr(not(test), allow(dead_code))]
    Buffered,
}

/// How many directions ended up on each path (tests check that splice really ran).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Paths {
    spliced: u8,
    buffered: u8,
}

async fn relay_tcp_with(
    client: &mut TcpStream,
    client_prefix: Vec<u8>,
    server: &mut TcpStream,
    server_prefix: Vec<u8>,
    idle: Duration,
    mode: Mode,
) -> (RelayOutcome, Paths) {
    let splice = mode == Mode::Auto && cfg!(target_os = "linux");
    let mut up = TcpCopy::new(client_prefix, splice);
    let mut down = TcpCopy::new(server_prefix, splice);
    let mut clock = IdleClock::new(idle);
    let mut server_ended = false;
    let end = std::future::poll_fn(|cx| {
        let mut moved = false;
        let up_result = up.poll(cx, client, server, &mut moved);
        let down_result = down.poll(cx, server, client, &mut moved);
        let (up_done, down_done) = match judge(up_result, down_result, &mut server_ended) {
            Ok(done) => done,
            Err(end) => return Poll::Ready(end),
        };
        if up_done && down_done {
            return Poll::Ready(RelayEnd::Closed);
        }
        clock.poll(cx, moved, || {
            up.release();
            down.release();
        })
    })
    .await;
    let mut paths = Paths::default();
    for d in [&up, &down] {
        match d {
            TcpCopy::Buffered(_) => paths.buffered += 1,
            #[cfg(target_os = "linux")]
            TcpCopy::Splice(_) => paths.spliced += 1,
        }
    }
    let outcome = RelayOutcome {
        client_to_server: up.bytes(),
        server_to_client: down.bytes(),
        end,
    };
    (outcome, paths)
}

/// Turns one poll of both directions into "which are done", or the end of the relay. Once the
/// server has ended its stream (after QUIT's 221), a client that resets instead of closing
/// cleanly (swaks, many MTAs) has simply gone: that is the normal end, not a client error.
fn judge<T, U>(
    up: Poll<Result<T, CopyError>>,
    down: Poll<Result<U, CopyError>>,
    server_ended: &mut bool,
) -> Result<(bool, bool), RelayEnd> {
    let down_done = match down {
        Poll::Ready(Err(e)) => return Err(e.blame(Side::Server)),
        p => p.is_ready(),
    };
    *server_ended |= down_done;
    let up_done = match up {
        Poll::Ready(Err(CopyError::Read(_))) if *server_ended => true,
        Poll::Ready(Err(e)) => return Err(e.blame(Side::Client)),
        p => p.is_ready(),
    };
    Ok((up_done, down_done))
}

/// Which end a direction reads from: errors are blamed on the side that failed.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// A direction failed reading its source or writing its destination.
#[derive(Debug)]
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

impl CopyError {
    /// The relay's end, for a direction that reads from `source`.
    fn blame(self, source: Side) -> RelayEnd {
        match (self, source) {
            (CopyError::Read(e), Side::Client) | (CopyError::Write(e), Side::Server) => {
                RelayEnd::ClientError(e)
            }
            (CopyError::Read(e), Side::Server) | (CopyError::Write(e), Side::Client) => {
                RelayEnd::ServerError(e)
            }
        }
    }
}

/// The idle timeout and the buffer-release timer share one `Sleep`, which is never reset on
/// activity (that would touch the timer wheel per read): when it fires early, it is re-armed from
/// the last activity.
struct IdleClock {
    idle: Duration,
    last: Instant,
    released: bool,
    sleep: Pin<Box<Sleep>>,
}

impl IdleClock {
    fn new(idle: Duration) -> IdleClock {
        let now = Instant::now();
        IdleClock {
            idle,
            last: now,
            released: false,
            sleep: Box::pin(tokio::time::sleep_until(now + idle.min(RELEASE_AFTER))),
        }
    }

    /// Pending until the relay has been idle for the timeout; calls `release` once per quiet spell.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        moved: bool,
        mut release: impl FnMut(),
    ) -> Poll<RelayEnd> {
        if moved {
            self.last = Instant::now();
            self.released = false;
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            let now = Instant::now();
            let timeout = self.last + self.idle;
            if now >= timeout {
                return Poll::Ready(RelayEnd::IdleTimeout);
            }
            let release_at = self.last + RELEASE_AFTER;
            if !self.released && now >= release_at {
                release();
                self.released = true;
            }
            let next = if self.released {
                timeout
            } else {
                timeout.min(release_at)
            };
            self.sleep.as_mut().reset(next);
        }
    }
}

/// One direction of the buffered relay: prefix first, then read → write until EOF, then
/// shutdown of the writer (so the peer sees the end too).
struct BufferedCopy {
    prefix: Vec<u8>,
    /// How much of the prefix, or of the current buffer, is written.
    written: usize,
    /// How much of the current buffer holds data (`written..filled` is still to write).
    filled: usize,
    small: [u8; SMALL],
    large: Option<Box<[u8]>>,
    /// Whether the bytes in flight are in `large` (otherwise in `small`).
    in_large: bool,
    /// Data was written since the last flush (TLS writers may hold it in a record buffer).
    unflushed: bool,
    state: CopyState,
    bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CopyState {
    Prefix,
    Copying,
    ShuttingDown,
    Done,
}

impl BufferedCopy {
    fn new(prefix: Vec<u8>) -> BufferedCopy {
        BufferedCopy {
            prefix,
            written: 0,
            filled: 0,
            small: [0; SMALL],
            large: None,
            in_large: false,
            unflushed: false,
            state: CopyState::Prefix,
            bytes: 0,
        }
    }

    /// A direction that carried on after splice(2) failed: no prefix left, `bytes` so far.
    #[cfg(target_os = "linux")]
    fn after_splice(bytes: u64) -> BufferedCopy {
        let mut copy = BufferedCopy::new(Vec::new());
        copy.bytes = bytes;
        copy
    }

    /// Drops the large buffer if nothing is in flight in it.
    fn release(&mut self) {
        if !(self.in_large && self.written < self.filled) {
            self.large = None;
            self.in_large = false;
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        moved: &mut bool,
    ) -> Poll<Result<(), CopyError>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            match self.state {
                CopyState::Prefix => {
                    if self.written == self.prefix.len() {
                        self.prefix = Vec::new();
                        self.written = 0;
                        self.state = CopyState::Copying;
                        continue;
                    }
                    let n = ready!(write(cx, to.as_mut(), &self.prefix[self.written..]))?;
                    self.written += n;
                    self.bytes += n as u64;
                    self.unflushed = true;
                    *moved = true;
                }
                CopyState::Copying => {
                    if self.written < self.filled {
                        let buf = match (self.in_large, &self.large) {
                            (true, Some(large)) => &large[..],
                            _ => &self.small[..],
                        };
                        let n = ready!(write(cx, to.as_mut(), &buf[self.written..self.filled]))?;
                        self.written += n;
                        self.bytes += n as u64;
                        self.unflushed = true;
                        *moved = true;
                        continue;
                    }
                    self.written = 0;
                    self.filled = 0;
                    self.in_large = self.large.is_some();
                    let buf = match &mut self.large {
                        Some(large) => &mut large[..],
                        None => &mut self.small[..],
                    };
                    let mut read_buf = ReadBuf::new(buf);
                    match from.as_mut().poll_read(cx, &mut read_buf) {
                        Poll::Pending => {
                            // Nothing more to read now: push out what a TLS writer still holds.
                            if self.unflushed {
                                ready!(to.as_mut().poll_flush(cx)).map_err(CopyError::Write)?;
                                self.unflushed = false;
                            }
                            return Poll::Pending;
                        }
                        // Most SMTP clients hang up after QUIT without TLS close_notify; that is
                        // an end, not a failure (nothing after QUIT can be truncated).
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            self.state = CopyState::ShuttingDown;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(CopyError::Read(e))),
                        Poll::Ready(Ok(())) => {
                            let n = read_buf.filled().len();
                            if n == 0 {
                                self.state = CopyState::ShuttingDown;
                            } else {
                                self.filled = n;
                                // A full small read means a burst: read the rest in large chunks.
                                if !self.in_large && n == SMALL {
                                    self.large = Some(vec![0; LARGE].into_boxed_slice());
                                }
                            }
                        }
                    }
                }
                CopyState::ShuttingDown => {
                    // The peer may already be gone; its absence is not our error.
                    let _ = ready!(to.as_mut().poll_shutdown(cx));
                    self.large = None;
                    self.state = CopyState::Done;
                }
                CopyState::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

fn write<W: AsyncWrite + ?Sized>(
    cx: &mut Context<'_>,
    to: Pin<&mut W>,
    buf: &[u8],
) -> Poll<Result<usize, CopyError>> {
    match ready!(to.poll_write(cx, buf)) {
        Ok(0) => Poll::Ready(Err(CopyError::Write(io::ErrorKind::WriteZero.into()))),
        Ok(n) => Poll::Ready(Ok(n)),
        Err(e) => Poll::Ready(Err(CopyError::Write(e))),
    }
}

/// One direction of [`relay_tcp`]: spliced while the kernel lets it, buffered otherwise.
enum TcpCopy {
    #[cfg(target_os = "linux")]
    Splice(linux::SpliceCopy),
    /// Boxed: the fallback is rare, and the spliced direction should not carry its buffer.
    Buffered(Box<BufferedCopy>),
}

impl TcpCopy {
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    fn new(prefix: Vec<u8>, splice: bool) -> TcpCopy {
        #[cfg(target_os = "linux")]
        if splice {
            return TcpCopy::Splice(linux::SpliceCopy::new(prefix));
        }
        TcpCopy::Buffered(Box::new(BufferedCopy::new(prefix)))
    }

    fn bytes(&self) -> u64 {
        match self {
            #[cfg(target_os = "linux")]
            TcpCopy::Splice(s) => s.bytes,
            TcpCopy::Buffered(c) => c.bytes,
        }
    }

    fn release(&mut self) {
        match self {
            #[cfg(target_os = "linux")]
            TcpCopy::Splice(s) => s.release(),
            TcpCopy::Buffered(c) => c.release(),
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut TcpStream,
        to: &mut TcpStream,
        moved: &mut bool,
    ) -> Poll<Result<(), CopyError>> {
        #[cfg(target_os = "linux")]
        if let TcpCopy::Splice(s) = self {
            match ready!(s.poll(cx, from, to, moved)) {
                Ok(linux::Spliced::Done) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
                Ok(linux::Spliced::Unsupported) => {
                    *self = TcpCopy::Buffered(Box::new(BufferedCopy::after_splice(s.bytes)));
                }
            }
        }
        match self {
            TcpCopy::Buffered(c) => c.poll(cx, Pin::new(from), Pin::new(to), moved),
            #[cfg(target_os = "linux")]
            TcpCopy::Splice(_) => unreachable!("replaced above"),
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{write, CopyError, CopyState, PIPE_CHUNK};
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};
    use tokio::io::{AsyncWrite, Interest};
    use tokio::net::TcpStream;

    /// A pipe: the kernel-side buffer splice(2) moves pages through.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Pipe> {
            let mut fds = [-1 as libc::c_int; 2];
            // SAFETY: `fds` is a valid, writable array of two c_ints, which is what pipe2(2)
            // fills in; the flags are valid constants.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else;
            // each OwnedFd closes its own exactly once.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            Ok(Pipe { read, write })
        }
    }

    /// splice(2) of up to `len` bytes from `from` to `to` (one of them a pipe), without blocking.
    pub(super) fn splice_fds(
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        len: usize,
    ) -> io::Result<usize> {
        // SAFETY: both descriptors are open for the duration of the call (borrowed); null offsets
        // are allowed (both ends are streams, so the file position is used); no user memory is
        // passed to the kernel.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Errors that mean "this kernel or socket cannot splice", not "the peer failed".
    fn is_unsupported(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
        )
    }

    pub(super) enum Spliced {
        Done,
        /// Splicing is not possible on this direction; nothing is in the pipe, carry on buffered.
        Unsupported,
    }

    pub(super) struct SpliceCopy {
        prefix: Vec<u8>,
        written: usize,
        pipe: Option<Pipe>,
        /// Bytes in the pipe, not yet written to the destination.
        in_pipe: usize,
        state: CopyState,
        pub(super) bytes: u64,
    }

    impl SpliceCopy {
        pub(super) fn new(prefix: Vec<u8>) -> SpliceCopy {
            SpliceCopy {
                prefix,
                written: 0,
                pipe: None,
                in_pipe: 0,
                state: CopyState::Prefix,
                bytes: 0,
            }
        }

        /// Closes the pipe if it is empty (two descriptors and its pages back while quiet).
        pub(super) fn release(&mut self) {
            if self.in_pipe == 0 {
                self.pipe = None;
            }
        }

        pub(super) fn poll(
            &mut self,
            cx: &mut Context<'_>,
            from: &mut TcpStream,
            to: &mut TcpStream,
            moved: &mut bool,
        ) -> Poll<Result<Spliced, CopyError>> {
            loop {
                match self.state {
                    CopyState::Prefix => {
                        if self.written == self.prefix.len() {
                            self.prefix = Vec::new();
                            self.state = CopyState::Copying;
                            continue;
                        }
                        let n =
                            ready!(write(cx, Pin::new(&mut *to), &self.prefix[self.written..]))?;
                        self.written += n;
                        self.bytes += n as u64;
                        *moved = true;
                    }
                    CopyState::Copying => {
                        if let (Some(pipe), true) = (&self.pipe, self.in_pipe > 0) {
                            ready!(to.poll_write_ready(cx)).map_err(CopyError::Write)?;
                            let sent = to.try_io(Interest::WRITABLE, || {
                                splice_fds(pipe.read.as_fd(), to.as_fd(), self.in_pipe)
                            });
                            match sent {
                                Ok(0) => {
                                    return Poll::Ready(Err(CopyError::Write(
                                        io::ErrorKind::WriteZero.into(),
                                    )))
                                }
                                Ok(n) => {
                                    self.in_pipe -= n;
                                    self.bytes += n as u64;
                                    *moved = true;
                                }
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                Err(e) => return Poll::Ready(Err(CopyError::Write(e))),
                            }
                            continue;
                        }
                        ready!(from.poll_read_ready(cx)).map_err(CopyError::Read)?;
                        if self.pipe.is_none() {
                            match Pipe::new() {
                                Ok(p) => self.pipe = Some(p),
                                // Out of descriptors or pipe pages: the buffered copy needs none.
                                Err(_) => return Poll::Ready(Ok(Spliced::Unsupported)),
                            }
                        }
                        let Some(pipe) = &self.pipe else { continue };
                        let received = from.try_io(Interest::READABLE, || {
                            splice_fds(from.as_fd(), pipe.write.as_fd(), PIPE_CHUNK)
                        });
                        match received {
                            Ok(0) => self.state = CopyState::ShuttingDown,
                            Ok(n) => self.in_pipe = n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            // The pipe is empty here, so nothing is lost by switching.
                            Err(e) if is_unsupported(&e) => {
                                self.pipe = None;
                                return Poll::Ready(Ok(Spliced::Unsupported));
                            }
                            Err(e) => return Poll::Ready(Err(CopyError::Read(e))),
                        }
                    }
                    CopyState::ShuttingDown => {
                        // The peer may already be gone; its absence is not our error.
                        let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
                        self.pipe = None;
                        self.state = CopyState::Done;
                    }
                    CopyState::Done => return Poll::Ready(Ok(Spliced::Done)),
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn unsupported(e: &io::Error) -> bool {
        is_unsupported(e)
    }
}

#[cfg(test)]
#[path = "splice_tests.rs"]
mod tests;
