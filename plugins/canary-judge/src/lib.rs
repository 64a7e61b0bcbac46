//! `canary-judge`: a statistical canary judge that stays right however
//! often it looks.
//!
//! # `method: sequential` (the default)
//!
//! Every tick it tests, on the figures accumulated since the rollout
//! started (the SDK's [`switchyard_sdk::sequential`]):
//! - failures: is the candidate's failure rate more than `error_ratio`
//!   times the baseline's? (how the failures split between the pools, given
//!   their shares of the requests);
//! - latency: are more of the candidate's requests slower than
//!   `1 + latency_effect` times the baseline's `latency_quantile` than the
//!   shares explain? (a shift counts only past the effect size).
//!
//! Each is an anytime-valid test at `alpha / 2`: the chance that a healthy
//! candidate is *ever* rolled back, over the whole rollout, however many
//! ticks and however long the holds, is at most `alpha`. A promote needs
//! evidence too: that the candidate's failure rate is below the baseline's
//! plus `min_error_increase`, and its share of slow requests below
//! `1 − latency_quantile` (each at `alpha / 2`, the same guarantee). Decision:
//! - a regression shown: **rollback**, at once;
//! - fewer than `min_requests` candidate requests in the step, or the
//!   candidate not yet shown within the tolerances: **hold** (inconclusive;
//!   the rollout's progress deadline still applies);
//! - otherwise: **promote** (the host advances only once the step's hold
//!   has elapsed).
//!
//! # `method: fixed`
//!
//! The earlier judge, kept for comparison: Fisher's exact test on failures
//! and the Mann-Whitney U test on latency over the sliding window, every
//! tick. Each look is wrong with probability `alpha`, so over a long hold a
//! healthy canary is rolled back far more often than `alpha` (see the
//! README's judge table).
//!
//! Every verdict explains itself with the counts, the statistic and the boundary.
//!
//! ```yaml
//! analysis:
//!   interval: 1s
//!   window: 30s
//!   policy:
//!     plugin: canary-judge
//!     config: { alpha: 0.01, min_requests: 100, error_ratio: 1.5, latency_effect: 0.1 }
//! ```

mod stats;

use serde::Deserialize;
use switchyard_sdk::sequential::{self, Segment};
use switchyard_sdk::{Config, Context, Policy, PoolWindow, Verdict};

/// How the judge tests.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Anytime-valid tests on the rollout's totals.
    Sequential,
    /// Fisher's exact and Mann-Whitney U on the window, every tick.
    Fixed,
}

/// The judge's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryJudge {
    /// `sequential` (default) or `fixed`.
    pub method: Method,
    /// Sequential: requests the candidate needs in the step before a
    /// promote. Fixed: requests each pool needs in the window.
    pub min_requests: u64,
    /// Sequential: the most a healthy rollout's chance of a rollback may be,
    /// over the whole rollout. Fixed: the significance level of each look.
    pub alpha: f64,
    /// Sequential: a failure rate counts as worse above this multiple of the baseline's.
    pub error_ratio: f64,
    /// Sequential: the baseline's latency quantile that defines a slow request.
    pub latency_quantile: f64,
    /// Sequential: a latency shift counts past this fraction (0.1: 10 % slower).
    pub latency_effect: f64,
    /// Fixed: between `alpha` and this, a test is inconclusive: hold.
    pub inconclusive_below: f64,
    /// A failure rate this much (absolute) above the baseline's is
    /// tolerated. Sequential: a promote needs the candidate shown below it;
    /// fixed: an increase matters only above it.
    pub min_error_increase: f64,
    /// Fixed: a latency shift matters when A12 = P(candidate slower) exceeds this.
    pub max_a12: f64,
    /// Fixed: ...and the candidate's median is this much higher, in ms.
    pub min_latency_increase_ms: f64,
}

impl Default for CanaryJudge {
    fn default() -> Self {
        CanaryJudge {
            method: Method::Sequential,
            min_requests: 100,
            alpha: 0.01,
            error_ratio: 1.0,
            latency_quantile: 0.9,
            latency_effect: 0.1,
            inconclusive_below: 0.1,
            min_error_increase: 0.005,
            max_a12: 0.6,
            min_latency_increase_ms: 1.0,
        }
    }
}

impl Policy for CanaryJudge {
    fn init(config: &Config) -> Result<Self, String> {
        let j: CanaryJudge = if config.is_empty() { CanaryJudge::default() } else { config.parse()? };
        let probability = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, not {v}"))
            }
        };
        probability("alpha", j.alpha)?;
        probability("inconclusive_below", j.inconclusive_below)?;
        probability("max_a12", j.max_a12)?;
        probability("min_error_increase", j.min_error_increase)?;
        probability("latency_quantile", j.latency_quantile)?;
        if !(j.error_ratio.is_finite() && j.error_ratio >= 1.0) {
            return Err(format!("error_ratio must be at least 1, not {}", j.error_ratio));
        }
        if !(j.latency_effect.is_finite() && j.latency_effect >= 0.0) {
            return Err(format!("latency_effect must be 0 or more, not {}", j.latency_effect));
        }
        Ok(j)
    }

    fn decide(&self, ctx: &Context) -> Verdict {
        match self.method {
            Method::Sequential => self.sequential(ctx),
            Method::Fixed => self.fixed(ctx),
        }
    }
}

impl CanaryJudge {
    fn sequential(&self, ctx: &Context) -> Verdict {
        let (c, b) = (&ctx.candidate, &ctx.baseline);
        let rollout = (ctx.rollout_total(c), ctx.rollout_total(b));
        let step = (ctx.step_total(c), ctx.step_total(b));
        let both = |of: &dyn Fn(&PoolWindow, &PoolWindow) -> Segment| {
            sequential::segments((&rollout.0, &rollout.1), (&step.0, &step.1), of)
        };
        let failures = both(&Segment::failures);
        let threshold = rollout.1.quantile_us(self.latency_quantile);
        let slow = both(&|c, b| sequential::slow(c, b, threshold, self.latency_effect));
        let alpha = self.alpha / 2.0;
        let err = sequential::worse_than(&failures, self.error_ratio, alpha);
        let lat = sequential::worse_than(&slow, 1.0, alpha);
        let (f, l) = (sequential::total(&failures), sequential::total(&slow));
        let share = f.candidate_requests as f64 / (f.candidate_requests + f.baseline_requests).max(1) as f64;
        let figures = format!(
            "since the rollout started: {c} {}/{} failed vs {b} {}/{} (candidate share {:.1}%), \
             failures > {}× {err}; slow (> {:.1} ms, {}× for {c}) {} vs {}, latency {lat}",
            f.candidate_events,
            f.candidate_requests,
            f.baseline_events,
            f.baseline_requests,
            share * 100.0,
            self.error_ratio,
            threshold as f64 / 1000.0,
            1.0 + self.latency_effect,
            l.candidate_events,
            l.baseline_events,
        );
        if err.rejects() || lat.rejects() {
            let what = match (err.rejects(), lat.rejects()) {
                (true, true) => "failures and latency",
                (true, false) => "failures",
                _ => "latency",
            };
            return Verdict::rollback(format!(
                "candidate worse on {what} (sequential test, alpha {}): {figures}",
                self.alpha
            ));
        }
        if step.0.requests < self.min_requests {
            return Verdict::hold(format!(
                "too little data: {} of the {} candidate requests needed in the step; {figures}",
                step.0.requests, self.min_requests
            ));
        }
        // Within tolerance: shown, not merely not refuted.
        let rate = |events: u64, requests: u64| (events + 1) as f64 / (requests + 1) as f64;
        let failure_limit = rate(f.baseline_events, f.baseline_requests) + self.min_error_increase;
        // Under the null at most the quantile's tail is slower than (1 + effect) × the threshold.
        let slow_limit = 1.0 - self.latency_quantile;
        let err_ok = sequential::rate_below(f.candidate_events, f.candidate_requests, failure_limit, alpha);
        let lat_ok = sequential::rate_below(l.candidate_events, l.candidate_requests, slow_limit, alpha);
        let within = format!(
            "within tolerance: failures < {:.2}% {err_ok}, slow < {:.1}% {lat_ok}",
            failure_limit * 100.0,
            slow_limit * 100.0
        );
        if err_ok.rejects() && lat_ok.rejects() {
            Verdict::promote(format!("no regression, {within}; {figures}"))
        } else {
            Verdict::hold(format!("inconclusive: not yet shown {within}; {figures}"))
        }
    }

    fn fixed(&self, ctx: &Context) -> Verdict {
        let (b, c) = (ctx.baseline_window(), ctx.candidate_window());
        if c.requests < self.min_requests || b.requests < self.min_requests {
            return Verdict::hold(format!(
                "too little data: candidate {} and baseline {} requests, {} each needed",
                c.requests, b.requests, self.min_requests
            ));
        }
        // A difference matters only when it is large enough to care about;
        // then its p-value says whether it is real (rollback), plausible
        // (inconclusive: hold), or noise.
        let p_err = stats::fisher_worse(c.failed(), c.requests, b.failed(), b.requests);
        let errors_matter = c.error_rate() - b.error_rate() > self.min_error_increase;
        let mw = stats::mann_whitney(&c.latency, &b.latency);
        let (p_lat, a12) = mw.map_or((1.0, 0.5), |m| (m.p, m.a12));
        let median_up_ms = (c.p50_us as f64 - b.p50_us as f64) / 1000.0;
        let latency_matters = a12 > self.max_a12 && median_up_ms >= self.min_latency_increase_ms;
        let errors_worse = errors_matter && p_err < self.alpha;
        let latency_worse = latency_matters && p_lat < self.alpha;
        let figures = explain(&c, &b, p_err, p_lat, a12);
        if errors_worse || latency_worse {
            let what = match (errors_worse, latency_worse) {
                (true, true) => "failures and latency",
                (true, false) => "failures",
                _ => "latency",
            };
            return Verdict::rollback(format!("candidate worse on {what}: {figures}"));
        }
        if (errors_matter && p_err < self.inconclusive_below) || (latency_matters && p_lat < self.inconclusive_below) {
            return Verdict::hold(format!("inconclusive: {figures}"));
        }
        Verdict::promote(format!("no regression: {figures}"))
    }
}

fn explain(c: &PoolWindow, b: &PoolWindow, p_err: f64, p_lat: f64, a12: f64) -> String {
    format!(
        "{} {}/{} failed ({:.2}%) vs {} {}/{} ({:.2}%), Fisher p={p_err:.2e}; \
         p50 {:.1} vs {:.1} ms, Mann-Whitney p={p_lat:.2e}, A12={a12:.2}",
        c.name,
        c.failed(),
        c.requests,
        c.error_rate() * 100.0,
        b.name,
        b.failed(),
        b.requests,
        b.error_rate() * 100.0,
        c.p50_us as f64 / 1000.0,
        b.p50_us as f64 / 1000.0,
    )
}

switchyard_sdk::export_policy!(CanaryJudge);

#[cfg(test)]
mod tests {
    use switchyard_sdk::testing::{self, Window};
    use switchyard_sdk::{Context, Decision};

    fn judge(ctx: &Context) -> switchyard_sdk::Verdict {
        testing::decide::<super::CanaryJudge>(r#"{"method": "fixed"}"#, ctx).unwrap()
    }

    fn sequential(ctx: &Context) -> switchyard_sdk::Verdict {
        testing::decide::<super::CanaryJudge>("null", ctx).unwrap()
    }

    #[test]
    fn sequential_promotes_a_healthy_candidate_and_rolls_back_a_failing_one() {
        let v = sequential(&testing::canary(pool("stable", 9_950, 50, 8), pool("canary", 4_975, 25, 8)));
        assert_eq!(v.decision, Decision::Promote, "{v:?}");
        let v = sequential(&testing::canary(pool("stable", 9_950, 50, 8), pool("canary", 1_094, 6, 8)));
        assert!(
            matches!(v.decision, Decision::Hold) && v.explanation.as_deref().unwrap().contains("not yet shown"),
            "{v:?}"
        );
        assert!(v.explanation.unwrap().contains("log-LR"), "explains with the statistic and the boundary");
        let v = sequential(&testing::canary(pool("stable", 9_950, 50, 8), pool("canary", 1_070, 30, 8)));
        assert!(matches!(v.decision, Decision::Rollback(ref r) if r.contains("failures")), "{v:?}");
    }

    #[test]
    fn sequential_latency_counts_only_past_the_effect_size() {
        let slower = |ms| testing::canary(pool("stable", 10_000, 0, 8), pool("canary", 2_000, 0, ms));
        let v = sequential(&slower(8));
        assert_eq!(v.decision, Decision::Promote, "{v:?}");
        let v = sequential(&slower(12));
        assert!(matches!(v.decision, Decision::Rollback(ref r) if r.contains("latency")), "{v:?}");
    }

    #[test]
    fn sequential_holds_without_enough_candidate_requests() {
        let v = sequential(&testing::canary(pool("stable", 5000, 0, 8), pool("canary", 50, 0, 8)));
        assert_eq!(v.decision, Decision::Hold, "{v:?}");
    }

    /// `n` requests with latencies spread over 8..12 ms (or shifted).
    fn pool(name: &str, ok: u64, failed: u64, base_ms: u64) -> Window {
        let n = ok + failed;
        let mut w = Window::new(name).ok(ok).failed(failed);
        for i in 0..5 {
            w = w.latency_ms(base_ms + i, n / 5);
        }
        w
    }

    #[test]
    fn healthy_candidate_is_promoted() {
        let v = judge(&testing::canary(pool("stable", 5000, 0, 8), pool("canary", 500, 0, 8)));
        assert_eq!(v.decision, Decision::Promote, "{v:?}");
        assert!(v.explanation.unwrap().contains("Fisher p="));
    }

    #[test]
    fn two_percent_errors_roll_back() {
        let v = judge(&testing::canary(pool("stable", 5000, 0, 8), pool("canary", 980, 20, 8)));
        assert!(matches!(v.decision, Decision::Rollback(ref r) if r.contains("failures")), "{v:?}");
    }

    #[test]
    fn a_few_errors_in_small_counts_are_inconclusive_not_fatal() {
        // 2 of 150 vs 5 of 5000: p ≈ 0.02 — between alpha and the band.
        let v = judge(&testing::canary(pool("stable", 4995, 5, 8), pool("canary", 148, 2, 8)));
        assert_eq!(v.decision, Decision::Hold, "{v:?}");
        assert!(v.explanation.unwrap().starts_with("inconclusive"));
    }

    #[test]
    fn slower_candidate_rolls_back() {
        let v = judge(&testing::canary(pool("stable", 5000, 0, 8), pool("canary", 500, 0, 14)));
        assert!(matches!(v.decision, Decision::Rollback(ref r) if r.contains("latency")), "{v:?}");
    }

    #[test]
    fn a_tiny_but_significant_shift_does_not_hold() {
        // 10 000 requests a side, the candidate 0.2 ms slower: significant, irrelevant.
        let stable = Window::new("stable").ok(10_000).latency_us(8_000, 5_000).latency_us(9_000, 5_000);
        let canary = Window::new("canary").ok(10_000).latency_us(8_000, 4_000).latency_us(9_000, 6_000);
        let v = judge(&testing::canary(stable, canary));
        assert_eq!(v.decision, Decision::Promote, "{v:?}");
    }

    #[test]
    fn too_little_data_holds() {
        let v = judge(&testing::canary(pool("stable", 5000, 0, 8), pool("canary", 50, 10, 8)));
        assert_eq!(v.decision, Decision::Hold);
    }

    #[test]
    fn config_is_checked() {
        let ctx = testing::canary(pool("stable", 10, 0, 8), pool("canary", 10, 0, 8));
        assert!(testing::decide::<super::CanaryJudge>(r#"{"alpha": 2}"#, &ctx).unwrap_err().contains("alpha"));
        assert!(testing::decide::<super::CanaryJudge>(r#"{"alfa": 0.1}"#, &ctx).unwrap_err().contains("unknown field"));
        assert!(testing::decide::<super::CanaryJudge>(r#"{"error_ratio": 0.5}"#, &ctx)
            .unwrap_err()
            .contains("error_ratio"));
        let strict = testing::decide::<super::CanaryJudge>(r#"{"min_requests": 5000}"#, &ctx).unwrap();
        assert_eq!(strict.decision, Decision::Hold);
    }
}
