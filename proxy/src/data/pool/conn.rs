//! Upstream connections of one endpoint: HTTP/1.1 with keep-alive, or one
//! multiplexed HTTP/2 connection; over TCP, or TLS.
//!
//! Each worker thread keeps its own connections in a bounded stack, so a
//! connection is only ever used on the thread that drives it. HTTP/1.1: a
//! request takes the idle one returned last (skipping any the upstream
//! closed or that idled too long) or dials a new one; the response body
//! puts it back when the exchange ended cleanly (see
//! [`Lease`](super::Lease)); a full stack drops its oldest connection.
//! HTTP/2: the worker's one connection is shared by all its requests until
//! it closes. Off the worker threads nothing is pooled.

use crate::config::Protocol;
use crate::data::body::ProxyBody;
use crate::data::sends::Sends;
use crossbeam_utils::atomic::AtomicCell;
use futures_util::future::Either;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2, TrySendError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The body of requests to upstreams.
type Body = ProxyBody<super::Lease>;

/// The sending half of one upstream connection.
pub enum Sender {
    /// An HTTP/1.1 connection: one exchange at a time.
    H1(http1::SendRequest<Body>),
    /// An HTTP/2 connection (or a handle on it): many at once.
    H2(http2::SendRequest<Body>),
}

impl Sender {
    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    /// Sends `req`; a request the connection never wrote comes back in the
    /// error. hyper's own future, not an async wrapper around it: that would
    /// hold the request twice, and the future is part of every request's.
    pub fn try_send_request(
        &mut self,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>> {
        match self {
            Sender::H1(s) => Either::Left(s.try_send_request(req)),
            Sender::H2(s) => Either::Right(s.try_send_request(req)),
        }
    }

    /// Whether requests go as HTTP/2 (absolute URI, no connection headers).
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_h2() { "Sender::H2" } else { "Sender::H1" })
    }
}

/// The most an HTTP/1.1 upstream connection reads at once; a response head
/// still incomplete once that much is buffered is refused (so heads up to
/// 64 KiB always pass, and none over 128 KiB does). hyper's default (about
/// 400 KiB) grows the read buffer that far on a large body, and every read
/// of it is a new buffer while the last is still on its way to the client:
/// a 1 MiB body then cost 2x the RSS and 10x the p99 of 64 KiB reads
/// (`benches/compare.sh`, workload `body1m`).
const READ_BUF_MAX: usize = 64 * 1024;

/// Most idle connections kept per endpoint.
const MAX_IDLE: usize = 512;
/// Idle connections older than this are closed rather than reused; upstreams
/// commonly close idle keep-alive connections after 60 s or more.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running on this thread; `None` off the data path.
fn worker_index() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `i`: its idle connections are its own.
pub fn enter_worker(i: usize) {
    INDEX.with(|c| c.set(Some(i)));
}

/// Connecting to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable, ...).
    #[error("connect to {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// TCP connect did not finish within the connect timeout.
    #[error("connect to {0}: timed out")]
    Timeout(SocketAddr),
    /// The TLS handshake failed (an unknown CA, a wrong name, ...).
    #[error("TLS handshake with {0} (as {1}): {2}")]
    Tls(SocketAddr, String, std::io::Error),
    /// The endpoint does not speak HTTP/2 over TLS (no `h2` by ALPN).
    #[error("{0} did not agree to HTTP/2 (ALPN offered h2, it chose {1})")]
    NoH2(SocketAddr, String),
    /// The HTTP handshake failed.
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// How a pool's connections are made: its protocol, and its TLS client.
pub struct Dialer {
    protocol: Protocol,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.tls.as_ref().map(|(_, n)| n.to_str());
        f.debug_struct("Dialer").field("protocol", &self.protocol).field("tls_name", &name).finish()
    }
}

impl Dialer {
    /// A dialer for `protocol`, over TLS when `tls` gives the client and name.
    pub fn new(protocol: Protocol, tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>) -> Self {
        Self { protocol, tls: tls.map(|(c, n)| (tokio_rustls::TlsConnector::from(c), n)) }
    }

    /// HTTP/2: one connection per worker carries every request.
    pub(super) fn multiplexed(&self) -> bool {
        self.protocol != Protocol::Http1
    }

    /// `https` over TLS, else `http`: the scheme of HTTP/2 requests' URIs.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }

    /// Dials `addr`: TCP, TLS if configured, then the HTTP handshake; spawns
    /// the connection's driver.
    pub(crate) async fn connect(&self, addr: SocketAddr, connect_timeout: Duration) -> Result<Sender, ConnectError> {
        // Boxed: a dial's state (the TLS and HTTP/2 handshakes) is KiBs, and
        // unboxed it is part of every request's future, though most requests
        // reuse a connection, and copied whole each time that future moves.
        Box::pin(self.dial(addr, connect_timeout)).await
    }

    async fn dial(&self, addr: SocketAddr, connect_timeout: Duration) -> Result<Sender, ConnectError> {
        let deadline = Instant::now() + connect_timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return self.handshake(addr, TokioIo::new(Sends(stream))).await;
        };
        let tls = match tokio::time::timeout_at(deadline, connector.connect(name.clone(), Sends(stream))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Tls(addr, name.to_str().into_owned(), e)),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        if self.protocol == Protocol::H2 && tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            let chose =
                tls.get_ref().1.alpn_protocol().map_or("none".into(), |p| String::from_utf8_lossy(p).into_owned());
            return Err(ConnectError::NoH2(addr, chose));
        }
        self.handshake(addr, TokioIo::new(tls)).await
    }

    async fn handshake<T>(&self, addr: SocketAddr, io: TokioIo<T>) -> Result<Sender, ConnectError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e| ConnectError::Handshake(addr, e);
        if self.multiplexed() {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
                }
            });
            return Ok(Sender::H2(sender));
        }
        let (sender, conn) = http1::Builder::new().max_buf_size(READ_BUF_MAX).handshake(io).await.map_err(failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// One worker's idle connections with the time each went idle, oldest first.
type Stack = VecDeque<(Sender, Instant)>;

/// One worker's stack, used only on that worker's thread, which takes it out
/// of the cell for the moment of a check-out or check-in: a pointer-sized
/// atomic swap, no lock (see the test `idle_sets_are_lock_free`).
#[derive(Default)]
struct Slot(AtomicCell<Option<Box<Stack>>>);

impl Slot {
    /// Runs `f` on the stack. `f` must not await (nor could it: it is not async).
    fn with<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> R {
        let mut stack = self.0.take().unwrap_or_default();
        let r = f(&mut stack);
        self.0.store(Some(stack));
        r
    }

    /// The worker's HTTP/2 connection, if it has a live one: a handle on it.
    fn shared_h2(&self) -> Option<Sender> {
        self.with(|stack| match stack.back() {
            Some((Sender::H2(shared), _)) if !shared.is_closed() => Some(Sender::H2(shared.clone())),
            _ => {
                stack.clear();
                None
            }
        })
    }

    /// The most recently returned connection still open and not idle too
    /// long at `arrived`.
    fn newest(&self, arrived: Instant) -> Option<Sender> {
        self.with(|stack| {
            while let Some((sender, since)) = stack.pop_back() {
                // From the request's arrival, not from now: microseconds younger.
                if arrived.saturating_duration_since(since) > IDLE_TIMEOUT {
                    // The rest went idle earlier still.
                    stack.clear();
                    return None;
                }
                if !sender.is_closed() {
                    return Some(sender);
                }
            }
            None
        })
    }
}

/// Connections of one endpoint, a stack per worker: idle HTTP/1.1 ones,
/// or the one HTTP/2 connection.
pub(super) struct Idle {
    per_worker: Box<[Slot]>,
    /// HTTP/2: held (by one worker's tasks only) while that worker dials,
    /// so requests arriving meanwhile share the new connection rather than
    /// each dialling one. Never taken once the connection is up.
    dialing: Box<[tokio::sync::Mutex<()>]>,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle").field("workers", &self.per_worker.len()).finish_non_exhaustive()
    }
}

impl Idle {
    pub(super) fn new(workers: usize, multiplexed: bool) -> Self {
        let dialing = if multiplexed { workers } else { 0 };
        Self {
            per_worker: (0..workers).map(|_| Slot::default()).collect(),
            dialing: (0..dialing).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// This worker's index and slot; `None` off the worker threads, where
    /// nothing is pooled.
    fn slot(&self) -> Option<(usize, &Slot)> {
        worker_index().and_then(|i| Some((i, self.per_worker.get(i)?)))
    }

    /// A ready connection, and whether it was newly dialled; `arrived`: when
    /// the request arrived (an idle connection's age is told from it).
    ///
    /// HTTP/1.1 takes the connection returned last: under many connections
    /// a few stay in use, warm in cache and acked with the next request,
    /// rather than each of hundreds in turn (which took more TCP segments
    /// per request, lone delayed ACKs, and a higher p99 at 1,000
    /// connections; README, "Many connections").
    pub(super) async fn checkout(
        &self,
        dialer: &Dialer,
        addr: SocketAddr,
        connect_timeout: Duration,
        arrived: Instant,
    ) -> Result<(Sender, bool), ConnectError> {
        let dial = async || dialer.connect(addr, connect_timeout).await.map(|s| (s, true));
        let Some((i, slot)) = self.slot() else {
            return dial().await;
        };
        if dialer.multiplexed() {
            if let Some(h) = slot.shared_h2() {
                return Ok((h, false));
            }
            let Some(dialing) = self.dialing.get(i) else {
                return dial().await;
            };
            let _dialing = dialing.lock().await;
            // Dialled by another request of this worker while this one waited.
            if let Some(h) = slot.shared_h2() {
                return Ok((h, false));
            }
            let sender = dialer.connect(addr, connect_timeout).await?;
            if let Sender::H2(shared) = &sender {
                let handle = Sender::H2(shared.clone());
                slot.with(|stack| {
                    stack.clear();
                    stack.push_back((handle, Instant::now()));
                });
            }
            return Ok((sender, true));
        }
        while let Some(mut sender) = slot.newest(arrived) {
            // A connection returned just as its response ended may not have
            // reported ready yet; this resolves at once either way.
            if sender.ready().await.is_ok() {
                return Ok((sender, false));
            }
        }
        dial().await
    }

    pub(super) fn checkin(&self, sender: Sender) {
        // An HTTP/2 handle goes: its connection is in the stack already.
        if sender.is_closed() || sender.is_h2() {
            return;
        }
        let Some((_, slot)) = self.slot() else { return };
        let now = Instant::now();
        slot.with(|stack| {
            // The oldest go first: idle too long, or one over the cap. (A
            // full stack keeps the connections in use, not the idle ones.)
            while stack.front().is_some_and(|(_, since)| now.saturating_duration_since(*since) > IDLE_TIMEOUT)
                || stack.len() >= MAX_IDLE
            {
                stack.pop_front();
            }
            stack.push_back((sender, now));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    #[test]
    fn idle_sets_are_lock_free() {
        assert!(AtomicCell::<Option<Box<Stack>>>::is_lock_free());
    }

    /// An upstream that answers each request with the number of its
    /// connection (in the order accepted).
    async fn numbered_upstream() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0usize.. {
                let (stream, _) = listener.accept().await.unwrap();
                let answer = hyper::service::service_fn(move |_| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                        n.to_string(),
                    ))))
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), answer));
            }
        });
        addr
    }

    /// The number of the upstream connection `sender` is.
    async fn number(sender: &mut Sender) -> String {
        let req = Request::get("/").header("host", "upstream").body(Body::empty()).unwrap();
        let resp = sender.try_send_request(req).await.unwrap_or_else(|e| panic!("{}", e.error()));
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_connection_returned_last_is_taken_first_and_none_idle_too_long() {
        let addr = numbered_upstream().await;
        enter_worker(0);
        let (dialer, idle, limit) = (Dialer::new(Protocol::Http1, None), Idle::new(1, false), Duration::from_secs(5));
        let mut senders = Vec::new();
        for want in ["0", "1", "2"] {
            let (mut s, dialled) = idle.checkout(&dialer, addr, limit, Instant::now()).await.unwrap();
            assert!(dialled);
            assert_eq!(number(&mut s).await, want);
            senders.push(s);
        }
        for s in senders {
            idle.checkin(s);
        }
        let mut taken = Vec::new();
        for want in ["2", "1"] {
            let (mut s, dialled) = idle.checkout(&dialer, addr, limit, Instant::now()).await.unwrap();
            assert!(!dialled);
            assert_eq!(number(&mut s).await, want, "newest first");
            taken.push(s);
        }
        // Returned (1, then 2): the one returned last is taken first.
        taken.into_iter().rev().for_each(|s| idle.checkin(s));
        let (mut s, _) = idle.checkout(&dialer, addr, limit, Instant::now()).await.unwrap();
        assert_eq!(number(&mut s).await, "2");
        idle.checkin(s);
        // Seen from a request arriving past the idle limit, all are too old.
        let late = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1);
        let (mut s, dialled) = idle.checkout(&dialer, addr, limit, late).await.unwrap();
        assert!(dialled);
        assert_eq!(number(&mut s).await, "3");
        assert_eq!(idle.slot().map(|(_, slot)| slot.with(|stack| stack.len())), Some(0), "and they were let go");
    }
}
