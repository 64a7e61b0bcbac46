//! JavaScript plugins end to end: the reference router and policy
//! (sdk/js/examples, built by scripts/build-js-plugins.sh) through the real
//! host, on live traffic, under a raised size cap, compiled once.

use super::plugins::{judged_rollout, plugin};
use switchyard_test_support::*;

/// Files under `dir`, at any depth (0 when it is missing).
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map_or(0, |entries| entries.flatten().map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 }).sum())
}

#[tokio::test]
async fn a_javascript_router_routes_live_traffic_under_a_raised_size_cap() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let js = switchyard_test_support::plugins::js_wasm("beta_router");
    let rule =
        "      rules:\n        - { plugin: beta-router, config: { pool: canary, networks: [\"127.\"] } }\n      \
                weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], rule);
    let section = format!("plugins:\n  - {{ name: beta-router, path: \"{}\" }}\n", js.display());
    let dir = tempfile::tempdir().unwrap();
    // About 11 MiB, over the default 10 MiB cap: refused with the setting named, then accepted with it raised.
    let (ok, out) = check_yaml(dir.path(), &format!("{}{section}", config(&svc)), &[]);
    assert!(!ok && out.contains("over the 10 MiB limit (server.max_plugin_size)"), "{out}");
    let raised = format!("{svc}{section}server: {{ max_plugin_size: 32MiB }}\nstate: {{ dir: state }}\n");
    let refused = config(&raised.replace("pool: canary, networks", "pool: nope, networks"));
    let (ok, out) = check_yaml(dir.path(), &refused, &[]);
    assert!(
        !ok && out.contains("init returned an error: no pool `nope`"),
        "a JavaScript init's error refuses the rule: {out}"
    );
    let proxy = start_with_admin(&raised).await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[("x-beta", "1")]).await.2, "canary", "a declared header");
    assert_eq!(c.get("/?preview=1", &[]).await.2, "canary", "a declared query parameter");
    assert_eq!(c.get("/?preview=0", &[("x-beta", "0")]).await.2, "canary", "the client's address, 127.0.0.1");
    let p = plugin(&proxy, "beta-router").await;
    assert_eq!((p["kind"].as_str(), p["faults"].as_u64()), (Some("router"), Some(0)), "{p}");
    // Compiled once, kept in the state directory for the next start.
    let kept = |dir: &std::path::Path| walk(&dir.join("state/compiled-plugins"));
    assert!(kept(proxy.dir.path()) > 0, "the compiled component is kept");
    let proxy = proxy.kill9_and_restart().await;
    assert_eq!(get(proxy.addr, "/?preview=1", &[]).await.2, "canary", "a restart loads it from what was kept");
    drop(proxy);
    let elsewhere = raised.replace("networks: [\"127.\"]", "networks: [\"10.\"]");
    let proxy = start_with_admin(&elsewhere).await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[("x-forwarded-for", "10.1.2.3")]).await.2, "stable", "no opinion: the weights decide");
    assert_eq!(c.get("/?preview=1", &[]).await.2, "canary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_policy_promotes_a_healthy_canary_and_rolls_back_a_failing_one() {
    let js = switchyard_test_support::plugins::js_wasm("error_budget");
    let section = format!(
        "plugins:\n  - {{ name: error-budget, path: \"{}\" }}\nserver: {{ max_plugin_size: 32MiB }}\n",
        js.display()
    );
    let policy = "{ plugin: error-budget, config: { max_error_rate: 0.05, min_requests: 50 } }";
    let r = judged_rollout(0, policy, &section).await;
    assert_eq!(r["status"], "promoted", "{r:#}");
    assert!(r["decisions"].to_string().contains("0.00% errors over"), "the policy's explanation: {r:#}");
    let r = judged_rollout(4, policy, &section).await;
    assert_eq!(r["status"], "rolled-back", "{r:#}");
    assert!(r["reason"].as_str().unwrap_or_default().contains("above 5.00%"), "{r:#}");
}
