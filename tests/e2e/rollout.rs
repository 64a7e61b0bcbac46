//! Rollouts end to end: real upstreams, real faults, the real binary.

use http::Response;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_test_support::*;

/// Load: `conns` clients in a loop until `stop`; counts responses by body.
fn load(addr: std::net::SocketAddr, conns: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..conns)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    c.get("/", &[]).await;
                    n += 1;
                }
                n
            })
        })
        .collect()
}

const PLAN: &str = "    rollout:\n      steps:\n        - { weight: 50, hold: 1h }\n        - pause: {}\n        - { weight: 100, hold: 0s }\n      \
    analysis:\n        interval: 250ms\n        window: 2s\n        min_requests: 20\n        \
    rollback_when: { error_rate_above: 0.05, min_requests: 10 }\n";

async fn canary_proxy(failing: Arc<AtomicBool>, extra: &str) -> (Upstream, Upstream, Proxy) {
    let stable = Upstream::text("stable").await;
    let canary = switchable("canary", failing).await;
    let extra = format!("{PLAN}{extra}");
    let svc = service(
        "web",
        &extra,
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    (stable, canary, start_with_admin(&svc).await)
}

async fn rollout(proxy: &Proxy) -> serde_json::Value {
    proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_mid_step_is_rolled_back() {
    let failing = Arc::new(AtomicBool::new(false));
    let (_stable, canary, proxy) = canary_proxy(failing.clone(), "").await;
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["weight"], 50);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 4, stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await; // delay: the step must hold while the canary is healthy
    assert_eq!(rollout(&proxy).await["status"], "running", "a healthy canary holds its step");
    assert!(canary.hits() > 20);

    failing.store(true, Ordering::SeqCst);
    let onset = Instant::now();
    let mut r = json!(null);
    while onset.elapsed() < Duration::from_secs(10) {
        r = rollout(&proxy).await;
        if r["status"] == "rolled-back" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll
    }
    let took = onset.elapsed();
    assert_eq!(r["status"], "rolled-back", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("error rate"), "{r}");
    eprintln!("rolled back {took:?} after the fault began (interval 250ms)");
    let after = canary.hits();
    tokio::time::sleep(Duration::from_millis(500)).await; // delay: load goes on after the rollback, none of it may reach the canary
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(canary.hits(), after, "no request reaches the canary after the rollback");
    let (_, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(svc["pools"][0]["weight"], 0);
    let decisions = r["decisions"].as_array().unwrap();
    assert!(
        decisions.iter().any(|d| d["decision"] == "rollback" && d["why"].as_str().unwrap().contains("candidate")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_gates_promote_pause_abort_and_conflicts() {
    let (_s, _c, proxy) = canary_proxy(Arc::new(AtomicBool::new(false)), "").await;
    assert_eq!(
        proxy.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await.0,
        404,
        "nothing running"
    );
    assert_eq!(proxy.admin("POST", "/v1/services/web/rollout", None, None).await.0, 401);
    let (status, _) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await.0, 409, "already running");
    // The rollout owns the weights: a manual change or reset is refused, naming it.
    let (status, v) = proxy.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(r#"{"stable": 100}"#)).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("a rollout of `web` is running"), "{v}");
    assert_eq!(proxy.admin("DELETE", "/v1/services/web/weights", Some(TOKEN), None).await.0, 409);
    let mut c = Client::connect(proxy.addr).await;
    let mut bodies = Vec::new();
    for _ in 0..40 {
        bodies.push(c.get("/", &[]).await.2);
    }
    assert!(bodies.iter().any(|b| b == "canary") && bodies.iter().any(|b| b == "stable"), "50 % on the canary");

    // promote passes the held step; the next step is a gate.
    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await;
    assert_eq!((r["step"].clone(), r["current_step"].clone()), (json!(1), json!({ "pause": true })), "{r}");
    tokio::time::sleep(Duration::from_millis(800)).await; // delay: the gate must not pass by itself
    assert_eq!(rollout(&proxy).await["step"], 1, "the gate waits for a person");
    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/pause", Some(TOKEN), None).await;
    assert_eq!(r["status"], "paused");
    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/resume", Some(TOKEN), None).await;
    assert_eq!(r["status"], "running");
    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/abort", Some(TOKEN), None).await;
    assert_eq!((r["status"].clone(), r["weight"].clone()), (json!("aborted"), json!(0)));
    for _ in 0..20 {
        assert_eq!(c.get("/", &[]).await.2, "stable", "abort returns all traffic at once");
    }
    assert_eq!(proxy.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await.0, 409, "it has ended");

    // A plan in the body overrides the service's; promote --full goes straight to 100 %.
    let plan = r#"{"steps": [{"weight": 10, "hold": "1h"}], "analysis": {"interval": "1s"}}"#;
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(plan)).await;
    assert_eq!((status, r["weight"].clone()), (200, json!(10)), "{r}");
    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), Some(r#"{"full": true}"#)).await;
    assert_eq!((r["status"].clone(), r["weight"].clone()), (json!("promoted"), json!(100)));
    assert_eq!(c.get("/", &[]).await.2, "canary");
    let (status, err) =
        proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(r#"{"steps": [{"weight": 300}]}"#)).await;
    assert_eq!(status, 400, "{err}");
    // `{}` is the service's own plan, as an empty body is.
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some("{}")).await;
    assert_eq!((status, r["weight"].clone()), (200, json!(50)), "{r}");

    let (_, events) = proxy.admin("GET", "/v1/events?limit=100", None, None).await;
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"rollout-start") && kinds.contains(&"rollout-pause") && kinds.contains(&"weights"),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_kill_9_with_its_step_time() {
    let (_s, _c, proxy) = canary_proxy(Arc::new(AtomicBool::new(false)), "").await;
    proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    let in_step = |r: serde_json::Value| r["time_in_step_seconds"].as_f64().unwrap_or(0.0);
    assert!(until(Duration::from_secs(10), || async { in_step(rollout(&proxy).await) >= 1.0 }).await);
    let before = rollout(&proxy).await["time_in_step_seconds"].as_f64().unwrap();
    assert!(before >= 0.5, "{before}");
    let proxy = proxy.kill9_and_restart().await;
    let r = rollout(&proxy).await;
    assert_eq!(
        (r["status"].clone(), r["step"].clone(), r["weight"].clone()),
        (json!("running"), json!(0), json!(50)),
        "{r}"
    );
    // Progress is checkpointed every second of step time: at most one second is lost.
    assert!(
        r["time_in_step_seconds"].as_f64().unwrap() >= before - 1.0,
        "time already spent counts: {before} then {r}"
    );
    let resumed = r["time_in_step_seconds"].as_f64().unwrap();
    let counting = until(Duration::from_secs(10), || async {
        rollout(&proxy).await["time_in_step_seconds"].as_f64().unwrap() > resumed
    });
    assert!(counting.await, "and it keeps counting");
    let bodies: Vec<String> = {
        let mut c = Client::connect(proxy.addr).await;
        let mut v = Vec::new();
        for _ in 0..40 {
            v.push(c.get("/", &[]).await.2);
        }
        v
    };
    assert!(bodies.iter().any(|b| b == "canary"), "the step's weights are in force after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_preview_switch_and_switchback_with_webhooks() {
    let failing = Arc::new(AtomicBool::new(false));
    let blue = Upstream::text("blue").await;
    let green = switchable("green", failing.clone()).await;
    let hooks = Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let h = hooks.clone();
    let hook = Upstream::start(move |req| {
        let h = h.clone();
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.unwrap().to_bytes();
            h.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            Response::new(full("ok"))
        }
    })
    .await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let extra = format!(
        "    rollout:\n      strategy: blue-green\n      post_switch_window: 1h\n      webhooks: [\"http://{}/hook\", \"http://{dead}/down\"]\n      \
         analysis: {{ interval: 250ms, window: 2s, min_requests: 20, rollback_when: {{ error_rate_above: 0.05 }} }}\n",
        hook.addr
    );
    let split = "      rules: [{ match: { header: { x-preview: \"1\" } }, pool: green }]\n      weights: { blue: 100, green: 0 }\n";
    let proxy =
        start_with_admin(&service("web", &extra, &[("blue", &[blue.addr]), ("green", &[green.addr])], split)).await;
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let mut c = Client::connect(proxy.addr).await;
    assert_eq!(c.get("/", &[]).await.2, "blue");
    assert_eq!(c.get("/", &[("x-preview", "1")]).await.2, "green", "the preview is reachable by header only");

    let (_, r) = proxy.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await;
    assert_eq!(r["weight"], 100, "{r}");
    for _ in 0..10 {
        assert_eq!(c.get("/", &[]).await.2, "green", "the switch moves every new request at once");
    }
    // The new active pool misbehaves after the switch: switch back.
    failing.store(true, Ordering::SeqCst);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && rollout_status(&proxy).await != "rolled-back" {
        c.get("/", &[]).await;
    }
    assert_eq!(rollout_status(&proxy).await, "rolled-back");
    for _ in 0..10 {
        assert_eq!(c.get("/", &[]).await.2, "blue");
    }
    let delivered =
        || hooks.lock().unwrap().iter().any(|e| e["text"].as_str().unwrap_or("").contains("all traffic on blue"));
    assert!(eventually(Duration::from_secs(5), delivered).await, "{:?}", hooks.lock().unwrap());
    let got = hooks.lock().unwrap().clone();
    assert!(got.len() >= 3, "start, switch, switchback: {got:?}");
    assert!(got.iter().all(|e| e["text"].as_str().unwrap().starts_with("[switchyard] web:")), "{got:?}");
    assert!(
        got.iter().any(|e| e["text"].as_str().unwrap().contains("all traffic on blue: rollback_when breached")),
        "{got:?}"
    );
}

async fn rollout_status(proxy: &Proxy) -> String {
    rollout(proxy).await["status"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_rollout_commands() {
    let (_s, _c, proxy) = canary_proxy(Arc::new(AtomicBool::new(false)), "").await;
    let admin = proxy.admin.unwrap();
    let ctl = |args: &[&str]| ctl(admin, &[&["rollout"], args].concat());
    let (ok, out, err) = ctl(&["start", "web"]);
    assert!(ok, "{err}");
    assert!(out.contains("rollout of web (canary): running") && out.contains("step 1/3"), "{out}");
    let (ok, out, _) = ctl(&["status", "web"]);
    assert!(ok && out.contains("weights: stable 50%  canary 50%") && out.contains("hold ["), "{out}");
    let (ok, out, _) = ctl(&["promote", "web"]);
    assert!(ok && out.contains("step 2/3"), "{out}");
    let (ok, out, _) = ctl(&["rollback", "web"]);
    assert!(ok && out.contains("rolled-back"), "{out}");
    let (ok, out, _) = ctl(&["status", "web", "--watch"]);
    assert!(ok && out.contains("rolled-back"), "--watch ends with the rollout: {out}");
    let (ok, _, err) = ctl(&["pause", "web"]);
    assert!(!ok && err.contains("409"), "{err}");
}

/// Webhooks over `https://`: delivered to a receiver whose certificate
/// chains to `webhooks.ca_file`, never to one whose name does not match; the
/// rollout goes on either way. The receiver is a second Switchyard
/// terminating TLS in front of a plain upstream that records what it gets.
#[tokio::test]
async fn webhooks_over_https_are_verified() {
    let hooks = Upstream::text("ok").await;
    let tls_dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(tls_dir.path().join("hook.pem"), ck.cert.pem()).unwrap();
    std::fs::write(tls_dir.path().join("hook.key"), ck.signing_key.serialize_pem()).unwrap();
    let receiver_yaml = format!(
        "listeners:\n  - name: tls\n    bind: \"127.0.0.1:0\"\n    tls: {{ cert: hook.pem, key: hook.key }}\n\
         services:\n  - name: hooks\n    pools:\n      p: {{ endpoints: [\"{}\"] }}\n",
        hooks.addr
    );
    let receiver = Proxy::start_in(tls_dir, &receiver_yaml).await;
    let port = receiver.addr.port();

    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ck.cert.pem()).unwrap();
    let plan = format!(
        "    rollout:\n      steps: [{{ weight: 10, hold: 1h }}]\n      \
         webhooks: [\"https://localhost:{port}/good\", \"https://127.0.0.1:{port}/wrong-name\"]\n"
    );
    let svc = service(
        "web",
        &plan,
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let yaml = format!("{}webhooks: {{ ca_file: ca.pem }}\n", admin_config(&svc));
    let proxy = Proxy::start_in(dir, &yaml).await;
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let delivered =
        eventually(Duration::from_secs(10), || hooks.seen.lock().unwrap().iter().any(|s| s.uri == "/good")).await;
    assert!(delivered, "the receiver whose certificate chains to the CA got the event");
    let seen = hooks.last();
    assert_eq!(seen.method, "POST");
    let refused = eventually(Duration::from_secs(10), || {
        proxy.logged("webhook failed").iter().any(|l| l["url"].as_str().is_some_and(|u| u.contains("wrong-name")))
    })
    .await;
    assert!(refused, "a certificate for another name is refused");
    assert!(hooks.seen.lock().unwrap().iter().all(|s| s.uri != "/wrong-name"), "and nothing was sent there");
    assert_eq!(proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1["status"], "running");
}
