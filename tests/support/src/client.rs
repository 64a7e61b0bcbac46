//! Clients: a keep-alive HTTP/1.1 connection, one-shot GETs, and raw
//! bytes over TCP for what a well-behaved client would never send.

use crate::upstream::{full, BoxBody};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<BoxBody>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).await.unwrap()
    }

    /// Like [`Client::connect`], with the failure as an error.
    pub async fn try_connect(addr: SocketAddr) -> Result<Self, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    pub async fn send(&mut self, req: Request<BoxBody>) -> Result<Response<Incoming>, hyper::Error> {
        self.sender.ready().await?;
        self.sender.send_request(req).await
    }

    /// GET `path` with extra headers; returns status, the response and its body text.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
        let mut b = Request::get(path).header("host", "test.local");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let resp = self.send(b.body(full("")).unwrap()).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }
}

/// One-shot GET on a new connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, String) {
    Client::connect(addr).await.get(path, headers).await
}

/// Sends raw bytes and reads until the proxy closes or `wait` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in raw bytes.
pub fn status_of(raw: &str) -> u16 {
    raw.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Keeps `addr` busy: a GET every 5 ms on one keep-alive connection, for at
/// most `limit` (abort the task to stop sooner). What analysis needs to judge.
pub fn steady_traffic(addr: SocketAddr, limit: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            pace.tick().await;
            c.get("/", &[]).await;
        }
    })
}
