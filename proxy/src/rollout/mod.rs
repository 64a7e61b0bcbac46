//! Rollouts: a managed move of traffic from a baseline pool to a candidate,
//! step by step (canary) or all at once (blue-green), judged every analysis
//! interval from the pools' windows.
//!
//! - [`machine`]: the state machine (pure; its lifecycle note is there);
//! - [`analysis`]: the built-in judgement (thresholds, relative to baseline);
//! - [`evidence`]: what analysis may judge — windows and totals that start
//!   no earlier than the rollout and its current weights;
//!
//! These are pure: the controller that runs them — one task per active
//! rollout, reading the windows, ticking the machine, applying its actions,
//! persisting progress, asking policy plugins and notifying webhooks — is
//! part of the control path ([`crate::control`]).

pub mod analysis;
pub mod evidence;
pub mod machine;

pub use analysis::{judge, Verdict};
pub use machine::{Action, Rollout, Status};
