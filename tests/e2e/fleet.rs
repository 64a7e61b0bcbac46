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

    // A pool set on one replica (release tooling) is what every replica runs.
    let body = format!(r#"{{"endpoints": ["{}"], "version": "v9"}}"#, stable.addr);
    let (status, v) = proxies[2].admin("PUT", "/v1/services/web/pools/canary", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    let p0 = &proxies[0];
    let moved = until(Duration::from_secs(10), || async {
        let (_, svc) = p0.admin("GET", "/v1/services/web", Some(TOKEN), None).await;
        svc["pools"].as_array().unwrap().iter().any(|p| p["name"] == "canary" && p["version"] == "v9")
    })
    .await;
    assert!(moved, "the first replica runs the pool the third set");

    // A plugin uploaded on one replica is loaded by all; removed on another, by none.
    let judge = std::fs::read(switchyard_test_support::plugins::wasm("canary-judge")).unwrap();
    let (status, v) = crate::plugins::upload(&proxies[2], "extra", judge, "application/wasm").await;
    assert_eq!(status, 200, "{v}");
    let has = |p: &Proxy, want: u16| {
        let p = p.admin.unwrap();
        async move {
            let mut c = Client::connect(p).await;
            c.get("/v1/plugins/extra", &[("authorization", &format!("Bearer {TOKEN}"))]).await.0 == want
        }
    };
    assert!(until(Duration::from_secs(10), || has(p0, 200)).await, "the first replica loads the upload");
    let (status, v) = proxies[1].admin("DELETE", "/v1/plugins/extra", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    assert!(until(Duration::from_secs(10), || has(p0, 404)).await, "and drops it when another removes it");

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

/// A canary of service `web` with a manual gate, judged every 200 ms on
/// 2 s windows; steps are numbered from 1 in its events: 20 % (1), the gate
/// (2), 40 % (3), 60 % (4).
const GATED: &str = "    rollout:\n      steps:\n        - { weight: 20, hold: 2s }\n        - pause: {}\n        \
    - { weight: 40, hold: 4s }\n        - { weight: 60, hold: 2s }\n      \
    analysis: { interval: 200ms, window: 2s, min_requests: 5 }\n";

/// Three replicas running [`GATED`] rollouts.
async fn rollout_fleet(etcd: &str, prefix: &str, stable: &Upstream, canary: &Upstream) -> Vec<Proxy> {
    let mut out = Vec::new();
    for i in 0..3 {
        let services = web(stable.addr, canary.addr, GATED, "");
        out.push(fleet_replica_with(&[etcd.to_owned()], prefix, i, &services).await);
    }
    out
}

/// The index of the replica every one of `proxies`, in step with etcd,
/// names as leader (replica `rN` is `proxies[N]`).
async fn agreed_leader(proxies: &[&Proxy]) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut names = Vec::new();
        for p in proxies {
            let (_, f) = p.admin("GET", "/v1/fleet", Some(TOKEN), None).await;
            names.push(f["leader"].as_str().filter(|_| f["state"] == "in-step").map(str::to_owned));
        }
        if names[0].is_some() && names.iter().all(|n| *n == names[0]) {
            return names[0].as_ref().unwrap()[1..].parse().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the replicas agree on one leader: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await; // poll
    }
}

async fn rollout_of(p: &Proxy) -> serde_json::Value {
    p.admin("GET", "/v1/services/web/rollout", Some(TOKEN), None).await.1
}

/// The rollout's weight events (by the step they name) and promotions, as `p` lists them.
async fn step_events(p: &Proxy) -> Vec<String> {
    let (_, events) = p.admin("GET", "/v1/events?limit=1000", Some(TOKEN), None).await;
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "weights" && e["outcome"] == "applied")
        .filter_map(|e| e["reason"].as_str())
        .filter(|r| r.starts_with("rollout of web"))
        .map(str::to_owned)
        .collect()
}

/// What a rollout that went through every step of [`GATED`] once, in order, leaves in the history.
const EVERY_STEP_ONCE: [&str; 4] = [
    "rollout of web: canary at 20% (step 1)",
    "rollout of web: canary at 40% (step 3)",
    "rollout of web: canary at 60% (step 4)",
    "rollout of web promoted: canary has all traffic",
];

/// A rollout started on one replica is run by the leader, a gate is passed
/// from a third replica, and when the leader is killed mid-step another
/// takes over at the same step with the hold time already spent, never
/// repeating or skipping a step.
#[tokio::test]
async fn the_leader_runs_a_rollout_started_anywhere_and_another_takes_it_over_at_the_same_step() {
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let proxies = rollout_fleet(&etcd.url, "/sy/takeover", &stable, &canary).await;
    let leader = agreed_leader(&proxies.iter().collect::<Vec<_>>()).await;
    let (starter, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut load: Vec<_> = proxies.iter().map(|p| Some(steady_traffic(p.addr, Duration::from_secs(60)))).collect();

    let (status, r) = proxies[starter].admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!((status, r["weight"].as_u64()), (200, Some(20)), "{r}");
    let (status, again) = proxies[other].admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 409, "one rollout per service, whichever replica is asked: {again}");
    let gated = until(Duration::from_secs(20), || async { rollout_of(&proxies[other]).await["step"] == 1 }).await;
    assert!(gated, "the leader judged the first step and stopped at the gate: {}", rollout_of(&proxies[other]).await);
    let (ok, out, err) = ctl(proxies[other].admin.unwrap(), &["rollout", "promote", "web"]);
    assert!(ok, "a gate is passed from any replica: {out}{err}");

    // Mid-way through the 40 % step, the leader dies.
    let spent = until(Duration::from_secs(20), || async {
        let r = rollout_of(&proxies[other]).await;
        r["step"] == 2 && r["in_step_ms"].as_u64().unwrap_or(0) >= 1_500
    })
    .await;
    assert!(spent, "{}", rollout_of(&proxies[other]).await);
    let before = rollout_of(&proxies[other]).await["in_step_ms"].as_u64().unwrap();
    load[leader].take().unwrap().abort();
    proxies[leader].signal("KILL");

    // The survivors carry on from where the dead leader's last checkpoint was.
    let (mut seen, deadline) = (Vec::new(), std::time::Instant::now() + Duration::from_secs(40));
    loop {
        let r = rollout_of(&proxies[starter]).await;
        if r["status"] == "promoted" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{r}");
        seen.push((r["step"].as_u64().unwrap_or(0), r["in_step_ms"].as_u64().unwrap_or(0)));
        tokio::time::sleep(Duration::from_millis(50)).await; // poll
    }
    let in_step: Vec<u64> = seen.iter().filter(|(step, _)| *step == 2).map(|&(_, ms)| ms).collect();
    assert!(in_step.windows(2).all(|w| w[0] <= w[1]), "the hold time spent is kept: {in_step:?}");
    assert!(in_step.iter().all(|&ms| ms >= before), "from {before} ms: {in_step:?}");
    assert_eq!(step_events(&proxies[other]).await, EVERY_STEP_ONCE, "every step once, in order");
    let new_leader = agreed_leader(&[&proxies[starter], &proxies[other]]).await;
    assert_ne!(new_leader, leader);
}

/// A leader that is paused (SIGSTOP) past its lease is replaced; when it
/// wakes, every write its controller attempts is fenced off, so the rollout
/// goes through each step once.
#[tokio::test]
async fn a_paused_leader_that_wakes_cannot_apply_a_decision() {
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let proxies = rollout_fleet(&etcd.url, "/sy/fence", &stable, &canary).await;
    let leader = agreed_leader(&proxies.iter().collect::<Vec<_>>()).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let mut load: Vec<_> = proxies.iter().map(|p| Some(steady_traffic(p.addr, Duration::from_secs(60)))).collect();
    let (status, r) = proxies[leader].admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let gated = until(Duration::from_secs(20), || async { rollout_of(&proxies[others[0]]).await["step"] == 1 }).await;
    assert!(gated);
    let (status, r) = proxies[others[1]].admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let started = until(Duration::from_secs(10), || async { rollout_of(&proxies[others[0]]).await["step"] == 2 }).await;
    assert!(started);

    load[leader].take().unwrap().abort();
    proxies[leader].signal("STOP");
    let replaced = until(Duration::from_secs(15), || async {
        let n = leader_of(&proxies[others[0]]).await;
        n.is_some_and(|n| n != format!("r{leader}"))
    })
    .await;
    proxies[leader].signal("CONT");
    assert!(replaced, "a new leader once the paused one's lease expired");
    let done =
        until(Duration::from_secs(40), || async { rollout_of(&proxies[others[0]]).await["status"] == "promoted" })
            .await;
    assert!(done, "{}", rollout_of(&proxies[others[0]]).await);
    assert_eq!(step_events(&proxies[others[1]]).await, EVERY_STEP_ONCE, "the woken leader applied nothing");
    let caught_up =
        until(Duration::from_secs(10), || async { rollout_of(&proxies[leader]).await["status"] == "promoted" }).await;
    assert!(caught_up, "the old leader follows the new one's decisions");
    let stopped = proxies[leader].logged("fleet: this replica no longer leads; its controller stops").len()
        + proxies[leader].logged("fleet: a decision was fenced off; this replica no longer leads").len();
    assert!(stopped >= 1, "its controller stopped when it found it no longer leads");
}

/// A binary replacement (SIGUSR2) of the leader: the old process leaves the
/// fleet as it hands over (its lease revoked, so it neither leads nor
/// shows), the successor joins under the same name, and the rollout the old
/// one ran goes on through every step once.
#[tokio::test]
async fn a_binary_replacement_of_the_leader_hands_its_place_and_its_rollout_over() {
    let etcd = Etcd::start();
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let services = web(stable.addr, canary.addr, GATED, "");
    let endpoints = std::slice::from_ref(&etcd.url);
    // r0 runs from a copy of the binary, so a new file can be put at its path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    let exe = dir.path().join("switchyard");
    std::fs::copy(binary(), &exe).unwrap();
    let yaml = format!("{}{}", admin_config(&services), fleet_state(endpoints, "/sy/upgrade", 0));
    let mut r0 = Proxy::start_binary(dir, &yaml, &exe).await;
    assert_eq!(agreed_leader(&[&r0]).await, 0);
    let r1 = fleet_replica_with(endpoints, "/sy/upgrade", 1, &services).await;
    assert_eq!(agreed_leader(&[&r0, &r1]).await, 0, "r1 is in step, r0 leads");
    let load = steady_traffic(r1.addr, Duration::from_secs(60));
    let (status, r) = r1.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let gated = until(Duration::from_secs(20), || async { rollout_of(&r1).await["step"] == 1 }).await;
    assert!(gated, "{}", rollout_of(&r1).await);
    let (status, r) = r1.admin("POST", "/v1/services/web/rollout/promote", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");

    let next = exe.with_extension("new");
    std::fs::copy(binary(), &next).unwrap();
    std::fs::rename(&next, &exe).unwrap();
    r0.signal("USR2");
    let exit = tokio::time::timeout(Duration::from_secs(40), r0.child.wait()).await.expect("the old process exits");
    assert!(exit.unwrap().success());
    let pid = r0.logged("upgrade: successor started")[0]["pid"].as_u64().unwrap();
    let _successor = scopeguard(pid);
    assert_eq!(r0.logged("fleet: left the fleet for the successor process").len(), 1);

    let done = until(Duration::from_secs(40), || async { rollout_of(&r1).await["status"] == "promoted" }).await;
    assert!(done, "{}", rollout_of(&r1).await);
    load.abort();
    assert_eq!(step_events(&r1).await, EVERY_STEP_ONCE, "every step once across the hand-over");
    let (_, fleet) = r1.admin("GET", "/v1/fleet", Some(TOKEN), None).await;
    let names: Vec<&str> = fleet["replicas"].as_array().unwrap().iter().filter_map(|r| r["replica"].as_str()).collect();
    assert_eq!(names, ["r0", "r1"], "the successor is r0, once: {fleet}");
    let (status, v) = r0.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(r#"{"stable": 100}"#)).await;
    assert_eq!(status, 200, "the successor writes to the fleet: {v}");
    assert!(all_serve(std::slice::from_ref(&r1), "stable").await);
}

/// Kills process `pid` when dropped (a successor the test did not start).
fn scopeguard(pid: u64) -> impl Drop {
    struct Kill(u64);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-9", &self.0.to_string()]).status();
        }
    }
    Kill(pid)
}

/// The leader judges the fleet's traffic: a canary whose failures are
/// spread over three replicas, each below `rollback_when.min_requests`
/// alone, is rolled back as one proxy serving all of it would roll it back.
#[tokio::test]
async fn failures_spread_over_the_replicas_are_judged_together() {
    let etcd = Etcd::start();
    let stable = Upstream::text("stable").await;
    let canary = switchable("canary", std::sync::Arc::new(true.into())).await;
    let plan = "    rollout:\n      steps: [{ weight: 10, hold: 1h }]\n      \
        analysis: { interval: 200ms, window: 5s, min_requests: 1000, rollback_when: { error_rate_above: 0.05, min_requests: 30 } }\n";
    let rules = "      rules: [{ match: { header: { x-canary: \"1\" } }, pool: canary }]\n";
    let services = web(stable.addr, canary.addr, plan, rules);
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(fleet_replica_with(std::slice::from_ref(&etcd.url), "/sy/merged", i, &services).await);
    }
    let leader = agreed_leader(&proxies.iter().collect::<Vec<_>>()).await;
    let (status, r) = proxies[leader].admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let everywhere = until(Duration::from_secs(10), || async {
        let mut all = true;
        for p in &proxies {
            all &= rollout_of(p).await["status"] == "running";
        }
        all
    })
    .await;
    assert!(everywhere, "every replica knows the rollout runs (and publishes its figures)");
    // Past the statistics tick the rollout started in, which its analysis leaves out.
    tokio::time::sleep(Duration::from_millis(300)).await; // pace

    // 15 failing canary requests on each replica: 45 in all, over the 30 needed; 15 alone are not.
    for p in &proxies {
        let mut c = Client::connect(p.addr).await;
        for _ in 0..15 {
            assert_eq!(c.get("/", &[("x-canary", "1")]).await.0, 503);
        }
    }
    let r = rollout_end(&proxies[leader]).await;
    assert_eq!(r["status"], "rolled-back", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("error rate"), "{r}");
    let suspended = until(Duration::from_secs(10), || async {
        let mut all = true;
        for p in &proxies {
            all &= get(p.addr, "/", &[("x-canary", "1")]).await.2 == "stable";
        }
        all
    })
    .await;
    assert!(suspended, "every replica takes the canary's rule out of service");
}

#[tokio::test]
async fn an_etcd_cluster_losing_its_raft_leader_loses_no_acknowledged_change() {
    raft_leader_lost(Etcd::kill).await;
}

/// A hung member (stopped, its sockets open and silent) is worse than a
/// dead one: calls sent to it wait, and it still accepts connections.
#[tokio::test]
async fn an_etcd_cluster_whose_raft_leader_hangs_loses_no_acknowledged_change() {
    raft_leader_lost(|m| m.freeze()).await;
}

/// Writes through two replicas, before, across and after the raft leader
/// of a three-member cluster is `lost`.
async fn raft_leader_lost(lost: impl FnOnce(&mut Etcd)) {
    let mut lost = Some(lost);
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
            lost.take().unwrap()(&mut members[leader]);
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

    // Given another CA, a replica says why it cannot reach etcd (once, not
    // at every retry) and refuses writes.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let wrong = certs.path().join("other.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let state = format!(
        "state: {{ dir: state, etcd: {{ endpoints: [\"{}\"], prefix: /sy/tls, replica: t1, ca_file: \"{}\" }} }}\n",
        etcd.url,
        wrong.display()
    );
    let q = start_with_admin(&format!("{svc}{state}")).await;
    let cannot = "fleet: cannot reach etcd; serving the local state, refusing writes, retrying";
    assert!(until(Duration::from_secs(10), || async { !q.logged(cannot).is_empty() }).await, "it says so");
    tokio::time::sleep(Duration::from_secs(2)).await; // pace: let it retry a few times
    let said = q.logged(cannot);
    assert_eq!(said.len(), 1, "{said:?}");
    let why = said[0]["error"].as_str().unwrap();
    assert!(why.contains(&etcd.url) && why.contains("no etcd member answers"), "{why}");
    assert_eq!(q.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(body)).await.0, 503);
}
