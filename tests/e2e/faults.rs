//! Upstream faults: 502, retry, 503, 504, passive ejection and recovery,
//! broken upstream responses.

use http::{Request, Response};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An address where nothing listens.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn err_header(h: &http::HeaderMap) -> &str {
    h.get("x-switchyard-error").map_or("", |v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_is_502_and_get_retries_on_another_endpoint() {
    let dead = dead_addr().await;
    let live = Upstream::text("live").await;
    let yaml = config(
        &[
            service("solo", "    match: { path_prefix: /solo }\n", &[("p", &[dead])], ""),
            service("pair", "    match: { path_prefix: /pair }\n", &[("p", &[dead, live.addr])], ""),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&yaml).await;

    let (status, headers, _) = get(proxy.addr, "/solo", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(err_header(&headers), "upstream-connect");

    // A request with a body is never retried: the POSTs round robin puts on
    // the dead endpoint fail. (Before the GETs below: their failures eject it.)
    let mut c = Client::connect(proxy.addr).await;
    let mut failed = 0;
    for _ in 0..4 {
        let req = Request::post("/pair").header("host", "x").body(full("data")).unwrap();
        let resp = c.send(req).await.unwrap();
        failed += usize::from(resp.status() == 502);
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(failed, 2, "POSTs to the dead endpoint must fail, not be retried");

    // Every GET that lands on the dead endpoint is retried on the live one.
    for _ in 0..8 {
        let (status, _, body) = c.get("/pair", &[]).await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "live"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504_after_the_service_timeout() {
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(5)).await; // slow upstream
        Response::new(full("late"))
    })
    .await;
    let yaml = config(&service("slow", "    timeout: 300ms\n", &[("p", &[slow.addr])], ""));
    let proxy = Proxy::start(&yaml).await;
    let t = std::time::Instant::now();
    let (status, headers, _) = get(proxy.addr, "/", &[]).await;
    assert_eq!(status, 504);
    assert_eq!(err_header(&headers), "upstream-timeout");
    assert!(t.elapsed() < Duration::from_secs(4), "answered before the upstream did");
    let logged = || proxy.lines.lock().unwrap().iter().any(|l| l["target"] == "switchyard::access");
    assert!(eventually(Duration::from_secs(5), logged).await);
    let lines = proxy.lines.lock().unwrap().clone();
    let access = lines.iter().find(|l| l["target"] == "switchyard::access").expect("an access line");
    assert_eq!(access["error"], "upstream-timeout");
    assert_eq!(access["status"], 504);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_active_checks_make_503() {
    let up = Upstream::start(|req| async move {
        let status = if req.uri().path() == "/healthz" { 500 } else { 200 };
        let mut r = Response::new(full("x"));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r
    })
    .await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nservices:\n  - name: s\n    pools:\n      p:\n        \
         endpoints: [\"{}\"]\n        health_check: {{ path: /healthz, interval: 50ms, unhealthy_threshold: 2 }}\n",
        up.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let mut last = 0;
    for _ in 0..100 {
        let (status, headers, _) = get(proxy.addr, "/", &[]).await;
        last = status.as_u16();
        if last == 503 {
            assert_eq!(err_header(&headers), "no-healthy-endpoint");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll
    }
    assert_eq!(last, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_and_recovery() {
    let good = Upstream::text("good").await;
    let broken = Arc::new(AtomicBool::new(true));
    let flaky = switchable("flaky", broken.clone()).await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nservices:\n  - name: s\n    pools:\n      p:\n        \
         endpoints: [\"{}\", \"{}\"]\n        outlier: {{ consecutive_failures: 3, base_ejection: 1s }}\n",
        good.addr, flaky.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let mut c = Client::connect(proxy.addr).await;
    for _ in 0..20 {
        c.get("/", &[]).await;
    }
    let flaky_hits = flaky.hits();
    assert_eq!(flaky_hits, 3, "ejected after three consecutive failures");
    for _ in 0..20 {
        assert_eq!(c.get("/", &[]).await.2, "good");
    }
    assert_eq!(flaky.hits(), flaky_hits, "an ejected endpoint gets no traffic");
    broken.store(false, Ordering::SeqCst);
    // Poll (with a deadline) for the end of the 1 s ejection.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut seen = bodies(&mut c, 10).await;
    while !seen.iter().any(|b| b == "flaky") && std::time::Instant::now() < deadline {
        seen = bodies(&mut c, 10).await;
    }
    assert!(seen.iter().any(|b| b == "flaky"), "traffic returns after the ejection: {seen:?}");
    assert!(proxy.lines.lock().unwrap().iter().any(|l| l["message"] == "endpoint ejected"));
}

async fn bodies(c: &mut Client, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(c.get("/", &[]).await.2);
    }
    out
}

/// An upstream that answers every connection with these raw bytes, then closes.
async fn raw_upstream(reply: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_upstream_responses() {
    let half = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b").await;
    let garbage = raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello").await;
    let reset = raw_upstream(b"").await;
    // Response heads under the 64 KiB an upstream connection reads at once,
    // and over twice that (between the two, it depends on how reads fell).
    let head = |n: usize| -> &'static [u8] {
        let h = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\nContent-Length: 2\r\n\r\nok", "a".repeat(n));
        Box::leak(h.into_bytes().into_boxed_slice())
    };
    let (near, over) = (raw_upstream(head(60 * 1024)).await, raw_upstream(head(200 * 1024)).await);
    let yaml = config(
        &[
            service("near", "    match: { path_prefix: /near }\n", &[("p", &[near])], ""),
            service("over", "    match: { path_prefix: /over }\n", &[("p", &[over])], ""),
            service("half", "    match: { path_prefix: /half }\n", &[("p", &[half])], ""),
            service("garbage", "    match: { path_prefix: /garbage }\n", &[("p", &[garbage])], ""),
            service("reset", "    match: { path_prefix: /reset }\n", &[("p", &[reset])], ""),
        ]
        .concat(),
    );
    let proxy = Proxy::start(&yaml).await;

    // Half a body then close: the client must see an error, never a complete response.
    let mut c = Client::connect(proxy.addr).await;
    let resp = c.send(Request::get("/half").header("host", "x").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.into_body().collect().await.is_err(), "a truncated body must not look complete");

    let (status, headers, _) = get(proxy.addr, "/garbage", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(err_header(&headers), "upstream-reset");
    let (status, _, _) = get(proxy.addr, "/reset", &[]).await;
    assert_eq!(status, 502);

    let (status, headers, body) = get(proxy.addr, "/near", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok");
    assert_eq!(headers["x-big"].len(), 60 * 1024);
    let (status, headers, _) = get(proxy.addr, "/over", &[]).await;
    assert_eq!(status, 502);
    assert_eq!(err_header(&headers), "upstream-reset");
}
