//! Helpers shared by the unit tests of the stream layers (`splice`, `tls_stream`).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected loopback pair: (the peer's end, the proxy's end).
pub async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (outer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (outer.unwrap(), accepted.unwrap().0)
}

/// Bytes that show a misordering or a dropped chunk, unlike a constant fill.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` then shuts down, while reading the other way until EOF, `read_chunk` bytes
/// at most per read.
pub async fn talk<S: AsyncRead + AsyncWrite>(stream: S, data: &[u8], read_chunk: usize) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let receive = async {
        let mut got = Vec::new();
        let mut chunk = vec![0u8; read_chunk];
        loop {
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::join!(send, receive).1
}
