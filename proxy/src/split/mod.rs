//! The split: which pool a request goes to. Runs once per request, after the
//! service is matched and before an endpoint is picked; it reads only the
//! request headers and the immutable [`Split`] of the current snapshot.
//!
//! Order: the rules, first match wins; then the weights — by the sticky key
//! when the request carries one ([`sticky`]), else at random in proportion.

mod cookie;
mod sticky;

pub use cookie::cookie_value;

use crate::config::{RuleConfig, SplitConfig, StickyKey};
use http::{HeaderMap, HeaderName, HeaderValue};

/// A compiled split of one service.
#[derive(Debug)]
pub struct Split {
    rules: Box<[Rule]>,
    sticky: Option<StickyKey>,
    weights: Weights,
}

#[derive(Debug)]
struct Rule {
    headers: Box<[(HeaderName, HeaderValue)]>,
    cookies: Box<[(String, String)]>,
    pool: usize,
}

/// Relative weights with what the two choosers need precomputed.
#[derive(Debug)]
pub struct Weights {
    weights: Box<[u32]>,
    /// Running sums, for the unkeyed choice.
    cumulative: Box<[u64]>,
    /// Per-pool hash seeds derived from the pool names, for the keyed choice.
    seeds: Box<[u64]>,
}

/// Why a request went to its pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignedBy {
    /// Rule number `n` (0-based) matched.
    Rule(usize),
    /// The sticky key chose by weight.
    Sticky,
    /// No rule matched and there was no sticky key: a weighted random choice.
    Weight,
}

// === impl Split ===

impl Split {
    /// Compiles a validated split; `pool_names` are the service's pools in index order.
    pub fn new(cfg: &SplitConfig, pool_names: &[String]) -> Self {
        let rules = cfg
            .rules
            .iter()
            .map(|r: &RuleConfig| Rule {
                headers: r.headers.clone().into(),
                cookies: r.cookies.clone().into(),
                pool: r.pool,
            })
            .collect();
        Self { rules, sticky: cfg.sticky.clone(), weights: Weights::new(&cfg.weights, pool_names) }
    }

    /// Chooses the pool (an index into the service's pools) for a request.
    pub fn assign(&self, headers: &HeaderMap) -> (usize, AssignedBy) {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(headers) {
                return (rule.pool, AssignedBy::Rule(i));
            }
        }
        match self.sticky_key(headers) {
            Some(key) => (self.weights.by_key(key), AssignedBy::Sticky),
            None => (self.weights.random(), AssignedBy::Weight),
        }
    }

    /// The request's sticky key, when the split has one and the request carries it.
    pub fn sticky_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        let key = match self.sticky.as_ref()? {
            StickyKey::Header(name) => headers.get(name).map(HeaderValue::as_bytes),
            StickyKey::Cookie(name) => cookie_value(headers, name),
        }?;
        (!key.is_empty()).then_some(key)
    }

    /// The weights, indexed like the pools.
    pub fn weights(&self) -> &[u32] {
        &self.weights.weights
    }
}

impl Rule {
    fn matches(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
            && self.cookies.iter().all(|(name, value)| cookie_value(headers, name) == Some(value.as_bytes()))
    }
}

// === impl Weights ===

impl Weights {
    /// Precomputes both choosers for `weights` (indexed like `pool_names`; not all zero).
    pub fn new(weights: &[u32], pool_names: &[String]) -> Self {
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        Self { weights: weights.into(), cumulative, seeds: pool_names.iter().map(|n| sticky::seed(n)).collect() }
    }

    /// A weighted random choice.
    pub fn random(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let r = fastrand::u64(..total);
        self.cumulative.iter().position(|c| r < *c).unwrap_or(0)
    }

    /// The weighted choice for a sticky key (see [`sticky`]).
    pub fn by_key(&self, key: &[u8]) -> usize {
        sticky::choose(key, &self.weights, &self.seeds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn names() -> Vec<String> {
        vec!["canary".into(), "stable".into()]
    }

    fn split(weights: Vec<u32>, sticky: Option<StickyKey>, rules: Vec<RuleConfig>) -> Split {
        Split::new(&SplitConfig { sticky, rules, weights }, &names())
    }

    #[test]
    fn rules_first_in_order() {
        let rules = vec![
            RuleConfig {
                headers: vec![(HeaderName::from_static("x-canary"), HeaderValue::from_static("always"))],
                cookies: vec![],
                pool: 0,
            },
            RuleConfig { headers: vec![], cookies: vec![("beta".into(), "1".into())], pool: 1 },
        ];
        let s = split(vec![0, 1], None, rules);
        let mut h = HeaderMap::new();
        assert_eq!(s.assign(&h), (1, AssignedBy::Weight));
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert_eq!(s.assign(&h), (0, AssignedBy::Rule(0)));
        h.insert("x-canary", HeaderValue::from_static("nope"));
        h.insert("cookie", HeaderValue::from_static("a=b; beta=1"));
        assert_eq!(s.assign(&h), (1, AssignedBy::Rule(1)));
    }

    #[test]
    fn unkeyed_follows_weights() {
        let s = split(vec![1, 9999], None, vec![]);
        let n = 1_000_000;
        let canary = (0..n).filter(|_| s.assign(&HeaderMap::new()).0 == 0).count();
        // 0.01 % of 1e6 = 100, sd = 10: a 6-sd band.
        assert!((40..=160).contains(&canary), "{canary}");
    }

    #[test]
    fn zero_weight_pool_gets_nothing() {
        let s = split(vec![0, 5], Some(StickyKey::Header(HeaderName::from_static("x-user"))), vec![]);
        for i in 0..10_000 {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from(i));
            assert_eq!(s.assign(&h).0, 1);
            assert_eq!(s.assign(&HeaderMap::new()).0, 1);
        }
    }

    #[test]
    fn sticky_key_is_stable_and_falls_back() {
        let s = split(vec![50, 50], Some(StickyKey::Cookie("session".into())), vec![]);
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("session=abc123"));
        let first = s.assign(&h);
        assert_eq!(first.1, AssignedBy::Sticky);
        for _ in 0..100 {
            assert_eq!(s.assign(&h), first);
        }
        h.insert("cookie", HeaderValue::from_static("session="));
        assert_eq!(s.assign(&h).1, AssignedBy::Weight);
    }
}
