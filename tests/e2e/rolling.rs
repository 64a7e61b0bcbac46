//! Rolling updates: one pool's endpoints replaced a batch at a time by real
//! upstream servers that come up slowly, never become ready, or fail under
//! traffic; the new endpoints judged against the old, a breach rolling the
//! pool back to its old endpoints at once.

use http::{Request, Response};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::*;

/// A new version's endpoint: `/ready` answers 503 until `ready` is set; other
/// paths answer `status` with "v2"; a request served while not ready is counted in `early`.
struct NewVersion {
    up: Upstream,
    ready: Arc<AtomicBool>,
    early: Arc<AtomicUsize>,
}

async fn new_version(status: u16, ready: bool) -> NewVersion {
    let (flag, early) = (Arc::new(AtomicBool::new(ready)), Arc::new(AtomicUsize::new(0)));
    let (f, e) = (flag.clone(), early.clone());
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let (f, e) = (f.clone(), e.clone());
        async move {
            let ready = f.load(Ordering::SeqCst);
            if req.uri().path() == "/ready" {
                return Response::builder().status(if ready { 200 } else { 503 }).body(full("")).unwrap();
            }
            if !ready {
                e.fetch_add(1, Ordering::SeqCst);
            }
            Response::builder().status(status).body(full("v2")).unwrap()
        }
    })
    .await;
    NewVersion { up, ready: flag, early }
}

async fn pool_endpoints(proxy: &Proxy) -> Vec<String> {
    let v = proxy.admin("GET", "/v1/services/web", None, None).await.1;
    let eps = v["pools"][0]["endpoints"].as_array().cloned().unwrap_or_default();
    let mut out: Vec<String> = eps.iter().map(|e| e["address"].as_str().unwrap().to_owned()).collect();
    out.sort();
    out
}

fn plan(new: &[&NewVersion], extra: &str) -> String {
    let eps: Vec<String> = new.iter().map(|n| format!("\"{}\"", n.up.addr)).collect();
    format!(
        r#"{{"strategy": "rolling", "pool": "web", "endpoints": [{}], "max_surge": 1, "max_unavailable": 0,
            "hold": "1s", "readiness": {{"path": "/ready", "period": "100ms", "timeout": "500ms"{extra}}},
            "analysis": {{"interval": "200ms", "window": "3s", "min_requests": 10,
                          "success": {{"max_error_rate": 0.05}}, "rollback_when": {{"error_rate_above": 0.3, "min_requests": 10}}}}}}"#,
        eps.join(", ")
    )
}

/// Requests until the rollout ends (restarting the proxy once, mid-rollout, when asked); returns the
/// statuses clients got, the proxy and the rollout.
async fn through(mut proxy: Proxy, restart_at_batch: Option<u64>) -> (Vec<u16>, Proxy, serde_json::Value) {
    let mut statuses = Vec::new();
    let mut restart = restart_at_batch;
    for _ in 0..4000 {
        let (status, _, _) = get(proxy.addr, "/", &[]).await;
        statuses.push(status.as_u16());
        let r = proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1;
        if r["status"] != "running" {
            return (statuses, proxy, r);
        }
        if restart.is_some_and(|b| r["step"].as_u64() == Some(b)) {
            restart = None;
            proxy = proxy.kill9_and_restart().await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await; // pace the requests
    }
    panic!("the rolling update did not end");
}

/// The old version: `/slow` takes 3.5 s (a request in flight while its endpoint is drained).
async fn old_version() -> Upstream {
    Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(3500)).await; // slow upstream: in flight across a drain
        }
        Response::new(full("v1"))
    })
    .await
}

async fn old_fleet() -> (Upstream, Upstream, Proxy) {
    let (a, b) = (old_version().await, old_version().await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    let yaml =
        format!("{}state: {{ dir: state }}\n", admin_config(&service("web", "", &[("web", &[a.addr, b.addr])], "")));
    let proxy = Proxy::start_in(dir, &yaml).await;
    (a, b, proxy)
}

#[tokio::test]
async fn endpoints_are_replaced_batch_by_batch_once_ready_and_drained_without_dropping_a_request() {
    let (_a, _b, proxy) = old_fleet().await;
    let (slow, quick) = (new_version(200, false).await, new_version(200, true).await);
    let body = plan(&[&slow, &quick], "")
        .replace(r#""strategy": "rolling""#, r#""strategy": "rolling", "release": {"version": "v2"}"#);
    let (status, v) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["steps_total"], 2, "two batches of one (surge 1, none unavailable): {v}");
    // In flight on both old endpoints while they are drained: they finish.
    let in_flight: Vec<_> = (0..2).map(|_| tokio::spawn(get(proxy.addr, "/slow", &[]))).collect();
    let ready = slow.ready.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await; // slow upstream: ready after 1.5 s
        ready.store(true, Ordering::SeqCst);
    });
    let (statuses, proxy, end) = through(proxy, None).await;
    assert_eq!(end["status"], "promoted", "{end}");
    let drained_at = proxy.admin("GET", "/v1/events?limit=50", None, None).await.1.to_string();
    assert!(drained_at.contains("batch 2 of 2"), "the first old endpoint was drained while /slow ran: {drained_at}");
    for r in in_flight {
        let (status, _, body) = r.await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "v1"), "a drained endpoint finishes what it has");
    }
    assert!(statuses.iter().all(|s| *s == 200), "no client saw an error while endpoints moved");
    assert_eq!(slow.early.load(Ordering::SeqCst), 0, "no request reached an endpoint before it was ready");
    let mut want = vec![slow.up.addr.to_string(), quick.up.addr.to_string()];
    want.sort();
    assert_eq!(pool_endpoints(&proxy).await, want, "the pool runs on the new endpoints");
    let view = proxy.admin("GET", "/v1/services/web", None, None).await.1;
    assert_eq!(view["pools"][0]["version"], "v2", "and says what they run: {view}");
    let report = proxy.admin("GET", "/v1/report?format=json", Some(TOKEN), None).await.1.to_string();
    assert!(report.contains("\"version\":\"v2\""), "the deployment report has the new version: {report}");
    for _ in 0..20 {
        assert_eq!(get(proxy.addr, "/", &[]).await.2, "v2");
    }
    let events = proxy.admin("GET", "/v1/events?limit=50", None, None).await.1.to_string();
    assert!(events.contains("batch 1 of 2") && events.contains("batch 2 of 2"), "{events}");
    assert!(events.contains("rolling update of pool web"), "{events}");
    let metrics = get(proxy.admin.unwrap(), "/metrics", &[]).await.2;
    assert!(
        metrics.contains(
            "switchyard_rolling_requests_total{service=\"web\",pool=\"web\",endpoints=\"new\",class=\"2xx\"}"
        ),
        "the new endpoints' figures are their own"
    );
    assert!(!metrics.contains("pool=\"web@new\""), "and not counted twice among the pools");
    drop(proxy);
}

#[tokio::test]
async fn a_rolling_update_resumes_at_its_batch_after_kill_9() {
    let (_a, _b, proxy) = old_fleet().await;
    let (one, two) = (new_version(200, true).await, new_version(200, true).await);
    let (status, v) =
        proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(&plan(&[&one, &two], ""))).await;
    assert_eq!(status, 200, "{v}");
    let (statuses, proxy, end) = through(proxy, Some(1)).await;
    assert_eq!(end["status"], "promoted", "{end}");
    assert!(statuses.iter().all(|s| *s == 200));
    let mut want = vec![one.up.addr.to_string(), two.up.addr.to_string()];
    want.sort();
    assert_eq!(pool_endpoints(&proxy).await, want);
    let events = proxy.admin("GET", "/v1/events?limit=50", None, None).await.1;
    let batch2 = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"].as_str().is_some_and(|r| r.contains("batch 2 of 2, 1 new")))
        .count();
    assert!(batch2 <= 1, "batch 2 is not repeated after the restart: {events}");
}

#[tokio::test]
async fn an_endpoint_that_never_becomes_ready_rolls_the_pool_back() {
    let (a, b, proxy) = old_fleet().await;
    let never = new_version(200, false).await;
    let body = plan(&[&never], r#", "deadline": "1500ms""#);
    let (status, v) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    let (statuses, proxy, end) = through(proxy, None).await;
    assert_eq!(end["status"], "rolled-back", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("not ready after 1 s"), "{end}");
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(never.early.load(Ordering::SeqCst), 0, "it never got a request");
    let mut old = vec![a.addr.to_string(), b.addr.to_string()];
    old.sort();
    assert_eq!(pool_endpoints(&proxy).await, old);
}

#[tokio::test]
async fn new_endpoints_failing_under_traffic_roll_the_pool_back_to_the_old_ones_at_once() {
    let (a, b, proxy) = old_fleet().await;
    let broken = new_version(500, true).await;
    let (status, v) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(&plan(&[&broken], ""))).await;
    assert_eq!(status, 200, "{v}");
    let (_, proxy, end) = through(proxy, None).await;
    assert_eq!(end["status"], "rolled-back", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("error rate"), "judged on the new endpoints' errors: {end}");
    let mut old = vec![a.addr.to_string(), b.addr.to_string()];
    old.sort();
    assert_eq!(pool_endpoints(&proxy).await, old, "back on the old endpoints");
    let hits = broken.up.hits();
    for _ in 0..30 {
        let (status, _, body) = get(proxy.addr, "/", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "v1"));
    }
    assert_eq!(broken.up.hits(), hits, "no request reaches the broken endpoint after the rollback");
    let (ok, out, _) = ctl(proxy.admin.unwrap(), &["rollout", "status", "web"]);
    assert!(ok && out.contains("rolled-back"), "{out}");
}
