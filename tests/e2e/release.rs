//! Release tooling: a pool's endpoints and version set through the API, and
//! `examples/ci/deploy.sh` (what the GitHub and GitLab examples run) against
//! a real proxy: shipped, rolled back, or no verdict within the timeout.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::*;

/// A one-step canary judged every 200 ms, or `gate` first.
fn plan(gate: bool) -> String {
    let steps = if gate { "[{ pause: {} }, { weight: 50, hold: 1s }]" } else { "[{ weight: 50, hold: 1s }]" };
    format!(
        "    rollout:\n      steps: {steps}\n      \
         analysis: {{ interval: 200ms, window: 2s, min_requests: 5, rollback_when: {{ error_rate_above: 0.2, min_requests: 5 }} }}\n"
    )
}

/// Service `web`: `stable`, and `canary` at version v1 on `v1`; durable state.
async fn proxy(stable: &Upstream, v1: &Upstream, gate: bool) -> Proxy {
    let pools = format!(
        "{}    pools:\n      stable: {{ endpoints: [\"{}\"] }}\n      canary: {{ endpoints: [\"{}\"], version: v1 }}\n    \
         split: {{ weights: {{ stable: 100, canary: 0 }} }}\n",
        plan(gate),
        stable.addr,
        v1.addr
    );
    start_with_admin(&format!("  - name: web\n{pools}state: {{ dir: state }}\n")).await
}

/// Runs `examples/ci/deploy.sh web canary ENDPOINT VERSION` against the
/// admin API at `admin`; returns its exit code and output.
fn deploy_to(
    admin: std::net::SocketAddr,
    endpoint: std::net::SocketAddr,
    version: &str,
    timeout: &str,
) -> (i32, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ci/deploy.sh");
    let out = std::process::Command::new("bash")
        .args([script, "web", "canary", &endpoint.to_string(), version])
        .env("SWITCHYARD", binary())
        .env("SWITCHYARD_ADMIN_ADDR", admin.to_string())
        .env("SWITCHYARD_CTL_TOKEN", TOKEN)
        .env("DEPLOY_TIMEOUT", timeout)
        .env("COMMIT", "9fceb02")
        .env("COMMIT_TIME", "2026-11-30T10:00:00Z")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

async fn canary_pool(p: &Proxy) -> serde_json::Value {
    let (_, svc) = p.admin("GET", "/v1/services/web", Some(TOKEN), None).await;
    svc["pools"].as_array().unwrap().iter().find(|p| p["name"] == "canary").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_sh_ships_a_healthy_version_and_the_pool_keeps_it_across_a_restart() {
    let (stable, v1, v2) = (Upstream::text("stable").await, Upstream::text("v1").await, Upstream::text("v2").await);
    let p = proxy(&stable, &v1, false).await;
    assert_eq!(canary_pool(&p).await["version"], "v1", "the config file's version");
    let load = steady_traffic(p.addr, Duration::from_secs(30));
    let (admin, v2_addr) = (p.admin.unwrap(), v2.addr);
    let (code, out) = tokio::task::spawn_blocking(move || deploy_to(admin, v2_addr, "v2", "60s")).await.unwrap();
    load.abort();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("promoted, step 1/1: 100% on the candidate") && out.contains("v2 shipped"), "{out}");
    let pool = canary_pool(&p).await;
    assert_eq!(
        (pool["version"].as_str(), pool["commit"].as_str(), pool["source"].as_str()),
        (Some("v2"), Some("9fceb02"), Some("api"))
    );
    assert_eq!(get(p.addr, "/", &[]).await.2, "v2", "the canary, now at 100 %, runs v2");
    let (_, events) = p.admin("GET", "/v1/events?limit=100", Some(TOKEN), None).await;
    let pool_event = events.as_array().unwrap().iter().find(|e| e["kind"] == "pool").unwrap().clone();
    assert!(pool_event["message"].as_str().unwrap().contains("(v1) →"), "{pool_event}");
    assert_eq!(pool_event["reason"], "deploy v2");

    let p = p.kill9_and_restart().await;
    let pool = canary_pool(&p).await;
    assert_eq!((pool["version"].as_str(), pool["source"].as_str()), (Some("v2"), Some("api")), "durable");
    let (status, ev) = p.admin("DELETE", "/v1/services/web/pools/canary", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(canary_pool(&p).await["version"], "v1", "back to the config file's");
    assert_eq!(get(p.addr, "/", &[]).await.2, "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_sh_exits_2_when_the_new_version_is_rolled_back_and_4_without_a_verdict() {
    let (stable, v1) = (Upstream::text("stable").await, Upstream::text("v1").await);
    let broken = switchable("v2", Arc::new(AtomicBool::new(true))).await;
    let p = proxy(&stable, &v1, false).await;
    let load = steady_traffic(p.addr, Duration::from_secs(30));
    let admin = p.admin.unwrap();
    let (code, out) = tokio::task::spawn_blocking(move || deploy_to(admin, broken.addr, "v2", "60s")).await.unwrap();
    load.abort();
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("rolled back") && out.contains("error rate"), "{out}");
    assert_eq!(get(p.addr, "/", &[]).await.2, "stable", "all traffic back on the baseline");

    // A gate nobody passes: no verdict within the timeout.
    let gated = proxy(&stable, &v1, true).await;
    let admin = gated.admin.unwrap();
    let v3 = Upstream::text("v3").await;
    let (code, out) = tokio::task::spawn_blocking(move || deploy_to(admin, v3.addr, "v3", "2s")).await.unwrap();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("still running after 2s"), "{out}");
}

#[tokio::test]
async fn bad_pool_changes_are_refused_and_change_nothing() {
    let (stable, v1) = (Upstream::text("stable").await, Upstream::text("v1").await);
    let p = proxy(&stable, &v1, true).await;
    let put = |body: &'static str, pool: &'static str| {
        let p = &p;
        async move { p.admin("PUT", &format!("/v1/services/web/pools/{pool}"), Some(TOKEN), Some(body)).await }
    };
    let cases = [
        (r#"{"endpoints": []}"#, "canary", 400, "at least one endpoint"),
        (r#"{"endpoints": ["not an address"]}"#, "canary", 400, "endpoints[0]"),
        (r#"{"endpoints": ["127.0.0.1:1", "127.0.0.1:1"]}"#, "canary", 400, "duplicate"),
        (r#"{"endpoints": ["127.0.0.1:1"], "commit_time": "yesterday"}"#, "canary", 400, "commit_time"),
        (r#"{"endpoints": ["127.0.0.1:1"], "build_url": "ftp://x"}"#, "canary", 400, "build_url"),
        (r#"{"endpoints": ["127.0.0.1:1"], "colour": "red"}"#, "canary", 400, "unknown field"),
        (r#"{"endpoints": ["127.0.0.1:1"]}"#, "green", 404, "no pool named `green`"),
    ];
    for (body, pool, status, says) in cases {
        let (got, v) = put(body, pool).await;
        assert_eq!(got, status, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{body}: {v}");
    }
    let (status, v) =
        p.admin("PUT", "/v1/services/web/pools/canary", None, Some(r#"{"endpoints": ["127.0.0.1:1"]}"#)).await;
    assert_eq!(status, 401, "{v}");
    let (status, _) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, v) = put(r#"{"endpoints": ["127.0.0.1:1"]}"#, "canary").await;
    assert_eq!(status, 409, "the running rollout judges the pool: {v}");
    let pool = canary_pool(&p).await;
    assert_eq!((pool["version"].as_str(), pool["source"].as_str()), (Some("v1"), Some("config")), "nothing changed");
    assert_eq!(pool["endpoints"][0]["address"], v1.addr.to_string());
}

/// The alert rules and the Grafana dashboard in `deploy/` parse, and every
/// metric they query is one a running proxy exports (scraped after a rollout,
/// so the deployment metrics exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_only_metrics_that_exist() {
    let (stable, v1) = (Upstream::text("stable").await, Upstream::text("v1").await);
    let p = proxy(&stable, &v1, false).await;
    let load = steady_traffic(p.addr, Duration::from_secs(30));
    let (status, _) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(rollout_end(&p).await["status"], "promoted");
    load.abort();
    let (_, metrics) = p.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    let exported: std::collections::BTreeSet<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    assert!(metrics.contains(r#"switchyard_rollouts_finished_total{service="web",outcome="promoted"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"switchyard_rollouts_started_total{service="web",strategy="canary"} 1"#));
    assert!(metrics.contains(r#"switchyard_rollout_active{service="web"} 0"#));

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");
    let rules: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{root}/prometheus/alerts.yml")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for rule in rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        assert!(rule["alert"].is_string() && rule["annotations"]["summary"].is_string(), "{rule}");
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    assert!(exprs.len() >= 3);
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/grafana/switchyard.json")).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        exprs.extend(v["query"].as_str().map(str::to_owned));
    }
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("switchyard_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            assert!(exported.contains(name.as_str()), "`{name}` (in `{expr}`) is not exported: {exported:?}");
            rest = &rest[at + name.len()..];
        }
    }
}
