//! [`ProxyBody`]: the one body type of the data path, in both directions.
//!
//! A streamed body is passed through frame by frame, never buffered whole. It
//! enforces an idle timeout (longest pause between frames) and, for request
//! bodies, the service's size cap. A response body carries a [`Release`]
//! (the upstream connection it arrived on: `pool::Lease`) and releases it
//! when the body ends cleanly; a body dropped early or failed takes its
//! connection with it, so a half-read connection is never reused.
//!
//! A request body reports its progress to an [`Upload`], so the upstream's
//! timeout runs from the request's last byte and never while the proxy waits
//! on the client; and its failures are the client's ([`BodyError::BadBody`],
//! [`BodyError::ClientClosed`]), never the upstream's.

use crate::data::deadline::Deadline;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A boxed error, as hyper accepts for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a body stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// No frame arrived within the idle timeout.
    #[error("body idle timeout")]
    IdleTimeout,
    /// The request body is larger than the service's cap.
    #[error("request body larger than the service's max_request_body")]
    TooLarge,
    /// The client's body is malformed (bad chunk framing).
    #[error("malformed request body")]
    BadBody,
    /// The client closed or reset the connection before its body ended.
    #[error("the client went away during its request body")]
    ClientClosed,
}

/// How a request body's upload is going, shared between the body (written
/// as frames arrive) and the forward phase (read at its deadline).
#[derive(Debug)]
pub struct Upload {
    base: Instant,
    /// Nanoseconds after `base` of the last frame read (or of the end).
    last_ns: AtomicU64,
    /// The whole body was read.
    done: AtomicBool,
    /// The body waits for the client's next frame (rather than for the
    /// upstream to take more).
    waiting: AtomicBool,
}

/// What a response body holds for the exchange it came from, released
/// when the body ends cleanly and dropped with it otherwise.
pub trait Release: Send + 'static {
    /// The exchange ended cleanly.
    fn release(self);
    /// The body's trailers arrived (they also go on to the client).
    fn trailers(&mut self, _trailers: &http::HeaderMap) {}
    /// The body failed before its end (reset, stalled); dropped next.
    fn fail(&mut self) {}
}

/// The body of every request and response the proxy sends; `L` is what a
/// response body releases at its clean end.
pub struct ProxyBody<L> {
    kind: Kind<L>,
}

enum Kind<L> {
    Empty,
    Full(Option<Bytes>),
    Stream(Box<Stream<L>>),
}

struct Stream<L> {
    inner: Incoming,
    idle: Duration,
    sleep: Option<Deadline>,
    /// The idle timer runs (there was a pause since the last frame).
    armed: bool,
    /// Bytes still allowed, when capped.
    remaining: Option<u64>,
    /// Released at a clean end (a response's upstream connection).
    lease: Option<L>,
    /// A request body: its progress (and its errors are the client's).
    upload: Option<Arc<Upload>>,
    /// A request body being copied for a mirror.
    tee: Option<Tee>,
}

/// A copy of a request body for a mirror, up to a cap, handed over whole at
/// the body's end; dropped unsent (so the mirror gives up) past the cap or
/// when the body fails.
struct Tee {
    copy: bytes::BytesMut,
    cap: u64,
    to: tokio::sync::oneshot::Sender<Bytes>,
}

// === impl ProxyBody ===

impl<L: Release> ProxyBody<L> {
    /// An empty body.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// A body of one chunk.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self { kind: Kind::Full(Some(bytes.into())) }
    }

    /// A client's request body with an idle timeout and an optional size
    /// cap, and its [`Upload`] (`None` for an empty body).
    pub fn request(inner: Incoming, idle: Duration, cap: Option<u64>) -> (Self, Option<Arc<Upload>>) {
        if inner.is_end_stream() {
            return (Self::empty(), None);
        }
        let upload = Arc::new(Upload::new());
        let body = Self {
            kind: Kind::Stream(Box::new(Stream {
                inner,
                idle,
                sleep: None,
                armed: false,
                remaining: cap,
                lease: None,
                upload: Some(upload.clone()),
                tee: None,
            })),
        };
        (body, Some(upload))
    }

    /// Copies this request body, up to `cap` bytes, for a mirror: the copy
    /// arrives whole when the body has been read to its end (an empty body
    /// at once); the sender is dropped instead when the body is larger or fails.
    pub fn tee(&mut self, cap: u64) -> tokio::sync::oneshot::Receiver<Bytes> {
        let (to, copy) = tokio::sync::oneshot::channel();
        match &mut self.kind {
            Kind::Stream(s) => s.tee = Some(Tee { copy: bytes::BytesMut::new(), cap, to }),
            Kind::Empty => drop(to.send(Bytes::new())),
            Kind::Full(b) => drop(to.send(b.clone().unwrap_or_default())),
        }
        copy
    }

    /// A response body that releases `lease` when it ends cleanly.
    pub fn upstream(inner: Incoming, idle: Duration, lease: L) -> Self {
        if inner.is_end_stream() {
            lease.release();
            return Self::empty();
        }
        Self {
            kind: Kind::Stream(Box::new(Stream {
                inner,
                idle,
                sleep: None,
                armed: false,
                remaining: None,
                lease: Some(lease),
                upload: None,
                tee: None,
            })),
        }
    }
}

impl<L: Release> Body for ProxyBody<L> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(b) => b.is_none(),
            Kind::Stream(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(s) => s.inner.size_hint(),
        }
    }
}

// === impl Stream ===

impl<L: Release> Stream<L> {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let Poll::Ready(frame) = polled else {
            // The idle period starts at the first pause after progress (not
            // when the reader last polled: a slow reader is not an idle body).
            if !self.armed {
                let at = Instant::now() + self.idle;
                self.sleep.get_or_insert_with(|| Deadline::at(at)).reset(at);
                self.armed = true;
                if let Some(u) = &self.upload {
                    u.waiting.store(true, Ordering::Relaxed);
                }
            }
            // Armed above, so present; the body itself will wake this task too.
            let Some(sleep) = &mut self.sleep else { return Poll::Pending };
            ready!(Pin::new(sleep).poll(cx));
            self.fail();
            return Poll::Ready(Some(Err(BodyError::IdleTimeout.into())));
        };
        self.armed = false;
        if let Some(u) = &self.upload {
            u.progress(frame.is_none() || self.inner.is_end_stream());
        }
        match frame {
            Some(Ok(frame)) => {
                if let (Some(remaining), Some(data)) = (&mut self.remaining, frame.data_ref()) {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(BodyError::TooLarge.into())));
                    }
                    *remaining -= len;
                }
                if let Some(data) = frame.data_ref() {
                    let fits = self.tee.as_ref().is_some_and(|t| t.copy.len() as u64 + data.len() as u64 <= t.cap);
                    match fits {
                        true => self.tee.iter_mut().for_each(|t| t.copy.extend_from_slice(data)),
                        false => self.tee = None,
                    }
                }
                if let (Some(lease), Some(t)) = (&mut self.lease, frame.trailers_ref()) {
                    lease.trailers(t);
                }
                // A body of known length ends with its last byte; the reader
                // may never poll again, so hand the connection back now.
                if self.inner.is_end_stream() {
                    self.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                self.fail();
                match self.upload {
                    Some(_) => Poll::Ready(Some(Err(client_fault(&e).into()))),
                    None => Poll::Ready(Some(Err(e.into()))),
                }
            }
            None => {
                self.finish();
                Poll::Ready(None)
            }
        }
    }

    /// The exchange ended cleanly: the connection may carry the next
    /// request, and a mirror gets its copy of the body.
    fn finish(&mut self) {
        if let Some(t) = self.tee.take() {
            let _ = t.to.send(t.copy.freeze());
        }
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }

    /// The exchange failed: the connection goes with the body (and a
    /// mirror's copy is dropped).
    fn fail(&mut self) {
        self.tee = None;
        if let Some(mut lease) = self.lease.take() {
            lease.fail();
        }
    }
}

/// What a client's broken body was: bad framing, or the client going away.
fn client_fault(e: &hyper::Error) -> BodyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput) {
                return BodyError::BadBody;
            }
        }
        source = err.source();
    }
    if e.is_parse() {
        BodyError::BadBody
    } else {
        BodyError::ClientClosed
    }
}

// === impl Upload ===

impl Upload {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ns: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiting: AtomicBool::new(false),
        }
    }

    /// A frame arrived (`end`: the last one).
    fn progress(&self, end: bool) {
        self.last_ns.store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
        if end {
            self.done.store(true, Ordering::Relaxed);
        }
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))
    }

    /// When the upstream's `timeout` runs out: `timeout` after the last byte
    /// the proxy read, or `None` while it waits on the client (the body's idle
    /// timeout bounds that).
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        let waiting = !self.done.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed);
        (!waiting).then(|| self.last() + timeout)
    }

    /// When the whole body had been read, if it has.
    pub fn done_at(&self) -> Option<Instant> {
        self.done.load(Ordering::Relaxed).then(|| self.last())
    }
}
