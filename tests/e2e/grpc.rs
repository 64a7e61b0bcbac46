//! gRPC through the proxy: a tonic server behind an h2c pool and a tonic
//! client in front, unary and server-streaming calls, trailers both ways,
//! calls counted by their `grpc-status` (a failure is an error on HTTP 200,
//! a caller's mistake is not), `grpc-timeout` honoured, and a canary rolled
//! back on its calls' status.

use http::uri::PathAndQuery;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use switchyard_test_support::*;
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// Every message of the test service.
#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    n: u32,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `test.Echo`: `Say` answers `{name} says {text}` (`missing`: NOT_FOUND;
/// `slow`: after 2 s; INTERNAL while `failing`), `Count` streams `n` messages.
#[derive(Clone)]
struct Echo {
    name: &'static str,
    failing: Arc<AtomicBool>,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(match req.uri().path() {
                "/test.Echo/Say" => grpc.unary(Say(me), req).await,
                "/test.Echo/Count" => grpc.server_streaming(Count, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

struct Say(Echo);

impl tonic::server::UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<Result<Response<Msg>, Status>>;

    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let e = self.0.clone();
        Box::pin(async move {
            let text = req.into_inner().text;
            match text.as_str() {
                "missing" => return Err(Status::not_found("no such thing")),
                "slow" => tokio::time::sleep(Duration::from_secs(2)).await, // slower than the caller's deadline
                _ if e.failing.load(Ordering::SeqCst) => return Err(Status::internal("boom")),
                _ => {}
            }
            Ok(Response::new(Msg { text: format!("{} says {text}", e.name), n: 0 }))
        })
    }
}

struct Count;

impl tonic::server::ServerStreamingService<Msg> for Count {
    type Response = Msg;
    type ResponseStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;
    type Future = BoxFuture<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let n = req.into_inner().n;
        Box::pin(async move {
            // 99: two messages, then DATA_LOSS in the trailers.
            let msg = |i| Ok(Msg { text: format!("#{i}"), n: i });
            let items: Vec<_> = match n {
                99 => vec![msg(0), msg(1), Err(Status::data_loss("lost the rest"))],
                n => (0..n).map(msg).collect(),
            };
            Ok(Response::new(Box::pin(tokio_stream::iter(items)) as Self::ResponseStream))
        })
    }
}

/// A tonic server of `test.Echo` (h2c) on loopback.
async fn upstream(name: &'static str, failing: Arc<AtomicBool>) -> SocketAddr {
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tonic::transport::Server::builder().add_service(Echo { name, failing });
    tokio::spawn(server.serve_with_incoming(incoming));
    addr
}

type Client = tonic::client::Grpc<tonic::transport::Channel>;

async fn client(proxy: SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy}")).unwrap().connect().await.unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(c: &mut Client, text: &str) -> Result<String, Status> {
    c.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let req = Request::new(Msg { text: text.into(), n: 0 });
    let path = PathAndQuery::from_static("/test.Echo/Say");
    c.unary(req, path, ProstCodec::<Msg, Msg>::default()).await.map(|r| r.into_inner().text)
}

/// Service `web` with its pools (`name → endpoint`) over h2c and `extra` in
/// its section; the admin API, stats ticks of 100 ms.
async fn proxy(pools: &[(&str, SocketAddr)], extra: &str, weights: &str) -> Proxy {
    let mut svc = format!("  - name: web\n{extra}    pools:\n");
    for (name, addr) in pools {
        svc.push_str(&format!("      {name}: {{ endpoints: [\"{addr}\"], protocol: h2c }}\n"));
    }
    svc.push_str(&format!("    split: {{ weights: {weights} }}\n"));
    start_with_admin(&svc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_pass_with_their_trailers_and_count_by_their_grpc_status() {
    let failing = Arc::new(AtomicBool::new(false));
    let p = proxy(&[("p", upstream("stable", failing.clone()).await)], "", "{ p: 1 }").await;
    let mut c = client(p.addr).await;
    assert_eq!(say(&mut c, "hi").await.unwrap(), "stable says hi");

    // A server stream: every message, then the status in the trailers.
    c.ready().await.unwrap();
    let req = Request::new(Msg { text: String::new(), n: 5 });
    let path = PathAndQuery::from_static("/test.Echo/Count");
    let mut stream = c.server_streaming(req, path, ProstCodec::<Msg, Msg>::default()).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.n);
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);

    // A stream that fails after its messages: the status in its trailers counts.
    c.ready().await.unwrap();
    let req = Request::new(Msg { text: String::new(), n: 99 });
    let path = PathAndQuery::from_static("/test.Echo/Count");
    let mut stream = c.server_streaming(req, path, ProstCodec::<Msg, Msg>::default()).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().n, 0);
    assert_eq!(stream.message().await.unwrap().unwrap().n, 1);
    assert_eq!(stream.message().await.unwrap_err().code(), tonic::Code::DataLoss);

    failing.store(true, Ordering::SeqCst);
    let err = say(&mut c, "hi").await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::Internal, "boom"));
    let err = say(&mut c, "missing").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Two fine calls, two server faults (on HTTP 200: one in the trailers
    // after two messages, one trailers-only) and a caller's mistake.
    let counted = until(Duration::from_secs(5), || async {
        let (_, stats) = p.admin("GET", "/v1/services/web/stats", None, None).await;
        stats["pools"]["p"]["requests"] == 5
    })
    .await;
    let (_, stats) = p.admin("GET", "/v1/services/web/stats", None, None).await;
    let f = &stats["pools"]["p"];
    assert!(counted, "{f}");
    assert_eq!(
        (&f["status"]["2xx"], &f["status"]["4xx"], &f["status"]["5xx"]),
        (&2.into(), &1.into(), &2.into()),
        "{f}"
    );
    assert_eq!(f["error_rate"], 0.4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_grpc_timeout_cuts_the_wait_for_the_upstream_short() {
    // An upstream that ignores the deadline (tonic's server keeps it too,
    // which would race the proxy's), slower than the caller allows.
    let slow = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_secs(2)).await; // slower than the caller's deadline
        http::Response::new(full("too late"))
    })
    .await;
    let svc = format!("  - name: web\n    pools:\n      p: {{ endpoints: [\"{}\"] }}\n", slow.addr);
    let p = start_with_admin(&svc).await;
    // A raw HTTP/2 call, so no client-side deadline hides the proxy's.
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let msg = prost::Message::encode_to_vec(&Msg { text: "slow".into(), n: 0 });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let req = http::Request::post("http://grpc.test/test.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "300m")
        .body(full(frame))
        .unwrap();
    let started = Instant::now();
    let resp = h2.send_request(req).await.unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status(), 504, "the service's 15 s timeout gave way to the caller's 300 ms");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_calls_fail_by_grpc_status_is_rolled_back() {
    let stable = upstream("stable", Arc::default()).await;
    let canary = upstream("canary", Arc::new(AtomicBool::new(true))).await;
    let plan = "    rollout:\n      steps: [{ weight: 50, hold: 5s }]\n      \
                analysis: { interval: 200ms, window: 2s, min_requests: 5, rollback_when: { error_rate_above: 0.2, min_requests: 5 } }\n";
    let p = proxy(&[("stable", stable), ("canary", canary)], plan, "{ stable: 100, canary: 0 }").await;
    let addr = p.addr;
    let load = tokio::spawn(async move {
        let mut c = client(addr).await;
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            let _ = say(&mut c, "hi").await;
            tokio::time::sleep(Duration::from_millis(5)).await; // pace the calls
        }
    });
    let (status, v) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some("{}")).await;
    assert_eq!(status, 200, "{v}");
    let end = rollout_end(&p).await;
    load.abort();
    assert_eq!(end["status"], "rolled-back", "{end}");
    assert!(end["reason"].as_str().unwrap().contains("error rate"), "{end}");
    let mut c = client(p.addr).await;
    assert_eq!(say(&mut c, "hi").await.unwrap(), "stable says hi", "every call back on the baseline");
}
