//! Rollouts: a managed move of traffic from a baseline pool to a candidate,
//! step by step (canary) or all at once (blue-green), judged every analysis
//! interval from the pools' windows.
//!
//! - [`machine`]: the state machine (pure; its lifecycle note is there);
//! - [`analysis`]: the built-in judgement (thresholds, relative to baseline);
//! - [`evidence`]: what analysis may judge — windows and totals that start
//!   no earlier than the rollout and its current weights;
//! - `policy`: asking a policy plugin (its input, checking its answer);
//! - [`controller`]: one task per active rollout on the control path: it
//!   reads the windows, ticks the machine, applies its actions through
//!   [`crate::control::Control`], persists progress and notifies webhooks.

pub mod analysis;
pub mod controller;
pub mod evidence;
pub mod machine;
mod notify;
mod policy;

pub use analysis::{judge, Verdict};
pub use machine::{Action, Rollout, Status};
