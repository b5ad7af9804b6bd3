//! The inbound TLS leg: a rustls server connection driven through rustls's unbuffered API, so
//! that this module owns every buffer.
//!
//! Why not `tokio_rustls`: the buffered `ServerConnection` keeps a 4 KiB receive buffer for the
//! connection's whole life and reads 4 KiB at a time. Here ciphertext is read a record or more
//! at a time (up to [`BULK_READ`] while a message body streams), and every buffer is given back
//! as soon as it is empty, so a session waiting for its client's next command holds no TLS
//! buffer at all; the many idle sessions of a busy MX are the common case.
//!
//! One task drives a stream (the dialogue, then the relay, each a single future), so a write
//! that finds decrypted bytes waiting wakes that task rather than tracking a second waker.

use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest record rustls accepts (2^14 bytes of payload, its ciphertext allowance, header).
const RECORD: usize = 16 * 1024 + 2048 + 5;
/// Reads grow to this while they keep coming back full (a message body).
const BULK_READ: usize = 64 * 1024;
/// Ciphertext held unprocessed at most: one 64 KiB handshake message (rustls's own bound)
/// spread over records, plus a record.
const MAX_INCOMING: usize = 64 * 1024 + RECORD;
/// Plaintext taken per write call: four full records.
const MAX_WRITE: usize = 64 * 1024;

/// A TLS server stream over a TCP socket.
pub struct TlsServerStream {
    io: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext from the client; rustls has consumed `incoming[..consumed]`. Unallocated
    /// while empty; compacted only before a read, so a burst of records is not moved once per
    /// record.
    incoming: Vec<u8>,
    consumed: usize,
    /// How much the next read asks for.
    read_size: usize,
    /// Decrypted bytes the reader has not taken (`plaintext[taken..]`); unallocated while empty.
    plaintext: Vec<u8>,
    taken: usize,
    /// Ciphertext for the client (`outgoing[sent..]` is still to write); unallocated while empty.
    outgoing: Vec<u8>,
    sent: usize,
    /// The client's close_notify arrived: reads return end of stream.
    peer_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls reported an error (and queued its alert): the connection is done. rustls must not
    /// be driven again, or it would answer the same bad input with a second fatal alert.
    failed: bool,
}

/// What the handshake tells about the session.
pub struct Negotiated {
    pub version: Option<rustls::ProtocolVersion>,
    pub suite: Option<rustls::CipherSuite>,
    pub sni: Option<String>,
}

/// What the caller wants from one turn of rustls's state machine.
enum Intent<'a, 'b> {
    /// Decrypted bytes go straight into the reader's buffer when it has room.
    Read(Option<&'a mut ReadBuf<'b>>),
    Write(&'a [u8]),
    Close,
}

/// Where one turn left the connection.
enum Progress {
    /// Something was done (records decrypted, handshake bytes queued); turn again.
    Again,
    /// rustls needs more ciphertext from the client.
    NeedInput,
    /// `n` bytes of the caller's plaintext (or the close_notify) are queued as ciphertext.
    Queued(usize),
    PeerClosed,
    Closed,
}

/// Runs the server handshake on `io`; the caller bounds it with a timeout.
/// Application data the client sent along with its Finished is kept for the first read.
pub async fn accept(
    io: TcpStream,
    config: &Arc<ServerConfig>,
) -> io::Result<(TlsServerStream, Negotiated)> {
    let sni = Arc::new(OnceLock::new());
    let conn = UnbufferedServerConnection::new(recording_sni(config, &sni)).map_err(tls_error)?;
    let mut stream = TlsServerStream {
        io,
        conn,
        incoming: Vec::new(),
        consumed: 0,
        read_size: RECORD,
        plaintext: Vec::new(),
        taken: 0,
        outgoing: Vec::new(),
        sent: 0,
        peer_closed: false,
        close_queued: false,
        failed: false,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    let negotiated = Negotiated {
        version: stream.conn.protocol_version(),
        suite: stream.conn.negotiated_cipher_suite().map(|s| s.suite()),
        sni: sni.get().cloned(),
    };
    Ok((stream, negotiated))
}

/// The unbuffered connection has no `server_name()`; the certificate resolver sees the
/// ClientHello, so a per-connection wrapper around the configured one notes the name.
fn recording_sni(base: &Arc<ServerConfig>, slot: &Arc<OnceLock<String>>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::clone(base);
    config.cert_resolver = Arc::new(SniRecorder {
        inner: base.cert_resolver.clone(),
        slot: slot.clone(),
    });
    Arc::new(config)
}

#[derive(Debug)]
struct SniRecorder {
    inner: Arc<dyn ResolvesServerCert>,
    slot: Arc<OnceLock<String>>,
}

impl ResolvesServerCert for SniRecorder {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let _ = self.slot.set(name.to_string());
        }
        self.inner.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    // InvalidData with the rustls error inside, as tls::handshake_failure_reason expects.
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn closed_during_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "client closed the connection during the TLS handshake",
    )
}

fn eof_without_close_notify() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "client closed the connection without TLS close_notify",
    )
}

impl TlsServerStream {
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.turn(Intent::Read(None))? {
                Progress::Again | Progress::Queued(_) => {}
                Progress::PeerClosed | Progress::Closed => {
                    return Poll::Ready(Err(closed_during_handshake()))
                }
                // Only here is everything rustls wanted to send encoded (TLS 1.2 ends with our
                // ChangeCipherSpec and Finished after the client's).
                Progress::NeedInput if !self.conn.is_handshaking() => return self.poll_send(cx),
                Progress::NeedInput => {
                    // Our flight goes out before we wait for the client's answer to it.
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(closed_during_handshake()));
                    }
                }
            }
        }
    }

    /// One call into rustls, with the bookkeeping its contract asks for: handle the state, then
    /// discard the consumed ciphertext from the front of `incoming`.
    fn turn(&mut self, intent: Intent<'_, '_>) -> io::Result<Progress> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection failed earlier",
            ));
        }
        let UnbufferedStatus { discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[self.consumed..]);
        let progress = match state {
            Ok(state) => handle(state, intent, &mut self.plaintext, &mut self.outgoing),
            Err(e) => Err(e),
        };
        self.discard(discard);
        progress.map_err(|e| {
            self.failed = true;
            self.queue_alert();
            let _ = self.io.try_write(&self.outgoing[self.sent..]);
            tls_error(e)
        })
    }

    /// After an error rustls has queued its fatal alert; encode it so the client learns why.
    /// One call only: the queue is popped before any input is looked at again, while a second
    /// call would parse the bad input again.
    fn queue_alert(&mut self) {
        let UnbufferedStatus { discard, state } = self
            .conn
            .process_tls_records(&mut self.incoming[self.consumed..]);
        if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
            append(&mut self.outgoing, 64, |out| {
                encode.encode(out).map_err(encode_needs)
            });
        }
        self.discard(discard);
    }

    fn discard(&mut self, n: usize) {
        self.consumed = (self.consumed + n).min(self.incoming.len());
        if self.consumed == self.incoming.len() {
            self.incoming = Vec::new();
            self.consumed = 0;
        }
    }

    /// Reads what the client sent into `incoming`; 0 at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.consumed > 0 {
            self.incoming.drain(..self.consumed);
            self.consumed = 0;
        }
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message larger than 64 KiB",
            )));
        }
        let room = self.read_size.min(MAX_INCOMING - self.incoming.len());
        self.incoming.reserve_exact(room);
        // tokio's read (not try_read): a short read clears the socket's readiness, which saves
        // a read that would only say EAGAIN.
        let read = std::pin::pin!(self.io.read_buf(&mut self.incoming)).poll(cx);
        match read {
            Poll::Ready(Ok(n)) => {
                // Full reads mean a burst: ask for more next time; a short one resets.
                self.read_size = if n >= room {
                    (self.read_size * 2).min(BULK_READ)
                } else {
                    RECORD
                };
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Writes the queued ciphertext; the buffer is given back once it is all out.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Moves decrypted bytes that did not fit an earlier read to the caller.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) {
        let pending = &self.plaintext[self.taken..];
        if pending.is_empty() || buf.remaining() == 0 {
            return;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.taken += n;
        if self.taken == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
    }
}

/// Acts on one state of rustls's machine.
fn handle(
    state: ConnectionState<'_, '_, rustls::server::ServerConnectionData>,
    intent: Intent<'_, '_>,
    plaintext: &mut Vec<u8>,
    outgoing: &mut Vec<u8>,
) -> Result<Progress, rustls::Error> {
    Ok(match state {
        ConnectionState::ReadTraffic(mut traffic) => {
            let mut reader = match intent {
                Intent::Read(reader) => reader,
                _ => None,
            };
            while let Some(record) = traffic.next_record() {
                let mut payload = record?.payload;
                if let Some(buf) = reader.as_deref_mut() {
                    let n = payload.len().min(buf.remaining());
                    buf.put_slice(&payload[..n]);
                    payload = &payload[n..];
                }
                plaintext.extend_from_slice(payload);
            }
            Progress::Again
        }
        ConnectionState::EncodeTlsData(mut encode) => {
            append(outgoing, 1024, |out| {
                encode.encode(out).map_err(encode_needs)
            });
            Progress::Again
        }
        // The bytes are in `outgoing`, which we send before waiting on the client.
        ConnectionState::TransmitTlsData(transmit) => {
            transmit.done();
            Progress::Again
        }
        ConnectionState::BlockedHandshake => Progress::NeedInput,
        ConnectionState::WriteTraffic(mut traffic) => match intent {
            Intent::Read(_) => Progress::NeedInput,
            Intent::Write(data) => {
                let guess = data.len() + 22 * (data.len() / (16 * 1024) + 1);
                let queued = append(outgoing, guess, |out| {
                    traffic.encrypt(data, out).map_err(encrypt_needs)
                });
                match queued {
                    Some(_) => Progress::Queued(data.len()),
                    None => return Err(rustls::Error::EncryptError),
                }
            }
            Intent::Close => {
                append(outgoing, 64, |out| {
                    traffic.queue_close_notify(out).map_err(encrypt_needs)
                });
                Progress::Queued(0)
            }
        },
        ConnectionState::PeerClosed => Progress::PeerClosed,
        ConnectionState::Closed => Progress::Closed,
        // Early data is not enabled; anything else is a state this rustls does not yet have.
        _ => return Err(rustls::Error::General("unexpected TLS state".into())),
    })
}

/// For [`append`]: how much room rustls asked for, or `None` when it cannot write at all.
fn encode_needs(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        EncodeError::AlreadyEncoded => None,
    }
}

fn encrypt_needs(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Some(required_size)
        }
        EncryptError::EncryptExhausted => None,
    }
}

/// Lets `write` fill the end of `out`, growing it to the size rustls asks for. `write` returns
/// the bytes written, `Err(Some(n))` for "needs n bytes" or `Err(None)` for nothing to write.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Option<usize> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Some(n);
            }
            Err(Some(required)) if required > room => room = required,
            Err(_) => {
                out.truncate(start);
                return None;
            }
        }
    }
}

impl AsyncRead for TlsServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        loop {
            this.take_plaintext(buf);
            if buf.remaining() == 0 || this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            // What rustls queued on its own (alerts, key update answers) goes out as we read;
            // a full socket send buffer does not stop reading.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            match this.turn(Intent::Read(Some(buf)))? {
                Progress::Again | Progress::Queued(_) => {}
                Progress::PeerClosed | Progress::Closed => this.peer_closed = true,
                // Every whole record is decrypted: hand over what we have before waiting.
                Progress::NeedInput if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Progress::NeedInput => {
                    if ready!(this.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(eof_without_close_notify()));
                    }
                }
            }
        }
    }
}

impl AsyncWrite for TlsServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let data = &data[..data.len().min(MAX_WRITE)];
        let readable_before = this.plaintext.len() - this.taken;
        let mut closed_now = false;
        loop {
            match this.turn(Intent::Write(data))? {
                Progress::Queued(n) => {
                    // Records decrypted on the way are for the reader, whose waker is parked
                    // on the socket: wake the task so it looks again.
                    if this.plaintext.len() - this.taken > readable_before || closed_now {
                        cx.waker().wake_by_ref();
                    }
                    if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(n));
                }
                Progress::Again => {}
                Progress::PeerClosed => {
                    this.peer_closed = true;
                    closed_now = true;
                }
                Progress::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Progress::NeedInput => {
                    return Poll::Ready(Err(io::Error::other("TLS handshake not complete")))
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// close_notify, then the TCP FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_queued {
            match this.turn(Intent::Close) {
                Ok(Progress::Again) => {}
                Ok(Progress::PeerClosed) => this.peer_closed = true,
                // Queued, already closed, or a broken connection: nothing more to say.
                _ => this.close_queued = true,
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "tls_stream_tests.rs"]
mod tests;
