//! The controller — one task per active rollout, where rollouts run — and
//! how a rollout's changes are written. Every analysis interval it reads
//! the baseline's and the candidate's window figures (the fleet's, merged),
//! judges them, ticks the [`Rollout`] machine, applies the resulting
//! decision through the control path (a new snapshot, an event and the
//! rollout's row in one guarded write, then swapped in), checkpoints
//! progress, and notifies webhooks. Manual commands on this replica take
//! the same lock, so a person and the controller never race here; the
//! guard on the row keeps them apart across a fleet.

use super::analysis::{judge, Judgement, Observed, Pair};
use super::evidence::{Evidence, Since};
use super::machine::{Decision, Rollout};
use super::policy::consult;
use super::{ended, notify, replace, Handle, Tracked};
use crate::config::rollout::Strategy;
use crate::config::{MirrorSet, WeightMap};
use crate::control::state::{event, Change};
use crate::control::{Control, ControlError};
use crate::data::snapshot::Traffic;
use crate::plugin::policy::window;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::time::Instant;

/// Stores `t`'s row alone, under its guard.
pub(super) fn save(ctrl: &Control, t: &mut Tracked, leader: bool) -> Result<(), ControlError> {
    let row = t.row()?;
    ctrl.commit_under(&[Change::Rollout(&t.service, &row)], None, &t.guard(leader))?;
    t.stored = Some(row);
    Ok(())
}

/// The controller loop of one rollout, while this replica runs the rollouts.
pub(super) async fn run(ctrl: Arc<Control>, handle: Handle) {
    drive(&ctrl, &handle).await;
    handle.lock().await.driven = false;
}

async fn drive(ctrl: &Arc<Control>, handle: &Handle) {
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
        let mut slots: Vec<usize> =
            snap.service(&r.service).map(|s| s.pools.iter().map(|p| p.stats_slot).collect()).unwrap_or_default();
        if r.plan.rolling.is_some() {
            // A rolling update judges the pool's new endpoints against its old ones.
            slots.extend([&r.plan.baseline, &r.plan.candidate].map(|g| stats.slot(&r.service, g)));
        }
        Evidence::new(&stats, &slots, (r.step, r.weight))
    };
    let mut probes = replace::Probes::default();
    loop {
        ticker.tick().await;
        let elapsed = last.elapsed().as_millis() as u64;
        last = Instant::now();
        ticks += 1;
        let mut t = handle.lock().await;
        if t.is_done() || ctrl.epoch() != epoch {
            return;
        }
        if !ctrl.leads() {
            tracing::info!(service = %t.service, "fleet: this replica no longer leads; its controller stops");
            return;
        }
        // A person's promote may have moved the weights since the last tick.
        evidence.follow(&stats, (t.step, t.weight));
        evidence.update(&stats);
        let (judgement, weight) = match t.plan.analysis.policy.clone() {
            None => (analyse(ctrl, &t, &evidence), None),
            Some(policy) => consult(ctrl, &mut t, &policy, elapsed, Some(&evidence)).await,
        };
        let before = t.rollout.clone();
        let progress_before = before.in_step_ms;
        let mut decision = t.tick(elapsed, &judgement);
        if let (Decision::Hold, Some(w)) = (&decision, weight) {
            decision = t.set_weight(w);
        }
        if let (Decision::Hold, Some(r), false) = (&decision, t.plan.rolling.clone(), t.awaiting().is_empty()) {
            let awaiting = t.awaiting().to_vec();
            if probes.ready(ctrl, (&t.service, &r.pool), &awaiting, &r.readiness).await {
                decision = t.admit();
            }
        }
        let why = judgement.why().to_owned();
        // Decisions are saved at once; mere progress once per second of step
        // time (each save is an fsync), so a crash loses under a second of hold.
        let checkpoint = decision != Decision::Hold || t.in_step_ms / CHECKPOINT_MS != progress_before / CHECKPOINT_MS;
        if decision != Decision::Hold {
            t.record(describe(&decision), why);
        } else if ticks.is_multiple_of(sample_every) {
            t.record(hold_label(&judgement), why);
        }
        let written = match checkpoint {
            true => apply(ctrl, &mut t, &decision, ended::CONTROLLER, true).await,
            false => Ok(()),
        };
        match written {
            Ok(()) => {}
            Err(ControlError::Stale(why)) => {
                // Deposed, or a command made on another replica meanwhile:
                // nothing was written; take the stored rollout and go on.
                t.rollout = before;
                if !ctrl.leads() {
                    tracing::warn!(service = %t.service, why, "fleet: a decision was fenced off; this replica no longer leads");
                    return;
                }
                if let Err(e) = ctrl.adopt_stored(&mut t) {
                    tracing::error!(service = %t.service, error = %e, "cannot read the stored rollout");
                }
            }
            Err(ControlError::Unavailable(why)) => {
                // The fleet's etcd is away: hold (nothing was written) until it is back.
                t.rollout = before;
                tracing::warn!(service = %t.service, why, "fleet: etcd unreachable; the rollout holds");
            }
            Err(e) if decision != Decision::Hold => {
                tracing::error!(service = %t.service, error = %e, "rollout cannot apply its decision; pausing");
                t.rollout = before;
                let pause = t.pause(&format!("cannot apply a decision: {e}"));
                t.record(describe(&pause), e.to_string());
                if let Err(e) = apply(ctrl, &mut t, &pause, ended::CONTROLLER, true).await {
                    tracing::error!(service = %t.service, error = %e, "cannot persist the pause either");
                }
            }
            Err(e) => tracing::error!(service = %t.service, error = %e, "cannot persist rollout progress"),
        }
        evidence.follow(&stats, (t.step, t.weight));
        if t.is_done() {
            ctrl.set_rollout_running(&t.service, false);
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
    // A rolling update's baseline and candidate are its pool's old and new endpoints.
    let group = |name: &str| r.plan.rolling.is_some().then(|| ctrl.shared.stats.slot(&r.service, name));
    let slot = |name: &str| svc.pools.iter().find(|p| p.name == name).map(|p| p.stats_slot).or_else(|| group(name));
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

/// Carries out a decision and stores the rollout's row with it, in one
/// guarded write: weights through the control path (plus webhooks), a pause
/// as a lifecycle event, a hold as a progress checkpoint. `leader`: the
/// controller's write, fenced on this replica's leadership.
pub(super) async fn apply(
    ctrl: &Arc<Control>,
    t: &mut Tracked,
    decision: &Decision,
    actor: &str,
    leader: bool,
) -> Result<(), ControlError> {
    let (base, cand) = (t.plan.baseline.clone(), t.plan.candidate.clone());
    let service = t.service.clone();
    let rolling = t.plan.strategy == Strategy::Rolling;
    let (weight, message) = match decision {
        Decision::Hold => return save(ctrl, t, leader),
        Decision::SetEndpoints | Decision::Promote | Decision::Rollback(_) if rolling => {
            return replace::apply(ctrl, t, decision, actor, leader).await
        }
        Decision::SetEndpoints => return save(ctrl, t, leader),
        Decision::SetWeight(w) => (Some(*w), format!("rollout of {service}: {cand} at {w}% (step {})", t.step + 1)),
        Decision::Promote => (Some(100), format!("rollout of {service} promoted: {cand} has all traffic")),
        Decision::Rollback(why) => (Some(0), format!("rollout of {service} ended, all traffic on {base}: {why}")),
        Decision::Pause(why) => (None, format!("rollout of {service} paused: {why}")),
    };
    let Some(w) = weight else {
        return lifecycle(ctrl, t, "rollout-pause", actor, message, Some(leader));
    };
    let snap = ctrl.shared.snapshot.load_full();
    if t.plan.strategy == Strategy::BlueGreen && w == 100 && t.step == 1 && t.plan.analysis.policy.is_some() {
        // The switch: keep the live pool's figures for the post-switch policy.
        let slot = snap.service(&service).and_then(|s| s.pools.iter().find(|p| p.name == base)).map(|p| p.stats_slot);
        t.pre_switch = slot.map(|s| {
            let mut f = ctrl.shared.stats.fleet_recent(s, t.plan.analysis.window);
            f.latency = window(&base, &f).latency; // the policy's grid: a few hundred buckets at most
            f
        });
    }
    // A rollback takes every route off the candidate: its rules are
    // suspended in the same snapshot swap as the weights.
    let suspend: Option<BTreeSet<String>> = matches!(decision, Decision::Rollback(_)).then(|| [cand.clone()].into());
    if let Some(pools) = &suspend {
        let next = snap.with_traffic(&service, Traffic { suspended: Some(pools), ..Traffic::default() });
        t.suspended_rules = next.as_ref().and_then(|n| n.service(&service)).map(|s| s.split.suspended_rules());
    }
    // A mirror step copies the baseline's requests to the candidate; any other state copies none.
    let mirror = t.mirroring().map(|percent| MirrorSet { pool: cand.clone(), percent });
    let weights: WeightMap = [(base, 100 - w), (cand, w)].into();
    let (row, guard) = (t.row()?, t.guard(leader));
    let traffic = (weights, mirror.as_ref());
    let ev = ctrl.rollout_traffic(&service, traffic, suspend.as_ref(), (actor, message), (&row, &guard)).await?;
    t.written(ctrl, row, &ev, actor, leader);
    Ok(())
}

/// Records a rollout event that changes no weights, under `t`'s guard (so
/// nothing is recorded when the rollout changed meanwhile), with the
/// rollout's row when `row_of` says whose write it is (`Some(leader)`), and
/// notifies webhooks.
pub(super) fn lifecycle(
    ctrl: &Control,
    t: &mut Tracked,
    kind: &str,
    actor: &str,
    message: String,
    row_of: Option<bool>,
) -> Result<(), ControlError> {
    let mut ev = event(kind, Some(&t.service), actor, None);
    ev.message = message;
    ev.new = serde_json::json!({ "status": t.status, "step": t.step, "weight": t.weight });
    let row = row_of.map(|_| t.row()).transpose()?;
    let changes: Vec<Change> = row.iter().map(|r| Change::Rollout(&t.service, r)).collect();
    let stored = ctrl.commit_under(&changes, Some(ev.clone()), &t.guard(row_of.unwrap_or(false)))?;
    if row.is_some() {
        t.stored = row;
    }
    let ev = stored.unwrap_or(ev);
    tracing::info!(service = %t.service, "{}", ev.message);
    notify::send(&t.plan.webhooks, &ev, ctrl.webhook_ca().as_deref());
    Ok(())
}

fn describe(a: &Decision) -> String {
    match a {
        Decision::Hold => "hold".into(),
        Decision::SetWeight(w) => format!("set-weights {w}%"),
        Decision::Promote => "promote".into(),
        Decision::Rollback(_) => "rollback".into(),
        Decision::Pause(_) => "pause".into(),
        Decision::SetEndpoints => "set-endpoints".into(),
    }
}

/// A sampled hold, with why it holds: a pass (a policy's promote included)
/// waits for the step's hold time; anything else for better evidence.
fn hold_label(v: &Judgement) -> String {
    match v {
        Judgement::Pass(_) => "hold (pass: until the step's hold is done)".into(),
        v => format!("hold ({})", verdict_name(v)),
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
    use crate::control::rollout::{Command, Status};
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
