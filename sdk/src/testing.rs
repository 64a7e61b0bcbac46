//! A native test harness: run a router or policy with `cargo test`, on the
//! host, without WebAssembly — the same trait code the component runs.
//!
//! ```
//! use switchyard_sdk::testing::{self, Window};
//! use switchyard_sdk::{Config, Context, Decision, Policy, Verdict};
//!
//! struct Strict;
//! impl Policy for Strict {
//!     fn init(_: &Config) -> Result<Self, String> { Ok(Strict) }
//!     fn decide(&self, ctx: &Context) -> Verdict {
//!         if ctx.candidate_window().error_rate() > 0.01 { Verdict::rollback("errors") } else { Verdict::promote("ok") }
//!     }
//! }
//!
//! let ctx = testing::canary(
//!     Window::new("stable").ok(1000).latency_ms(20, 1000),
//!     Window::new("canary").ok(98).failed(2).latency_ms(20, 100),
//! );
//! let verdict = testing::decide::<Strict>("null", &ctx).unwrap();
//! assert_eq!(verdict.decision, Decision::Rollback("errors".into()));
//! ```

use crate::policy::{latency_bucket, Phase, Strategy};
use crate::{Config, Context, Policy, PoolWindow, Pools, Request, Router, Verdict};

/// Builds a router from JSON config and pool names, as the host does.
pub fn router<R: Router>(config: &str, pools: &[&str]) -> Result<RouterHarness<R>, String> {
    let pools = Pools::new(pools.iter().map(|p| (*p).to_owned()).collect());
    Ok(RouterHarness { router: R::init(&Config::new(config), &pools)?, pools })
}

/// A router with its pools, answering with pool names.
pub struct RouterHarness<R> {
    router: R,
    pools: Pools,
}

impl<R: Router> RouterHarness<R> {
    /// The pool name `req` goes to, or `None`. The router sees what the host
    /// would hand it: method, path, sticky key, and only the headers,
    /// query parameters, client address and cookies its `needs()` declares
    /// (the first value of each), so a router that reads one it forgot to
    /// declare fails here as in the proxy.
    /// An index outside the pools is an error, as the host treats it.
    pub fn route(&self, req: &Request) -> Result<Option<String>, String> {
        let needs = self.router.needs();
        let mut seen = crate::RequestBuilder::new(Vec::new(), req.method(), req.path(), req.sticky_key());
        for name in &needs.headers {
            if let Some(v) = req.header(name) {
                seen.push_header(name, v);
            }
        }
        for name in &needs.cookies {
            if let Some(v) = req.cookie(name) {
                seen.push_cookie(name, v);
            }
        }
        match self.router.route(&seen.build())? {
            None => Ok(None),
            Some(p) => match self.pools.name(p) {
                Some(name) => Ok(Some(name.to_owned())),
                None => {
                    Err(format!("answered pool index {}, beyond the {} pools", p.index(), self.pools.names().len()))
                }
            },
        }
    }
}

/// Runs one tick of a policy as the host does: `init` with `config` (JSON),
/// then `decide`.
pub fn decide<P: Policy>(config: &str, ctx: &Context) -> Result<Verdict, String> {
    Ok(P::init(&Config::new(config))?.decide(ctx))
}

/// A canary context at step 1 of 3 with its hold just elapsed, weights
/// 90/10, and totals equal to the windows (a rollout as old as its window);
/// adjust the public fields as needed.
pub fn canary(baseline: Window, candidate: Window) -> Context {
    let (b, c) = (baseline.build(), candidate.build());
    Context {
        service: "checkout".into(),
        strategy: Strategy::Canary,
        phase: Phase::Stepping,
        step: 0,
        steps: 3,
        in_step_ms: 60_000,
        hold_ms: Some(60_000),
        interval_ms: 1_000,
        weights: vec![(b.name.clone(), 90), (c.name.clone(), 10)],
        baseline: b.name.clone(),
        candidate: c.name.clone(),
        pre_switch: None,
        faults: 0,
        rollout_totals: vec![b.clone(), c.clone()],
        step_totals: vec![b.clone(), c.clone()],
        pools: vec![b, c],
    }
}

/// A blue-green context just after the switch: the candidate has all
/// traffic; `pre_switch` is the baseline's window from before it.
pub fn post_switch(pre_switch: Window, baseline_now: Window, candidate: Window) -> Context {
    let (b, c) = (baseline_now.build(), candidate.build());
    Context {
        service: "checkout".into(),
        strategy: Strategy::BlueGreen,
        phase: Phase::PostSwitch,
        step: 1,
        steps: 0,
        in_step_ms: 5_000,
        hold_ms: None,
        interval_ms: 1_000,
        weights: vec![(b.name.clone(), 0), (c.name.clone(), 100)],
        baseline: b.name.clone(),
        candidate: c.name.clone(),
        pre_switch: Some(pre_switch.build()),
        faults: 0,
        rollout_totals: vec![b.clone(), c.clone()],
        step_totals: vec![b.clone(), c.clone()],
        pools: vec![b, c],
    }
}

/// Builds a synthetic [`PoolWindow`]: counts, the bucketed histogram, and
/// `p50_us`..`p999_us` and `max_us` read from the latencies as the host
/// records them ([`recorded_us`](crate::recorded_us)), so a policy decides
/// on the same figures here as in the proxy.
#[derive(Clone, Debug)]
pub struct Window(PoolWindow, Vec<(u64, u64)>);

impl Window {
    /// An empty window for pool `name`.
    pub fn new(name: &str) -> Self {
        Window(PoolWindow { name: name.into(), ..Default::default() }, Vec::new())
    }

    /// Adds `n` successful (2xx) requests.
    pub fn ok(mut self, n: u64) -> Self {
        self.0.status[1] += n;
        self.0.requests += n;
        self
    }

    /// Adds `n` failed (5xx) requests.
    pub fn failed(mut self, n: u64) -> Self {
        self.0.status[4] += n;
        self.0.requests += n;
        self
    }

    /// Adds `n` latencies of `ms` milliseconds to the histogram (requests
    /// are counted by [`Window::ok`] and [`Window::failed`]).
    pub fn latency_ms(self, ms: u64, n: u64) -> Self {
        self.latency_us(ms * 1000, n)
    }

    /// Adds `n` latencies of `us` microseconds.
    pub fn latency_us(mut self, us: u64, n: u64) -> Self {
        let add = |into: &mut Vec<(u64, u64)>, v: u64| match into.binary_search_by_key(&v, |&(u, _)| u) {
            Ok(i) => into[i].1 += n,
            Err(i) => into.insert(i, (v, n)),
        };
        add(&mut self.0.latency, latency_bucket(us));
        add(&mut self.1, crate::recorded_us(us));
        self
    }

    /// The window, its percentiles read as the host reads them.
    pub fn build(mut self) -> PoolWindow {
        let q = |v: f64| crate::quantile(&self.1, v);
        (self.0.p50_us, self.0.p90_us, self.0.p99_us, self.0.p999_us) = (q(0.5), q(0.9), q(0.99), q(0.999));
        self.0.max_us = self.1.last().map_or(0, |&(u, _)| u);
        self.0
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Needs, Pool, Pools, Request, Router};

    /// Reads `x-beta`; declares it only when told to.
    struct Beta {
        canary: Pool,
        declares: bool,
    }

    impl Router for Beta {
        fn init(config: &Config, pools: &Pools) -> Result<Self, String> {
            Ok(Beta { canary: pools.get("canary")?, declares: config.text().contains("declare") })
        }
        fn needs(&self) -> Needs {
            Needs { headers: if self.declares { vec!["x-beta".into()] } else { vec![] }, cookies: vec![] }
        }
        fn route(&self, req: &Request) -> Result<Option<Pool>, String> {
            Ok((req.header("x-beta") == Some("1")).then_some(self.canary))
        }
    }

    #[test]
    fn windows_read_percentiles_from_latencies_as_the_host_records_them() {
        let w = super::Window::new("canary").ok(100).latency_ms(200, 99).latency_ms(900, 1).build();
        assert_eq!(w.p50_us, 200_063, "200 ms within 3 significant digits, not its 12.5 % bucket's top");
        assert_eq!(w.p99_us, 200_063);
        assert_eq!(w.max_us, crate::recorded_us(900_000));
        assert_eq!(w.quantile_us(0.5), crate::policy::latency_bucket(200_000), "the histogram keeps its buckets");
    }

    #[test]
    fn the_harness_hands_the_router_only_what_it_declares_as_the_host_does() {
        let req = Request::builder("GET", "/").header("X-Beta", "1").header("x-other", "2").build();
        let declared = super::router::<Beta>(r#""declare""#, &["stable", "canary"]).unwrap();
        assert_eq!(declared.route(&req).unwrap().as_deref(), Some("canary"));
        let forgot = super::router::<Beta>("null", &["stable", "canary"]).unwrap();
        assert_eq!(forgot.route(&req).unwrap(), None, "an undeclared header never arrives, in the proxy or here");
    }
}
