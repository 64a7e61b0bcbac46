//! Traffic mirroring: a share of a service's requests copied to a pool that
//! never answers the client; the copies are recorded in that pool's figures
//! (with whether their status class matched the primary's), and a dead,
//! slow or saturated mirror costs the primary requests nothing.

use http::{Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_test_support::*;

/// A proxy whose `web` service answers from `stable` and mirrors to `shadow` with `mirror` (YAML flow map).
async fn mirrored(stable: &Upstream, shadow: std::net::SocketAddr, mirror: &str) -> Proxy {
    let split = format!("      weights: {{ stable: 100, shadow: 0 }}\n      mirror: {mirror}\n");
    start_with_admin(&service("web", "", &[("stable", &[stable.addr]), ("shadow", &[shadow])], &split)).await
}

/// Waits until `pool`'s lifetime figure at `path` (say `["mirror", "dropped"]`)
/// reaches `n`; returns the pool's figures.
async fn counted(proxy: &Proxy, pool: &str, path: &[&str], n: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = proxy.admin("GET", "/v1/services/web/stats", None, None).await.1["lifetime"][pool].clone();
        if path.iter().fold(&last, |v, k| &v[*k]).as_u64().unwrap_or(0) >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll: figures arrive each stats tick
    }
    panic!("the {pool} pool never counted {n} at {path:?}: {last}");
}

#[tokio::test]
async fn ten_percent_of_safe_requests_are_mirrored_and_compared() {
    let stable = Upstream::text("stable").await;
    let shadow = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        // The copy's answer is discarded: one path fails on the shadow only.
        let status = if req.uri().path() == "/bad" { 500 } else { 200 };
        Response::builder().status(status).body(full("shadow")).unwrap()
    })
    .await;
    let proxy = mirrored(&stable, shadow.addr, "{ pool: shadow, percent: 10 }").await;
    let mut c = Client::connect(proxy.addr).await;
    let n = 2_000;
    for i in 0..n {
        let path = if i % 2 == 0 { "/bad" } else { "/ok" };
        let (status, _, body) = c.get(path, &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "stable"), "the client hears only the primary");
    }
    assert_eq!(stable.hits(), n, "every request is served by its primary pool");
    // Binomial(2000, 0.1): mean 200, sd 13.4; ±5 sd.
    let copies = {
        assert!(until(Duration::from_secs(5), || async { shadow.hits() >= 130 }).await);
        tokio::time::sleep(Duration::from_millis(300)).await; // delay: let copies in flight land
        shadow.hits()
    };
    assert!((133..=267).contains(&copies), "{copies} of {n} mirrored at 10 %");
    let seen = shadow.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.method == "GET" && s.headers.get("x-switchyard-mirrored").is_some()));
    assert!(seen.iter().all(|s| s.headers.get("x-forwarded-for").is_some()), "a copy is the request the primary heard");
    let f = counted(&proxy, "shadow", &["mirror", "compared"], copies as u64).await;
    assert_eq!(f["requests"].as_u64(), Some(copies as u64), "copies are the shadow pool's requests: {f}");
    let bad = seen.iter().filter(|s| s.uri == "/bad").count() as u64;
    assert_eq!(f["mirror"]["mismatched"].as_u64(), Some(bad), "a 5xx copy of a 2xx answer is a mismatch: {f}");
    assert_eq!(f["status"]["5xx"].as_u64(), Some(bad));
    let stable_f = counted(&proxy, "stable", &["requests"], n as u64).await;
    assert_eq!(stable_f["requests"].as_u64(), Some(n as u64));
    assert!(stable_f.get("mirror").is_none(), "the primary pool counts no copies: {stable_f}");
    let metrics = get(proxy.admin.unwrap(), "/metrics", &[]).await.2;
    let line =
        format!("switchyard_mirror_requests_total{{service=\"web\",pool=\"shadow\",outcome=\"mismatched\"}} {bad}");
    assert!(metrics.contains(&line), "{line} not in /metrics");
}

#[tokio::test]
async fn unsafe_methods_are_not_mirrored_unless_named_and_bodies_are_copied_whole() {
    let stable = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let n = drain_len(req.into_body()).await.unwrap_or(0);
        Response::new(full(format!("stable {n}")))
    })
    .await;
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    let shadow = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let b = b.clone();
        async move {
            let body = http_body_util::BodyExt::collect(req.into_body()).await.unwrap().to_bytes();
            b.lock().unwrap().push(body);
            Response::new(full("shadow"))
        }
    })
    .await;
    let proxy = mirrored(&stable, shadow.addr, "{ pool: shadow, percent: 100 }").await;
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..20 {
        let req = Request::post("/orders").header("host", "web").body(full("{\"item\": 1}")).unwrap();
        assert_eq!(c.send(req).await.unwrap().status(), 200);
    }
    assert_eq!(c.get("/read", &[]).await.0, 200);
    assert!(until(Duration::from_secs(5), || async { shadow.hits() >= 1 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await; // delay: any POST copy would have landed
    assert_eq!(shadow.hits(), 1, "POST is not mirrored by default; the GET is");
    drop(proxy);

    let proxy = mirrored(
        &stable,
        shadow.addr,
        "{ pool: shadow, percent: 100, methods: [POST], max_body: 1KiB, match: { header: { x-mirror: \"yes\" } } }",
    )
    .await;
    let mut c = Client::connect(proxy.addr).await;
    let post = |body: Vec<u8>, mirror: bool| {
        let mut r = Request::post("/orders").header("host", "web");
        if mirror {
            r = r.header("x-mirror", "yes");
        }
        r.body(full(body)).unwrap()
    };
    let small = b"{\"item\": 2}".to_vec();
    let resp = c.send(post(small.clone(), true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    // A streamed (chunked) body is copied too, once the primary has read it whole.
    let chunked = b"POST /orders HTTP/1.1\r\nHost: web\r\nx-mirror: yes\r\nTransfer-Encoding: chunked\r\n\r\n\
                    2\r\nab\r\n2\r\ncd\r\n2\r\nef\r\n0\r\n\r\n";
    let answer = raw(proxy.addr, chunked, Duration::from_secs(2)).await;
    assert!(answer.contains("stable 6"), "{answer}");
    let resp = c.send(post(vec![b'x'; 4096], true)).await.unwrap();
    assert_eq!(resp.status(), 200, "a body over the mirror's cap still reaches the primary");
    assert_eq!(c.send(post(small.clone(), false)).await.unwrap().status(), 200);
    let f = counted(&proxy, "shadow", &["mirror", "dropped"], 1).await;
    assert!(until(Duration::from_secs(5), || async { bodies.lock().unwrap().len() >= 2 }).await);
    tokio::time::sleep(Duration::from_millis(300)).await; // delay: nothing else may land
                                                          // The first body is the earlier GET's (empty). Copies are sent off the request path, each on
                                                          // its own task, so the two may land in either order.
    let mut got = bodies.lock().unwrap()[1..].to_vec();
    got.sort();
    assert_eq!(got, vec![bytes::Bytes::from("abcdef"), bytes::Bytes::from(small)], "{f}");
}

#[tokio::test]
async fn a_dead_slow_or_saturated_mirror_costs_the_primary_nothing() {
    let stable = Upstream::text("stable").await;
    // Dead: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = mirrored(&stable, dead, "{ pool: shadow, percent: 100 }").await;
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..50 {
        let (status, _, body) = c.get("/", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "stable"));
    }
    let f = counted(&proxy, "shadow", &["mirror", "mismatched"], 1).await;
    assert!(
        f["errors"]["connect"].as_u64().unwrap_or(0) + f["errors"]["no_healthy_endpoint"].as_u64().unwrap_or(0) >= 1,
        "{f}"
    );
    // After a copy found it unreachable, the mirror rests: copies are dropped, not each a failing connect.
    assert!(f["mirror"]["dropped"].as_u64().unwrap_or(0) >= 1, "{f}");
    assert_eq!(counted(&proxy, "stable", &["status", "2xx"], 50).await["status"]["2xx"].as_u64(), Some(50));
    drop(proxy);

    // Slow: the shadow holds every copy until the test lets go. Primary
    // requests are all answered while 8 copies are still held (the queue),
    // and the copies past the queue are dropped and counted.
    let release = Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let shadow = Upstream::start(move |_req| {
        let r = r.clone();
        async move {
            while !r.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await; // slow upstream: held until released
            }
            Response::new(full("shadow"))
        }
    })
    .await;
    let proxy = mirrored(&stable, shadow.addr, "{ pool: shadow, percent: 100, queue: 8 }").await;
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..40 {
        let (status, _, body) = c.get("/", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "stable"));
    }
    assert!(until(Duration::from_secs(5), || async { shadow.hits() == 8 }).await, "8 copies in flight");
    let f = counted(&proxy, "shadow", &["mirror", "dropped"], 32).await;
    assert_eq!(f["mirror"]["dropped"].as_u64(), Some(32), "{f}");
    assert_eq!(shadow.hits(), 8, "none past the queue reached the mirror");
    release.store(true, Ordering::SeqCst);
    counted(&proxy, "shadow", &["mirror", "compared"], 8).await;
    assert_eq!(c.get("/", &[]).await.0, 200);
    assert!(until(Duration::from_secs(5), || async { shadow.hits() == 9 }).await, "room again once copies ended");
}

/// A canary whose rollout starts with a mirror step: `canary` answers with `canary_status`.
async fn mirror_first_rollout(canary_status: u16) -> (Upstream, Upstream, Proxy, serde_json::Value) {
    let stable = Upstream::text("stable").await;
    let canary =
        Upstream::start(
            move |_req| async move { Response::builder().status(canary_status).body(full("canary")).unwrap() },
        )
        .await;
    let split = "      weights: { stable: 100, canary: 0 }\n";
    let proxy =
        start_with_admin(&service("web", "", &[("stable", &[stable.addr]), ("canary", &[canary.addr])], split)).await;
    let plan = r#"{"steps": [{"mirror": {"percent": 100, "hold": "2s"}}, {"weight": 50, "hold": "1s"}],
        "analysis": {"interval": "200ms", "window": "2s", "min_requests": 20,
                     "success": {"max_mirror_mismatch": 0.05, "max_error_rate": 0.05},
                     "rollback_when": {"mirror_mismatch_above": 0.2, "min_requests": 20}}}"#;
    let (status, v) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(plan)).await;
    assert_eq!(status, 200, "{v}");
    (stable, canary, proxy, v)
}

/// Sends requests until the rollout ends; returns the bodies clients heard at each step.
async fn through_the_rollout(proxy: &Proxy) -> (Vec<(u64, String)>, serde_json::Value) {
    let mut c = Client::connect(proxy.addr).await;
    let mut heard = Vec::new();
    for _ in 0..3000 {
        let (_, _, body) = c.get("/", &[]).await;
        let r = proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1;
        heard.push((r["step"].as_u64().unwrap_or(0), body));
        if r["status"] != "running" {
            return (heard, r);
        }
        tokio::time::sleep(Duration::from_millis(5)).await; // pace the requests
    }
    panic!("the rollout did not end");
}

#[tokio::test]
async fn a_mirror_step_judges_the_candidate_on_copies_before_any_user_sees_it() {
    let (_stable, canary, proxy, started) = mirror_first_rollout(200).await;
    assert_eq!(started["current_step"]["mirror_percent"], 100.0, "{started}");
    let view = proxy.admin("GET", "/v1/services/web", None, None).await.1;
    assert_eq!(view["mirror"]["source"], "rollout", "{view}");
    assert_eq!(view["mirror"]["pool"], "canary");
    let (heard, end) = through_the_rollout(&proxy).await;
    assert_eq!(end["status"], "promoted", "{end}");
    let in_mirror_step: Vec<_> = heard.iter().filter(|(step, _)| *step == 0).collect();
    assert!(in_mirror_step.len() > 20, "{} requests during the mirror step", in_mirror_step.len());
    assert!(in_mirror_step.iter().all(|(_, b)| b == "stable"), "no client hears the candidate while it is mirrored to");
    assert!(heard.iter().any(|(step, b)| *step == 1 && b == "canary"), "then the weight step sends it traffic");
    let copies = canary.seen.lock().unwrap().iter().filter(|s| s.headers.contains_key("x-switchyard-mirrored")).count();
    assert!(copies >= in_mirror_step.len() - 2, "{copies} copies for {} requests", in_mirror_step.len());
    let view = proxy.admin("GET", "/v1/services/web", None, None).await.1;
    assert!(view.get("mirror").is_none(), "the rollout's mirror ended with its step: {view}");
    let events = proxy.admin("GET", "/v1/events?limit=20", None, None).await.1;
    assert!(events.to_string().contains("100% of its requests mirrored to canary"), "{events}");
}

#[tokio::test]
async fn copies_answered_unlike_the_baseline_roll_the_candidate_back_before_any_user_sees_it() {
    let (_stable, canary, proxy, _) = mirror_first_rollout(500).await;
    let (heard, end) = through_the_rollout(&proxy).await;
    assert_eq!(end["status"], "rolled-back", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("mirrored requests"), "{end}");
    assert!(heard.iter().all(|(_, b)| b == "stable"), "no client ever heard the broken candidate");
    assert!(canary.hits() >= 20, "it was judged on copies");
    let view = proxy.admin("GET", "/v1/services/web", None, None).await.1;
    assert!(view.get("mirror").is_none(), "{view}");
    let before = canary.hits();
    for _ in 0..20 {
        get(proxy.addr, "/", &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // delay: a copy would have landed
    assert_eq!(canary.hits(), before, "no more copies after the rollback");
}
