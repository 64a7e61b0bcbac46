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
//! make replicas rebuild anything. On the same lease every replica campaigns
//! in etcd's election on `{prefix}/election`: the candidate key with the
//! lowest create revision is the leader, and a leader whose lease expires
//! hands over to the next. (The leader is shown; the rollouts it is to run
//! are not yet in fleet mode.)

mod etcd;

use super::state::{self, Change, Event, FleetView, Row, StateStore, Store};
use crate::config::{FleetConfig, RunTime};
use crate::error::Error;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// How long a write waits for etcd before it is refused.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state store of a replica in a fleet.
pub struct FleetStore {
    local: Arc<StateStore>,
    requests: mpsc::UnboundedSender<Request>,
    applied: watch::Receiver<i64>,
    connected: Arc<AtomicBool>,
    view: Arc<Mutex<FleetView>>,
}

/// A write for the etcd thread: rows, and the event that goes with them.
struct Request {
    rows: Vec<Row>,
    event: Option<Event>,
    reply: Reply,
}

/// Where a write's outcome goes: the stored event (if it had one), or why not.
type Reply = std::sync::mpsc::SyncSender<Result<Option<Event>, Error>>;

impl FleetStore {
    /// Opens the local copy in `dir` and starts the thread that keeps it in
    /// step with etcd. Returns at once: etcd need not be up.
    pub fn open(dir: &std::path::Path, config: &FleetConfig, config_hash: &str) -> Result<Self, Error> {
        let local = Arc::new(StateStore::open(dir)?);
        let (requests, rx) = mpsc::unbounded_channel();
        let (applied_tx, applied) = watch::channel(local.revision()?);
        let connected = Arc::new(AtomicBool::new(false));
        let view = Arc::new(Mutex::new(FleetView {
            replica: config.replica.clone(),
            state: "degraded".into(),
            applied_revision: local.revision()?,
            config_hash: config_hash.to_owned(),
            leader: None,
            replicas: Vec::new(),
        }));
        etcd::start(config, config_hash, local.clone(), applied_tx, connected.clone(), view.clone(), rx)?;
        Ok(Self { local, requests, applied, connected, view })
    }

    /// Sends rows (and an event) to etcd and waits until this replica has applied them.
    fn write(&self, rows: Vec<Row>, event: Option<Event>) -> Result<Option<Event>, Error> {
        if !self.connected.load(Ordering::Relaxed) {
            return Err(unreachable());
        }
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.requests.send(Request { rows, event, reply }).map_err(|_| unreachable())?;
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

    fn commit(&self, changes: &[Change<'_>], event: Event) -> Result<Event, Error> {
        let rows = state::rows(changes)?;
        self.write(rows, Some(event))?.ok_or_else(|| Error::State("fleet: the event was not stored".into()))
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, Error> {
        self.local.events(after, limit)
    }

    fn last_events(&self, limit: usize) -> Result<Vec<Event>, Error> {
        self.local.last_events(limit)
    }

    fn save_rollout(&self, service: &str, rollout: &serde_json::Value) -> Result<(), Error> {
        let value = serde_json::to_vec(rollout).map_err(|e| Error::State(e.to_string()))?;
        self.write(vec![Row { table: "rollouts", key: service.into(), value: Some(value) }], None).map(drop)
    }

    fn rollouts(&self) -> Result<Vec<serde_json::Value>, Error> {
        self.local.rollouts()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.local.subscribe()
    }

    fn release(&self) {
        self.local.release();
    }

    fn reopen(&self) -> Result<(), Error> {
        self.local.reopen()
    }

    fn applied(&self) -> Option<watch::Receiver<i64>> {
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
}

/// Applies what the fleet's store applied (changes made on any replica) to
/// what the data path reads, until the store is dropped.
pub async fn follow(control: Arc<super::Control>) {
    let Some(mut applied) = control.store.as_ref().and_then(|s| s.applied()) else {
        return;
    };
    while applied.changed().await.is_ok() {
        let revision = *applied.borrow_and_update();
        if let Err(e) = control.apply_stored().await {
            tracing::error!(revision, error = %e, "fleet: cannot apply the fleet's state; keeping the last one");
        }
    }
}
