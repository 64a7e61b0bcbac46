//! Fleet mode: many replicas, one source of truth in etcd.
//!
//! Every table of the state store lives under the fleet's prefix, one key
//! per row: `{prefix}/{table}/{key}` (weights, flags, plugins, plugin
//! configs, suspensions, rollouts, and events keyed by their zero-padded
//! sequence number, allocated by `{prefix}/seq`). A change is one etcd
//! transaction holding its rows and its event, so it is committed once,
//! atomically; the caller hears back only after etcd accepted it *and* this
//! replica applied it from its watch (in revision order, like every other
//! replica), so what it reads next includes it.
//!
//! Each replica keeps a local copy of everything (the embedded store in
//! `state.dir`) with the revision it last applied: reads are local, the data
//! path never waits on etcd, and a restart without etcd serves the last
//! state. A dedicated thread owns the etcd client: it connects (retrying),
//! re-reads the prefix whole, then watches from the next revision; when the
//! watch breaks it resumes from the last applied revision, or re-reads
//! everything when that revision was compacted. While etcd is unreachable
//! writes fail at once with [`Error::Unavailable`].
//!
//! Each replica also says it is there: `{prefix}/replicas/{name}` on a lease
//! (the `lease_ttl`), rewritten every second with the revision it applied and
//! its config file's hash, so any replica can show the whole fleet. Those
//! keys are not state: they are kept in memory, never mirrored, and do not
//! make replicas rebuild anything. On the same lease every replica stands
//! in an election on `{prefix}/election` (etcd's own election layout: a key
//! per candidate): the candidate key with the lowest create revision is the
//! leader, and a leader whose lease expires hands over to the next.
//!
//! The leader runs every rollout's controller, judging the fleet's traffic:
//! while a service's rollout runs, every replica publishes its figures of
//! the service's pools once a second (each completed tick once) to
//! `{prefix}/recordings/{service}/{replica}` on its lease, and every replica
//! keeps the others' (see [`crate::stats::fleet`]), so the leader's — and a
//! successor's — analysis reads the merged windows.
//!
//! The leader's writes are fenced: each
//! is one transaction that also requires its election key unchanged (same
//! create revision) and the rollout's row exactly as it last read or wrote
//! it, so a deposed or paused leader can never apply a decision, and a
//! command made on another replica meanwhile is never overwritten. Any
//! replica takes a rollout's start and commands (guarded by the row too);
//! the leader picks them up from the watch. Progress is checkpointed once
//! per second of hold, so a new leader resumes at the same step with all
//! but under a second of the hold already spent.

mod connect;
mod etcd;

use super::state::{self, Applied, Change, Event, FleetView, Guard, Row, StateStore, Store};
use crate::config::{FleetConfig, RunTime};
use crate::error::Error;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How long a write waits for etcd before it is refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a replica publishes its figures of services with a rollout.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The state store of a replica in a fleet.
pub struct FleetStore {
    local: Arc<StateStore>,
    requests: mpsc::UnboundedSender<Request>,
    recordings: mpsc::UnboundedSender<Published>,
    applied: watch::Receiver<Applied>,
    connected: Arc<AtomicBool>,
    view: Arc<Mutex<FleetView>>,
    leading: watch::Receiver<bool>,
    /// Set while the store is released to a successor process: the etcd
    /// thread leaves the fleet (its lease revoked) until it is taken back.
    released: watch::Sender<bool>,
}

/// A write for the etcd thread: rows, the event that goes with them, and
/// what must hold for it to be made.
struct Request {
    rows: Vec<Row>,
    event: Option<Event>,
    guard: Guard,
    reply: Reply,
}

/// A service's figures from this replica, for the etcd thread to publish (JSON).
type Published = (String, Vec<u8>);

/// Where a write's outcome goes: the stored event (if it had one), or why not.
type Reply = std::sync::mpsc::SyncSender<Result<Option<Event>, Error>>;

impl FleetStore {
    /// Opens the local copy in `dir` and starts the thread that keeps it in
    /// step with etcd. Returns at once: etcd need not be up.
    pub fn open(
        dir: &std::path::Path,
        config: &FleetConfig,
        config_hash: &str,
        stats: Arc<crate::stats::Stats>,
    ) -> Result<Self, Error> {
        let local = Arc::new(StateStore::open(dir)?);
        let (requests, rx) = mpsc::unbounded_channel();
        let (recordings, recordings_rx) = mpsc::unbounded_channel();
        // Published once a second, then a watch event away.
        stats.expect_remote(PUBLISH_EVERY + Duration::from_millis(500));
        let revision = local.revision()?;
        let (applied_tx, applied) = watch::channel(Applied { revision, traffic: revision });
        let connected = Arc::new(AtomicBool::new(false));
        let view = Arc::new(Mutex::new(FleetView {
            replica: config.replica.clone(),
            state: "degraded".into(),
            applied_revision: local.revision()?,
            config_hash: config_hash.to_owned(),
            leader: None,
            replicas: Vec::new(),
        }));
        let (leading_tx, leading) = watch::channel(false);
        let (released, released_rx) = watch::channel(false);
        let shared = etcd::Shared {
            applied: applied_tx,
            connected: connected.clone(),
            view: view.clone(),
            leading: leading_tx,
            released: released_rx,
            stats,
        };
        etcd::start(config, config_hash, local.clone(), shared, (rx, recordings_rx))?;
        Ok(Self { local, requests, recordings, applied, connected, view, leading, released })
    }

    /// Sends rows (and an event) to etcd and waits until this replica has applied them.
    fn write(&self, rows: Vec<Row>, event: Option<Event>, guard: Guard) -> Result<Option<Event>, Error> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err(unreachable());
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.requests.send(Request { rows, event, guard, reply }).map_err(|_| unreachable())?;
        let wait = || {
            answer.recv_timeout(WRITE_TIMEOUT).map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => Error::Unavailable(
                    "the fleet's etcd did not answer in time: the change may or may not have been made; read it back"
                        .into(),
                ),
                std::sync::mpsc::RecvTimeoutError::Disconnected => unreachable(),
            })
        };
        // The control path's writes are serialised; on a multi-threaded
        // runtime, let its other tasks move to another thread meanwhile.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(wait)?
        } else {
            wait()?
        }
    }
}

/// An etcd client error, as the refusal a caller sees.
fn etcd_error(e: etcd_client::Error) -> Error {
    Error::Unavailable(format!("fleet: etcd: {e}"))
}

fn unreachable() -> Error {
    Error::Unavailable(
        "the fleet's etcd cannot be reached; nothing was changed (the proxy keeps serving the last state)".into(),
    )
}

impl Store for FleetStore {
    fn run_time(&self) -> Result<RunTime, Error> {
        self.local.run_time()
    }

    fn flag_overrides(&self) -> Result<BTreeMap<String, serde_json::Value>, Error> {
        self.local.flag_overrides()
    }

    fn plugins(&self) -> Result<crate::plugin::Overrides, Error> {
        self.local.plugins()
    }

    fn commit_guarded(
        &self,
        changes: &[Change<'_>],
        event: Option<Event>,
        guard: &Guard,
    ) -> Result<Option<Event>, Error> {
        self.write(state::rows(changes)?, event, guard.clone())
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, Error> {
        self.local.events(after, limit)
    }

    fn last_events(&self, limit: usize) -> Result<Vec<Event>, Error> {
        self.local.last_events(limit)
    }

    fn rollouts(&self) -> Result<Vec<String>, Error> {
        self.local.rollouts()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    fn release(&self) {
        self.released.send_replace(true);
        self.local.release();
    }

    fn reopen(&self) -> Result<(), Error> {
        self.local.reopen()?;
        self.released.send_replace(false);
        Ok(())
    }

    fn applied(&self) -> Option<watch::Receiver<Applied>> {
        Some(self.applied.clone())
    }

    fn fleet(&self) -> Option<FleetView> {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.state = if self.connected.load(Ordering::Relaxed) { "in-step" } else { "degraded" }.into();
        let newest = v.replicas.iter().map(|r| r.applied_revision).chain([v.applied_revision]).max().unwrap_or(0);
        for r in &mut v.replicas {
            r.lag = newest - r.applied_revision;
            r.config_differs = r.config_hash != v.config_hash;
        }
        Some(v)
    }

    fn leading(&self) -> Option<watch::Receiver<bool>> {
        Some(self.leading.clone())
    }

    fn publish(&self, service: &str, recording: &crate::stats::Recording) {
        if let Ok(bytes) = serde_json::to_vec(recording) {
            let _ = self.recordings.send((service.to_owned(), bytes));
        }
    }
}

/// Applies what the fleet's store applied (changes made on any replica):
/// a new snapshot when what the data path reads changed, the rollouts'
/// stored state into this replica's handles, and — while this replica
/// leads — a controller for every rollout that has not ended. Runs until
/// the store is dropped.
pub async fn follow(control: Arc<super::Control>) {
    let Some(store) = control.store.as_ref() else { return };
    let (Some(mut applied), Some(mut leading)) = (store.applied(), store.leading()) else {
        return;
    };
    let mut built = applied.borrow().traffic;
    loop {
        tokio::select! {
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = *applied.borrow_and_update();
                if now.traffic != built {
                    built = now.traffic;
                    if let Err(e) = control.apply_stored().await {
                        tracing::error!(revision = now.revision, error = %e, "fleet: cannot apply the fleet's state; keeping the last one");
                    }
                }
            }
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leading.borrow_and_update() {
                    tracing::info!("fleet: this replica leads: it runs the fleet's rollouts");
                }
            }
        }
        if let Err(e) = control.refresh_rollouts().await {
            tracing::error!(error = %e, "fleet: cannot load the fleet's rollouts");
        }
    }
}

/// Publishes, once a second, this replica's figures of every service whose
/// rollout runs (each completed tick once), for the leader's analysis.
pub async fn publish(control: Arc<super::Control>) {
    let Some(store) = control.store.as_ref().filter(|s| s.leading().is_some()) else { return };
    let stats = control.shared.stats.clone();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    let mut every = tokio::time::interval(PUBLISH_EVERY);
    loop {
        every.tick().await;
        let running = control.running_rollouts();
        next.retain(|service, _| running.contains(service));
        for service in running {
            let from = next.get(&service).copied().unwrap_or(0);
            let (recording, then) = stats.recording(&service, from);
            next.insert(service.clone(), then);
            if !recording.ticks.is_empty() {
                store.publish(&service, &recording);
            }
        }
    }
}
