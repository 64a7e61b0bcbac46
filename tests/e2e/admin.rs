//! The admin API, statistics, Prometheus, durable state, reload and the CLI.

use serde_json::json;
use std::time::Duration;
use switchyard_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_health_openapi_and_services() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    assert_eq!(proxy.admin("GET", "/health/live", None, None).await.0, 200);
    assert_eq!(proxy.admin("GET", "/health/ready", None, None).await, (200, json!({ "status": "ready" })));
    let (status, spec) = proxy.admin("GET", "/v1/openapi.yaml", None, None).await;
    assert_eq!(status, 200);
    assert!(spec.as_str().unwrap().contains("/v1/services/{svc}/weights"));
    let (status, services) = proxy.admin("GET", "/v1/services", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(services[0]["name"], "web");
    assert_eq!(services[0]["weights_source"], "config");
    let (status, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(svc["pools"][1]["name"], "stable");
    assert_eq!(svc["pools"][1]["weight"], 100);
    assert_eq!(svc["pools"][1]["endpoints"][0]["healthy"], true);
    assert_eq!(proxy.admin("GET", "/v1/services/nope", None, None).await.0, 404);
    assert_eq!(proxy.admin("GET", "/v1/nothing", None, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_bad_bodies_change_nothing() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let body = r#"{"stable": 50, "canary": 50}"#;
    let w = Some(body);
    let path = "/v1/services/web/weights";
    assert_eq!(proxy.admin("PUT", path, None, w).await.0, 401, "no token");
    assert_eq!(proxy.admin("PUT", path, Some("wrong-token-wrong-token"), w).await.0, 401, "bad token");
    assert_eq!(proxy.admin("PUT", path, Some(READ_TOKEN), w).await.0, 403, "a read-only token");
    assert_eq!(proxy.admin("GET", "/v1/services/web", Some(READ_TOKEN), None).await.0, 200);
    assert_eq!(proxy.admin("GET", path, Some(TOKEN), None).await.0, 405, "GET on a write endpoint");
    assert_eq!(proxy.admin("POST", path, Some(TOKEN), w).await.0, 405);
    assert_eq!(proxy.admin("POST", "/v1/services", Some(TOKEN), w).await.0, 405);

    // A cross-site style text/plain write is refused.
    let mut c = Client::connect(proxy.admin.unwrap()).await;
    let req = http::Request::put(path)
        .header("host", "a")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "text/plain")
        .body(full(body))
        .unwrap();
    assert_eq!(c.send(req).await.unwrap().status(), 415);

    for (body, status) in [
        ("not json", 400),
        (r#"{"stable": -1}"#, 400),
        (r#"{"stable": 1.5}"#, 400),
        (r#"{"stable": 0, "canary": 0}"#, 400),
        (r#"{"stabel": 10}"#, 400),
        (r#"{}"#, 400),
        (r#"["stable"]"#, 400),
    ] {
        let (got, err) = proxy.admin("PUT", path, Some(TOKEN), Some(body)).await;
        assert_eq!(got, status, "{body}: {err}");
        assert!(err["error"].is_string(), "{err}");
    }
    assert_eq!(proxy.admin("PUT", "/v1/services/nope/weights", Some(TOKEN), w).await.0, 404);
    let huge = format!(r#"{{"stable": 1, "x": "{}"}}"#, "a".repeat(2 << 20));
    assert_eq!(proxy.admin("PUT", path, Some(TOKEN), Some(&huge)).await.0, 413);

    let (_, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(
        (svc["pools"][0]["weight"].clone(), svc["pools"][1]["weight"].clone()),
        (json!(0), json!(100)),
        "nothing changed"
    );

    // Every write, refused ones too, is in the history; the token's name is the actor.
    let (status, ev) = proxy.admin("PUT", path, Some(TOKEN), w).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["actor"], "ci");
    assert_eq!(ev["old"], json!({ "canary": 0, "stable": 100 }));
    assert_eq!(ev["new"], json!({ "canary": 50, "stable": 50 }));
    let (_, events) = proxy.admin("GET", "/v1/events?limit=100", None, None).await;
    let events = events.as_array().unwrap();
    assert!(events.iter().filter(|e| e["outcome"] == "refused").count() >= 7, "{events:?}");
    assert!(events.iter().any(|e| e["message"].as_str().unwrap().contains("refused with 403")), "{events:?}");
    assert!(
        events.iter().all(|e| !e["message"].as_str().unwrap().contains("refused with 401")),
        "401s are only logged"
    );
    assert_eq!(events.last().unwrap()["outcome"], "applied");
    let refused_by = |events: &serde_json::Value, status: &str| -> Vec<String> {
        let with = |e: &&serde_json::Value| e["message"].as_str().unwrap().contains(status);
        events.as_array().unwrap().iter().filter(with).map(|e| e["actor"].as_str().unwrap().to_owned()).collect()
    };
    assert!(refused_by(&json!(events), "refused with 403").iter().all(|a| a == "viewer"), "the token's name");
    assert!(refused_by(&json!(events), "refused with 405").iter().all(|a| a == "ci"), "the token's name");

    // Nothing an unauthenticated client sends reaches the durable history,
    // even where the path is unknown; a valid token's refused write does.
    let seq = |events: &serde_json::Value| events.as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap();
    let before = seq(&proxy.admin("GET", "/v1/events?limit=1", None, None).await.1);
    let long = format!("/v1/{}", "x".repeat(60_000));
    for _ in 0..20 {
        assert_eq!(proxy.admin("POST", &long, None, Some("{}")).await.0, 404);
    }
    let (_, after) = proxy.admin("GET", "/v1/events?limit=5", None, None).await;
    assert_eq!(seq(&after), before, "no event for unauthenticated writes: {after}");
    assert_eq!(proxy.admin("POST", "/v1/nowhere", Some(TOKEN), Some("{}")).await.0, 404);
    let (_, after) = proxy.admin("GET", "/v1/events?limit=1", None, None).await;
    let last = &after[0];
    assert_eq!((last["actor"].clone(), last["outcome"].clone()), (json!("ci"), json!("refused")), "{last}");
    assert!(last["message"].as_str().unwrap().contains("POST /v1/nowhere refused with 404"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weight_change_applies_to_the_next_request_and_stats_follow() {
    let (stable, canary, proxy) = two_pool_proxy("").await;
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..20 {
        assert_eq!(c.get("/", &[]).await.2, "stable");
    }
    let (status, _) = proxy.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(r#"{"canary": 1}"#)).await;
    assert_eq!(status, 200);
    for _ in 0..10 {
        assert_eq!(c.get("/", &[]).await.2, "canary", "the very next request on a kept-alive connection");
    }
    assert_eq!((stable.hits(), canary.hits()), (20, 10));
    // Windowed stats arrive after a resolution tick (100 ms here).
    let mut stats = json!(null);
    for _ in 0..50 {
        stats = proxy.admin("GET", "/v1/services/web/stats", None, None).await.1;
        if stats["pools"]["canary"]["requests"] == 10 && stats["pools"]["stable"]["requests"] == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll
    }
    assert_eq!(stats["pools"]["stable"]["requests"], 20, "{stats}");
    assert_eq!(stats["pools"]["canary"]["status"]["2xx"], 10, "{stats}");
    assert_eq!(stats["window_seconds"], 5.0);
    assert!(stats["pools"]["stable"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(proxy.admin("GET", "/v1/services/web/stats?window=1h", None, None).await.0, 400);
    // The window forgets; lifetime does not.
    let window_empty = until(Duration::from_secs(15), || async {
        proxy.admin("GET", "/v1/services/web/stats", None, None).await.1["pools"]["stable"]["requests"] == 0
    });
    assert!(window_empty.await, "the 5 s window forgot the requests");
    let (_, stats) = proxy.admin("GET", "/v1/services/web/stats", None, None).await;
    assert_eq!(stats["pools"]["stable"]["requests"], 0, "{stats}");
    assert_eq!(stats["lifetime"]["stable"]["requests"], 20, "{stats}");

    let (status, metrics) = proxy.admin("GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let m = metrics.as_str().unwrap();
    for line in [
        r#"switchyard_requests_total{service="web",pool="canary",class="2xx"} 10"#,
        r#"switchyard_request_duration_seconds_count{service="web",pool="stable"} 20"#,
        r#"switchyard_upstream_errors_total{service="web",pool="stable",class="connect"} 0"#,
        r#"switchyard_pool_weight{service="web",pool="canary"} 1"#,
        r#"switchyard_pool_weight{service="web",pool="stable"} 0"#,
        "# TYPE switchyard_request_duration_seconds histogram",
        // The weight change, made durable before the API answered.
        "switchyard_state_commit_seconds_count 1\n",
        r#"switchyard_state_commit_seconds_bucket{le="+Inf"} 1"#,
        "switchyard_build_info{version=",
        "process_open_fds ",
        "process_resident_memory_bytes ",
    ] {
        assert!(m.contains(line), "missing `{line}` in:\n{m}");
    }
    assert!(m.contains(r#"switchyard_endpoint_healthy{service="web",pool="canary",endpoint=""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_weights_survive_kill_9_and_reload_and_can_be_reset() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let (status, _) = proxy
        .admin(
            "PUT",
            "/v1/services/web/weights",
            Some(TOKEN),
            Some(r#"{"weights": {"canary": 100}, "reason": "all in"}"#),
        )
        .await;
    assert_eq!(status, 200);
    let proxy = proxy.kill9_and_restart().await;
    assert!(
        proxy.lines.lock().unwrap().iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("state store"))),
        "the log says where the weights came from"
    );
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..10 {
        assert_eq!(c.get("/", &[]).await.2, "canary", "after kill -9 the API's weights are in force");
    }
    let (_, svc) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(svc["weights_source"], "api");
    let (_, events) = proxy.admin("GET", "/v1/events", None, None).await;
    assert_eq!(events[0]["reason"], "all in", "the history survived");

    // A reload (here by SIGHUP) keeps them too.
    proxy.signal("HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        let (_, events) = proxy.admin("GET", "/v1/events", None, None).await;
        if events.as_array().unwrap().iter().any(|e| e["kind"] == "config-reload" && e["actor"] == "SIGHUP") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll
    }
    assert!(reloaded);
    assert_eq!(c.get("/", &[]).await.2, "canary");

    // Reset: the file's weights apply again.
    let (status, ev) = proxy.admin("DELETE", "/v1/services/web/weights", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(c.get("/", &[]).await.2, "stable");
    let proxy = proxy.kill9_and_restart().await;
    assert_eq!(get(proxy.addr, "/", &[]).await.2, "stable", "the reset is durable too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_good_files_and_refuses_bad_ones() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let extra = Upstream::text("extra").await;
    let path = proxy.dir.path().join("switchyard.yaml");
    let original = std::fs::read_to_string(&path).unwrap();
    let with_extra = original.replacen(
        "services:\n",
        &format!(
            "services:\n{}",
            service("extra", "    match: { path_prefix: /extra }\n", &[("p", &[extra.addr])], "")
        ),
        1,
    );
    std::fs::write(&path, &with_extra).unwrap();
    let (status, ev) = proxy.admin("POST", "/v1/config/reload", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{ev}");
    assert_eq!(get(proxy.addr, "/extra/x", &[]).await.2, "extra");

    std::fs::write(
        &path,
        with_extra.replace("weights: { stable: 100, canary: 0 }", "weights: { stable: 100, canry: 0 }"),
    )
    .unwrap();
    let (status, err) = proxy.admin("POST", "/v1/config/reload", Some(TOKEN), None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("unknown pool `canry`"), "{err}");
    assert_eq!(get(proxy.addr, "/extra/x", &[]).await.2, "extra", "the running config stays");

    std::fs::write(&path, with_extra.replace("name: main", "name: renamed")).unwrap();
    let (status, err) = proxy.admin("POST", "/v1/config/reload", Some(TOKEN), None).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("listeners"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_streams_new_events() {
    use http_body_util::BodyExt;
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let mut c = Client::connect(proxy.admin.unwrap()).await;
    let resp =
        c.send(http::Request::get("/v1/events?follow=1").header("host", "a").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let (status, _) =
        proxy.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(r#"{"canary": 3, "stable": 7}"#)).await;
    assert_eq!(status, 200);
    let mut seen = String::new();
    while !seen.contains("event: weights") || !seen.ends_with("\n\n") {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
        if let Ok(d) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let seen = seen.lines().filter(|l| !l.starts_with(':')).collect::<Vec<_>>().join("\n");
    assert!(seen.starts_with("id: 1\nevent: weights\ndata: {"), "{seen}");
    assert!(seen.contains(r#""canary":3"#), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_off_loopback_needs_a_token() {
    let yaml = format!(
        "{}admin: {{ bind: \"0.0.0.0:0\" }}\n",
        config(&service("s", "", &[("p", &["127.0.0.1:1".parse().unwrap()])], ""))
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = tokio::process::Command::new(binary())
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("not a loopback address"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_and_exit_codes() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let admin = proxy.admin.unwrap();
    for _ in 0..5 {
        get(proxy.addr, "/", &[]).await;
    }
    let (ok, out, err) = ctl(admin, &["weights", "web", "stable=90", "canary=10", "--reason", "first step"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "weights of web: canary=0 stable=100 → canary=10 stable=90");

    let (ok, _, err) = ctl(admin, &["weights", "web", "stable=90", "beta=10"]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("unknown pool `beta`"), "{err}");
    let (ok, _, err) = ctl(admin, &["weights", "web", "stable=lots"]);
    assert!(!ok && err.contains("not a non-negative integer"), "{err}");
    let (ok, _, err) = ctl(admin, &["weights", "nope", "a=1"]);
    assert!(!ok && err.contains("404"), "{err}");

    let listed = |out: &str| out.lines().any(|l| l.starts_with("web (api)") && l.contains("90") && l.contains("1/1"));
    assert!(until(Duration::from_secs(5), || async { listed(&ctl(admin, &["status"]).1) }).await);
    let (ok, out, err) = ctl(admin, &["status"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("SERVICE") && lines[0].contains("WEIGHT") && lines[0].contains("P99"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("web (api)") && l.contains("stable") && l.contains("90") && l.contains("1/1")),
        "{out}"
    );

    let (ok, out, _) = ctl(admin, &["--json", "status"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"][0]["name"], "web");

    let stats_shown = || {
        let (ok, out, _) = ctl(admin, &["stats", "web"]);
        ok && out.contains("POOL") && out.lines().any(|l| l.starts_with("stable") && l.contains(" 5 "))
    };
    assert!(eventually(Duration::from_secs(5), stats_shown).await, "{}", ctl(admin, &["stats", "web"]).1);

    let (ok, out, _) = ctl(admin, &["events"]);
    assert!(ok);
    assert!(out.contains("weights of web") && out.contains("(reason: first step)") && out.contains("REFUSED"), "{out}");

    let (ok, out, err) = ctl(admin, &["reload"]);
    assert!(ok, "{err}");
    assert!(out.contains("config reloaded"), "{out}");

    let (ok, _, err) = ctl("127.0.0.1:1".parse().unwrap(), &["status"]);
    assert!(!ok && err.contains("cannot reach the admin API"), "{err}");
}

/// The API as its OpenAPI document describes it: bodiless writes need no
/// media type (with a token), query parameters are checked, an empty
/// `window` is the default one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_writes_and_query_parameters_match_the_contract() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let bodiless = |method: &str, path: &str| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "admin")
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(""))
            .unwrap()
    };
    let send = |req| async { Client::connect(proxy.admin.unwrap()).await.send(req).await.unwrap() };
    let resp = send(bodiless("DELETE", "/v1/services/web/weights")).await;
    assert_eq!(resp.status(), 200, "no Content-Type needed without a body");
    let resp = send(bodiless("POST", "/v1/services/web/rollout/abort")).await;
    assert_eq!(resp.status(), 404, "the route's own answer (no rollout), not 415");
    for (query, status) in [
        ("/v1/events?limit=null", 400),
        ("/v1/events?limit=0", 400),
        ("/v1/events?limit=10001", 400),
        ("/v1/events?after=x", 400),
        ("/v1/events?follow=maybe", 400),
        ("/v1/events?limit=5&after=0&follow=0", 200),
        ("/v1/services/web/stats?window=", 200),
        ("/v1/services/web/stats?window=2s", 200),
    ] {
        let (got, body) = proxy.admin("GET", query, None, None).await;
        assert_eq!(got, status, "{query}: {body}");
        if status == 400 {
            assert!(body["error"].is_string(), "{query}: {body}");
        }
    }
}

/// The client's token has its own variable; the server's still works for
/// the client, with a warning that the server reads it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_reads_its_own_token_variable_and_warns_about_the_servers() {
    let (_s, _c, proxy) = two_pool_proxy("").await;
    let admin = proxy.admin.unwrap().to_string();
    let run = |var: &str| {
        std::process::Command::new(binary())
            .args(["ctl", "--addr", &admin, "weights", "web", "stable=90", "canary=10"])
            .env_remove("SWITCHYARD_CTL_TOKEN")
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .env(var, TOKEN)
            .output()
            .unwrap()
    };
    let out = run("SWITCHYARD_CTL_TOKEN");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("SWITCHYARD_ADMIN_TOKEN");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("SWITCHYARD_ADMIN_TOKEN, which `switchyard serve` also reads"), "{err}");
}
