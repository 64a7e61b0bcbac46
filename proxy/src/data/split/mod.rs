//! The split: which pool a request goes to. Runs once per request, after the
//! service is matched and before an endpoint is picked; it reads only the
//! request headers and the immutable [`Split`] of the current snapshot.
//!
//! Order: the rules, first match wins; then the weights — by the sticky key
//! when the request carries one ([`sticky`]), else in proportion along a
//! low-discrepancy sequence ([`Weights::spread`]).

mod mirror;
mod sticky;

pub use mirror::{Copying, Mirror};

use crate::config::{AttrSource, FlagCondition, RuleConfig, SplitConfig, StickyKey};
use crate::flags::FlagSet;
use crate::parse::cookie::cookie_value;
use crate::plugin::router::{RouteInput, RouterBinding};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

/// A compiled split of one service.
#[derive(Debug)]
pub struct Split {
    rules: Arc<[Rule]>,
    sticky: Option<StickyKey>,
    weights: Weights,
    /// By pool index: the pool was rolled back, so rules to it are suspended.
    suspended: Box<[bool]>,
}

#[derive(Debug)]
struct Rule {
    headers: Box<[(HeaderName, HeaderValue)]>,
    cookies: Box<[(String, String)]>,
    flag: Option<FlagCondition>,
    pool: usize,
    /// A router plugin rule: the plugin chooses the pool.
    router: Option<Arc<RouterBinding>>,
    /// The rule still applies to a rolled-back pool (a testers' rule).
    keep_on_rollback: bool,
}

/// What the split may read of a request.
pub struct RequestView<'r> {
    /// Request headers.
    pub headers: &'r HeaderMap,
    /// The normalised path.
    pub path: &'r str,
    /// The method.
    pub method: &'r Method,
    /// The raw query string, if any (router plugins read parameters from it).
    pub query: Option<&'r str>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// The flags in force, for flag rules.
    pub flags: Option<&'r FlagSet>,
    /// Evaluation-context attributes to take from the request.
    pub context: &'r [(String, AttrSource)],
}

impl<'r> RequestView<'r> {
    /// A view of headers alone (no flags).
    pub fn headers(headers: &'r HeaderMap) -> Self {
        static GET: Method = Method::GET;
        Self { headers, path: "/", method: &GET, query: None, client: None, flags: None, context: &[] }
    }

    /// The flag evaluation context's attributes.
    fn attributes(&self) -> Map<String, Value> {
        let text = |b: &[u8]| Value::String(String::from_utf8_lossy(b).into_owned());
        let mut m = Map::new();
        for (name, src) in self.context {
            let v = match src {
                AttrSource::Header(h) => self.headers.get(h).map(|v| text(v.as_bytes())),
                AttrSource::Cookie(c) => cookie_value(self.headers, c).map(text),
                AttrSource::Path => Some(Value::String(self.path.to_owned())),
                AttrSource::Method => Some(Value::String(self.method.as_str().to_owned())),
                AttrSource::ClientAddress => self.client.map(|ip| Value::String(ip.to_string())),
            };
            if let Some(v) = v {
                m.insert(name.clone(), v);
            }
        }
        m
    }
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
    /// No rule matched and there was no sticky key: chosen in proportion to the weights.
    Weight,
}

impl std::fmt::Display for AssignedBy {
    /// As the access log writes it: `rule[N]`, `sticky` or `weight`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule(n) => write!(f, "rule[{n}]"),
            Self::Sticky => f.write_str("sticky"),
            Self::Weight => f.write_str("weight"),
        }
    }
}

// === impl Split ===

impl Split {
    /// Compiles a validated split; `pool_names` are the service's pools in
    /// index order; `routers` holds the bound router of each plugin rule, in
    /// rule order (see [`Split::routers`]); rules to the `suspended` pools
    /// are skipped (see [`Split::with_traffic`]).
    pub fn new(
        cfg: &SplitConfig,
        pool_names: &[String],
        routers: Vec<Arc<RouterBinding>>,
        suspended: &BTreeSet<String>,
    ) -> Self {
        let mut routers = routers.into_iter();
        let rules = cfg
            .rules
            .iter()
            .map(|r: &RuleConfig| Rule {
                headers: r.headers.clone().into(),
                cookies: r.cookies.clone().into(),
                flag: r.flag.clone(),
                pool: r.pool,
                router: r.plugin.as_ref().and_then(|_| routers.next()),
                keep_on_rollback: r.keep_on_rollback,
            })
            .collect();
        Self {
            rules,
            sticky: cfg.sticky.clone(),
            weights: Weights::new(&cfg.weights, pool_names),
            suspended: suspension_mask(pool_names, suspended),
        }
    }

    /// The same rules and sticky key with other weights and suspended pools.
    /// A rule whose pool is suspended is skipped (its requests take the
    /// weights), unless it is marked `keep_on_rollback`; a router rule that
    /// chooses a suspended pool falls through likewise.
    pub fn with_traffic(&self, weights: &[u32], pool_names: &[String], suspended: &BTreeSet<String>) -> Self {
        Self {
            rules: self.rules.clone(),
            sticky: self.sticky.clone(),
            weights: Weights::new(weights, pool_names),
            suspended: suspension_mask(pool_names, suspended),
        }
    }

    /// The rules (by index) that are suspended now: those to a suspended
    /// pool, and router rules while any pool is suspended; testers' rules
    /// (`keep_on_rollback`) excepted.
    pub fn suspended_rules(&self) -> Vec<usize> {
        let any = self.suspended.iter().any(|s| *s);
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.keep_on_rollback && if r.router.is_some() { any } else { self.is_suspended(r.pool) })
            .map(|(i, _)| i)
            .collect()
    }

    fn is_suspended(&self, pool: usize) -> bool {
        self.suspended.get(pool).copied().unwrap_or(false)
    }

    /// The bound routers of the plugin rules, in rule order.
    pub fn routers(&self) -> impl Iterator<Item = &Arc<RouterBinding>> {
        self.rules.iter().filter_map(|r| r.router.as_ref())
    }

    /// Chooses the pool (an index into the service's pools) for a request.
    pub fn assign(&self, req: &RequestView<'_>) -> (usize, AssignedBy) {
        let headers = req.headers;
        // The flag evaluation context, built at the first flag rule, if any.
        let mut context = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some(router) = &rule.router {
                let input = RouteInput {
                    method: req.method.as_str(),
                    path: req.path,
                    sticky_key: self.sticky_key(headers),
                    headers,
                    query: req.query,
                    client: req.client,
                };
                match router.route(&input) {
                    Some(pool) if rule.keep_on_rollback || !self.is_suspended(pool) => {
                        return (pool, AssignedBy::Rule(i))
                    }
                    _ => continue,
                }
            }
            if (rule.keep_on_rollback || !self.is_suspended(rule.pool))
                && rule.matches(headers)
                && rule.flag_matches(self, req, &mut context)
            {
                return (rule.pool, AssignedBy::Rule(i));
            }
        }
        match self.sticky_key(headers) {
            Some(key) => (self.weights.by_key(key), AssignedBy::Sticky),
            None => (self.weights.spread(), AssignedBy::Weight),
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

    /// Whether any rule needs the flags.
    pub fn uses_flags(&self) -> bool {
        self.rules.iter().any(|r| r.flag.is_some())
    }
}

impl Rule {
    /// A flag condition holds when the flag resolves to `true` (or to the
    /// rule's variant) for the request's sticky key. A missing key, flag or
    /// a disabled flag: no match, so the next rule is tried.
    fn flag_matches(&self, split: &Split, req: &RequestView<'_>, context: &mut Option<Value>) -> bool {
        let Some(cond) = &self.flag else { return true };
        let (Some(flags), Some(key)) = (req.flags, split.sticky_key(req.headers)) else {
            return false;
        };
        let ctx = context.get_or_insert_with(|| crate::flags::context(req.attributes(), &String::from_utf8_lossy(key)));
        crate::flags::set_flag_key(ctx, &cond.key);
        match (flags.resolve(&cond.key, ctx), &cond.variant) {
            (Some((variant, _)), Some(want)) => variant == want,
            (Some((_, value)), None) => *value == Value::Bool(true),
            (None, _) => false,
        }
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        carries(headers, &self.headers, &self.cookies)
    }
}

/// Whether a request carries every one of these headers and cookies, with these values.
fn carries(headers: &HeaderMap, want: &[(HeaderName, HeaderValue)], cookies: &[(String, String)]) -> bool {
    want.iter().all(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
        && cookies.iter().all(|(name, value)| cookie_value(headers, name) == Some(value.as_bytes()))
}

fn suspension_mask(pool_names: &[String], suspended: &BTreeSet<String>) -> Box<[bool]> {
    pool_names.iter().map(|n| suspended.contains(n)).collect()
}

/// 2^64 / φ: the step of the sequence behind [`Weights::spread`].
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    /// Each thread starts at its own random point of the sequence.
    static SEQUENCE: std::cell::Cell<u64> = std::cell::Cell::new(fastrand::u64(..));
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

    /// A choice in proportion to the weights, along this thread's golden-ratio
    /// (Weyl) sequence: any run of n requests splits within a request or two
    /// of the weights, where independent random draws stray by about √n —
    /// so a 1 % canary at 100 requests a second gets one a second, not a
    /// Poisson trickle, and the split follows weights changed mid-run at once.
    /// The sequence is per thread and survives snapshot swaps.
    pub fn spread(&self) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return 0;
        }
        let u = SEQUENCE.with(|s| {
            let next = s.get().wrapping_add(GOLDEN);
            s.set(next);
            next
        });
        let r = ((u128::from(u) * u128::from(total)) >> 64) as u64;
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
        Split::new(&SplitConfig { sticky, rules, weights, mirror: None }, &names(), vec![], &BTreeSet::new())
    }

    #[test]
    fn rules_first_in_order() {
        let rules = vec![
            RuleConfig {
                headers: vec![(HeaderName::from_static("x-canary"), HeaderValue::from_static("always"))],
                cookies: vec![],
                flag: None,
                pool: 0,
                plugin: None,
                keep_on_rollback: false,
            },
            RuleConfig {
                headers: vec![],
                cookies: vec![("beta".into(), "1".into())],
                flag: None,
                pool: 1,
                plugin: None,
                keep_on_rollback: true,
            },
        ];
        let s = split(vec![0, 1], None, rules);
        let mut h = HeaderMap::new();
        assert_eq!(s.assign(&RequestView::headers(&h)), (1, AssignedBy::Weight));
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert_eq!(s.assign(&RequestView::headers(&h)), (0, AssignedBy::Rule(0)));
        h.insert("x-canary", HeaderValue::from_static("nope"));
        h.insert("cookie", HeaderValue::from_static("a=b; beta=1"));
        assert_eq!(s.assign(&RequestView::headers(&h)), (1, AssignedBy::Rule(1)));
    }

    #[test]
    fn suspended_pools_lose_their_rules_but_testers_rules_stay() {
        let rule = |value: &'static str, keep_on_rollback: bool| RuleConfig {
            headers: vec![(HeaderName::from_static("x-test"), HeaderValue::from_static(value))],
            cookies: vec![],
            flag: None,
            pool: 0,
            plugin: None,
            keep_on_rollback,
        };
        let rules = vec![rule("beta", false), rule("always", true)];
        let s = split(vec![0, 1], None, rules).with_traffic(&[0, 1], &names(), &["canary".to_string()].into());
        assert_eq!(s.suspended_rules(), vec![0]);
        let mut h = HeaderMap::new();
        h.insert("x-test", HeaderValue::from_static("beta"));
        assert_eq!(s.assign(&RequestView::headers(&h)), (1, AssignedBy::Weight), "suspended: takes the weights");
        let lifted = s.with_traffic(&[0, 1], &names(), &BTreeSet::new());
        assert!(lifted.suspended_rules().is_empty());
        assert_eq!(lifted.assign(&RequestView::headers(&h)), (0, AssignedBy::Rule(0)));
        h.insert("x-test", HeaderValue::from_static("always"));
        assert_eq!(s.assign(&RequestView::headers(&h)), (0, AssignedBy::Rule(1)), "the testers' rule still applies");
    }

    #[test]
    fn unkeyed_follows_weights() {
        let s = split(vec![1, 9999], None, vec![]);
        let n = 1_000_000;
        let canary = (0..n).filter(|_| s.assign(&RequestView::headers(&HeaderMap::new())).0 == 0).count();
        // 0.01 % of 1e6 = 100, sd = 10: a 6-sd band.
        assert!((40..=160).contains(&canary), "{canary}");
    }

    #[test]
    fn zero_weight_pool_gets_nothing() {
        let s = split(vec![0, 5], Some(StickyKey::Header(HeaderName::from_static("x-user"))), vec![]);
        for i in 0..10_000 {
            let mut h = HeaderMap::new();
            h.insert("x-user", HeaderValue::from(i));
            assert_eq!(s.assign(&RequestView::headers(&h)).0, 1);
            assert_eq!(s.assign(&RequestView::headers(&HeaderMap::new())).0, 1);
        }
    }

    #[test]
    fn flag_context_attributes_come_from_the_request() {
        let mut h = HeaderMap::new();
        h.insert("x-user-email", HeaderValue::from_static("ann@example.com"));
        h.insert("cookie", HeaderValue::from_static("plan=pro; other=1"));
        let context = [
            ("email".to_string(), AttrSource::Header(HeaderName::from_static("x-user-email"))),
            ("plan".to_string(), AttrSource::Cookie("plan".into())),
            ("path".to_string(), AttrSource::Path),
            ("method".to_string(), AttrSource::Method),
            ("ip".to_string(), AttrSource::ClientAddress),
            ("absent".to_string(), AttrSource::Header(HeaderName::from_static("x-nope"))),
        ];
        let view = RequestView {
            headers: &h,
            path: "/checkout/cart",
            method: &Method::POST,
            query: None,
            client: Some(IpAddr::from([192, 0, 2, 7])),
            flags: None,
            context: &context,
        };
        let attrs = Value::Object(view.attributes());
        assert_eq!(
            attrs,
            serde_json::json!({ "email": "ann@example.com", "plan": "pro", "path": "/checkout/cart", "method": "POST", "ip": "192.0.2.7" }),
            "absent sources are left out"
        );
    }

    #[test]
    fn sticky_key_is_stable_and_falls_back() {
        let s = split(vec![50, 50], Some(StickyKey::Cookie("session".into())), vec![]);
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("session=abc123"));
        let first = s.assign(&RequestView::headers(&h));
        assert_eq!(first.1, AssignedBy::Sticky);
        for _ in 0..100 {
            assert_eq!(s.assign(&RequestView::headers(&h)), first);
        }
        h.insert("cookie", HeaderValue::from_static("session="));
        assert_eq!(s.assign(&RequestView::headers(&h)).1, AssignedBy::Weight);
    }

    #[test]
    fn the_spread_follows_the_weights_within_a_request_or_two() {
        let names = names();
        for canary in [1u32, 10, 33, 50] {
            let w = Weights::new(&[canary, 100 - canary], &names);
            for run in [100usize, 1_000, 10_000] {
                let hits = (0..run).filter(|_| w.spread() == 0).count() as f64;
                let want = run as f64 * f64::from(canary) / 100.0;
                assert!((hits - want).abs() <= 3.0, "{canary}% over {run}: {hits} (want {want})");
            }
        }
        // Weights changed every few requests: the total still follows them.
        let (a, b) = (Weights::new(&[25, 75], &names), Weights::new(&[35, 65], &names));
        let hits = (0..10_000).filter(|i| if (i / 7) % 2 == 0 { a.spread() } else { b.spread() } == 0).count();
        assert!((2_950..=3_050).contains(&hits), "{hits} of 10000 at a mean weight of 30 %");
    }
}
