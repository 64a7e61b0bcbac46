//! `canary-judge`: a statistical canary judge, in the manner of Kayenta.
//!
//! Every tick it compares the candidate with the baseline over the
//! analysis window:
//! - failures: Fisher's exact test (one-sided: is the candidate's failure
//!   rate higher?), right for the small counts of a young canary;
//! - latency: the Mann-Whitney U test on the two latency histograms
//!   (one-sided: are the candidate's latencies larger?), with the effect
//!   size A12 = P(candidate slower).
//!
//! A difference *matters* when it is big enough to care about: a failure
//! rate more than `min_error_increase` above the baseline's, or latencies
//! with A12 > `max_a12` and a median at least `min_latency_increase_ms`
//! higher. The p-value then says whether it is real. Decision:
//! - either pool below `min_requests`: **hold** (too little data);
//! - a difference that matters with p < `alpha`: **rollback**, at once;
//! - a difference that matters with p < `inconclusive_below`: **hold**
//!   (inconclusive; the rollout's progress deadline still applies);
//! - otherwise: **promote** (the host advances only once the step's hold
//!   has elapsed). With thousands of requests a test finds even tiny
//!   shifts significant; those do not matter, so they do not hold.
//!
//! Every verdict explains itself with the counts, rates, p-values and A12.
//!
//! ```yaml
//! analysis:
//!   interval: 1s
//!   window: 30s
//!   policy:
//!     plugin: canary-judge
//!     config: { alpha: 0.01, min_requests: 100 }
//! ```

mod stats;

use serde::Deserialize;
use switchyard_sdk::{Config, Context, Policy, PoolWindow, Verdict};

/// The judge's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryJudge {
    /// Requests each pool needs in the window before anything is judged.
    pub min_requests: u64,
    /// Significance level for a rollback.
    pub alpha: f64,
    /// Between `alpha` and this, a test is inconclusive: hold.
    pub inconclusive_below: f64,
    /// The candidate's failure rate must exceed the baseline's by this much
    /// (absolute) to matter.
    pub min_error_increase: f64,
    /// A latency shift matters when A12 = P(candidate slower) exceeds this.
    pub max_a12: f64,
    /// ...and the candidate's median is this much higher, in ms.
    pub min_latency_increase_ms: f64,
}

impl Default for CanaryJudge {
    fn default() -> Self {
        CanaryJudge {
            min_requests: 100,
            alpha: 0.01,
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
        Ok(j)
    }

    fn decide(&self, ctx: &Context) -> Verdict {
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
        testing::decide::<super::CanaryJudge>("null", ctx).unwrap()
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
        let strict = testing::decide::<super::CanaryJudge>(r#"{"min_requests": 5000}"#, &ctx).unwrap();
        assert_eq!(strict.decision, Decision::Hold);
    }
}
