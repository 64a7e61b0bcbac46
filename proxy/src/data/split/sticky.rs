//! Sticky assignment by weighted rendezvous hashing.
//!
//! Every pool scores the key: `score = weight / -ln(u)`, where `u` in (0, 1) is
//! the key hashed with a seed derived from the pool's name; the highest score
//! wins. The winner follows the weights exactly in expectation, and the choice
//! is monotonic: raising one pool's weight raises only that pool's score, so
//! keys can only move onto it, never between other pools or off it. Seeds come
//! from pool names, so adding a pool or restarting the proxy reshuffles nothing.
//! The hash is XXH3, stable across processes and machines.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The seed of a pool, from its name.
pub(super) fn seed(pool_name: &str) -> u64 {
    xxh3_64(pool_name.as_bytes())
}

/// The pool with the highest weighted score for `key`; pools with weight 0 never win.
pub(super) fn choose(key: &[u8], weights: &[u32], seeds: &[u64]) -> usize {
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for (i, (&w, &seed)) in weights.iter().zip(seeds).enumerate() {
        if w == 0 {
            continue;
        }
        let h = xxh3_64_with_seed(key, seed);
        // 53 random bits mapped into the open interval (0, 1).
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(w) / -u.ln();
        if score > best_score {
            best_score = score;
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(n: usize) -> Vec<u64> {
        (0..n).map(|i| seed(&format!("pool{i}"))).collect()
    }

    #[test]
    fn proportions_follow_weights() {
        let s = seeds(3);
        let w = [10, 30, 60];
        let mut counts = [0usize; 3];
        let n = 100_000;
        for k in 0..n {
            counts[choose(format!("user-{k}").as_bytes(), &w, &s)] += 1;
        }
        for (c, w) in counts.iter().zip(w) {
            let expect = n * w as usize / 100;
            // sd <= 155 at n = 1e5; 5 sd.
            assert!(c.abs_diff(expect) < 800, "{counts:?}");
        }
    }

    #[test]
    fn raising_a_weight_only_moves_keys_onto_that_pool() {
        let s = seeds(3);
        let keys: Vec<String> = (0..20_000).map(|k| format!("k{k}")).collect();
        let before_w = [5, 90, 5];
        // Pool 0 ramps up; the others keep their weights, so their shares shrink in proportion.
        for after_w in [[25, 90, 5], [90, 90, 5], [1000, 90, 5]] {
            let mut moved_onto = 0;
            for k in &keys {
                let a = choose(k.as_bytes(), &before_w, &s);
                let b = choose(k.as_bytes(), &after_w, &s);
                if a != b {
                    assert_eq!(b, 0, "key {k} moved {a} -> {b}, not onto the raised pool");
                    moved_onto += 1;
                }
            }
            assert!(moved_onto > 0);
        }
    }

    #[test]
    fn canary_ramp_is_monotonic() {
        // The two-pool ramp as release tooling drives it: canary 5 → 25 → 50 → 100 %.
        let s = seeds(2);
        let keys: Vec<String> = (0..20_000).map(|k| format!("user-{k}")).collect();
        let steps = [[95, 5], [75, 25], [50, 50], [0, 100]];
        for pair in steps.windows(2) {
            let mut on_canary = 0;
            for k in &keys {
                let a = choose(k.as_bytes(), &pair[0], &s);
                let b = choose(k.as_bytes(), &pair[1], &s);
                assert!(!(a == 1 && b == 0), "key {k} left the canary when it grew");
                on_canary += usize::from(b == 1);
            }
            let expect = keys.len() * pair[1][1] as usize / 100;
            assert!(on_canary.abs_diff(expect) < 400, "{on_canary} vs {expect}");
        }
    }
}
