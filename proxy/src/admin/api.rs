//! JSON wire types of the admin API, shared by the server and `switchyard ctl`.
//! The OpenAPI description (`proxy/openapi.yaml`) documents the same shapes.

use serde::{Deserialize, Serialize};

pub use crate::control::state::{FleetView, ReplicaView};
use std::collections::BTreeMap;

/// An error answer: `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// One service.
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceView {
    /// Name.
    pub name: String,
    /// Host match (`*.x` for wildcards), if any.
    pub host: Option<String>,
    /// Path prefix.
    pub path_prefix: String,
    /// Where the weights in force come from: `config` or `api`.
    pub weights_source: String,
    /// Sticky key, e.g. `cookie:session`.
    pub sticky: Option<String>,
    /// Rules in order, e.g. `header x-canary=always → canary`.
    pub rules: Vec<String>,
    /// Rolled-back pools: rules to them are suspended until the next rollout
    /// starts or an operator lifts it (`DELETE .../suspension`).
    #[serde(default)]
    pub suspended_pools: Vec<String>,
    /// The suspended rules, numbered from 1 as in `rules`, with their text.
    #[serde(default)]
    pub suspended_rules: Vec<SuspendedRule>,
    /// Pools in name order.
    pub pools: Vec<PoolView>,
    /// Where copies of requests go, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorView>,
    /// The latest rollout's status (`running`, `paused`, `promoted`,
    /// `rolled-back`, `aborted`); `null` when the service has had none.
    #[serde(default)]
    pub rollout: Option<String>,
}

/// A service's mirror.
#[derive(Debug, Serialize, Deserialize)]
pub struct MirrorView {
    /// The pool that gets the copies.
    pub pool: String,
    /// Percent of the eligible requests copied.
    pub percent: f64,
    /// Methods copied.
    pub methods: Vec<String>,
    /// `config`, or `rollout` while a rollout's mirror step sets it.
    pub source: String,
}

/// A rule suspended by a rollback.
#[derive(Debug, Serialize, Deserialize)]
pub struct SuspendedRule {
    /// Its number, from 1.
    pub rule: usize,
    /// What it matches, as in `rules`.
    pub text: String,
}

/// One pool.
#[derive(Debug, Serialize, Deserialize)]
pub struct PoolView {
    /// Name.
    pub name: String,
    /// Relative weight in force.
    pub weight: u32,
    /// Share of unkeyed, rule-less traffic, in percent.
    pub share_percent: f64,
    /// Endpoints.
    pub endpoints: Vec<EndpointView>,
    /// What it runs: `version`, `commit`, `build_url`, `commit_time` (each when known).
    #[serde(flatten)]
    pub release: crate::config::Release,
    /// Where its endpoints and release come from: `config` or `api`.
    #[serde(default)]
    pub source: String,
}

/// One endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct EndpointView {
    /// Address.
    pub address: String,
    /// Takes traffic (not ejected, active checks passing).
    pub healthy: bool,
}

/// A pool's figures over a span.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PoolStatsView {
    /// Requests.
    pub requests: u64,
    /// Responses by status class (`1xx`..`5xx`).
    pub status: BTreeMap<String, u64>,
    /// Proxy-side errors by class (`connect`, `timeout`, `reset`, `no_healthy_endpoint`).
    pub errors: BTreeMap<String, u64>,
    /// Failures the client caused (`payload_too_large`, `request_timeout`,
    /// `bad_body`, `client_closed`): not in `requests` or any figure above.
    #[serde(default)]
    pub client_errors: BTreeMap<String, u64>,
    /// A mirror pool's copies (`compared` with the primary's answer, of
    /// which `mismatched` in status class, and `dropped` unsent); absent
    /// for a pool that got none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<BTreeMap<String, u64>>,
    /// 5xx responses / requests.
    pub error_rate: f64,
    /// Latency to the response head, milliseconds.
    pub latency_ms: LatencyView,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LatencyView {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// `GET /v1/services/{svc}/stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsView {
    /// Service.
    pub service: String,
    /// Length of the window the figures cover, seconds.
    pub window_seconds: f64,
    /// Per pool, over the window.
    pub pools: BTreeMap<String, PoolStatsView>,
    /// Per pool, since the proxy started.
    pub lifetime: BTreeMap<String, PoolStatsView>,
}

/// One plugin (`GET /v1/plugins`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginView {
    /// Name.
    pub name: String,
    /// `router` or `policy`.
    pub kind: String,
    /// Hex SHA-256 of the component in force.
    pub sha256: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// A file path, or `admin API`.
    pub source: String,
    /// Calls since it was loaded (trial calls included).
    pub calls: u64,
    /// Faults since it was loaded.
    pub faults: u64,
    /// Faults by kind: `trap`, `deadline`, `memory`, `error`, `nonsense`.
    pub faults_by_kind: BTreeMap<String, u64>,
    /// Mean call time, µs.
    pub mean_us: f64,
    /// 99th percentile call time, µs.
    pub p99_us: f64,
    /// Fuel burned in calls (about one unit per WebAssembly instruction), faulted ones included.
    #[serde(default)]
    pub fuel: u64,
    /// The default configuration `init` gets (rules and policies may give their own).
    #[serde(default)]
    pub config: serde_json::Value,
}

/// A rollout, as `GET /v1/services/{svc}/rollout` and the start and command
/// answers show it: the stored progress and where it stands in its plan.
#[derive(Debug, Serialize, Deserialize)]
pub struct RolloutView {
    /// The service.
    pub service: String,
    /// The plan as started: strategy, baseline, candidate, steps, analysis.
    pub plan: serde_json::Value,
    /// `running`, `paused`, `promoted`, `rolled-back` or `aborted`.
    pub status: String,
    /// Canary: the step index. Blue-green: 0 before the switch, 1 after.
    pub step: usize,
    /// Steps in the plan (0 for blue-green).
    pub steps_total: usize,
    /// Time in the current step while running, milliseconds.
    pub in_step_ms: u64,
    /// The same, in seconds.
    pub time_in_step_seconds: f64,
    /// Time the end-of-step judgement has been inconclusive, milliseconds.
    pub inconclusive_ms: u64,
    /// The current step (`null` past the last).
    pub current_step: Option<StepView>,
    /// The next step, if any.
    pub next_step: Option<StepView>,
    /// Percent on the candidate now.
    pub weight: u32,
    /// Why it ended or paused.
    pub reason: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// The latest decisions, oldest first.
    pub decisions: Vec<DecisionView>,
    /// Consecutive ticks the policy plugin faulted.
    pub policy_faults: u32,
    /// Blue-green: the baseline's window figures just before the switch.
    pub pre_switch: Option<serde_json::Value>,
    /// After a rollback: the rules (by index) it suspended.
    pub suspended_rules: Option<Vec<usize>>,
}

/// One step of a plan, or a blue-green phase.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepView {
    /// Canary: percent on the candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Canary: the step's hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<f64>,
    /// A manual gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// Canary: a mirror step's percent of the baseline's requests copied to the candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_percent: Option<f64>,
    /// Rolling: the batch's new endpoints, admitted once ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admit: Vec<String>,
    /// Rolling: the batch's old endpoints drained (before and after its hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drain: Vec<String>,
    /// Blue-green: `preview` or `switched`; rolling: `readiness` (its new
    /// endpoints are probed) or `hold` (they serve, judged against the old).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Blue-green: how long the switched pool is watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_seconds: Option<f64>,
}

/// One decision of a rollout's history.
#[derive(Debug, Serialize, Deserialize)]
pub struct DecisionView {
    /// When (RFC 3339).
    pub time: String,
    /// The step then.
    pub step: usize,
    /// What was decided: `hold`, `set-weights N`, `promote`, `rollback`, `pause`, ...
    pub decision: String,
    /// Why, with the figures it was based on.
    pub why: String,
}

/// `GET /v1/whoami`: this proxy, and what the caller may do.
#[derive(Debug, Serialize, Deserialize)]
pub struct WhoAmIView {
    /// Switchyard's version.
    pub version: String,
    /// The configured `environment`, if any.
    pub environment: Option<String>,
    /// The name of the caller's token; `null` without one.
    pub token: Option<String>,
    /// Whether the caller's writes would be accepted.
    pub can_write: bool,
    /// Whether this proxy has tokens (writes need one).
    pub tokens_required: bool,
}
