//! What a rollout's end records: a `rollout-end` event whose `new` is the
//! deployment as release reviews count it (outcome, versions, duration,
//! who rolled back, time to restore), and the deployment metrics. The
//! deployment report is built from these events.

use super::{Rollout, Tracked};
use crate::control::state::{event, Guard};
use crate::control::Control;
use serde::{Deserialize, Serialize};

/// The controller's actor name: decisions no person made.
pub const CONTROLLER: &str = "rollout";

/// A finished rollout, as its `rollout-end` event carries it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// `promoted`, `rolled-back` or `aborted`.
    pub status: String,
    /// `canary` or `blue-green`.
    pub strategy: String,
    /// The pool traffic moved from.
    pub baseline: String,
    /// The pool traffic moved to.
    pub candidate: String,
    /// What the candidate ran (its pool's release when it ended).
    #[serde(default)]
    pub version: Option<String>,
    /// The candidate's commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// When that commit was made: what lead time counts from.
    #[serde(default)]
    pub commit_time: Option<String>,
    /// What the baseline ran.
    #[serde(default)]
    pub baseline_version: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// Start to end, seconds.
    pub duration_seconds: f64,
    /// `none` (promoted), `auto` (the analysis or a policy rolled back) or
    /// `manual` (a person aborted or rolled back).
    pub rollback: String,
    /// Why it ended, when it did not ship.
    #[serde(default)]
    pub reason: Option<String>,
    /// The step it ended in (1-based) and how many the plan had.
    pub step: usize,
    /// Steps in the plan.
    pub steps_total: usize,
    /// The first failing verdict of the last step (RFC 3339), if any.
    #[serde(default)]
    pub failed_at: Option<String>,
    /// From that verdict to traffic back on the baseline, seconds.
    #[serde(default)]
    pub restore_seconds: Option<f64>,
}

/// Records the end of `t` (done) at `at`, the time its last weights were
/// committed, under the same guard; counts it in the deployment metrics.
pub(super) fn record(ctrl: &Control, t: &Tracked, actor: &str, at: &str, guard: &Guard) {
    // No store, no stored time: now is as close.
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let snap = ctrl.shared.snapshot.load();
    let e = summary(snap.service(&t.service).map(|s| &**s), t, actor, if at.is_empty() { &now } else { at });
    ctrl.tally.finished(&t.service, &e.status, e.duration_seconds);
    if let Some(s) = e.restore_seconds {
        ctrl.tally.restored(&t.service, s);
    }
    let took = humantime::format_duration(std::time::Duration::from_secs(e.duration_seconds as u64));
    let mut ev = event("rollout-end", Some(&t.service), actor, e.reason.clone());
    ev.message = match e.rollback.as_str() {
        "none" => format!("rollout of {} {}: {} shipped after {took}", t.service, e.status, label(&e)),
        how => format!("rollout of {} {} ({how}) after {took}: {} did not ship", t.service, e.status, label(&e)),
    };
    ev.new = serde_json::to_value(&e).unwrap_or_default();
    if let Err(err) = ctrl.commit_under(&[], Some(ev), guard) {
        tracing::warn!(service = %t.service, error = %err, "cannot record the rollout's end for the report");
    }
}

fn label(e: &Ended) -> String {
    match &e.version {
        Some(v) => format!("{} {v}", e.candidate),
        None => e.candidate.clone(),
    }
}

/// `r`'s record as of `at` (RFC 3339): ended by `actor`, or still running.
/// `service`: where the pools' releases are read.
pub fn summary(service: Option<&crate::data::snapshot::Service>, r: &Rollout, actor: &str, at: &str) -> Ended {
    let release = |pool: &str| service.map(|s| s.release(pool)).unwrap_or_default();
    let (cand, base) = match &r.plan.rolling {
        // A rolling update's new endpoints run what its plan says; the old, what the pool ran then.
        Some(p) => (p.release.clone(), r.rolling.as_ref().map(|rs| rs.old_release.clone()).unwrap_or_default()),
        None => (release(&r.plan.candidate), release(&r.plan.baseline)),
    };
    // Never negative, though a fleet's clocks may disagree a little.
    let between = |a: &str, b: &str| seconds_between(a, b).map(|s| s.max(0.0));
    let status = r.status.as_str().to_owned();
    let rollback = match status.as_str() {
        "promoted" | "running" | "paused" => "none",
        _ if actor == CONTROLLER => "auto",
        _ => "manual",
    };
    // The first failing verdict in the step it ended in: the rollback
    // itself when the analysis made it, else a failing hold before a person acted.
    let failed_at = (rollback != "none")
        .then(|| r.decisions.iter().filter(|d| d.step == r.step).find(|d| is_failing(&d.decision, &d.why)))
        .flatten()
        .map(|d| d.time.clone());
    Ended {
        restore_seconds: failed_at.as_deref().and_then(|f| between(f, at)),
        failed_at,
        status,
        strategy: r.plan.strategy.as_str().to_owned(),
        baseline: r.plan.baseline.clone(),
        candidate: r.plan.candidate.clone(),
        version: cand.version,
        commit: cand.commit,
        commit_time: cand.commit_time,
        baseline_version: base.version,
        duration_seconds: between(&r.started, at).unwrap_or(0.0),
        started: r.started.clone(),
        rollback: rollback.into(),
        reason: r.reason.clone(),
        step: (r.step + 1).min(r.steps_total().max(1)),
        steps_total: r.steps_total(),
    }
}

/// Seconds from `a` to `b` (RFC 3339; negative when `b` is earlier);
/// `None` when either does not parse.
pub fn seconds_between(a: &str, b: &str) -> Option<f64> {
    let (a, b) = (humantime::parse_rfc3339_weak(a).ok()?, humantime::parse_rfc3339_weak(b).ok()?);
    Some(match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

/// A decision that says the candidate failed: the analysis's rollback, or
/// a hold whose verdict was a failure.
fn is_failing(decision: &str, why: &str) -> bool {
    (decision == "rollback" && !why.starts_with("by "))
        || ["(fail)", "(breach)", "(rollback)"].iter().any(|v| decision.ends_with(v))
}

#[cfg(test)]
mod tests {
    #[test]
    fn failing_verdicts_are_the_analysis_not_a_person() {
        assert!(super::is_failing("rollback", "error rate 30% above 20%"));
        assert!(super::is_failing("hold (fail)", "..."));
        assert!(!super::is_failing("rollback", "by ci"));
        assert!(!super::is_failing("hold (pass)", "..."));
        assert!(!super::is_failing("abort", "by ci"));
    }
}
