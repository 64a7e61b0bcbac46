//! The four DORA measures of a period's deployments, and their bands.
//!
//! - Deployment frequency: promoted rollouts per day.
//! - Lead time for changes: the median from a promoted candidate's commit
//!   time (given at deploy) to its promotion.
//! - Change failure rate: rolled-back and aborted rollouts over all ended.
//! - Time to restore: the median from a failed rollout's failing verdict
//!   to traffic back on the baseline.
//!
//! Bands follow the DORA State of DevOps report (2021), with its gaps
//! closed so every value has one: frequency elite above one a day, high at
//! least weekly, medium at least monthly; lead time elite under 1 h, high
//! under a week, medium under 6 months; failure rate elite up to 15 %, high
//! to 30 %, medium to 45 %; restore elite under 1 h, high under a day,
//! medium under a week; low beyond.

use super::{Deployment, Ended};
use crate::control::rollout::ended::seconds_between;
use serde::{Deserialize, Serialize};

/// A DORA band.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    /// The best performers.
    Elite,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
}

/// One measure.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    /// Its value (`unit`), `null` when the period gives none.
    pub value: Option<f64>,
    /// `per-day`, `seconds` or `ratio`.
    pub unit: String,
    /// Its band, with a value.
    pub band: Option<Band>,
    /// What it was measured on, in words.
    pub basis: String,
}

/// The four measures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dora {
    /// Promoted rollouts per day.
    pub deployment_frequency: Measure,
    /// Median commit-to-promotion time, seconds.
    pub lead_time: Measure,
    /// Failed rollouts over ended ones.
    pub change_failure_rate: Measure,
    /// Median failing-verdict-to-baseline time, seconds.
    pub time_to_restore: Measure,
}

/// Whether a rollout ended without shipping (rolled back or aborted).
pub fn is_failure(e: &Ended) -> bool {
    matches!(e.status.as_str(), "rolled-back" | "aborted")
}

impl Dora {
    /// The measures of `deployments` over `since`..`now` (RFC 3339).
    pub fn measure(deployments: &[Deployment], since: &str, now: &str) -> Dora {
        let days = seconds_between(since, now).map_or(1.0, |s| (s / 86400.0).max(1.0 / 24.0));
        let ended: Vec<&Deployment> = deployments.iter().filter(|d| d.ended.is_some()).collect();
        let promoted: Vec<&Deployment> = ended.iter().copied().filter(|d| d.rollout.status == "promoted").collect();
        let failed = ended.iter().filter(|d| is_failure(&d.rollout)).count();

        let per_day = promoted.len() as f64 / days;
        let deployment_frequency = Measure {
            value: Some(per_day),
            unit: "per-day".into(),
            band: Some(match per_day {
                f if f > 1.0 => Band::Elite,
                f if f >= 1.0 / 7.0 => Band::High,
                f if f >= 1.0 / 30.0 => Band::Medium,
                _ => Band::Low,
            }),
            basis: format!("{} promoted rollout(s) in {}", promoted.len(), human(days * 86400.0)),
        };

        let leads: Vec<f64> = promoted
            .iter()
            .filter_map(|d| seconds_between(d.rollout.commit_time.as_deref()?, d.ended.as_deref()?))
            .collect();
        let lead_time = seconds_measure(median(&leads), [3600.0, 7.0 * 86400.0, 182.0 * 86400.0], || {
            format!("median of {} promoted rollout(s) with a commit time, of {}", leads.len(), promoted.len())
        });

        let rate = (!ended.is_empty()).then(|| failed as f64 / ended.len() as f64);
        let change_failure_rate = Measure {
            value: rate,
            unit: "ratio".into(),
            band: rate.map(|r| match r {
                r if r <= 0.15 => Band::Elite,
                r if r <= 0.30 => Band::High,
                r if r <= 0.45 => Band::Medium,
                _ => Band::Low,
            }),
            basis: format!("{failed} of {} ended rollout(s) rolled back or aborted", ended.len()),
        };

        let restores: Vec<f64> = ended.iter().filter_map(|d| d.rollout.restore_seconds).collect();
        let time_to_restore = seconds_measure(median(&restores), [3600.0, 86400.0, 7.0 * 86400.0], || {
            format!("median of {} failed rollout(s) with a failing verdict, of {failed}", restores.len())
        });
        Dora { deployment_frequency, lead_time, change_failure_rate, time_to_restore }
    }
}

impl Measure {
    /// The value for people: `2.1 per day`, `3 h 5 min`, `12.5 %`, or `—`.
    pub fn shown(&self) -> String {
        match (self.value, self.unit.as_str()) {
            (None, _) => "—".into(),
            (Some(v), "per-day") if v >= 1.0 => format!("{v:.1} per day"),
            (Some(v), "per-day") => format!("{:.1} per week", v * 7.0),
            (Some(v), "ratio") => format!("{:.1} %", v * 100.0),
            (Some(v), _) => human(v),
        }
    }
}

/// A time measure banded by three upper bounds (elite, high, medium).
fn seconds_measure(value: Option<f64>, bounds: [f64; 3], basis: impl FnOnce() -> String) -> Measure {
    Measure {
        value,
        unit: "seconds".into(),
        band: value.map(|v| match v {
            v if v < bounds[0] => Band::Elite,
            v if v < bounds[1] => Band::High,
            v if v < bounds[2] => Band::Medium,
            _ => Band::Low,
        }),
        basis: basis(),
    }
}

fn median(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// A duration for people: `250 ms`, `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let whole = s as u64;
    match whole {
        _ if s < 0.001 => "under 1 ms".into(),
        _ if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        0..60 => format!("{s:.0} s"),
        60..3600 => format!("{} min {} s", whole / 60, whole % 60),
        3600..86400 => format!("{} h {} min", whole / 3600, whole % 3600 / 60),
        _ => format!("{} d {} h", whole / 86400, whole % 86400 / 3600),
    }
}
