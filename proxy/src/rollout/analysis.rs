//! Built-in analysis: judges the candidate's figures, absolutely and
//! against the baseline's. Pure: figures in, verdict out.
//!
//! `rollback_when` reads the window since the rollout started; `success`
//! the window since the current weights took effect (see [`super::evidence`]).

use crate::config::rollout::Analysis;
use crate::stats::Figures;
use serde::{Deserialize, Serialize};

/// What analysis concluded this tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "why", rename_all = "kebab-case")]
pub enum Verdict {
    /// A `rollback_when` threshold is crossed: roll back now.
    Breach(String),
    /// Every success criterion holds with enough requests.
    Pass(String),
    /// A success criterion fails with enough requests.
    Fail(String),
    /// Too few requests to judge.
    Inconclusive(String),
    /// A policy plugin (or its repeated faults) orders a rollback now; the
    /// text is the whole reason.
    Rollback(String),
}

impl Verdict {
    /// The explanation.
    pub fn why(&self) -> &str {
        match self {
            Verdict::Breach(w)
            | Verdict::Pass(w)
            | Verdict::Fail(w)
            | Verdict::Inconclusive(w)
            | Verdict::Rollback(w) => w,
        }
    }
}

/// The candidate's and the baseline's figures over one span.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pair {
    /// The pool being rolled out.
    pub candidate: Figures,
    /// The pool it is compared with.
    pub baseline: Figures,
}

/// What one tick judges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The window, cut at the rollout's start: what `rollback_when` reads.
    pub since_rollout: Pair,
    /// The window, cut where the current weights took effect: what `success` reads.
    pub since_step: Pair,
}

/// Judges the candidate against the thresholds and against the baseline:
/// first `rollback_when` on the figures since the rollout started, then
/// `success` on those since the current weights. Relative criteria apply
/// only when the baseline has enough requests too.
pub fn judge(a: &Analysis, o: &Observed) -> Verdict {
    if let Some(breach) = breached(a, &o.since_rollout) {
        return breach;
    }
    judge_success(a, &o.since_step)
}

fn describe(candidate: &Figures, baseline: &Figures) -> String {
    format!(
        "candidate {} req, {:.2}% errors, p99 {:.1} ms; baseline {} req, {:.2}% errors, p99 {:.1} ms",
        candidate.requests,
        candidate.error_rate() * 100.0,
        candidate.p99_us as f64 / 1000.0,
        baseline.requests,
        baseline.error_rate() * 100.0,
        baseline.p99_us as f64 / 1000.0
    )
}

fn rates(f: &Figures) -> (f64, f64) {
    (f.error_rate(), f.p99_us as f64 / 1000.0)
}

/// A `rollback_when` breach, if there is one.
fn breached(a: &Analysis, p: &Pair) -> Option<Verdict> {
    let r = &a.rollback_when;
    if p.candidate.requests < r.min_requests {
        return None;
    }
    let limits = Limits {
        error_rate: r.error_rate_above,
        p99: r.p99_above,
        error_rate_vs_baseline: r.error_rate_vs_baseline_above,
        p99_vs_baseline: r.p99_vs_baseline_above,
    };
    let breaches = exceeded(&limits, rates(&p.candidate), rates(&p.baseline), p.baseline.requests >= a.min_requests);
    (!breaches.is_empty())
        .then(|| Verdict::Breach(format!("{} ({})", breaches.join("; "), describe(&p.candidate, &p.baseline))))
}

/// Pass, fail or inconclusive on the `success` criteria.
fn judge_success(a: &Analysis, p: &Pair) -> Verdict {
    let (candidate, baseline) = (&p.candidate, &p.baseline);
    let figures = describe(candidate, baseline);
    if candidate.requests < a.min_requests {
        return Verdict::Inconclusive(format!(
            "{} of the {} requests needed ({figures})",
            candidate.requests, a.min_requests
        ));
    }
    let s = &a.success;
    let limits = Limits {
        error_rate: s.max_error_rate,
        p99: s.max_p99,
        error_rate_vs_baseline: s.max_error_rate_vs_baseline,
        p99_vs_baseline: s.max_p99_vs_baseline,
    };
    let fails = exceeded(&limits, rates(candidate), rates(baseline), baseline.requests >= a.min_requests);
    if fails.is_empty() {
        Verdict::Pass(figures)
    } else {
        Verdict::Fail(format!("{} ({figures})", fails.join("; ")))
    }
}

/// One set of thresholds: absolute, and relative to the baseline.
struct Limits {
    error_rate: Option<f64>,
    p99: Option<std::time::Duration>,
    error_rate_vs_baseline: Option<f64>,
    p99_vs_baseline: Option<f64>,
}

/// Which of `limits` the candidate's `(error rate, p99 ms)` exceeds; the
/// relative ones only when the baseline has enough requests to compare.
fn exceeded(
    limits: &Limits,
    (c_rate, c_p99): (f64, f64),
    (b_rate, b_p99): (f64, f64),
    baseline_ok: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(max) = limits.error_rate.filter(|m| c_rate > *m) {
        out.push(format!("error rate {:.2}% above {:.2}%", c_rate * 100.0, max * 100.0));
    }
    if let Some(max) = limits.p99.filter(|m| c_p99 > m.as_secs_f64() * 1000.0) {
        out.push(format!("p99 {c_p99:.1} ms above {} ms", max.as_millis()));
    }
    if baseline_ok {
        // A small absolute floor keeps a perfect baseline from making any error count.
        if let Some(k) = limits.error_rate_vs_baseline.filter(|k| c_rate > (*k * b_rate).max(0.001)) {
            out.push(format!("error rate {:.2}% above {k}× the baseline's {:.2}%", c_rate * 100.0, b_rate * 100.0));
        }
        if let Some(k) = limits.p99_vs_baseline.filter(|k| c_p99 > *k * b_p99) {
            out.push(format!("p99 {c_p99:.1} ms above {k}× the baseline's {b_p99:.1} ms"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rollout::{RollbackWhen, Success};
    use std::time::Duration;

    pub(crate) fn analysis() -> Analysis {
        Analysis {
            interval: Duration::from_secs(1),
            window: Duration::from_secs(30),
            min_requests: 200,
            success: Success {
                max_error_rate: Some(0.001),
                max_p99: Some(Duration::from_secs(2)),
                ..Default::default()
            },
            rollback_when: RollbackWhen {
                error_rate_above: Some(0.01),
                p99_above: Some(Duration::from_secs(5)),
                min_requests: 10,
                ..Default::default()
            },
            policy: None,
        }
    }

    pub(crate) fn figures(requests: u64, fives: u64, p99_ms: u64) -> Figures {
        let mut f = Figures { requests, p99_us: p99_ms * 1000, ..Default::default() };
        f.status[1] = requests - fives;
        f.status[4] = fives;
        f
    }

    /// The same figures since the rollout and since the step.
    fn same(candidate: Figures, baseline: Figures) -> Observed {
        let p = Pair { candidate, baseline };
        Observed { since_rollout: p.clone(), since_step: p }
    }

    #[test]
    fn verdicts() {
        let a = analysis();
        let base = || figures(5000, 0, 100);
        let judged = |a: &Analysis, c: Figures, b: Figures| judge(a, &same(c, b));
        assert!(matches!(judged(&a, figures(300, 0, 100), base()), Verdict::Pass(_)));
        assert!(matches!(judged(&a, figures(50, 0, 100), base()), Verdict::Inconclusive(_)), "too few requests");
        assert!(matches!(judged(&a, figures(20, 5, 100), base()), Verdict::Breach(_)), "a breach needs fewer requests");
        assert!(matches!(judged(&a, figures(5, 5, 100), base()), Verdict::Inconclusive(_)), "but some");
        assert!(
            matches!(judged(&a, figures(1000, 5, 100), base()), Verdict::Fail(_)),
            "0.5%: fails success, no breach"
        );
        assert!(matches!(judged(&a, figures(300, 0, 6000), base()), Verdict::Breach(_)), "p99 above 5 s");
        let mut rel = a.clone();
        rel.rollback_when.p99_vs_baseline_above = Some(3.0);
        assert!(matches!(judged(&rel, figures(300, 0, 400), base()), Verdict::Breach(_)), "4× the baseline p99");
        assert!(
            matches!(judged(&rel, figures(300, 0, 400), figures(10, 0, 100)), Verdict::Pass(_)),
            "baseline too small to compare"
        );
    }

    #[test]
    fn breaches_read_the_rollout_and_success_the_step() {
        let a = analysis();
        let o = Observed {
            since_rollout: Pair { candidate: figures(300, 0, 100), baseline: figures(5000, 0, 100) },
            since_step: Pair { candidate: figures(300, 3, 100), baseline: figures(5000, 0, 100) },
        };
        assert!(matches!(judge(&a, &o), Verdict::Fail(_)), "1% in the step fails its success check");
        let o = Observed { since_rollout: Pair { candidate: figures(30, 30, 100), ..o.since_rollout }, ..o };
        assert!(matches!(judge(&a, &o), Verdict::Breach(_)));
    }
}
