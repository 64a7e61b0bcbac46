//! JSON wire types of the admin API, shared by the server and `switchyard ctl`.
//! The OpenAPI description (`proxy/openapi.yaml`) documents the same shapes.

use serde::{Deserialize, Serialize};
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
    /// The default configuration `init` gets (rules and policies may give their own).
    #[serde(default)]
    pub config: serde_json::Value,
}
