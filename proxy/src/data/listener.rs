//! Listeners: bind, accept, and serve client connections.
//!
//! The data path starts here. A listener is one `SO_REUSEPORT` socket per
//! worker (see [`crate::data::worker`]); the kernel spreads new connections across
//! them. Each accepted connection takes a permit (at most `max_connections`
//! per listener across workers; beyond that new clients wait in the kernel
//! backlog), gets a write-idle timeout, finishes its TLS handshake
//! within the handshake timeout, and is served by hyper's HTTP/1.1 server
//! (with upgrades) or its HTTP/2 server: by ALPN over TLS, by the first
//! bytes (the HTTP/2 preface or not) in plaintext. HTTP/2 connections pass
//! the cap on control frames ([`crate::data::h2_guard`]). Every connection watches the
//! stop signal: on shutdown, HTTP/1 connections close after their current
//! response and HTTP/2 ones send GOAWAY; a connection whose first request has
//! not begun yet (a TLS client just past its handshake, say) gets until the
//! header timeout to send it, and is served.

use super::deadline::{self, WorkerTimer};
use super::{forward, tls, Shared};
use crate::config::{ListenerConfig, ServerConfig};
use crate::data::first_bytes::{self, ClientProtocol, Prefixed};
use crate::data::h2_guard::ControlFrameGuard;
use crate::data::headers::ClientConn;
use crate::data::sends::Sends;
use crate::error::Error;
use http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use socket2::{Domain, Protocol, Socket, Type};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::task::TaskTracker;

/// A bound listener: one socket per worker, ready to serve.
pub struct BoundListener {
    /// Listener name.
    pub name: String,
    /// The address actually bound (the real port when the config said 0).
    pub local_addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
    tls: Option<Arc<tls::ServerTls>>,
    permits: Arc<Semaphore>,
    trust_forwarded: bool,
    set_forwarded: bool,
}

/// One worker's share of a listener.
pub struct Acceptor {
    name: String,
    socket: std::net::TcpListener,
    tls: Option<Arc<tls::ServerTls>>,
    permits: Arc<Semaphore>,
    trust_forwarded: bool,
    set_forwarded: bool,
}

/// Binds a listener (one `SO_REUSEPORT` socket per worker) and loads its
/// certificates. `inherited`: the sockets a predecessor passed for it (a
/// binary upgrade), used instead of new ones.
pub fn bind(
    cfg: &ListenerConfig,
    workers: usize,
    inherited: Option<Vec<std::net::TcpListener>>,
) -> Result<BoundListener, Error> {
    let tls = match &cfg.tls {
        Some(t) => Some(Arc::new(tls::server_tls(t)?)),
        None => None,
    };
    let bind_err = |error| Error::Bind { name: cfg.name.clone(), addr: cfg.bind, error };
    let mut sockets = inherited.unwrap_or_default();
    for s in &sockets {
        s.set_nonblocking(true).map_err(bind_err)?;
    }
    if sockets.is_empty() {
        // SO_REUSEPORT would let this process silently share a port with another
        // one (say, a second proxy started by mistake): a plain bind first makes
        // a taken port an error, as operators expect.
        if cfg.bind.port() != 0 {
            drop(std::net::TcpListener::bind(cfg.bind).map_err(bind_err)?);
        }
        sockets.push(reuseport_socket(cfg.bind).map_err(bind_err)?);
    }
    // Port 0 picks a port once; the other workers join that same port.
    let local_addr = sockets[0].local_addr().map_err(bind_err)?;
    while sockets.len() < workers {
        sockets.push(reuseport_socket(local_addr).map_err(bind_err)?);
    }
    Ok(BoundListener {
        name: cfg.name.clone(),
        local_addr,
        sockets,
        tls,
        permits: Arc::new(Semaphore::new(cfg.max_connections)),
        trust_forwarded: cfg.trust_forwarded,
        set_forwarded: cfg.set_forwarded,
    })
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

// === impl BoundListener ===

impl BoundListener {
    /// Its sockets, for a successor process (see [`crate::control::upgrade`]).
    pub fn sockets(&self) -> &[std::net::TcpListener] {
        &self.sockets
    }

    /// Splits the listener into one acceptor per worker.
    pub fn into_acceptors(self) -> impl Iterator<Item = Acceptor> {
        let Self { name, sockets, tls, permits, trust_forwarded, set_forwarded, .. } = self;
        sockets.into_iter().map(move |socket| Acceptor {
            name: name.clone(),
            socket,
            tls: tls.clone(),
            permits: permits.clone(),
            trust_forwarded,
            set_forwarded,
        })
    }
}

/// hyper's HTTP/1.1 and HTTP/2 servers, with the limits of a [`ServerConfig`].
///
/// The protocol is chosen before hyper sees the connection (see
/// [`first_bytes`]), rather than by hyper-util's auto builder: that one reads the
/// first bytes itself and hands them back to HTTP/1 in a read of their own,
/// which made hyper double every connection's 8 KiB read buffer (16 KiB per
/// client connection at rest), and it stood as one more layer in every read
/// and write of the connection.
pub struct Servers {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// hyper's servers with the limits of `server`.
pub fn servers(server: &ServerConfig) -> Servers {
    let mut http1 = http1::Builder::new();
    http1
        .timer(WorkerTimer)
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .max_headers(server.max_headers)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(WorkerTimer)
        .max_concurrent_streams(server.h2_max_concurrent_streams)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_header_list_size(server.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        // WebSockets over HTTP/2 (RFC 8441).
        .enable_connect_protocol();
    Servers { http1, http2 }
}

// === impl Acceptor ===

impl Acceptor {
    /// Accepts until `stop` turns true; each connection is a task of
    /// `connections` and shuts down gracefully once `stop` turns true.
    /// Runs on a worker's runtime.
    pub async fn serve(
        self,
        shared: Arc<Shared>,
        servers: Arc<Servers>,
        connections: TaskTracker,
        mut stop: watch::Receiver<bool>,
    ) {
        let listener = match TcpListener::from_std(self.socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listener = %self.name, error = %e, "cannot register the listener socket");
                return;
            }
        };
        let permits = self.permits;
        let tls_timeout = shared.server.tls_handshake_timeout;
        let write_timeout = shared.server.write_idle_timeout;
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stopped(&mut stop) => return,
            };
            let (mut stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => return,
            };
            let _ = stream.set_nodelay(true);
            let conn = Arc::new(ClientConn {
                peer: peer.ip(),
                peer_ip: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
                tls: self.tls.is_some(),
                trust_forwarded: self.trust_forwarded,
                set_forwarded: self.set_forwarded,
            });
            let (shared, servers, stop, tls) = (shared.clone(), servers.clone(), stop.clone(), self.tls.clone());
            let first_within = shared.server.header_read_timeout;
            connections.spawn(async move {
                let _permit = permit;
                // Until a client sends its first bytes the connection is only
                // its socket: no TLS or hyper state is built for it. No bytes
                // within the header timeout: closed.
                match tls {
                    None => {
                        let Ok(Some((protocol, first))) =
                            deadline::within(Instant::now() + first_within, first_bytes::read(&mut stream)).await
                        else {
                            return;
                        };
                        let io = client_io(Prefixed::new(first, stream), write_timeout);
                        serve_conn(io, protocol, shared, conn, &servers, stop).await
                    }
                    // Boxed: a task is as large as the largest future it may
                    // await, and the TLS one (handshake, TLS state) is twice the
                    // plain one; unboxed, every plain connection carried it.
                    Some(tls) => {
                        if deadline::within(Instant::now() + first_within, stream.readable()).await.is_err() {
                            return;
                        }
                        Box::pin(async move {
                            // The ClientHello first: it tells which config serves the client.
                            let handshake = async {
                                let io = client_io(stream, write_timeout);
                                let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
                                let config = tls.config_for(&hello.client_hello());
                                hello.into_stream(config).await
                            };
                            match deadline::within(Instant::now() + tls_timeout, handshake).await {
                                Ok(Ok(tls_stream)) => {
                                    // HTTP/2 over TLS is by ALPN only (RFC 9113 §3.2).
                                    let protocol = match tls_stream.get_ref().1.alpn_protocol() {
                                        Some(b"h2") => ClientProtocol::Http2,
                                        _ => ClientProtocol::Http1,
                                    };
                                    serve_conn(tls_stream, protocol, shared, conn, &servers, stop).await
                                }
                                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "tls handshake failed"),
                                Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
                            }
                        })
                        .await
                    }
                }
            });
        }
    }
}

/// A client socket as hyper (or the TLS handshake) gets it: small writes
/// joined into one `send`, a write-idle timeout.
fn client_io<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    write_timeout: Duration,
) -> Pin<Box<TimeoutStream<Sends<S>>>> {
    let mut io = TimeoutStream::new(Sends(stream));
    io.set_write_timeout(Some(write_timeout));
    Box::pin(io)
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves one client connection in `protocol` until it ends or `stop` turns
/// true (and the connection has finished gracefully).
async fn serve_conn<I>(
    io: I,
    protocol: ClientProtocol,
    shared: Arc<Shared>,
    conn: Arc<ClientConn>,
    servers: &Servers,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Set once the first request has begun (see the stop branch below).
    let started = Arc::new(AtomicBool::new(false));
    let first = started.clone();
    let first_request_within = shared.server.header_read_timeout;
    let control_frames = shared.server.h2_max_control_frames_per_second;
    // The request's future is boxed once: hyper moves the service future into
    // place (HTTP/1) or into a task of its own per stream (HTTP/2), and tokio
    // overwrites a task's whole stage when it ends. Unboxed, each of those
    // was a copy of the request path's whole state machine (memmove was 15 %
    // of an HTTP/2 profile); boxed, each copies a pointer.
    let service = service_fn(move |req| {
        first.store(true, Ordering::Relaxed);
        let handling = Box::pin(forward::handle(shared.clone(), conn.clone(), req));
        async move { Ok::<_, Infallible>(handling.await) }
    });
    let result = match protocol {
        ClientProtocol::Http1 => {
            let connection = servers.http1.serve_connection(TokioIo::new(io), service).with_upgrades();
            drive(connection, http1::UpgradeableConnection::graceful_shutdown, &started, first_request_within, stop)
                .await
        }
        // Boxed, as the TLS handshake is: HTTP/2's connection state is the larger.
        ClientProtocol::Http2 => {
            let io = TokioIo::new(ControlFrameGuard::new(io, control_frames));
            let connection = servers.http2.serve_connection(io, service);
            Box::pin(drive(connection, http2::Connection::graceful_shutdown, &started, first_request_within, stop))
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Polls `connection` to its end; once `stop` turns true, asks it to finish
/// gracefully (`finish`: hyper's `graceful_shutdown` for its kind).
/// `started` tells whether its first request has begun.
async fn drive<C: Future<Output = Result<(), hyper::Error>>>(
    connection: C,
    finish: fn(Pin<&mut C>),
    started: &AtomicBool,
    first_request_within: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    tokio::pin!(connection);
    // The connection is polled before the stop signal, so the request whose
    // bytes are already here is read and served before a graceful shutdown:
    // HTTP/1 closes after the response in progress, HTTP/2 sends GOAWAY.
    // The signal's future is polled once, to be woken by it, and again only
    // once it has changed: polling it on each of the connection's wake-ups
    // (several per request) cost more than this cheap check.
    let probe = stop.clone();
    let mut stopping = std::pin::pin!(stopped(&mut stop));
    let mut watching = false;
    let ended = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if !watching || probe.has_changed().unwrap_or(true) {
            watching = true;
            if stopping.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await;
    match ended {
        Some(r) => r,
        None => {
            // A client that connected but whose first request has not begun
            // (its bytes still on the way) gets until the header timeout to
            // send it, and is served: closing it now would fail a request
            // the client has every right to send on a fresh connection.
            let first_request = std::future::poll_fn(|cx| match connection.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending if started.load(Ordering::Relaxed) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            });
            match deadline::within(Instant::now() + first_request_within, first_request).await {
                Ok(Some(ended)) => ended,
                _ => {
                    finish(connection.as_mut());
                    connection.await
                }
            }
        }
    }
}
