//! The judges, simulated: how often each rolls back a healthy canary over a
//! whole hold, and how fast it catches a real regression.
//!
//! Synthetic per-second traffic — Poisson arrivals, the canary at 20 %,
//! binomial failures (baseline 0.5 %), log-normal latencies (median 20 ms,
//! σ 0.5) bucketed on the policy grid — feeds the real judge code every
//! 1 s tick, on a 10 s window:
//! - `canary-judge` natively (its `Policy` impl, as the SDK harness runs it),
//!   `method: sequential` and `method: fixed` (Fisher + Mann-Whitney);
//! - the built-in analysis (`switchyard::control::rollout::judge`) with relative
//!   criteria (`error_rate_vs_baseline_above: 1.5`, `p99_vs_baseline_above: 1.2`),
//!   `method: window` and `method: sequential`.
//!
//! Each rollout is one step held for `hold`; the regression, if any, is
//! there from the start. `ROLLOUTS` (default 1000) rollouts per case.
//!
//! Run: `cargo bench -p switchyard --bench judge` (a few minutes on 2
//! cores); the table goes to stdout and `target/judge-sim.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
use switchyard::control::rollout::analysis::{judge, Judgement as BuiltIn, Observed, Pair};
use switchyard::stats::Figures;
use switchyard_sdk::policy::latency_bucket;
use switchyard_sdk::{Config, Context, Decision, Phase, Policy, PoolWindow, Strategy};

const SHARE: f64 = 0.2;
const BASE_ERRORS: f64 = 0.005;
const WINDOW: usize = 10;
const JUDGES: [&str; 4] = ["canary-judge sequential", "canary-judge fixed", "built-in sequential", "built-in window"];

/// What differs in the canary.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    extra_errors: f64,
    latency_factor: f64,
}

/// The latency grid: bucket upper bounds (µs) and, per latency factor, each
/// bucket's probability under the log-normal (estimated once, by sampling).
struct Grid {
    uppers: Vec<u64>,
    probs: Vec<(f64, Vec<f64>)>,
}

impl Grid {
    fn new(factors: &[f64]) -> Self {
        let mut uppers = Vec::new();
        let mut u = latency_bucket(500);
        while u < 5_000_000 {
            uppers.push(u);
            u = latency_bucket(u + 1);
        }
        let mut rng = SmallRng::seed_from_u64(1);
        let dist = LogNormal::new((20_000f64).ln(), 0.5).unwrap();
        let probs = factors
            .iter()
            .map(|&f| {
                let mut counts = vec![0u64; uppers.len()];
                let n = 4_000_000;
                for _ in 0..n {
                    counts[Grid::index(&uppers, dist.sample(&mut rng) * f)] += 1;
                }
                (f, counts.into_iter().map(|c| c as f64 / n as f64).collect())
            })
            .collect();
        Grid { uppers, probs }
    }

    fn index(uppers: &[u64], us: f64) -> usize {
        let b = latency_bucket(us.max(1.0) as u64);
        uppers.partition_point(|&u| u < b).min(uppers.len() - 1)
    }

    fn probs(&self, factor: f64) -> &[f64] {
        &self.probs.iter().find(|(f, _)| *f == factor).unwrap().1
    }
}

/// One pool's second, or a sum of seconds.
#[derive(Clone)]
struct Counts {
    requests: u64,
    failed: u64,
    hist: Vec<u64>,
}

impl Counts {
    fn new(buckets: usize) -> Self {
        Counts { requests: 0, failed: 0, hist: vec![0; buckets] }
    }

    fn add(&mut self, o: &Counts, sign: i64) {
        let f = |a: u64, b: u64| (a as i64 + sign * b as i64) as u64;
        self.requests = f(self.requests, o.requests);
        self.failed = f(self.failed, o.failed);
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a = f(*a, *b);
        }
    }

    /// One second of `rate` requests a second.
    fn second(rng: &mut SmallRng, grid: &Grid, rate: f64, errors: f64, factor: f64) -> Counts {
        let mut c = Counts::new(grid.uppers.len());
        for (slot, p) in c.hist.iter_mut().zip(grid.probs(factor)) {
            let lambda = rate * p;
            if lambda > 1e-9 {
                *slot = Poisson::new(lambda).unwrap().sample(rng) as u64;
            }
        }
        c.requests = c.hist.iter().sum();
        c.failed = Binomial::new(c.requests, errors).unwrap().sample(rng);
        c
    }

    fn latency(&self, uppers: &[u64]) -> Vec<(u64, u64)> {
        uppers.iter().zip(&self.hist).filter(|(_, n)| **n > 0).map(|(u, n)| (*u, *n)).collect()
    }

    fn window(&self, name: &str, uppers: &[u64]) -> PoolWindow {
        let mut status = [0; 5];
        status[1] = self.requests - self.failed;
        status[4] = self.failed;
        let latency = self.latency(uppers);
        let q = |q: f64| PoolWindow { latency: latency.clone(), ..Default::default() }.quantile_us(q);
        PoolWindow {
            name: name.into(),
            requests: self.requests,
            status,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: latency.last().map_or(0, |l| l.0),
            latency,
            ..Default::default()
        }
    }

    fn figures(&self, uppers: &[u64]) -> Figures {
        let mut raw = Figures { requests: self.requests, latency: self.latency(uppers), ..Default::default() };
        raw.status[1] = self.requests - self.failed;
        raw.status[4] = self.failed;
        let mut f = Figures::default();
        f.merge(&raw); // computes the quantiles
        f
    }
}

/// How one judge ended one rollout.
#[derive(Clone, Copy, Default)]
struct End {
    rolled_back_at: Option<u32>,
    promoted: bool,
}

fn context(window: [&Counts; 2], totals: [&Counts; 2], uppers: &[u64], hold: u32, t: u32) -> Context {
    let w = |c: &Counts, n| c.window(n, uppers);
    let totals = vec![w(totals[0], "stable"), w(totals[1], "canary")];
    Context {
        service: "sim".into(),
        strategy: Strategy::Canary,
        phase: Phase::Stepping,
        step: 0,
        steps: 1,
        in_step_ms: u64::from(t) * 1000,
        hold_ms: Some(u64::from(hold) * 1000),
        interval_ms: 1000,
        baseline: "stable".into(),
        candidate: "canary".into(),
        weights: vec![("stable".into(), 80), ("canary".into(), 20)],
        pre_switch: None,
        faults: 0,
        pools: vec![w(window[0], "stable"), w(window[1], "canary")],
        rollout_totals: totals.clone(),
        step_totals: totals,
    }
}

/// Simulates one rollout; every judge sees the same traffic.
fn rollout(seed: u64, grid: &Grid, rate: f64, hold: u32, case: Case, judges: &Judges) -> [End; 4] {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = grid.uppers.len();
    let (mut ring, mut win, mut total) =
        (Vec::new(), [Counts::new(n), Counts::new(n)], [Counts::new(n), Counts::new(n)]);
    let mut ends = [End::default(); 4];
    let mut running = [true; 4];
    for t in 1..=hold {
        let base = Counts::second(&mut rng, grid, rate * (1.0 - SHARE), BASE_ERRORS, 1.0);
        let cand = Counts::second(&mut rng, grid, rate * SHARE, BASE_ERRORS + case.extra_errors, case.latency_factor);
        for (i, c) in [&base, &cand].into_iter().enumerate() {
            win[i].add(c, 1);
            total[i].add(c, 1);
        }
        ring.push([base, cand]);
        if ring.len() > WINDOW {
            let old = ring.remove(0);
            win[0].add(&old[0], -1);
            win[1].add(&old[1], -1);
        }
        let last = t == hold;
        let ctx = context([&win[0], &win[1]], [&total[0], &total[1]], &grid.uppers, hold, t);
        let pair =
            |c: &[Counts; 2]| Pair { candidate: c[1].figures(&grid.uppers), baseline: c[0].figures(&grid.uppers) };
        let (wp, tp) = (pair(&win), pair(&total));
        let observed =
            Observed { since_rollout: wp.clone(), since_step: wp, rollout_totals: tp.clone(), step_totals: tp };
        for j in 0..4 {
            if !running[j] {
                continue;
            }
            let (rollback, pass) = match j {
                0 | 1 => {
                    let v = judges.canary[j].decide(&ctx);
                    (matches!(v.decision, Decision::Rollback(_)), v.decision == Decision::Promote)
                }
                _ => match judge(&judges.builtin[j - 2], &observed) {
                    BuiltIn::Breach(_) | BuiltIn::Rollback(_) => (true, false),
                    BuiltIn::Fail(_) => (last, false),
                    BuiltIn::Pass(_) => (false, true),
                    BuiltIn::Inconclusive(_) => (false, false),
                },
            };
            if rollback {
                ends[j].rolled_back_at = Some(t);
                running[j] = false;
            } else if last {
                ends[j].promoted = pass;
            }
        }
        if !running.iter().any(|r| *r) {
            break;
        }
    }
    ends
}

struct Judges {
    canary: [canary_judge::CanaryJudge; 2],
    builtin: [switchyard::config::rollout::Analysis; 2],
}

fn judges() -> Judges {
    let canary = |cfg: &str| <canary_judge::CanaryJudge as Policy>::init(&Config::new(cfg.to_owned())).unwrap();
    let builtin = |method: &str| {
        let yaml = format!(
            "steps: [{{ weight: 20, hold: 1h }}]\nanalysis:\n  interval: 1s\n  window: 10s\n  min_requests: 100\n  \
             method: {method}\n  alpha: 0.01\n  rollback_when: {{ error_rate_vs_baseline_above: 1.5, \
             p99_vs_baseline_above: 1.2, min_requests: 100 }}\n"
        );
        switchyard::config::parse_plan(&yaml, &["canary".into(), "stable".into()]).unwrap().analysis
    };
    Judges {
        canary: [canary(r#"{"method": "sequential"}"#), canary(r#"{"method": "fixed"}"#)],
        builtin: [builtin("sequential"), builtin("window")],
    }
}

fn main() {
    let rollouts: u64 = std::env::var("ROLLOUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let cases = [
        Case { name: "healthy", extra_errors: 0.0, latency_factor: 1.0 },
        Case { name: "+1 point errors", extra_errors: 0.01, latency_factor: 1.0 },
        Case { name: "+2 points errors", extra_errors: 0.02, latency_factor: 1.0 },
        Case { name: "+5 points errors", extra_errors: 0.05, latency_factor: 1.0 },
        Case { name: "+20 % latency", extra_errors: 0.0, latency_factor: 1.2 },
        Case { name: "+50 % latency", extra_errors: 0.0, latency_factor: 1.5 },
    ];
    let grid = Grid::new(&[1.0, 1.2, 1.5]);
    let judges = judges();
    let mut out = format!(
        "{rollouts} simulated rollouts per row; canary at 20 %, baseline 0.5 % errors, 1 s ticks, 10 s window.\n\
         Each cell: rolled back % · median / p90 seconds to the rollback · promoted % at the end of the hold.\n\n\
         | case | req/s | hold | {} |\n|---|---:|---:|{}\n",
        JUDGES.join(" | "),
        "---|".repeat(JUDGES.len())
    );
    for case in cases {
        let holds: &[u32] = if case.name == "healthy" { &[40, 900] } else { &[900] };
        for &hold in holds {
            for rate in [5.0, 50.0, 500.0, 5000.0] {
                let ends = run_cell(rollouts, &grid, rate, hold, case, &judges);
                let cells: Vec<String> = (0..4).map(|j| cell(&ends, j)).collect();
                let hold_text = if hold >= 60 { format!("{} min", hold / 60) } else { format!("{hold} s") };
                let line = format!("| {} | {rate} | {hold_text} | {} |\n", case.name, cells.join(" | "));
                print!("{line}");
                out.push_str(&line);
            }
        }
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/judge-sim.md");
    if std::fs::write(&path, &out).is_ok() {
        eprintln!("table written to {}", path.display());
    }
}

/// Runs a case's rollouts on two threads.
fn run_cell(rollouts: u64, grid: &Grid, rate: f64, hold: u32, case: Case, judges: &Judges) -> Vec<[End; 4]> {
    let threads = 2;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    (k..rollouts)
                        .step_by(threads as usize)
                        .map(|i| rollout(i * 7919 + rate as u64 * 31 + u64::from(hold), grid, rate, hold, case, judges))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn cell(ends: &[[End; 4]], j: usize) -> String {
    let mut times: Vec<u32> = ends.iter().filter_map(|e| e[j].rolled_back_at).collect();
    times.sort_unstable();
    let n = ends.len() as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    let promoted = ends.iter().filter(|e| e[j].promoted).count();
    let at = |q: f64| times[((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1];
    let rb = if times.is_empty() {
        "0 %".to_owned()
    } else {
        format!("{:.1} % · {} / {} s", pct(times.len()), at(0.5), at(0.9))
    };
    format!("{rb} · {:.0} %", pct(promoted))
}
