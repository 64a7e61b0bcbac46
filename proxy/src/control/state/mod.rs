//! The state store: weights set at run time and the deployment history,
//! durable across restarts (and `kill -9`).
//!
//! An embedded redb database in `state.dir`: one file, ACID, each commit
//! fsynced before it returns, so a change is on disk before the admin API
//! answers. Tables: `weights` (service → its weights, as JSON), `flags`
//! (flag overrides), `suspended` (service → its rolled-back pools, whose
//! rules are suspended), `rollouts` (progress), `plugins` (uploaded components),
//! `plugin_configs` and `events` (sequence number → event, as JSON). New events are also
//! broadcast for `GET /v1/events?follow=1`. Everything here runs on the
//! control path, behind the [`Store`] trait (which a shared store for a fleet can implement).

use crate::config::{RunTime, WeightMap};
use crate::error::Error;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use tokio::sync::broadcast;

mod rows;

use rows::write_rows;
pub use rows::{event_row, rows, stamp, Row, TABLES};

const WEIGHTS: TableDefinition<&str, &str> = TableDefinition::new("weights");
const EVENTS: TableDefinition<u64, &str> = TableDefinition::new("events");
const ROLLOUTS: TableDefinition<&str, &str> = TableDefinition::new("rollouts");
const FLAGS: TableDefinition<&str, &str> = TableDefinition::new("flags");
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
const PLUGIN_CONFIGS: TableDefinition<&str, &str> = TableDefinition::new("plugin_configs");
const SUSPENDED: TableDefinition<&str, &str> = TableDefinition::new("suspended");
const POOLS: TableDefinition<&str, &str> = TableDefinition::new("pools");
const MIRRORS: TableDefinition<&str, &str> = TableDefinition::new("mirrors");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A run-time change stored with its event.
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// A service's weights: set (`Some`) or back to the file's (`None`).
    Weights(&'a str, Option<&'a WeightMap>),
    /// A flag's override: set (`Some`) or back to the file's (`None`).
    Flag(&'a str, Option<&'a serde_json::Value>),
    /// A plugin's component bytes, uploaded through the admin API (`None`: removed).
    Plugin(&'a str, Option<&'a [u8]>),
    /// A plugin's default configuration, set through the admin API (`None`: removed).
    PluginConfig(&'a str, Option<&'a serde_json::Value>),
    /// A service's suspended pools (rules to them are skipped); empty lifts.
    Suspended(&'a str, &'a BTreeSet<String>),
    /// A service's rollout (its progress, as JSON: the latest, active or finished).
    Rollout(&'a str, &'a str),
    /// A service's pools set through the API (`None`, or none left: the file's).
    Pools(&'a str, Option<&'a crate::config::PoolSets>),
    /// A service's mirror set by a rollout (`None`: the file's).
    Mirror(&'a str, Option<&'a crate::config::MirrorSet>),
}

/// What a guarded write requires of the stored state, checked in the same
/// transaction: the fence of a fleet's rollout controller.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// This replica leads the fleet (one machine always does).
    pub leader: bool,
    /// The service's stored rollout is exactly this JSON (`None`: there is none).
    pub rollout: Option<(String, Option<String>)>,
}

/// One entry of the deployment history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, increasing from 1.
    pub seq: u64,
    /// When, RFC 3339 in UTC.
    pub time: String,
    /// What happened: `weights`, `weights-reset`, `config-reload`, ...
    pub kind: String,
    /// The service concerned, if one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub service: Option<String>,
    /// Who: the `x-switchyard-actor` header, else the token's name.
    pub actor: String,
    /// Why, when the caller said.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// `applied`, or `refused` for a write that changed nothing.
    pub outcome: String,
    /// The state before.
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub old: serde_json::Value,
    /// The state after (or what was asked for, when refused).
    #[serde(skip_serializing_if = "serde_json::Value::is_null", default)]
    pub new: serde_json::Value,
    /// A human-readable summary.
    pub message: String,
}

/// What the control path keeps durably: run-time changes with their events,
/// rollout progress and the deployment history. [`StateStore`] (redb, one
/// machine) is one; a store shared by a fleet would be another. Every call runs
/// on the control path.
pub trait Store: Send + Sync {
    /// Weights and suspensions set at run time.
    fn run_time(&self) -> Result<RunTime, Error>;
    /// Flag overrides set at run time, by flag key.
    fn flag_overrides(&self) -> Result<BTreeMap<String, serde_json::Value>, Error>;
    /// What the admin API set for plugins: uploaded components and configurations.
    fn plugins(&self) -> Result<crate::plugin::Overrides, Error>;
    /// In one durable transaction: applies `changes` and appends `event`
    /// (its `seq` and `time` are filled in). Returns the event as stored.
    fn commit(&self, changes: &[Change<'_>], event: Event) -> Result<Event, Error> {
        self.commit_guarded(changes, Some(event), &Guard::default())?
            .ok_or_else(|| Error::State("state store: the event was not stored".into()))
    }
    /// [`Store::commit`] with the event optional, made only if `guard`
    /// holds ([`Error::Stale`] otherwise, changing nothing).
    fn commit_guarded(
        &self,
        changes: &[Change<'_>],
        event: Option<Event>,
        guard: &Guard,
    ) -> Result<Option<Event>, Error>;
    /// Events after `after`, oldest first, at most `limit`.
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, Error>;
    /// The newest events, oldest first, at most `limit`.
    fn last_events(&self, limit: usize) -> Result<Vec<Event>, Error>;
    /// Every stored rollout, as stored (JSON).
    fn rollouts(&self) -> Result<Vec<String>, Error>;
    /// New events as they are committed.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    /// Lets go of the store for a successor process (a binary upgrade);
    /// every later call fails until [`Store::reopen`].
    fn release(&self);
    /// Takes the store back after [`Store::release`].
    fn reopen(&self) -> Result<(), Error>;
    /// In a fleet: what of the shared state this replica has applied,
    /// bumped after every change another replica (or this one) committed.
    fn applied(&self) -> Option<tokio::sync::watch::Receiver<Applied>> {
        None
    }
    /// In a fleet: the fleet as this replica sees it.
    fn fleet(&self) -> Option<FleetView> {
        None
    }
    /// In a fleet: publishes this replica's recent figures of `service` (a
    /// rollout's), for the leader to judge with its own. Best effort.
    fn publish(&self, _service: &str, _recording: &crate::stats::Recording) {}
    /// In a fleet: whether this replica leads it now (it runs the rollouts).
    fn leading(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// How far a replica has applied the fleet's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The etcd revision applied.
    pub revision: i64,
    /// The revision of the last change to what the data path reads (not
    /// rollout progress or events alone): what needs a new snapshot.
    pub traffic: i64,
}

/// The fleet as one replica sees it (`GET /v1/fleet`, `ctl status`, `/health/ready`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// This replica.
    pub replica: String,
    /// `in-step` (connected to etcd, applying its changes) or `degraded`
    /// (etcd unreachable: serving the last applied state, refusing writes).
    pub state: String,
    /// The etcd revision of the last change to the shared state this replica applied.
    pub applied_revision: i64,
    /// A hash of this replica's services, plugins, flags and stats settings
    /// (what every replica should agree on; listeners, admin and state may differ).
    pub config_hash: String,
    /// The elected leader, if there is one.
    #[serde(default)]
    pub leader: Option<String>,
    /// Every replica present (this one included), by name.
    pub replicas: Vec<ReplicaView>,
}

/// One replica, as its presence key says.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// Its name.
    pub replica: String,
    /// The revision of the last state change it had applied when it last wrote its presence.
    pub applied_revision: i64,
    /// Revisions behind the newest any replica reports.
    #[serde(default)]
    pub lag: i64,
    /// Its config's hash (see [`FleetView::config_hash`]).
    pub config_hash: String,
    /// Its config differs from this replica's.
    #[serde(default)]
    pub config_differs: bool,
    /// It is the elected leader.
    #[serde(default)]
    pub leader: bool,
}

/// The embedded store: redb in `state.dir`.
pub struct StateStore {
    /// `None` once released to a successor process ([`StateStore::release`]).
    db: std::sync::RwLock<Option<Database>>,
    path: std::path::PathBuf,
    events: broadcast::Sender<Event>,
}

fn db_err(e: impl std::fmt::Display) -> Error {
    Error::State(format!("state store: {e}"))
}

/// Opens the database file; while another process (a predecessor handing
/// over) still holds it, retries for up to 5 s.
fn open_db(path: &Path) -> Result<Database, Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Database::create(path) {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return Err(Error::State(format!("state store: cannot open {}: {e}", path.display()))),
        }
    }
}

fn released() -> Error {
    Error::State("state store: handed over to the new process of a binary upgrade; retry".into())
}

fn json<T: Serialize + ?Sized>(v: &T) -> Result<String, Error> {
    serde_json::to_string(v).map_err(db_err)
}

// === impl StateStore ===

impl StateStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::State(format!("state store: cannot create {}: {e}", dir.display())))?;
        let path = dir.join("switchyard.redb");
        let db = open_db(&path)?;
        // Create the tables so readers never see them missing.
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(WEIGHTS).map_err(db_err)?;
        tx.open_table(EVENTS).map_err(db_err)?;
        tx.open_table(ROLLOUTS).map_err(db_err)?;
        tx.open_table(FLAGS).map_err(db_err)?;
        tx.open_table(PLUGINS).map_err(db_err)?;
        tx.open_table(PLUGIN_CONFIGS).map_err(db_err)?;
        tx.open_table(SUSPENDED).map_err(db_err)?;
        tx.open_table(POOLS).map_err(db_err)?;
        tx.open_table(MIRRORS).map_err(db_err)?;
        tx.open_table(META).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self { db: std::sync::RwLock::new(Some(db)), path, events: broadcast::channel(1024).0 })
    }

    fn read(&self) -> Result<redb::ReadTransaction, Error> {
        match &*self.db.read().unwrap_or_else(|p| p.into_inner()) {
            Some(db) => db.begin_read().map_err(db_err),
            None => Err(released()),
        }
    }

    fn write(&self) -> Result<redb::WriteTransaction, Error> {
        match &*self.db.read().unwrap_or_else(|p| p.into_inner()) {
            Some(db) => db.begin_write().map_err(db_err),
            None => Err(released()),
        }
    }

    /// Weights set at run time, by service.
    fn weights(&self) -> Result<HashMap<String, WeightMap>, Error> {
        self.json_table(WEIGHTS)
    }

    fn json_table<C: FromIterator<(String, T)>, T: serde::de::DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &str>,
    ) -> Result<C, Error> {
        let tx = self.read()?;
        let table = tx.open_table(def).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            out.push((k.value().to_owned(), serde_json::from_str(v.value()).map_err(db_err)?));
        }
        Ok(out.into_iter().collect())
    }
}

impl Store for StateStore {
    fn release(&self) {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.take();
    }

    fn reopen(&self) -> Result<(), Error> {
        let db = open_db(&self.path)?;
        *self.db.write().unwrap_or_else(|p| p.into_inner()) = Some(db);
        Ok(())
    }

    fn run_time(&self) -> Result<RunTime, Error> {
        Ok(RunTime {
            weights: self.weights()?,
            suspended: self.json_table(SUSPENDED)?,
            pools: self.json_table(POOLS)?,
            mirrors: self.json_table(MIRRORS)?,
        })
    }

    fn flag_overrides(&self) -> Result<BTreeMap<String, serde_json::Value>, Error> {
        self.json_table(FLAGS)
    }

    fn plugins(&self) -> Result<crate::plugin::Overrides, Error> {
        let tx = self.read()?;
        let table = tx.open_table(PLUGINS).map_err(db_err)?;
        let mut uploaded = BTreeMap::new();
        for row in table.iter().map_err(db_err)? {
            let (k, v) = row.map_err(db_err)?;
            uploaded.insert(k.value().to_owned(), v.value().to_vec());
        }
        drop(tx);
        Ok(crate::plugin::Overrides { uploaded, configs: self.json_table(PLUGIN_CONFIGS)? })
    }

    fn commit_guarded(
        &self,
        changes: &[Change<'_>],
        event: Option<Event>,
        guard: &Guard,
    ) -> Result<Option<Event>, Error> {
        let tx = self.write()?;
        if let Some((service, expected)) = &guard.rollout {
            let table = tx.open_table(ROLLOUTS).map_err(db_err)?;
            let stored = table.get(service.as_str()).map_err(db_err)?.map(|v| v.value().to_owned());
            if stored != *expected {
                return Err(Error::Stale(format!("the rollout of `{service}` changed meanwhile; nothing was changed")));
            }
        }
        write_rows(&tx, &rows(changes)?)?;
        let event = match event {
            Some(event) => {
                let mut table = tx.open_table(EVENTS).map_err(db_err)?;
                let seq = table.last().map_err(db_err)?.map_or(0, |(k, _)| k.value()) + 1;
                let event = stamp(event, seq);
                let json = serde_json::to_string(&event).map_err(db_err)?;
                table.insert(seq, json.as_str()).map_err(db_err)?;
                Some(event)
            }
            None => None,
        };
        tx.commit().map_err(db_err)?;
        if let Some(event) = &event {
            let _ = self.events.send(event.clone());
        }
        Ok(event)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, Error> {
        let tx = self.read()?;
        let table = tx.open_table(EVENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.range(after.saturating_add(1)..).map_err(db_err)?.take(limit) {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_str(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    fn last_events(&self, limit: usize) -> Result<Vec<Event>, Error> {
        let tx = self.read()?;
        let table = tx.open_table(EVENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)?.rev().take(limit) {
            let (_, v) = row.map_err(db_err)?;
            out.push(serde_json::from_str(v.value()).map_err(db_err)?);
        }
        out.reverse();
        Ok(out)
    }

    fn rollouts(&self) -> Result<Vec<String>, Error> {
        let tx = self.read()?;
        let table = tx.open_table(ROLLOUTS).map_err(db_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_err)? {
            let (_, v) = row.map_err(db_err)?;
            out.push(v.value().to_owned());
        }
        Ok(out)
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

/// A blank event to fill in.
pub fn event(kind: &str, service: Option<&str>, actor: &str, reason: Option<String>) -> Event {
    Event {
        seq: 0,
        time: String::new(),
        kind: kind.into(),
        service: service.map(Into::into),
        actor: actor.into(),
        reason,
        outcome: "applied".into(),
        old: serde_json::Value::Null,
        new: serde_json::Value::Null,
        message: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(dir.path()).unwrap();
            let w: WeightMap = [("stable".to_string(), 90), ("canary".to_string(), 10)].into();
            let e = s
                .commit(&[Change::Weights("web", Some(&w))], event("weights", Some("web"), "ci", Some("ramp".into())))
                .unwrap();
            assert_eq!(e.seq, 1);
            s.commit(&[], event("config-reload", None, "ops", None)).unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(s.weights().unwrap()["web"]["canary"], 10);
        let events = s.events(0, 10).unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(events[0].reason.as_deref(), Some("ramp"));
        assert_eq!(s.events(1, 10).unwrap().len(), 1);
        assert_eq!(s.last_events(1).unwrap()[0].seq, 2);
        let canary: BTreeSet<String> = ["canary".to_string()].into();
        s.commit(
            &[Change::Weights("web", None), Change::Suspended("web", &canary)],
            event("weights-reset", Some("web"), "ci", None),
        )
        .unwrap();
        assert!(s.weights().unwrap().is_empty());
        assert_eq!(s.run_time().unwrap().suspended["web"], canary, "one transaction, both changes");
        s.commit(&[Change::Suspended("web", &BTreeSet::new())], event("x", None, "ci", None)).unwrap();
        assert!(s.run_time().unwrap().suspended.is_empty(), "an empty set lifts");
    }

    #[test]
    fn a_mirror_applies_rows_in_place_or_replaces_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let mut follow = store.subscribe();
        let w: WeightMap = [("canary".to_owned(), 5)].into();
        let mut rows = rows(&[
            Change::Weights("web", Some(&w)),
            Change::Flag("f", Some(&serde_json::json!({"state": "ENABLED"}))),
        ])
        .unwrap();
        let ev = stamp(event("weights", Some("web"), "ops", None), 7);
        rows.push(event_row(&ev).unwrap());
        store.mirror(&rows, 42, false).unwrap();
        assert_eq!(store.revision().unwrap(), 42);
        assert_eq!(store.run_time().unwrap().weights["web"], w);
        assert_eq!(store.last_events(10).unwrap(), vec![ev.clone()], "the event keeps the fleet's sequence number");
        assert_eq!(follow.try_recv().unwrap(), ev, "followers hear of mirrored events");

        let other: WeightMap = [("stable".to_owned(), 1)].into();
        store.mirror(&self::rows(&[Change::Weights("api", Some(&other))]).unwrap(), 50, true).unwrap();
        let rt = store.run_time().unwrap();
        assert_eq!((rt.weights.len(), rt.weights.get("api")), (1, Some(&other)), "a reset keeps only what it brings");
        assert!(store.flag_overrides().unwrap().is_empty() && store.last_events(10).unwrap().is_empty());
        assert_eq!(store.revision().unwrap(), 50);
    }
}
