//! The proxy under test: the real `switchyard` binary, started on a
//! generated config in a temp dir, its JSON log lines collected, its admin
//! API and `ctl` at hand.

use crate::client::Client;
use crate::config::{admin_config, service, READ_TOKEN, TOKEN};
use crate::upstream::{full, Upstream};
use http::Request;
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `switchyard` binary cargo built beside the running test or bench
/// (`target/<profile>/switchyard`), or `$SWITCHYARD_BIN`.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/switchyard
    let dir = exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps");
    let bin = dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} is not built; run the tests through cargo (or set SWITCHYARD_BIN)", bin.display());
    bin
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
        Self::start_binary(dir, yaml, &binary()).await
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
        // Generous: a JavaScript plugin compiles for seconds, longer on a loaded 2-core machine.
        let addr = tokio::time::timeout(Duration::from_secs(90), rx)
            .await
            .expect("switchyard did not report a listener within 90 s")
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

/// Starts a proxy on [`admin_config`] with the token file in place.
pub async fn start_with_admin(services: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\nviewer:{READ_TOKEN}:read\n")).unwrap();
    Proxy::start_in(dir, &admin_config(services)).await
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

/// Runs `switchyard check --config DIR/c.yaml ARGS...` on `yaml` (written
/// there, so relative paths resolve in `dir`); returns success and what it
/// printed (stdout and stderr).
pub fn check_yaml(dir: &Path, yaml: &str, args: &[&str]) -> (bool, String) {
    let path = dir.join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(binary()).args(["check", "--config"]).arg(&path).args(args).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), said)
}

/// Runs `switchyard ctl --addr ADMIN --token TOKEN ARGS...`; returns success, stdout, stderr.
pub fn ctl(admin: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
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

/// Replica `rI` of a fleet at etcd `endpoints` under `prefix`: service `web`
/// with pools `stable` and `canary` (all weight on stable), with the admin API.
pub async fn fleet_replica(
    endpoints: &[String],
    prefix: &str,
    i: usize,
    stable: SocketAddr,
    canary: SocketAddr,
) -> Proxy {
    fleet_replica_with(endpoints, prefix, i, &web(stable, canary, "", "")).await
}

/// Service `web` with pools `stable` and `canary` (all weight on stable),
/// `extra` in its section (a `rollout:`, say) and `rules` in its split.
pub fn web(stable: SocketAddr, canary: SocketAddr, extra: &str, rules: &str) -> String {
    let split = format!("{rules}      weights: {{ stable: 100, canary: 0 }}\n");
    service("web", extra, &[("stable", &[stable]), ("canary", &[canary])], &split)
}

/// Replica `rI` of a fleet at etcd `endpoints` under `prefix`, serving `services`, with the admin API.
pub async fn fleet_replica_with(endpoints: &[String], prefix: &str, i: usize, services: &str) -> Proxy {
    start_with_admin(&format!("{services}{}", fleet_state(endpoints, prefix, i))).await
}

/// The `state:` section of replica `rI` of a fleet at etcd `endpoints` under `prefix`.
pub fn fleet_state(endpoints: &[String], prefix: &str, i: usize) -> String {
    let list = endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    format!("state: {{ dir: state, etcd: {{ endpoints: [{list}], prefix: {prefix}, replica: r{i} }} }}\n")
}
