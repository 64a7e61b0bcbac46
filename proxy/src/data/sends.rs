//! One `send` per small write: hyper hands a connection its response head
//! and body (or a request head) as separate slices for one `writev`. On a
//! socket `writev` takes the kernel's generic file path (`vfs_writev`,
//! `fdget_pos`, importing the iovec), while `send` goes straight to the
//! socket: a profile of the 90/10 split put the difference at about 0.3 µs
//! per request. [`Sends`] joins slices of up to [`JOIN_LIMIT`] bytes into one
//! buffer and sends that; larger writes stay vectored (no copy of a big body).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes joined into one `send`; larger writes go as one `writev`.
const JOIN_LIMIT: usize = 4096;

thread_local! {
    /// The thread's buffer for joining slices: kept, so never zeroed or grown
    /// again (a fresh array per write was a 4 KiB memset).
    static JOINED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(JOIN_LIMIT));
}

/// A socket whose small vectored writes go as one plain write.
#[derive(Debug)]
pub struct Sends<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Sends<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Sends<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        match (slices.next(), slices.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(only), None) => Pin::new(&mut self.0).poll_write(cx, only),
            _ if bufs.iter().map(|b| b.len()).sum::<usize>() <= JOIN_LIMIT => JOINED.with_borrow_mut(|joined| {
                joined.clear();
                for b in bufs {
                    joined.extend_from_slice(b);
                }
                // A partial send reports how many bytes of the whole went,
                // as `writev` would.
                Pin::new(&mut self.0).poll_write(cx, joined)
            }),
            _ => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Small slices arrive joined and whole; a large write arrives whole too.
    #[tokio::test]
    async fn joined_and_vectored_writes_deliver_every_byte_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut w = Sends(a);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n".to_vec();
        let n = w.write_vectored(&[IoSlice::new(&head), IoSlice::new(b""), IoSlice::new(b"ok\n")]).await.unwrap();
        assert_eq!(n, head.len() + 3);
        let big = vec![7u8; JOIN_LIMIT * 3];
        let mut sent = 0;
        while sent < big.len() + 2 {
            let bufs =
                [IoSlice::new(&big[sent.min(big.len())..]), IoSlice::new(&b"!!"[sent.saturating_sub(big.len())..])];
            sent += w.write_vectored(&bufs).await.unwrap();
        }
        drop(w);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        let mut want = head.clone();
        want.extend_from_slice(b"ok\n");
        want.extend_from_slice(&big);
        want.extend_from_slice(b"!!");
        assert_eq!(got, want);
    }
}
