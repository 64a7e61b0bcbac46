//! Data-path workers: one thread per core, each running its own
//! single-threaded tokio runtime (thread-per-core, as nginx and Envoy do).
//!
//! Every worker accepts on its own `SO_REUSEPORT` socket of each listener,
//! and a client connection, its requests and the upstream connections they
//! use all live on that one thread: a request never wakes another thread.
//! Upstream connections are pooled per worker (see [`super::pool`]). The control
//! path (health checks, signals) runs on the main thread's runtime.

use super::listener::Acceptor;
use super::Shared;
use crate::error::Error;
use crate::stats;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

/// The running worker threads, and how the control path stops them.
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    exit: watch::Sender<bool>,
    stopped: mpsc::UnboundedReceiver<()>,
}

impl Workers {
    /// Starts one thread per entry of `acceptors`, each serving its
    /// acceptors; every client connection becomes a task of `connections`.
    pub fn start(
        acceptors: Vec<Vec<Acceptor>>,
        shared: &Arc<Shared>,
        connections: &TaskTracker,
    ) -> Result<Self, Error> {
        let (stop, stop_rx) = watch::channel(false);
        let (exit, exit_rx) = watch::channel(false);
        let (stopped_tx, stopped) = mpsc::unbounded_channel();
        let mut threads = Vec::new();
        for (i, acceptors) in acceptors.into_iter().enumerate() {
            let (shared, connections, stop_rx, exit_rx, stopped_tx) =
                (shared.clone(), connections.clone(), stop_rx.clone(), exit_rx.clone(), stopped_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("switchyard-worker-{i}"))
                .spawn(move || run(i, acceptors, shared, connections, stop_rx, exit_rx, stopped_tx))
                .map_err(|e| Error::Runtime(format!("cannot start worker thread {i}: {e}")))?;
            threads.push(thread);
        }
        Ok(Self { threads, stop, exit, stopped })
    }

    /// Tells every worker to stop accepting; returns once none accepts any
    /// more, so no new connection can join the drain.
    pub async fn stop_accepting(&mut self) {
        let _ = self.stop.send(true);
        for _ in 0..self.threads.len() {
            if self.stopped.recv().await.is_none() {
                break;
            }
        }
    }

    /// Lets the workers exit (dropping their runtimes closes what is still
    /// open) and waits for their threads.
    pub fn exit(self) {
        let _ = self.exit.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One worker thread: its own current-thread runtime serving its acceptors
/// until told to exit; dropping the runtime closes what is still open.
fn run(
    index: usize,
    acceptors: Vec<Acceptor>,
    shared: Arc<Shared>,
    connections: TaskTracker,
    stop: watch::Receiver<bool>,
    mut exit: watch::Receiver<bool>,
    stopped: tokio::sync::mpsc::UnboundedSender<()>,
) {
    super::pool::enter_worker(index);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot start the worker runtime");
            let _ = stopped.send(());
            return;
        }
    };
    runtime.block_on(async move {
        tokio::spawn(super::deadline::install());
        if shared.record_stats {
            tokio::spawn(stats::flush_loop(shared.stats_tx.clone(), shared.stats.tick()));
        }
        let servers = Arc::new(super::listener::servers(&shared.server));
        let loops: Vec<_> = acceptors
            .into_iter()
            .map(|a| tokio::spawn(a.serve(shared.clone(), servers.clone(), connections.clone(), stop.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
        let _ = stopped.send(());
        let _ = exit.wait_for(|e| *e).await;
    });
}
