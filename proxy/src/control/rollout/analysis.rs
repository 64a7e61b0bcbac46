//! Built-in analysis: judges the candidate's figures, absolutely and
//! against the baseline's. Pure: figures in, judgement out.
//!
//! `rollback_when` reads the window since the rollout started; `success`
//! the window since the current weights took effect (see [`super::evidence`]).
//!
//! With `method: sequential`, the relative criteria (`*_vs_baseline`) are
//! anytime-valid tests on the totals instead (`switchyard_sdk::sequential`,
//! the same code `canary-judge` runs): `error_rate_vs_baseline_above: k`
//! asks whether the candidate's failure rate is more than `k` times the
//! baseline's, `p99_vs_baseline_above: k` whether more of its requests are
//! slower than `k` times the baseline's p99 than its share explains. Each
//! criterion gets an equal part of `alpha`; `rollback_when`'s read the whole
//! rollout, `success`'s the step.

use crate::config::rollout::{Analysis, Method, Thresholds};
use crate::plugin::policy::window;
use crate::stats::Figures;
use serde::{Deserialize, Serialize};
use switchyard_sdk::sequential::{self, Segment};

/// What analysis concluded this tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "why", rename_all = "kebab-case")]
pub enum Judgement {
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

impl Judgement {
    /// The explanation.
    pub fn why(&self) -> &str {
        match self {
            Judgement::Breach(w)
            | Judgement::Pass(w)
            | Judgement::Fail(w)
            | Judgement::Inconclusive(w)
            | Judgement::Rollback(w) => w,
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
    /// Everything since the rollout started (`method: sequential`).
    pub rollout_totals: Pair,
    /// Everything since the current weights took effect (`method: sequential`).
    pub step_totals: Pair,
}

/// Judges the candidate against the thresholds and against the baseline:
/// first `rollback_when` on the figures since the rollout started, then
/// `success` on those since the current weights. Relative criteria apply
/// only when the baseline has enough requests too.
pub fn judge(a: &Analysis, o: &Observed) -> Judgement {
    if let Some(breach) = breached(a, &o.since_rollout) {
        return breach;
    }
    if a.method == Method::Sequential {
        let r = &a.rollback_when;
        let found = sequential_tests(a, o, r.error_rate_vs_baseline_above, r.p99_vs_baseline_above, false);
        if !found.is_empty() {
            return Judgement::Breach(found.join("; "));
        }
    }
    match judge_success(a, &o.since_step) {
        Judgement::Pass(why) if a.method == Method::Sequential => {
            let s = &a.success;
            let found = sequential_tests(a, o, s.max_error_rate_vs_baseline, s.max_p99_vs_baseline, true);
            if found.is_empty() {
                Judgement::Pass(why)
            } else {
                Judgement::Fail(format!("{} ({why})", found.join("; ")))
            }
        }
        v => v,
    }
}

/// The relative criteria as sequential tests: on the rollout's totals
/// (rollback_when) or the step's (`step`: success). Returns what they found.
fn sequential_tests(
    a: &Analysis,
    o: &Observed,
    error_ratio: Option<f64>,
    p99_ratio: Option<f64>,
    step: bool,
) -> Vec<String> {
    let criteria = [
        a.rollback_when.error_rate_vs_baseline_above,
        a.rollback_when.p99_vs_baseline_above,
        a.success.max_error_rate_vs_baseline,
        a.success.max_p99_vs_baseline,
    ];
    let alpha = a.alpha / criteria.iter().flatten().count().max(1) as f64;
    let w = |f: &Figures, name: &str| window(name, f);
    let (rc, rb) = (w(&o.rollout_totals.candidate, "candidate"), w(&o.rollout_totals.baseline, "baseline"));
    let (sc, sb) = (w(&o.step_totals.candidate, "candidate"), w(&o.step_totals.baseline, "baseline"));
    let segments = |of: &dyn Fn(&switchyard_sdk::PoolWindow, &switchyard_sdk::PoolWindow) -> Segment| {
        if step {
            vec![of(&sc, &sb)]
        } else {
            sequential::segments((&rc, &rb), (&sc, &sb), of).to_vec()
        }
    };
    let mut found = Vec::new();
    if let Some(k) = error_ratio {
        let s = segments(&Segment::failures);
        let e = sequential::worse_than(&s, k, alpha);
        if e.rejects() {
            let t = sequential::total(&s);
            found.push(format!(
                "failure rate above {k}× the baseline's (sequential, alpha {alpha:.4}): candidate {}/{}, baseline {}/{}, {e}",
                t.candidate_events, t.candidate_requests, t.baseline_events, t.baseline_requests
            ));
        }
    }
    if let Some(k) = p99_ratio {
        let threshold = if step { sb.quantile_us(0.99) } else { rb.quantile_us(0.99) };
        let s = segments(&|c, b| sequential::slow(c, b, threshold, k - 1.0));
        let e = sequential::worse_than(&s, 1.0, alpha);
        if e.rejects() {
            let t = sequential::total(&s);
            found.push(format!(
                "latency above {k}× the baseline's p99 {:.1} ms (sequential, alpha {alpha:.4}): {} of the candidate's {} requests vs {} of the baseline's {}, {e}",
                threshold as f64 / 1000.0, t.candidate_events, t.candidate_requests, t.baseline_events, t.baseline_requests
            ));
        }
    }
    found
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
fn breached(a: &Analysis, p: &Pair) -> Option<Judgement> {
    let r = &a.rollback_when;
    if p.candidate.requests < r.min_requests {
        return None;
    }
    let breaches = exceeded(&r.thresholds(), &p.candidate, &p.baseline, relative_on_window(a, &p.baseline));
    (!breaches.is_empty())
        .then(|| Judgement::Breach(format!("{} ({})", breaches.join("; "), describe(&p.candidate, &p.baseline))))
}

/// Pass, fail or inconclusive on the `success` criteria.
fn judge_success(a: &Analysis, p: &Pair) -> Judgement {
    let (candidate, baseline) = (&p.candidate, &p.baseline);
    let figures = describe(candidate, baseline);
    if candidate.requests < a.min_requests {
        return Judgement::Inconclusive(format!(
            "{} of the {} requests needed ({figures})",
            candidate.requests, a.min_requests
        ));
    }
    let fails = exceeded(&a.success.thresholds(), candidate, baseline, relative_on_window(a, baseline));
    if fails.is_empty() {
        Judgement::Pass(figures)
    } else {
        Judgement::Fail(format!("{} ({figures})", fails.join("; ")))
    }
}

/// Whether the relative criteria are judged on the window: with the window
/// method, once the baseline has enough requests to compare with.
fn relative_on_window(a: &Analysis, baseline: &Figures) -> bool {
    a.method == Method::Window && baseline.requests >= a.min_requests
}

/// Which of `limits` the candidate's figures exceed (error rate, p99, the
/// share of its mirrored copies that mismatched); the relative ones only
/// when the baseline has enough requests to compare.
fn exceeded(limits: &Thresholds, candidate: &Figures, baseline: &Figures, baseline_ok: bool) -> Vec<String> {
    let ((c_rate, c_p99), (b_rate, b_p99)) = (rates(candidate), rates(baseline));
    let mut out = Vec::new();
    let [compared, mismatched, _] = candidate.mirror;
    if let Some(max) = limits.mirror_mismatch.filter(|m| compared > 0 && candidate.mismatch_rate() > *m) {
        out.push(format!(
            "{mismatched} of {compared} mirrored requests ({:.2}%) answered unlike the baseline, above {:.2}%",
            candidate.mismatch_rate() * 100.0,
            max * 100.0
        ));
    }
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
            method: Method::Window,
            alpha: 0.01,
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
        Observed { since_rollout: p.clone(), since_step: p.clone(), rollout_totals: p.clone(), step_totals: p }
    }

    #[test]
    fn verdicts() {
        let a = analysis();
        let base = || figures(5000, 0, 100);
        let judged = |a: &Analysis, c: Figures, b: Figures| judge(a, &same(c, b));
        assert!(matches!(judged(&a, figures(300, 0, 100), base()), Judgement::Pass(_)));
        assert!(matches!(judged(&a, figures(50, 0, 100), base()), Judgement::Inconclusive(_)), "too few requests");
        assert!(
            matches!(judged(&a, figures(20, 5, 100), base()), Judgement::Breach(_)),
            "a breach needs fewer requests"
        );
        assert!(matches!(judged(&a, figures(5, 5, 100), base()), Judgement::Inconclusive(_)), "but some");
        assert!(
            matches!(judged(&a, figures(1000, 5, 100), base()), Judgement::Fail(_)),
            "0.5%: fails success, no breach"
        );
        assert!(matches!(judged(&a, figures(300, 0, 6000), base()), Judgement::Breach(_)), "p99 above 5 s");
        let mut rel = a.clone();
        rel.rollback_when.p99_vs_baseline_above = Some(3.0);
        assert!(matches!(judged(&rel, figures(300, 0, 400), base()), Judgement::Breach(_)), "4× the baseline p99");
        assert!(
            matches!(judged(&rel, figures(300, 0, 400), figures(10, 0, 100)), Judgement::Pass(_)),
            "baseline too small to compare"
        );
    }

    #[test]
    fn breaches_read_the_rollout_and_success_the_step() {
        let a = analysis();
        let o = Observed {
            since_rollout: Pair { candidate: figures(300, 0, 100), baseline: figures(5000, 0, 100) },
            since_step: Pair { candidate: figures(300, 3, 100), baseline: figures(5000, 0, 100) },
            ..Default::default()
        };
        assert!(matches!(judge(&a, &o), Judgement::Fail(_)), "1% in the step fails its success check");
        let o = Observed { since_rollout: Pair { candidate: figures(30, 30, 100), ..o.since_rollout }, ..o };
        assert!(matches!(judge(&a, &o), Judgement::Breach(_)));
    }

    #[test]
    fn the_sequential_method_judges_relative_criteria_on_the_totals() {
        let mut a = analysis();
        a.method = Method::Sequential;
        a.success = Success::default();
        a.rollback_when.error_rate_above = None;
        a.rollback_when.error_rate_vs_baseline_above = Some(1.5);
        let o = |c_failed| Observed {
            rollout_totals: Pair { candidate: figures(2_000, c_failed, 100), baseline: figures(8_000, 40, 100) },
            ..Default::default()
        };
        assert!(matches!(judge(&a, &o(10)), Judgement::Inconclusive(_)), "the baseline's rate: nothing found");
        let v = judge(&a, &o(40));
        assert!(
            matches!(v, Judgement::Breach(ref why) if why.contains("sequential") && why.contains("log-LR")),
            "{v:?}"
        );
        a.method = Method::Window;
        assert!(matches!(judge(&a, &o(40)), Judgement::Inconclusive(_)), "the window method reads the windows");
    }
}
