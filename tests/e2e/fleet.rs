//! Fleet mode: replicas of the real binary sharing one real etcd.

use std::time::Duration;
use switchyard_test_support::*;

/// Three replicas of service `web` (pools `stable` and `canary`, all weight
/// on stable) in the fleet at `etcd` under `prefix`.
async fn fleet(etcd: &str, prefix: &str, stable: &Upstream, canary: &Upstream) -> Vec<Proxy> {
    let mut out = Vec::new();
    for i in 0..3 {
        out.push(replica(etcd, prefix, i, stable, canary).await);
    }
    out
}

async fn replica(etcd: &str, prefix: &str, i: usize, stable: &Upstream, canary: &Upstream) -> Proxy {
    fleet_replica(&[etcd.to_owned()], prefix, i, stable.addr, canary.addr).await
}

/// The leader `p` names.
async fn leader_of(p: &Proxy) -> Option<String> {
    p.admin("GET", "/v1/fleet", Some(TOKEN), None).await.1["leader"].as_str().map(str::to_owned)
}

/// Whether every one of `proxies` answers from `pool` within 10 s.
async fn all_serve(proxies: &[Proxy], pool: &str) -> bool {
    for p in proxies {
        let addr = p.addr;
        let served = until(Duration::from_secs(10), || async move { get(addr, "/", &[]).await.2 == pool }).await;
        if !served {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_weight_change_on_any_replica_is_applied_by_all() {
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let proxies = fleet(&etcd.url, "/sy/apply", &stable, &canary).await;
    assert!(all_serve(&proxies, "stable").await);

    let body = r#"{"stable": 0, "canary": 100}"#;
    let (status, ev) = proxies[0].admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 200, "{ev}");
    assert!(all_serve(&proxies, "canary").await, "every replica applies a change made on the first");

    let (status, back) = proxies[2].admin("DELETE", "/v1/services/web/weights", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{back}");
    assert!(all_serve(&proxies, "stable").await, "and one made on the third");

    // One history: the second replica lists both events, with the sequence numbers their writers answered.
    let (_, events) = proxies[1].admin("GET", "/v1/events?limit=100", Some(TOKEN), None).await;
    let seqs: Vec<(u64, String)> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "applied")
        .map(|e| (e["seq"].as_u64().unwrap(), e["kind"].as_str().unwrap().to_owned()))
        .collect();
    assert!(seqs.contains(&(ev["seq"].as_u64().unwrap(), "weights".into())), "{seqs:?}");
    assert!(seqs.contains(&(back["seq"].as_u64().unwrap(), "weights-reset".into())), "{seqs:?}");

    // Every replica shows the whole fleet, through the API, `ctl status` and readiness.
    let p1 = &proxies[1];
    let all_three = until(Duration::from_secs(10), || async {
        let (_, f) = p1.admin("GET", "/v1/fleet", Some(TOKEN), None).await;
        f["state"] == "in-step" && f["replicas"].as_array().map_or(0, Vec::len) == 3
    })
    .await;
    assert!(all_three, "{}", p1.admin("GET", "/v1/fleet", Some(TOKEN), None).await.1);
    let (_, ready) = p1.admin("GET", "/health/ready", None, None).await;
    assert_eq!((ready["status"].as_str(), ready["fleet"].as_str()), (Some("ready"), Some("in-step")));
    let (ok, out, err) = ctl(p1.admin.unwrap(), &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("fleet: in-step (this replica: r1") && out.contains("r0") && out.contains("r2"), "{out}");

    // One leader, which every replica names; when it goes, another takes over within the lease TTL.
    let agreed = until(Duration::from_secs(10), || async {
        let names = [leader_of(&proxies[0]).await, leader_of(&proxies[1]).await, leader_of(&proxies[2]).await];
        names[0].is_some() && names.iter().all(|n| *n == names[0])
    })
    .await;
    assert!(agreed, "the replicas agree on one leader");
    let first = leader_of(&proxies[0]).await.unwrap();
    let mut proxies = proxies;
    let dead = proxies.remove(first[1..].parse::<usize>().unwrap()); // replica rN is proxies[N]
    dead.signal("KILL");
    let took_over = until(Duration::from_secs(10), || async {
        let n = leader_of(&proxies[0]).await;
        n.is_some() && n.as_deref() != Some(first.as_str()) && leader_of(&proxies[1]).await == n
    })
    .await;
    assert!(took_over, "another replica leads once {first}'s lease expires");
}

#[tokio::test]
async fn rollouts_are_refused_in_fleet_mode_until_a_leader_runs_them() {
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let p = replica(&etcd.url, "/sy/rollout", 0, &stable, &canary).await;
    let plan = r#"{"steps": [{"weight": 10, "hold": "1m"}]}"#;
    let (status, v) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some(plan)).await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("fleet mode"), "{v}");
    assert_eq!(get(p.addr, "/", &[]).await.2, "stable", "nothing changed");
}

#[tokio::test]
async fn an_etcd_cluster_losing_its_raft_leader_loses_no_acknowledged_change() {
    let mut members = Etcd::cluster(3);
    let endpoints: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let mut proxies = Vec::new();
    for i in 0..2 {
        proxies.push(fleet_replica(&endpoints, "/sy/raft", i, stable.addr, canary.addr).await);
    }
    // Acknowledged changes before, across and after the loss of the raft leader.
    let mut acknowledged = Vec::new();
    for round in 0..30u32 {
        if round == 10 {
            let leader = members.iter().position(Etcd::is_leader).expect("a raft leader");
            members[leader].kill();
        }
        let body = format!(r#"{{"stable": {}, "canary": 1}}"#, round + 1);
        let writer = &proxies[(round % 2) as usize];
        // Refused (503) while the cluster elects a new leader; retried until acknowledged.
        let seq = std::sync::Mutex::new(None);
        let written = until(Duration::from_secs(15), || async {
            let (status, ev) = writer.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(&body)).await;
            assert!(status == 200 || status == 503, "a write is acknowledged or refused as unavailable: {ev}");
            *seq.lock().unwrap() = ev["seq"].as_u64();
            status == 200
        })
        .await;
        assert!(written, "round {round}: writes resume on the remaining members");
        acknowledged.push(seq.into_inner().unwrap().unwrap());
    }
    for p in &proxies {
        let has_all = until(Duration::from_secs(10), || async {
            let (_, events) = p.admin("GET", "/v1/events?limit=200", Some(TOKEN), None).await;
            let seen: Vec<u64> = events.as_array().unwrap().iter().filter_map(|e| e["seq"].as_u64()).collect();
            acknowledged.iter().all(|s| seen.contains(s))
        })
        .await;
        assert!(has_all, "every acknowledged change is in every replica's history");
    }
}

#[tokio::test]
async fn without_etcd_traffic_flows_on_the_last_state_writes_are_refused_and_recovery_catches_up() {
    let mut etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let proxies = fleet(&etcd.url, "/sy/outage", &stable, &canary).await;
    let body = r#"{"stable": 0, "canary": 100}"#;
    assert_eq!(proxies[0].admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(body)).await.0, 200);
    assert!(all_serve(&proxies, "canary").await);

    etcd.kill();
    // Traffic keeps flowing on the last applied state.
    for p in &proxies {
        assert_eq!(get(p.addr, "/", &[]).await.2, "canary");
    }
    // Writes are refused with 503 and say why, once the replica has noticed.
    let back = r#"{"stable": 100, "canary": 0}"#;
    let admin = &proxies[1];
    let refused = until(Duration::from_secs(15), || async {
        let (status, v) = admin.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(back)).await;
        status == 503 && v["error"].as_str().unwrap_or("").contains("etcd")
    })
    .await;
    assert!(refused, "writes are refused while etcd is down");
    assert!(all_serve(&proxies, "canary").await, "a refused write changed nothing");

    // A replica restarted without etcd serves the last state it applied.
    let mut proxies = proxies;
    let restarted = proxies.remove(2).kill9_and_restart().await;
    assert_eq!(get(restarted.addr, "/", &[]).await.2, "canary");
    proxies.push(restarted);

    etcd.restart();
    let writer = &proxies[1];
    let accepted = until(Duration::from_secs(20), || async {
        writer.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(back)).await.0 == 200
    })
    .await;
    assert!(accepted, "writes are accepted again once etcd is back");
    assert!(all_serve(&proxies, "stable").await, "every replica, the restarted one too, catches up");
}

#[tokio::test]
async fn a_replica_reaches_etcd_over_tls_with_the_ca_it_is_given() {
    let certs = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let (cert, key) = (certs.path().join("etcd.pem"), certs.path().join("etcd.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let etcd = Etcd::start_tls(&cert, &key);
    assert!(etcd.url.starts_with("https://"));
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let svc = service(
        "web",
        "",
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let state = format!(
        "state: {{ dir: state, etcd: {{ endpoints: [\"{}\"], prefix: /sy/tls, replica: t0, ca_file: \"{}\" }} }}\n",
        etcd.url,
        cert.display()
    );
    let p = start_with_admin(&format!("{svc}{state}")).await;
    let body = r#"{"stable": 0, "canary": 100}"#;
    let accepted = until(Duration::from_secs(10), || async {
        p.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(body)).await.0 == 200
    })
    .await;
    assert!(accepted, "in step over TLS: {}", p.admin("GET", "/v1/fleet", Some(TOKEN), None).await.1);
    assert!(all_serve(std::slice::from_ref(&p), "canary").await);
}
