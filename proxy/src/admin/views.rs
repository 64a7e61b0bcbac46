//! The admin API's views: what `GET` answers say about services, rollouts,
//! pools' figures and plugins, built from the snapshot and the control path.

use super::api::*;
use crate::control::rollout::Rollout;
use crate::stats::{Figures, CLIENT_LABELS, ERROR_LABELS, MIRROR_LABELS, STATUS_LABELS};

pub(super) fn plugin_view(p: &crate::plugin::Plugin) -> PluginView {
    let s = p.calls.summary();
    PluginView {
        name: p.name.clone(),
        kind: p.kind.as_str().to_owned(),
        sha256: p.sha256.clone(),
        loaded_at: p.loaded_at.clone(),
        source: p.source.clone(),
        calls: s.calls,
        faults: s.faults,
        faults_by_kind: s.faults_by_kind.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        mean_us: s.mean_us,
        p99_us: s.p99_us,
        fuel: s.fuel,
        config: p.config.clone(),
    }
}

pub(super) fn service_view(s: &crate::data::snapshot::Service) -> ServiceView {
    use crate::config::{HostMatch, StickyKey};
    let total: u64 = s.split.weights().iter().map(|w| u64::from(*w)).sum();
    let now = crate::data::pool::clock_ms();
    let names = s.pool_names();
    let rules: Vec<String> = s
        .config
        .split
        .rules
        .iter()
        .map(|r| {
            if let Some(p) = &r.plugin {
                return format!("plugin {} → its choice", p.name);
            }
            let mut conds: Vec<String> =
                r.headers.iter().map(|(k, v)| format!("header {k}={}", v.to_str().unwrap_or("?"))).collect();
            conds.extend(r.cookies.iter().map(|(k, v)| format!("cookie {k}={v}")));
            conds.extend(r.flag.iter().map(|f| match &f.variant {
                Some(v) => format!("flag {}={v}", f.key),
                None => format!("flag {}", f.key),
            }));
            let keep = if r.keep_on_rollback { " (kept on rollback)" } else { "" };
            format!("{} → {}{keep}", conds.join(" and "), names.get(r.pool).map_or("?", String::as_str))
        })
        .collect();
    ServiceView {
        name: s.name.clone(),
        host: s.config.host.as_ref().map(|h| match h {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Wildcard(sfx) => format!("*{sfx}"),
        }),
        path_prefix: s.path_prefix.clone(),
        weights_source: if s.weights_from_api { "api" } else { "config" }.into(),
        sticky: s.config.split.sticky.as_ref().map(|k| match k {
            StickyKey::Cookie(c) => format!("cookie:{c}"),
            StickyKey::Header(h) => format!("header:{h}"),
        }),
        suspended_pools: s.suspended.iter().cloned().collect(),
        suspended_rules: s
            .split
            .suspended_rules()
            .into_iter()
            .map(|i| SuspendedRule { rule: i + 1, text: rules.get(i).cloned().unwrap_or_default() })
            .collect(),
        rules,
        pools: s
            .pools
            .iter()
            .zip(s.split.weights())
            .map(|(p, w)| PoolView {
                name: p.name.clone(),
                weight: *w,
                share_percent: if total == 0 { 0.0 } else { (f64::from(*w) * 10000.0 / total as f64).round() / 100.0 },
                endpoints: p
                    .endpoints
                    .iter()
                    .map(|e| EndpointView { address: e.addr.to_string(), healthy: e.is_available(now) })
                    .collect(),
                release: s.release(&p.name),
                source: if s.pool_sets.contains_key(&p.name) { "api" } else { "config" }.into(),
            })
            .collect(),
        mirror: s.mirror.as_ref().map(|m| MirrorView {
            pool: s.pools[m.pool].name.clone(),
            percent: m.config.percent,
            methods: m.config.methods.iter().map(|m| m.to_string()).collect(),
            source: if s.mirror_set.is_some() { "rollout" } else { "config" }.into(),
        }),
        rollout: None,
    }
}

/// A rollout as JSON, with what a person wants first: where it stands and what comes next.
pub(super) fn rollout_view(r: &Rollout) -> RolloutView {
    use crate::config::rollout::{Step, Strategy};
    let describe = |s: &Step| match s {
        Step::Weight { weight, hold } => {
            StepView { weight: Some(*weight), hold_seconds: Some(hold.as_secs_f64()), ..StepView::default() }
        }
        Step::Pause => StepView { pause: Some(true), ..StepView::default() },
        Step::Mirror { percent, hold } => {
            StepView { mirror_percent: Some(*percent), hold_seconds: Some(hold.as_secs_f64()), ..StepView::default() }
        }
    };
    let phase = |p: &str| StepView { phase: Some(p.into()), ..StepView::default() };
    let (current_step, next_step) = match r.plan.strategy {
        Strategy::Canary => (r.plan.steps.get(r.step).map(describe), r.plan.steps.get(r.step + 1).map(describe)),
        Strategy::BlueGreen if r.step == 0 => (
            Some(phase("preview")),
            Some(StepView { watch_seconds: Some(r.plan.post_switch_window.as_secs_f64()), ..phase("switched") }),
        ),
        Strategy::BlueGreen => (Some(phase("switched")), None),
        Strategy::Rolling => {
            let hold = r.plan.rolling.as_ref().map(|p| p.hold.as_secs_f64());
            let batch = |i: usize, phase: &str| {
                let b = r.rolling.as_ref()?.batches.get(i)?;
                let list = |v: &[std::net::SocketAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
                Some(StepView {
                    admit: list(&b.admit),
                    drain: list(&[&b.drain_before[..], &b.drain_after[..]].concat()),
                    hold_seconds: hold,
                    phase: Some(phase.into()),
                    ..StepView::default()
                })
            };
            let now = if r.awaiting().is_empty() { "hold" } else { "readiness" };
            (batch(r.step, now), batch(r.step + 1, "readiness"))
        }
    };
    RolloutView {
        service: r.service.clone(),
        plan: serde_json::to_value(&r.plan).unwrap_or_default(),
        status: r.status.as_str().into(),
        step: r.step,
        steps_total: r.steps_total(),
        in_step_ms: r.in_step_ms,
        time_in_step_seconds: r.in_step_ms as f64 / 1000.0,
        inconclusive_ms: r.inconclusive_ms,
        current_step,
        next_step,
        weight: r.weight,
        reason: r.reason.clone(),
        started: r.started.clone(),
        decisions: r
            .decisions
            .iter()
            .map(|d| DecisionView {
                time: d.time.clone(),
                step: d.step,
                decision: d.decision.clone(),
                why: d.why.clone(),
            })
            .collect(),
        policy_faults: r.policy_faults,
        // The pre-switch figures are for a policy; their histogram is not for people.
        pre_switch: r.pre_switch.as_ref().map(|f| {
            let mut v = serde_json::to_value(f).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.remove("latency");
            }
            v
        }),
        suspended_rules: r.suspended_rules.clone(),
    }
}

pub(super) fn figures_view(f: &Figures) -> PoolStatsView {
    let ms = |us: u64| us as f64 / 1000.0;
    PoolStatsView {
        requests: f.requests,
        status: STATUS_LABELS.iter().zip(f.status).map(|(l, n)| (l.to_string(), n)).collect(),
        errors: ERROR_LABELS.iter().zip(f.errors).map(|(l, n)| (l.to_string(), n)).collect(),
        client_errors: CLIENT_LABELS.iter().zip(f.client_errors).map(|(l, n)| (l.to_string(), n)).collect(),
        mirror: (f.mirror != [0; crate::stats::MIRROR_KINDS])
            .then(|| MIRROR_LABELS.iter().zip(f.mirror).map(|(l, n)| (l.to_string(), n)).collect()),
        error_rate: f.error_rate(),
        latency_ms: LatencyView {
            p50: ms(f.p50_us),
            p90: ms(f.p90_us),
            p99: ms(f.p99_us),
            p999: ms(f.p999_us),
            max: ms(f.max_us),
        },
    }
}

/// The flags in force, each with where it comes from (`file` or `api`).
pub(super) fn flags_view(flags: &crate::flags::FlagSet) -> serde_json::Map<String, serde_json::Value> {
    flags
        .definitions()
        .into_iter()
        .map(|(k, (def, overridden))| {
            let mut d = def.clone();
            d["source"] = if overridden { "api" } else { "file" }.into();
            (k.to_owned(), d)
        })
        .collect()
}
