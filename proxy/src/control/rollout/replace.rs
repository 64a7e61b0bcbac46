//! What a rolling update does outside the machine: it probes the batch's
//! new endpoints for readiness, and writes the pool's endpoints as the
//! machine has them (one event, one snapshot swap, the rollout's row under
//! its guard) — the file's or the API's set restored on a rollback.

use super::machine::Decision;
use super::Tracked;
use crate::config::rolling::Readiness;
use crate::config::PoolSet;
use crate::control::{Control, ControlError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// Writes the pool's endpoints for `decision` (a rolling update's
/// `SetEndpoints`, `Promote` or `Rollback`).
pub(super) async fn apply(
    ctrl: &Arc<Control>,
    t: &mut Tracked,
    decision: &Decision,
    actor: &str,
    leader: bool,
) -> Result<(), ControlError> {
    let (Some(rs), Some(r)) = (t.rolling.clone(), t.plan.rolling.clone()) else {
        return Err(ControlError::Internal("a rolling update without its batches".into()));
    };
    let service = t.service.clone();
    let now = t.endpoints_now().unwrap_or_default();
    let list = |eps: &[SocketAddr]| eps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let snap = ctrl.shared.snapshot.load_full();
    let release = snap.service(&service).map(|s| s.release(&r.pool)).unwrap_or_default();
    let (set, message) = match decision {
        Decision::Rollback(why) => (
            rs.before.clone(),
            format!("rollout of {service} ended, pool {} back on its endpoints {}: {why}", r.pool, list(&rs.old)),
        ),
        Decision::Promote => (
            // The pool now runs what the plan says its new endpoints run.
            Some(PoolSet { endpoints: now, release: promoted_release(&r.release, release), new: Vec::new() }),
            format!("rollout of {service} promoted: pool {} runs on {}", r.pool, list(&r.endpoints)),
        ),
        _ => {
            let new = t.new_endpoints_now();
            let what = match t.awaiting() {
                [] => format!("{} new endpoint(s) serving", new.len()),
                waiting => format!("waiting for {} to be ready", list(waiting)),
            };
            let message = format!("rollout of {service}: batch {} of {}, {what}", t.step + 1, t.steps_total());
            (Some(PoolSet { endpoints: now, release, new }), message)
        }
    };
    let (row, guard) = (t.row()?, t.guard(leader));
    let ev = ctrl.rollout_pool((&service, &r.pool), set, (actor, message), (&row, &guard)).await?;
    t.written(ctrl, row, &ev, actor, leader);
    Ok(())
}

/// What the pool runs once every endpoint is new: the plan's release, where
/// it says anything, else what the pool ran.
fn promoted_release(plan: &crate::config::Release, before: crate::config::Release) -> crate::config::Release {
    match *plan == crate::config::Release::default() {
        true => before,
        false => plan.clone(),
    }
}

/// Readiness of a batch's new endpoints: consecutive passes per endpoint.
#[derive(Default)]
pub(super) struct Probes {
    passes: HashMap<SocketAddr, u32>,
    last: Option<tokio::time::Instant>,
}

impl Probes {
    /// Probes `awaiting` (at most once per `readiness.period`) through
    /// `pool`'s dialer; `true` once every one passed `success_threshold`
    /// times in a row.
    pub(super) async fn ready(
        &mut self,
        ctrl: &Control,
        (service, pool): (&str, &str),
        awaiting: &[SocketAddr],
        readiness: &Readiness,
    ) -> bool {
        if awaiting.is_empty() {
            return true;
        }
        self.passes.retain(|a, _| awaiting.contains(a));
        let due = self.last.is_none_or(|l| l.elapsed() >= readiness.period);
        let dialer = ctrl.shared.snapshot.load().service(service).and_then(|s| {
            s.pools.iter().find(|p| p.name == pool).and_then(|p| p.endpoints.first()).map(|e| e.dialer.clone())
        });
        if let (true, Some(dialer)) = (due, dialer) {
            self.last = Some(tokio::time::Instant::now());
            let mut probes = tokio::task::JoinSet::new();
            for &addr in awaiting {
                let (dialer, path, timeout) = (dialer.clone(), readiness.path.clone(), readiness.timeout);
                probes.spawn(async move {
                    let probe = crate::data::pool::probe(&dialer, addr, &path, timeout);
                    (addr, tokio::time::timeout(timeout, probe).await.unwrap_or(false))
                });
            }
            while let Some(Ok((addr, ok))) = probes.join_next().await {
                let n = self.passes.entry(addr).or_default();
                *n = if ok { *n + 1 } else { 0 };
            }
        }
        awaiting.iter().all(|a| self.passes.get(a).is_some_and(|n| *n >= readiness.success_threshold))
    }
}
