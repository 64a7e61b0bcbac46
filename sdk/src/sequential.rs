//! Anytime-valid sequential tests for canaries: tests that stay right
//! however often they look.
//!
//! A fixed-sample test (Fisher's exact, Mann-Whitney U) is wrong with
//! probability `alpha` *per look*; a rollout looks every tick, hundreds of
//! times, so a healthy canary is eventually rolled back. The tests here are
//! *test martingales*: under the null hypothesis their likelihood ratio is a
//! nonnegative supermartingale, so by Ville's inequality the chance that it
//! *ever* reaches `1 / alpha` — at any tick, over any hold — is at most
//! `alpha` (the mixture sequential probability ratio test, as used for
//! canaries by Lindon, Sanden and Shirikian, "Rapid regression detection in
//! software deployments through sequential testing", KDD 2022).
//!
//! # The test
//!
//! Both metrics reduce to *events* split between two pools: failures, or
//! slow requests. Given that an event happened, under the null it came from
//! the candidate with probability equal to the candidate's share of the
//! requests, `s` (its traffic weight, as observed). If instead the
//! candidate's event rate is `θ` times the baseline's, that probability is
//! `q(θ) = θs / (θs + 1 − s)`. The statistic is the likelihood ratio of the
//! observed split under `θ` against the null's worst case `θ = ratio`,
//! averaged over a fixed grid of alternatives above `ratio` (the mixture
//! keeps the test sensitive to small and large regressions alike). It needs
//! only counts, so a stateless plugin computes it from totals every tick.
//!
//! When the weights change, shares change: figures are kept in
//! [`Segment`]s of steady weights (the rollout before the current step, and
//! the step), and their likelihood ratios multiply.
//!
//! # Promotion
//!
//! No evidence of harm is not evidence of safety: with few requests every
//! test is quiet. [`rate_below`] is the other direction, a one-sample test
//! that the candidate's rate of events is below a tolerance (the baseline's
//! rate plus what may be tolerated), with the same guarantee: a candidate
//! worse than the tolerance is declared within it with probability at most
//! `alpha`. Without enough requests to show that, the verdict is "hold".
//!
//! # Latency
//!
//! A latency regression is tested the same way on *slow* requests: the
//! baseline's above a threshold `t` (its own `quantile`), the candidate's
//! above `(1 + effect) · t` ([`slow`]). If the candidate is no slower than
//! the baseline stretched by `effect`, its share of slow requests is at most
//! `s`; so a shift counts only past the effect size.

use crate::PoolWindow;

/// One kind of event in the two pools over a span of steady weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The candidate's events (failures, or slow requests).
    pub candidate_events: u64,
    /// The candidate's requests.
    pub candidate_requests: u64,
    /// The baseline's events.
    pub baseline_events: u64,
    /// The baseline's requests.
    pub baseline_requests: u64,
}

/// What a test found: the log of its mixture likelihood ratio against the
/// boundary `ln(1 / alpha)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evidence {
    /// ln of the mixture likelihood ratio (0 without data).
    pub log_lr: f64,
    /// ln(1 / alpha): the evidence needed.
    pub boundary: f64,
}

impl Evidence {
    /// Whether the evidence reached the boundary: reject the null.
    pub fn rejects(&self) -> bool {
        self.log_lr >= self.boundary
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cmp = if self.rejects() { "≥" } else { "<" };
        write!(f, "log-LR {:.2} {cmp} {:.2}", self.log_lr, self.boundary)
    }
}

/// Alternatives, as multiples of the null ratio, equally weighted: few, so
/// the mixture costs little evidence (ln 6), spread over the regressions
/// worth catching.
const WORSE: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 25.0];
/// Alternatives below a tolerance, as fractions of it.
const BELOW: [f64; 4] = [0.0, 0.25, 0.5, 0.75];

/// Evidence that the candidate's event rate is more than `ratio` times the
/// baseline's, at level `alpha` over all looks.
pub fn worse_than(segments: &[Segment], ratio: f64, alpha: f64) -> Evidence {
    let logs = WORSE.iter().map(|m| segments.iter().map(|s| s.log_lr(ratio, ratio * m)).sum::<f64>());
    mixture(logs, alpha)
}

/// Evidence that `events` of `requests` come from a rate below `rate`, at
/// level `alpha` over all looks.
pub fn rate_below(events: u64, requests: u64, rate: f64, alpha: f64) -> Evidence {
    let (e, n) = (events as f64, requests as f64);
    let rate = rate.clamp(f64::MIN_POSITIVE, 1.0 - 1e-12);
    let logs = BELOW.iter().map(|m| {
        let p = rate * m;
        let hits = if e == 0.0 {
            0.0
        } else if p == 0.0 {
            f64::NEG_INFINITY
        } else {
            e * (p / rate).ln()
        };
        hits + (n - e) * ((1.0 - p) / (1.0 - rate)).ln()
    });
    mixture(logs, alpha)
}

/// The equally weighted mixture of likelihood ratios given by their logs.
fn mixture(logs: impl Iterator<Item = f64>, alpha: f64) -> Evidence {
    let boundary = (1.0 / alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln();
    let logs: Vec<f64> = logs.collect();
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return Evidence { log_lr: max, boundary };
    }
    let sum: f64 = logs.iter().map(|l| (l - max).exp()).sum();
    Evidence { log_lr: max + (sum / logs.len() as f64).ln(), boundary }
}

impl Segment {
    /// ln of the likelihood ratio of the observed split under rate ratio
    /// `alt` against `null`.
    fn log_lr(&self, null: f64, alt: f64) -> f64 {
        let (c, b) = (self.candidate_requests as f64, self.baseline_requests as f64);
        if c == 0.0 || b == 0.0 {
            return 0.0; // one pool only: the split says nothing
        }
        let s = c / (c + b);
        let q = |theta: f64| theta * s / (theta * s + 1.0 - s);
        let (q0, q1) = (q(null), q(alt));
        self.candidate_events as f64 * (q1 / q0).ln() + self.baseline_events as f64 * ((1.0 - q1) / (1.0 - q0)).ln()
    }

    /// The two pools' failures.
    pub fn failures(candidate: &PoolWindow, baseline: &PoolWindow) -> Self {
        Segment {
            candidate_events: candidate.failed(),
            candidate_requests: candidate.requests,
            baseline_events: baseline.failed(),
            baseline_requests: baseline.requests,
        }
    }
}

/// Slow requests: the baseline's slower than `threshold_us`, the
/// candidate's slower than `threshold_us · (1 + effect)`. Counted on
/// whole histogram buckets: a bucket straddling the candidate's threshold
/// does not count (never a slow request too many for the candidate).
pub fn slow(candidate: &PoolWindow, baseline: &PoolWindow, threshold_us: u64, effect: f64) -> Segment {
    let above = |w: &PoolWindow, t: f64| {
        w.latency.iter().filter(|&&(upper, _)| crate::policy::bucket_lower(upper) as f64 > t).map(|&(_, n)| n).sum()
    };
    Segment {
        candidate_events: above(candidate, threshold_us as f64 * (1.0 + effect)),
        candidate_requests: candidate.requests,
        baseline_events: above(baseline, threshold_us as f64),
        baseline_requests: baseline.requests,
    }
}

/// The segments' counts added up (for explanations).
pub fn total(segments: &[Segment]) -> Segment {
    segments.iter().fold(Segment::default(), |a, s| Segment {
        candidate_events: a.candidate_events + s.candidate_events,
        candidate_requests: a.candidate_requests + s.candidate_requests,
        baseline_events: a.baseline_events + s.baseline_events,
        baseline_requests: a.baseline_requests + s.baseline_requests,
    })
}

/// A rollout's figures in segments of steady weights: before the current
/// step, and the step; `of` picks the events.
pub fn segments(
    rollout: (&PoolWindow, &PoolWindow),
    step: (&PoolWindow, &PoolWindow),
    of: impl Fn(&PoolWindow, &PoolWindow) -> Segment,
) -> [Segment; 2] {
    let (c_before, b_before) = (rollout.0.minus(step.0), rollout.1.minus(step.1));
    [of(&c_before, &b_before), of(step.0, step.1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ce: u64, cr: u64, be: u64, br: u64) -> Segment {
        Segment { candidate_events: ce, candidate_requests: cr, baseline_events: be, baseline_requests: br }
    }

    #[test]
    fn evidence_grows_with_a_real_regression_only() {
        // 20 % share: a candidate with the baseline's rate has a fifth of the failures.
        let healthy = worse_than(&[seg(20, 2_000, 80, 8_000)], 1.0, 0.01);
        assert!(healthy.log_lr < 0.5, "{healthy}");
        let worse = worse_than(&[seg(60, 2_000, 80, 8_000)], 1.0, 0.01);
        assert!(worse.rejects(), "3× the baseline's rate: {worse}");
        assert!(!worse_than(&[seg(60, 2_000, 80, 8_000)], 5.0, 0.01).rejects(), "but not 5×");
        assert_eq!(worse_than(&[seg(9, 100, 0, 0)], 1.0, 0.01).log_lr.exp().round(), 1.0, "no baseline: no evidence");
    }

    #[test]
    fn a_rate_is_shown_below_a_tolerance_only_with_enough_requests() {
        assert!(!rate_below(0, 100, 0.01, 0.01).rejects(), "100 clean requests do not show < 1 %");
        assert!(rate_below(0, 1_000, 0.01, 0.01).rejects(), "1000 do");
        assert!(rate_below(5, 2_000, 0.01, 0.01).rejects(), "0.25 % is below 1 %");
        assert!(!rate_below(30, 2_000, 0.01, 0.01).rejects(), "1.5 % is not");
    }

    /// Under the null the chance of ever crossing is at most alpha, however
    /// often it looks: simulate 2 000 healthy rollouts looked at after every
    /// failure, 400 failures each.
    #[test]
    fn looking_after_every_event_keeps_the_false_alarm_rate_below_alpha() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let alarms = (0..2_000)
            .filter(|_| {
                let mut s = seg(0, 2_000, 0, 8_000);
                (0..400).any(|_| {
                    if uniform() < 0.2 {
                        s.candidate_events += 1;
                    } else {
                        s.baseline_events += 1;
                    }
                    worse_than(&[s], 1.0, 0.05).rejects()
                })
            })
            .count();
        assert!(alarms <= 100 + 30, "{alarms} of 2000 false alarms at alpha 0.05 (a 3-sd allowance)");
    }
}
