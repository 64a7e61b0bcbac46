//! The host against the real reference plugins and misbehaving fixtures.

use switchyard_test_support::plugins as wasm_plugins;

use super::policy::{decide, window};
use super::router::{RouteInput, RouterBinding};
use super::*;
use crate::stats::Figures;
use http::{HeaderMap, HeaderValue};
use switchyard_sdk::{Context, Decision, Phase, Strategy};

fn load(name: &str, config: serde_json::Value) -> Arc<Plugin> {
    let bytes = std::fs::read(wasm_plugins::wasm(name)).unwrap();
    Plugin::load(name, &bytes, ("test", &Default::default()), config).unwrap()
}

fn pools() -> Vec<String> {
    vec!["canary".into(), "stable".into()]
}

fn route(b: &Arc<RouterBinding>, headers: &[(&'static str, &'static str)], key: Option<&str>) -> Option<usize> {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_static(v));
    }
    b.route(&RouteInput { sticky_key: key.map(str::as_bytes), ..RouteInput::trial(&h) })
}

fn fault_count(p: &Plugin, label: &str) -> u64 {
    p.calls.summary().faults_by_kind[label]
}

#[test]
fn loads_and_classifies_the_reference_plugins() {
    assert_eq!(load("cohort-router", serde_json::Value::Null).kind, Kind::Router);
    assert_eq!(load("canary-judge", serde_json::Value::Null).kind, Kind::Policy);
    assert_eq!(load("bluegreen-guard", serde_json::Value::Null).kind, Kind::Policy);
}

#[test]
fn refuses_what_is_not_a_plugin() {
    let err = |bytes: &[u8]| {
        Plugin::load("x", bytes, ("test", &Default::default()), serde_json::Value::Null).unwrap_err().to_string()
    };
    assert!(err(b"not wasm at all").contains("not a valid component"), "{}", err(b"nope"));
    // A core module (not a component): said so, with what to do.
    let core = b"\0asm\x01\0\0\0";
    assert!(err(core).contains("this is a core WebAssembly module, not a component"), "{}", err(core));
    assert!(err(core).contains("wasm-component-ld"), "{}", err(core));
    assert!(err(&vec![0; (10 << 20) + 1]).contains("over the 10 MiB limit (server.max_plugin_size)"));
}

#[test]
fn refuses_a_component_that_imports_wasi() {
    let bytes = std::fs::read(wasm_plugins::wasi_component()).unwrap();
    let err =
        Plugin::load("wasi", &bytes, ("test", &Default::default()), serde_json::Value::Null).unwrap_err().to_string();
    assert!(
        err.contains("plugins may import only the host's") && err.contains("this component imports wasi:"),
        "{err}"
    );
    assert!(err.contains("--wasi-adapter=none"), "{err}");
}

#[test]
fn router_rule_routes_and_passes_what_the_plugin_needs() {
    let p = load("cohort-router", serde_json::Value::Null);
    let cfg = serde_json::json!({ "header": { "name": "x-cohort", "values": ["beta"] }, "allow": ["ann"] });
    let b = RouterBinding::new(p.clone(), &cfg, pools(), &[], &[]).unwrap();
    assert_eq!(route(&b, &[("x-cohort", "beta")], None), Some(0));
    assert_eq!(route(&b, &[("x-cohort", "gamma")], None), None);
    assert_eq!(route(&b, &[], Some("ann")), Some(0));
    assert_eq!(route(&b, &[], Some("bob")), None);
    for _ in 0..16 {
        route(&b, &[], Some("ann"));
    }
    let s = p.calls.summary();
    assert_eq!(s.faults, 0);
    assert!(s.calls >= 20 && s.mean_us > 0.0, "one call in 8 is timed: {s:?}");
}

#[test]
fn a_rule_with_a_bad_config_is_refused_with_the_plugins_reason() {
    let p = load("cohort-router", serde_json::Value::Null);
    let e = RouterBinding::new(p, &serde_json::json!({ "pool": "green" }), pools(), &[], &[]).unwrap_err().to_string();
    assert!(e.contains("no pool named `green`"), "{e}");
}

#[test]
fn misbehaving_routers_are_contained() {
    for (mode, label) in [
        ("loop", "deadline"),
        ("trap", "trap"),
        ("hog", "memory"),
        ("recurse", "trap"),
        ("unknown-pool", "nonsense"),
        ("error", "error"),
        ("log-flood", "trap"),
    ] {
        let p = load("misbehaving-router", serde_json::Value::Null);
        let b = RouterBinding::new(p.clone(), &serde_json::json!({ "mode": mode }), pools(), &[], &[]).unwrap();
        // Each fault falls through; after the fault the rule works again
        // (a trapped instance is rebuilt).
        for _ in 0..3 {
            assert_eq!(route(&b, &[("x-misbehave", "1")], None), None, "{mode}");
            assert_eq!(route(&b, &[], None), None, "{mode}: healthy call after a fault");
        }
        assert_eq!(fault_count(&p, label), 3, "{mode}: {:?}", p.calls.summary());
        assert_eq!(p.calls.summary().faults, 3, "{mode}");
    }
}

#[test]
fn repeated_faults_quarantine_the_rule_on_the_thread() {
    let p = load("misbehaving-router", serde_json::Value::Null);
    let b = RouterBinding::new(p.clone(), &serde_json::json!({ "mode": "loop" }), pools(), &[], &[]).unwrap();
    for _ in 0..20 {
        assert_eq!(route(&b, &[("x-misbehave", "1")], None), None);
    }
    assert_eq!(fault_count(&p, "deadline"), u64::from(router::QUARANTINE_AFTER), "skipped once quarantined");
}

#[test]
fn same_plugin_two_services_share_no_state() {
    let p = load("cohort-router", serde_json::Value::Null);
    let a = RouterBinding::new(p.clone(), &serde_json::json!({ "allow": ["ann"] }), pools(), &[], &[]).unwrap();
    let b =
        RouterBinding::new(p, &serde_json::json!({ "allow": ["bob"], "pool": "stable" }), pools(), &[], &[]).unwrap();
    assert_eq!(route(&a, &[], Some("ann")), Some(0));
    assert_eq!(route(&b, &[], Some("ann")), None);
    assert_eq!(route(&b, &[], Some("bob")), Some(1));
    assert_eq!(route(&a, &[], Some("bob")), None);
}

fn figures(requests: u64, failed: u64, latency_us: u64) -> Figures {
    let mut f = Figures { requests, p50_us: latency_us, p99_us: latency_us, ..Default::default() };
    f.status[1] = requests - failed;
    f.status[4] = failed;
    f.latency = vec![(latency_us, requests)];
    f
}

fn canary(stable: Figures, canary: Figures) -> Context {
    Context {
        service: "web".into(),
        strategy: Strategy::Canary,
        phase: Phase::Stepping,
        step: 0,
        steps: 2,
        in_step_ms: 10_000,
        hold_ms: Some(10_000),
        interval_ms: 1_000,
        baseline: "stable".into(),
        candidate: "canary".into(),
        weights: vec![("canary".into(), 50), ("stable".into(), 50)],
        pre_switch: None,
        faults: 0,
        rollout_totals: vec![window("canary", &canary), window("stable", &stable)],
        step_totals: vec![window("canary", &canary), window("stable", &stable)],
        pools: vec![window("canary", &canary), window("stable", &stable)],
    }
}

/// A policy built against WIT 0.1.0 (before the `totals` import) still
/// loads and decides: the interface grew compatibly.
#[test]
fn a_policy_built_for_wit_0_1_0_still_loads_and_decides() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/canary_judge_wit_0_1_0.wasm");
    let p = Plugin::load(
        "old-judge",
        &std::fs::read(path).unwrap(),
        ("test", &Default::default()),
        serde_json::Value::Null,
    )
    .unwrap();
    assert_eq!(p.kind, Kind::Policy);
    let bad = decide(&p, "null", &canary(figures(2000, 0, 8000), figures(2000, 40, 8000))).unwrap();
    assert!(matches!(bad.decision, Decision::Rollback(ref r) if r.contains("Fisher")), "{bad:?}");
}

#[test]
fn canary_judge_through_the_host() {
    let p = load("canary-judge", serde_json::Value::Null);
    let ok = decide(&p, "null", &canary(figures(2000, 0, 8000), figures(2000, 0, 8000))).unwrap();
    assert_eq!(ok.decision, Decision::Promote, "{ok:?}");
    let bad = decide(&p, "null", &canary(figures(2000, 0, 8000), figures(2000, 40, 8000))).unwrap();
    assert!(matches!(bad.decision, Decision::Rollback(ref r) if r.contains("sequential")), "{bad:?}");
    let fixed = decide(&p, r#"{"method": "fixed"}"#, &canary(figures(2000, 0, 8000), figures(2000, 40, 8000))).unwrap();
    assert!(matches!(fixed.decision, Decision::Rollback(ref r) if r.contains("Fisher")), "{fixed:?}");
    // The totals reach the plugin through its `totals` import: with none, it has nothing to judge.
    let mut blind = canary(figures(2000, 0, 8000), figures(2000, 40, 8000));
    (blind.rollout_totals, blind.step_totals) = (vec![], vec![]);
    assert_eq!(decide(&p, "null", &blind).unwrap().decision, Decision::Hold);
    let err = decide(&p, r#"{"alpha": 7}"#, &canary(figures(1, 0, 1), figures(1, 0, 1))).unwrap_err();
    assert!(matches!(err, Fault::Error(ref m) if m.contains("alpha")), "{err:?}");
}

#[test]
fn bluegreen_guard_reads_the_pre_switch_figures() {
    let p = load("bluegreen-guard", serde_json::Value::Null);
    let mut input = canary(Figures::default(), figures(500, 25, 9000));
    (input.strategy, input.phase) = (Strategy::BlueGreen, Phase::PostSwitch);
    input.pre_switch = Some(window("stable", &figures(5000, 5, 9000)));
    let a = decide(&p, "null", &input).unwrap();
    assert!(matches!(a.decision, Decision::Rollback(ref r) if r.contains("error rate up")), "{a:?}");
    input.pools[0] = window("canary", &figures(500, 0, 9000));
    assert_eq!(decide(&p, "null", &input).unwrap().decision, Decision::Promote);
}

#[test]
fn misbehaving_policies_are_contained() {
    let p = load("misbehaving-policy", serde_json::Value::Null);
    let input = canary(figures(100, 0, 1000), figures(100, 0, 1000));
    for (mode, label) in [("loop", "deadline"), ("trap", "trap"), ("hog", "memory"), ("recurse", "trap")] {
        let cfg = format!(r#"{{"mode": "{mode}"}}"#);
        let f = decide(&p, &cfg, &input).unwrap_err();
        assert_eq!(f.label(), label, "{mode}: {f}");
    }
    // A panic's message (sent by the SDK's hook) says why it trapped.
    let f = decide(&p, r#"{"mode": "trap"}"#, &input).unwrap_err().to_string();
    assert!(f.contains("the plugin panicked: panicked at") && f.contains("misbehaving policy: trap"), "{f}");
    let nonsense = decide(&p, r#"{"mode": "unknown-pool"}"#, &input).unwrap();
    assert!(matches!(nonsense.decision, Decision::SetWeights(_)), "passed on for the controller to refuse");
}

/// What a misbehaving plugin costs is visible: its faulted calls' time and
/// the fuel they burn are counted (a budget run out counts in full).
#[test]
fn faulted_calls_count_their_time_and_fuel() {
    let p = load("misbehaving-router", serde_json::Value::Null);
    let b = RouterBinding::new(p.clone(), &serde_json::json!({ "mode": "loop" }), pools(), &[], &[]).unwrap();
    // Faulting every call, the instance is rebuilt each time: each first call is timed.
    for _ in 0..16 {
        route(&b, &[("x-misbehave", "1")], None);
    }
    let s = p.calls.summary();
    assert!(s.faults >= 5, "{s:?}");
    assert!(s.mean_us > 0.0 && s.total_seconds > 0.0, "faulted calls are timed: {s:?}");
    assert!(s.fuel >= s.faults * ROUTER_FUEL, "every run-out budget counted in full: {s:?}");
}
