//! A rollback takes every route off the candidate: header, cookie, flag and
//! router-plugin rules to it are suspended with the weights, durably, until
//! the next rollout or an operator lifts them; a testers' rule stays.

use crate::plugins::plugins_section;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::*;

const FLAGS: &str = r#"{ "flags": { "beta": { "state": "ENABLED", "variants": { "on": true, "off": false },
  "defaultVariant": "off", "targeting": { "if": [{ "ends_with": [{ "var": "email" }, "@beta.example"] }, "on", "off"] } } } }"#;

/// Requests that each match one rule to the canary.
const BY_RULE: [&[(&str, &str)]; 4] =
    [&[("x-beta", "1")], &[("cookie", "beta=yes")], &[("x-user-email", "ann@beta.example")], &[("x-cohort", "beta")]];
const TESTER: &[(&str, &str)] = &[("x-canary", "always")];

async fn proxy(failing: Arc<AtomicBool>) -> (Upstream, Upstream, Proxy) {
    let stable = Upstream::text("stable").await;
    let canary = switchable("canary", failing).await;
    let rollout = "    rollout:\n      steps:\n        - { weight: 20, hold: 1h }\n      analysis:\n        \
                   interval: 200ms\n        window: 2s\n        min_requests: 20\n        \
                   rollback_when: { error_rate_above: 0.05, min_requests: 10 }\n";
    let split = "      sticky: { header: x-user }\n      rules:\n        \
                 - { match: { header: { x-beta: \"1\" } }, pool: canary }\n        \
                 - { match: { cookie: { beta: \"yes\" } }, pool: canary }\n        \
                 - { match: { flag: beta }, pool: canary }\n        \
                 - { plugin: cohort-router, config: { header: { name: x-cohort, values: [beta] } } }\n        \
                 - { match: { header: { x-canary: always } }, pool: canary, keep_on_rollback: true }\n      \
                 weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", rollout, &[("stable", &[stable.addr]), ("canary", &[canary.addr])], split);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("flags.json"), FLAGS).unwrap();
    let yaml = format!(
        "{}{}flags:\n  file: flags.json\n  context:\n    email: {{ header: x-user-email }}\nstate: {{ dir: state }}\n",
        admin_config(&svc),
        plugins_section(&["cohort-router"])
    );
    (stable, canary, Proxy::start_in(dir, &yaml).await)
}

/// Sends 25 requests of each rule's kind (each with a user key); returns the
/// canary's hits they caused.
async fn rule_traffic(proxy: &Proxy, canary: &Upstream) -> usize {
    let before = canary.hits();
    let mut c = Client::connect(proxy.addr).await;
    for (r, headers) in BY_RULE.iter().enumerate() {
        for i in 0..25 {
            let user = format!("user-{r}-{i}");
            let mut h = headers.to_vec();
            h.push(("x-user", &user));
            c.get("/", &h).await;
        }
    }
    canary.hits() - before
}

async fn suspended(proxy: &Proxy) -> Vec<u64> {
    let (_, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    svc["suspended_rules"].as_array().unwrap().iter().map(|r| r["rule"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_suspends_every_rule_to_the_candidate_until_lifted() {
    let failing = Arc::new(AtomicBool::new(false));
    let (_stable, canary, proxy) = proxy(failing.clone()).await;
    assert_eq!(rule_traffic(&proxy, &canary).await, 100, "before any rollout every rule reaches the canary");

    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    failing.store(true, Ordering::SeqCst);
    let mut c = Client::connect(proxy.addr).await;
    let start = std::time::Instant::now();
    while proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1["status"] == "running"
        && start.elapsed() < Duration::from_secs(15)
    {
        c.get("/", &[("x-beta", "1")]).await;
    }
    let r = rollout_end(&proxy).await;
    assert_eq!(r["status"], "rolled-back", "the failing canary was rolled back: {r}");
    assert_eq!(r["suspended_rules"], serde_json::json!([0, 1, 2, 3]), "{r}");

    // Not one request matching a rule reaches the candidate; the testers' rule still does.
    assert_eq!(rule_traffic(&proxy, &canary).await, 0, "suspended rules take the weights (all on stable)");
    assert_eq!(suspended(&proxy).await, [1, 2, 3, 4]);
    let before = canary.hits();
    for _ in 0..10 {
        c.get("/", TESTER).await;
    }
    assert_eq!(canary.hits() - before, 10, "the keep_on_rollback rule still reaches the canary");
    let (_, events) = proxy.admin("GET", "/v1/events?limit=50", None, None).await;
    let rollback =
        events.as_array().unwrap().iter().find(|e| e["new"]["suspended_pools"] == serde_json::json!(["canary"]));
    assert!(
        rollback.is_some_and(|e| e["message"].as_str().unwrap().contains("rules #1, #2, #3, #4 suspended")),
        "{events}"
    );

    // Durable: a restart keeps the suspension.
    failing.store(false, Ordering::SeqCst);
    let proxy = proxy.kill9_and_restart().await;
    assert_eq!(rule_traffic(&proxy, &canary).await, 0, "still suspended after kill -9");
    let (ok, out, err) = ctl(proxy.admin.unwrap(), &["status"]);
    assert!(ok && out.contains("rules suspended") && out.contains("#4 plugin cohort-router"), "{out}{err}");

    // The next rollout lifts it; an abort suspends again; an operator lifts it by hand.
    let (status, _) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(suspended(&proxy).await.is_empty(), "a new rollout lifts the suspension");
    assert_eq!(rule_traffic(&proxy, &canary).await, 100);
    let (status, _) = proxy.admin("POST", "/v1/services/web/rollout/abort", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(rule_traffic(&proxy, &canary).await, 0, "an abort suspends the rules too");
    let (ok, out, err) = ctl(proxy.admin.unwrap(), &["lift", "web", "--reason", "fixed"]);
    assert!(ok, "{out}{err}");
    assert_eq!(rule_traffic(&proxy, &canary).await, 100, "lifted by hand");
    assert_eq!(proxy.admin("DELETE", "/v1/services/web/suspension", Some(TOKEN), None).await.0, 404, "nothing left");
}
