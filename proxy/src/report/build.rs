//! One proxy's report, from its control path: the durable history's events
//! in the period, the rollouts not yet ended, and the live snapshot and
//! statistics.

use super::{Deployment, Ended, Environment, PoolStatus, Report, ServiceStatus, Stall};
use crate::control::state::{Event, Store};
use crate::control::Control;
use std::time::{Duration, SystemTime};

/// Events read per store call.
const PAGE: usize = 1000;

/// The report of the `since` before now, from the history read page by
/// page (as `GET /v1/events` reads it) and the live state.
pub async fn build(control: &Control, since: Duration) -> Result<Report, crate::Error> {
    let now = SystemTime::now();
    let start = now.checked_sub(since).unwrap_or(SystemTime::UNIX_EPOCH);
    let (now_s, start_s) = (rfc3339(now), rfc3339(start));
    let kept = |e: &Event| matches!(e.kind.as_str(), "rollout-end" | "rollout-pause");
    let events = match &control.store {
        Some(store) => events_since(store.as_ref(), &start_s, kept)?,
        None => Vec::new(),
    };
    let mut deployments = Vec::new();
    let mut stalls = Vec::new();
    for e in &events {
        let Some(service) = e.service.clone() else { continue };
        match e.kind.as_str() {
            "rollout-end" => {
                if let Ok(rollout) = serde_json::from_value::<Ended>(e.new.clone()) {
                    deployments.push(Deployment { service, ended: Some(e.time.clone()), rollout });
                }
            }
            "rollout-pause" if e.message.contains("progress deadline") => {
                let step = e.new.get("step").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize + 1;
                stalls.push(Stall { service, step, time: e.time.clone() });
            }
            _ => {}
        }
    }
    let snap = control.shared.snapshot.load_full();
    let mut services = Vec::new();
    for s in snap.services() {
        let rollout = control.rollout(&s.name).await;
        if let Some(r) = rollout.as_ref().filter(|r| !r.is_done()) {
            let rollout = crate::control::rollout::ended::summary(Some(s), r, "", &now_s);
            deployments.push(Deployment { service: s.name.clone(), ended: None, rollout });
        }
        let status = rollout.as_ref().map(|r| r.status.as_str().to_owned());
        services.push(ServiceStatus { name: s.name.clone(), rollout: status, pools: pools(control, s) });
    }
    let name = control.config().environment.unwrap_or_else(|| "default".into());
    let period_days = since.as_secs_f64() / 86400.0;
    let env = Environment::new(name, services, deployments, stalls, (&start_s, &now_s));
    Ok(Report { generated: now_s, since: start_s, period_days, environments: vec![env] })
}

/// The events `kept` from the first at or after `since` on, oldest first
/// (the rest are read a page at a time and dropped). Events are stored in
/// time order (RFC 3339 in UTC with milliseconds, which sort as text), so
/// the first is found by bisection over sequence numbers.
fn events_since(store: &dyn Store, since: &str, kept: impl Fn(&Event) -> bool) -> Result<Vec<Event>, crate::Error> {
    let Some(last) = store.last_events(1)?.pop() else { return Ok(Vec::new()) };
    if last.time.as_str() < since {
        return Ok(Vec::new());
    }
    // Whether the first event after `x` is in the period: false, then true.
    let in_period = |x: u64| -> Result<bool, crate::Error> {
        Ok(store.events(x, 1)?.first().is_none_or(|e| e.time.as_str() >= since))
    };
    let (mut lo, mut hi) = (0, last.seq.saturating_sub(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if in_period(mid)? {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut out = Vec::new();
    let mut after = lo;
    loop {
        let page = store.events(after, PAGE)?;
        let Some(tail) = page.last() else { break };
        after = tail.seq;
        let full = page.len() == PAGE;
        out.extend(page.into_iter().filter(|e| kept(e)));
        if !full {
            break;
        }
    }
    Ok(out)
}

fn pools(control: &Control, s: &crate::data::snapshot::Service) -> Vec<PoolStatus> {
    let total: u64 = s.split.weights().iter().map(|w| u64::from(*w)).sum();
    let now = crate::data::pool::clock_ms();
    s.pools
        .iter()
        .zip(s.split.weights())
        .map(|(p, w)| {
            let f = control.shared.stats.fleet_recent(p.stats_slot, control.shared.stats.window());
            let up = p.endpoints.iter().filter(|e| e.is_available(now)).count();
            let endpoints = p.endpoints.len();
            let up_share = if endpoints == 0 { 0.0 } else { up as f64 / endpoints as f64 };
            let health = 100.0 * up_share * (1.0 - 10.0 * f.error_rate()).max(0.0);
            PoolStatus {
                name: p.name.clone(),
                version: s.release(&p.name).version,
                share_percent: if total == 0 { 0.0 } else { f64::from(*w) * 100.0 / total as f64 },
                endpoints_up: up,
                endpoints,
                requests: f.requests,
                error_rate: f.error_rate(),
                p99_ms: f.p99_us as f64 / 1000.0,
                health_score: health.round() as u32,
            }
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
