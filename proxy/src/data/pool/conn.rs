//! Upstream connections of one endpoint: HTTP/1.1 with keep-alive.
//!
//! Each worker thread keeps its own idle connections in a bounded queue, so a
//! connection is only ever used on the thread that drives it. A request takes
//! one (skipping any the upstream closed or that idled too long) or dials a
//! new one; the response body puts it back when the exchange ended cleanly
//! (see [`Lease`](super::Lease)). A full queue drops the extra connection. Off
//! the worker threads nothing is pooled.

use crate::data::body::ProxyBody;
use crossbeam_queue::ArrayQueue;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The sending half of one upstream connection.
pub type Sender = http1::SendRequest<ProxyBody<super::Lease>>;

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
    /// The HTTP/1 handshake failed.
    #[error("handshake with {0}: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

/// Idle connections of one endpoint, one queue per worker.
#[derive(Debug)]
pub(super) struct Idle {
    per_worker: Box<[ArrayQueue<(Sender, Instant)>]>,
}

impl Idle {
    pub(super) fn new(workers: usize) -> Self {
        Self { per_worker: (0..workers).map(|_| ArrayQueue::new(MAX_IDLE)).collect() }
    }

    fn queue(&self) -> Option<&ArrayQueue<(Sender, Instant)>> {
        worker_index().and_then(|i| self.per_worker.get(i))
    }

    /// A ready connection, and whether it was newly dialled.
    pub(super) async fn checkout(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(Sender, bool), ConnectError> {
        let Some(queue) = self.queue() else {
            return connect(addr, connect_timeout).await.map(|s| (s, true));
        };
        while let Some((mut sender, since)) = queue.pop() {
            if sender.is_closed() || since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // A connection returned just as its response ended may not have
            // reported ready yet; this resolves at once either way.
            if sender.ready().await.is_ok() {
                return Ok((sender, false));
            }
        }
        connect(addr, connect_timeout).await.map(|s| (s, true))
    }

    pub(super) fn checkin(&self, sender: Sender) {
        if let (Some(queue), false) = (self.queue(), sender.is_closed()) {
            // A full queue drops the connection, which closes it.
            let _ = queue.push((sender, Instant::now()));
        }
    }
}

/// Dials a new HTTP/1.1 connection (upgrades allowed) and spawns its driver.
pub(crate) async fn connect(addr: SocketAddr, connect_timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(ConnectError::Io(addr, e)),
        Err(_) => return Err(ConnectError::Timeout(addr)),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|e| ConnectError::Handshake(addr, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
