//! Who caused a failure: a client's broken, abandoned or stalled upload is a
//! client error (4xx or a logged 499), never an endpoint failure, never an
//! ejection, never counted in the pool's figures — so no client can eject a
//! healthy endpoint or roll back a healthy canary. The upstream's timeout
//! runs from the request's last byte.

use http::{Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_test_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An upstream that reads the whole body and answers with its length.
async fn reader(name: &'static str) -> Upstream {
    Upstream::start(move |req: Request<hyper::body::Incoming>| async move {
        match drain_len(req.into_body()).await {
            Ok(n) => Response::new(full(format!("{name} {n}"))),
            Err(_) => Response::builder().status(400).body(full("broken body")).unwrap(),
        }
    })
    .await
}

/// The bad-upload shapes: raw bytes sent, then the connection is closed.
fn bad_uploads() -> Vec<(&'static str, Vec<u8>)> {
    let head = |te_or_len: &str| format!("POST /up HTTP/1.1\r\nHost: test.local\r\n{te_or_len}\r\n\r\n").into_bytes();
    let with = |h: &str, body: &str| [head(h), body.as_bytes().to_vec()].concat();
    vec![
        ("bad chunk size", with("Transfer-Encoding: chunked", "zz\r\nhello\r\n0\r\n\r\n")),
        ("data longer than the chunk", with("Transfer-Encoding: chunked", "5\r\nhello, world\r\n0\r\n\r\n")),
        ("closed mid-chunk", with("Transfer-Encoding: chunked", "a\r\nhel")),
        ("closed mid-body", with("Content-Length: 100", "only ten b")),
    ]
}

/// Sends every bad-upload shape `times` times; returns the statuses seen (0: none).
async fn flood(addr: std::net::SocketAddr, times: usize) -> Vec<(&'static str, u16)> {
    let mut seen = Vec::new();
    for _ in 0..times {
        for (name, bytes) in bad_uploads() {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out))
                    .await;
            seen.push((name, status_of(&String::from_utf8_lossy(&out))));
        }
    }
    seen
}

async fn pool_stats(proxy: &Proxy, pool: &str) -> serde_json::Value {
    proxy.admin("GET", "/v1/services/web/stats", None, None).await.1["lifetime"][pool].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_eject_nothing_and_count_only_as_client_errors() {
    let (a, b) = (reader("a").await, reader("b").await);
    let svc = service("web", "", &[("stable", &[a.addr, b.addr])], "");
    let proxy = start_with_admin(&svc).await;
    let seen = flood(proxy.addr, 10).await;
    for (name, status) in &seen {
        match *name {
            "bad chunk size" | "data longer than the chunk" => assert_eq!(*status, 400, "{name}: {seen:?}"),
            _ => assert!(*status == 0 || *status == 499, "{name}: the client is gone: {status}"),
        }
    }
    let (_, view) = proxy.admin("GET", "/v1/services/web", None, None).await;
    let healthy: Vec<bool> =
        view["pools"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["healthy"].as_bool().unwrap()).collect();
    assert_eq!(healthy, [true, true], "40 bad uploads ejected no endpoint: {view}");
    // The client errors are counted apart; the pool's own figures stay clean.
    let mut f = serde_json::Value::Null;
    let counted = |f: &serde_json::Value| {
        f["client_errors"]["bad_body"].as_u64() == Some(20) && f["client_errors"]["client_closed"].as_u64() == Some(20)
    };
    assert!(stats_until(&proxy, &mut f, counted).await, "{f}");
    assert_eq!(f["status"]["5xx"], 0, "{f}");
    assert_eq!(f["requests"], 0, "client faults are not the pool's requests: {f}");
    assert!(f["errors"].as_object().unwrap().values().all(|v| v == 0), "{f}");
    let (_, metrics) = proxy.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"switchyard_client_errors_total{service="web",pool="stable",kind="bad_body"} 20"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"switchyard_requests_total{service="web",pool="stable",class="5xx"} 1"#));
    // And the pool still serves.
    let (status, _, body) = get(proxy.addr, "/", &[]).await;
    assert_eq!((status.as_u16(), body.starts_with(['a', 'b'])), (200, true));
}

/// Polls the stable pool's lifetime figures into `f` until `check` holds (10 s at most).
async fn stats_until(proxy: &Proxy, f: &mut serde_json::Value, check: impl Fn(&serde_json::Value) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        *f = pool_stats(proxy, "stable").await;
        if check(f) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_to_a_healthy_canary_do_not_roll_it_back() {
    let (stable, canary) = (reader("stable").await, reader("canary").await);
    let plan = "    rollout:\n      steps:\n        - { weight: 50, hold: 1h }\n      analysis:\n        \
                interval: 100ms\n        window: 2s\n        min_requests: 5\n        \
                success: { max_error_rate: 0.01 }\n        \
                rollback_when: { error_rate_above: 0.01, min_requests: 5 }\n";
    let svc = service(
        "web",
        plan,
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let proxy = start_with_admin(&svc).await;
    let (status, r) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    // Healthy traffic beside the flood, so analysis has figures to judge.
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = {
        let (stop, addr) = (stop.clone(), proxy.addr);
        tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            while !stop.load(Ordering::Relaxed) {
                c.get("/", &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await; // pace
            }
        })
    };
    flood(proxy.addr, 25).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // delay: healthy load goes on beside the flood
    stop.store(true, Ordering::SeqCst);
    healthy.await.unwrap();
    let (_, r) = proxy.admin("GET", "/v1/services/web/rollout", None, None).await;
    assert_eq!(r["status"], "running", "client faults never roll a canary back: {r}");
    let f = proxy.admin("GET", "/v1/services/web/stats", None, None).await.1["lifetime"]["canary"].clone();
    assert!(f["client_errors"]["bad_body"].as_u64().unwrap() > 0, "the flood reached the canary: {f}");
    assert_eq!(f["status"]["5xx"], 0, "{f}");
}

/// Sends a `chunks`-chunk body of 10 bytes each with `pause` before each
/// chunk, over raw TCP; returns the status, the body text and the time taken.
async fn slow_upload(addr: std::net::SocketAddr, chunks: usize, pause: Duration) -> (u16, String, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /up HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n\r\n", chunks * 10);
    s.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..chunks {
        tokio::time::sleep(pause).await; // trickle
        if s.write_all(b"0123456789").await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the response is complete (the proxy keeps the connection open).
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_secs(40), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let body = text.split_once("\r\n\r\n").map_or(String::new(), |(_, b)| b.to_owned());
    (status_of(&text), body, start.elapsed())
}

/// With the default timeouts (15 s for the upstream, 30 s between body
/// frames), a 17 s upload in 1 s steps succeeds: the upstream's timeout
/// runs from the request's last byte, not from its first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_within_the_body_idle_timeout_succeeds_with_default_timeouts() {
    let upstream = reader("up").await;
    let proxy = Proxy::start(&config(&service("web", "", &[("p", &[upstream.addr])], ""))).await;
    let (status, body, took) = slow_upload(proxy.addr, 17, Duration::from_secs(1)).await;
    assert_eq!((status, body.as_str()), (200, "up 170"), "after {took:?}");
    assert!(took > Duration::from_secs(15), "the upload outlasted the service timeout: {took:?}");
}

/// A client that stalls mid-body gets 408 from the body's idle timeout even
/// when the service's timeout is shorter; an upstream that stalls after the
/// whole body arrived gets 504 from the service's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_are_blamed_on_whoever_stalled() {
    let slow_to_answer = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let _ = drain_len(req.into_body()).await;
        tokio::time::sleep(Duration::from_secs(3)).await; // slow upstream
        Response::new(full("late"))
    })
    .await;
    let reads = reader("reads").await;
    let yaml = format!(
        "{}server: {{ body_idle_timeout: 1s }}
",
        config(
            &[
                service(
                    "stall",
                    "    match: { host: test.local }
    timeout: 400ms
",
                    &[("p", &[reads.addr])],
                    ""
                ),
                service(
                    "late",
                    "    match: { host: late.local }
    timeout: 400ms
",
                    &[("p", &[slow_to_answer.addr])],
                    ""
                ),
            ]
            .concat()
        )
    );
    let proxy = Proxy::start(&yaml).await;
    // The client pauses 1.5 s (longer than the 400 ms service timeout, and the 1 s body idle timeout).
    let (status, _, took) = slow_upload(proxy.addr, 2, Duration::from_millis(1500)).await;
    assert_eq!(status, 408, "the client stalled: {took:?}");
    // Paced within both limits the upload succeeds, although it takes longer than 400 ms.
    let (status, body, _) = slow_upload(proxy.addr, 4, Duration::from_millis(300)).await;
    assert_eq!((status, body.as_str()), (200, "reads 40"));
    let req = "POST / HTTP/1.1\r\nHost: late.local\r\nContent-Length: 5\r\n\r\nhello";
    let out = raw(proxy.addr, req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(status_of(&out), 504, "the upstream stalled after the last byte: {out}");
    assert!(out.contains("upstream-timeout"));
}

/// A client that goes away while its request waits on the upstream is a
/// client error (logged `client-closed`, 499), not the pool's: no request,
/// no 5xx, no ejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_before_its_response_is_not_the_pools_fault() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await; // slow upstream
        Response::new(full("late"))
    })
    .await;
    let proxy = start_with_admin(&service("web", "", &[("stable", &[slow.addr])], "")).await;
    for _ in 0..6 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // delay: the request reaches the upstream before the client leaves
        drop(s); // gone before the answer
    }
    let mut f = serde_json::Value::Null;
    let counted = |f: &serde_json::Value| f["client_errors"]["client_closed"].as_u64() == Some(6);
    assert!(stats_until(&proxy, &mut f, counted).await, "{f}");
    assert_eq!(
        (f["requests"].clone(), f["status"]["5xx"].clone()),
        (serde_json::json!(0), serde_json::json!(0)),
        "{f}"
    );
    let (_, view) = proxy.admin("GET", "/v1/services/web", None, None).await;
    assert_eq!(view["pools"][0]["endpoints"][0]["healthy"], true, "{view}");
}
