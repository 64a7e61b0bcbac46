//! Rollout plans: a service's `rollout` section, or the body of
//! `POST /v1/services/{svc}/rollout`, validated against the service's pools.
//! Plans are stored with the rollout's progress, so they serialise.

use super::fail;
use super::file::{FileAnalysis, FileRollout};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_saphyr::Location;
use std::time::Duration;

/// How traffic moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Step by step, by weight, with analysis at every step.
    Canary,
    /// All at once after an optional check; switch back on failure.
    BlueGreen,
    /// One pool's endpoints replaced a batch at a time, the new judged against the old.
    Rolling,
}

impl Strategy {
    /// Its name in config files and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Canary => "canary",
            Strategy::BlueGreen => "blue-green",
            Strategy::Rolling => "rolling",
        }
    }
}

/// One canary step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Send `weight` % to the candidate and hold it for `hold`.
    Weight {
        /// Percent of traffic on the candidate.
        weight: u32,
        /// Time to hold before the step's analysis may advance.
        #[serde(with = "super::units::millis")]
        hold: Duration,
    },
    /// Wait for a person (`promote`).
    Pause,
    /// Copy `percent` % of the baseline's safe requests to the candidate,
    /// which answers no client, and hold it for `hold`: the candidate is
    /// judged on real traffic before any user sees it. Mirror steps come
    /// before a canary's first weight step.
    Mirror {
        /// Percent of the baseline's requests copied.
        percent: f64,
        /// Time to hold before the step's analysis may advance.
        #[serde(with = "super::units::millis")]
        hold: Duration,
    },
}

/// Thresholds that end a step well.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Success {
    /// Highest candidate error rate (5xx / requests).
    pub max_error_rate: Option<f64>,
    /// Highest candidate p99.
    #[serde(with = "super::units::opt_millis", default)]
    pub max_p99: Option<Duration>,
    /// Highest candidate error rate as a multiple of the baseline's.
    pub max_error_rate_vs_baseline: Option<f64>,
    /// Highest candidate p99 as a multiple of the baseline's.
    pub max_p99_vs_baseline: Option<f64>,
    /// Mirror steps: highest share of the candidate's copies whose status
    /// class differed from the baseline's answer.
    #[serde(default)]
    pub max_mirror_mismatch: Option<f64>,
}

/// Thresholds that roll back at once, mid-step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackWhen {
    /// Candidate error rate above this.
    pub error_rate_above: Option<f64>,
    /// Candidate p99 above this.
    #[serde(with = "super::units::opt_millis", default)]
    pub p99_above: Option<Duration>,
    /// Candidate error rate above this multiple of the baseline's.
    pub error_rate_vs_baseline_above: Option<f64>,
    /// Candidate p99 above this multiple of the baseline's.
    pub p99_vs_baseline_above: Option<f64>,
    /// Mirror steps: the share of mismatched copies above this.
    #[serde(default)]
    pub mirror_mismatch_above: Option<f64>,
    /// Requests the candidate needs in the window before a breach counts.
    pub min_requests: u64,
}

/// One set of thresholds, absolute and relative to the baseline. The file
/// and the API spell it twice: `success` (a step ends well within them) and
/// `rollback_when` (crossing one rolls back at once); analysis judges both
/// through this one type.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Thresholds {
    /// Candidate error rate (5xx / requests).
    pub error_rate: Option<f64>,
    /// Candidate p99.
    pub p99: Option<Duration>,
    /// Candidate error rate as a multiple of the baseline's.
    pub error_rate_vs_baseline: Option<f64>,
    /// Candidate p99 as a multiple of the baseline's.
    pub p99_vs_baseline: Option<f64>,
    /// Share of the candidate's mirrored copies answered in another status class.
    pub mirror_mismatch: Option<f64>,
}

impl Success {
    /// The criteria as thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            error_rate: self.max_error_rate,
            p99: self.max_p99,
            error_rate_vs_baseline: self.max_error_rate_vs_baseline,
            p99_vs_baseline: self.max_p99_vs_baseline,
            mirror_mismatch: self.max_mirror_mismatch,
        }
    }
}

impl RollbackWhen {
    /// The breach conditions as thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            error_rate: self.error_rate_above,
            p99: self.p99_above,
            error_rate_vs_baseline: self.error_rate_vs_baseline_above,
            p99_vs_baseline: self.p99_vs_baseline_above,
            mirror_mismatch: self.mirror_mismatch_above,
        }
    }
}

/// How the relative criteria (`*_vs_baseline`) are judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The ratio of the two pools' figures over the window, every tick.
    #[default]
    Window,
    /// Anytime-valid sequential tests on the totals since the rollout
    /// started (see `switchyard_sdk::sequential`): a healthy candidate is
    /// rolled back with probability at most `alpha` over the whole rollout.
    Sequential,
}

/// How analysis judges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Time between judgements.
    #[serde(with = "super::units::millis")]
    pub interval: Duration,
    /// The span of recent figures judged.
    #[serde(with = "super::units::millis")]
    pub window: Duration,
    /// Requests the candidate needs in the window for a verdict; fewer is inconclusive.
    pub min_requests: u64,
    /// How the relative criteria are judged.
    #[serde(default)]
    pub method: Method,
    /// `sequential`: the most a healthy rollout's chance of a rollback by
    /// the relative criteria may be, over the whole rollout.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// When a step ends well.
    pub success: Success,
    /// When to roll back at once.
    pub rollback_when: RollbackWhen,
    /// A policy plugin that decides instead of the thresholds.
    #[serde(default)]
    pub policy: Option<PolicyConfig>,
}

/// `analysis.policy`: a policy plugin and its configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyConfig {
    /// The plugin's name (in the `plugins` section).
    pub plugin: String,
    /// Its configuration, passed to `init` (the plugin's default when `None`).
    pub config: Option<serde_json::Value>,
    /// Consecutive faulted ticks after which the rollout rolls back.
    pub max_faults: u32,
}

/// A validated rollout plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// Canary or blue-green.
    pub strategy: Strategy,
    /// The pool traffic comes from (and returns to on rollback).
    pub baseline: String,
    /// The pool traffic moves to.
    pub candidate: String,
    /// Canary steps, in order.
    pub steps: Vec<Step>,
    /// Analysis settings.
    pub analysis: Analysis,
    /// Inconclusive this long at the end of a step: pause for a person.
    #[serde(with = "super::units::opt_millis", default)]
    pub progress_deadline: Option<Duration>,
    /// Blue-green: switch by itself once the preview passes analysis.
    pub auto_switch: bool,
    /// Blue-green: how long analysis keeps watching after the switch.
    #[serde(with = "super::units::millis")]
    pub post_switch_window: Duration,
    /// URLs that receive every rollout event as JSON.
    pub webhooks: Vec<String>,
    /// A rolling update's pool, new endpoints, batches and readiness probe.
    #[serde(default)]
    pub rolling: Option<super::rolling::Rolling>,
}

/// Validates a plan for a service with `pools`; `p` is the field path for errors.
pub(crate) fn validate(mut f: FileRollout, pools: &[String], p: &str, at: &Location) -> Result<RolloutPlan, Error> {
    let strategy = match f.strategy.as_deref() {
        None | Some("canary") => Strategy::Canary,
        Some("blue-green") => Strategy::BlueGreen,
        Some("rolling") => Strategy::Rolling,
        Some(other) => {
            let msg = format!("`{other}` is not `canary`, `blue-green` or `rolling`");
            return Err(fail(format!("{p}.strategy"), at, msg));
        }
    };
    let rolling = match strategy {
        Strategy::Rolling => Some(super::rolling::validate(&mut f, pools, p, at)?),
        _ => {
            let given = [("pool", f.pool.is_some()), ("endpoints", f.endpoints.is_some()), ("hold", f.hold.is_some())]
                .into_iter()
                .chain([("max_surge", f.max_surge.is_some()), ("max_unavailable", f.max_unavailable.is_some())])
                .chain([("readiness", f.readiness.is_some()), ("release", f.release.is_some())]);
            if let Some((field, _)) = given.into_iter().find(|(_, set)| *set) {
                return Err(fail(format!("{p}.{field}"), at, "only a rolling update (`strategy: rolling`) has it"));
            }
            None
        }
    };
    let pool = |name: Option<String>, field: &str, default: &str| -> Result<String, Error> {
        let name = name.unwrap_or_else(|| default.to_owned());
        if pools.contains(&name) {
            Ok(name)
        } else {
            Err(fail(format!("{p}.{field}"), at, format!("unknown pool `{name}` (pools: {})", pools.join(", "))))
        }
    };
    let (baseline, candidate) = match (strategy, &rolling) {
        // A rolling update judges the pool's new endpoints against its old ones.
        (_, Some(r)) => (super::rolling::old_group(&r.pool), super::rolling::new_group(&r.pool)),
        (Strategy::BlueGreen, None) => {
            (pool(f.baseline, "baseline", "blue")?, pool(f.candidate, "candidate", "green")?)
        }
        _ => (pool(f.baseline, "baseline", "stable")?, pool(f.candidate, "candidate", "canary")?),
    };
    if baseline == candidate {
        return Err(fail(format!("{p}.candidate"), at, "baseline and candidate must be different pools"));
    }
    let mut steps = Vec::new();
    for (i, s) in f.steps.into_iter().enumerate() {
        let step = match (s.weight, s.hold, s.pause, s.mirror) {
            (Some(w), hold, None, None) if w <= 100 => {
                Step::Weight { weight: w, hold: hold.map_or(Duration::ZERO, |h| h.0) }
            }
            (Some(_), _, None, None) => {
                return Err(fail(format!("{p}.steps[{i}].weight"), at, "a step's weight is a percentage, 0 to 100"))
            }
            (None, None, Some(_), None) => Step::Pause,
            (None, None, None, Some(m)) => {
                let percent = m.percent.unwrap_or(100.0);
                if !(percent > 0.0 && percent <= 100.0) {
                    let msg = "a mirror step's percent is above 0 and at most 100";
                    return Err(fail(format!("{p}.steps[{i}].mirror.percent"), at, msg));
                }
                if steps.iter().any(|s| !matches!(s, Step::Mirror { .. })) {
                    let msg = "mirror steps come first, before the candidate gets any traffic";
                    return Err(fail(format!("{p}.steps[{i}]"), at, msg));
                }
                Step::Mirror { percent, hold: m.hold.map_or(Duration::ZERO, |h| h.0) }
            }
            _ => return Err(fail(
                format!("{p}.steps[{i}]"),
                at,
                "a step is `{ weight: N, hold: DURATION }`, `pause: {}` or `mirror: { percent: N, hold: DURATION }`",
            )),
        };
        steps.push(step);
    }
    if strategy == Strategy::Canary && steps.is_empty() {
        return Err(fail(format!("{p}.steps"), at, "a canary needs at least one step"));
    }
    if strategy == Strategy::BlueGreen && !steps.is_empty() {
        return Err(fail(format!("{p}.steps"), at, "blue-green has no steps (it switches all at once)"));
    }
    if strategy == Strategy::Rolling && !steps.is_empty() {
        return Err(fail(format!("{p}.steps"), at, "a rolling update has batches, not steps (see max_surge, hold)"));
    }
    let analysis = validate_analysis(f.analysis.unwrap_or_default(), p, at)?;
    if strategy == Strategy::Rolling && analysis.policy.is_some() {
        let msg = "a rolling update is judged by the built-in analysis (policy plugins judge canary and blue-green)";
        return Err(fail(format!("{p}.analysis.policy"), at, msg));
    }
    for url in &f.webhooks {
        let valid = ["http://", "https://"].iter().any(|s| url.starts_with(s)) && url.parse::<http::Uri>().is_ok();
        if !valid {
            let msg = format!("`{url}`: webhooks are http:// or https:// URLs");
            return Err(fail(format!("{p}.webhooks"), at, msg));
        }
    }
    Ok(RolloutPlan {
        strategy,
        baseline,
        candidate,
        steps,
        analysis,
        progress_deadline: f.progress_deadline.map(|d| d.0),
        auto_switch: f.auto_switch.unwrap_or(false),
        post_switch_window: f.post_switch_window.map_or(Duration::from_secs(300), |d| d.0),
        webhooks: f.webhooks,
        rolling,
    })
}

fn validate_analysis(a: FileAnalysis, p: &str, at: &Location) -> Result<Analysis, Error> {
    let rate = |v: Option<f64>, field: &str| match v {
        Some(r) if !(0.0..=1.0).contains(&r) => {
            Err(fail(format!("{p}.analysis.{field}"), at, "a rate is between 0 and 1"))
        }
        _ => Ok(v),
    };
    let ratio = |v: Option<f64>, field: &str| match v {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            Err(fail(format!("{p}.analysis.{field}"), at, "a ratio is a positive number"))
        }
        _ => Ok(v),
    };
    let interval = a.interval.map_or(Duration::from_secs(1), |d| d.0);
    if interval < Duration::from_millis(10) {
        return Err(fail(format!("{p}.analysis.interval"), at, "must be at least 10ms"));
    }
    let window = a.window.map_or(Duration::from_secs(30), |d| d.0).max(interval);
    let method = match a.method.as_deref() {
        None | Some("window") => Method::Window,
        Some("sequential") => Method::Sequential,
        Some(other) => {
            return Err(fail(format!("{p}.analysis.method"), at, format!("`{other}` is not `window` or `sequential`")))
        }
    };
    let alpha = match a.alpha {
        None => default_alpha(),
        Some(v) if v > 0.0 && v < 1.0 => v,
        Some(_) => return Err(fail(format!("{p}.analysis.alpha"), at, "alpha is between 0 and 1 (exclusive)")),
    };
    Ok(Analysis {
        interval,
        window,
        min_requests: a.min_requests.unwrap_or(100),
        method,
        alpha,
        success: super::rollout::Success {
            max_error_rate: rate(a.success.max_error_rate, "success.max_error_rate")?,
            max_p99: a.success.max_p99.map(|d| d.0),
            max_error_rate_vs_baseline: ratio(
                a.success.max_error_rate_vs_baseline,
                "success.max_error_rate_vs_baseline",
            )?,
            max_p99_vs_baseline: ratio(a.success.max_p99_vs_baseline, "success.max_p99_vs_baseline")?,
            max_mirror_mismatch: rate(a.success.max_mirror_mismatch, "success.max_mirror_mismatch")?,
        },
        rollback_when: RollbackWhen {
            error_rate_above: rate(a.rollback_when.error_rate_above, "rollback_when.error_rate_above")?,
            p99_above: a.rollback_when.p99_above.map(|d| d.0),
            error_rate_vs_baseline_above: ratio(
                a.rollback_when.error_rate_vs_baseline_above,
                "rollback_when.error_rate_vs_baseline_above",
            )?,
            p99_vs_baseline_above: ratio(a.rollback_when.p99_vs_baseline_above, "rollback_when.p99_vs_baseline_above")?,
            mirror_mismatch_above: rate(a.rollback_when.mirror_mismatch_above, "rollback_when.mirror_mismatch_above")?,
            min_requests: a.rollback_when.min_requests.unwrap_or(10),
        },
        policy: match a.policy {
            None => None,
            Some(pol) => {
                if pol.max_faults == Some(0) {
                    return Err(fail(format!("{p}.analysis.policy.max_faults"), at, "must be at least 1"));
                }
                Some(PolicyConfig {
                    plugin: pol.plugin.value,
                    config: pol.config,
                    max_faults: pol.max_faults.unwrap_or(3),
                })
            }
        },
    })
}

fn default_alpha() -> f64 {
    0.01
}
