//! Switchyard: a reverse proxy for progressive delivery.
//!
//! It splits each service's traffic between version pools (stable/canary,
//! blue/green) by rules, sticky keys and weights, and forwards each request
//! to an endpoint of the chosen pool.
//!
//! # Layout
//!
//! Two paths over a shared model; an arrow only ever points down this list.
//!
//! - [`admin`]: the JSON admin API, Prometheus `/metrics` and the web
//!   dashboard, over the report and the control path;
//! - [`report`]: the deployment report (DORA measures) from the durable
//!   history and the live figures, and its Markdown and HTML;
//! - [`control`]: the control path. [`Control`] is the one door for every
//!   run-time change (weights, reloads, flags, plugins, rollouts: validate,
//!   build a new snapshot, write the event, persist, swap). Under it: the
//!   rollouts ([`control::rollout`]: the pure state machine, analysis and
//!   evidence, and the controller that runs them), the durable store behind
//!   the [`control::state::Store`] trait (embedded redb, or a fleet's etcd in
//!   [`control::fleet`]), and the hand-over to a successor binary
//!   ([`control::upgrade`]);
//! - [`data`]: the request path, in the order a request meets it (worker,
//!   listener, forward's phases, split, pool, body) and the [`data::snapshot`]
//!   it reads. It never imports the control path;
//! - the shared pieces both paths use: [`config`] (YAML → validated
//!   [`Config`]), [`flags`] (flag evaluation), [`plugin`] (the WebAssembly
//!   host), [`stats`] (per-pool recording and windows, merged with a fleet's
//!   other replicas'), [`parse`] (paths and
//!   cookies), [`error`], [`logging`].
//!
//! The binary's commands (`serve`, `check`, `demo`, `ctl`, `report`) live apart, in
//! `src/bin/switchyard/`.
//!
//! Use: [`Proxy::new`] → [`Proxy::bind`] → [`Bound::run`].

pub mod admin;
pub mod config;
pub mod control;
pub mod data;
pub mod error;
pub mod flags;
pub mod logging;
pub mod parse;
pub mod plugin;
pub mod report;
pub mod stats;

pub use config::Config;
pub use control::check;
pub use error::Error;

use arc_swap::ArcSwap;
use control::upgrade;
use control::{state, Control};
use data::listener::{self, BoundListener};
use data::snapshot::Snapshot;
use data::worker::Workers;
use data::Shared;
use stats::Stats;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::task::TaskTracker;

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

// === impl Proxy ===

impl Proxy {
    /// Opens the state store (if any), applies the weights stored there over
    /// the file's, and compiles the first snapshot. Starts health checks and
    /// the stats aggregator, so it must run inside a tokio runtime.
    pub fn new(config: Config, options: Options) -> Result<Self, Error> {
        let stats = Arc::new(Stats::new(config.stats.window, config.stats.resolution));
        let stats_tx = stats.spawn_aggregator();
        let store: Option<Box<dyn state::Store>> = match (config.state_dir.as_deref(), &config.fleet) {
            (Some(dir), Some(fleet)) => {
                // What replicas must agree on; their listeners, admin and state may differ.
                let shared = format!("{:?}", (&config.services, &config.plugins, &config.flags, &config.stats));
                let hash = plugin::sha256(shared.as_bytes());
                Some(Box::new(control::fleet::FleetStore::open(dir, fleet, &hash[..12], stats.clone())?))
            }
            (Some(dir), None) => Some(Box::new(state::StateStore::open(dir)?)),
            (None, _) => None,
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
        if let Some(dir) = &config.state_dir {
            plugin::keep_compiled_in(dir.join("compiled-plugins"));
        }
        let limits = plugin::LoadOptions::of(&config);
        let plugins = plugin::load_all(&config.plugins, &plugin_overrides, &Default::default(), &limits)
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
        let count = shared.server.workers;
        let admin_task = self.admin.map(|(listener, admin)| {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(addr = %addr, "admin listening");
            }
            tokio::spawn(admin::serve(listener, admin))
        });
        let flag_watch =
            self.control.flags_file().map(|file| tokio::spawn(control::watch_flags(self.control.clone(), file)));
        let fleet = tokio::spawn(control::fleet::follow(self.control.clone()));
        let publish = tokio::spawn(control::fleet::publish(self.control.clone()));
        // Every client connection is a task of this tracker: the drain waits for them.
        let connections = TaskTracker::new();
        let mut per_worker: Vec<Vec<listener::Acceptor>> = (0..count).map(|_| Vec::new()).collect();
        for l in self.listeners {
            tracing::info!(listener = %l.name, addr = %l.local_addr, workers = count, "listening");
            // Sockets inherited from a predecessor with more workers are
            // shared out, so none of their accept queues is left unserved.
            for (i, a) in l.into_acceptors().enumerate() {
                per_worker[i % count].push(a);
            }
        }
        let mut workers = Workers::start(per_worker, &shared, &connections)?;

        shutdown.await;
        shared.draining.store(true, Ordering::Relaxed);
        if self.control.handed_over() {
            // The successor answers the admin API now (it accepts on the same socket).
            if let Some(t) = &admin_task {
                t.abort();
            }
        }
        workers.stop_accepting().await;
        let drain = shared.server.drain_timeout;
        connections.close();
        tracing::info!(open_connections = connections.len(), drain_timeout = ?drain, "shutting down: draining");
        match tokio::time::timeout(drain, connections.wait()).await {
            Ok(()) => tracing::info!("drained"),
            Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
        }
        workers.exit();
        for t in admin_task.into_iter().chain(flag_watch).chain([fleet, publish]) {
            t.abort();
        }
        Ok(())
    }
}
