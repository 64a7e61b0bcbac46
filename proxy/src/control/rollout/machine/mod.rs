//! The rollout state machine: pure, driven by elapsed time and verdicts.
//!
//! # Lifecycle
//!
//! ```text
//!            start                 hold elapsed + Pass               last step passed
//! canary:  ────────▶ step 0 ──────────────────────────▶ step 1 … ─────────────────────▶ Promoted
//!                      │  Breach (any time) / Fail at end of hold                           ▲
//!                      └──────────────────────────────▶ RolledBack        promote --full ───┘
//!          `pause` step: waits for promote.  Inconclusive past the progress deadline: Paused.
//!
//!              start              Pass (auto_switch) or promote          post_switch_window ok
//! blue-green: ───────▶ preview ─────────────────────────────────▶ switched ─────────────────▶ Promoted
//!                        (weight 0: only the preview rule reaches it)   │ Breach / Fail
//!                                                                       └──▶ RolledBack (switch back)
//! ```
//!
//! Any time: `pause` freezes progress (breaches still roll back), `resume`
//! continues, `abort` / `rollback` return all traffic to the baseline. The
//! machine returns an [`Decision`]; the controller applies it and persists the
//! state, so progress (the time spent in the step included) survives a restart.

pub mod rolling;

use super::analysis::Judgement;
use crate::config::rollout::{RolloutPlan, Step, Strategy};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Moving (or holding) on its own.
    Running,
    /// Waiting for a person.
    Paused,
    /// The candidate has all traffic; done.
    Promoted,
    /// All traffic back on the baseline after a failure; done.
    RolledBack,
    /// Stopped by a person, traffic back on the baseline; done.
    Aborted,
}

impl Status {
    /// Its name in the API: `running`, `paused`, `promoted`, `rolled-back`, `aborted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Promoted => "promoted",
            Status::RolledBack => "rolled-back",
            Status::Aborted => "aborted",
        }
    }
}

/// A decision (DESIGN's word): what the controller does after a tick or a
/// command. Analysis gives a [`Judgement`]; the machine turns it, with the
/// plan and the clock, into a decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Nothing changes.
    Hold,
    /// Put `percent` % on the candidate, the rest on the baseline.
    SetWeight(u32),
    /// Everything on the candidate.
    Promote,
    /// Everything back on the baseline.
    Rollback(String),
    /// Stop and wait for a person.
    Pause(String),
    /// A rolling update: the pool's endpoints become [`Rollout::endpoints_now`].
    SetEndpoints,
}

/// One decision as the rollout's history records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// When (RFC 3339).
    pub time: String,
    /// The step then.
    pub step: usize,
    /// What was decided: `hold`, `set-weights N`, `promote`, `rollback`, `pause`, ...
    pub decision: String,
    /// Why, with the figures it was based on.
    pub why: String,
}

/// A manual command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Pass the current step or gate (`full`: straight to 100 %).
    Promote {
        /// Skip to 100 %.
        full: bool,
    },
    /// Freeze progress.
    Pause,
    /// Continue after a pause.
    Resume,
    /// Stop; all traffic back on the baseline (`aborted`).
    Abort,
    /// Stop; all traffic back on the baseline (`rolled-back`).
    Rollback,
}

impl Command {
    /// Its name in a rollout's decisions: `promote`, `promote (full)`, `pause`, ...
    pub fn label(self) -> &'static str {
        match self {
            Command::Promote { full: false } => "promote",
            Command::Promote { full: true } => "promote (full)",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Abort => "abort",
            Command::Rollback => "rollback",
        }
    }
}

/// A rollout's progress.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The service.
    pub service: String,
    /// The plan.
    pub plan: RolloutPlan,
    /// Where it stands.
    pub status: Status,
    /// Canary: the step index. Blue-green: 0 before the switch, 1 after.
    pub step: usize,
    /// Time spent in the current step while running, milliseconds.
    pub in_step_ms: u64,
    /// Time the end-of-step judgement has been inconclusive, milliseconds.
    pub inconclusive_ms: u64,
    /// Percent on the candidate now.
    pub weight: u32,
    /// Why it ended or paused.
    pub reason: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// The latest decisions, oldest first.
    pub decisions: VecDeque<DecisionRecord>,
    /// Consecutive ticks the policy plugin faulted.
    #[serde(default)]
    pub policy_faults: u32,
    /// Blue-green: the baseline's window figures just before the switch,
    /// for a policy to compare the new active pool with.
    #[serde(default)]
    pub pre_switch: Option<crate::stats::Figures>,
    /// After a rollback: the rules (by index) it suspended; `None` before.
    #[serde(default)]
    pub suspended_rules: Option<Vec<usize>>,
    /// A rolling update's batches and where the current one stands.
    #[serde(default)]
    pub rolling: Option<rolling::RollingState>,
}

/// Decisions kept per rollout.
const KEEP: usize = 50;

// === impl Rollout ===

impl Rollout {
    /// A new rollout and the decision that starts it.
    pub fn start(service: &str, plan: RolloutPlan) -> (Self, Decision) {
        let mut r = Rollout {
            service: service.into(),
            plan,
            status: Status::Running,
            step: 0,
            in_step_ms: 0,
            inconclusive_ms: 0,
            weight: 0,
            reason: None,
            started: now(),
            decisions: VecDeque::new(),
            policy_faults: 0,
            pre_switch: None,
            suspended_rules: None,
            rolling: None,
        };
        let decision = match r.plan.strategy {
            Strategy::BlueGreen => Decision::SetWeight(0),
            Strategy::Canary => r.enter_step(),
            Strategy::Rolling => Decision::Hold, // its batches start with `begin_rolling`
        };
        r.apply(&decision);
        (r, decision)
    }

    /// Whether it has ended.
    pub fn is_done(&self) -> bool {
        matches!(self.status, Status::Promoted | Status::RolledBack | Status::Aborted)
    }

    /// One analysis tick: `elapsed_ms` since the last tick, and the judgement.
    pub fn tick(&mut self, elapsed_ms: u64, judgement: &Judgement) -> Decision {
        if self.is_done() {
            return Decision::Hold;
        }
        let now = match judgement {
            Judgement::Breach(why) => Some(format!("rollback_when breached: {why}")),
            Judgement::Rollback(why) => Some(why.clone()),
            _ => None,
        };
        if let Some(why) = now {
            let decision = Decision::Rollback(why);
            self.apply(&decision);
            return decision;
        }
        if self.status == Status::Paused {
            return Decision::Hold;
        }
        let decision = match self.plan.strategy {
            Strategy::Canary => self.tick_canary(elapsed_ms, judgement),
            Strategy::BlueGreen => self.tick_blue_green(elapsed_ms, judgement),
            Strategy::Rolling => self.tick_rolling(elapsed_ms, judgement),
        };
        self.apply(&decision);
        decision
    }

    fn tick_canary(&mut self, elapsed_ms: u64, judgement: &Judgement) -> Decision {
        let hold = match self.plan.steps.get(self.step) {
            Some(Step::Weight { hold, .. } | Step::Mirror { hold, .. }) => *hold,
            _ => return Decision::Hold, // a `pause` step waits for promote
        };
        self.in_step_ms += elapsed_ms;
        if self.in_step_ms < hold.as_millis() as u64 {
            return Decision::Hold;
        }
        match judgement {
            Judgement::Pass(_) => self.advance(),
            Judgement::Fail(why) => Decision::Rollback(format!("step {} failed analysis: {why}", self.step + 1)),
            Judgement::Inconclusive(_) | Judgement::Breach(_) | Judgement::Rollback(_) => self.inconclusive(elapsed_ms),
        }
    }

    fn tick_blue_green(&mut self, elapsed_ms: u64, judgement: &Judgement) -> Decision {
        self.in_step_ms += elapsed_ms;
        if self.step == 0 {
            return match judgement {
                Judgement::Pass(_) if self.plan.auto_switch => self.switch(),
                Judgement::Inconclusive(_) if self.plan.auto_switch => self.inconclusive(elapsed_ms),
                _ => Decision::Hold,
            };
        }
        match judgement {
            Judgement::Fail(why) => Decision::Rollback(format!("switched back: {why}")),
            _ if self.in_step_ms >= self.plan.post_switch_window.as_millis() as u64 => Decision::Promote,
            _ => Decision::Hold,
        }
    }

    pub(super) fn inconclusive(&mut self, elapsed_ms: u64) -> Decision {
        self.inconclusive_ms += elapsed_ms;
        match self.plan.progress_deadline {
            Some(d) if self.inconclusive_ms >= d.as_millis() as u64 => {
                Decision::Pause(format!("inconclusive for {} s (progress deadline)", self.inconclusive_ms / 1000))
            }
            _ => Decision::Hold,
        }
    }

    /// Canary: a policy's `set-weights` — the candidate at `percent` within
    /// the current step (the next step's weight replaces it).
    pub fn set_weight(&mut self, percent: u32) -> Decision {
        let canary = self.plan.strategy == Strategy::Canary;
        if self.status != Status::Running || !canary || percent.min(100) == self.weight {
            return Decision::Hold;
        }
        let decision = Decision::SetWeight(percent.min(100));
        self.apply(&decision);
        decision
    }

    /// Passes the current step or gate (`full`: straight to 100 %).
    pub fn promote(&mut self, full: bool) -> Decision {
        if self.is_done() {
            return Decision::Hold;
        }
        self.status = Status::Running;
        self.reason = None;
        let decision = match self.plan.strategy {
            Strategy::Canary if full => Decision::Promote,
            Strategy::Canary => self.advance(),
            Strategy::BlueGreen if self.step == 0 && !full => self.switch(),
            Strategy::BlueGreen | Strategy::Rolling if full => Decision::Promote,
            Strategy::BlueGreen => Decision::Promote,
            Strategy::Rolling => self.promote_rolling(),
        };
        self.apply(&decision);
        decision
    }

    /// Freezes progress; breaches still roll back.
    pub fn pause(&mut self, why: &str) -> Decision {
        if self.is_done() {
            return Decision::Hold;
        }
        let decision = Decision::Pause(why.into());
        self.apply(&decision);
        decision
    }

    /// Continues after a pause.
    pub fn resume(&mut self) {
        if self.status == Status::Paused {
            self.status = Status::Running;
            self.reason = None;
            self.inconclusive_ms = 0;
        }
    }

    /// Ends it, all traffic back on the baseline: `aborted` by a person, or
    /// `rolled back` with a reason.
    pub fn stop(&mut self, abort: bool, why: &str) -> Decision {
        if self.is_done() {
            return Decision::Hold;
        }
        let decision = Decision::Rollback(why.into());
        self.apply(&decision);
        if abort {
            self.status = Status::Aborted;
        }
        decision
    }

    /// The next step: its weight, or completion.
    fn advance(&mut self) -> Decision {
        self.step += 1;
        self.in_step_ms = 0;
        self.inconclusive_ms = 0;
        if self.step >= self.plan.steps.len() {
            Decision::Promote
        } else {
            self.enter_step()
        }
    }

    fn enter_step(&self) -> Decision {
        match self.plan.steps.get(self.step) {
            Some(Step::Weight { weight, .. }) => Decision::SetWeight(*weight),
            // The candidate answers no client while it is mirrored to.
            Some(Step::Mirror { .. }) => Decision::SetWeight(0),
            _ => Decision::Hold,
        }
    }

    /// The percent of the baseline's requests copied to the candidate now:
    /// `Some` while the rollout stands (running or paused) at a mirror step.
    pub fn mirroring(&self) -> Option<f64> {
        match (self.status, self.plan.steps.get(self.step)) {
            (Status::Running | Status::Paused, Some(Step::Mirror { percent, .. })) => Some(*percent),
            _ => None,
        }
    }

    fn switch(&mut self) -> Decision {
        self.step = 1;
        self.in_step_ms = 0;
        self.inconclusive_ms = 0;
        Decision::SetWeight(100)
    }

    /// Updates status and weight for an decision.
    fn apply(&mut self, decision: &Decision) {
        match decision {
            Decision::Hold => {}
            Decision::SetWeight(w) => self.weight = *w,
            Decision::Promote => {
                self.weight = 100;
                self.status = Status::Promoted;
                self.step = self.steps_total().max(self.step);
            }
            Decision::SetEndpoints => self.weight = self.rolling_weight(),
            Decision::Rollback(why) => {
                self.weight = 0;
                self.status = Status::RolledBack;
                self.reason = Some(why.clone());
            }
            Decision::Pause(why) => {
                self.status = Status::Paused;
                self.reason = Some(why.clone());
            }
        }
    }

    /// Records a decision, keeping the latest [`KEEP`].
    pub fn record(&mut self, decision: String, why: String) {
        self.decisions.push_back(DecisionRecord { time: now(), step: self.step, decision, why });
        while self.decisions.len() > KEEP {
            self.decisions.pop_front();
        }
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_plan, Config};
    use crate::control::rollout::analysis::{judge, Observed, Pair};
    use crate::stats::Figures;

    const DESIGN_ROLLOUT: &str = r#"
      strategy: canary
      baseline: stable
      candidate: canary
      steps:
        - { weight: 5,  hold: 15m }
        - { weight: 25, hold: 30m }
        - pause: {}
        - { weight: 50, hold: 60m }
      analysis:
        interval: 1s
        window: 30s
        min_requests: 200
        success: { max_error_rate: 0.001, max_p99: 2s }
        rollback_when: { error_rate_above: 0.01, p99_above: 5s }
"#;

    fn plan(extra: &str) -> RolloutPlan {
        parse_plan(&format!("{DESIGN_ROLLOUT}{extra}"), &["canary".into(), "stable".into()]).unwrap()
    }

    fn fig(requests: u64, fives: u64) -> Figures {
        let mut f = Figures { requests, p99_us: 100_000, ..Default::default() };
        f.status[1] = requests - fives;
        f.status[4] = fives;
        f
    }

    /// Runs `secs` one-second ticks with these candidate figures; returns the decisions that did something.
    fn run(r: &mut Rollout, secs: u64, candidate: &Figures) -> Vec<Decision> {
        let pair = Pair { candidate: candidate.clone(), baseline: fig(10_000, 0) };
        let seen = Observed { since_rollout: pair.clone(), since_step: pair, ..Default::default() };
        (0..secs).map(|_| r.tick(1000, &judge(&r.plan.analysis, &seen))).filter(|a| *a != Decision::Hold).collect()
    }

    #[test]
    fn the_design_example_validates_in_a_config() {
        let yaml = format!(
            "listeners: [{{ name: l, bind: \"127.0.0.1:0\" }}]\nservices:\n  - name: checkout\n    pools:\n      \
             stable: {{ endpoints: [\"127.0.0.1:1\"] }}\n      canary: {{ endpoints: [\"127.0.0.1:2\"] }}\n    \
             split: {{ weights: {{ stable: 95, canary: 5 }} }}\n    rollout:{}",
            DESIGN_ROLLOUT
        );
        let c = Config::from_yaml(&yaml, std::path::Path::new(".")).unwrap();
        let p = c.services[0].rollout.as_ref().unwrap();
        assert_eq!(p.steps.len(), 4);
        assert_eq!(p.steps[2], Step::Pause);
        assert_eq!(p.analysis.min_requests, 200);
    }

    #[test]
    fn four_step_canary_with_an_hour_of_holds() {
        let (mut r, a) = Rollout::start("checkout", plan(""));
        assert_eq!(a, Decision::SetWeight(5));
        let healthy = fig(1000, 0);
        assert!(run(&mut r, 15 * 60 - 1, &healthy).is_empty(), "holds step 1 for 15 minutes");
        assert_eq!(run(&mut r, 1, &healthy), [Decision::SetWeight(25)]);
        assert_eq!(run(&mut r, 30 * 60, &healthy), [], "the gate after step 2 takes no decision by itself");
        assert_eq!((r.step, r.status), (2, Status::Running), "waiting at the pause step");
        assert!(run(&mut r, 3600, &healthy).is_empty(), "a gate waits for a person");
        assert_eq!(r.promote(false), Decision::SetWeight(50));
        assert!(run(&mut r, 60 * 60 - 1, &healthy).is_empty());
        assert_eq!(run(&mut r, 1, &healthy), [Decision::Promote]);
        assert_eq!((r.status, r.weight), (Status::Promoted, 100));
        assert!(run(&mut r, 10, &fig(1000, 500)).is_empty(), "a finished rollout does nothing");
    }

    #[test]
    fn a_breach_rolls_back_mid_step() {
        let (mut r, _) = Rollout::start("checkout", plan(""));
        run(&mut r, 60, &fig(1000, 0));
        let decisions = run(&mut r, 1, &fig(100, 5));
        assert!(
            matches!(&decisions[..], [Decision::Rollback(why)] if why.contains("error rate 5.00% above 1.00%")),
            "{decisions:?}"
        );
        assert_eq!((r.status, r.weight), (Status::RolledBack, 0));
    }

    #[test]
    fn failing_success_criteria_roll_back_at_the_end_of_the_hold() {
        let (mut r, _) = Rollout::start("checkout", plan(""));
        let meh = fig(1000, 5); // 0.5 %: above success, below rollback_when
        assert!(run(&mut r, 15 * 60 - 1, &meh).is_empty());
        assert!(matches!(&run(&mut r, 1, &meh)[..], [Decision::Rollback(why)] if why.contains("failed analysis")));
    }

    #[test]
    fn low_traffic_is_inconclusive_and_the_deadline_pauses() {
        let (mut r, _) = Rollout::start("checkout", plan("      progress_deadline: 10m\n"));
        let trickle = fig(20, 0);
        // The tick that completes the 15-minute hold is the first inconclusive one.
        assert!(
            run(&mut r, 15 * 60 + 10 * 60 - 2, &trickle).is_empty(),
            "holds while inconclusive, never fails for lack of data"
        );
        assert!(matches!(&run(&mut r, 1, &trickle)[..], [Decision::Pause(why)] if why.contains("progress deadline")));
        assert_eq!(r.status, Status::Paused);
        assert!(run(&mut r, 3600, &fig(1000, 0)).is_empty(), "paused: no progress");
        assert!(matches!(&run(&mut r, 1, &fig(100, 50))[..], [Decision::Rollback(_)]), "but a breach still rolls back");
    }

    #[test]
    fn pause_resume_promote_full_and_abort() {
        let (mut r, _) = Rollout::start("checkout", plan(""));
        assert!(matches!(r.pause("by ops"), Decision::Pause(_)));
        assert!(run(&mut r, 3600, &fig(1000, 0)).is_empty());
        r.resume();
        assert_eq!(r.in_step_ms, 0, "paused time does not count");
        assert_eq!(r.promote(true), Decision::Promote);
        assert_eq!(r.status, Status::Promoted);

        let (mut r, _) = Rollout::start("checkout", plan(""));
        assert!(matches!(r.stop(true, "aborted by ops"), Decision::Rollback(_)));
        assert_eq!((r.status, r.weight), (Status::Aborted, 0));
    }

    #[test]
    fn mirror_steps_hold_the_candidate_at_zero_and_then_hand_over_to_the_weights() {
        let plan = parse_plan(
            "steps: [{ mirror: { percent: 50, hold: 10s } }, { weight: 20, hold: 10s }]\n\
             analysis: { min_requests: 50, success: { max_error_rate: 0.01 } }\n",
            &["canary".into(), "stable".into()],
        )
        .unwrap();
        let (mut r, a) = Rollout::start("checkout", plan);
        assert_eq!((a, r.mirroring()), (Decision::SetWeight(0), Some(50.0)), "copies only: no user sees it");
        assert!(run(&mut r, 9, &fig(1000, 0)).is_empty(), "holds the mirror step");
        assert_eq!(run(&mut r, 1, &fig(1000, 0)), [Decision::SetWeight(20)]);
        assert_eq!(r.mirroring(), None, "the mirror ends when the candidate gets traffic");
        let (mut r, _) = Rollout::start("checkout", r.plan.clone());
        assert!(matches!(&run(&mut r, 10, &fig(1000, 50))[..], [Decision::Rollback(_)]), "judged on the copies");
        assert_eq!(r.mirroring(), None, "a rolled-back rollout mirrors nothing");
        let bad = "steps: [{ weight: 5, hold: 1s }, { mirror: { percent: 10 } }]\n";
        let e = parse_plan(bad, &["canary".into(), "stable".into()]).unwrap_err().to_string();
        assert!(e.contains("steps[1]") && e.contains("mirror steps come first"), "{e}");
    }

    #[test]
    fn blue_green_switch_and_switchback() {
        let bg = |extra: &str| {
            parse_plan(
                &format!("strategy: blue-green\nanalysis: {{ min_requests: 50, rollback_when: {{ error_rate_above: 0.05 }}, success: {{ max_error_rate: 0.01 }} }}\n{extra}"),
                &["blue".into(), "green".into()],
            )
            .unwrap()
        };
        let (mut r, a) = Rollout::start("web", bg("auto_switch: true\npost_switch_window: 60s\n"));
        assert_eq!(a, Decision::SetWeight(0), "the preview gets no weighted traffic");
        assert!(run(&mut r, 5, &fig(10, 0)).is_empty(), "preview traffic too thin to switch");
        assert_eq!(run(&mut r, 1, &fig(100, 0)), [Decision::SetWeight(100)], "switch: all at once");
        assert!(
            matches!(&run(&mut r, 1, &fig(200, 20))[..], [Decision::Rollback(w)] if w.contains("error rate")),
            "switch back"
        );
        assert_eq!(r.weight, 0);

        let (mut r, _) = Rollout::start("web", bg("post_switch_window: 60s\n"));
        assert!(run(&mut r, 60, &fig(1000, 0)).is_empty(), "without auto_switch it waits for promote");
        assert_eq!(r.promote(false), Decision::SetWeight(100));
        assert!(run(&mut r, 59, &fig(1000, 0)).is_empty());
        assert_eq!(run(&mut r, 1, &fig(1000, 0)), [Decision::Promote], "watched for the window, then done");
    }
}
