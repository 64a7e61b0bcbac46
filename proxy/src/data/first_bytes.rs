//! A plaintext client's first bytes: read once, to tell HTTP/2's preface
//! from HTTP/1, then handed to hyper ahead of the socket's ([`Prefixed`]).
//! Peeking them instead left them in the socket for hyper to read again: one
//! more `recv` on every connection (with a new connection per request, 3.6
//! `recv` per request then, 2.8 now, HAProxy 2.9: `CLOSE=1 bash
//! benches/per_request.sh`).

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::h2_guard::PREFACE;

/// The first read's size: hyper's own first read buffer, so a request head
/// of up to that size is read in one `recv`, as hyper would.
const FIRST_READ: usize = 8192;

/// The protocol a client connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2: by prior knowledge in plaintext, by ALPN over TLS.
    Http2,
}

/// Reads a plaintext client's first bytes until they tell its protocol:
/// HTTP/2 if they are its preface (prior knowledge), HTTP/1 otherwise.
/// Returns the protocol and every byte read. `None` when the client closes
/// (or fails) first; a client whose bytes are only the start of the preface
/// is read again when more arrive, and the caller bounds the wait.
pub async fn read(stream: &mut TcpStream) -> Option<(ClientProtocol, Bytes)> {
    stream.readable().await.ok()?;
    // Allocated once bytes are here: an idle connection holds none.
    let mut first = BytesMut::with_capacity(FIRST_READ);
    loop {
        // A read, not a `try_read`: a short one clears the socket's
        // readiness (as hyper's own would), so hyper's next read waits for
        // the kernel's word instead of trying first, and failing.
        match stream.read_buf(&mut first).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        if let Some(protocol) = tell(&first) {
            return Some((protocol, first.freeze()));
        }
    }
}

/// The protocol `first` tells, or `None` while it is a strict start of the preface.
fn tell(first: &[u8]) -> Option<ClientProtocol> {
    let n = first.len().min(PREFACE.len());
    if !PREFACE.starts_with(&first[..n]) {
        Some(ClientProtocol::Http1)
    } else if n == PREFACE.len() {
        Some(ClientProtocol::Http2)
    } else {
        None
    }
}

/// A connection whose first reads return bytes already read from it.
#[derive(Debug)]
pub struct Prefixed<T> {
    first: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    /// `io`, whose reads return `first` before anything else.
    pub fn new(first: Bytes, io: T) -> Self {
        Self { first, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.first.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.first.len().min(buf.remaining());
        buf.put_slice(&self.first[..n]);
        self.first.advance(n);
        if self.first.is_empty() {
            // Frees the first read's buffer.
            self.first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    #[test]
    fn the_preface_and_only_it_tells_http2() {
        assert_eq!(tell(PREFACE), Some(ClientProtocol::Http2));
        assert_eq!(tell(&[&PREFACE[..], b"\0\0\x12\x04"].concat()), Some(ClientProtocol::Http2));
        assert_eq!(tell(b"GET / HTTP/1.1\r\n"), Some(ClientProtocol::Http1));
        assert_eq!(tell(b"PRI * HTTP/1.1\r\n"), Some(ClientProtocol::Http1));
        assert_eq!(tell(b"P"), None);
        assert_eq!(tell(&PREFACE[..23]), None);
    }

    /// A client's bytes, split at every point of the preface and after it,
    /// come out of the prefixed socket whole and in order.
    #[tokio::test]
    async fn every_byte_read_first_is_read_again_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = [&PREFACE[..], b"and then the frames"].concat();
        for split in [1, 5, 23, 24, 30] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let (head, tail) = sent.split_at(split);
            client.write_all(head).await.unwrap();
            let reading = tokio::spawn(async move { (read(&mut server).await, server) });
            tokio::time::sleep(std::time::Duration::from_millis(20)).await; // pace: the rest as a later segment
            client.write_all(tail).await.unwrap();
            drop(client);
            let (told, server) = reading.await.unwrap();
            let (protocol, first) = told.unwrap();
            assert_eq!(protocol, ClientProtocol::Http2, "split at {split}");
            let mut got = Vec::new();
            Prefixed::new(first, server).read_to_end(&mut got).await.unwrap();
            assert_eq!(got, sent, "split at {split}");
        }
    }

    /// A client that closes first (even mid-preface) is `None`.
    #[tokio::test]
    async fn a_client_that_closes_first_tells_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for sent in [&b""[..], &PREFACE[..10]] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            drop(client);
            assert!(read(&mut server).await.is_none(), "{sent:?}");
        }
    }
}
