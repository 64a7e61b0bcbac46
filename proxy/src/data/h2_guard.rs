//! A cap on HTTP/2 control frames: SETTINGS and PING floods.
//!
//! The h2 crate acknowledges every SETTINGS and PING a client sends, so a
//! client can make the proxy do work (and write) without ever sending a
//! request. [`ControlFrameGuard`] wraps an HTTP/2 client connection below
//! hyper (the listener puts it on those only) and reads the frame headers
//! going by: past `limit` SETTINGS or PING frames
//! (acknowledgements do not count) in one second, it writes GOAWAY with
//! ENHANCE_YOUR_CALM (RFC 9113 §5.4.1, §7) and ends the connection, as
//! Envoy and nginx do. Connections that do not start with the HTTP/2 preface
//! pass through untouched.
//!
//! The outgoing frames are followed too, so the GOAWAY goes out between two
//! of hyper's frames, never inside one.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Follows a stream of HTTP/2 frames, one header at a time.
#[derive(Default)]
struct Frames {
    header: [u8; 9],
    filled: usize,
    payload_left: usize,
}

impl Frames {
    /// Feeds `bytes`; calls `on_header(type, flags, stream)` for each complete frame header.
    fn feed(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == 9 {
                let h = self.header;
                self.filled = 0;
                self.payload_left = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
                on_header(h[3], h[4], u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff);
            }
        }
    }

    /// Between two frames (nothing of a frame half written).
    fn at_boundary(&self) -> bool {
        self.filled == 0 && self.payload_left == 0
    }
}

enum Mode {
    /// Reading the first bytes: is this HTTP/2?
    Preface(usize),
    /// HTTP/2: frames are counted.
    H2,
    /// Not HTTP/2 (or the cap is off): bytes pass through.
    Off,
}

/// The guard around one client connection (see the module docs).
pub struct ControlFrameGuard<I> {
    inner: I,
    limit: u32,
    mode: Mode,
    incoming: Frames,
    outgoing: Frames,
    window_start: Option<Instant>,
    in_window: u32,
    last_stream: u32,
    /// The GOAWAY being written, and how much of it is out.
    goaway: Option<([u8; 17], usize)>,
}

impl<I> ControlFrameGuard<I> {
    /// Wraps `inner`; `limit` control frames per second (0: no cap).
    pub fn new(inner: I, limit: u32) -> Self {
        Self {
            inner,
            limit,
            mode: if limit == 0 { Mode::Off } else { Mode::Preface(0) },
            incoming: Frames::default(),
            outgoing: Frames::default(),
            window_start: None,
            in_window: 0,
            last_stream: 0,
            goaway: None,
        }
    }

    /// Looks at bytes the client sent; true once the cap is passed.
    fn inspect(&mut self, mut bytes: &[u8]) -> bool {
        if let Mode::Preface(seen) = self.mode {
            let n = (PREFACE.len() - seen).min(bytes.len());
            if bytes[..n] != PREFACE[seen..seen + n] {
                self.mode = Mode::Off;
                return false;
            }
            self.mode = if seen + n == PREFACE.len() { Mode::H2 } else { Mode::Preface(seen + n) };
            bytes = &bytes[n..];
        }
        if !matches!(self.mode, Mode::H2) {
            return false;
        }
        let (mut control, mut last_stream) = (0u32, self.last_stream);
        self.incoming.feed(bytes, |kind, flags, stream| match kind {
            SETTINGS | PING if flags & ACK == 0 => control += 1,
            HEADERS => last_stream = last_stream.max(stream),
            _ => {}
        });
        self.last_stream = last_stream;
        if control == 0 {
            return false;
        }
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                self.in_window = self.in_window.saturating_add(control)
            }
            _ => {
                self.window_start = Some(now);
                self.in_window = control;
            }
        }
        self.in_window > self.limit
    }

    fn flood_error() -> io::Error {
        io::Error::other("HTTP/2 control frame flood (SETTINGS or PING beyond the per-second cap)")
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ControlFrameGuard<I> {
    /// Writes the pending GOAWAY (if the outgoing stream is between frames) and flushes.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((frame, written)) = &mut self.goaway {
            if self.outgoing.at_boundary() {
                while *written < frame.len() {
                    let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &frame[*written..]))?;
                    if n == 0 {
                        break;
                    }
                    *written += n;
                }
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
            }
        }
        Poll::Ready(Err(Self::flood_error()))
    }

    fn start_goaway(&mut self) {
        let mut frame = [0u8; 17];
        frame[..9].copy_from_slice(&[0, 0, 8, 0x7, 0, 0, 0, 0, 0]);
        frame[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        frame[13..].copy_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        self.goaway = Some((frame, 0));
    }

    fn track_written(&mut self, bufs: &[IoSlice<'_>], mut n: usize) {
        if !matches!(self.mode, Mode::H2) {
            return;
        }
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = n.min(b.len());
            self.outgoing.feed(&b[..take], |_, _, _| {});
            n -= take;
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ControlFrameGuard<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.goaway.is_some() {
            return this.poll_goaway(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if matches!(this.mode, Mode::Off) {
            return Poll::Ready(Ok(()));
        }
        if this.inspect(&buf.filled()[before..]) {
            tracing::warn!(limit = this.limit, "closing an HTTP/2 connection: control frame flood");
            buf.set_filled(before);
            this.start_goaway();
            return this.poll_goaway(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ControlFrameGuard<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.goaway.is_some() {
            return this.poll_goaway(cx).map(|r| r.map(|()| 0));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.track_written(&[IoSlice::new(buf)], n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.goaway.is_some() {
            return this.poll_goaway(cx).map(|r| r.map(|()| 0));
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.track_written(bufs, n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_settings_and_pings_but_not_their_acks() {
        let mut g = ControlFrameGuard::new((), 3);
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes.extend(frame(PING, ACK, 0, &[0; 8]));
        bytes.extend(frame(HEADERS, 4, 5, &[1, 2, 3]));
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
        // Byte at a time: frame headers split across reads are still seen.
        for b in bytes.chunks(1) {
            assert!(!g.inspect(b));
        }
        assert_eq!(g.last_stream, 5);
        assert!(!g.inspect(&frame(PING, 0, 0, &[0; 8])));
        assert!(g.inspect(&frame(SETTINGS, 0, 0, &[])), "the fourth control frame in a second passes the cap");
    }

    #[test]
    fn http1_passes_through() {
        let mut g = ControlFrameGuard::new((), 1);
        assert!(!g.inspect(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(matches!(g.mode, Mode::Off));
        assert!(!g.inspect(&frame(PING, 0, 0, &[0; 8]).repeat(10)));
    }
}
