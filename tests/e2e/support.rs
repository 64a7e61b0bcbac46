//! Test harness: real upstream servers on 127.0.0.1:0, the real `switchyard`
//! binary started on a generated config, and small HTTP/raw-TCP clients.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Handler = Arc<dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>> + Send + Sync>;

/// A request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: http::HeaderMap,
}

/// A real HTTP/1.1 upstream on 127.0.0.1:0.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

impl Upstream {
    /// An upstream answering every request with `text`.
    pub async fn text(text: &'static str) -> Self {
        Self::start(move |_req| async move { Response::new(full(text)) }).await
    }

    /// An upstream answering with `f(request)`.
    pub async fn start<F, Fut>(f: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, f)
    }

    /// Serves on an already bound listener (to restart on the same port).
    pub fn on<F, Fut>(listener: TcpListener, f: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(move |r| Box::pin(f(r)));
        let (h, s) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, hits, seen) = (handler.clone(), h.clone(), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        seen.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            uri: req.uri().to_string(),
                            headers: req.headers().clone(),
                        });
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, hits, seen, task }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("the upstream saw no request")
    }
}

/// A body of `len` bytes sent in 64 KiB chunks, generated on the fly.
pub struct Zeros {
    pub remaining: u64,
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        self.remaining -= n;
        static CHUNK: [u8; 64 * 1024] = [b'z'; 64 * 1024];
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n as usize])))))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Counts a body's bytes without keeping them.
pub async fn drain_len(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok(n)
}

/// The real binary, serving a config written to a temp dir.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin API, when the config has an `admin` section.
    pub admin: Option<SocketAddr>,
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub yaml: String,
    pub lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Proxy {
    /// Starts `switchyard serve` on `yaml` and waits for its first listener.
    pub async fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, yaml).await
    }

    /// Like [`Proxy::start`], with files already placed in `dir`.
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Self {
        Self::start_binary(dir, yaml, Path::new(env!("CARGO_BIN_EXE_switchyard"))).await
    }

    /// Like [`Proxy::start_in`], running `binary`.
    pub async fn start_binary(dir: tempfile::TempDir, yaml: &str, binary: &Path) -> Self {
        let path = dir.path().join("switchyard.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let l = lines.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["message"] == "listening" {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                    }
                }
                l.lock().unwrap().push(v);
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("switchyard did not report a listener within 20 s")
            .expect("switchyard exited before listening");
        // The admin line is logged before the listeners' lines.
        let admin = lines
            .lock()
            .unwrap()
            .iter()
            .find(|v| v["message"] == "admin listening")
            .map(|v| v["addr"].as_str().unwrap().parse().unwrap());
        Proxy { addr, admin, child, dir, yaml: yaml.to_owned(), lines }
    }

    /// `kill -9`, then start again on the same config and state directory.
    pub async fn kill9_and_restart(mut self) -> Proxy {
        self.signal("KILL");
        let _ = self.child.wait().await;
        let Proxy { dir, yaml, .. } = self;
        Proxy::start_in(dir, &yaml).await
    }

    /// Calls the admin API; returns the status and the body as JSON (or a string).
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut c = Client::connect(self.admin.expect("no admin listener")).await;
        let mut b = Request::builder().method(method).uri(path).header("host", "admin");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if method != "GET" {
            b = b.header("content-type", "application/json");
        }
        let resp = c.send(b.body(full(body.unwrap_or("").to_owned())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, v)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Peak resident memory of the proxy process, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Log lines seen so far with this message.
    pub fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().iter().filter(|v| v["message"] == message).cloned().collect()
    }
}

/// An upstream answering `text`, or 503 while `failing` is set.
pub async fn switchable(text: &'static str, failing: Arc<std::sync::atomic::AtomicBool>) -> Upstream {
    Upstream::start(move |_| {
        let fail = failing.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut r = Response::new(full(text));
            if fail {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await
}

/// Two pools, `stable` (all the weight) and `canary`, in service `web`,
/// behind a proxy with the admin API; `more` is appended to the config.
pub async fn two_pool_proxy(more: &str) -> (Upstream, Upstream, Proxy) {
    let stable = Upstream::text("stable").await;
    let canary = Upstream::text("canary").await;
    let svc = service(
        "web",
        "",
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let proxy = start_with_admin(&format!("{svc}{more}")).await;
    (stable, canary, proxy)
}

/// Polls the rollout of `web` until it is no longer running (at most 30 s).
pub async fn rollout_end(proxy: &Proxy) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let r = proxy.admin("GET", "/v1/services/web/rollout", None, None).await.1;
        if r["status"] != "running" || start.elapsed() > Duration::from_secs(30) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // poll
    }
}

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

/// A service YAML block with the given pools (`name → endpoints`) and split.
pub fn service(name: &str, extra: &str, pools: &[(&str, &[SocketAddr])], split: &str) -> String {
    let mut s = format!("  - name: {name}\n{extra}    pools:\n");
    for (pool, eps) in pools {
        let eps: Vec<String> = eps.iter().map(|a| format!("\"{a}\"")).collect();
        s.push_str(&format!("      {pool}: {{ endpoints: [{}] }}\n", eps.join(", ")));
    }
    if !split.is_empty() {
        s.push_str(&format!("    split:\n{split}"));
    }
    s
}

/// A config with an admin API on 127.0.0.1:0 (token `TOKEN`, named `ci`) and fast stats ticks.
pub fn admin_config(services: &str) -> String {
    format!(
        "{}admin: {{ bind: \"127.0.0.1:0\", token_file: admin.token }}\nstats: {{ window: 5s, resolution: 100ms }}\n",
        config(services)
    )
}

pub const TOKEN: &str = "s3cret-token-for-tests-0123456789";
pub const READ_TOKEN: &str = "read-only-token-for-tests-0123456789";

/// Starts a proxy on [`admin_config`] with the token file in place.
pub async fn start_with_admin(services: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\nviewer:{READ_TOKEN}:read\n")).unwrap();
    Proxy::start_in(dir, &admin_config(services)).await
}

/// A whole config: one plain listener on 127.0.0.1:0 plus `services`.
pub fn config(services: &str) -> String {
    format!("listeners:\n  - {{ name: main, bind: \"127.0.0.1:0\" }}\nservices:\n{services}")
}

/// Runs `switchyard ctl --addr ADMIN --token TOKEN ARGS...`; returns success, stdout, stderr.
pub fn ctl(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("ctl")
        .args(["--addr", &admin.to_string(), "--token", TOKEN])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
/// For things that happen asynchronously (log flushes, webhooks, stats ticks).
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll
    }
}

/// Polls the async `check` every 20 ms until it holds or `limit` passes;
/// returns whether it held. For outcomes read over the network.
pub async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll
    }
}
