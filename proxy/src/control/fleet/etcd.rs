//! The etcd thread: connects (retrying), catches up, watches, writes, keeps
//! this replica's presence and its candidacy in the election (see the
//! [module above](super) for the key layout and the guarantees).

use super::{connect, etcd_error, unreachable, Published, Reply, Request};
use crate::config::FleetConfig;
use crate::control::state::{self, Applied, Event, FleetView, ReplicaView, Row, StateStore, TABLES};
use crate::error::Error;
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often a replica rewrites its presence key.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// The first deadline for joining the fleet (see [`Etcd::session`]).
const JOIN_PATIENCE: Duration = Duration::from_secs(1);

/// The longest the deadline for joining grows to.
const MAX_PATIENCE: Duration = Duration::from_secs(30);

/// Starts the etcd thread, with its own current-thread runtime.
pub(super) fn start(
    config: &FleetConfig,
    config_hash: &str,
    local: Arc<StateStore>,
    shared: Shared,
    channels: (mpsc::UnboundedReceiver<Request>, mpsc::UnboundedReceiver<Published>),
) -> Result<(), Error> {
    let Shared { applied, connected, view, leading, released, stats } = shared;
    let etcd = Etcd {
        config: config.clone(),
        config_hash: config_hash.to_owned(),
        state_revision: local.revision()?,
        local,
        applied,
        connected,
        pending: BTreeMap::new(),
        present: BTreeMap::new(),
        candidates: BTreeMap::new(),
        fence: None,
        lease: None,
        patience: JOIN_PATIENCE,
        released,
        leading,
        view,
        stats,
    };
    std::thread::Builder::new()
        .name("switchyard-etcd".into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(etcd.run(channels)),
            Err(e) => tracing::error!(error = %e, "fleet: cannot start the etcd client's runtime"),
        })
        .map(drop)
        .map_err(|e| Error::Runtime(format!("fleet: cannot start the etcd client thread: {e}")))
}

/// What the etcd thread tells the rest of the replica.
pub(super) struct Shared {
    /// The revision of the state applied locally.
    pub applied: watch::Sender<Applied>,
    /// In step with etcd (writes are possible).
    pub connected: Arc<AtomicBool>,
    /// The fleet as seen from here.
    pub view: Arc<Mutex<FleetView>>,
    /// This replica leads.
    pub leading: watch::Sender<bool>,
    /// Set while the store is with a successor process (a binary upgrade).
    pub released: watch::Receiver<bool>,
    /// Where the other replicas' recordings go.
    pub stats: Arc<crate::stats::Stats>,
}

/// The etcd thread's state.
struct Etcd {
    config: FleetConfig,
    config_hash: String,
    local: Arc<StateStore>,
    applied: watch::Sender<Applied>,
    connected: Arc<AtomicBool>,
    /// Writes etcd accepted, by revision, answered once applied here.
    pending: BTreeMap<i64, (Reply, Option<Event>)>,
    /// The revision of the last change to the state (not to presence) applied.
    state_revision: i64,
    /// Replicas present, from their presence keys.
    present: BTreeMap<String, ReplicaView>,
    /// Election candidates: key → (create revision, replica).
    candidates: BTreeMap<String, (i64, String)>,
    /// While this replica leads: its election key and that key's create
    /// revision, which every leader's write requires unchanged.
    fence: Option<(String, i64)>,
    /// The lease of the current (or last) session.
    lease: Option<i64>,
    /// The deadline for joining the fleet.
    patience: Duration,
    released: watch::Receiver<bool>,
    leading: watch::Sender<bool>,
    view: Arc<Mutex<FleetView>>,
    stats: Arc<crate::stats::Stats>,
}

impl Etcd {
    async fn run(
        mut self,
        (mut requests, mut recordings): (mpsc::UnboundedReceiver<Request>, mpsc::UnboundedReceiver<Published>),
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut resync = true;
        let mut first = true;
        loop {
            let was = self.connected.load(Ordering::Relaxed);
            let result = self.session((&mut requests, &mut recordings), &mut resync).await;
            // Out of contact, this replica cannot know it still leads.
            self.fence = None;
            self.leading.send_replace(false);
            match result {
                Ok(()) => return, // the store was dropped
                Err(e) => {
                    if was || self.connected.load(Ordering::Relaxed) {
                        backoff = Duration::from_millis(100);
                    }
                    let first = std::mem::take(&mut first);
                    if *self.released.borrow() {
                        self.connected.store(false, Ordering::Relaxed);
                        tracing::info!("fleet: left the fleet for the successor process");
                    } else if self.connected.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "fleet: lost etcd; serving the last applied state, refusing writes");
                    } else if first {
                        // Said once: a wrong address, CA or password shows here.
                        tracing::warn!(error = %e, "fleet: cannot reach etcd; serving the local state, refusing writes, retrying");
                    } else {
                        tracing::debug!(error = %e, "fleet: etcd still unreachable");
                    }
                }
            }
            // etcd accepted these: they are made, and this replica applies
            // them when it is back in step.
            for (_, (reply, event)) in std::mem::take(&mut self.pending) {
                let _ = reply.send(Ok(event));
            }
            // Handed over to a successor: out of the fleet until taken back.
            while *self.released.borrow_and_update() {
                tokio::select! {
                    changed = self.released.changed() => if changed.is_err() { return },
                    r = requests.recv() => match r {
                        Some(r) => { let _ = r.reply.send(Err(unreachable())); }
                        None => return,
                    },
                    Some(_) = recordings.recv() => {}
                }
                resync = true;
            }
            // Refuse what arrives while etcd is away, then try again.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    r = requests.recv() => match r {
                        Some(r) => { let _ = r.reply.send(Err(unreachable())); }
                        None => return,
                    },
                    // Figures published while etcd is away are dropped.
                    Some(_) = recordings.recv() => {}
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection: catch up, then watch and write until something breaks.
    async fn session(
        &mut self,
        (requests, recordings): (&mut mpsc::UnboundedReceiver<Request>, &mut mpsc::UnboundedReceiver<Published>),
        resync: &mut bool,
    ) -> Result<(), Error> {
        let prefix = format!("{}/", self.config.prefix);
        // A call etcd loses (a proposal forwarded to a leader that just died
        // or hung) is only answered at its timeout: joining gets a short
        // deadline, doubled each time it runs out (a slow etcd still gets in).
        let patience = self.patience;
        let joined = tokio::time::timeout(patience, self.join(&prefix, resync)).await;
        let Joined { mut client, mut watched, _reader, lease, mut keeper, mut kept } = match joined {
            Ok(joined) => joined?,
            Err(_) => {
                self.patience = (patience * 2).min(MAX_PATIENCE);
                return Err(Error::Unavailable(format!(
                    "fleet: etcd did not let this replica join within {patience:?}"
                )));
            }
        };
        self.patience = JOIN_PATIENCE;
        if !self.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(replica = %self.config.replica, revision = self.local.revision()?, "fleet: in step with etcd");
        }
        let mut tick = tokio::time::interval(PRESENCE_EVERY);
        loop {
            tokio::select! {
                _ = self.released.changed() => if *self.released.borrow() {
                    // The successor takes this replica's place: leave now.
                    if let Some(lease) = self.lease.take() {
                        let _ = client.lease_revoke(lease).await;
                    }
                    return Err(Error::Unavailable("fleet: handed over to a successor process".into()));
                },
                _ = tick.tick() => {
                    keeper.keep_alive().await.map_err(etcd_error)?;
                    self.presence(&mut client, lease).await?;
                }
                alive = kept.message() => {
                    if alive.map_err(etcd_error)?.is_none_or(|r| r.ttl() <= 0) {
                        return Err(Error::Unavailable("fleet: this replica's lease expired".into()));
                    }
                }
                message = watched.recv() => {
                    let Some(resp) = message.transpose().map_err(etcd_error)?.flatten() else {
                        return Err(Error::Unavailable("fleet: the watch ended".into()));
                    };
                    if resp.compact_revision() > 0 || resp.canceled() {
                        // What we missed is gone: read everything again.
                        *resync = true;
                        return Err(Error::Unavailable(format!("fleet: watch cancelled ({})", resp.cancel_reason())));
                    }
                    if self.apply(&resp, &prefix)? {
                        // Say at once what was applied, so the fleet's view
                        // shows no stale lag (rollout progress alone waits
                        // for the next presence tick).
                        self.presence(&mut client, lease).await?;
                    }
                }
                request = requests.recv() => match request {
                    Some(r) => self.commit(&mut client, r).await,
                    None => return Ok(()),
                },
                Some((service, figures)) = recordings.recv() => {
                    let key = format!("{}/recordings/{service}/{}", self.config.prefix, self.config.replica);
                    let options = etcd_client::PutOptions::new().with_lease(lease);
                    client.put(key, figures, Some(options)).await.map_err(etcd_error)?;
                }
            }
        }
    }

    /// Connects, catches up, starts the watch and enters the fleet: a new
    /// lease with this replica's presence and candidacy on it.
    async fn join(&mut self, prefix: &str, resync: &mut bool) -> Result<Joined, Error> {
        let mut client = connect::connect(&self.config).await?;
        if *resync {
            self.read_all(&mut client, prefix).await?;
            *resync = false;
        }
        let from = self.local.revision()? + 1;
        let options = WatchOptions::new().with_prefix().with_start_revision(from).with_progress_notify();
        let mut stream = client.watch(prefix, Some(options)).await.map_err(etcd_error)?;
        // The watch is read without pause by its own task: a watch left
        // unread while the session awaits a write would fill the
        // connection's HTTP/2 window and hold back that write's answer
        // (until the lease expired).
        let (events, watched) = mpsc::unbounded_channel();
        let reader = AbortOnDrop(tokio::spawn(async move {
            loop {
                let message = stream.message().await;
                let last = !matches!(message, Ok(Some(_)));
                if events.send(message).is_err() || last {
                    return;
                }
            }
        }));
        let ttl = i64::try_from(self.config.lease_ttl.as_secs()).unwrap_or(3).max(1);
        let lease = client.lease_grant(ttl, None).await.map_err(etcd_error)?.id();
        // The last session's lease may outlive it (etcd extends leases when
        // it restarts): revoke it, so its presence and candidacy go now and
        // leadership is settled among this session's candidates at once.
        if let Some(old) = self.lease.replace(lease) {
            if let Err(e) = client.lease_revoke(old).await {
                tracing::debug!(error = %e, "fleet: the last session's lease is gone already");
            }
        }
        let (keeper, kept) = client.lease_keep_alive(lease).await.map_err(etcd_error)?;
        self.presence(&mut client, lease).await?;
        // Candidacy, as etcd's own election does it: a key under the
        // election prefix on this session's lease; the lowest create
        // revision leads (see `fleet_key`). Not etcd's blocking `Campaign`
        // call: the watch already tells every replica who leads.
        let candidate = format!("{}/election/{lease:x}", self.config.prefix);
        let options = etcd_client::PutOptions::new().with_lease(lease);
        client.put(candidate, self.config.replica.clone(), Some(options)).await.map_err(etcd_error)?;
        Ok(Joined { client, watched, _reader: reader, lease, keeper, kept })
    }

    /// Writes this replica's presence key on `lease`.
    async fn presence(&mut self, client: &mut Client, lease: i64) -> Result<(), Error> {
        let me = ReplicaView {
            replica: self.config.replica.clone(),
            applied_revision: self.state_revision,
            config_hash: self.config_hash.clone(),
            ..ReplicaView::default()
        };
        let key = format!("{}/replicas/{}", self.config.prefix, me.replica);
        let value = serde_json::to_vec(&me).map_err(|e| Error::State(e.to_string()))?;
        client.put(key, value, Some(etcd_client::PutOptions::new().with_lease(lease))).await.map_err(etcd_error)?;
        Ok(())
    }

    /// Notes a change to a presence or election key (`value`: the new value
    /// and its create revision, `None` when deleted); `true` when `key` was one.
    fn fleet_key(&mut self, key: &[u8], value: Option<(&[u8], i64)>, prefix: &str) -> bool {
        let Some(rest) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(prefix)) else {
            return false;
        };
        if let Some(name) = rest.strip_prefix("replicas/") {
            match value.and_then(|(v, _)| serde_json::from_slice::<ReplicaView>(v).ok()) {
                Some(r) => self.present.insert(name.to_owned(), r),
                None => self.present.remove(name),
            };
        } else if let Some(at) = rest.strip_prefix("recordings/") {
            // Another replica's figures of a service under rollout (this one's own are local).
            let (Some((service, replica)), Some((v, _))) = (at.split_once('/'), value) else { return true };
            if replica != self.config.replica {
                match serde_json::from_slice(v) {
                    Ok(recording) => self.stats.add_remote(replica, service, recording),
                    Err(e) => tracing::warn!(replica, service, error = %e, "fleet: ignoring unreadable figures"),
                }
            }
            return true;
        } else if rest.starts_with("election/") {
            match value {
                Some((v, created)) => {
                    self.candidates.insert(rest.to_owned(), (created, String::from_utf8_lossy(v).into()))
                }
                None => self.candidates.remove(rest),
            };
        } else {
            return false;
        }
        let lowest = self.candidates.iter().min_by_key(|(_, (created, _))| *created);
        let leader = lowest.map(|(_, (_, r))| r.clone());
        self.fence = lowest
            .filter(|(_, (_, r))| *r == self.config.replica)
            .map(|(key, (created, _))| (format!("{prefix}{key}"), *created));
        let leads = self.fence.is_some();
        self.leading.send_if_modified(|l| std::mem::replace(l, leads) != leads);
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        view.replicas = self
            .present
            .values()
            .map(|r| ReplicaView { leader: leader.as_ref() == Some(&r.replica), ..r.clone() })
            .collect();
        view.leader = leader;
        true
    }

    /// Replaces the local copy with everything under the prefix.
    async fn read_all(&mut self, client: &mut Client, prefix: &str) -> Result<(), Error> {
        let resp = client.get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(etcd_error)?;
        let revision = resp.header().map_or(0, |h| h.revision());
        self.present.clear();
        let (mut rows, mut newest) = (Vec::new(), 0);
        self.candidates.clear();
        for kv in resp.kvs() {
            if !self.fleet_key(kv.key(), Some((kv.value(), kv.create_revision())), prefix) {
                rows.extend(row(kv.key(), Some(kv.value()), prefix));
                newest = newest.max(kv.mod_revision());
            }
        }
        self.local.mirror(&rows, revision, true)?;
        tracing::info!(keys = rows.len(), revision, "fleet: read the whole state from etcd");
        self.state_revision = newest;
        self.applied(revision, true);
        Ok(())
    }

    /// Applies one watch response (all the events of its revisions); `true`
    /// when it changed what the data path reads (not only presence, figures
    /// or rollout progress).
    fn apply(&mut self, resp: &etcd_client::WatchResponse, prefix: &str) -> Result<bool, Error> {
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut rows = Vec::new();
        for e in resp.events() {
            let Some(kv) = e.kv() else { continue };
            let value = (e.event_type() == EventType::Put).then(|| kv.value());
            if !self.fleet_key(kv.key(), value.map(|v| (v, kv.create_revision())), prefix) {
                rows.extend(row(kv.key(), value, prefix));
            }
        }
        let last = resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max().unwrap_or(revision);
        if rows.is_empty() {
            // Presence and progress only: nothing to apply or rebuild, but
            // writes up to here are answered.
            self.answer(last);
            return Ok(false);
        }
        self.local.mirror(&rows, last, false)?;
        self.state_revision = last;
        let traffic = rows.iter().any(|r| !matches!(r.table, "rollouts" | "events"));
        self.applied(last, traffic);
        Ok(traffic)
    }

    /// Marks `revision` applied (`traffic`: it changed what the data path
    /// reads) and answers the writes it covers.
    fn applied(&mut self, revision: i64, traffic: bool) {
        self.applied.send_modify(|a| {
            a.revision = revision;
            if traffic {
                a.traffic = revision;
            }
        });
        self.view.lock().unwrap_or_else(|p| p.into_inner()).applied_revision = self.state_revision;
        self.answer(revision);
    }

    /// Answers the writes up to `revision`.
    fn answer(&mut self, revision: i64) {
        let later = self.pending.split_off(&(revision + 1));
        for (_, (reply, event)) in std::mem::replace(&mut self.pending, later) {
            let _ = reply.send(Ok(event));
        }
    }

    /// One write: its rows and, with an event, the next sequence number, in
    /// one transaction (retried when another replica took the number).
    async fn commit(&mut self, client: &mut Client, r: Request) {
        let result = self.transact(client, &r).await;
        match result {
            Ok((revision, event)) if revision <= self.local.revision().unwrap_or(0) => {
                let _ = r.reply.send(Ok(event));
            }
            Ok((revision, event)) => {
                self.pending.insert(revision, (r.reply, event));
            }
            Err(e) => {
                let _ = r.reply.send(Err(e));
            }
        }
    }

    async fn transact(&self, client: &mut Client, r: &Request) -> Result<(i64, Option<Event>), Error> {
        let p = &self.config.prefix;
        let seq_key = format!("{p}/seq");
        let mut guard = Vec::new();
        if r.guard.leader {
            let Some((key, created)) = &self.fence else {
                return Err(Error::Stale("this replica does not lead the fleet; nothing was changed".into()));
            };
            guard.push(Compare::create_revision(key.clone(), CompareOp::Equal, *created));
        }
        if let Some((service, expected)) = &r.guard.rollout {
            let key = format!("{p}/rollouts/{service}");
            guard.push(match expected {
                Some(json) => Compare::value(key, CompareOp::Equal, json.clone()),
                None => Compare::version(key, CompareOp::Equal, 0),
            });
        }
        let why = match r.guard.leader {
            true => "this replica no longer leads the fleet, or the rollout changed meanwhile; nothing was changed",
            false => "the rollout changed meanwhile; nothing was changed",
        };
        let stale = || Error::Stale(why.into());
        let ops = |extra: Vec<TxnOp>| {
            r.rows
                .iter()
                .map(|row| {
                    let key = format!("{p}/{}/{}", row.table, row.key);
                    match &row.value {
                        Some(v) => TxnOp::put(key, v.clone(), None),
                        None => TxnOp::delete(key, None),
                    }
                })
                .chain(extra)
                .collect::<Vec<_>>()
        };
        let Some(event) = &r.event else {
            let resp = client.txn(Txn::new().when(guard).and_then(ops(vec![]))).await.map_err(etcd_error)?;
            if !resp.succeeded() {
                return Err(stale());
            }
            return Ok((resp.header().map_or(0, |h| h.revision()), None));
        };
        for _ in 0..16 {
            let got = client.get(seq_key.clone(), None).await.map_err(etcd_error)?;
            let (seq, at) = match got.kvs().first() {
                None => (0, 0),
                Some(kv) => match std::str::from_utf8(kv.value()).ok().and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) => (n, kv.mod_revision()),
                    None => {
                        return Err(Error::State(format!(
                            "fleet: {seq_key} in etcd is not a number; nothing was changed"
                        )))
                    }
                },
            };
            let event = state::stamp(event.clone(), seq + 1);
            let row = state::event_row(&event)?;
            let event_op = TxnOp::put(format!("{p}/events/{}", row.key), row.value.unwrap_or_default(), None);
            let seq_op = TxnOp::put(seq_key.clone(), (seq + 1).to_string(), None);
            let compares: Vec<Compare> = [Compare::mod_revision(seq_key.clone(), CompareOp::Equal, at)]
                .into_iter()
                .chain(guard.clone())
                .collect();
            let txn = Txn::new().when(compares).and_then(ops(vec![event_op, seq_op]));
            let resp = client.txn(txn).await.map_err(etcd_error)?;
            if resp.succeeded() {
                return Ok((resp.header().map_or(0, |h| h.revision()), Some(event)));
            }
            if !guard.is_empty() {
                // The guard failed, unless another write took the number.
                let now = client.get(seq_key.clone(), None).await.map_err(etcd_error)?;
                if now.kvs().first().map_or(0, |kv| kv.mod_revision()) == at {
                    return Err(stale());
                }
            }
        }
        Err(Error::Unavailable("fleet: too many concurrent writes; try again".into()))
    }
}

/// The row an etcd key under `prefix` stands for. A value that is not what
/// its table holds (written into etcd by something else) is skipped with a
/// warning, so it can never stop a replica from loading its copy.
fn row(key: &[u8], value: Option<&[u8]>, prefix: &str) -> Option<Row> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix(prefix)?;
    let (table, key) = rest.split_once('/')?;
    let table = TABLES.into_iter().find(|t| *t == table)?;
    if let Some(v) = value {
        let fits = match table {
            "plugins" => true,
            "weights" => serde_json::from_slice::<crate::config::WeightMap>(v).is_ok(),
            "suspended" => serde_json::from_slice::<std::collections::BTreeSet<String>>(v).is_ok(),
            "pools" => serde_json::from_slice::<crate::config::PoolSets>(v).is_ok(),
            "mirrors" => serde_json::from_slice::<crate::config::MirrorSet>(v).is_ok(),
            "events" => key.parse::<u64>().is_ok() && serde_json::from_slice::<Event>(v).is_ok(),
            _ => serde_json::from_slice::<serde_json::Value>(v).is_ok(),
        };
        if !fits {
            tracing::warn!(table, key, "fleet: ignoring a key whose value this version cannot read");
            return None;
        }
    }
    Some(Row { table, key: key.to_owned(), value: value.map(<[u8]>::to_vec) })
}

/// Aborts a task when dropped (with the session it serves).
/// A session's hold on the fleet, from [`Etcd::join`].
struct Joined {
    client: Client,
    /// The watch's messages, from its reader task.
    watched: mpsc::UnboundedReceiver<Result<Option<etcd_client::WatchResponse>, etcd_client::Error>>,
    _reader: AbortOnDrop,
    lease: i64,
    keeper: etcd_client::LeaseKeeper,
    kept: etcd_client::LeaseKeepAliveStream,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::row;

    #[test]
    fn keys_map_to_rows_of_known_tables_only() {
        let r = row(b"/sy/weights/web", Some(br#"{"a": 1}"#), "/sy/").unwrap();
        assert_eq!((r.table, r.key.as_str(), r.value.as_deref()), ("weights", "web", Some(&br#"{"a": 1}"#[..])));
        assert_eq!(row(b"/sy/events/00000000000000000007", None, "/sy/").unwrap().key, "00000000000000000007");
        assert!(row(b"/sy/replicas/r1", Some(b"{}"), "/sy/").is_none(), "presence is not state");
        assert!(row(b"/sy/election/694d", Some(b"r1"), "/sy/").is_none(), "nor are election keys");
        assert!(row(b"/other/weights/web", Some(b"{}"), "/sy/").is_none(), "another fleet's keys");
        assert!(row(b"/sy/seq", Some(b"7"), "/sy/").is_none());
        assert!(row(b"/sy/weights/web", Some(b"not json"), "/sy/").is_none(), "junk is skipped, not mirrored");
        assert!(row(b"/sy/weights/web", Some(br#"{"a": -1}"#), "/sy/").is_none());
        assert!(row(b"/sy/events/x", Some(b"{}"), "/sy/").is_none());
        assert!(row(b"/sy/weights/web", None, "/sy/").is_some(), "a delete needs no value");
    }
}
