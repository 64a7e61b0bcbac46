//! Operations under load: a binary replacement (SIGUSR2) and a SIGTERM drain
//! fail no request, and 60 s of weight, plugin and config churn fail none and
//! keep the split on the weights in force.

use crate::plugins::{new_version, plugins_section, upload};
use http::{Request, Response};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_test_support::plugins::wasm;
use switchyard_test_support::*;

/// One request's outcome: when it started, and the body or the error.
struct Outcome {
    started: Instant,
    result: Result<String, String>,
}

/// `clients` keep-alive clients sending GETs until `stop`. As HTTP clients
/// do (RFC 9112 §9.3.1), a GET that fails on a reused connection before any
/// response arrived — the server closed it while idle — is sent again once
/// on a new connection; any other failure, or a second one, is a failure.
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Outcome>>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut conn: Option<Client> = None;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let mut result = Err(String::new());
                    for attempt in 0..2 {
                        let reused = conn.is_some();
                        let mut c = match conn.take() {
                            Some(c) => c,
                            None => match Client::try_connect(addr).await {
                                Ok(c) => c,
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            },
                        };
                        let req = Request::get("/").header("host", "test.local").body(full("")).unwrap();
                        match c.send(req).await {
                            Ok(resp) => {
                                let status = resp.status();
                                let close = resp.headers().get("connection").is_some_and(|v| v == "close");
                                match resp.into_body().collect().await {
                                    Ok(b) if status == 200 => {
                                        result = Ok(String::from_utf8_lossy(&b.to_bytes()).into())
                                    }
                                    Ok(_) => result = Err(format!("status {status}")),
                                    Err(e) => result = Err(format!("body: {e}")),
                                }
                                if !close && result.is_ok() {
                                    conn = Some(c);
                                }
                                break;
                            }
                            Err(e)
                                if reused
                                    && attempt == 0
                                    && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                            {
                                continue
                            }
                            Err(e) => {
                                result = Err(format!(
                                    "send (attempt {attempt}, reused {reused}, {:?} after start): {e}",
                                    started.elapsed()
                                ));
                                break;
                            }
                        }
                    }
                    out.push(Outcome { started, result });
                }
                out
            })
        })
        .collect()
}

async fn outcomes(tasks: Vec<tokio::task::JoinHandle<Vec<Outcome>>>) -> Vec<Outcome> {
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|o| o.started);
    all
}

fn assert_none_failed(all: &[Outcome]) {
    let failed: Vec<_> = all.iter().filter_map(|o| o.result.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(5)]
    );
}

/// Kills the successor of an upgrade when the test ends (it is not the test's child).
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-9", &self.0.to_string()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_replacement_under_load_fails_no_request() {
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    // Run from a copy, so the test can put a new file at that path.
    let binary = dir.path().join("switchyard");
    std::fs::copy(switchyard_test_support::binary(), &binary).unwrap();
    let svc = service(
        "web",
        "    rollout:\n      steps: [{ weight: 20, hold: 1h }]\n",
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      weights: { stable: 100, canary: 0 }\n",
    );
    let yaml = format!("{}state: {{ dir: state }}\n", admin_config(&svc));
    let mut proxy = Proxy::start_binary(dir, &yaml, &binary).await;
    let (status, _) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some("{}")).await;
    assert_eq!(status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await; // pace: load before the signal
    let (_, before) = proxy.admin("GET", "/v1/services/web/rollout", None, None).await;

    // A new binary at the same path (a package upgrade writes a new file).
    let next = binary.with_extension("new");
    std::fs::copy(switchyard_test_support::binary(), &next).unwrap();
    std::fs::rename(&next, &binary).unwrap();
    let signalled = Instant::now();
    proxy.signal("USR2");
    let exit = tokio::time::timeout(Duration::from_secs(40), proxy.child.wait())
        .await
        .expect("the old process drains and exits");
    assert!(exit.unwrap().success());
    let pid = proxy.logged("upgrade: successor started")[0]["pid"].as_u64().unwrap() as u32;
    let _successor = Successor(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, binary, "the successor runs the new file");
    tokio::time::sleep(Duration::from_millis(500)).await; // pace: load after the old process is gone
    stop.store(true, Ordering::Relaxed);
    let all = outcomes(tasks).await;

    let after = all.iter().filter(|o| o.started > signalled + Duration::from_millis(200)).count();
    eprintln!("upgrade under load: {} requests, {after} after the signal", all.len());
    assert_none_failed(&all);
    assert!(after > 50, "the successor served ({after} requests after the signal)");

    // The successor has the control path: the rollout goes on where it was.
    let (status, now) = proxy.admin("GET", "/v1/services/web/rollout", None, None).await;
    assert_eq!(status, 200);
    assert_eq!((now["status"].clone(), now["step"].clone()), (before["status"].clone(), before["step"].clone()));
    assert!(
        now["time_in_step_seconds"].as_f64() >= before["time_in_step_seconds"].as_f64(),
        "hold time kept: {before} → {now}"
    );
    let (status, _) =
        proxy.admin("PUT", "/v1/services/web/weights", Some(TOKEN), Some(r#"{"stable": 50, "canary": 50}"#)).await;
    assert_eq!(status, 409, "the resumed rollout owns the weights");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_started_before_it() {
    let up = Upstream::start(|_| async {
        tokio::time::sleep(Duration::from_millis(50)).await; // slow upstream: requests are in flight at the signal
        Response::new(full("ok"))
    })
    .await;
    let mut proxy = Proxy::start(&config(&service("s", "", &[("p", &[up.addr])], ""))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await; // pace: load before the signal
    let signalled = Instant::now();
    proxy.signal("TERM");
    let exit = tokio::time::timeout(Duration::from_secs(40), proxy.child.wait()).await.unwrap().unwrap();
    assert!(exit.success());
    stop.store(true, Ordering::Relaxed);
    let all = outcomes(tasks).await;
    let before: Vec<_> = all.iter().filter(|o| o.started < signalled).collect();
    let failed: Vec<_> = before.iter().filter_map(|o| o.result.as_ref().err()).collect();
    assert!(before.len() > 20, "{} requests before the signal", before.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests started before SIGTERM failed: {:?}",
        failed.len(),
        before.len(),
        failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_plugins_and_reloads_churning_for_a_minute_fail_no_request() {
    let (stable, canary) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let svc = service(
        "web",
        "",
        &[("stable", &[stable.addr]), ("canary", &[canary.addr])],
        "      rules:\n        - { plugin: cohort, config: { header: { name: x-cohort, values: [beta] } } }\n      \
         weights: { stable: 70, canary: 30 }\n",
    );
    let section = plugins_section(&["cohort-router"]).replace("name: cohort-router", "name: cohort");
    let proxy = start_with_admin(&format!("{svc}{section}")).await;
    let component = std::fs::read(wasm("cohort-router")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(proxy.addr, 4, stop.clone());
    let start = Instant::now();
    // Weights alternate every 10 ms; each change is in force from its answer on.
    let mut changes: Vec<(Instant, Instant, f64)> = vec![(start, start, 30.0)];
    let (mut uploads, mut reloads, mut n) = (0, 0, 0u64);
    let mut admin = Client::connect(proxy.admin.unwrap()).await;
    // 100 weight changes a second: a tick every 10 ms, caught up when a write ran long.
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < Duration::from_secs(60) {
        let canary = if n % 2 == 0 { 25 } else { 35 };
        let sent = Instant::now();
        let req = Request::put("/v1/services/web/weights")
            .header("host", "admin")
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(full(format!(r#"{{"stable": {}, "canary": {canary}}}"#, 100 - canary)))
            .unwrap();
        let resp = admin.send(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        changes.push((sent, Instant::now(), f64::from(canary)));
        n += 1;
        if start.elapsed().as_secs() >= uploads {
            let (status, v) =
                upload(&proxy, "cohort", new_version(component.clone(), &format!("v{uploads}")), "application/wasm")
                    .await;
            assert_eq!(status, 200, "{v}");
            uploads += 1;
        }
        if start.elapsed().as_secs() >= reloads * 5 {
            let (status, v) = proxy.admin("POST", "/v1/config/reload", Some(TOKEN), None).await;
            assert_eq!(status, 200, "{v}");
            reloads += 1;
        }
        ticks.tick().await;
    }
    stop.store(true, Ordering::Relaxed);
    let all = outcomes(tasks).await;
    assert_none_failed(&all);

    // Per second: the canary's share against the weight in force at each
    // request's start. While a change was being made (sent, not yet
    // answered) either weight may have been in force — the swap falls
    // somewhere in between, late when the store's write was slow — so such
    // a request allows the range of the two.
    let weight_at = |t: Instant| {
        let i = changes.partition_point(|c| c.1 <= t);
        let done = changes[i.saturating_sub(1)].2;
        match changes.get(i) {
            Some(c) if c.0 <= t => (done.min(c.2), done.max(c.2)),
            _ => (done, done),
        }
    };
    let mut worst: f64 = 0.0;
    for second in 0..60u64 {
        let lo = start + Duration::from_secs(second);
        let hi = lo + Duration::from_secs(1);
        let in_second: Vec<_> = all.iter().filter(|o| o.started >= lo && o.started < hi).collect();
        if in_second.len() < 200 {
            continue;
        }
        let n_in = in_second.len() as f64;
        let (low, high) = in_second
            .iter()
            .map(|o| weight_at(o.started))
            .fold((0.0, 0.0), |(l, h), (a, b)| (l + a / n_in, h + b / n_in));
        let got = 100.0 * in_second.iter().filter(|o| o.result.as_deref() == Ok("canary")).count() as f64 / n_in;
        let off = (low - got).max(got - high).max(0.0);
        worst = worst.max(off);
        let slowest = changes.iter().filter(|c| c.1 >= lo && c.0 < hi).map(|c| c.1 - c.0).max().unwrap_or_default();
        assert!(
            off <= 1.5,
            "second {second}: canary {got:.2} % of {} requests, weights in force {low:.2} to {high:.2} % \
             (slowest weight change {slowest:?})",
            in_second.len()
        );
    }
    eprintln!(
        "churn: {} requests, {n} weight changes, {uploads} uploads, {reloads} reloads, 0 failed, worst second {worst:.2} points off, \
         slowest weight change {:?}",
        all.len(),
        changes.iter().map(|c| c.1 - c.0).max().unwrap_or_default()
    );
}
