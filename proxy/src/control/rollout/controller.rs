//! Rollouts through the control path: starting one, manual commands, its
//! status, resuming stored ones, and the controller — one task per active
//! rollout. Every analysis interval
//! it reads the baseline's and the candidate's window figures, judges them,
//! ticks the [`Rollout`] machine, applies the resulting decision through
//! [`Control::set_weights`] (a new snapshot, an event, durable, then swapped
//! in), persists the progress, and notifies webhooks. Manual commands take
//! the same lock, so a person and the controller never race.

use super::analysis::{judge, Judgement, Observed, Pair};
use super::evidence::{Evidence, Since};
use super::machine::{Command, Decision, Rollout};
use super::policy::{check_policy, consult};
use super::{notify, Handle};
use crate::config::rollout::{RolloutPlan, Strategy};
use crate::config::WeightMap;
use crate::control::state::event;
use crate::control::{Control, ControlError};
use crate::plugin::policy::window;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio::time::Instant;

impl Control {
    /// Starts a rollout of `service` with `plan` (or the service's own plan).
    pub async fn start_rollout(
        self: &Arc<Self>,
        service: &str,
        plan: Option<RolloutPlan>,
        actor: &str,
    ) -> Result<Rollout, ControlError> {
        let ctrl = self;
        if ctrl.config().fleet.is_some() {
            return Err(ControlError::Conflict(
                "rollouts are not run in fleet mode yet: they need the fleet's elected leader to run them once \
                 for all replicas; set weights through the API instead"
                    .into(),
            ));
        }
        let snap = ctrl.shared.snapshot.load_full();
        let svc =
            snap.service(service).ok_or_else(|| ControlError::NotFound(format!("no service named `{service}`")))?;
        let plan = plan.or_else(|| svc.config.rollout.clone()).ok_or_else(|| {
            ControlError::BadRequest(format!("service `{service}` has no `rollout` section: send a plan in the body"))
        })?;
        check_policy(ctrl, service, &plan).await?;
        let mut active = ctrl.rollouts.lock().await;
        if let Some(h) = active.get(service) {
            if !h.lock().await.is_done() {
                return Err(ControlError::Conflict(format!(
                    "a rollout of `{service}` is already running; abort it first"
                )));
            }
        }
        // A new rollout gives the candidate's rules another chance.
        if !svc.suspended.is_empty() {
            ctrl.lift_suspension(service, actor, Some("a new rollout started".into())).await?;
        }
        let (mut r, decision) = Rollout::start(service, plan);
        let steps = r.plan.steps.len();
        let strategy = match r.plan.strategy {
            crate::config::rollout::Strategy::Canary => format!("canary, {steps} step(s)"),
            crate::config::rollout::Strategy::BlueGreen => "blue-green".to_owned(),
        };
        lifecycle(ctrl, &r, "rollout-start", actor, format!("rollout of {service} started ({strategy})"))?;
        ctrl.set_rollout_running(service, true);
        if let Err(e) = apply(ctrl, &mut r, &decision, actor).await.and_then(|()| ctrl.save_rollout(&r)) {
            ctrl.set_rollout_running(service, false);
            return Err(e);
        }
        let handle: Handle = Arc::new(Mutex::new(r.clone()));
        active.insert(service.to_owned(), handle.clone());
        tokio::spawn(run(ctrl.clone(), handle));
        Ok(r)
    }

    /// Applies a manual command to the running rollout of `service`.
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
        let mut r = handle.lock().await;
        if r.is_done() {
            return Err(ControlError::Conflict(format!("the rollout of `{service}` has ended ({:?})", r.status)));
        }
        let before = r.clone();
        let decision = match cmd {
            Command::Promote { full } => r.promote(full),
            Command::Pause => r.pause(&format!("paused by {actor}")),
            Command::Resume => {
                r.resume();
                Decision::Hold
            }
            Command::Abort => r.stop(true, &format!("aborted by {actor}")),
            Command::Rollback => r.stop(false, &format!("rolled back by {actor}")),
        };
        let what = format!("{cmd:?}").to_lowercase();
        r.record(what.clone(), format!("by {actor}"));
        if let Err(e) = apply(ctrl, &mut r, &decision, actor).await {
            *r = before;
            return Err(e);
        }
        if matches!(cmd, Command::Resume) {
            lifecycle(ctrl, &r, "rollout-resume", actor, format!("rollout of {service} resumed"))?;
        }
        ctrl.set_rollout_running(service, !r.is_done());
        ctrl.save_rollout(&r)?;
        Ok(r.clone())
    }

    /// Resumes every stored rollout that had not ended (after a restart or
    /// a hand-over), with the time already spent in its step counted.
    pub async fn resume_rollouts(self: &Arc<Self>) -> Result<(), crate::Error> {
        let ctrl = self;
        let Some(store) = &ctrl.store else { return Ok(()) };
        if ctrl.config().fleet.is_some() {
            return Ok(()); // no rollout runs in fleet mode (see `start_rollout`)
        }
        let stored = store
            .rollouts()?
            .into_iter()
            .map(serde_json::from_value::<Rollout>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| crate::Error::State(format!("state store: a stored rollout: {e}")))?;
        let mut active = ctrl.rollouts.lock().await;
        for r in stored {
            let done = r.is_done();
            if !done {
                tracing::info!(service = %r.service, step = r.step, in_step_ms = r.in_step_ms, "resuming rollout");
            }
            let handle: Handle = Arc::new(Mutex::new(r.clone()));
            active.insert(r.service.clone(), handle.clone());
            ctrl.set_rollout_running(&r.service, !done);
            if !done {
                tokio::spawn(run(ctrl.clone(), handle));
            }
        }
        Ok(())
    }

    /// The running or last rollout of `service`.
    pub async fn rollout(&self, service: &str) -> Option<Rollout> {
        let h = self.rollouts.lock().await.get(service).cloned()?;
        let r = h.lock().await.clone();
        Some(r)
    }
}

/// The controller loop of one rollout.
async fn run(ctrl: Arc<Control>, handle: Handle) {
    let epoch = ctrl.epoch();
    let interval = handle.lock().await.plan.analysis.interval;
    let sample_every = (10_000 / interval.as_millis().max(1)).max(1) as u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = Instant::now();
    let mut ticks = 0u64;
    let stats = ctrl.shared.stats.clone();
    let mut evidence = {
        let r = handle.lock().await;
        let snap = ctrl.shared.snapshot.load();
        let slots: Vec<usize> =
            snap.service(&r.service).map(|s| s.pools.iter().map(|p| p.stats_slot).collect()).unwrap_or_default();
        Evidence::new(&stats, &slots, (r.step, r.weight))
    };
    loop {
        ticker.tick().await;
        let elapsed = last.elapsed().as_millis() as u64;
        last = Instant::now();
        ticks += 1;
        let mut r = handle.lock().await;
        if r.is_done() || ctrl.epoch() != epoch {
            return;
        }
        // A person's promote may have moved the weights since the last tick.
        evidence.follow(&stats, (r.step, r.weight));
        evidence.update(&stats);
        let (judgement, weight) = match r.plan.analysis.policy.clone() {
            None => (analyse(&ctrl, &r, &evidence), None),
            Some(policy) => consult(&ctrl, &mut r, &policy, elapsed, Some(&evidence)).await,
        };
        let before = r.clone();
        let progress_before = before.in_step_ms;
        let mut decision = r.tick(elapsed, &judgement);
        if let (Decision::Hold, Some(w)) = (&decision, weight) {
            decision = r.set_weight(w);
        }
        let why = judgement.why().to_owned();
        if decision != Decision::Hold {
            r.record(describe(&decision), why);
            if let Err(e) = apply(&ctrl, &mut r, &decision, "rollout").await {
                tracing::error!(service = %r.service, error = %e, "rollout cannot apply its decision; pausing");
                *r = before;
                let pause = r.pause(&format!("cannot apply a decision: {e}"));
                r.record(describe(&pause), e.to_string());
            }
        } else if ticks.is_multiple_of(sample_every) {
            r.record(format!("hold ({})", verdict_name(&judgement)), why);
        }
        evidence.follow(&stats, (r.step, r.weight));
        // Decisions are saved at once; mere progress once per second of step
        // time (each save is an fsync), so a crash loses under a second of hold.
        let checkpoint = decision != Decision::Hold || r.in_step_ms / CHECKPOINT_MS != progress_before / CHECKPOINT_MS;
        if checkpoint {
            if let Err(e) = ctrl.save_rollout(&r) {
                tracing::error!(service = %r.service, error = %e, "cannot persist rollout progress");
            }
        }
        if r.is_done() {
            ctrl.set_rollout_running(&r.service, false);
            return;
        }
    }
}

/// How much hold time may pass between progress checkpoints.
const CHECKPOINT_MS: u64 = 1_000;

/// Judges the rollout's pools on what the current weights produced.
fn analyse(ctrl: &Control, r: &Rollout, evidence: &Evidence) -> Judgement {
    let snap = ctrl.shared.snapshot.load();
    let Some(svc) = snap.service(&r.service) else {
        return Judgement::Inconclusive("the service is gone".into());
    };
    let slot = |name: &str| svc.pools.iter().find(|p| p.name == name).map(|p| p.stats_slot);
    let (Some(b), Some(c)) = (slot(&r.plan.baseline), slot(&r.plan.candidate)) else {
        return Judgement::Inconclusive("a pool of the plan is gone".into());
    };
    let (stats, span) = (&ctrl.shared.stats, r.plan.analysis.window);
    let pair = |since| Pair {
        candidate: evidence.window(stats, c, span, since),
        baseline: evidence.window(stats, b, span, since),
    };
    let sequential = r.plan.analysis.method == crate::config::rollout::Method::Sequential;
    let totals = |since| match sequential {
        true => Pair { candidate: evidence.total(stats, c, since), baseline: evidence.total(stats, b, since) },
        false => Pair::default(),
    };
    let observed = Observed {
        since_rollout: pair(Since::Rollout),
        since_step: pair(Since::Step),
        rollout_totals: totals(Since::Rollout),
        step_totals: totals(Since::Step),
    };
    judge(&r.plan.analysis, &observed)
}

/// Carries out an decision: weights through the control path, plus a history
/// event and webhooks for lifecycle changes.
async fn apply(ctrl: &Arc<Control>, r: &mut Rollout, decision: &Decision, actor: &str) -> Result<(), ControlError> {
    let (base, cand) = (r.plan.baseline.clone(), r.plan.candidate.clone());
    let service = r.service.clone();
    let (weight, message) = match decision {
        Decision::Hold => return Ok(()),
        Decision::SetWeight(w) => (Some(*w), format!("rollout of {service}: {cand} at {w}% (step {})", r.step + 1)),
        Decision::Promote => (Some(100), format!("rollout of {service} promoted: {cand} has all traffic")),
        Decision::Rollback(why) => (Some(0), format!("rollout of {service} ended, all traffic on {base}: {why}")),
        Decision::Pause(why) => (None, format!("rollout of {service} paused: {why}")),
    };
    if let Some(w) = weight {
        if r.plan.strategy == Strategy::BlueGreen && w == 100 && r.step == 1 && r.plan.analysis.policy.is_some() {
            // The switch: keep the live pool's figures for the post-switch policy.
            let snap = ctrl.shared.snapshot.load();
            let slot =
                snap.service(&service).and_then(|s| s.pools.iter().find(|p| p.name == base)).map(|p| p.stats_slot);
            r.pre_switch = slot.map(|s| {
                let mut f = ctrl.shared.stats.recent(s, Some(r.plan.analysis.window));
                f.latency = window(&base, &f).latency; // the policy's grid: a few hundred buckets at most
                f
            });
        }
        // A rollback takes every route off the candidate: its rules are
        // suspended in the same snapshot swap as the weights.
        let suspend: Option<BTreeSet<String>> =
            matches!(decision, Decision::Rollback(_)).then(|| [cand.clone()].into());
        let weights: WeightMap = [(base, 100 - w), (cand, w)].into();
        let ev = ctrl.rollout_traffic(&service, weights, suspend.as_ref(), actor, Some(message.clone())).await?;
        if suspend.is_some() {
            r.suspended_rules = ev.new.get("suspended_rules").and_then(|v| serde_json::from_value(v.clone()).ok());
        }
        notify::send(&r.plan.webhooks, &ev);
    } else {
        lifecycle(ctrl, r, "rollout-pause", actor, message)?;
    }
    Ok(())
}

/// Records a rollout event that changes no weights, and notifies webhooks.
fn lifecycle(ctrl: &Control, r: &Rollout, kind: &str, actor: &str, message: String) -> Result<(), ControlError> {
    let mut ev = event(kind, Some(&r.service), actor, None);
    ev.message = message;
    ev.new = serde_json::json!({ "status": r.status, "step": r.step, "weight": r.weight });
    let ev = ctrl.commit(&[], ev)?;
    tracing::info!(service = %r.service, "{}", ev.message);
    notify::send(&r.plan.webhooks, &ev);
    Ok(())
}

fn describe(a: &Decision) -> String {
    match a {
        Decision::Hold => "hold".into(),
        Decision::SetWeight(w) => format!("set-weights {w}%"),
        Decision::Promote => "promote".into(),
        Decision::Rollback(_) => "rollback".into(),
        Decision::Pause(_) => "pause".into(),
    }
}

fn verdict_name(v: &Judgement) -> &'static str {
    match v {
        Judgement::Breach(_) => "breach",
        Judgement::Pass(_) => "pass",
        Judgement::Fail(_) => "fail",
        Judgement::Inconclusive(_) => "inconclusive",
        Judgement::Rollback(_) => "rollback",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rollout::Status;
    use crate::{stats, Config, Options, Proxy};
    use std::time::Duration;

    /// The real controller, stats and state store on tokio's paused clock: a
    /// four-step canary with an hour of holds and a gate runs in well under a second.
    #[tokio::test(start_paused = true)]
    async fn four_step_canary_runs_to_promotion_on_paused_time() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
listeners: [{ name: l, bind: "127.0.0.1:0" }]
state: { dir: state }
services:
  - name: checkout
    pools:
      stable: { endpoints: ["127.0.0.1:1"] }
      canary: { endpoints: ["127.0.0.1:2"] }
    split: { weights: { stable: 95, canary: 5 } }
    rollout:
      steps:
        - { weight: 5,  hold: 15m }
        - { weight: 25, hold: 15m }
        - pause: {}
        - { weight: 50, hold: 30m }
      analysis:
        interval: 5s
        window: 30s
        min_requests: 200
        success: { max_error_rate: 0.001, max_p99: 2s }
        rollback_when: { error_rate_above: 0.01, p99_above: 5s }
"#;
        let config = Config::from_yaml(yaml, dir.path()).unwrap();
        let proxy = Proxy::new(config, Options::default()).unwrap();
        let ctrl = proxy.control();
        let r = ctrl.start_rollout("checkout", None, "test").await.unwrap();
        assert_eq!(r.weight, 5);
        let slots: Vec<usize> =
            ctrl.shared.snapshot.load().service("checkout").unwrap().pools.iter().map(|p| p.stats_slot).collect();
        let mut gate_seen = false;
        for second in 0..2 * 3600 {
            // Healthy traffic on both pools: 20 requests a second each, 3 ms.
            for &slot in &slots {
                for _ in 0..20 {
                    stats::record(slot, Duration::from_millis(3), 200, None);
                }
            }
            ctrl.shared.stats.add(stats::take_local());
            tokio::time::advance(Duration::from_secs(1)).await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            let r = ctrl.rollout("checkout").await.unwrap();
            if r.step == 2 && !gate_seen {
                gate_seen = true;
                assert!(second >= 30 * 60, "reached the gate after 30 minutes of holds, at {second} s");
                assert_eq!(r.weight, 25);
                ctrl.rollout_command("checkout", Command::Promote { full: false }, "ops").await.unwrap();
            }
            if r.status == Status::Promoted {
                assert!(gate_seen);
                assert!(second >= 60 * 60, "promoted only after every hold: {second} s");
                let svc = ctrl.shared.snapshot.load().service("checkout").unwrap().clone();
                assert_eq!(svc.split.weights(), &[100, 0], "canary has all traffic");
                let events = ctrl.store.as_ref().unwrap().events(0, 100).unwrap();
                assert!(events
                    .iter()
                    .any(|e| e.reason.as_deref().is_some_and(|r| r.contains("canary at 25% (step 2)"))));
                return;
            }
        }
        panic!("not promoted: {:?}", ctrl.rollout("checkout").await.unwrap().status);
    }

    /// Healthy history must not dilute the judgement: a canary that served
    /// healthy traffic for 30 s before its rollout, then starts failing
    /// (30 % errors against a 5 % limit), is rolled back within two
    /// intervals — on a 30 s sliding window it took about six.
    #[tokio::test(start_paused = true)]
    async fn traffic_from_before_the_rollout_does_not_dilute_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = r#"
listeners: [{ name: l, bind: "127.0.0.1:0" }]
services:
  - name: web
    pools:
      stable: { endpoints: ["127.0.0.1:1"] }
      canary: { endpoints: ["127.0.0.1:2"] }
    split: { weights: { stable: 90, canary: 10 } }
    rollout:
      steps: [{ weight: 10, hold: 1h }]
      analysis:
        interval: 1s
        window: 30s
        min_requests: 20
        rollback_when: { error_rate_above: 0.05, min_requests: 10 }
"#;
        let config = Config::from_yaml(yaml, dir.path()).unwrap();
        let proxy = Proxy::new(config, Options::default()).unwrap();
        let ctrl = proxy.control();
        let slot = |name: &str| {
            ctrl.shared
                .snapshot
                .load()
                .service("web")
                .unwrap()
                .pools
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .stats_slot
        };
        let (stable, canary) = (slot("stable"), slot("canary"));
        // One second of traffic: 90 requests on stable, 10 on the canary, `failing` of them 503.
        let second = |failing: u64| {
            for i in 0..100u64 {
                let (slot, status) =
                    if i < 90 { (stable, 200) } else { (canary, if i - 90 < failing { 503 } else { 200 }) };
                stats::record(slot, Duration::from_millis(3), status, None);
            }
            ctrl.shared.stats.add(stats::take_local());
        };
        let tick = || async {
            tokio::time::advance(Duration::from_secs(1)).await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        };
        for _ in 0..30 {
            second(0);
            tick().await;
        }
        ctrl.start_rollout("web", None, "test").await.unwrap();
        for _ in 0..5 {
            second(0);
            tick().await;
        }
        assert_eq!(ctrl.rollout("web").await.unwrap().status, Status::Running, "healthy so far");
        for elapsed in 1..=10 {
            second(3);
            tick().await;
            if ctrl.rollout("web").await.unwrap().status == Status::RolledBack {
                assert!(elapsed <= 2, "rolled back {elapsed} intervals after the failures began");
                return;
            }
        }
        panic!("not rolled back: {:?}", ctrl.rollout("web").await.unwrap());
    }
}
