//! Time from fault onset in the canary to the moment no new request reaches
//! it, end to end: the release binary, real upstreams on 127.0.0.1, load of
//! at least 500 req/s, a canary at 50 % with `interval: 250ms`. The canary
//! starts answering 503 at T0; the figure is the time of the last request the
//! canary upstream received, minus T0. Several runs; prints each and the median.
//!
//! A third case gives the canary 30 s of healthy history at 10 % before the
//! rollout (a 30 s window, the canary kept at 10 %): the analysis must judge
//! only what the rollout produced, so the history must not slow the rollback.
//!
//! Run: `cargo bench -p switchyard --bench rollback` (RUNS=N to change the count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Response;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_test_support::*;

const PLAN: &str = "    rollout:\n      steps: [{ weight: 50, hold: 1h }]\n      analysis:\n        interval: 250ms\n        \
                    window: 2s\n        min_requests: 20\n        rollback_when: { error_rate_above: 0.05, min_requests: 10 }\n";

const HISTORY_PLAN: &str = "    rollout:\n      steps: [{ weight: 10, hold: 1h }]\n      analysis:\n        interval: 250ms\n        \
                            window: 30s\n        min_requests: 20\n        rollback_when: { error_rate_above: 0.05, min_requests: 10 }\n";

/// One run; `rate`: total requests per second (paced), or as fast as possible;
/// `history`: 30 s of healthy canary traffic at 10 % before the rollout.
async fn one_run(base: Instant, rate: Option<u64>, history: bool) -> (Duration, f64) {
    let failing = Arc::new(AtomicBool::new(false));
    let last_canary_us = Arc::new(AtomicU64::new(0));
    let stable = Upstream::text("stable").await;
    let (f, l) = (failing.clone(), last_canary_us.clone());
    let canary = Upstream::start(move |_| {
        l.store(base.elapsed().as_micros() as u64, Ordering::SeqCst);
        let fail = f.load(Ordering::SeqCst);
        async move {
            let mut r = Response::new(full("canary"));
            if fail {
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            r
        }
    })
    .await;
    let (plan, weights) = match history {
        false => (PLAN, "      weights: { stable: 100, canary: 0 }\n"),
        true => (HISTORY_PLAN, "      weights: { stable: 90, canary: 10 }\n"),
    };
    let svc = service("web", plan, &[("stable", &[stable.addr]), ("canary", &[canary.addr])], weights);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), format!("ci:{TOKEN}\n")).unwrap();
    let proxy = Proxy::start_in(dir, &admin_config(&svc).replace("window: 5s", "window: 30s")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let addr = proxy.addr;
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut c = Client::connect(addr).await;
                // Each of the 8 clients sends its share of `rate`.
                let mut pace = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(8.0 / r as f64)));
                while !stop.load(Ordering::Relaxed) {
                    if let Some(p) = &mut pace {
                        p.tick().await;
                    }
                    c.get("/", &[]).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    if history {
        tokio::time::sleep(Duration::from_secs(30)).await; // pace: 30 s of healthy history
    }
    let (status, _) = proxy.admin("POST", "/v1/services/web/rollout", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await; // pace: the rollout's first healthy ticks
    let (n0, t0) = (sent.load(Ordering::Relaxed), Instant::now());
    failing.store(true, Ordering::SeqCst);
    let onset_us = base.elapsed().as_micros() as u64;
    loop {
        let (_, r) = proxy.admin("GET", "/v1/services/web/rollout", None, None).await;
        if r["status"] == "rolled-back" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no rollback: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await; // poll
    }
    // Keep the load on a little longer: any straggler would move the last hit.
    tokio::time::sleep(Duration::from_millis(1500)).await; // pace: stragglers
    let rate = (sent.load(Ordering::Relaxed) - n0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let last = last_canary_us.load(Ordering::SeqCst);
    (Duration::from_micros(last.saturating_sub(onset_us)), rate)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let base = Instant::now();
    let cases = [
        ("500 req/s", Some(520), false),
        ("unpaced", None, false),
        ("500 req/s after 30 s of healthy history (canary at 10 %, 30 s window)", Some(520), true),
    ];
    for (label, rate, history) in cases {
        let mut times = Vec::new();
        for i in 1..=runs {
            let (t, got) = one_run(base, rate, history).await;
            println!("{label} run {i}: last request to the failing canary {:.0} ms after the fault began (load {got:.0} req/s)", t.as_secs_f64() * 1000.0);
            assert!(got >= 500.0, "the load must be at least 500 req/s, was {got:.0}");
            times.push(t);
        }
        times.sort();
        println!(
            "{label}: fault onset → no new request on the canary: median {:.0} ms, worst {:.0} ms over {runs} runs (interval 250ms; goal < 1000 ms)",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times.last().unwrap().as_secs_f64() * 1000.0
        );
    }
}
