//! The floor under any HTTP/1.1 proxy built on hyper: the least a proxy
//! can do with hyper's server and client and still forward a request. One
//! current-thread runtime; every client connection gets one upstream
//! connection of its own (no pool, no routing, no header rewriting, no
//! statistics, no timeouts) and its requests and responses go through
//! untouched, bodies streamed. Same allocator as the `switchyard` binary.
//!
//! `benches/hyper_floor.sh` runs it beside Switchyard and HAProxy: what is
//! left between Switchyard and this floor is Switchyard's own work; what is
//! between the floor and HAProxy is hyper's.
//!
//! Run: `hyper_floor LISTEN_ADDR UPSTREAM_ADDR` (built by
//! `cargo build --release -p hyper-floor`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use tokio::net::{TcpListener, TcpStream};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = &args[..] else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR (see benches/hyper_floor.sh)");
        return;
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR");
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM_ADDR");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::task::spawn_local(serve(stream, upstream));
        }
    });
}

async fn serve(stream: TcpStream, upstream: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let Ok(up) = TcpStream::connect(upstream).await else { return };
    let _ = up.set_nodelay(true);
    let Ok((sender, conn)) = client::handshake(TokioIo::new(up)).await else { return };
    tokio::task::spawn_local(conn);
    // HTTP/1.1 serves one request at a time: the borrow ends before the await.
    let sender = Rc::new(RefCell::new(sender));
    let service = service_fn(move |req| sender.borrow_mut().send_request(req));
    let _ = server::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}
