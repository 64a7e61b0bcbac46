//! The control path's one door for run-time changes: weights, their reset,
//! and config reload. Each change is validated, built into a whole new
//! snapshot, recorded as an event and persisted, and only then swapped in —
//! so the API answers after the change is durable, and a change that cannot
//! be recorded does not happen. Refused writes are recorded too (outcome
//! `refused`). Writes are serialised; the data path never waits on them.
//!
//! Precedence: weights set at run time override the config file's weights
//! for their service, across restarts and reloads, until they are reset
//! (`DELETE /v1/services/{svc}/weights`) or no longer fit the service's pools.

mod flags;
pub mod fleet;
mod handover;
mod plugins;
mod pools;
pub mod rollout;
pub mod state;
pub mod upgrade;

pub use flags::{load_flags, watch_flags};
pub use rollout::{Command, Handle};

use crate::config::{weights_for, Config};
use crate::config::{MirrorSet, WeightMap};
use crate::control::state::{event, Change, Event, Guard, Store};
use crate::data::snapshot::{Snapshot, Traffic};
use crate::data::Shared;
use crate::flags::FlagSet;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why a change was refused; maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request is invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such service (404).
    #[error("{0}")]
    NotFound(String),
    /// The change needs a restart or a config file (409).
    #[error("{0}")]
    Conflict(String),
    /// The change could not be recorded (500); nothing changed.
    #[error("{0}")]
    Internal(String),
    /// The fleet's store is unreachable (503); nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// A rollout changed meanwhile, or this replica no longer leads the
    /// fleet (409); nothing changed.
    #[error("{0}")]
    Stale(String),
}

/// Run-time control of a proxy.
pub struct Control {
    /// The state the data path reads.
    pub shared: Arc<Shared>,
    /// Where changes and history are kept.
    pub store: Option<Box<dyn Store>>,
    config_path: Option<PathBuf>,
    config: Mutex<Config>,
    writes: tokio::sync::Mutex<()>,
    /// Rollouts by service: running ones and the last finished one.
    pub(crate) rollouts: tokio::sync::Mutex<std::collections::HashMap<String, Handle>>,
    /// Services whose rollout has not ended (read by writes that must not race it).
    running: Mutex<BTreeSet<String>>,
    /// Bumped when the control path is handed to a successor process (or
    /// taken back): rollout controllers of an older epoch stop.
    epoch: std::sync::atomic::AtomicU64,
    /// The control path is with a successor now.
    handed_over: std::sync::atomic::AtomicBool,
    /// Rollouts started and finished here, and commit times, for `/metrics`.
    pub tally: rollout::tally::Tally,
}

// === impl Control ===

impl Control {
    /// Control over `shared`, whose snapshot was built from `config`.
    pub fn new(
        shared: Arc<Shared>,
        store: Option<Box<dyn Store>>,
        config: Config,
        config_path: Option<PathBuf>,
    ) -> Self {
        Self {
            shared,
            store,
            config_path,
            config: Mutex::new(config),
            writes: tokio::sync::Mutex::new(()),
            rollouts: Default::default(),
            running: Default::default(),
            epoch: Default::default(),
            handed_over: Default::default(),
            tally: Default::default(),
        }
    }

    /// The config currently in force (as loaded; weights as in the file).
    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `webhooks.ca_file` of the config in force (without copying the rest).
    pub(crate) fn webhook_ca(&self) -> Option<PathBuf> {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).webhook_ca.clone()
    }

    /// Sets a service's weights (pools not named get 0). Refused (409) while
    /// a rollout of the service runs: the rollout owns its weights.
    pub async fn set_weights(
        &self,
        service: &str,
        asked: WeightMap,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("weights", Some(service), actor, reason);
        ev.new = serde_json::json!(asked);
        if let Some(err) = self.rollout_conflict(service, "weights") {
            return Err(self.refuse(ev, err));
        }
        self.change_traffic(ev, service, asked, (None, None), None)
    }

    /// A rollout's weights, the suspension of the rules to a rolled-back
    /// candidate (`suspend`) and its mirror (`mirror`: the mirror step's, or
    /// `None` for the file's), in one event and one snapshot swap, with the
    /// rollout's row (`rollout`: its JSON, stored under its guard).
    pub(crate) async fn rollout_traffic(
        &self,
        service: &str,
        (weights, mirror): (WeightMap, Option<&MirrorSet>),
        suspend: Option<&BTreeSet<String>>,
        (actor, reason): (&str, String),
        rollout: (&str, &Guard),
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("weights", Some(service), actor, Some(reason));
        ev.new = serde_json::json!(weights);
        self.change_traffic(ev, service, weights, (suspend, Some(mirror)), Some(rollout))
    }

    /// The common body of a weight change (writes held).
    fn change_traffic(
        &self,
        mut ev: Event,
        service: &str,
        asked: WeightMap,
        (suspend, mirror): (Option<&BTreeSet<String>>, Option<Option<&MirrorSet>>),
        rollout: Option<(&str, &Guard)>,
    ) -> Result<Event, ControlError> {
        let snap = self.shared.snapshot.load_full();
        let Some(svc) = snap.service(service) else {
            return Err(self.refuse(ev, no_service(service)));
        };
        let names = svc.pool_names();
        let weights = match weights_for(&asked, &names) {
            Ok(w) => w,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
        };
        let full: WeightMap = names.iter().cloned().zip(weights.iter().copied()).collect();
        ev.old = serde_json::json!(weight_map(&names, svc.split.weights()));
        ev.new = serde_json::json!(full);
        ev.message =
            format!("weights of {service}: {} → {}", describe(&names, svc.split.weights()), describe(&names, &weights));
        let next = snap.with_traffic(service, Traffic { weights: Some((weights, true)), suspended: suspend, mirror });
        let mut changes = vec![Change::Weights(service, Some(&full))];
        changes.extend(rollout.map(|(row, _)| Change::Rollout(service, row)));
        if let Some(m) = mirror.filter(|m| *m != svc.mirror_set.as_ref()) {
            changes.push(Change::Mirror(service, m));
            ev.message.push_str(&match m {
                Some(m) => format!("; {}% of its requests mirrored to {}", m.percent, m.pool),
                None => "; the rollout's mirror ends".to_owned(),
            });
        }
        if let Some(pools) = suspend.filter(|p| **p != svc.suspended) {
            changes.push(Change::Suspended(service, pools));
            let rules = next.as_ref().and_then(|n| n.service(service)).map(|s| s.split.suspended_rules());
            let rules = rules.unwrap_or_default();
            ev.new = serde_json::json!({ "weights": full, "suspended_pools": pools, "suspended_rules": rules });
            if !rules.is_empty() {
                ev.message.push_str(&format!("; rules {} suspended", rule_list(&rules)));
            }
        }
        self.swap_traffic(ev, service, next, &changes, rollout.map(|(_, g)| g))
    }

    /// The common end of a traffic change (writes held): refused when the
    /// service is gone, else `changes` committed with `ev` and `next` swapped in.
    fn swap_traffic(
        &self,
        ev: Event,
        service: &str,
        next: Option<Snapshot>,
        changes: &[Change<'_>],
        guard: Option<&Guard>,
    ) -> Result<Event, ControlError> {
        let Some(next) = next else {
            return Err(self.refuse(ev, no_service(service)));
        };
        let ev = match guard {
            Some(g) => self.commit_under(changes, Some(ev.clone()), g)?.unwrap_or(ev),
            None => self.commit(changes, ev)?,
        };
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(service, actor = %ev.actor, "{}", ev.message);
        Ok(ev)
    }

    /// Drops a service's run-time weights: the config file's apply again.
    /// Refused (409) while a rollout of the service runs.
    pub async fn reset_weights(
        &self,
        service: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("weights-reset", Some(service), actor, reason);
        if let Some(err) = self.rollout_conflict(service, "weights") {
            return Err(self.refuse(ev, err));
        }
        let snap = self.shared.snapshot.load_full();
        let file_weights = self.config().services.iter().find(|s| s.name == service).map(|s| s.split.weights.clone());
        let (Some(svc), Some(file_weights)) = (snap.service(service), file_weights) else {
            return Err(self.refuse(ev, no_service(service)));
        };
        let names = svc.pool_names();
        ev.old = serde_json::json!(weight_map(&names, svc.split.weights()));
        ev.new = serde_json::json!(weight_map(&names, &file_weights));
        ev.message = format!("weights of {service} back to the config file's: {}", describe(&names, &file_weights));
        let next = snap.with_traffic(service, Traffic { weights: Some((file_weights, false)), ..Traffic::default() });
        self.swap_traffic(ev, service, next, &[Change::Weights(service, None)], None)
    }

    /// Lifts the suspension of a service's rules to rolled-back pools: they
    /// send to their pools again. 404 when nothing is suspended.
    pub async fn lift_suspension(
        &self,
        service: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("suspension-lift", Some(service), actor, reason);
        let snap = self.shared.snapshot.load_full();
        let Some(svc) = snap.service(service) else {
            return Err(self.refuse(ev, no_service(service)));
        };
        if svc.suspended.is_empty() {
            let msg = format!("no rule of `{service}` is suspended");
            return Err(self.refuse(ev, ControlError::NotFound(msg)));
        }
        let rules = svc.split.suspended_rules();
        ev.old = serde_json::json!({ "suspended_pools": svc.suspended, "suspended_rules": rules });
        ev.new = serde_json::json!({ "suspended_pools": [], "suspended_rules": [] });
        ev.message = format!(
            "rules of {service} to {} apply again ({})",
            svc.suspended.iter().cloned().collect::<Vec<_>>().join(", "),
            if rules.is_empty() { "none was suspended".to_owned() } else { format!("rules {}", rule_list(&rules)) }
        );
        let none = BTreeSet::new();
        let next = snap.with_traffic(service, Traffic { suspended: Some(&none), ..Traffic::default() });
        self.swap_traffic(ev, service, next, &[Change::Suspended(service, &none)], None)
    }

    /// Marks whether a rollout of `service` is running (not yet ended).
    pub(crate) fn set_rollout_running(&self, service: &str, running: bool) {
        let mut active = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            active.insert(service.to_owned());
        } else {
            active.remove(service);
        }
    }

    /// The services whose rollout has not ended.
    pub(crate) fn running_rollouts(&self) -> BTreeSet<String> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A 409 naming the running rollout of `service`, if there is one.
    fn rollout_conflict(&self, service: &str, what: &str) -> Option<ControlError> {
        let active = self.running.lock().unwrap_or_else(|p| p.into_inner());
        active.contains(service).then(|| {
            ControlError::Conflict(format!(
                "a rollout of `{service}` is running and owns its {what}: promote, abort or roll it back first \
                 (`switchyard ctl rollout abort {service}`)"
            ))
        })
    }

    /// Re-reads the config file and applies its services. Changes to
    /// listeners, server limits, admin, state or stats need a restart and are
    /// refused; a bad file is refused; either way the running config stays.
    pub async fn reload(&self, actor: &str, reason: Option<String>) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("config-reload", None, actor, reason);
        let Some(path) = &self.config_path else {
            return Err(self.refuse(ev, ControlError::Conflict("this proxy was not started from a config file".into())));
        };
        let new = match Config::load(path).and_then(|c| check(&c).map(|()| c)) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        let old = self.config();
        let restart_needed: Vec<&str> = [
            ("listeners", new.listeners != old.listeners),
            ("server", new.server != old.server),
            ("admin", new.admin != old.admin),
            ("state", new.state_dir != old.state_dir || new.fleet != old.fleet),
            ("stats", new.stats != old.stats),
            // The bucketing generation alone is applied by a reload.
            (
                "flags",
                new.flags.as_ref().map(|f| (&f.file, &f.context)) != old.flags.as_ref().map(|f| (&f.file, &f.context)),
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !restart_needed.is_empty() {
            let msg = format!("{} changed: restart to apply (nothing was reloaded)", restart_needed.join(", "));
            return Err(self.refuse(ev, ControlError::Conflict(msg)));
        }
        let overrides = match &self.store {
            Some(s) => s.run_time().map_err(|e| ControlError::Internal(e.to_string()))?,
            None => self.shared.snapshot.load().run_time(),
        };
        let overrides_p = self.plugin_overrides()?;
        let (plugins, next) = match self.build(&new, &overrides, &overrides_p) {
            Ok(built) => built,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        let bucketing = |c: &Config| c.flags.as_ref().map(|f| f.bucketing);
        let rebucketed = match new.flags.as_ref().filter(|_| bucketing(&new) != bucketing(&old)) {
            Some(flags) => match load_flags(flags, &self.flag_overrides()?) {
                Ok(set) => Some(set),
                Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("flags: {e}")))),
            },
            None => None,
        };
        let names = |c: &Config| c.services.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        ev.old =
            serde_json::json!({ "services": names(&old), "flags_bucketing": bucketing(&old).map(|b| b.to_string()) });
        ev.new =
            serde_json::json!({ "services": names(&new), "flags_bucketing": bucketing(&new).map(|b| b.to_string()) });
        ev.message = format!("config reloaded from {}: {} service(s)", path.display(), new.services.len());
        if let (Some(before), Some(after), true) = (bucketing(&old), bucketing(&new), rebucketed.is_some()) {
            ev.message.push_str(&format!("; flag bucketing {before} → {after}"));
        }
        let ev = self.commit(&[], ev)?;
        if let Some(set) = rebucketed {
            self.shared.flags.store(Arc::new(set));
        }
        self.shared.plugins.replace(plugins);
        self.shared.snapshot.store(Arc::new(next));
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = new;
        tracing::info!(actor, "{}", ev.message);
        Ok(ev)
    }

    /// Rebuilds what the data path reads from the config in force and the
    /// store's run-time state (weights, suspensions, plugins, flag
    /// overrides), and swaps it in. In a fleet, after each change the watch
    /// applied, wherever it was made.
    pub async fn apply_stored(&self) -> Result<(), ControlError> {
        let _w = self.writes.lock().await;
        let Some(store) = &self.store else {
            return Ok(());
        };
        let internal = |e: crate::Error| ControlError::Internal(e.to_string());
        let config = self.config();
        let overrides = store.run_time().map_err(internal)?;
        let (plugins, next) = self.build(&config, &overrides, &store.plugins().map_err(internal)?).map_err(internal)?;
        if let Some(f) = &config.flags {
            let set = load_flags(f, &store.flag_overrides().map_err(internal)?).map_err(internal)?;
            self.shared.flags.store(Arc::new(set));
        }
        self.shared.plugins.replace(plugins);
        self.shared.snapshot.store(Arc::new(next));
        Ok(())
    }

    /// The plugins and the snapshot `config` and the run-time state give
    /// (unchanged plugins kept, not recompiled; endpoints' state carried over).
    fn build(
        &self,
        config: &Config,
        overrides: &crate::config::RunTime,
        plugin_overrides: &crate::plugin::Overrides,
    ) -> Result<(BTreeMap<String, Arc<crate::plugin::Plugin>>, Snapshot), crate::Error> {
        let options = crate::plugin::LoadOptions::of(config);
        let plugins = crate::plugin::load_all(&config.plugins, plugin_overrides, &self.shared.plugins.map(), &options)?;
        let current = self.shared.snapshot.load_full();
        let next = Snapshot::build(config, &self.shared.stats, Some(&current), overrides, &plugins)?;
        Ok((plugins, next))
    }

    /// Commits `changes` with their event, durably (refused when it cannot be recorded).
    pub(crate) fn commit(&self, changes: &[Change<'_>], ev: Event) -> Result<Event, ControlError> {
        self.commit_under(changes, Some(ev.clone()), &Guard::default()).map(|stored| stored.unwrap_or(ev))
    }

    /// [`Control::commit`] under `guard`, the event optional.
    pub(crate) fn commit_under(
        &self,
        changes: &[Change<'_>],
        ev: Option<Event>,
        guard: &Guard,
    ) -> Result<Option<Event>, ControlError> {
        match &self.store {
            Some(store) => self.timed_commit(store.as_ref(), changes, ev, guard).map_err(|e| match e {
                crate::Error::Unavailable(m) => ControlError::Unavailable(m),
                crate::Error::Stale(m) => ControlError::Stale(m),
                e => {
                    tracing::error!(error = %e, "cannot record a change; refusing it");
                    ControlError::Internal(format!("the change could not be recorded, so it was not made: {e}"))
                }
            }),
            None => Ok(ev),
        }
    }

    /// `store`'s commit, its time counted (`switchyard_state_commit_seconds`).
    fn timed_commit(
        &self,
        store: &dyn Store,
        changes: &[Change<'_>],
        ev: Option<Event>,
        guard: &Guard,
    ) -> Result<Option<Event>, crate::Error> {
        let start = std::time::Instant::now();
        let stored = store.commit_guarded(changes, ev, guard);
        self.tally.committed(start.elapsed().as_secs_f64());
        stored
    }

    /// Whether this replica runs the rollouts: always, except in a fleet
    /// whose leader is another replica (or unknown while etcd is away).
    pub(crate) fn leads(&self) -> bool {
        self.store.as_ref().and_then(|s| s.leading()).is_none_or(|l| *l.borrow())
    }

    /// Records a write refused before it reached the control path (bad
    /// token, wrong media type, unreadable body), best effort.
    pub fn record_refused(&self, kind: &str, service: Option<&str>, actor: &str, message: String) {
        self.store_refusal(event(kind, service, actor, None), message);
    }

    /// Records a refused write (best effort) and returns its error.
    fn refuse(&self, ev: Event, err: ControlError) -> ControlError {
        self.store_refusal(ev, err.to_string());
        tracing::warn!("refused: {err}");
        err
    }

    /// Stores `ev` as refused with `message`, best effort.
    fn store_refusal(&self, mut ev: Event, message: String) {
        ev.outcome = "refused".into();
        ev.message = message;
        if let Some(store) = &self.store {
            if let Err(e) = self.timed_commit(store.as_ref(), &[], Some(ev), &Guard::default()) {
                tracing::error!(error = %e, "cannot record a refused change");
            }
        }
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn weight_map(names: &[String], weights: &[u32]) -> WeightMap {
    names.iter().cloned().zip(weights.iter().copied()).collect()
}

fn no_service(service: &str) -> ControlError {
    ControlError::NotFound(format!("no service named `{service}`"))
}

/// `#1, #3` (rules numbered from 1, as people count).
fn rule_list(rules: &[usize]) -> String {
    rules.iter().map(|i| format!("#{}", i + 1)).collect::<Vec<_>>().join(", ")
}

fn describe(names: &[String], weights: &[u32]) -> String {
    names.iter().zip(weights).map(|(n, w)| format!("{n}={w}")).collect::<Vec<_>>().join(" ")
}

/// Everything `switchyard check` verifies beyond [`Config::load`](crate::Config::load): that the
/// flag file loads, every listener's certificates and keys load and match,
/// and every plugin file compiles and passes its trial call.
pub fn check(config: &Config) -> Result<(), crate::Error> {
    let with_path: Vec<_> = config.plugins.iter().filter(|p| p.path.is_some()).cloned().collect();
    let options = crate::plugin::LoadOptions::of(config);
    let plugins = crate::plugin::load_all(&with_path, &Default::default(), &Default::default(), &options)
        .map_err(|e| crate::Error::Config(format!("config: {e}")))?;
    check_plugin_uses(config, &plugins)?;
    if let Some(f) = &config.flags {
        load_flags(f, &Default::default()).map_err(|e| crate::Error::Config(format!("config: flags.file: {e}")))?;
    }
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            crate::data::tls::server_tls(t).map_err(|e| crate::Error::Tls(format!("listener `{}`: {e}", l.name)))?;
        }
    }
    for s in &config.services {
        for p in &s.pools {
            if let Some(t) = &p.tls {
                crate::data::tls::upstream_client(t, p.protocol)
                    .map_err(|e| crate::Error::Tls(format!("service `{}`, pool `{}`: {e}", s.name, p.name)))?;
            }
        }
    }
    Ok(())
}

/// What `serve` (or a rollout of the file's plan) would refuse of how the
/// file's plugins are used: a rule naming a policy, a rule whose config its
/// router refuses, a plan's policy that is a router or refuses its config.
/// A plugin without a `path` is uploaded through the API, where `check`
/// cannot see it: its uses are checked when it is loaded.
fn check_plugin_uses(
    config: &Config,
    plugins: &std::collections::BTreeMap<String, Arc<crate::plugin::Plugin>>,
) -> Result<(), crate::Error> {
    use crate::plugin::Kind;
    let bad = |at: String, msg: String| crate::Error::Config(format!("config: {at}: {msg}"));
    for (i, s) in config.services.iter().enumerate() {
        for (j, rule) in s.split.rules.iter().enumerate() {
            let Some(pr) = &rule.plugin else { continue };
            let Some(plugin) = plugins.get(&pr.name) else { continue };
            let pools: Vec<String> = s.pools.iter().map(|p| p.name.clone()).collect();
            let at = format!("config: services[{i}].split.rules[{j}]");
            crate::data::snapshot::bind_rule(plugin, pr, &pools, &at)?;
        }
        let Some(policy) = s.rollout.as_ref().and_then(|r| r.analysis.policy.as_ref()) else { continue };
        let Some(plugin) = plugins.get(&policy.plugin) else { continue };
        let at = format!("services[{i}].rollout.analysis.policy");
        if plugin.kind != Kind::Policy {
            return Err(bad(at, format!("plugin `{}` is a router, not a policy", policy.plugin)));
        }
        let cfg = policy.config.as_ref().unwrap_or(&plugin.config).to_string();
        crate::plugin::policy::try_config(plugin, &cfg)
            .map_err(|f| bad(at, format!("plugin `{}` {f}", policy.plugin)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
