//! Switchyard: a reverse proxy for progressive delivery.
//!
//! It splits each service's traffic between version pools (stable/canary,
//! blue/green) by rules, sticky keys and weights, and forwards each request
//! to an endpoint of the chosen pool.
//!
//! # Layout
//!
//! Following the data path:
//!
//! - [`worker`]: thread-per-core workers, each with its own runtime;
//! - [`listener`], [`tls`]: bind, accept, TLS, hyper connection settings;
//! - [`forward`]: the request phases — check, match, split, forward, respond;
//! - [`headers`], [`path`]: request checks, header rewriting, path normalisation;
//! - [`snapshot`]: the immutable compiled state the request path reads;
//! - [`split`]: rules, sticky keys and weights;
//! - [`pool`]: endpoints, load balancing, health, upstream connections;
//! - [`body`]: the streamed body type of both directions.
//!
//! Around it: [`config`] (YAML → validated [`Config`]), [`error`],
//! [`logging`], [`demo`] (upstreams for the bundled example).
//!
//! Use: [`Proxy::new`] → [`Proxy::bind`] → [`Bound::run`].

pub mod body;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod logging;
pub mod path;
pub mod pool;
pub mod snapshot;
pub mod split;
pub mod tls;
pub mod worker;

pub use config::Config;
pub use error::Error;

use arc_swap::ArcSwap;
use config::ServerConfig;
use hyper_util::server::graceful::GracefulShutdown;
use listener::BoundListener;
use snapshot::Snapshot;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// State shared by every connection: the current snapshot and the limits.
pub struct Shared {
    /// The snapshot the request path reads; replaced whole, never mutated.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide limits and timeouts.
    pub server: ServerConfig,
    /// Write one access-log line per request.
    pub access_log: bool,
}

/// A configured proxy, not yet bound.
pub struct Proxy {
    config: Config,
    shared: Arc<Shared>,
}

/// A proxy with its listeners bound.
pub struct Bound {
    listeners: Vec<BoundListener>,
    shared: Arc<Shared>,
}

/// Everything `switchyard check` verifies beyond [`Config::load`]: that every
/// listener's certificates and keys load and match.
pub fn check(config: &Config) -> Result<(), Error> {
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            tls::server_config(t).map_err(|e| Error::Tls(format!("listener `{}`: {e}", l.name)))?;
        }
    }
    Ok(())
}

// === impl Proxy ===

impl Proxy {
    /// Compiles the config into the first snapshot. Starts health checks, so
    /// it must run inside a tokio runtime.
    pub fn new(config: Config, access_log: bool) -> Self {
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::new(&config)),
            server: config.server.clone(),
            access_log,
        });
        Self { config, shared }
    }

    /// Binds every listener (one socket per worker) and loads TLS certificates.
    pub fn bind(self) -> Result<Bound, Error> {
        let workers = self.shared.server.workers;
        let listeners = self.config.listeners.iter().map(|l| listener::bind(l, workers)).collect::<Result<_, _>>()?;
        Ok(Bound { listeners, shared: self.shared })
    }
}

// === impl Bound ===

impl Bound {
    /// The bound addresses, by listener name.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().map(|l| (l.name.clone(), l.local_addr)).collect()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish for up to the drain timeout.
    ///
    /// Starts the worker threads; the caller's runtime stays the control path.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let workers = self.shared.server.workers;
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(false);
        let (stopped_tx, mut stopped_rx) = tokio::sync::mpsc::unbounded_channel::<()>();

        let mut per_worker: Vec<Vec<listener::Acceptor>> = (0..workers).map(|_| Vec::new()).collect();
        for l in self.listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, workers, "listening");
            for (i, a) in l.into_acceptors().enumerate() {
                per_worker[i].push(a);
            }
        }
        let mut threads = Vec::new();
        for (i, acceptors) in per_worker.into_iter().enumerate() {
            let (shared, graceful, stop_rx, exit_rx, stopped_tx) =
                (self.shared.clone(), graceful.clone(), stop_rx.clone(), exit_rx.clone(), stopped_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || worker_main(i, acceptors, shared, graceful, stop_rx, exit_rx, stopped_tx))
                .map_err(|e| Error::Runtime(format!("cannot start worker thread {i}: {e}")))?;
            threads.push(thread);
        }
        drop(stopped_tx);

        shutdown.await;
        let _ = stop_tx.send(true);
        // Every worker has stopped accepting: no new connection can join the drain.
        for _ in 0..workers {
            if stopped_rx.recv().await.is_none() {
                break;
            }
        }
        let drain = self.shared.server.drain_timeout;
        tracing::info!(open_connections = graceful.count(), drain_timeout = ?drain, "shutting down: draining");
        match Arc::try_unwrap(graceful) {
            Ok(graceful) => match tokio::time::timeout(drain, graceful.shutdown()).await {
                Ok(()) => tracing::info!("drained"),
                Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
            },
            Err(_) => {
                tracing::warn!("a worker is still holding the drain signal; closing connections")
            }
        }
        let _ = exit_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        Ok(())
    }
}

/// One worker thread: its own current-thread runtime serving its acceptors
/// until told to exit; dropping the runtime closes what is still open.
fn worker_main(
    index: usize,
    acceptors: Vec<listener::Acceptor>,
    shared: Arc<Shared>,
    graceful: Arc<GracefulShutdown>,
    stop: watch::Receiver<bool>,
    mut exit: watch::Receiver<bool>,
    stopped: tokio::sync::mpsc::UnboundedSender<()>,
) {
    worker::set_index(index);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start the worker runtime");
            let _ = stopped.send(());
            return;
        }
    };
    runtime.block_on(async move {
        let builder = Arc::new(listener::builder(&shared.server));
        let loops: Vec<_> = acceptors
            .into_iter()
            .map(|a| {
                let g = graceful.clone();
                tokio::spawn(a.serve(shared.clone(), builder.clone(), move || g.watcher(), stop.clone()))
            })
            .collect();
        for l in loops {
            let _ = l.await;
        }
        drop(graceful);
        let _ = stopped.send(());
        let _ = exit.wait_for(|e| *e).await;
    });
}
