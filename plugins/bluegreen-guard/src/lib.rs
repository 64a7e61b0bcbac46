//! `bluegreen-guard`: guards a blue-green switch.
//!
//! After the switch, it compares the new active pool (the candidate) with
//! the figures the old one (the baseline) had just before the switch, and
//! orders an instant switchback when the error rate or the p99 regresses:
//! - error rate above the old one's plus `max_error_rate_increase`;
//! - p99 above `max_p99_ratio` × the old one's, and at least
//!   `min_p99_increase_ms` higher.
//!
//! Before the switch (preview) it compares the preview traffic with the
//! live pool the same way and promotes (switches, with `auto_switch`) when
//! there is no regression. Below `min_requests`: hold.
//!
//! ```yaml
//! rollout:
//!   strategy: blue-green
//!   analysis:
//!     policy: { plugin: bluegreen-guard, config: { max_p99_ratio: 1.5 } }
//! ```

use serde::Deserialize;
use switchyard_sdk::{Config, Context, Phase, Policy, PoolWindow, Verdict};

/// The guard's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlueGreenGuard {
    /// Requests the new pool needs before it is judged.
    pub min_requests: u64,
    /// Allowed rise of the error rate (absolute, e.g. 0.01 = one point).
    pub max_error_rate_increase: f64,
    /// Allowed p99 ratio, new / old.
    pub max_p99_ratio: f64,
    /// A p99 rise smaller than this (ms) never counts.
    pub min_p99_increase_ms: f64,
}

impl Default for BlueGreenGuard {
    fn default() -> Self {
        BlueGreenGuard { min_requests: 50, max_error_rate_increase: 0.01, max_p99_ratio: 1.5, min_p99_increase_ms: 5.0 }
    }
}

impl Policy for BlueGreenGuard {
    fn init(config: &Config) -> Result<Self, String> {
        let g: BlueGreenGuard = if config.is_empty() { BlueGreenGuard::default() } else { config.parse()? };
        if g.max_p99_ratio < 1.0 {
            return Err(format!("max_p99_ratio must be at least 1, not {}", g.max_p99_ratio));
        }
        Ok(g)
    }

    fn decide(&self, ctx: &Context) -> Verdict {
        let new = ctx.candidate_window();
        let (old, when) = match (ctx.phase, &ctx.pre_switch) {
            (Phase::PostSwitch, Some(pre)) => (pre.clone(), "before the switch"),
            (Phase::PostSwitch, None) => return Verdict::hold("no pre-switch figures to compare with"),
            _ => (ctx.baseline_window(), "now"),
        };
        if new.requests < self.min_requests {
            return Verdict::hold(format!(
                "{} has {} of the {} requests needed",
                new.name, new.requests, self.min_requests
            ));
        }
        let regressions = self.regressions(&new, &old);
        let figures = format!(
            "{}: {:.2}% errors, p99 {:.1} ms; {} {when}: {:.2}% errors, p99 {:.1} ms",
            new.name,
            new.error_rate() * 100.0,
            new.p99_us as f64 / 1000.0,
            old.name,
            old.error_rate() * 100.0,
            old.p99_us as f64 / 1000.0
        );
        if regressions.is_empty() {
            Verdict::promote(format!("no regression ({figures})"))
        } else {
            Verdict::rollback(format!("{} ({figures})", regressions.join("; ")))
        }
    }
}

impl BlueGreenGuard {
    fn regressions(&self, new: &PoolWindow, old: &PoolWindow) -> Vec<String> {
        let mut out = Vec::new();
        if new.error_rate() > old.error_rate() + self.max_error_rate_increase {
            out.push(format!("error rate up {:.2} points", (new.error_rate() - old.error_rate()) * 100.0));
        }
        let (p_new, p_old) = (new.p99_us as f64 / 1000.0, old.p99_us as f64 / 1000.0);
        if old.requests > 0 && p_new > p_old * self.max_p99_ratio && p_new - p_old >= self.min_p99_increase_ms {
            out.push(format!("p99 {:.1}× the old pool's", p_new / p_old.max(0.001)));
        }
        out
    }
}

switchyard_sdk::export_policy!(BlueGreenGuard);

#[cfg(test)]
mod tests {
    use switchyard_sdk::testing::{self, Window};
    use switchyard_sdk::Decision;

    fn guard(ctx: &switchyard_sdk::Context) -> Decision {
        testing::decide::<super::BlueGreenGuard>("null", ctx).unwrap().decision
    }

    #[test]
    fn switches_back_on_error_regression() {
        let pre = Window::new("blue").ok(1000).latency_ms(10, 1000);
        let ctx =
            testing::post_switch(pre, Window::new("blue"), Window::new("green").ok(190).failed(10).latency_ms(10, 200));
        assert!(matches!(guard(&ctx), Decision::Rollback(ref r) if r.contains("error rate up 5.00 points")));
    }

    #[test]
    fn switches_back_on_p99_regression() {
        let pre = Window::new("blue").ok(1000).latency_ms(10, 1000);
        let slow = Window::new("green").ok(200).latency_ms(10, 150).latency_ms(40, 50);
        let ctx = testing::post_switch(pre, Window::new("blue"), slow);
        assert!(matches!(guard(&ctx), Decision::Rollback(ref r) if r.contains("p99")), "{:?}", guard(&ctx));
    }

    #[test]
    fn healthy_switch_is_promoted_and_small_samples_hold() {
        let pre = || Window::new("blue").ok(1000).latency_ms(10, 1000);
        let ok = testing::post_switch(pre(), Window::new("blue"), Window::new("green").ok(300).latency_ms(11, 300));
        assert_eq!(guard(&ok), Decision::Promote);
        let few = testing::post_switch(pre(), Window::new("blue"), Window::new("green").failed(5).latency_ms(90, 5));
        assert_eq!(guard(&few), Decision::Hold);
    }

    #[test]
    fn compares_the_pre_switch_figures_not_the_idle_old_pool() {
        // After the switch the old pool serves nothing; its current window is empty.
        let pre = Window::new("blue").ok(1000).failed(50).latency_ms(10, 1050);
        let ctx =
            testing::post_switch(pre, Window::new("blue"), Window::new("green").ok(196).failed(4).latency_ms(10, 200));
        assert_eq!(guard(&ctx), Decision::Promote, "2% is better than blue's 4.8% before the switch");
    }
}
