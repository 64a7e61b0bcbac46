//! The phases in process: this module's `handle`, served by hyper on
//! 127.0.0.1:0 over the `Shared` a config builds, in front of real
//! upstreams. Each test makes one phase decide.

use super::*;
use crate::{Config, Options, Proxy};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};

/// An upstream answering its name; counts what reached it.
async fn upstream(name: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let seen = seen.clone();
            let svc = service_fn(move |_req: Request<Incoming>| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(name)))) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc));
        }
    });
    (addr, hits)
}

/// The proxy's request path on `yaml`, without the binary or its listeners.
async fn front(yaml: &str) -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(yaml, dir.path()).unwrap();
    let shared =
        Proxy::new(config, Options { access_log: false, ..Options::default() }).unwrap().control().shared.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, peer)) = listener.accept().await {
            let conn = Arc::new(ClientConn {
                peer: peer.ip(),
                peer_ip: HeaderValue::from_static("127.0.0.1"),
                tls: false,
                trust_forwarded: false,
                set_forwarded: false,
            });
            let shared = shared.clone();
            let svc = service_fn(move |req| {
                let (shared, conn) = (shared.clone(), conn.clone());
                async move { Ok::<_, std::convert::Infallible>(handle(shared, conn, req).await) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc));
        }
    });
    addr
}

/// Sends `req`; the status, the error label (if the proxy answered itself), the pool header and the body.
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> (u16, String, String, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let header =
        |name: &HeaderName| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (error, pool) = (header(&X_SWITCHYARD_ERROR), header(&X_SWITCHYARD_POOL));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, error, pool, String::from_utf8_lossy(&body).into_owned())
}

fn get(host: &str, path: &str) -> http::request::Builder {
    Request::get(path).header(header::HOST, host)
}

use http::HeaderName;

fn config(stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        r#"
listeners: [{{ name: l, bind: "127.0.0.1:0" }}]
services:
  - name: web
    match: {{ host: web.test }}
    expose_pool: true
    max_request_body: 1KiB
    pools:
      stable: {{ endpoints: ["{stable}"] }}
      canary: {{ endpoints: ["{canary}"] }}
      dead: {{ endpoints: ["127.0.0.1:1"] }}
    split:
      rules:
        - {{ match: {{ header: {{ x-canary: "1" }} }}, pool: canary }}
        - {{ match: {{ header: {{ x-dead: "1" }} }}, pool: dead }}
      weights: {{ stable: 100, canary: 0, dead: 0 }}
"#
    )
}

#[tokio::test]
async fn check_and_match_refuse_what_no_service_should_see() {
    let ((s, s_hits), (c, _)) = (upstream("stable").await, upstream("canary").await);
    let addr = front(&config(s, c)).await;
    let empty = || Full::new(Bytes::new());
    assert_eq!(send(addr, get("other.test", "/").body(empty()).unwrap()).await.1, "no-service");
    let (status, error, ..) = send(addr, get("web.test", "/a/%252e%252e/admin").body(empty()).unwrap()).await;
    assert_eq!((status, error.as_str()), (400, "bad-request"), "a strict service refuses a double-encoded dot-segment");
    let (status, error, ..) = send(addr, get("web.test", "/bad\\path").body(empty()).unwrap()).await;
    assert_eq!((status, error.as_str()), (400, "bad-request"));
    assert_eq!(s_hits.load(Ordering::Relaxed), 0, "nothing refused reached an upstream");
}

#[tokio::test]
async fn split_chooses_by_rule_then_weight_and_forward_reaches_that_pool() {
    let ((s, _), (c, c_hits)) = (upstream("stable").await, upstream("canary").await);
    let addr = front(&config(s, c)).await;
    let empty = || Full::new(Bytes::new());
    let (status, _, pool, body) = send(addr, get("web.test", "/").body(empty()).unwrap()).await;
    assert_eq!((status, pool.as_str(), body.as_str()), (200, "stable", "stable"));
    let (_, _, pool, body) = send(addr, get("web.test", "/").header("x-canary", "1").body(empty()).unwrap()).await;
    assert_eq!((pool.as_str(), body.as_str()), ("canary", "canary"));
    assert_eq!(c_hits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_declared_body_over_the_cap_is_refused_before_forwarding() {
    let ((s, s_hits), (c, _)) = (upstream("stable").await, upstream("canary").await);
    let addr = front(&config(s, c)).await;
    let big = Request::post("/").header(header::HOST, "web.test").body(Full::new(Bytes::from(vec![b'x'; 2048])));
    let (status, error, ..) = send(addr, big.unwrap()).await;
    assert_eq!((status, error.as_str()), (413, "payload-too-large"));
    assert_eq!(s_hits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_refused_connection_is_the_upstreams_failure() {
    let ((s, _), (c, _)) = (upstream("stable").await, upstream("canary").await);
    let addr = front(&config(s, c)).await;
    let req = get("web.test", "/").header("x-dead", "1").body(Full::new(Bytes::new())).unwrap();
    let (status, error, ..) = send(addr, req).await;
    assert_eq!((status, error.as_str()), (502, "upstream-connect"));
}

#[test]
fn the_upstream_uri_is_origin_form_with_the_normalised_path_and_the_query() {
    let uri: http::Uri = "http://web.test/a/./b?x=1&y=2".parse().unwrap();
    assert_eq!(prepare::upstream_uri(&uri, "/a/b").to_string(), "/a/b?x=1&y=2");
    assert_eq!(prepare::upstream_uri(&"/".parse().unwrap(), "/").to_string(), "/");
}
