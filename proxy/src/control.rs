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

use crate::config::{weights_for, Config};
use crate::flags::FlagSet;
use crate::snapshot::Snapshot;
use crate::state::{event, Change, Event, StateStore, WeightMap};
use crate::Shared;
use std::collections::BTreeSet;
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
}

/// Run-time control of a proxy.
pub struct Control {
    /// The state the data path reads.
    pub shared: Arc<Shared>,
    /// Where changes and history are kept.
    pub store: Option<StateStore>,
    config_path: Option<PathBuf>,
    config: Mutex<Config>,
    writes: tokio::sync::Mutex<()>,
    /// Rollouts by service: running ones and the last finished one.
    pub(crate) rollouts: tokio::sync::Mutex<std::collections::HashMap<String, crate::rollout::controller::Handle>>,
    /// Services whose rollout has not ended (read by writes that must not race it).
    running: Mutex<BTreeSet<String>>,
    /// Bumped when the control path is handed to a successor process (or
    /// taken back): rollout controllers of an older epoch stop.
    epoch: std::sync::atomic::AtomicU64,
    /// The control path is with a successor now.
    handed_over: std::sync::atomic::AtomicBool,
}

// === impl Control ===

impl Control {
    /// Control over `shared`, whose snapshot was built from `config`.
    pub fn new(shared: Arc<Shared>, store: Option<StateStore>, config: Config, config_path: Option<PathBuf>) -> Self {
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
        }
    }

    /// Gives the control path to a successor process (a binary upgrade):
    /// every rollout controller stops after saving its progress to the
    /// moment, no write is in progress, and the state store is closed so the
    /// successor can open it and resume the rollouts where they are. The data
    /// path goes on serving until the process drains.
    pub async fn hand_over(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<_> = self.rollouts.lock().await.values().cloned().collect();
        for h in handles {
            // Waits for a tick in progress; the next one sees `handed_over`.
            let r = h.lock().await;
            if !r.is_done() {
                if let Err(e) = self.save_rollout(&r) {
                    tracing::error!(service = %r.service, error = %e, "cannot save rollout progress for the successor");
                }
            }
        }
        let _w = self.writes.lock().await;
        if let Some(store) = &self.store {
            store.release();
        }
        self.handed_over.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the control path is with a successor process.
    pub fn handed_over(&self) -> bool {
        self.handed_over.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Takes the control path back after a successor failed: the state
    /// store reopened, the stored rollouts resumed.
    pub async fn take_back(self: &Arc<Self>) -> Result<(), crate::Error> {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(store) = &self.store {
            store.reopen()?;
        }
        self.handed_over.store(false, std::sync::atomic::Ordering::SeqCst);
        crate::rollout::controller::resume_all(self).await
    }

    /// Which hand-over epoch this is (see [`Control::hand_over`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The config currently in force (as loaded; weights as in the file).
    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        self.change_traffic(ev, service, asked, None)
    }

    /// A rollout's weights, and the suspension of the rules to a rolled-back
    /// candidate (`suspend`), in one event and one snapshot swap.
    pub(crate) async fn rollout_traffic(
        &self,
        service: &str,
        weights: WeightMap,
        suspend: Option<&BTreeSet<String>>,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("weights", Some(service), actor, reason);
        ev.new = serde_json::json!(weights);
        self.change_traffic(ev, service, weights, suspend)
    }

    /// The common body of a weight change (writes held).
    fn change_traffic(
        &self,
        mut ev: Event,
        service: &str,
        asked: WeightMap,
        suspend: Option<&BTreeSet<String>>,
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
        let next = snap.with_traffic(service, Some((weights, true)), suspend);
        let mut changes = vec![Change::Weights(service, Some(&full))];
        if let Some(pools) = suspend.filter(|p| **p != svc.suspended) {
            changes.push(Change::Suspended(service, pools));
            let rules = next.as_ref().and_then(|n| n.service(service)).map(|s| s.split.suspended_rules());
            let rules = rules.unwrap_or_default();
            ev.new = serde_json::json!({ "weights": full, "suspended_pools": pools, "suspended_rules": rules });
            if !rules.is_empty() {
                ev.message.push_str(&format!("; rules {} suspended", rule_list(&rules)));
            }
        }
        self.swap_traffic(ev, service, next, &changes)
    }

    /// The common end of a traffic change (writes held): refused when the
    /// service is gone, else `changes` committed with `ev` and `next` swapped in.
    fn swap_traffic(
        &self,
        ev: Event,
        service: &str,
        next: Option<Snapshot>,
        changes: &[Change<'_>],
    ) -> Result<Event, ControlError> {
        let Some(next) = next else {
            return Err(self.refuse(ev, no_service(service)));
        };
        let ev = self.commit(changes, ev)?;
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
        let next = snap.with_traffic(service, Some((file_weights, false)), None);
        self.swap_traffic(ev, service, next, &[Change::Weights(service, None)])
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
        let next = snap.with_traffic(service, None, Some(&none));
        self.swap_traffic(ev, service, next, &[Change::Suspended(service, &none)])
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
        let new = match Config::load(path).and_then(|c| crate::check(&c).map(|()| c)) {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e.to_string()))),
        };
        let old = self.config();
        let restart_needed: Vec<&str> = [
            ("listeners", new.listeners != old.listeners),
            ("server", new.server != old.server),
            ("admin", new.admin != old.admin),
            ("state", new.state_dir != old.state_dir),
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
        let plugins = match crate::plugin::load_all(&new.plugins, &overrides_p, &self.shared.plugins.map()) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
        };
        let current = self.shared.snapshot.load_full();
        let next = match Snapshot::build(&new, &self.shared.stats, Some(&current), &overrides, &plugins) {
            Ok(n) => n,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
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
        if let (Some(before), Some(after)) = (bucketing(&old), bucketing(&new).filter(|_| rebucketed.is_some())) {
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

    /// Loads (or replaces) plugin `name` from component bytes. The new
    /// version is compiled and tried, every rule using it is bound again
    /// (instantiated, `init`, a trial `route`) into a new snapshot, and only
    /// then is it stored, recorded and swapped in. Refused: the version in
    /// force keeps serving.
    pub async fn load_plugin(
        &self,
        name: &str,
        bytes: &[u8],
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("plugin-load", None, actor, reason);
        let sha = crate::plugin::sha256(bytes);
        ev.new = serde_json::json!({ "name": name, "sha256": sha, "bytes": bytes.len() });
        if !crate::plugin::valid_name(name) {
            let msg = format!("`{name}`: a plugin name is 1 to 64 letters, digits, `-` or `_`");
            return Err(self.refuse(ev, ControlError::BadRequest(msg)));
        }
        // A new version keeps the configuration in force (the file's, or the API's).
        let old = self.shared.plugins.get(name);
        let default_config = match &old {
            Some(o) => o.config.clone(),
            None => self.config().plugins.iter().find(|p| p.name == name).map(|p| p.config.clone()).unwrap_or_default(),
        };
        let plugin = match crate::plugin::Plugin::load(name, bytes, "admin API", default_config) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("plugin `{name}`: {e}")))),
        };
        ev.old = old.as_ref().map_or(serde_json::Value::Null, |o| serde_json::json!({ "sha256": o.sha256 }));
        ev.new["kind"] = plugin.kind.as_str().into();
        ev.message = match &old {
            Some(o) => {
                format!("plugin {name} replaced: {} → {} ({})", short(&o.sha256), short(&sha), plugin.kind.as_str())
            }
            None => format!("plugin {name} loaded: {} ({})", short(&sha), plugin.kind.as_str()),
        };
        self.put_plugin(ev, plugin, Change::Plugin(name, bytes), actor)
    }

    /// Sets plugin `name`'s default configuration (what `init` gets where a
    /// rule or policy gives none). It is tried, every rule using the default
    /// is bound again into a new snapshot, and only then is it stored,
    /// recorded and swapped in. Durable; overrides the file's `config`.
    pub async fn set_plugin_config(
        &self,
        name: &str,
        value: serde_json::Value,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("plugin-config", None, actor, reason);
        ev.new = serde_json::json!({ "name": name, "config": value });
        let Some(old) = self.shared.plugins.get(name) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no plugin named `{name}` is loaded"))));
        };
        let plugin = match old.with_config(value.clone()) {
            Ok(p) => p,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("plugin `{name}`: {e}")))),
        };
        ev.old = serde_json::json!({ "name": name, "config": old.config });
        ev.message = format!("plugin {name}: configuration set to {value}");
        self.put_plugin(ev, plugin, Change::PluginConfig(name, &value), actor)
    }

    /// The common end of a plugin change: binds every rule to `plugin` in a
    /// new snapshot (refused, and recorded, when one cannot bind), then
    /// commits `ev` with `change`, puts `plugin` in force and swaps the snapshot.
    fn put_plugin(
        &self,
        ev: Event,
        plugin: Arc<crate::plugin::Plugin>,
        change: Change<'_>,
        actor: &str,
    ) -> Result<Event, ControlError> {
        let mut map = self.shared.plugins.map();
        map.insert(plugin.name.clone(), plugin.clone());
        let current = self.shared.snapshot.load_full();
        let next = match Snapshot::build(&self.config(), &self.shared.stats, Some(&current), &current.run_time(), &map)
        {
            Ok(n) => n,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
        };
        let ev = self.commit(&[change], ev)?;
        self.shared.plugins.insert(plugin);
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(actor, "{}", ev.message);
        Ok(ev)
    }

    fn plugin_overrides(&self) -> Result<crate::plugin::Overrides, ControlError> {
        match &self.store {
            Some(s) => s.plugins().map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(Default::default()),
        }
    }

    /// The flag definition file, when flags are configured.
    pub fn flags_file(&self) -> Option<PathBuf> {
        self.config().flags.map(|f| f.file)
    }

    fn flags_config(&self) -> Option<crate::config::FlagsConfig> {
        self.config().flags
    }

    /// Merges `patch` (any of `state`, `defaultVariant`, `variants`,
    /// `targeting`) into flag `key`'s run-time override; the flag is rebuilt
    /// and validated with every other flag before anything changes.
    pub async fn set_flag(
        &self,
        key: &str,
        patch: serde_json::Value,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("flag", None, actor, reason);
        ev.new = serde_json::json!({ key: patch });
        let Some(flags) = self.flags_config() else {
            return Err(self.refuse(ev, ControlError::Conflict("no `flags` section in the config".into())));
        };
        if !patch.is_object() {
            return Err(self.refuse(ev, ControlError::BadRequest("the body is an object of flag fields".into())));
        }
        let allowed = ["state", "defaultVariant", "variants", "targeting"];
        if let Some(k) = patch.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !allowed.contains(&k.as_str())) {
            return Err(self.refuse(
                ev,
                ControlError::BadRequest(format!("unknown field `{k}` (fields: {})", allowed.join(", "))),
            ));
        }
        let mut overrides = self.flag_overrides()?;
        let mut merged = overrides.get(key).cloned().unwrap_or_else(|| serde_json::json!({}));
        if let (Some(m), Some(p)) = (merged.as_object_mut(), patch.as_object()) {
            m.extend(p.clone());
        }
        overrides.insert(key.to_owned(), merged.clone());
        let set = match load_flags(&flags, &overrides) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
        };
        ev.old = self.shared.flags.load().definitions().get(key).map_or(serde_json::Value::Null, |(d, _)| (*d).clone());
        ev.new = set.definitions().get(key).map_or(serde_json::Value::Null, |(d, _)| (*d).clone());
        ev.message = format!("flag {key} changed");
        let ev = self.commit(&[Change::Flag(key, Some(&merged))], ev)?;
        self.shared.flags.store(Arc::new(set));
        tracing::info!(flag = key, actor, "{}", ev.message);
        Ok(ev)
    }

    /// Drops flag `key`'s run-time override: the file's definition applies again.
    pub async fn reset_flag(&self, key: &str, actor: &str, reason: Option<String>) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("flag-reset", None, actor, reason);
        let Some(flags) = self.flags_config() else {
            return Err(self.refuse(ev, ControlError::Conflict("no `flags` section in the config".into())));
        };
        let mut overrides = self.flag_overrides()?;
        if overrides.remove(key).is_none() {
            return Err(self.refuse(ev, ControlError::NotFound(format!("flag `{key}` has no run-time change"))));
        }
        let set = match load_flags(&flags, &overrides) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(e))),
        };
        ev.message = format!("flag {key} back to the file's definition");
        let ev = self.commit(&[Change::Flag(key, None)], ev)?;
        self.shared.flags.store(Arc::new(set));
        Ok(ev)
    }

    /// Re-reads the flag file; a bad file is refused and the flags in force stay.
    pub async fn reload_flags(&self, actor: &str) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let ev = event("flags-reload", None, actor, None);
        let Some(flags) = self.flags_config() else {
            return Err(ControlError::Conflict("no `flags` section in the config".into()));
        };
        let set = match load_flags(&flags, &self.flag_overrides()?) {
            Ok(s) => s,
            Err(e) => return Err(self.refuse(ev, ControlError::BadRequest(format!("{}: {e}", flags.file.display())))),
        };
        let mut ev = ev;
        ev.message = format!("flags reloaded from {}", flags.file.display());
        let ev = self.commit(&[], ev)?;
        self.shared.flags.store(Arc::new(set));
        tracing::info!("{}", ev.message);
        Ok(ev)
    }

    fn flag_overrides(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>, ControlError> {
        match &self.store {
            Some(s) => s.flag_overrides().map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(Default::default()),
        }
    }

    /// Persists a rollout's progress.
    pub(crate) fn save_rollout(&self, r: &crate::rollout::Rollout) -> Result<(), ControlError> {
        match &self.store {
            Some(s) => s.save_rollout(&r.service, r).map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(()),
        }
    }

    /// Commits `changes` with their event, durably (refused when it cannot be recorded).
    pub(crate) fn commit(&self, changes: &[Change<'_>], ev: Event) -> Result<Event, ControlError> {
        match &self.store {
            Some(store) => store.commit(changes, ev).map_err(|e| {
                tracing::error!(error = %e, "cannot record a change; refusing it");
                ControlError::Internal(format!("the change could not be recorded, so it was not made: {e}"))
            }),
            None => Ok(ev),
        }
    }

    /// Records a write refused before it reached the control path (bad
    /// token, wrong media type, unreadable body), best effort.
    pub fn record_refused(&self, kind: &str, service: Option<&str>, actor: &str, message: String) {
        let mut ev = event(kind, service, actor, None);
        ev.outcome = "refused".into();
        ev.message = message;
        if let Some(store) = &self.store {
            if let Err(e) = store.commit(&[], ev) {
                tracing::error!(error = %e, "cannot record a refused change");
            }
        }
    }

    /// Records a refused write (best effort) and returns its error.
    fn refuse(&self, mut ev: Event, err: ControlError) -> ControlError {
        ev.outcome = "refused".into();
        ev.message = err.to_string();
        if let Some(store) = &self.store {
            if let Err(e) = store.commit(&[], ev) {
                tracing::error!(error = %e, "cannot record a refused change");
            }
        }
        tracing::warn!("refused: {err}");
        err
    }
}

/// Reads and compiles a flag file with run-time overrides.
pub fn load_flags(
    flags: &crate::config::FlagsConfig,
    overrides: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<FlagSet, String> {
    let file = &flags.file;
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    FlagSet::parse(&text, overrides, flags.bucketing)
}

/// Re-reads the flag file whenever it changes (polled every second; editors
/// that replace the file are seen too).
pub async fn watch_flags(control: Arc<Control>, file: PathBuf) {
    let stamp = |f: &std::path::Path| std::fs::metadata(f).ok().map(|m| (m.modified().ok(), m.len()));
    let mut last = stamp(&file);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&file);
        if now != last {
            last = now;
            // Errors are logged and recorded by the control path.
            let _ = control.reload_flags("flags-file").await;
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
