//! Real etcd servers for fleet tests: `etcd` (Debian's `etcd-server`) on
//! free loopback ports with a temporary data directory, one member or a
//! cluster of three, stopped (and its data removed) on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd member.
pub struct Etcd {
    /// Its client URL, e.g. `http://127.0.0.1:41234` (`https://` with TLS).
    pub url: String,
    /// Where `/health` answers over plain HTTP.
    health: SocketAddr,
    name: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    /// A one-member cluster, ready to serve.
    pub fn start() -> Self {
        Self::cluster(1).pop().unwrap()
    }

    /// A one-member cluster serving clients over TLS with `cert` and `key`
    /// (PEM files; the certificate must name 127.0.0.1).
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let tls = [format!("--cert-file={}", cert.display()), format!("--key-file={}", key.display())];
        Self::members(1, Some(&tls)).pop().unwrap()
    }

    /// A cluster of `n` members, each ready to serve.
    pub fn cluster(n: usize) -> Vec<Self> {
        Self::members(n, None)
    }

    fn members(n: usize, tls: Option<&[String]>) -> Vec<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let members: Vec<(String, u16, u16)> = (0..n).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
        let initial: Vec<String> =
            members.iter().map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}")).collect();
        // One token per cluster: members of two clusters never join up.
        static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = format!("switchyard-test-{}-{cluster}", std::process::id());
        let mut out: Vec<Self> = members
            .iter()
            .map(|(name, client, peer)| {
                let metrics = free_port();
                let mut args = vec![
                    format!("--name={name}"),
                    format!("--listen-client-urls={scheme}://127.0.0.1:{client}"),
                    format!("--advertise-client-urls={scheme}://127.0.0.1:{client}"),
                    format!("--listen-metrics-urls=http://127.0.0.1:{metrics}"),
                    format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-cluster={}", initial.join(",")),
                    format!("--initial-cluster-token={token}"),
                    "--heartbeat-interval=50".into(),
                    "--election-timeout=500".into(),
                    "--log-level=error".into(),
                ];
                args.extend(tls.unwrap_or_default().iter().cloned());
                let mut e = Etcd {
                    url: format!("{scheme}://127.0.0.1:{client}"),
                    health: SocketAddr::from(([127, 0, 0, 1], metrics)),
                    name: name.clone(),
                    child: None,
                    dir: tempfile::tempdir().unwrap(),
                    args,
                };
                e.spawn();
                e
            })
            .collect();
        for e in &mut out {
            e.wait_ready();
        }
        out
    }

    fn spawn(&mut self) {
        let child = Command::new(etcd_binary())
            .args(&self.args)
            .arg(format!("--data-dir={}", self.dir.path().join(&self.name).display()))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log()).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .expect("cannot start etcd (is Debian's etcd-server installed? scripts/test.sh installs it)");
        self.child = Some(child);
    }

    /// Waits until the member answers `/health` as healthy (at most 20 s).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if health(self.health) {
                return;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                panic!("etcd at {} did not become healthy; it said:\n{log}", self.url);
            }
            std::thread::sleep(Duration::from_millis(50)); // poll
        }
    }

    /// Where the member's errors go (beside its data).
    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    /// `kill -9` the member (its data stays, for [`Etcd::restart`]).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the member (`SIGSTOP`): its sockets stay open and silent, as
    /// a hung machine's or a partitioned one's do. [`Etcd::kill`] ends it.
    pub fn freeze(&self) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill").args(["-STOP", &c.id().to_string()]).status().unwrap();
            assert!(ok.success());
        }
    }

    /// Starts the member again on the same ports and data, and waits for it.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `etcd` from PATH, or Debian's `/usr/bin/etcd`.
fn etcd_binary() -> PathBuf {
    std::env::var_os("SWITCHYARD_ETCD").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

/// Whether etcd at `addr` says it is healthy.
fn health(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Etcd {
    /// Whether this member is the raft leader (etcd's maintenance status;
    /// plain-HTTP members only).
    pub fn is_leader(&self) -> bool {
        use std::io::{Read, Write};
        let addr: SocketAddr = self.url.trim_start_matches("http://").parse().unwrap();
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let body = "{}";
        let req = format!(
            "POST /v3/maintenance/status HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let Some(json) = out.split("\r\n\r\n").nth(1) else { return false };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json.trim()) else { return false };
        v["leader"].is_string() && v["leader"] == v["header"]["member_id"]
    }
}
