//! `ctl rollout start --wait`: follows a rollout to its end for a CI job —
//! a line per change that a log can read, and an exit code per outcome.

use super::client::Client;
use http::Method;
use std::time::{Duration, Instant};
use switchyard::admin::api::RolloutView;

/// How a followed rollout ended when it did not ship: the process's exit code and why.
#[derive(Debug)]
pub struct Outcome {
    /// 2 rolled back, 3 aborted, 4 not ended at the timeout.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Outcome {}

/// How often a line is printed while nothing changes.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Exit code: rolled back.
pub const ROLLED_BACK: u8 = 2;
/// Exit code: aborted by a person.
pub const ABORTED: u8 = 3;
/// Exit code: still running or paused when `--timeout` passed.
pub const TIMED_OUT: u8 = 4;

/// Polls the rollout of `service` once a second until it ends (or `limit`
/// passes): `Ok` when promoted, an [`Outcome`] otherwise.
pub(super) async fn follow(c: &Client, service: &str, limit: Option<Duration>) -> anyhow::Result<()> {
    let start = Instant::now();
    let (mut last, mut seen, mut printed) = (None, None::<String>, start);
    loop {
        let body = c.call(Method::GET, &format!("/v1/services/{service}/rollout"), None, None).await?;
        let r: RolloutView = serde_json::from_slice(&body)?;
        let at = format!("[{:>5}s]", start.elapsed().as_secs());
        for d in r.decisions.iter().filter(|d| seen.as_ref().is_none_or(|t| d.time > *t)) {
            println!("{at} step {}: {} — {}", shown(d.step, &r), d.decision, d.why);
        }
        seen = r.decisions.last().map(|d| d.time.clone()).or(seen);
        // A line when the rollout moves, and every 30 s while it holds.
        let now = (r.status.clone(), r.step, r.weight, r.reason.clone());
        if last.as_ref() != Some(&now) || printed.elapsed() >= HEARTBEAT {
            println!("{at} {}", progress(&r));
            (last, printed) = (Some(now), Instant::now());
        }
        let why = r.reason.clone().unwrap_or_default();
        match r.status.as_str() {
            "promoted" => return Ok(()),
            "rolled-back" => return Err(Outcome { code: ROLLED_BACK, message: format!("rolled back: {why}") }.into()),
            "aborted" => return Err(Outcome { code: ABORTED, message: format!("aborted: {why}") }.into()),
            status => {
                if let Some(limit) = limit.filter(|l| start.elapsed() >= *l) {
                    let message = format!(
                        "still {status} after {} (step {}/{}, {}% on the candidate); the rollout goes on",
                        humantime::format_duration(limit),
                        shown(r.step, &r),
                        r.steps_total,
                        r.weight
                    );
                    return Err(Outcome { code: TIMED_OUT, message }.into());
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `running, step 2/4: 25% on the candidate, held 1m 10s of 5m` (the hold in whole seconds).
fn progress(r: &RolloutView) -> String {
    let hold = r
        .current_step
        .as_ref()
        .and_then(|s| s.hold_seconds)
        .map_or(String::new(), |h| format!(", held {}s of {}s", r.in_step_ms / 1000, h.round() as u64));
    let reason = r.reason.as_ref().map_or(String::new(), |why| format!(" ({why})"));
    let traffic = match r.current_step.as_ref().and_then(|s| s.mirror_percent) {
        Some(p) => format!("{p}% mirrored to the candidate"),
        None => format!("{}% on the candidate", r.weight),
    };
    format!("{}, step {}/{}: {traffic}{hold}{reason}", r.status, shown(r.step, r), r.steps_total)
}

/// Step index `step` as people count (a finished canary's index is one past its last step).
fn shown(step: usize, r: &RolloutView) -> usize {
    (step + 1).min(r.steps_total.max(1))
}
