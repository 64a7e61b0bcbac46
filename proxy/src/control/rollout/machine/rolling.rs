//! The rolling update's part of the machine (`strategy: rolling`). Its
//! batches are planned once, when it starts, from the pool's endpoints then
//! and the new set, within `max_surge` and `max_unavailable`:
//!
//! ```text
//! batch:  drain_before ──▶ probe `admit` until ready ──▶ admit ──▶ hold + judge ──▶ drain_after ──▶ next batch
//!                              │ not ready by the deadline           │ breach / fail
//!                              └──────────────▶ RolledBack ◀─────────┘   (the old endpoints, at once)
//! ```
//!
//! Draining takes an endpoint out of the pool's next snapshot: no new
//! request picks it, and requests in flight on it finish. The pool's
//! endpoints at any moment follow from the batch and its phase
//! ([`Rollout::endpoints_now`]), so a resumed rollout serves the same set.

use super::{Decision, Rollout, Status};
use crate::config::rolling::Rolling;
use crate::config::PoolSet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One batch: old endpoints drained before and after, new ones admitted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Drained before the batch's new endpoints are probed (to make room).
    pub drain_before: Vec<SocketAddr>,
    /// New endpoints admitted once ready.
    pub admit: Vec<SocketAddr>,
    /// Drained once the batch has held and passed.
    pub drain_after: Vec<SocketAddr>,
}

/// Where a rolling update stands, beside the machine's step (the batch).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RollingState {
    /// The pool's endpoints when the update started.
    pub old: Vec<SocketAddr>,
    /// The pool as the API had set it then (`None`: the file's), restored on rollback.
    pub before: Option<PoolSet>,
    /// What the old endpoints ran.
    #[serde(default)]
    pub old_release: crate::config::Release,
    /// The batches, in order.
    pub batches: Vec<Batch>,
    /// The current batch's new endpoints are in the pool: it holds and is judged.
    pub admitted: bool,
    /// Time spent waiting for the current batch's endpoints to be ready, milliseconds.
    pub waited_ms: u64,
}

/// Plans the batches from `old` to `new` for `r`'s surge and unavailability
/// bounds (an endpoint in both sets stays throughout).
pub fn plan(old: &[SocketAddr], r: &Rolling) -> Vec<Batch> {
    let new = &r.endpoints;
    let d = new.len();
    let (surge, unavailable) = (r.max_surge.of(d, true), r.max_unavailable.of(d, false));
    let mut old_left: Vec<SocketAddr> = old.iter().filter(|a| !new.contains(a)).copied().collect();
    let mut new_left: Vec<SocketAddr> = new.iter().filter(|a| !old.contains(a)).copied().collect();
    let mut count = old.len();
    let floor = d.saturating_sub(unavailable);
    let mut batches = Vec::new();
    while !old_left.is_empty() || !new_left.is_empty() {
        let mut b = Batch::default();
        let mut room = (d + surge).saturating_sub(count);
        if room == 0 || new_left.is_empty() {
            let n = old_left.len().min(count.saturating_sub(floor)).max(usize::from(new_left.is_empty()));
            b.drain_before = old_left.drain(..n.min(old_left.len())).collect();
            count -= b.drain_before.len();
            room = (d + surge).saturating_sub(count);
        }
        let n = new_left.len().min(room);
        b.admit = new_left.drain(..n).collect();
        count += b.admit.len();
        let n = old_left.len().min(count.saturating_sub(floor));
        b.drain_after = old_left.drain(..n).collect();
        count -= b.drain_after.len();
        if b == Batch::default() {
            break; // cannot happen with surge or unavailability above 0 (validated)
        }
        batches.push(b);
    }
    batches
}

impl Rollout {
    /// Starts a rolling update of a pool whose endpoints are `old` now,
    /// running `old_release` (set by the API as `before`, if it was): plans
    /// the batches and enters the first.
    pub fn begin_rolling(
        &mut self,
        (old, old_release): (&[SocketAddr], crate::config::Release),
        before: Option<PoolSet>,
    ) -> Decision {
        let Some(r) = &self.plan.rolling else { return Decision::Hold };
        let batches = plan(old, r);
        self.rolling =
            Some(RollingState { old: old.to_vec(), before, old_release, batches, admitted: false, waited_ms: 0 });
        self.enter_batch()
    }

    /// The current batch's new endpoints awaiting readiness (none once admitted).
    pub fn awaiting(&self) -> &[SocketAddr] {
        match (&self.rolling, self.status) {
            (Some(rs), Status::Running | Status::Paused) if !rs.admitted => {
                rs.batches.get(self.step).map_or(&[], |b| &b.admit[..])
            }
            _ => &[],
        }
    }

    /// The awaited endpoints are ready (or a person says so): into the pool.
    pub fn admit(&mut self) -> Decision {
        match &mut self.rolling {
            Some(rs) if !rs.admitted && self.status == Status::Running => {
                rs.admitted = true;
                self.in_step_ms = 0;
                self.inconclusive_ms = 0;
                Decision::SetEndpoints
            }
            _ => Decision::Hold,
        }
    }

    /// The pool's endpoints as the update has them now: `None` outside a rolling update.
    pub fn endpoints_now(&self) -> Option<Vec<SocketAddr>> {
        let (rs, r) = (self.rolling.as_ref()?, self.plan.rolling.as_ref()?);
        Some(match self.status {
            Status::Promoted => r.endpoints.clone(),
            Status::RolledBack | Status::Aborted => rs.old.clone(),
            Status::Running | Status::Paused => {
                let mut set = rs.old.clone();
                for (i, b) in rs.batches.iter().enumerate().take(self.step + 1) {
                    let done = i < self.step;
                    set.retain(|a| !(b.drain_before.contains(a) || done && b.drain_after.contains(a)));
                    if done || rs.admitted {
                        set.extend(&b.admit);
                    }
                }
                set
            }
        })
    }

    /// The pool's new endpoints (not in the old set) serving now: what the
    /// analysis judges against the old ones.
    pub fn new_endpoints_now(&self) -> Vec<SocketAddr> {
        let old = self.rolling.as_ref().map_or(&[][..], |rs| &rs.old[..]);
        self.endpoints_now().unwrap_or_default().into_iter().filter(|a| !old.contains(a)).collect()
    }

    /// Batches (a rolling update) or steps (a canary) in all.
    pub fn steps_total(&self) -> usize {
        self.rolling.as_ref().map_or(self.plan.steps.len(), |rs| rs.batches.len())
    }

    /// One analysis tick of a rolling update.
    pub(super) fn tick_rolling(&mut self, elapsed_ms: u64, judgement: &crate::control::rollout::Judgement) -> Decision {
        use crate::control::rollout::Judgement;
        let (Some(rs), Some(r)) = (&mut self.rolling, &self.plan.rolling) else { return Decision::Hold };
        if !rs.admitted {
            rs.waited_ms += elapsed_ms;
            if rs.waited_ms < r.readiness.deadline.as_millis() as u64 {
                return Decision::Hold;
            }
            let waiting: Vec<String> = self.awaiting().iter().map(ToString::to_string).collect();
            return Decision::Rollback(format!(
                "batch {}: {} not ready after {} s (readiness {})",
                self.step + 1,
                waiting.join(", "),
                r.readiness.deadline.as_secs(),
                r.readiness.path
            ));
        }
        self.in_step_ms += elapsed_ms;
        if self.in_step_ms < r.hold.as_millis() as u64 {
            return Decision::Hold;
        }
        // Nothing new serves (the new set is part of the old): nothing to judge.
        if self.new_endpoints_now().is_empty() {
            return self.next_batch();
        }
        match judgement {
            Judgement::Pass(_) => self.next_batch(),
            Judgement::Fail(why) => Decision::Rollback(format!("batch {} failed analysis: {why}", self.step + 1)),
            _ => self.inconclusive(elapsed_ms),
        }
    }

    /// A person's promote: admit the awaited endpoints, or end the batch's hold.
    pub(super) fn promote_rolling(&mut self) -> Decision {
        match self.rolling.as_ref().is_some_and(|rs| !rs.admitted) {
            true => self.admit(),
            false => self.next_batch(),
        }
    }

    /// The next batch, or the end: every new endpoint serves.
    fn next_batch(&mut self) -> Decision {
        self.step += 1;
        self.in_step_ms = 0;
        self.inconclusive_ms = 0;
        if self.step >= self.steps_total() {
            return Decision::Promote;
        }
        self.enter_batch()
    }

    fn enter_batch(&mut self) -> Decision {
        if let Some(rs) = &mut self.rolling {
            rs.waited_ms = 0;
            rs.admitted = rs.batches.get(self.step).is_none_or(|b| b.admit.is_empty());
        }
        Decision::SetEndpoints
    }

    /// The share of the new set serving now, as a percentage (the update's "weight").
    pub(super) fn rolling_weight(&self) -> u32 {
        let Some(r) = &self.plan.rolling else { return 0 };
        let serving = self.endpoints_now().unwrap_or_default();
        let done = serving.iter().filter(|a| r.endpoints.contains(a)).count();
        (done * 100 / r.endpoints.len().max(1)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_plan;
    use crate::control::rollout::Judgement;

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect()
    }

    fn rolling(new: &[u16], surge: &str, unavailable: &str) -> crate::config::rollout::RolloutPlan {
        let eps: Vec<String> = addrs(new).iter().map(|a| format!("\"{a}\"")).collect();
        let yaml = format!(
            "strategy: rolling\npool: web\nendpoints: [{}]\nmax_surge: {surge}\nmax_unavailable: {unavailable}\n\
             hold: 10s\nreadiness: {{ path: /ready, deadline: 30s }}\nanalysis: {{ min_requests: 10, success: {{ max_error_rate: 0.01 }} }}\n",
            eps.join(", ")
        );
        parse_plan(&yaml, &["web".into()]).unwrap()
    }

    #[test]
    fn batches_stay_within_surge_and_unavailability() {
        let surge = plan(&addrs(&[1, 2, 3]), rolling(&[11, 12, 13], "1", "0").rolling.as_ref().unwrap());
        assert_eq!(surge.len(), 3, "{surge:?}");
        for (b, (new, old)) in surge.iter().zip([(11, 1), (12, 2), (13, 3)]) {
            assert_eq!(
                (&b.drain_before[..], &b.admit[..], &b.drain_after[..]),
                (&[][..], &addrs(&[new])[..], &addrs(&[old])[..])
            );
        }
        // No surge: an old endpoint goes before each new one comes.
        let room = plan(&addrs(&[1, 2, 3]), rolling(&[11, 12, 13], "0", "1").rolling.as_ref().unwrap());
        assert_eq!(room[0].drain_before, addrs(&[1]));
        assert_eq!(room[0].admit, addrs(&[11]));
        let all: Vec<SocketAddr> = room.iter().flat_map(|b| b.admit.clone()).collect();
        assert_eq!(all, addrs(&[11, 12, 13]));
        let drained: usize = room.iter().map(|b| b.drain_before.len() + b.drain_after.len()).sum();
        assert_eq!(drained, 3);
        // Percentages of the new set, as Kubernetes rounds them; kept endpoints stay.
        let pct = plan(&addrs(&[1, 2, 3, 4]), rolling(&[1, 12, 13, 14], "50%", "25%").rolling.as_ref().unwrap());
        assert!(pct
            .iter()
            .all(|b| !b.drain_before.contains(&addrs(&[1])[0]) && !b.drain_after.contains(&addrs(&[1])[0])));
        assert_eq!(pct[0].admit.len(), 2, "surge 50 % of 4: 2 at once: {pct:?}");
        let e = parse_plan(
            "strategy: rolling\npool: web\nendpoints: [\"127.0.0.1:1\"]\nmax_surge: 0\nmax_unavailable: 0%\n",
            &["web".into()],
        );
        assert!(e.unwrap_err().to_string().contains("cannot both be 0"));
        let e = parse_plan(
            "strategy: rolling\npool: web\nendpoints: [\"127.0.0.1:1\"]\nmax_surge: lots\n",
            &["web".into()],
        );
        assert!(e.unwrap_err().to_string().contains("`lots` is not a count or a percentage"));
        let e = parse_plan(
            "strategy: canary\npool: web\nsteps: [{ weight: 5 }]\n",
            &["web".into(), "canary".into(), "stable".into()],
        );
        assert!(e.unwrap_err().to_string().contains("only a rolling update"));
    }

    #[test]
    fn a_batch_waits_for_readiness_holds_is_judged_then_drains() {
        let (mut r, d) = Rollout::start("svc", rolling(&[11, 12], "1", "0"));
        assert_eq!(d, Decision::Hold);
        assert_eq!(r.begin_rolling((&addrs(&[1, 2]), Default::default()), None), Decision::SetEndpoints);
        assert_eq!(r.awaiting(), &addrs(&[11])[..]);
        assert_eq!(r.endpoints_now().unwrap(), addrs(&[1, 2]), "not in the pool before it is ready");
        let pass = Judgement::Pass(String::new());
        assert_eq!(r.tick(1000, &pass), Decision::Hold, "waits for readiness");
        assert_eq!(r.admit(), Decision::SetEndpoints);
        assert_eq!(r.endpoints_now().unwrap(), addrs(&[1, 2, 11]), "surge: one above the new set's size");
        assert_eq!(r.new_endpoints_now(), addrs(&[11]));
        for _ in 0..9 {
            assert_eq!(r.tick(1000, &pass), Decision::Hold, "holds the batch");
        }
        assert_eq!(r.tick(1000, &pass), Decision::SetEndpoints, "next batch");
        assert_eq!(r.endpoints_now().unwrap(), addrs(&[2, 11]), "the old one drained");
        assert_eq!((r.step, r.weight, r.awaiting()), (1, 50, &addrs(&[12])[..]));
        let fail = Judgement::Fail("errors".into());
        r.admit();
        for _ in 0..9 {
            r.tick(1000, &fail);
        }
        assert!(matches!(r.tick(1000, &fail), Decision::Rollback(why) if why.contains("batch 2 failed")));
        assert_eq!(r.endpoints_now().unwrap(), addrs(&[1, 2]), "a rollback restores the old set at once");
    }

    #[test]
    fn an_endpoint_never_ready_rolls_back_at_the_deadline_and_promote_admits_by_hand() {
        let (mut r, _) = Rollout::start("svc", rolling(&[11], "1", "0"));
        r.begin_rolling((&addrs(&[1]), Default::default()), None);
        let inconclusive = Judgement::Inconclusive(String::new());
        for _ in 0..29 {
            assert_eq!(r.tick(1000, &inconclusive), Decision::Hold);
        }
        assert!(
            matches!(r.tick(1000, &inconclusive), Decision::Rollback(why) if why.contains("127.0.0.1:11 not ready after 30 s"))
        );
        let (mut r, _) = Rollout::start("svc", rolling(&[11], "1", "0"));
        r.begin_rolling((&addrs(&[1]), Default::default()), None);
        assert_eq!(r.promote(false), Decision::SetEndpoints, "a person admits it");
        assert_eq!(r.promote(false), Decision::Promote, "and passes the last batch");
        assert_eq!(r.endpoints_now().unwrap(), addrs(&[11]));
    }
}
