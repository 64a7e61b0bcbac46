//! Rollouts: a managed move of traffic from a baseline pool to a candidate,
//! step by step (canary) or all at once (blue-green), judged every analysis
//! interval from the pools' windows.
//!
//! The pure parts, which read nothing and write nothing:
//! - [`machine`]: the state machine (its lifecycle note is there);
//! - [`analysis`]: the built-in judgement (thresholds, relative to baseline);
//! - [`evidence`]: what analysis may judge — windows and totals that start
//!   no earlier than the rollout and its current weights.
//!
//! What runs them, as [`Control`](crate::control::Control)'s methods:
//! - [`controller`]: start, manual commands, resume, and one task per active
//!   rollout that reads the windows, ticks the machine and applies its
//!   decisions through the control path;
//! - `policy`: asking a policy plugin for the verdict instead;
//! - `notify`: webhooks.

pub mod analysis;
pub mod controller;
pub mod evidence;
pub mod machine;
mod notify;
mod policy;

pub use analysis::{judge, Judgement};
pub use machine::{Command, Decision, Rollout, Status};

/// A running rollout: its state, shared by its task and manual commands.
pub type Handle = std::sync::Arc<tokio::sync::Mutex<Rollout>>;
