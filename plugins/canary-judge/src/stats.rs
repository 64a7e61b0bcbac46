//! The statistics: Fisher's exact test on failure counts, and the
//! Mann-Whitney U test on latency histograms.

/// One-sided p-value that the candidate's failure rate is higher than the
/// baseline's: P(X ≥ `c_fail`) for X hypergeometric — Fisher's exact test,
/// right for small counts. Above 10,000 failures in all, the two-proportion
/// z-test (the counts are then large enough for it).
pub fn fisher_worse(c_fail: u64, c_n: u64, b_fail: u64, b_n: u64) -> f64 {
    let (n, k, draws) = (c_n + b_n, c_fail + b_fail, c_n);
    if c_n == 0 || b_n == 0 || k == 0 {
        return 1.0;
    }
    if k > 10_000 {
        let (p1, p2, p) = (c_fail as f64 / c_n as f64, b_fail as f64 / b_n as f64, k as f64 / n as f64);
        let se = (p * (1.0 - p) * (1.0 / c_n as f64 + 1.0 / b_n as f64)).sqrt();
        return if se == 0.0 { 1.0 } else { upper_tail((p1 - p2) / se) };
    }
    let ln_denominator = ln_choose(n, draws);
    let top = k.min(draws);
    let lower = c_fail.max(draws.saturating_sub(n - k));
    if lower > top {
        return 0.0;
    }
    // log-sum-exp over the tail's terms.
    let terms: Vec<f64> =
        (lower..=top).map(|x| ln_choose(k, x) + ln_choose(n - k, draws - x) - ln_denominator).collect();
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>()).min(1.0)
}

/// The Mann-Whitney U test of "the candidate's latencies are larger", from
/// two histograms on the same bucket grid (ties share their mean rank).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// One-sided p-value (normal approximation with tie and continuity corrections).
    pub p: f64,
    /// P(candidate > baseline) + ½·P(tie): 0.5 means no shift.
    pub a12: f64,
}

/// Runs the test; `None` when either side is empty.
pub fn mann_whitney(candidate: &[(u64, u64)], baseline: &[(u64, u64)]) -> Option<MannWhitney> {
    let n_c: u64 = candidate.iter().map(|b| b.1).sum();
    let n_b: u64 = baseline.iter().map(|b| b.1).sum();
    if n_c == 0 || n_b == 0 {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    let (mut below, mut rank_sum, mut ties) = (0f64, 0f64, 0f64);
    while i < candidate.len() || j < baseline.len() {
        let upper = match (candidate.get(i), baseline.get(j)) {
            (Some(c), Some(b)) => c.0.min(b.0),
            (Some(c), None) => c.0,
            (None, Some(b)) => b.0,
            (None, None) => break,
        };
        let take = |h: &[(u64, u64)], at: &mut usize| match h.get(*at) {
            Some(&(u, n)) if u == upper => {
                *at += 1;
                n as f64
            }
            _ => 0.0,
        };
        let (c, b) = (take(candidate, &mut i), take(baseline, &mut j));
        let t = c + b;
        rank_sum += c * (below + (t + 1.0) / 2.0);
        ties += t * t * t - t;
        below += t;
    }
    let (nc, nb) = (n_c as f64, n_b as f64);
    let n = nc + nb;
    let u = rank_sum - nc * (nc + 1.0) / 2.0;
    let mean = nc * nb / 2.0;
    let var = nc * nb / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let p = if var <= 0.0 { 1.0 } else { upper_tail((u - mean - 0.5) / var.sqrt()) };
    Some(MannWhitney { p, a12: u / (nc * nb) })
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`,
/// fractional error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// ln(n!): exact sums below 256, Stirling's series above (error < 1e-12).
fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x) - 1.0 / (360.0 * x.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    #[test]
    fn fisher_matches_known_values() {
        // [C(4,3)·C(4,1) + C(4,4)·C(4,0)] / C(8,4) = 17/70
        assert!(close(fisher_worse(3, 4, 1, 4), 17.0 / 70.0, 1e-9));
        // C(1996,196) / C(2000,200), computed exactly with Python's math.comb
        let p = fisher_worse(4, 200, 0, 1800);
        assert!(close(p, 9.731_911_478_979_305e-5, 1e-9), "{p}");
        assert_eq!(fisher_worse(0, 100, 0, 100), 1.0);
        assert!(fisher_worse(0, 100, 5, 100) > 0.99);
        // Large counts switch to the z-test without a jump in meaning.
        assert!(fisher_worse(6_000, 100_000, 5_000, 100_000) < 1e-10);
        assert!(fisher_worse(5_000, 100_000, 5_050, 100_000) > 0.5);
    }

    #[test]
    fn ln_factorial_is_continuous_at_the_switch() {
        let exact: f64 = (2..=256u64).map(|i| (i as f64).ln()).sum();
        assert!(close(ln_factorial(256), exact, 1e-12));
    }

    #[test]
    fn mann_whitney_sees_shifts_not_noise() {
        let same = mann_whitney(&[(10, 50), (20, 50)], &[(10, 500), (20, 500)]).unwrap();
        assert!(same.p > 0.3 && (same.a12 - 0.5).abs() < 1e-9, "{same:?}");
        let slower = mann_whitney(&[(20, 50), (30, 50)], &[(10, 500), (20, 500)]).unwrap();
        assert!(slower.p < 1e-6 && slower.a12 > 0.8, "{slower:?}");
        let faster = mann_whitney(&[(5, 100)], &[(10, 100)]).unwrap();
        assert!(faster.p > 0.99 && faster.a12 == 0.0, "{faster:?}");
        assert!(mann_whitney(&[], &[(1, 1)]).is_none());
        // Small samples: exact U = 0 of 3×3 — normal approximation ≈ 0.04 (exact 0.05).
        let small = mann_whitney(&[(4, 1), (5, 1), (6, 1)], &[(1, 1), (2, 1), (3, 1)]).unwrap();
        assert!((0.02..0.07).contains(&small.p), "{small:?}");
    }

    #[test]
    fn normal_tail() {
        assert!(close(upper_tail(0.0), 0.5, 1e-6));
        assert!(close(upper_tail(1.959_964), 0.025, 1e-5));
        assert!(close(upper_tail(-1.959_964), 0.975, 1e-6));
    }
}
