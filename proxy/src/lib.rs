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
//! - [`listener`], [`tls`], [`h2_guard`]: bind, accept, TLS, hyper connection
//!   settings, the cap on HTTP/2 control frames;
//! - [`forward`]: the request phases — check, match, split, forward, respond;
//! - [`headers`], [`path`]: request checks, header rewriting, path normalisation;
//! - [`snapshot`]: the immutable compiled state the request path reads;
//! - [`split`]: rules, sticky keys and weights;
//! - [`pool`]: endpoints, load balancing, health, upstream connections;
//! - [`body`]: the streamed body type of both directions.
//!
//! Per request, outcomes go to [`stats`] (thread-local recorders).
//!
//! The control path: [`control`], the one door for run-time changes
//! (weights, reload, flags, plugins, rollouts and their controllers: new
//! snapshot, event, persist, swap; the hand-over to a successor in
//! [`upgrade`]), [`rollout`] (the pure parts of canary and blue-green: state
//! machine, analysis, evidence), [`state`] (the durable store and history), [`admin`] (the
//! JSON API and Prometheus), [`ctl`] (the CLI client).
//!
//! Around it: [`config`] (YAML → validated [`Config`]), [`error`],
//! [`logging`], [`demo`] (upstreams for the bundled example).
//!
//! Use: [`Proxy::new`] → [`Proxy::bind`] → [`Bound::run`].

pub mod admin;
pub mod body;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod error;
pub mod flags;
pub mod forward;
pub mod h2_guard;
pub mod headers;
pub mod listener;
pub mod logging;
pub mod path;
pub mod plugin;
pub mod pool;
pub mod rollout;
pub mod snapshot;
pub mod split;
pub mod state;
pub mod stats;
pub mod tls;
pub mod upgrade;
pub mod worker;

pub use config::Config;
pub use error::Error;

use arc_swap::ArcSwap;
use config::ServerConfig;
use control::Control;
use listener::BoundListener;
use snapshot::Snapshot;
use stats::Stats;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

/// State shared by every connection: the current snapshot and the limits.
pub struct Shared {
    /// The snapshot the request path reads; replaced whole, never mutated.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide limits and timeouts.
    pub server: ServerConfig,
    /// Write one access-log line per request.
    pub access_log: bool,
    /// Record per-pool statistics.
    pub record_stats: bool,
    /// The control path's aggregates.
    pub stats: Arc<Stats>,
    /// Where workers send their recordings.
    stats_tx: mpsc::UnboundedSender<stats::Flush>,
    /// Shutting down: readiness turns false.
    pub draining: AtomicBool,
    /// The feature flags in force (file, then admin API overrides).
    pub flags: ArcSwap<flags::FlagSet>,
    /// Evaluation-context attributes taken from each request.
    pub flag_context: Vec<(String, config::AttrSource)>,
    /// The WebAssembly plugins in force (control path; routers are reached
    /// through the snapshot).
    pub plugins: plugin::Registry,
}

/// How a proxy runs, beyond its config file.
#[derive(Clone, Debug)]
pub struct Options {
    /// One access-log line per request.
    pub access_log: bool,
    /// Per-pool statistics (off only to measure their cost).
    pub record_stats: bool,
    /// The config file, for reloads.
    pub config_path: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self { access_log: true, record_stats: true, config_path: None }
    }
}

/// A configured proxy, not yet bound.
pub struct Proxy {
    config: Config,
    control: Arc<Control>,
}

/// A proxy with its listeners bound.
pub struct Bound {
    listeners: Vec<BoundListener>,
    admin: Option<(tokio::net::TcpListener, Arc<admin::Admin>)>,
    control: Arc<Control>,
    sockets: upgrade::Sockets,
}

/// Everything `switchyard check` verifies beyond [`Config::load`]: that the
/// flag file loads, every listener's certificates and keys load and match,
/// and every plugin file compiles and passes its trial call.
pub fn check(config: &Config) -> Result<(), Error> {
    let with_path: Vec<_> = config.plugins.iter().filter(|p| p.path.is_some()).cloned().collect();
    plugin::load_all(&with_path, &Default::default(), &Default::default())
        .map_err(|e| Error::Config(format!("config: {e}")))?;
    if let Some(f) = &config.flags {
        control::load_flags(f, &Default::default()).map_err(|e| Error::Config(format!("config: flags.file: {e}")))?;
    }
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            tls::server_config(t).map_err(|e| Error::Tls(format!("listener `{}`: {e}", l.name)))?;
        }
    }
    Ok(())
}

// === impl Proxy ===

impl Proxy {
    /// Opens the state store (if any), applies the weights stored there over
    /// the file's, and compiles the first snapshot. Starts health checks and
    /// the stats aggregator, so it must run inside a tokio runtime.
    pub fn new(config: Config, options: Options) -> Result<Self, Error> {
        let stats = Arc::new(Stats::new(config.stats.window, config.stats.resolution));
        let stats_tx = stats.spawn_aggregator();
        let store: Option<Box<dyn state::Store>> = match config.state_dir.as_deref() {
            Some(dir) => Some(Box::new(state::StateStore::open(dir)?)),
            None => None,
        };
        let overrides = match &store {
            Some(s) => s.run_time()?,
            None => Default::default(),
        };
        for (service, pools) in &overrides.suspended {
            tracing::warn!(service = %service, pools = ?pools, "rules to rolled-back pools stay suspended (state store)");
        }
        for (service, weights) in &overrides.weights {
            tracing::info!(service = %service, weights = ?weights, "using weights set through the admin API (state store), not the config file's");
        }
        let plugin_overrides = match &store {
            Some(s) => s.plugins()?,
            None => Default::default(),
        };
        let plugins = plugin::load_all(&config.plugins, &plugin_overrides, &Default::default())
            .map_err(|e| Error::Config(format!("config: {e}")))?;
        let snapshot = Snapshot::build(&config, &stats, None, &overrides, &plugins)
            .map_err(|e| Error::Config(format!("config: {e}")))?;
        let registry = plugin::Registry::default();
        registry.replace(plugins);
        let flag_overrides = match &store {
            Some(s) => s.flag_overrides()?,
            None => Default::default(),
        };
        let flag_set = match &config.flags {
            None => flags::FlagSet::default(),
            Some(f) => control::load_flags(f, &flag_overrides)
                .map_err(|e| Error::Config(format!("config: flags.file: {e}")))?,
        };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            server: config.server.clone(),
            access_log: options.access_log,
            record_stats: options.record_stats,
            stats,
            stats_tx,
            draining: AtomicBool::new(false),
            flags: ArcSwap::from_pointee(flag_set),
            flag_context: config.flags.as_ref().map(|f| f.context.clone()).unwrap_or_default(),
            plugins: registry,
        });
        let control = Arc::new(Control::new(shared, store, config.clone(), options.config_path));
        Ok(Self { config, control })
    }

    /// Run-time control (weights, reload, rollouts) of this proxy.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Binds every listener (one socket per worker) and the admin API, and
    /// loads TLS certificates.
    pub async fn bind(self) -> Result<Bound, Error> {
        self.bind_from(None).await
    }

    /// Like [`Proxy::bind`], taking over the sockets a predecessor passed
    /// (a binary upgrade) where a listener's name and address match.
    pub async fn bind_from(self, mut inherited: Option<&mut upgrade::Inherited>) -> Result<Bound, Error> {
        let workers = self.control.shared.server.workers;
        let mut sockets = upgrade::Sockets::default();
        let mut listeners = Vec::new();
        for l in &self.config.listeners {
            let passed = inherited.as_deref_mut().and_then(|i| i.take(&l.name, l.bind));
            let bound = listener::bind(l, workers, passed)?;
            sockets.add(&l.name, l.bind, bound.sockets())?;
            listeners.push(bound);
        }
        self.control.resume_rollouts().await?;
        let admin = match &self.config.admin {
            Some(a) => {
                let passed = inherited.and_then(|i| i.take(upgrade::ADMIN, a.bind));
                let socket = match passed.and_then(|mut s| s.pop()) {
                    Some(s) => s,
                    None => std::net::TcpListener::bind(a.bind).map_err(|error| Error::Bind {
                        name: "admin".into(),
                        addr: a.bind,
                        error,
                    })?,
                };
                sockets.add(upgrade::ADMIN, a.bind, std::slice::from_ref(&socket))?;
                Some(admin::bind(self.control.clone(), socket, a.tokens.clone()).await?)
            }
            None => None,
        };
        Ok(Bound { listeners, admin, control: self.control, sockets })
    }
}

// === impl Bound ===

impl Bound {
    /// The bound addresses, by listener name.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.iter().map(|l| (l.name.clone(), l.local_addr)).collect()
    }

    /// Run-time control (weights, reload) of this proxy.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// The listening sockets, for a successor process (see [`upgrade`]).
    pub fn take_sockets(&mut self) -> upgrade::Sockets {
        std::mem::take(&mut self.sockets)
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish for up to the drain timeout.
    ///
    /// Starts the worker threads; the caller's runtime stays the control path.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let shared = self.control.shared.clone();
        let workers = shared.server.workers;
        let admin_task = self.admin.map(|(listener, admin)| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(addr = %addr, "admin listening");
            }
            tokio::spawn(admin::serve(listener, admin))
        });
        let flag_watch =
            self.control.flags_file().map(|file| tokio::spawn(control::watch_flags(self.control.clone(), file)));
        // Every client connection is a task of this tracker: the drain waits for them.
        let connections = TaskTracker::new();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exit_tx, exit_rx) = watch::channel(false);
        let (stopped_tx, mut stopped_rx) = tokio::sync::mpsc::unbounded_channel::<()>();

        let mut per_worker: Vec<Vec<listener::Acceptor>> = (0..workers).map(|_| Vec::new()).collect();
        for l in self.listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, workers, "listening");
            // Sockets inherited from a predecessor with more workers are
            // shared out, so none of their accept queues is left unserved.
            for (i, a) in l.into_acceptors().enumerate() {
                per_worker[i % workers].push(a);
            }
        }
        let mut threads = Vec::new();
        for (i, acceptors) in per_worker.into_iter().enumerate() {
            let (shared, connections, stop_rx, exit_rx, stopped_tx) =
                (shared.clone(), connections.clone(), stop_rx.clone(), exit_rx.clone(), stopped_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || worker_main(i, acceptors, shared, connections, stop_rx, exit_rx, stopped_tx))
                .map_err(|e| Error::Runtime(format!("cannot start worker thread {i}: {e}")))?;
            threads.push(thread);
        }
        drop(stopped_tx);

        shutdown.await;
        shared.draining.store(true, Ordering::Relaxed);
        if self.control.handed_over() {
            // The successor answers the admin API now (it accepts on the same socket).
            if let Some(t) = &admin_task {
                t.abort();
            }
        }
        let _ = stop_tx.send(true);
        // Every worker has stopped accepting: no new connection can join the drain.
        for _ in 0..workers {
            if stopped_rx.recv().await.is_none() {
                break;
            }
        }
        let drain = shared.server.drain_timeout;
        connections.close();
        tracing::info!(open_connections = connections.len(), drain_timeout = ?drain, "shutting down: draining");
        match tokio::time::timeout(drain, connections.wait()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        let _ = exit_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
        for t in admin_task.into_iter().chain(flag_watch) {
            t.abort();
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
    connections: TaskTracker,
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
        if shared.record_stats {
            tokio::spawn(stats::flush_loop(shared.stats_tx.clone(), shared.stats.tick()));
        }
        let builder = Arc::new(listener::builder(&shared.server));
        let loops: Vec<_> = acceptors
            .into_iter()
            .map(|a| tokio::spawn(a.serve(shared.clone(), builder.clone(), connections.clone(), stop.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
        let _ = stopped.send(());
        let _ = exit.wait_for(|e| *e).await;
    });
}
