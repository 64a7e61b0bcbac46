//! `switchyard demo`: small upstream servers for the bundled example, so a
//! newcomer sees a real split without running anything else.
//!
//! Every loopback endpoint named in the config gets a tiny HTTP server that
//! answers `hello from POOL (ADDR)` — enough to watch weights, sticky keys
//! and header rules at work with `curl`. `POST /break` makes it answer 500 to
//! everything, `POST /fix` heals it: enough to watch a rollout roll back.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use switchyard::config::Config;
use tokio::net::TcpListener;

/// Starts one demo upstream per loopback endpoint of `config`; returns the
/// addresses served. Fails if an endpoint's port is taken.
pub async fn start_upstreams(config: &Config) -> std::io::Result<Vec<(String, SocketAddr)>> {
    let mut started = Vec::new();
    for service in &config.services {
        for pool in &service.pools {
            for addr in pool.endpoints.iter().filter(|a| a.ip().is_loopback()) {
                let listener = TcpListener::bind(addr).await.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("demo upstream {addr} (service {}, pool {}): {e}", service.name, pool.name),
                    )
                })?;
                let text = Bytes::from(format!("hello from {} ({addr})\n", pool.name));
                tokio::spawn(serve(listener, text));
                started.push((pool.name.clone(), *addr));
            }
        }
    }
    Ok(started)
}

async fn serve(listener: TcpListener, text: Bytes) {
    let broken = Arc::new(AtomicBool::new(false));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (text, broken) = (text.clone(), broken.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (status, body) = match (req.method(), req.uri().path()) {
                    (&http::Method::POST, "/break") => {
                        broken.store(true, Ordering::Relaxed);
                        (StatusCode::OK, Bytes::from_static(b"broken: every answer is now a 500\n"))
                    }
                    (&http::Method::POST, "/fix") => {
                        broken.store(false, Ordering::Relaxed);
                        (StatusCode::OK, Bytes::from_static(b"fixed\n"))
                    }
                    _ if broken.load(Ordering::Relaxed) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"broken\n"))
                    }
                    _ => (StatusCode::OK, text.clone()),
                };
                let mut resp = Response::new(Full::new(body));
                *resp.status_mut() = status;
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}
