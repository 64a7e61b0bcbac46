//! Policy plugins on the control path: one fresh instance per analysis
//! tick, run on a blocking thread so a slow policy never stalls the control
//! runtime, with [`POLICY_FUEL`] of CPU and the memory cap.

use super::{classify, Fault, Plugin, POLICY_FUEL};
use crate::error::Error;
use crate::stats::Figures;
use bindings::switchyard::plugin::analysis as wit;
use std::sync::Arc;
use std::time::Instant;
use switchyard_sdk::policy::latency_bucket;
use switchyard_sdk::{Context, Decision, Phase, PoolWindow, Strategy, Verdict};

pub(super) mod bindings {
    wasmtime::component::bindgen!({ world: "policy", path: "../sdk/wit", imports: { default: trappable } });

    impl switchyard::plugin::log::Host for super::super::Host {
        fn write(&mut self, level: switchyard::plugin::log::Level, message: String) -> wasmtime::Result<()> {
            super::super::write_log(self, level as u8, &message)
        }
    }
    impl switchyard::plugin::analysis::Host for super::super::Host {}

    impl switchyard::plugin::totals::Host for super::super::Host {
        fn get(
            &mut self,
            pool: String,
            since: switchyard::plugin::totals::Since,
        ) -> wasmtime::Result<Option<switchyard::plugin::analysis::PoolWindow>> {
            use self::switchyard::plugin::totals::Since;
            let Some(t) = &self.totals else { return Ok(None) };
            let list = match since {
                Since::Rollout => &t.rollout,
                Since::Step => &t.step,
            };
            Ok(list.iter().find(|w| w.name == pool).cloned())
        }
    }
}

/// One tick's totals, as the `totals` import hands them out.
pub(super) struct Totals {
    rollout: Vec<wit::PoolWindow>,
    step: Vec<wit::PoolWindow>,
}

/// Runs one tick: a fresh instance, `init(config)`, `decide`. Blocks for up
/// to the CPU budget; call it from a blocking thread.
pub fn decide(plugin: &Plugin, config: &str, input: &Context) -> Result<Verdict, Fault> {
    let super::Pre::Policy(pre) = &plugin.pre else {
        return Err(Fault::Nonsense(format!("`{}` is a router, not a policy", plugin.name)));
    };
    let mut store = plugin.store();
    store.data_mut().totals = Some(Totals {
        rollout: input.rollout_totals.iter().map(to_wit_window).collect(),
        step: input.step_totals.iter().map(to_wit_window).collect(),
    });
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
    plugin.calls.call(Some(start.elapsed()), POLICY_FUEL - store.get_fuel().unwrap_or(0));
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
    Ok(Verdict { decision, explanation })
}

/// [`decide`] on a blocking thread, with the fault recorded against the plugin.
pub async fn decide_blocking(plugin: Arc<Plugin>, config: String, input: Context) -> Result<Verdict, Fault> {
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
pub(super) fn trial(plugin: &Arc<Plugin>) -> Result<(), Error> {
    match try_config(plugin, &plugin.config.to_string()) {
        Ok(()) | Err(Fault::Error(_)) => Ok(()),
        Err(f) => Err(Error::Plugin(format!("trial decide {f}"))),
    }
}

/// One tick of an empty canary with `config`: whatever `init` or `decide`
/// refuses (`check` asks this of a plan's policy config).
pub fn try_config(plugin: &Plugin, config: &str) -> Result<(), Fault> {
    let input = Context {
        service: "trial".into(),
        strategy: Strategy::Canary,
        phase: Phase::Stepping,
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
        pools: vec![window("stable", &Figures::default()), window("canary", &Figures::default())],
        rollout_totals: vec![],
        step_totals: vec![],
    };
    decide(plugin, config, &input).map(|_| ())
}

fn to_wit(c: &Context) -> (wit::Context, Vec<wit::PoolWindow>) {
    let ctx = wit::Context {
        service: c.service.clone(),
        strategy: match c.strategy {
            Strategy::Canary => wit::Strategy::Canary,
            Strategy::BlueGreen => wit::Strategy::BlueGreen,
        },
        phase: match c.phase {
            Phase::Stepping => wit::Phase::Stepping,
            Phase::Preview => wit::Phase::Preview,
            Phase::PostSwitch => wit::Phase::PostSwitch,
        },
        step: c.step,
        steps: c.steps,
        in_step_ms: c.in_step_ms,
        hold_ms: c.hold_ms,
        interval_ms: c.interval_ms,
        baseline: c.baseline.clone(),
        candidate: c.candidate.clone(),
        weights: c.weights.clone(),
        pre_switch: c.pre_switch.as_ref().map(to_wit_window),
        faults: c.faults,
    };
    (ctx, c.pools.iter().map(to_wit_window).collect())
}

fn to_wit_window(w: &PoolWindow) -> wit::PoolWindow {
    wit::PoolWindow {
        name: w.name.clone(),
        requests: w.requests,
        status: w.status.to_vec(),
        connect_errors: w.connect_errors,
        timeouts: w.timeouts,
        resets: w.resets,
        no_healthy_endpoint: w.no_healthy_endpoint,
        p50_us: w.p50_us,
        p90_us: w.p90_us,
        p99_us: w.p99_us,
        p999_us: w.p999_us,
        max_us: w.max_us,
        latency: w.latency.iter().map(|&(upper_us, count)| wit::Bucket { upper_us, count }).collect(),
    }
}

/// A pool's window figures as a policy sees them, latencies on the SDK's grid.
pub fn window(name: &str, f: &Figures) -> PoolWindow {
    let mut latency: Vec<(u64, u64)> = Vec::new();
    for &(us, n) in &f.latency {
        let upper = latency_bucket(us);
        match latency.last_mut() {
            Some(b) if b.0 == upper => b.1 += n,
            _ => latency.push((upper, n)),
        }
    }
    PoolWindow {
        name: name.to_owned(),
        requests: f.requests,
        status: f.status,
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
