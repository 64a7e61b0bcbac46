//! The deployment report: three deployments on a real proxy (shipped,
//! rolled back by the analysis, aborted by a person), read back through
//! `GET /v1/report` and `switchyard report` merging two proxies, after a
//! restart too; and the time-to-restore metric.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use switchyard_test_support::*;

/// Service `web` in `environment`: one canary step of 50 % for 1 s, judged
/// every 200 ms; durable state.
async fn proxy(environment: &str, stable: &Upstream, canary: &Upstream) -> Proxy {
    let plan = "    rollout:\n      steps: [{ weight: 50, hold: 1s }]\n      \
                analysis: { interval: 200ms, window: 2s, min_requests: 5, rollback_when: { error_rate_above: 0.2, min_requests: 5 } }\n";
    let svc = web(stable.addr, canary.addr, plan, "");
    start_with_admin(&format!("{svc}environment: {environment}\nstate: {{ dir: state }}\n")).await
}

/// Points `canary` at `version` (committed `commit_age` ago), runs a rollout
/// to its end (`abort`: a person stops it once it runs) and resets weights.
async fn deploy(p: &Proxy, canary: std::net::SocketAddr, version: &str, commit_age: Duration, abort: bool) -> String {
    let commit_time = humantime::format_rfc3339(SystemTime::now() - commit_age).to_string();
    let body = format!(r#"{{"endpoints": ["{canary}"], "version": "{version}", "commit_time": "{commit_time}"}}"#);
    let (status, v) = p.admin("PUT", "/v1/services/web/pools/canary", Some(TOKEN), Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = p.admin("POST", "/v1/services/web/rollout", Some(TOKEN), Some("{}")).await;
    assert_eq!(status, 200, "{v}");
    if abort {
        let (status, v) = p.admin("POST", "/v1/services/web/rollout/abort", Some(TOKEN), Some("{}")).await;
        assert_eq!(status, 200, "{v}");
    }
    let end = rollout_end(p).await;
    let (status, v) = p.admin("DELETE", "/v1/services/web/weights", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    end["status"].as_str().unwrap().to_owned()
}

fn report_cli(admins: &[std::net::SocketAddr], args: &[&str]) -> (bool, String, String) {
    let list = admins.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
    let out = std::process::Command::new(binary())
        .args(["report", "--admin", &list, "--token", TOKEN])
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_counts_shipped_rolled_back_and_aborted_deployments_with_dora_measures() {
    let failing = Arc::new(AtomicBool::new(false));
    let (stable, canary) = (Upstream::text("stable").await, switchable("canary", failing.clone()).await);
    let prod = proxy("production", &stable, &canary).await;
    let load = steady_traffic(prod.addr, Duration::from_secs(60));
    let hour = Duration::from_secs(3600);
    assert_eq!(deploy(&prod, canary.addr, "v2", hour, false).await, "promoted");
    failing.store(true, Ordering::SeqCst);
    assert_eq!(deploy(&prod, canary.addr, "v3", hour, false).await, "rolled-back");
    failing.store(false, Ordering::SeqCst);
    assert_eq!(deploy(&prod, canary.addr, "v4", hour, true).await, "aborted");
    load.abort();

    let (status, r) = prod.admin("GET", "/v1/report?since=1d", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{r}");
    let env = &r["environments"][0];
    assert_eq!(env["name"], "production");
    let ds = env["deployments"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = ds
        .iter()
        .map(|d| (d["version"].as_str().unwrap(), d["status"].as_str().unwrap(), d["rollback"].as_str().unwrap()))
        .collect();
    assert_eq!(seen, [("v4", "aborted", "manual"), ("v3", "rolled-back", "auto"), ("v2", "promoted", "none")]);
    assert!(ds[1]["reason"].as_str().unwrap().contains("error rate"), "{}", ds[1]);
    let restore = ds[1]["restore_seconds"].as_f64().expect("the analysis's rollback has a time to restore");
    assert!((0.0..5.0).contains(&restore), "{restore}");
    let dora = &env["dora"];
    assert_eq!(dora["change_failure_rate"]["value"].as_f64(), Some(2.0 / 3.0));
    let lead = dora["lead_time"]["value"].as_f64().unwrap();
    assert!((3600.0..3700.0).contains(&lead), "an hour from commit to promotion, and the rollout: {lead}");
    assert_eq!(dora["lead_time"]["band"], "high");
    assert_eq!(dora["time_to_restore"]["band"], "elite");
    assert_eq!(dora["deployment_frequency"]["band"], "high", "one a day: daily, not several a day: {dora}");
    let alerts = env["alerts"].as_array().unwrap();
    let rolled_back = alerts.iter().find(|a| a["name"] == "SwitchyardRolloutRolledBack").unwrap();
    assert_eq!(rolled_back["fired"], 1);
    let pools = env["services"][0]["pools"].as_array().unwrap();
    assert!(pools.iter().any(|p| p["name"] == "canary" && p["version"] == "v4"), "{pools:?}");

    let (_, metrics) = prod.admin("GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("switchyard_rollout_restore_seconds_count{service=\"web\"} 1"), "{metrics}");

    // Staging, merged in: two environments side by side.
    let (s2, c2) = (Upstream::text("stable").await, Upstream::text("canary").await);
    let staging = proxy("staging", &s2, &c2).await;
    let load = steady_traffic(staging.addr, Duration::from_secs(30));
    assert_eq!(deploy(&staging, c2.addr, "v4", hour, false).await, "promoted");
    load.abort();
    let admins = [prod.admin.unwrap(), staging.admin.unwrap()];
    // The proxies are other processes: this thread may wait for the command.
    let (ok, md, err) = report_cli(&admins, &["--since", "1d"]);
    assert!(ok, "{err}");
    for wanted in [
        "# Deployment Management Report",
        "Environments: production, staging.",
        "## Deployment metrics (DORA)",
        "| measure | production | staging |",
        "66.7 % (low;",
        "| production | ",
        "| staging | ",
        "production: The most frequent rollback reason (1 of 1 automatic rollbacks): rollback_when breached: error rate N% above N%.",
    ] {
        assert!(md.contains(wanted), "no `{wanted}` in:\n{md}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.html");
    let args = ["--format", "html", "--out", out.to_str().unwrap()];
    let (ok, _, err) = report_cli(&admins, &args);
    assert!(ok, "{err}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("<h2>Deployment history</h2>"), "{html}");

    // The history is durable: the same report after a hard restart.
    let prod = prod.kill9_and_restart().await;
    let (_, again) = prod.admin("GET", "/v1/report?since=1d", Some(TOKEN), None).await;
    assert_eq!(again["environments"][0]["deployments"].as_array().unwrap().len(), 3);
    let (status, v) = prod.admin("GET", "/v1/report?since=forever", Some(TOKEN), None).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = prod.admin("GET", "/v1/report?format=pdf", Some(TOKEN), None).await;
    assert_eq!(status, 400, "{v}");
    let (status, md) = prod.admin("GET", "/v1/report?format=md", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(md.as_str().unwrap().contains("| v4 | web | canary | aborted |"), "{md}");
}
