//! Asking a rollout's policy plugin: what it is told each tick (windows cut
//! at the rollout's start, totals since the rollout and the step), how its
//! answer is checked (nonsense is a fault), and the trial tick that refuses a
//! rollout whose policy cannot run. Fail-closed throughout.

use super::analysis::Judgement;
use super::evidence::{Evidence, Since};
use super::machine::Rollout;
use crate::config::rollout::{PolicyConfig, RolloutPlan, Strategy};
use crate::control::{Control, ControlError};
use crate::plugin::policy::window;
use crate::plugin::{Fault, Kind};
use crate::stats::Figures;
use switchyard_sdk::{Context, Decision, Phase};

/// Asks the rollout's policy plugin for this tick's judgement (and, for a
/// `set-weights`, the candidate's new percentage). Fail-closed: a fault holds
/// the tick, and `max_faults` faulted ticks in a row roll back; nothing but a
/// well-formed `promote` ever passes.
pub(super) async fn consult(
    ctrl: &Control,
    r: &mut Rollout,
    policy: &PolicyConfig,
    elapsed_ms: u64,
    evidence: Option<&Evidence>,
) -> (Judgement, Option<u32>) {
    let name = &policy.plugin;
    let answer = match policy_input(ctrl, r, elapsed_ms, evidence) {
        Err(why) => return (Judgement::Inconclusive(why), None),
        Ok(input) => match ctrl.shared.plugins.get(name).filter(|p| p.kind == Kind::Policy) {
            None => Err(Fault::Nonsense(format!("no policy plugin named `{name}` is loaded"))),
            Some(plugin) => {
                let config = policy.config.as_ref().unwrap_or(&plugin.config).to_string();
                let answer = crate::plugin::policy::decide_blocking(plugin, config, input).await;
                answer.and_then(|a| check_answer(a, r))
            }
        },
    };
    match answer {
        Ok((judgement, weight)) => {
            r.policy_faults = 0;
            (judgement, weight)
        }
        Err(fault) => {
            r.policy_faults += 1;
            let n = r.policy_faults;
            if n >= policy.max_faults {
                let why = format!("policy plugin {name} faulted {n} ticks in a row (last: {fault}); failing closed");
                (Judgement::Rollback(why), None)
            } else {
                (
                    Judgement::Inconclusive(format!(
                        "policy plugin {name} faulted ({n} of {}): {fault}",
                        policy.max_faults
                    )),
                    None,
                )
            }
        }
    }
}

/// Turns a policy's answer into a judgement, refusing nonsense.
fn check_answer(a: switchyard_sdk::Verdict, r: &Rollout) -> Result<(Judgement, Option<u32>), Fault> {
    let why = |default: &str| a.explanation.clone().unwrap_or_else(|| default.to_owned());
    Ok(match a.decision {
        Decision::Hold => (Judgement::Inconclusive(why("policy: hold")), None),
        Decision::Promote => (Judgement::Pass(why("policy: promote")), None),
        Decision::Rollback(reason) => (Judgement::Rollback(format!("policy: {reason}")), None),
        Decision::SetWeights(w) => {
            if r.plan.strategy != crate::config::rollout::Strategy::Canary {
                return Err(Fault::Nonsense("set-weights in a blue-green rollout".into()));
            }
            let (mut base, mut cand) = (0u64, 0u64);
            for (pool, weight) in &w {
                match pool {
                    p if *p == r.plan.baseline => base += u64::from(*weight),
                    p if *p == r.plan.candidate => cand += u64::from(*weight),
                    p => {
                        return Err(Fault::Nonsense(format!("set-weights names `{p}`, not the baseline or candidate")))
                    }
                }
            }
            if base + cand == 0 {
                return Err(Fault::Nonsense("set-weights with every weight zero".into()));
            }
            let percent = ((cand * 100 + (base + cand) / 2) / (base + cand)) as u32;
            (Judgement::Inconclusive(why(&format!("policy: candidate to {percent}%"))), Some(percent))
        }
    })
}

/// What the policy is told this tick: each pool's window since the rollout
/// started, and its totals since then and since the current weights (none
/// before the rollout runs).
fn policy_input(ctrl: &Control, r: &Rollout, elapsed_ms: u64, evidence: Option<&Evidence>) -> Result<Context, String> {
    use crate::config::rollout::Step;
    let snap = ctrl.shared.snapshot.load();
    let svc = snap.service(&r.service).ok_or("the service is gone")?;
    let span = r.plan.analysis.window;
    let stats = &ctrl.shared.stats;
    let figures = |slot: usize, since: Since| match evidence {
        Some(e) => e.window(stats, slot, span, since),
        None => Figures::default(),
    };
    let totals = |since: Since| -> Vec<_> {
        svc.pools
            .iter()
            .map(|p| window(&p.name, &evidence.map(|e| e.total(stats, p.stats_slot, since)).unwrap_or_default()))
            .collect()
    };
    let (strategy, phase) = match (r.plan.strategy, r.step) {
        // A rolling update takes no policy (refused at validation); its batches are steps.
        (Strategy::Canary | Strategy::Rolling, _) => (switchyard_sdk::Strategy::Canary, Phase::Stepping),
        (Strategy::BlueGreen, 0) => (switchyard_sdk::Strategy::BlueGreen, Phase::Preview),
        (Strategy::BlueGreen, _) => (switchyard_sdk::Strategy::BlueGreen, Phase::PostSwitch),
    };
    Ok(Context {
        service: r.service.clone(),
        strategy,
        phase,
        step: r.step as u32,
        steps: r.plan.steps.len() as u32,
        in_step_ms: r.in_step_ms + elapsed_ms,
        hold_ms: match r.plan.steps.get(r.step) {
            Some(Step::Weight { hold, .. }) => Some(hold.as_millis() as u64),
            _ => None,
        },
        interval_ms: r.plan.analysis.interval.as_millis() as u64,
        baseline: r.plan.baseline.clone(),
        candidate: r.plan.candidate.clone(),
        weights: svc.pool_names().into_iter().zip(svc.split.weights().iter().copied()).collect(),
        pre_switch: r.pre_switch.as_ref().map(|f| window(&r.plan.baseline, f)),
        faults: r.policy_faults,
        pools: svc.pools.iter().map(|p| window(&p.name, &figures(p.stats_slot, Since::Rollout))).collect(),
        rollout_totals: totals(Since::Rollout),
        step_totals: totals(Since::Step),
    })
}

/// Refuses a rollout whose policy plugin is missing, is not a policy, or
/// rejects the plan's config (one trial tick on an empty window).
pub(super) async fn check_policy(ctrl: &Control, service: &str, plan: &RolloutPlan) -> Result<(), ControlError> {
    let Some(policy) = &plan.analysis.policy else { return Ok(()) };
    let plugin = ctrl.shared.plugins.get(&policy.plugin).ok_or_else(|| {
        ControlError::BadRequest(format!("analysis.policy: no plugin named `{}` is loaded", policy.plugin))
    })?;
    if plugin.kind != Kind::Policy {
        return Err(ControlError::BadRequest(format!(
            "analysis.policy: `{}` is a router, not a policy",
            policy.plugin
        )));
    }
    let (r, _) = Rollout::start(service, plan.clone());
    let input = policy_input(ctrl, &r, 0, None).map_err(ControlError::NotFound)?;
    let config = policy.config.as_ref().unwrap_or(&plugin.config).to_string();
    match crate::plugin::policy::decide_blocking(plugin, config, input).await {
        Ok(a) => check_answer(a, &r).map(|_| ()),
        Err(f) => Err(f),
    }
    .map_err(|f| ControlError::BadRequest(format!("analysis.policy: plugin `{}` {f}", policy.plugin)))
}
