//! Rollouts: a managed move of traffic from a baseline pool to a candidate,
//! step by step (canary) or all at once (blue-green), or of one pool from
//! its endpoints to new ones a batch at a time (rolling), judged every
//! analysis interval from the windows.
//!
//! The pure parts, which read nothing and write nothing:
//! - [`machine`]: the state machine (its lifecycle note is there), with
//!   [`machine::rolling`]: a rolling update's batches;
//! - [`analysis`]: the built-in judgement (thresholds, relative to baseline);
//! - [`evidence`]: what analysis may judge — windows and totals that start
//!   no earlier than the rollout and its current weights.
//!
//! What runs them, as [`Control`](crate::control::Control)'s methods:
//! - `commands`: start, manual commands (in a fleet, on any replica),
//!   loading stored rollouts and starting their controllers where they run;
//! - [`controller`]: one task per active rollout that reads the windows,
//!   ticks the machine and applies its decisions through the control path
//!   (in a fleet: on the leader only, its writes fenced);
//! - `policy`: asking a policy plugin for the verdict instead;
//! - `notify`: webhooks;
//! - [`ended`]: what a rollout's end records for the deployment report.

pub mod analysis;
mod commands;
pub mod controller;
pub mod ended;
pub mod evidence;
pub mod machine;
mod notify;
mod policy;
mod replace;
pub mod tally;

pub use analysis::{judge, Judgement};
pub use machine::{Command, Decision, Rollout, Status};

/// A rollout as this replica holds it, shared by its controller (on the
/// replica that runs it) and manual commands.
pub type Handle = std::sync::Arc<tokio::sync::Mutex<Tracked>>;

/// A rollout and its row as last stored.
#[derive(Debug)]
pub struct Tracked {
    /// Its state now (progress since the last write included).
    pub rollout: Rollout,
    /// Its row as last read or written here: what the next write must find
    /// stored (so a write made elsewhere meanwhile is never overwritten).
    pub stored: Option<String>,
    /// Its controller runs on this replica.
    pub driven: bool,
}

impl Tracked {
    /// The row of its rollout as it is now.
    pub fn row(&self) -> Result<String, crate::control::ControlError> {
        serde_json::to_string(&self.rollout)
            .map_err(|e| crate::control::ControlError::Internal(format!("a rollout's row: {e}")))
    }

    /// What a write of it requires: the row it was read from still stored,
    /// and for the controller (`leader`) this replica still leading.
    pub fn guard(&self, leader: bool) -> crate::control::state::Guard {
        crate::control::state::Guard { leader, rollout: Some((self.service.clone(), self.stored.clone())) }
    }

    /// After a decision's write (`row` stored with event `ev`): the row is
    /// the one to guard the next write with; a rollout that ended records
    /// its end (under the row just written); webhooks hear of it.
    fn written(
        &mut self,
        ctrl: &crate::control::Control,
        row: String,
        ev: &crate::control::state::Event,
        actor: &str,
        leader: bool,
    ) {
        self.stored = Some(row);
        if self.is_done() {
            ended::record(ctrl, self, actor, &ev.time, &self.guard(leader));
        }
        notify::send(&self.plan.webhooks, ev, ctrl.webhook_ca().as_deref());
    }
}

impl std::ops::Deref for Tracked {
    type Target = Rollout;
    fn deref(&self) -> &Rollout {
        &self.rollout
    }
}

impl std::ops::DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut Rollout {
        &mut self.rollout
    }
}
