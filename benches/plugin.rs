//! Plugin costs in the real host (release build, the real components):
//! - a warm `cohort-router` call per request, on realistic request headers
//!   (host encode + call + decode), beside the built-in header rule that
//!   makes the same split, and beside the JavaScript reference router
//!   (`beta-router`, ComponentizeJS; built by `scripts/build-js-plugins.sh`)
//!   on the same headers;
//! - one `canary-judge` tick (fresh instance, `init`, `decide`) on windows
//!   of 30 000 requests each;
//! - how long a plugin that spins runs before its CPU budget stops it.
//!
//! Run: `cargo bench -p switchyard --bench plugin`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use switchyard_test_support::plugins as wasm_plugins;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::data::split::{RequestView, Split};
use switchyard::plugin::policy::{decide, window};
use switchyard::plugin::router::{RouteInput, RouterBinding};
use switchyard::plugin::{LoadOptions, Plugin, POLICY_FUEL, ROUTER_FUEL};
use switchyard::stats::Figures;
use switchyard::Config;
use switchyard_sdk::{Context, Phase, Strategy};

fn load(name: &str) -> Arc<Plugin> {
    let bytes = std::fs::read(wasm_plugins::wasm(name)).unwrap();
    Plugin::load(name, &bytes, ("bench", &Default::default()), serde_json::Value::Null).unwrap()
}

fn headers(cohort: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ("accept", "text/html,application/xhtml+xml"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("x-cohort", cohort),
        ("cookie", "theme=dark; session=8d7f6e5a4b3c2d1e; consent=1"),
        ("x-request-id", "a1b2c3d4"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

/// The built-in equivalent: a header rule sending `x-cohort: beta` to canary.
fn header_rule_split() -> Split {
    let yaml = r#"
listeners: [{ name: l, bind: "127.0.0.1:0" }]
services:
  - name: checkout
    pools:
      canary: { endpoints: ["127.0.0.1:9002"] }
      stable: { endpoints: ["127.0.0.1:9001"] }
    split:
      sticky: { cookie: session }
      rules:
        - { match: { header: { x-cohort: beta } }, pool: canary }
      weights: { stable: 90, canary: 10 }
"#;
    let cfg = Config::from_yaml(yaml, Path::new(".")).unwrap();
    let svc = &cfg.services[0];
    let names: Vec<String> = svc.pools.iter().map(|p| p.name.clone()).collect();
    Split::new(&svc.split, &names, vec![], &Default::default())
}

/// A window of 30 000 requests with latencies spread like a real service.
fn figures(seed: u64, failed: u64) -> Figures {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut lat: Vec<u64> =
        (0..30_000).map(|_| 2_000 + rng.u64(0..8_000) + rng.u64(0..1_000) * rng.u64(0..20)).collect();
    lat.sort_unstable();
    let mut latency: Vec<(u64, u64)> = Vec::new();
    for v in lat {
        match latency.last_mut() {
            Some(l) if l.0 == v => l.1 += 1,
            _ => latency.push((v, 1)),
        }
    }
    let mut f = Figures { requests: 30_000, p50_us: 6_000, p99_us: 20_000, latency, ..Default::default() };
    f.status[1] = 30_000 - failed;
    f.status[4] = failed;
    f
}

fn bench(c: &mut Criterion) {
    let pools = vec!["canary".to_owned(), "stable".to_owned()];
    let config = serde_json::json!({ "header": { "name": "x-cohort", "values": ["beta"] }, "percent": 5 });
    let router = RouterBinding::new(load("cohort-router"), &config, pools, &[], &[]).unwrap();
    let split = header_rule_split();
    let mut g = c.benchmark_group("router");
    for cohort in ["beta", "other"] {
        let h = headers(cohort);
        let input =
            RouteInput { path: "/cart", sticky_key: Some(b"8d7f6e5a4b3c2d1e"), client: None, ..RouteInput::trial(&h) };
        g.bench_function(format!("cohort-router plugin, x-cohort: {cohort}"), |b| {
            b.iter(|| black_box(router.route(black_box(&input))))
        });
        let view = RequestView::headers(&h);
        g.bench_function(format!("built-in header rule, x-cohort: {cohort}"), |b| {
            b.iter(|| black_box(split.assign(black_box(&view))))
        });
    }
    // The JavaScript router, as large as a JavaScript engine makes it.
    let bytes = std::fs::read(wasm_plugins::js_wasm("beta_router")).unwrap();
    let js =
        Plugin::load("beta-router", &bytes, ("bench", &LoadOptions { max_size: 64 << 20 }), serde_json::Value::Null);
    let js =
        RouterBinding::new(js.unwrap(), &serde_json::Value::Null, vec!["canary".into(), "stable".into()], &[], &[]);
    let js = js.unwrap();
    for beta in ["1", "0"] {
        let mut h = headers("other");
        h.insert("x-beta", HeaderValue::from_static(if beta == "1" { "1" } else { "0" }));
        let input =
            RouteInput { path: "/cart", sticky_key: Some(b"8d7f6e5a4b3c2d1e"), client: None, ..RouteInput::trial(&h) };
        g.bench_function(format!("beta-router JavaScript plugin, x-beta: {beta}"), |b| {
            b.iter(|| black_box(js.route(black_box(&input))))
        });
    }
    g.finish();

    let judge = load("canary-judge");
    let input = Context {
        service: "checkout".into(),
        strategy: Strategy::Canary,
        phase: Phase::Stepping,
        step: 1,
        steps: 4,
        in_step_ms: 60_000,
        hold_ms: Some(300_000),
        interval_ms: 1_000,
        baseline: "stable".into(),
        candidate: "canary".into(),
        weights: vec![("canary".into(), 25), ("stable".into(), 75)],
        pre_switch: None,
        faults: 0,
        rollout_totals: vec![window("canary", &figures(1, 30)), window("stable", &figures(2, 25))],
        step_totals: vec![window("canary", &figures(1, 30)), window("stable", &figures(2, 25))],
        pools: vec![window("canary", &figures(1, 30)), window("stable", &figures(2, 25))],
    };
    c.bench_function("policy/canary-judge tick (2 × 30k-request windows)", |b| {
        b.iter(|| black_box(decide(&judge, "null", black_box(&input)).unwrap()))
    });

    // The CPU budget in time: a spinning policy burns all of POLICY_FUEL.
    let spin = load("misbehaving-policy");
    let mut times: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            assert!(decide(&spin, r#"{"mode": "loop"}"#, &input).is_err());
            start.elapsed()
        })
        .collect();
    times.sort();
    let policy = times[3];
    let router = policy.mul_f64(ROUTER_FUEL as f64 / POLICY_FUEL as f64);
    println!(
        "budget: a spinning policy is stopped after {policy:?} (median of 7; {POLICY_FUEL} fuel); \
         the router budget ({ROUTER_FUEL} fuel) is {router:?} at that rate"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
