//! Fleet mode, end to end: the release binary, three replicas and one real
//! etcd on 127.0.0.1.
//!
//! - Propagation: the time from an admin write on one replica (the writers
//!   take turns) to every replica's data path serving the new weights
//!   (each change moves all traffic between `stable` and `canary`), over
//!   CHANGES changes (default 1,000): p50, p99, max.
//! - Steady-state etcd load: etcd's own counters (`/metrics`) over 10 s with
//!   no change, per replica: writes per second and bytes received per second.
//! - The same during a rollout with traffic (200 requests/s on each replica,
//!   split 50/50): what publishing each replica's figures to the leader and
//!   the leader's progress checkpoints cost, on a second fleet whose
//!   replicas keep the default statistics resolution (1 s ticks).
//! - Failover during that rollout, over ROUNDS rounds (default 5): the
//!   leader is killed (`kill -9`, then restarted as a follower) at a
//!   different point after a checkpoint each round, and the time is taken
//!   until a follower names another leader (the election: lease expiry), and
//!   until it sees the rollout's progress advance again (the new leader's
//!   first checkpoint, one analysis interval after it took the rollout
//!   over); that progress must continue from the last
//!   checkpoint (within one analysis interval), so what a kill loses is the
//!   hold time since that checkpoint, under a second.
//!
//! Run: `cargo bench -p switchyard --bench fleet` (needs etcd: `bash scripts/deps.sh --tests`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};
use switchyard_test_support::*;

#[tokio::main]
async fn main() {
    let changes: usize = std::env::var("CHANGES").ok().and_then(|r| r.parse().ok()).unwrap_or(1000);
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(fleet_replica(std::slice::from_ref(&etcd.url), "/bench", i, stable.addr, canary.addr).await);
    }
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(Client::connect(r.addr).await);
    }

    let mut times = Vec::with_capacity(changes);
    for n in 0..changes {
        let (to, body) = if n % 2 == 0 {
            ("canary", r#"{"stable":0,"canary":100}"#)
        } else {
            ("stable", r#"{"stable":100,"canary":0}"#)
        };
        let writer = &replicas[n % 3];
        let start = Instant::now();
        let (status, v) = writer.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(body)).await;
        assert_eq!(status, 200, "{v}");
        for c in &mut clients {
            while c.get("/", &[]).await.2 != to {
                assert!(start.elapsed() < Duration::from_secs(10), "change {n} did not reach every replica");
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    let q = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "propagation over {changes} changes, 3 replicas: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5).as_secs_f64() * 1e3,
        q(0.99).as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    );

    let counters = |text: &str| {
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        (
            sum("etcd_mvcc_put_total") + sum("etcd_mvcc_delete_total"),
            sum("etcd_network_client_grpc_received_bytes_total"),
        )
    };
    let addr = etcd.url.trim_start_matches("http://").parse().unwrap();
    let metrics = || async move { get(addr, "/metrics", &[]).await.2 };
    let (w0, b0) = counters(&metrics().await);
    let span = Duration::from_secs(10);
    tokio::time::sleep(span).await; // pace: the measured idle period
    let (w1, b1) = counters(&metrics().await);
    let per = |d: f64| d / span.as_secs_f64() / 3.0;
    println!(
        "steady state, per replica: {:.2} etcd writes/s, {:.0} bytes/s received by etcd",
        per(w1 - w0),
        per(b1 - b0)
    );
    drop(replicas);

    // A rollout with traffic, on replicas with the default statistics settings.
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(default_stats_replica(&etcd.url, i, &stable, &canary).await);
    }
    let plan = r#"{"steps": [{"weight": 50, "hold": "1h"}], "analysis": {"interval": "1s", "window": "30s"}}"#;
    let (status, v) = replicas[0].admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(plan)).await;
    assert_eq!(status, 200, "{v}");
    let mut load: Vec<_> = replicas.iter().map(|r| steady_traffic(r.addr, Duration::from_secs(600))).collect();
    tokio::time::sleep(Duration::from_secs(3)).await; // pace: let publishing start
    let (w0, b0) = counters(&metrics().await);
    tokio::time::sleep(span).await; // pace: the measured period
    let (w1, b1) = counters(&metrics().await);
    println!(
        "during a rollout, 200 req/s per replica, per replica: {:.2} etcd writes/s, {:.0} bytes/s received by etcd",
        per(w1 - w0),
        per(b1 - b0)
    );

    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let (mut elections, mut takeovers, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    let interval_ms = 1_000;
    for round in 0..rounds {
        let leader = leader_index(&replicas[0]).await;
        let follower = &replicas[(leader + 1) % 3];
        let progress = |r: &serde_json::Value| r["in_step_ms"].as_u64().unwrap_or(0);
        // Just after a checkpoint: what the leader had made since is what a kill loses.
        let stored = progress(&rollout(follower).await);
        while progress(&rollout(follower).await) == stored {}
        let (checkpoint, saved) = (progress(&rollout(follower).await), Instant::now());
        // Kill at a different point after the checkpoint each round.
        let after = Duration::from_millis(100 + 800 * round as u64 / rounds.max(1) as u64);
        tokio::time::sleep(after).await; // pace
        let start = Instant::now();
        lost.push(start - saved);
        load[leader].abort();
        let dead = replicas.remove(leader);
        dead.signal("KILL");
        let follower = &replicas[leader % 2];
        loop {
            let (_, f) = follower.admin("GET", "/v1/fleet", Some(TOKEN), None).await;
            if f["leader"].as_str().is_some_and(|n| n != format!("r{leader}")) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no replica took the lead");
            tokio::time::sleep(Duration::from_millis(10)).await; // poll
        }
        elections.push(start.elapsed());
        let resumed = loop {
            let now = progress(&rollout(follower).await);
            if now > checkpoint {
                break now;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no replica took the rollout over");
            tokio::time::sleep(Duration::from_millis(10)).await; // poll
        };
        takeovers.push(start.elapsed());
        assert!(
            resumed <= checkpoint + 2 * interval_ms,
            "resumed at {resumed} ms, not from the checkpoint {checkpoint} ms"
        );
        replicas.insert(leader, dead.kill9_and_restart().await);
        load[leader] = steady_traffic(replicas[leader].addr, Duration::from_secs(600));
    }
    for l in load {
        l.abort();
    }
    elections.sort();
    takeovers.sort();
    lost.sort();
    println!(
        "failover over {rounds} leader kills (lease_ttl 3s): new leader elected after median {:.2} s, max {:.2} s; \
         its first checkpoint (one analysis interval later) median {:.2} s, max {:.2} s; \
         each resumed from the last checkpoint, losing the hold time since it: median {} ms, max {} ms",
        elections[rounds / 2].as_secs_f64(),
        elections[rounds - 1].as_secs_f64(),
        takeovers[rounds / 2].as_secs_f64(),
        takeovers[rounds - 1].as_secs_f64(),
        lost[rounds / 2].as_millis(),
        lost[rounds - 1].as_millis()
    );
}

async fn rollout(p: &Proxy) -> serde_json::Value {
    p.admin("GET", "/v1/services/web/rollout", Some(TOKEN), None).await.1
}

/// The index of the leader `p` names (replica `rN` is index N).
async fn leader_index(p: &Proxy) -> usize {
    loop {
        let (_, f) = p.admin("GET", "/v1/fleet", Some(TOKEN), None).await;
        if let Some(n) = f["leader"].as_str() {
            return n[1..].parse().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // poll
    }
}

/// Replica `rI` of fleet `/bench-rollout`, with the admin API and the default statistics settings.
async fn default_stats_replica(etcd: &str, i: usize, stable: &Upstream, canary: &Upstream) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    let yaml = format!(
        "{}admin: {{ bind: \"127.0.0.1:0\", token_file: admin.token }}\n\
         state: {{ dir: state, etcd: {{ endpoints: [\"{etcd}\"], prefix: /bench-rollout, replica: r{i} }} }}\n",
        config(&web(stable.addr, canary.addr, "", ""))
    );
    Proxy::start_in(dir, &yaml).await
}
