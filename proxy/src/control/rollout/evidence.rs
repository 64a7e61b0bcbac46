//! What a rollout's analysis may judge: only what the current weights
//! produced. Each rollout keeps two anchors on the statistics' tick clock —
//! when it started and when its current weights took effect — and the
//! figures accumulated since each, per pool.
//!
//! - A **window** is the analysis window cut at an anchor: `rollback_when`
//!   reads it from the rollout's start (the whole rollout is the candidate's
//!   doing), a step's success check from the current weights.
//! - A **total** is everything since an anchor: what a sequential test,
//!   which stays valid however often it looks, reads.
//!
//! Anchors sit one tick after the change (the tick the change fell in holds
//! traffic from before it), so nothing from before counts. After a restart
//! the anchors start again at the resume (statistics are in memory).
//!
//! Every figure is the fleet's ([`Stats::fleet_range`]): in a fleet, this
//! replica's own merged with what the others published; totals take a tick
//! only once it is settled (the others' figures for it have arrived).

use crate::stats::{Figures, Stats};
use std::time::Duration;

/// How far back a figure reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// The rollout's start (or its resume after a restart).
    Rollout,
    /// The moment the current weights took effect: a step, a switch, a policy's set-weights.
    Step,
}

/// A rollout's anchors and totals.
#[derive(Debug)]
pub struct Evidence {
    rollout_from: u64,
    step_from: u64,
    /// The last tick added to the totals (complete ticks only).
    through: u64,
    /// Per pool slot: totals since the rollout's start and since the step's.
    totals: Vec<(usize, Figures, Figures)>,
    /// The rollout's `(step, weight)` the step anchor belongs to.
    weights: (usize, u32),
}

impl Evidence {
    /// Anchors both at the next tick, for the pools in `slots`, at the
    /// rollout's current `(step, weight)`.
    pub fn new(stats: &Stats, slots: &[usize], weights: (usize, u32)) -> Self {
        let now = stats.now_tick();
        Self {
            rollout_from: now + 1,
            step_from: now + 1,
            through: now,
            totals: slots.iter().map(|&s| (s, Figures::default(), Figures::default())).collect(),
            weights,
        }
    }

    /// Re-anchors the step when the rollout's `(step, weight)` moved (by its
    /// own decision or a person's promote).
    pub fn follow(&mut self, stats: &Stats, weights: (usize, u32)) {
        if weights != self.weights {
            self.weights = weights;
            self.weights_changed(stats);
        }
    }

    /// The weights changed now: the step's anchor and totals start again.
    pub fn weights_changed(&mut self, stats: &Stats) {
        self.update(stats);
        self.step_from = stats.now_tick() + 1;
        for (_, _, step) in &mut self.totals {
            *step = Figures::default();
        }
    }

    /// Adds the ticks completed since the last call to the totals. Call it
    /// at least once per statistics window (every analysis tick does).
    pub fn update(&mut self, stats: &Stats) {
        let done = stats.settled_tick();
        if done <= self.through {
            return;
        }
        let from = self.through + 1;
        for (slot, rollout, step) in &mut self.totals {
            rollout.merge(&stats.fleet_range(*slot, from.max(self.rollout_from), done));
            step.merge(&stats.fleet_range(*slot, from.max(self.step_from), done));
        }
        self.through = done;
    }

    fn anchor(&self, since: Since) -> u64 {
        match since {
            Since::Rollout => self.rollout_from,
            Since::Step => self.step_from,
        }
    }

    /// Pool `slot`'s figures over the last `span`, from no earlier than `since`.
    pub fn window(&self, stats: &Stats, slot: usize, span: Duration, since: Since) -> Figures {
        let now = stats.now_tick();
        let from = (now + 1).saturating_sub(stats.ticks_in(span).max(1)).max(self.anchor(since));
        stats.fleet_range(slot, from, now)
    }

    /// Pool `slot`'s figures accumulated since `since`, up to now (the
    /// current, still filling tick included).
    pub fn total(&self, stats: &Stats, slot: usize, since: Since) -> Figures {
        let Some((_, rollout, step)) = self.totals.iter().find(|(s, _, _)| *s == slot) else {
            return Figures::default();
        };
        let mut f = match since {
            Since::Rollout => rollout.clone(),
            Since::Step => step.clone(),
        };
        let from = (self.through + 1).max(self.anchor(since));
        f.merge(&stats.fleet_range(slot, from, stats.now_tick()));
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{record, take_local};

    /// Records `n` requests of status `status` on `slot` in the current tick.
    fn traffic(stats: &Stats, slot: usize, n: usize, status: u16) {
        for _ in 0..n {
            record(slot, Duration::from_millis(2), status, None);
        }
        stats.add(take_local());
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_from_before_an_anchor_counts() {
        let stats = Stats::new(Duration::from_secs(30), Duration::from_secs(1));
        let slot = stats.slot("web", "canary");
        for _ in 0..20 {
            traffic(&stats, slot, 100, 200); // healthy history
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let mut ev = Evidence::new(&stats, &[slot], (0, 5));
        traffic(&stats, slot, 100, 200); // the start's own tick: mixed, left out
        let span = Duration::from_secs(30);
        assert_eq!(ev.window(&stats, slot, span, Since::Rollout).requests, 0);
        for second in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            traffic(&stats, slot, 10, 503);
            ev.update(&stats);
            let w = ev.window(&stats, slot, span, Since::Rollout);
            assert_eq!(
                (w.requests, w.status[4]),
                (10 * (second + 1), 10 * (second + 1)),
                "only failures since the start"
            );
        }
        assert_eq!(stats.recent(slot, Some(span)).requests, 20 * 100 + 100 + 50, "the plain window mixes them in");
        ev.weights_changed(&stats);
        traffic(&stats, slot, 7, 200);
        tokio::time::advance(Duration::from_secs(1)).await;
        traffic(&stats, slot, 3, 200);
        ev.update(&stats);
        assert_eq!(ev.window(&stats, slot, span, Since::Step).requests, 3, "the step starts after its change's tick");
        assert_eq!(ev.total(&stats, slot, Since::Step).requests, 3);
        let total = ev.total(&stats, slot, Since::Rollout);
        assert_eq!((total.requests, total.status[4]), (60, 50), "every tick since the start, once");
        // Totals outlive the window.
        for _ in 0..40 {
            tokio::time::advance(Duration::from_secs(1)).await;
            traffic(&stats, slot, 1, 200);
            ev.update(&stats);
        }
        assert_eq!(ev.total(&stats, slot, Since::Rollout).requests, 100);
        assert_eq!(ev.window(&stats, slot, span, Since::Rollout).requests, 30);
    }
}
