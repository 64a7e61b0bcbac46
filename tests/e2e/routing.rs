//! Service matching by host and path prefix; 404; path normalisation.

use switchyard_test_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_wildcard_and_longest_prefix() {
    let shop = Upstream::text("shop").await;
    let api = Upstream::text("api").await;
    let wild = Upstream::text("wild").await;
    let admin = Upstream::text("admin").await;
    let services = [
        service("shop", "    match: { host: shop.example.com }\n", &[("p", &[shop.addr])], ""),
        service("api", "    match: { host: shop.example.com, path_prefix: /api }\n", &[("p", &[api.addr])], ""),
        service("wild", "    match: { host: \"*.example.com\" }\n", &[("p", &[wild.addr])], ""),
        service("admin", "    match: { path_prefix: /admin }\n", &[("p", &[admin.addr])], ""),
    ]
    .concat();
    let proxy = Proxy::start(&config(&services)).await;
    let a = proxy.addr;
    let go = |path: &'static str, host: &'static str| async move {
        let mut c = Client::connect(a).await;
        let r = c.send(http::Request::get(path).header("host", host).body(full("")).unwrap()).await.unwrap();
        let status = r.status();
        let err = r.headers().get("x-switchyard-error").map(|v| v.to_str().unwrap().to_owned());
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        (status.as_u16(), String::from_utf8_lossy(&body).into_owned(), err)
    };
    assert_eq!(go("/", "shop.example.com").await.1, "shop");
    assert_eq!(go("/api/v1", "SHOP.example.com:8080").await.1, "api");
    assert_eq!(go("/apiv1", "shop.example.com").await.1, "shop", "prefixes match whole segments");
    assert_eq!(go("/x", "eu.example.com").await.1, "wild");
    assert_eq!(go("/admin/x", "other.org").await.1, "admin");
    let (status, _, err) = go("/", "other.org").await;
    assert_eq!(status, 404);
    assert_eq!(err.as_deref(), Some("no-service"));
    // Normalised before matching, and forwarded normalised.
    assert_eq!(go("/public/../admin/%2e%2e/admin/x", "other.org").await.1, "admin");
    assert_eq!(admin.last().uri, "/admin/x");
    assert_eq!(go("/api/x?q=1&r=%2F", "shop.example.com").await.1, "api");
    assert_eq!(api.last().uri, "/api/x?q=1&r=%2F", "the query string is forwarded untouched");
    let (status, _, _) = go("/admin%2Fx", "other.org").await;
    assert_eq!(status, 400, "an encoded slash is ambiguous");
}
