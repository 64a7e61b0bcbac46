//! Policy plugins on the control path: one fresh instance per analysis
//! tick, run on a blocking thread so a slow policy never stalls the control
//! runtime, with [`POLICY_FUEL`] of CPU and the memory cap.

use super::{classify, Fault, Plugin, POLICY_FUEL};
use crate::stats::Figures;
use bindings::switchyard::plugin::analysis as wit;
use std::sync::Arc;
use std::time::Instant;
use switchyard_sdk::policy::latency_bucket;

pub(super) mod bindings {
    wasmtime::component::bindgen!({ world: "policy", path: "../sdk/wit", imports: { default: trappable } });

    impl switchyard::plugin::log::Host for super::super::Host {
        fn write(&mut self, level: switchyard::plugin::log::Level, message: String) -> wasmtime::Result<()> {
            super::super::write_log(self, level as u8, &message)
        }
    }
    impl switchyard::plugin::analysis::Host for super::super::Host {}
}

/// Canary or blue-green, and where it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A canary stepping through weights.
    Canary,
    /// Blue-green before the switch.
    Preview,
    /// Blue-green after the switch.
    PostSwitch,
}

/// What a policy is told at a tick.
#[derive(Clone, Debug)]
pub struct Input {
    /// The service.
    pub service: String,
    /// Strategy and phase.
    pub stage: Stage,
    /// The step (blue-green: 0 before the switch, 1 after).
    pub step: u32,
    /// Steps in the plan.
    pub steps: u32,
    /// Time in the step, ms.
    pub in_step_ms: u64,
    /// The step's hold, ms.
    pub hold_ms: Option<u64>,
    /// The analysis interval, ms.
    pub interval_ms: u64,
    /// The baseline pool.
    pub baseline: String,
    /// The candidate pool.
    pub candidate: String,
    /// Weights in force.
    pub weights: Vec<(String, u32)>,
    /// Blue-green after the switch: the baseline's figures just before it.
    pub pre_switch: Option<Figures>,
    /// Consecutive faulted ticks before this one.
    pub faults: u32,
    /// Every pool's window figures.
    pub pools: Vec<(String, Figures)>,
}

/// A policy's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep going as is.
    Hold,
    /// Canary: these weights now.
    SetWeights(Vec<(String, u32)>),
    /// Advance, switch, or finish.
    Promote,
    /// Roll back, or switch back, at once.
    Rollback(String),
}

/// A decision with the policy's explanation (at most 1 KiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The decision.
    pub decision: Decision,
    /// Why, as the policy put it.
    pub explanation: Option<String>,
}

/// Runs one tick: a fresh instance, `init(config)`, `decide`. Blocks for up
/// to the CPU budget; call it from a blocking thread.
pub fn decide(plugin: &Plugin, config: &str, input: &Input) -> Result<Answer, Fault> {
    let super::Pre::Policy(pre) = &plugin.pre else {
        return Err(Fault::Nonsense(format!("`{}` is a router, not a policy", plugin.name)));
    };
    let mut store = plugin.store();
    store.set_fuel(POLICY_FUEL).map_err(|e| Fault::Trap(e.to_string()))?;
    let start = Instant::now();
    let result = (|| {
        let policy = pre.instantiate(&mut store)?;
        if let Err(msg) = policy.call_init(&mut store, config)? {
            return Ok(Err(msg));
        }
        let (ctx, pools) = to_wit(input);
        policy.call_decide(&mut store, &ctx, &pools).map(Ok)
    })();
    plugin.calls.call(start.elapsed());
    let verdict = match result {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => return Err(Fault::Error(format!("init: {msg}"))),
        Err(e) => return Err(classify(&e, store.data(), POLICY_FUEL)),
    };
    let explanation = verdict.explanation.map(|e| e.chars().take(1024).collect());
    let decision = match verdict.decision {
        wit::Decision::Hold => Decision::Hold,
        wit::Decision::Promote => Decision::Promote,
        wit::Decision::Rollback(r) => Decision::Rollback(r.chars().take(1024).collect()),
        wit::Decision::SetWeights(w) => Decision::SetWeights(w),
    };
    Ok(Answer { decision, explanation })
}

/// [`decide`] on a blocking thread, with the fault recorded against the plugin.
pub async fn decide_blocking(plugin: Arc<Plugin>, config: String, input: Input) -> Result<Answer, Fault> {
    let p = plugin.clone();
    let result = tokio::task::spawn_blocking(move || decide(&p, &config, &input))
        .await
        .unwrap_or_else(|e| Err(Fault::Trap(format!("the policy thread failed: {e}"))));
    if let Err(f) = &result {
        plugin.fault(f, "the rollout holds this tick");
    }
    result
}

/// The load-time check of a policy: one tick of an empty canary with its
/// default config. A trap, deadline or memory breach refuses it; an `init`
/// error does not (the real config comes with the rollout).
pub(super) fn trial(plugin: &Arc<Plugin>) -> Result<(), String> {
    let input = Input {
        service: "trial".into(),
        stage: Stage::Canary,
        step: 0,
        steps: 1,
        in_step_ms: 0,
        hold_ms: Some(60_000),
        interval_ms: 1_000,
        baseline: "stable".into(),
        candidate: "canary".into(),
        weights: vec![("stable".into(), 100), ("canary".into(), 0)],
        pre_switch: None,
        faults: 0,
        pools: vec![("stable".into(), Figures::default()), ("canary".into(), Figures::default())],
    };
    match decide(plugin, &plugin.config.to_string(), &input) {
        Ok(_) | Err(Fault::Error(_)) => Ok(()),
        Err(f) => Err(format!("trial decide {f}")),
    }
}

fn to_wit(i: &Input) -> (wit::Context, Vec<wit::PoolWindow>) {
    let (strategy, phase) = match i.stage {
        Stage::Canary => (wit::Strategy::Canary, wit::Phase::Stepping),
        Stage::Preview => (wit::Strategy::BlueGreen, wit::Phase::Preview),
        Stage::PostSwitch => (wit::Strategy::BlueGreen, wit::Phase::PostSwitch),
    };
    let ctx = wit::Context {
        service: i.service.clone(),
        strategy,
        phase,
        step: i.step,
        steps: i.steps,
        in_step_ms: i.in_step_ms,
        hold_ms: i.hold_ms,
        interval_ms: i.interval_ms,
        baseline: i.baseline.clone(),
        candidate: i.candidate.clone(),
        weights: i.weights.clone(),
        pre_switch: i.pre_switch.as_ref().map(|f| window(&i.baseline, f)),
        faults: i.faults,
    };
    (ctx, i.pools.iter().map(|(n, f)| window(n, f)).collect())
}

/// A pool's figures as the policy sees them, latencies on the SDK's grid.
fn window(name: &str, f: &Figures) -> wit::PoolWindow {
    let mut latency: Vec<wit::Bucket> = Vec::new();
    for &(us, n) in &f.latency {
        let upper_us = latency_bucket(us);
        match latency.last_mut() {
            Some(b) if b.upper_us == upper_us => b.count += n,
            _ => latency.push(wit::Bucket { upper_us, count: n }),
        }
    }
    wit::PoolWindow {
        name: name.to_owned(),
        requests: f.requests,
        status: f.status.to_vec(),
        connect_errors: f.errors[0],
        timeouts: f.errors[1],
        resets: f.errors[2],
        no_healthy_endpoint: f.errors[3],
        p50_us: f.p50_us,
        p90_us: f.p90_us,
        p99_us: f.p99_us,
        p999_us: f.p999_us,
        max_us: f.max_us,
        latency,
    }
}
