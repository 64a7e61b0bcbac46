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
use crate::snapshot::Snapshot;
use crate::state::{event, Event, StateStore, WeightMap};
use crate::Shared;
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
        }
    }

    /// The config currently in force (as loaded; weights as in the file).
    pub fn config(&self) -> Config {
        self.config.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets a service's weights (pools not named get 0).
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
        let snap = self.shared.snapshot.load_full();
        let Some(svc) = snap.service(service) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no service named `{service}`"))));
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
        let Some(next) = snap.with_weights(service, weights, true) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no service named `{service}`"))));
        };
        let ev = self.commit(Some((service, Some(&full))), ev)?;
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(service, actor, "{}", ev.message);
        Ok(ev)
    }

    /// Drops a service's run-time weights: the config file's apply again.
    pub async fn reset_weights(
        &self,
        service: &str,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Event, ControlError> {
        let _w = self.writes.lock().await;
        let mut ev = event("weights-reset", Some(service), actor, reason);
        let snap = self.shared.snapshot.load_full();
        let file_weights = self.config().services.iter().find(|s| s.name == service).map(|s| s.split.weights.clone());
        let (Some(svc), Some(file_weights)) = (snap.service(service), file_weights) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no service named `{service}`"))));
        };
        let names = svc.pool_names();
        ev.old = serde_json::json!(weight_map(&names, svc.split.weights()));
        ev.new = serde_json::json!(weight_map(&names, &file_weights));
        ev.message = format!("weights of {service} back to the config file's: {}", describe(&names, &file_weights));
        let Some(next) = snap.with_weights(service, file_weights, false) else {
            return Err(self.refuse(ev, ControlError::NotFound(format!("no service named `{service}`"))));
        };
        let ev = self.commit(Some((service, None)), ev)?;
        self.shared.snapshot.store(Arc::new(next));
        tracing::info!(service, actor, "{}", ev.message);
        Ok(ev)
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
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !restart_needed.is_empty() {
            let msg = format!("{} changed: restart to apply (nothing was reloaded)", restart_needed.join(", "));
            return Err(self.refuse(ev, ControlError::Conflict(msg)));
        }
        let overrides = match &self.store {
            Some(s) => s.weights().map_err(|e| ControlError::Internal(e.to_string()))?,
            None => Default::default(),
        };
        let current = self.shared.snapshot.load_full();
        let next = Snapshot::build(&new, &self.shared.stats, Some(&current), &overrides);
        let names = |c: &Config| c.services.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        ev.old = serde_json::json!({ "services": names(&old) });
        ev.new = serde_json::json!({ "services": names(&new) });
        ev.message = format!("config reloaded from {}: {} service(s)", path.display(), new.services.len());
        let ev = self.commit(None, ev)?;
        self.shared.snapshot.store(Arc::new(next));
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = new;
        tracing::info!(actor, "{}", ev.message);
        Ok(ev)
    }

    /// Persists a rollout's progress.
    pub(crate) fn save_rollout(&self, r: &crate::rollout::Rollout) -> Result<(), ControlError> {
        match &self.store {
            Some(s) => s.save_rollout(&r.service, r).map_err(|e| ControlError::Internal(e.to_string())),
            None => Ok(()),
        }
    }

    fn commit(&self, weights: Option<(&str, Option<&WeightMap>)>, ev: Event) -> Result<Event, ControlError> {
        match &self.store {
            Some(store) => store.commit(weights, ev).map_err(|e| {
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
            if let Err(e) = store.commit(None, ev) {
                tracing::error!(error = %e, "cannot record a refused change");
            }
        }
    }

    /// Records a refused write (best effort) and returns its error.
    fn refuse(&self, mut ev: Event, err: ControlError) -> ControlError {
        ev.outcome = "refused".into();
        ev.message = err.to_string();
        if let Some(store) = &self.store {
            if let Err(e) = store.commit(None, ev) {
                tracing::error!(error = %e, "cannot record a refused change");
            }
        }
        tracing::warn!("refused: {err}");
        err
    }
}

fn weight_map(names: &[String], weights: &[u32]) -> WeightMap {
    names.iter().cloned().zip(weights.iter().copied()).collect()
}

fn describe(names: &[String], weights: &[u32]) -> String {
    names.iter().zip(weights).map(|(n, w)| format!("{n}={w}")).collect::<Vec<_>>().join(" ")
}
