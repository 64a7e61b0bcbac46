//! Bad input from clients, sent as raw bytes, with a recording upstream
//! behind the proxy asserting what actually arrived (HARDENING.md).

use http::Response;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_test_support::*;

/// An upstream that reads each request body fully and answers with its length;
/// it records each body read as `Ok(len)` or `Err(())`.
async fn echo_len() -> (Upstream, Arc<Mutex<Vec<Result<u64, ()>>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    let up = Upstream::start(move |req| {
        let b = b.clone();
        async move {
            let len = drain_len(req.into_body()).await.map_err(|_| ());
            b.lock().unwrap().push(len);
            let mut r = Response::new(full(format!("len={}", len.unwrap_or(0))));
            r.headers_mut().insert("connection", "x-bar".parse().unwrap());
            r.headers_mut().insert("x-bar", "secret".parse().unwrap());
            r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
            r.headers_mut().insert("x-kept", "yes".parse().unwrap());
            r
        }
    })
    .await;
    (up, bodies)
}

async fn setup() -> (Upstream, Arc<Mutex<Vec<Result<u64, ()>>>>, Proxy) {
    let (up, bodies) = echo_len().await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nserver: {{ header_read_timeout: 1s }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let proxy = Proxy::start(&yaml).await;
    (up, bodies, proxy)
}

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_forwarded_chunked_and_closes() {
    let (up, bodies, proxy) = setup().await;
    let req =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let out = raw(proxy.addr, req, WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(out.contains("len=3"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert_eq!(up.hits(), 1, "exactly one request reaches the upstream");
    let seen = up.last();
    assert!(seen.headers.get("content-length").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert_eq!(*bodies.lock().unwrap(), vec![Ok(3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_is_refused_and_nothing_forwarded() {
    let (up, _bodies, proxy) = setup().await;
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabcde",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Space : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\0b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        b"GET /a\\..\\b HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for (i, case) in cases.iter().enumerate() {
        let out = raw(proxy.addr, case, WAIT).await;
        let status = status_of(&out);
        assert!(status == 400 || status == 501, "case {i} ({:?}) got {status}: {out}", String::from_utf8_lossy(case));
    }
    assert_eq!(up.hits(), 0, "nothing may be forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_bodies_never_arrive_complete() {
    let (_up, bodies, proxy) = setup().await;
    // An invalid chunk size, then a missing final chunk (client closes its side).
    let _ =
        raw(proxy.addr, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nabc", WAIT)
            .await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n").await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    // Whatever the upstream gets, it gets soon; then it must not be a complete body.
    eventually(Duration::from_secs(2), || !bodies.lock().unwrap().is_empty()).await;
    let seen = bodies.lock().unwrap().clone();
    assert!(seen.iter().all(|b| b.is_err()), "an upstream saw a complete body: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_internal_headers_are_stripped_both_ways() {
    let (up, _b, proxy) = setup().await;
    let req = b"GET /h HTTP/1.1\r\nHost: shop.test:8080\r\nConnection: keep-alive, x-foo\r\nX-Foo: 1\r\n\
                Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: x-t\r\n\
                Upgrade: h2c\r\nProxy-Authorization: Basic Zm9v\r\nX-Switchyard-Pool: canary\r\n\
                X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-End: kept\r\n\r\n";
    let out = raw(proxy.addr, req, Duration::from_millis(800)).await;
    assert_eq!(status_of(&out), 200, "{out}");
    let h = up.last().headers;
    for gone in [
        "x-foo",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "x-switchyard-pool",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h:?}");
    }
    assert_eq!(h["x-end"], "kept");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "an untrusted client's XFF is replaced");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.test:8080");
    let lower = out.to_ascii_lowercase();
    assert!(!lower.contains("x-bar"), "{out}");
    assert!(!lower.contains("keep-alive: timeout"), "{out}");
    assert!(lower.contains("x-kept: yes"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_methods_and_timeouts() {
    let (up, _b, proxy) = setup().await;
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert_eq!(status_of(&raw(proxy.addr, big.as_bytes(), WAIT).await), 431);
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status_of(&raw(proxy.addr, many.as_bytes(), WAIT).await), 431);
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    assert_eq!(status_of(&raw(proxy.addr, long.as_bytes(), WAIT).await), 414);
    assert_eq!(status_of(&raw(proxy.addr, b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", WAIT).await), 405);
    assert_eq!(up.hits(), 0);

    // Slow headers: the connection is closed after the header read timeout (1 s here).
    let t = std::time::Instant::now();
    let _ = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(4), "a slow header was not cut off: {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start(|req| async move { Response::new(full(req.uri().path().to_owned())) }).await;
    let proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let req = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let out = raw(proxy.addr, req, WAIT).await;
    let (a, b, c) = (out.find("/one").unwrap(), out.find("/two").unwrap(), out.find("/three").unwrap());
    assert!(a < b && b < c, "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_and_stalled_uploads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/big" {
            return Response::new(http_body_util::BodyExt::boxed(Zeros { remaining: 256 << 20 }));
        }
        let n = drain_len(req.into_body()).await.map_or(-1, |n| n as i64);
        Response::new(full(n.to_string()))
    })
    .await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\n\
         server: {{ write_idle_timeout: 1s, body_idle_timeout: 1s }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let proxy = Proxy::start(&yaml).await;

    // A reader that stops reading a 256 MiB response: the proxy gives up on it
    // after the write idle timeout instead of buffering the body.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1024];
    s.read_exact(&mut first).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // delay: a slow reader
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection should have been closed");
    assert!((rest.len() as u64) < 64 << 20, "read {} bytes after stalling: nothing should be left", rest.len());
    assert!(proxy.peak_rss() < 64 << 20, "peak RSS {}", proxy.peak_rss());

    // An upload that stalls half way: 408 after the body idle timeout.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part of it").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), 408, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let up = Upstream::text("ok").await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\", max_connections: 1 }}\nserver: {{ workers: 1 }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let proxy = Proxy::start(&yaml).await;
    let mut first = Client::connect(proxy.addr).await;
    assert_eq!(first.get("/", &[]).await.2, "ok");
    // A second client is accepted by the kernel but not served while the first holds the only slot.
    let addr = proxy.addr;
    let second = tokio::spawn(async move { get(addr, "/", &[]).await });
    tokio::time::sleep(Duration::from_millis(500)).await; // delay: the second connection must wait for a slot
    assert!(!second.is_finished(), "served beyond max_connections");
    assert_eq!(up.hits(), 1);
    drop(first);
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok"), "served once the slot is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_expect_continue_http10_and_trusted_forwarding() {
    let up = Upstream::start(|req| async move {
        let method = req.method().clone();
        let n = drain_len(req.into_body()).await.unwrap();
        let mut r = Response::new(full(format!("{method} {n}")));
        r.headers_mut().insert("x-method", method.as_str().parse().unwrap());
        r
    })
    .await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\n  - {{ name: internal, bind: \"127.0.0.1:0\", trust_forwarded: true }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let proxy = Proxy::start(&yaml).await;

    // HEAD: headers only, no body bytes.
    let out = raw(proxy.addr, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(out.to_ascii_lowercase().contains("x-method: head"), "{out}");
    assert!(out.ends_with("\r\n\r\n"), "a HEAD response has no body: {out:?}");

    // Expect: 100-continue: the client gets 100 before sending its body.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"hello").await.unwrap();
    let mut rest = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, s.read(&mut rest)).await.unwrap().unwrap();
    let rest = String::from_utf8_lossy(&rest[..n]).into_owned();
    assert!(rest.starts_with("HTTP/1.1 200") && rest.contains("POST 5"), "{rest}");

    // HTTP/1.0 without Host reaches a service without a host match.
    let out = raw(proxy.addr, b"GET / HTTP/1.0\r\n\r\n", WAIT).await;
    assert!(out.starts_with("HTTP/1.0 200") && out.contains("GET 0"), "{out}");

    // A trusted listener appends to X-Forwarded-For and keeps X-Forwarded-Proto.
    let internal: std::net::SocketAddr = proxy
        .lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l["message"] == "listening" && l["listener"] == "internal")
        .map(|l| l["addr"].as_str().unwrap().parse().unwrap())
        .unwrap();
    let (status, _, _) =
        get(internal, "/", &[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]).await;
    assert_eq!(status, 200);
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "https");
}

/// A client's `Connection` list cannot take `Host` (or the length) from the
/// upstream's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_drop_host_or_content_length() {
    let (up, bodies, proxy) = setup().await;
    let req =
        b"POST / HTTP/1.1\r\nHost: shop.local\r\nConnection: host, content-length\r\nContent-Length: 3\r\n\r\nabc";
    let out = raw(proxy.addr, req, WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
    let seen = up.last();
    assert_eq!(seen.headers["host"], "shop.local", "{:?}", seen.headers);
    assert_eq!(seen.headers["content-length"], "3");
    assert_eq!(*bodies.lock().unwrap(), vec![Ok(3)]);
}

/// Host values that are not a host (and port) are refused before routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_host_values_are_refused() {
    let (up, _, proxy) = setup().await;
    for host in ["a.local:abc", "a.local/foo", "a.local evil", "a.local, b.local", "a.local:1:2"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let out = raw(proxy.addr, req.as_bytes(), WAIT).await;
        assert_eq!(status_of(&out), 400, "Host: {host}: {out}");
    }
    let out = raw(proxy.addr, b"GET http://a.local:8080/ HTTP/1.1\r\nHost: a.local\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&out), 400, "an absolute URI whose port differs from Host's: {out}");
    assert_eq!(up.hits(), 0, "none reached the upstream");
    let out = raw(proxy.addr, b"GET / HTTP/1.1\r\nHost: a.local:8080\r\nConnection: close\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
}

/// `Content-Length: 010` reaches the upstream as `10`; `Transfer_Encoding`
/// (a framing header in disguise) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_is_canonical_and_disguised_framing_refused() {
    let (up, bodies, proxy) = setup().await;
    let out = raw(proxy.addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 010\r\n\r\n0123456789", WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert_eq!(up.last().headers["content-length"], "10");
    assert_eq!(*bodies.lock().unwrap(), vec![Ok(10)]);
    let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer_Encoding: chunked\r\n\r\nabcd";
    let out = raw(proxy.addr, req, WAIT).await;
    assert_eq!(status_of(&out), 400, "{out}");
    assert_eq!(up.hits(), 1, "the disguised one never reached the upstream");
}

/// A GET, HEAD or DELETE with a body reaches the upstream with that body
/// (sized or chunked): what the upstream gets is what the client sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_get_head_and_delete_are_forwarded_not_dropped() {
    let (up, bodies, proxy) = setup().await;
    for (method, framing, body) in [
        ("GET", "Content-Length: 5", "hello"),
        ("GET", "Transfer-Encoding: chunked", "5\r\nhello\r\n0\r\n\r\n"),
        ("DELETE", "Content-Length: 5", "hello"),
        ("HEAD", "Content-Length: 5", "hello"),
    ] {
        let req = format!("{method} / HTTP/1.1\r\nHost: x\r\n{framing}\r\nConnection: close\r\n\r\n{body}");
        let out = raw(proxy.addr, req.as_bytes(), WAIT).await;
        assert_eq!(status_of(&out), 200, "{method} {framing}: {out}");
        assert_eq!(bodies.lock().unwrap().last().copied(), Some(Ok(5)), "{method} {framing}: {:?}", up.last().headers);
    }
}

/// Client-address headers follow one policy: from an untrusted client,
/// `Forwarded` and `X-Real-IP` are dropped like `X-Forwarded-For` is
/// replaced; `set_forwarded` writes the proxy's own `Forwarded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_address_headers_are_not_taken_from_untrusted_clients() {
    let (up, _) = echo_len().await;
    let yaml = format!(
        "listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\", set_forwarded: true }}\nservices:\n{}",
        service("s", "", &[("p", &[up.addr])], "")
    );
    let proxy = Proxy::start(&yaml).await;
    let req = b"GET / HTTP/1.1\r\nHost: shop.local\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n";
    let out = raw(proxy.addr, req, WAIT).await;
    assert_eq!(status_of(&out), 200, "{out}");
    let h = up.last().headers;
    assert!(h.get("x-real-ip").is_none(), "{h:?}");
    assert_eq!(h["forwarded"], "for=127.0.0.1;proto=http;host=\"shop.local\"", "{h:?}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
}

/// Paths an upstream could decode into another path (`..;`, overlong UTF-8,
/// double-encoded dots) are refused by default; `strict_paths: false` lets
/// a service take them as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_upstreams_decode_differently_are_refused_unless_allowed() {
    let (up, _) = echo_len().await;
    let services = [
        service("strict", "    match: { host: strict.local }\n", &[("p", &[up.addr])], ""),
        service("lenient", "    match: { host: lenient.local }\n    strict_paths: false\n", &[("p", &[up.addr])], ""),
    ]
    .concat();
    let proxy = Proxy::start(&config(&services)).await;
    for path in ["/public/..;/admin", "/%c0%ae%c0%ae/admin", "/public/%252e%252e/admin"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: strict.local\r\nConnection: close\r\n\r\n");
        let out = raw(proxy.addr, req.as_bytes(), WAIT).await;
        assert_eq!(status_of(&out), 400, "{path}: {out}");
    }
    assert_eq!(up.hits(), 0, "none reached the upstream");
    let out =
        raw(proxy.addr, b"GET /public/..;/admin HTTP/1.1\r\nHost: lenient.local\r\nConnection: close\r\n\r\n", WAIT)
            .await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert_eq!(up.last().uri, "/public/..;/admin", "forwarded as it was");
    let out = raw(proxy.addr, b"GET /a;b=1/c HTTP/1.1\r\nHost: strict.local\r\nConnection: close\r\n\r\n", WAIT).await;
    assert_eq!(status_of(&out), 200, "ordinary path parameters pass: {out}");
}
