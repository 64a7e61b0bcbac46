//! WebAssembly plugins end to end: routers on live traffic, misbehaving
//! plugins contained, hot reload under load, refused uploads, durable
//! uploads, and canaries judged by a policy plugin.

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::plugins::wasm;
use switchyard_test_support::*;

/// The `plugins:` section naming each built plugin by its crate name.
pub(crate) fn plugins_section(names: &[&str]) -> String {
    let mut s = String::from("plugins:\n");
    for n in names {
        s.push_str(&format!("  - {{ name: {n}, path: \"{}\" }}\n", wasm(n).display()));
    }
    s
}

/// Uploads `bytes` as plugin `name`; returns the status and the JSON answer.
pub(crate) async fn upload(proxy: &Proxy, name: &str, bytes: Vec<u8>, content_type: &str) -> (u16, serde_json::Value) {
    let mut c = Client::connect(proxy.admin.unwrap()).await;
    let req = Request::put(format!("/v1/plugins/{name}"))
        .header("host", "admin")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", content_type)
        .body(full(bytes))
        .unwrap();
    let resp = c.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// The same component with a custom section appended: a new version (new
/// SHA-256) that behaves the same.
pub(crate) fn new_version(mut bytes: Vec<u8>, tag: &str) -> Vec<u8> {
    let payload: Vec<u8> = [&[tag.len() as u8][..], tag.as_bytes(), b"v2"].concat();
    bytes.push(0);
    bytes.push(payload.len() as u8);
    bytes.extend(payload);
    bytes
}

/// `clients` keep-alive clients sending GETs with `headers` until `stop`;
/// returns (responses, non-200 responses, bodies that were not `want`).
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    want: &'static str,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(u64, u64, u64)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let (mut n, mut bad, mut other) = (0, 0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, body) = c.get(path, headers).await;
                    n += 1;
                    bad += u64::from(status != StatusCode::OK);
                    other += u64::from(body != want);
                }
                (n, bad, other)
            })
        })
        .collect()
}

async fn totals(tasks: Vec<tokio::task::JoinHandle<(u64, u64, u64)>>) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for task in tasks {
        let (n, bad, other) = task.await.unwrap();
        t = (t.0 + n, t.1 + bad, t.2 + other);
    }
    t
}

pub(crate) async fn plugin(proxy: &Proxy, name: &str) -> serde_json::Value {
    let (status, v) = proxy.admin("GET", &format!("/v1/plugins/{name}"), None, None).await;
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_plugin_routes_live_traffic() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let rule = "      sticky: { header: x-user }\n      rules:\n        - plugin: cohort-router\n          \
                config: { header: { name: x-cohort, values: [beta] }, allow: [ann] }\n      \
                weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], rule);
    let proxy = start_with_admin(&format!("{svc}{}", plugins_section(&["cohort-router"]))).await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[("x-cohort", "beta")]).await.2, "canary");
    assert_eq!(c.get("/", &[("x-cohort", "gamma")]).await.2, "stable");
    assert_eq!(c.get("/", &[("x-user", "ann")]).await.2, "canary", "the sticky key reaches the plugin");
    assert_eq!(c.get("/", &[("x-user", "bob")]).await.2, "stable");
    let p = plugin(&proxy, "cohort-router").await;
    assert_eq!(p["kind"], "router");
    assert_eq!(p["faults"], 0);
    assert!(p["calls"].as_u64().unwrap() >= 4, "{p}");
    let (_, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(svc["rules"][0], "plugin cohort-router → its choice");
}

#[tokio::test]
async fn routers_read_query_parameters_and_the_client_address_the_proxy_saw() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let with = |networks: &str| {
        let rule = format!(
            "      rules:\n        - plugin: cohort-router\n          \
             config: {{ query: {{ name: preview, values: [\"1\"] }}, networks: [{networks}] }}\n      \
             weights: {{ stable: 100, canary: 0 }}\n"
        );
        service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], &rule)
    };
    let proxy = start_with_admin(&format!("{}{}", with("\"10.20.0.0/16\""), plugins_section(&["cohort-router"]))).await;
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/?preview=1", &[]).await.2, "canary");
    assert_eq!(c.get("/?a=b&preview=%31", &[]).await.2, "canary", "percent-decoded, wherever it stands");
    assert_eq!(c.get("/?preview=0", &[]).await.2, "stable");
    assert_eq!(c.get("/?Preview=1", &[]).await.2, "stable", "names are case-sensitive");
    assert_eq!(c.get("/", &[]).await.2, "stable", "127.0.0.1 is not in 10.20.0.0/16");
    let spoofed = [("x-forwarded-for", "10.20.1.1")];
    assert_eq!(c.get("/", &spoofed).await.2, "stable", "a client-sent x-forwarded-for is not the client's address");
    drop(proxy);
    let proxy = start_with_admin(&format!("{}{}", with("\"127.0.0.0/8\""), plugins_section(&["cohort-router"]))).await;
    assert_eq!(get(proxy.addr, "/", &[]).await.2, "canary", "the address the proxy saw");
    assert_eq!(plugin(&proxy, "cohort-router").await["faults"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_routers_never_fail_a_request() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let modes = ["loop", "trap", "hog", "recurse", "unknown-pool", "error"];
    let mut services = String::new();
    for mode in modes {
        let rule = format!(
            "      rules:\n        - {{ plugin: misbehaving-router, config: {{ mode: {mode} }} }}\n      \
             weights: {{ stable: 1, canary: 0 }}\n"
        );
        let extra = format!("    match: {{ path_prefix: /{mode} }}\n");
        services.push_str(&service(mode, &extra, &[("stable", &[stable.addr]), ("canary", &[canary.addr])], &rule));
    }
    let proxy = start_with_admin(&format!("{services}{}", plugins_section(&["misbehaving-router"]))).await;
    // Every mode at once, from several clients, every request asking the
    // plugin to misbehave: all must be answered by the weights (stable).
    let mut tasks = Vec::new();
    for mode in modes {
        let path: &'static str = Box::leak(format!("/{mode}").into_boxed_str());
        for _ in 0..2 {
            let addr = proxy.addr;
            tasks.push(tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let mut wrong = 0;
                for _ in 0..40 {
                    let (status, _, body) = c.get(path, &[("x-misbehave", "1")]).await;
                    wrong += u32::from(status != StatusCode::OK || body != "stable");
                }
                wrong
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0, "a request failed or went astray while a plugin misbehaved");
    }
    let p = plugin(&proxy, "misbehaving-router").await;
    for kind in ["deadline", "trap", "memory", "nonsense", "error"] {
        assert!(p["faults_by_kind"][kind].as_u64().unwrap() > 0, "no {kind} fault counted: {p}");
    }
    let (_, metrics) = proxy.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"switchyard_plugin_faults_total{plugin="misbehaving-router",fault="deadline"}"#),
        "{metrics}"
    );
    assert!(
        eventually(Duration::from_secs(2), || proxy
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l["plugin"] == "misbehaving-router" && l["fault"] == "deadline"))
        .await,
        "faults are logged with the plugin's name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_and_refused_uploads_keep_the_old_version() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let rule =
        "      rules:\n        - { plugin: cohort, config: { header: { name: x-cohort, values: [beta] } } }\n      \
                weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], rule);
    let section = format!("plugins:\n  - {{ name: cohort, path: \"{}\" }}\n", wasm("cohort-router").display());
    let proxy = start_with_admin(&format!("{svc}{section}")).await;
    let first = plugin(&proxy, "cohort").await["sha256"].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 4, "/", &[("x-cohort", "beta")], "canary", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // pace: load before the upload

    // Refused: not a component; a router whose init rejects the rule's config;
    // the wrong content type; too large.
    let (status, v) = upload(&proxy, "cohort", b"garbage".to_vec(), "application/wasm").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not a valid component"), "{v}");
    let other = std::fs::read(wasm("misbehaving-router")).unwrap();
    let (status, v) = upload(&proxy, "cohort", other, "application/wasm").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("split.rules[0]"), "names the rule: {v}");
    let (status, _) = upload(&proxy, "cohort", b"\0asm".to_vec(), "application/json").await;
    assert_eq!(status, 415);
    let (status, _) = upload(&proxy, "cohort", vec![0; (10 << 20) + 1], "application/wasm").await;
    assert_eq!(status, 413);
    assert_eq!(plugin(&proxy, "cohort").await["sha256"], first, "the running version stayed");

    // Accepted: a new version, swapped in under load.
    let v2 = new_version(std::fs::read(wasm("cohort-router")).unwrap(), "reload-test");
    let (status, ev) = upload(&proxy, "cohort", v2, "application/octet-stream").await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["kind"], "plugin-load");
    tokio::time::sleep(Duration::from_millis(300)).await; // pace: load after the upload
    stop.store(true, Ordering::Relaxed);
    let (n, bad, other) = totals(tasks).await;
    assert!(n > 100, "{n} requests");
    assert_eq!((bad, other), (0, 0), "every request answered, every one by the plugin's choice");
    let now = plugin(&proxy, "cohort").await;
    assert_ne!(now["sha256"], first);
    assert_eq!(now["source"], "admin API");
    let (_, events) = proxy.admin("GET", "/v1/events?limit=20", None, None).await;
    let loads: Vec<&serde_json::Value> =
        events.as_array().unwrap().iter().filter(|e| e["kind"] == "plugin-load").collect();
    assert_eq!(loads.iter().filter(|e| e["outcome"] == "refused").count(), 2, "{events}");
    assert_eq!(loads.iter().filter(|e| e["outcome"] == "applied").count(), 1, "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_plugin_survives_kill_9_and_ctl_lists_and_loads() {
    let stable = Upstream::text("stable").await;
    let svc = service("web", "", &[("stable", &[stable.addr])], "");
    let proxy = start_with_admin(&svc).await;
    let admin = proxy.admin.unwrap();
    let path = wasm("canary-judge");
    let (ok, out, err) = ctl(admin, &["plugins", "load", "judge", path.to_str().unwrap(), "--reason", "test"]);
    assert!(ok, "{out}{err}");
    let (ok, out, _) = ctl(admin, &["plugins"]);
    assert!(ok && out.contains("judge") && out.contains("policy"), "{out}");
    let (ok, _, err) = ctl(admin, &["plugins", "load", "judge", "/nonexistent.wasm"]);
    assert!(!ok && err.contains("nonexistent"), "{err}");
    let sha = plugin(&proxy, "judge").await["sha256"].clone();

    let proxy = proxy.kill9_and_restart().await;
    let p = plugin(&proxy, "judge").await;
    assert_eq!(p["sha256"], sha, "{p}");
    assert_eq!(p["source"], "admin API");
}

/// An upstream that fails one request in `every` (0: never).
async fn flaky(text: &'static str, every: u64) -> Upstream {
    let n = Arc::new(AtomicU64::new(0));
    Upstream::start(move |_| {
        let i = n.fetch_add(1, Ordering::Relaxed);
        async move {
            let mut r = Response::new(full(text));
            if every > 0 && i % every == every - 1 {
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            r
        }
    })
    .await
}

/// A proxy whose `web` service rolls out `canary` (failing one in `every`)
/// under `policy` (loaded by config section `plugins`), with load running;
/// returns the final rollout state.
pub(crate) async fn judged_rollout(every: u64, policy: &str, plugins: &str) -> serde_json::Value {
    let stable = flaky("stable", 0).await;
    let canary = flaky("canary", every).await;
    let plan = format!(
        "    rollout:\n      steps:\n        - {{ weight: 50, hold: 2s }}\n      analysis:\n        \
         interval: 200ms\n        window: 5s\n        policy: {policy}\n"
    );
    let svc = service(
        "web",
        &plan,
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let proxy = start_with_admin(&format!("{svc}{plugins}")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 4, "/", &[], "", stop.clone());
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let r = rollout_end(&proxy).await;
    stop.store(true, Ordering::Relaxed);
    totals(tasks).await;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_judge_promotes_a_healthy_canary() {
    let r = judged_rollout(
        0,
        "{ plugin: canary-judge, config: { min_requests: 100 } }",
        &plugins_section(&["canary-judge"]),
    )
    .await;
    assert_eq!(r["status"], "promoted", "{r:#}");
    let decisions = r["decisions"].to_string();
    assert!(decisions.contains("no regression") && decisions.contains("log-LR"), "{decisions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_judge_rolls_back_a_canary_with_two_percent_errors() {
    let r = judged_rollout(
        50,
        "{ plugin: canary-judge, config: { min_requests: 100 } }",
        &plugins_section(&["canary-judge"]),
    )
    .await;
    assert_eq!(r["status"], "rolled-back", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.starts_with("policy: candidate worse on failures"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_policy_fails_closed() {
    for mode in ["loop", "unknown-pool"] {
        let policy = format!("{{ plugin: misbehaving-policy, config: {{ mode: {mode} }}, max_faults: 3 }}");
        let r = judged_rollout(0, &policy, &plugins_section(&["misbehaving-policy"])).await;
        assert_eq!(r["status"], "rolled-back", "{mode}: {r:#}");
        let reason = r["reason"].as_str().unwrap();
        assert!(reason.contains("faulted 3 ticks in a row") && reason.contains("failing closed"), "{mode}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_a_bad_policy_config_is_refused() {
    let (_stable, _canary, proxy) = two_pool_proxy(&plugins_section(&["canary-judge", "cohort-router"])).await;
    let plan = |p: &str| format!(r#"{{"steps": [{{"weight": 10, "hold": "1m"}}], "analysis": {{"policy": {p}}}}}"#);
    for (policy, want) in [
        (r#"{"plugin": "canary-judge", "config": {"alpha": 3}}"#, "alpha must be between 0 and 1"),
        (r#"{"plugin": "cohort-router"}"#, "is a router, not a policy"),
        (r#"{"plugin": "nope"}"#, "no plugin named `nope`"),
    ] {
        let (status, v) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(&plan(policy))).await;
        assert_eq!(status, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bluegreen_guard_switches_back_against_the_pre_switch_figures() {
    let blue = Upstream::text("blue").await;
    let failing = Arc::new(AtomicBool::new(false));
    let green = switchable("green", failing.clone()).await;
    let plan =
        "    rollout:\n      strategy: blue-green\n      auto_switch: true\n      post_switch_window: 1h\n      \
                analysis:\n        interval: 200ms\n        window: 2s\n        \
                policy: { plugin: bluegreen-guard, config: { min_requests: 100 } }\n";
    let split = "      rules: [{ match: { header: { x-preview: \"1\" } }, pool: green }]\n      weights: { blue: 100, green: 0 }\n";
    let svc = service("web", plan, &[("blue", &[blue.addr]), ("green", &[green.addr])], split);
    let proxy = start_with_admin(&format!("{svc}{}", plugins_section(&["bluegreen-guard"]))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let live = load(proxy.addr, 2, "/", &[], "", stop.clone());
    let preview = load(proxy.addr, 1, "/", &[("x-preview", "1")], "green", stop.clone());
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    // The preview passes the guard: auto_switch moves everything to green.
    let switched = async {
        for _ in 0..100 {
            let r = proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1;
            if r["weight"] == 100 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // poll
        }
        false
    };
    assert!(switched.await, "{}", proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1);
    // Green regresses after the switch; blue is idle now, so only the
    // pre-switch figures can show the regression.
    failing.store(true, Ordering::Relaxed);
    let r = rollout_end(&proxy).await;
    stop.store(true, Ordering::Relaxed);
    totals(live).await;
    totals(preview).await;
    assert_eq!(r["status"], "rolled-back", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("error rate up") && reason.contains("blue before the switch"), "{reason}");
    let pre = &r["pre_switch"];
    assert!(pre["requests"].as_u64().unwrap() > 0 && pre.get("latency").is_none(), "{pre}");
    assert_eq!(Client::connect(proxy.addr).await.get("/", &[]).await.2, "blue", "switched back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_config_set_through_the_api_applies_and_survives_kill_9() {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let rule = "      rules:\n        - { plugin: cohort }\n      weights: { stable: 100, canary: 0 }\n";
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], rule);
    let section = format!(
        "plugins:\n  - {{ name: cohort, path: \"{}\", config: {{ header: {{ name: x-cohort, values: [beta] }} }} }}\n",
        wasm("cohort-router").display()
    );
    let proxy = start_with_admin(&format!("{svc}{section}")).await;
    let cohort = |v: &'static str| {
        let addr = proxy.addr;
        async move { Client::connect(addr).await.get("/", &[("x-cohort", v)]).await.2 }
    };
    assert_eq!(cohort("beta").await, "canary");
    let admin = proxy.admin.unwrap();
    let (ok, out, err) =
        ctl(admin, &["plugins", "config", "cohort", r#"{"header": {"name": "x-cohort", "values": ["gamma"]}}"#]);
    assert!(ok, "{out}{err}");
    assert_eq!(cohort("gamma").await, "canary");
    assert_eq!(cohort("beta").await, "stable");
    // Refused: the plugin's init rejects it for this service; nothing changes.
    let (ok, _, err) = ctl(admin, &["plugins", "config", "cohort", r#"{"pool": "green"}"#]);
    assert!(!ok && err.contains("no pool named `green`"), "{err}");
    assert_eq!(cohort("gamma").await, "canary");
    // A new version keeps the configuration set through the API.
    let v2 = new_version(std::fs::read(wasm("cohort-router")).unwrap(), "config-test");
    assert_eq!(upload(&proxy, "cohort", v2, "application/wasm").await.0, 200);
    assert_eq!(cohort("gamma").await, "canary");

    let proxy = proxy.kill9_and_restart().await;
    assert_eq!(plugin(&proxy, "cohort").await["config"]["header"]["values"][0], "gamma");
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[("x-cohort", "gamma")]).await.2, "canary", "the API's config outlives a restart");
}

/// `check` refuses what `serve` (or a rollout of the file's plan) would:
/// a rule naming a policy, a rule config its router refuses, a plan whose
/// policy is a router or refuses its config.
#[test]
fn check_refuses_plugin_uses_that_serve_or_a_rollout_would_refuse() {
    let rule = |r: &str| format!("      rules:\n        - {r}\n      weights: {{ stable: 1, canary: 0 }}\n");
    let plan = |p: &str| {
        format!("    rollout:\n      steps: [{{ weight: 10, hold: 1m }}]\n      analysis: {{ policy: {p} }}\n")
    };
    let cases = [
        (
            "",
            rule("{ plugin: canary-judge }"),
            "split.rules[0]: plugin `canary-judge` is a policy; rules take router plugins",
        ),
        ("", rule("{ plugin: cohort-router, config: { pool: green } }"), "split.rules[0]"),
        (
            &*plan("{ plugin: cohort-router }"),
            rule("{ match: { header: { x: \"1\" } }, pool: canary }"),
            "is a router, not a policy",
        ),
        (
            &*plan("{ plugin: canary-judge, config: { alpha: 3 } }"),
            rule("{ match: { header: { x: \"1\" } }, pool: canary }"),
            "alpha must be between 0 and 1",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (extra, split, says) in cases {
        let stable: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let svc = service("web", extra, &[("stable", &[stable]), ("canary", &[stable])], &split);
        let yaml = format!("{}{}", config(&svc), plugins_section(&["canary-judge", "cohort-router"]));
        let (ok, err) = check_yaml(dir.path(), &yaml, &[]);
        assert!(!ok && err.contains(says), "{says}: {err}");
    }
}

/// A plugin's status and SHA-256.
async fn sha(p: &Proxy, name: &str) -> (u16, serde_json::Value) {
    let (status, v) = p.admin("GET", &format!("/v1/plugins/{name}"), None, None).await;
    (status, v["sha256"].clone())
}

async fn del(p: &Proxy, name: &str) -> (u16, serde_json::Value) {
    p.admin("DELETE", &format!("/v1/plugins/{name}"), Some(TOKEN), None).await
}

/// An uploaded plugin's life ends with `DELETE /v1/plugins/{name}`: gone
/// for good when only the API gave it, the file's version back when the
/// file has one; refused while a rollout uses it, or when only the file gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_plugins_are_removed_unless_in_use() {
    let rule =
        "      rules:\n        - { plugin: cohort, config: { header: { name: x-cohort, values: [beta] } } }\n      \
                weights: { stable: 100, canary: 0 }\n";
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let svc = service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], rule);
    let section = plugins_section(&["cohort-router"]).replace("name: cohort-router", "name: cohort");
    let p = start_with_admin(&format!("{svc}state: {{ dir: state }}\n{section}")).await;
    // Only the API gave it, nothing uses it: gone, and a restart keeps it gone.
    let judge = std::fs::read(wasm("canary-judge")).unwrap();
    assert_eq!(upload(&p, "extra", judge.clone(), "application/wasm").await.0, 200);
    let (status, ev) = del(&p, "extra").await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["message"], "plugin extra removed");
    assert_eq!(sha(&p, "extra").await.0, 404);

    // A new version of the file's plugin: removing it brings the file's back.
    let (_, file_sha) = sha(&p, "cohort").await;
    let cohort = std::fs::read(wasm("cohort-router")).unwrap();
    assert_eq!(upload(&p, "cohort", new_version(cohort, "t"), "application/wasm").await.0, 200);
    assert_ne!(sha(&p, "cohort").await.1, file_sha);
    assert_eq!(del(&p, "cohort").await.0, 200);
    assert_eq!(sha(&p, "cohort").await.1, file_sha, "the config file's version again");
    assert_eq!(get(p.addr, "/", &[("x-cohort", "beta")]).await.2, "canary", "and its rule still routes");
    let (status, v) = del(&p, "cohort").await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("comes from the config file"), "{v}");

    // A policy a running rollout uses stays.
    assert_eq!(upload(&p, "judge", judge, "application/wasm").await.0, 200);
    let plan = r#"{"steps": [{"weight": 10, "hold": "1h"}], "analysis": {"policy": {"plugin": "judge"}}}"#;
    let (status, v) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(plan)).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = del(&p, "judge").await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("the running rollout of web uses `judge`"), "{v}");
    assert_eq!(del(&p, "nope").await.0, 404);
    assert_eq!(p.admin("DELETE", "/v1/plugins/judge", None, None).await.0, 401);

    let p = p.kill9_and_restart().await;
    assert_eq!(sha(&p, "extra").await.0, 404, "a removal is durable");
    assert_eq!(sha(&p, "cohort").await.1, file_sha);
    assert_eq!(sha(&p, "judge").await.0, 200);
}
