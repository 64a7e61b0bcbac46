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

    /// Binds every listener and loads TLS certificates.
    pub async fn bind(self) -> Result<Bound, Error> {
        let mut listeners = Vec::new();
        for l in &self.config.listeners {
            listeners.push(listener::bind(l).await?);
        }
        Ok(Bound {
            listeners,
            shared: self.shared,
        })
    }
}

// === impl Bound ===

impl Bound {
    /// The bound addresses, by listener name.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .map(|l| (l.name.clone(), l.local_addr))
            .collect()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish for up to the drain timeout.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let builder = Arc::new(listener::builder(&self.shared.server));
        let graceful = Arc::new(GracefulShutdown::new());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut accept_loops = Vec::new();
        for l in self.listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, "listening");
            let g = graceful.clone();
            accept_loops.push(tokio::spawn(l.serve(
                self.shared.clone(),
                builder.clone(),
                move || g.watcher(),
                stop_rx.clone(),
            )));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for l in accept_loops {
            let _ = l.await;
        }
        let drain = self.shared.server.drain_timeout;
        let open = graceful.count();
        tracing::info!(open_connections = open, drain_timeout = ?drain, "shutting down: draining");
        let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
        match tokio::time::timeout(drain, graceful.shutdown()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
    }
}
