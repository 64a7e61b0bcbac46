//! Rollouts as the admin API drives them: starting one, manual commands,
//! loading the stored ones (at start-up, after a hand-over, and in a fleet
//! after every change the watch applied), and starting their controllers
//! where they run (one machine: here; a fleet: on the leader).

use super::controller::{apply, lifecycle, run, save};
use super::machine::{Command, Decision, Rollout};
use super::policy::check_policy;
use super::Tracked;
use crate::config::rollout::{RolloutPlan, Strategy};
use crate::control::{Control, ControlError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

impl Control {
    /// Starts a rollout of `service` with `plan` (or the service's own plan).
    /// In a fleet, any replica may start it; the leader runs it.
    pub async fn start_rollout(
        self: &Arc<Self>,
        service: &str,
        plan: Option<RolloutPlan>,
        actor: &str,
    ) -> Result<Rollout, ControlError> {
        let ctrl = self;
        let snap = ctrl.shared.snapshot.load_full();
        let svc =
            snap.service(service).ok_or_else(|| ControlError::NotFound(format!("no service named `{service}`")))?;
        let plan = plan.or_else(|| svc.config.rollout.clone()).ok_or_else(|| {
            ControlError::BadRequest(format!("service `{service}` has no `rollout` section: send a plan in the body"))
        })?;
        check_policy(ctrl, service, &plan).await?;
        let mut active = ctrl.rollouts.lock().await;
        let stored = match active.get(service) {
            Some(h) => {
                let t = h.lock().await;
                if !t.is_done() {
                    return Err(ControlError::Conflict(format!(
                        "a rollout of `{service}` is already running; abort it first"
                    )));
                }
                t.stored.clone()
            }
            None => None,
        };
        // A new rollout gives the candidate's rules another chance.
        if !svc.suspended.is_empty() {
            ctrl.lift_suspension(service, actor, Some("a new rollout started".into())).await?;
        }
        let (mut rollout, mut decision) = Rollout::start(service, plan);
        if let Some(r) = rollout.plan.rolling.clone() {
            // The pool as it serves now is what the update starts from and a rollback restores.
            let now = svc.config.pools.iter().find(|p| p.name == r.pool).map(|p| p.endpoints.clone());
            let before = svc.pool_sets.get(&r.pool).cloned();
            decision = rollout.begin_rolling((&now.unwrap_or_default(), svc.release(&r.pool)), before);
        }
        let mut t = Tracked { rollout, stored, driven: false };
        let steps = t.steps_total();
        let strategy = match (&t.plan.strategy, &t.plan.rolling) {
            (Strategy::Rolling, Some(r)) => {
                format!("rolling update of pool {} to {} endpoint(s), {steps} batch(es)", r.pool, r.endpoints.len())
            }
            (Strategy::BlueGreen, _) => "blue-green".to_owned(),
            _ => format!("canary, {steps} step(s)"),
        };
        lifecycle(ctrl, &mut t, "rollout-start", actor, format!("rollout of {service} started ({strategy})"), None)?;
        ctrl.set_rollout_running(service, true);
        if let Err(e) = apply(ctrl, &mut t, &decision, actor, false).await {
            ctrl.set_rollout_running(service, false);
            return Err(e);
        }
        ctrl.tally.started(service, t.plan.strategy.as_str());
        let r = t.rollout.clone();
        active.insert(service.to_owned(), Arc::new(Mutex::new(t)));
        drop(active);
        ctrl.drive_rollouts().await;
        Ok(r)
    }

    /// Applies a manual command to the running rollout of `service`. In a
    /// fleet, on any replica: the command is made against the rollout as
    /// stored, retried for up to a second while the leader's controller
    /// writes progress meanwhile.
    pub async fn rollout_command(
        self: &Arc<Self>,
        service: &str,
        cmd: Command,
        actor: &str,
    ) -> Result<Rollout, ControlError> {
        let ctrl = self;
        let handle = ctrl
            .rollouts
            .lock()
            .await
            .get(service)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(format!("no rollout of `{service}` is running")))?;
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let mut t = handle.lock().await;
            match command(ctrl, &mut t, cmd, actor).await {
                Err(ControlError::Stale(why)) if Instant::now() < deadline => {
                    tracing::debug!(service, why, "rollout changed meanwhile; taking the stored one and retrying");
                    ctrl.adopt_stored(&mut t)?;
                    drop(t);
                    // Give the watch time to bring the newer row here.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                result => return result,
            }
        }
    }

    /// Loads every stored rollout (at start-up, and after a hand-over was
    /// taken back: with new handles, whose controllers start afresh), then
    /// runs those that have not ended if this replica leads. Progress spent
    /// in a step counts.
    pub async fn resume_rollouts(self: &Arc<Self>) -> Result<(), crate::Error> {
        self.load_rollouts(true).await
    }

    /// Takes what the fleet stored for every rollout (a start, a command or
    /// progress, made on any replica) into this replica's handles.
    pub(crate) async fn refresh_rollouts(self: &Arc<Self>) -> Result<(), crate::Error> {
        self.load_rollouts(false).await
    }

    async fn load_rollouts(self: &Arc<Self>, fresh: bool) -> Result<(), crate::Error> {
        let ctrl = self;
        let Some(store) = &ctrl.store else { return Ok(()) };
        let mut active = ctrl.rollouts.lock().await;
        for raw in store.rollouts()? {
            let r = parse(&raw)?;
            let (service, done) = (r.service.clone(), r.is_done());
            match active.get(&service).filter(|_| !fresh) {
                Some(h) => {
                    let mut t = h.lock().await;
                    if t.stored.as_deref() != Some(raw.as_str()) {
                        (t.rollout, t.stored) = (r, Some(raw));
                    }
                }
                None => {
                    if !done && fresh {
                        tracing::info!(service = %r.service, step = r.step, in_step_ms = r.in_step_ms, "resuming rollout");
                    }
                    let t = Tracked { rollout: r, stored: Some(raw), driven: false };
                    active.insert(service.clone(), Arc::new(Mutex::new(t)));
                }
            }
            ctrl.set_rollout_running(&service, !done);
        }
        drop(active);
        ctrl.drive_rollouts().await;
        Ok(())
    }

    /// Starts a controller for every rollout that has not ended and has
    /// none here, if this replica runs the rollouts.
    pub(crate) async fn drive_rollouts(self: &Arc<Self>) {
        if !self.leads() {
            return;
        }
        for handle in self.rollouts.lock().await.values() {
            let mut t = handle.lock().await;
            if !t.is_done() && !t.driven {
                t.driven = true;
                let (ctrl, handle) = (self.clone(), handle.clone());
                tokio::spawn(async move {
                    let service = handle.lock().await.service.clone();
                    if let Err(e) = tokio::spawn(run(ctrl, handle.clone())).await {
                        // A bug, contained: the next refresh starts another controller.
                        tracing::error!(service, error = %e, "rollout controller failed");
                        handle.lock().await.driven = false;
                    }
                });
            }
        }
    }

    /// The running or last rollout of `service`.
    pub async fn rollout(&self, service: &str) -> Option<Rollout> {
        let h = self.rollouts.lock().await.get(service).cloned()?;
        let r = h.lock().await.rollout.clone();
        Some(r)
    }

    /// Stores `t`'s progress to the moment (fenced: only while this replica leads).
    pub(crate) fn save_progress(&self, t: &mut Tracked) -> Result<(), ControlError> {
        save(self, t, true)
    }

    /// Replaces `t` with the stored rollout when that is newer than what `t` was read from.
    pub(super) fn adopt_stored(&self, t: &mut Tracked) -> Result<(), ControlError> {
        let Some(store) = &self.store else { return Ok(()) };
        let internal = |e: crate::Error| ControlError::Internal(e.to_string());
        for raw in store.rollouts().map_err(internal)? {
            let r = parse(&raw).map_err(internal)?;
            if r.service == t.service && t.stored.as_deref() != Some(raw.as_str()) {
                (t.rollout, t.stored) = (r, Some(raw));
            }
        }
        Ok(())
    }
}

/// One manual command on `t`, written under its guard; `t` is as before when it fails.
async fn command(ctrl: &Arc<Control>, t: &mut Tracked, cmd: Command, actor: &str) -> Result<Rollout, ControlError> {
    let service = t.service.clone();
    if t.is_done() {
        return Err(ControlError::Conflict(format!("the rollout of `{service}` has ended ({:?})", t.status)));
    }
    let before = t.rollout.clone();
    let decision = match cmd {
        Command::Promote { full } => t.promote(full),
        Command::Pause => t.pause(&format!("paused by {actor}")),
        Command::Resume => {
            t.resume();
            Decision::Hold
        }
        Command::Abort => t.stop(true, &format!("aborted by {actor}")),
        Command::Rollback => t.stop(false, &format!("rolled back by {actor}")),
    };
    t.record(cmd.label().to_owned(), format!("by {actor}"));
    let written = match cmd {
        Command::Resume => {
            lifecycle(ctrl, t, "rollout-resume", actor, format!("rollout of {service} resumed"), Some(false))
        }
        _ => apply(ctrl, t, &decision, actor, false).await,
    };
    if let Err(e) = written {
        t.rollout = before;
        return Err(e);
    }
    ctrl.set_rollout_running(&service, !t.is_done());
    Ok(t.rollout.clone())
}

fn parse(raw: &str) -> Result<Rollout, crate::Error> {
    serde_json::from_str(raw).map_err(|e| crate::Error::State(format!("state store: a stored rollout: {e}")))
}
