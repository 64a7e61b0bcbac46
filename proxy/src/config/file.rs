//! The serde mirror of the YAML file: exactly what users write, nothing
//! validated yet beyond types. Unknown fields are errors everywhere.
//!
//! Values that later validation must point at are wrapped in [`Spanned`] so an
//! error can name their line.

use super::units::{ByteSize, Dur};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub environment: Option<Spanned<String>>,
    pub listeners: Spanned<Vec<FileListener>>,
    #[serde(default)]
    pub server: FileServer,
    pub services: Spanned<Vec<FileService>>,
    pub admin: Option<FileAdmin>,
    pub state: Option<FileState>,
    pub stats: Option<FileStats>,
    pub flags: Option<FileFlags>,
    #[serde(default)]
    pub plugins: Vec<FilePlugin>,
    pub webhooks: Option<FileWebhooks>,
}

/// How rollouts' webhooks are delivered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWebhooks {
    /// The CA that `https://` receivers' certificates must chain to (default: the system's roots).
    pub ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePlugin {
    pub name: Spanned<String>,
    pub path: Option<Spanned<String>>,
    pub config: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFlags {
    pub file: Spanned<String>,
    #[serde(default)]
    pub context: BTreeMap<String, Spanned<FileAttr>>,
    #[serde(default)]
    pub bucketing: crate::flags::Bucketing,
}

/// Where an evaluation-context attribute comes from: exactly one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAttr {
    pub header: Option<String>,
    pub cookie: Option<String>,
    /// `path`, `method` or `client_address`.
    pub request: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAdmin {
    pub bind: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileState {
    pub dir: Option<String>,
    pub etcd: Option<Spanned<FileEtcd>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEtcd {
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub replica: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub user: Option<String>,
    pub password_file: Option<String>,
    pub lease_ttl: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStats {
    pub window: Option<Dur>,
    pub resolution: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    pub tls: Option<FileTls>,
    pub max_connections: Option<usize>,
    /// Trust `X-Forwarded-*` headers from clients (only behind a trusted hop).
    #[serde(default)]
    pub trust_forwarded: bool,
    /// Also set an RFC 7239 `Forwarded` header.
    #[serde(default)]
    pub set_forwarded: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    #[serde(default)]
    pub sni: Vec<FileSniCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSniCert {
    pub names: Spanned<Vec<String>>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// Process-wide limits and timeouts; every field has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileServer {
    pub header_read_timeout: Option<Dur>,
    pub body_idle_timeout: Option<Dur>,
    pub write_idle_timeout: Option<Dur>,
    pub tls_handshake_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub max_header_bytes: Option<Spanned<ByteSize>>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_uri_bytes: Option<Spanned<ByteSize>>,
    pub max_plugin_size: Option<Spanned<ByteSize>>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_max_control_frames_per_second: Option<Spanned<u32>>,
    pub workers: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileService {
    pub name: Spanned<String>,
    #[serde(rename = "match", default)]
    pub matcher: FileMatch,
    pub pools: Spanned<BTreeMap<String, FilePool>>,
    pub split: Option<FileSplit>,
    pub timeout: Option<Dur>,
    pub connect_timeout: Option<Dur>,
    pub max_request_body: Option<ByteSize>,
    /// Add `x-switchyard-pool` to responses.
    #[serde(default)]
    pub expose_pool: bool,
    pub strict_paths: Option<bool>,
    pub rollout: Option<Spanned<FileRollout>>,
}

/// A rollout plan (also the body of `POST /v1/services/{svc}/rollout`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRollout {
    pub strategy: Option<String>,
    pub baseline: Option<String>,
    pub candidate: Option<String>,
    #[serde(default)]
    pub steps: Vec<FileStep>,
    pub analysis: Option<FileAnalysis>,
    pub progress_deadline: Option<Dur>,
    pub auto_switch: Option<bool>,
    pub post_switch_window: Option<Dur>,
    #[serde(default)]
    pub webhooks: Vec<String>,
    pub pool: Option<String>,
    pub endpoints: Option<Vec<String>>,
    pub max_surge: Option<FileCount>,
    pub max_unavailable: Option<FileCount>,
    pub readiness: Option<FileReadiness>,
    pub hold: Option<Dur>,
    pub release: Option<super::Release>,
}

/// A count of endpoints: `2`, or a share of the new set: `"25%"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum FileCount {
    Count(u32),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileReadiness {
    pub path: Option<String>,
    pub period: Option<Dur>,
    pub timeout: Option<Dur>,
    pub success_threshold: Option<u32>,
    pub deadline: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStep {
    pub weight: Option<u32>,
    pub hold: Option<Dur>,
    pub pause: Option<FilePause>,
    pub mirror: Option<FileMirrorStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMirrorStep {
    pub percent: Option<f64>,
    pub hold: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePause {}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAnalysis {
    pub interval: Option<Dur>,
    pub window: Option<Dur>,
    pub min_requests: Option<u64>,
    pub method: Option<String>,
    pub alpha: Option<f64>,
    #[serde(default)]
    pub success: FileSuccess,
    #[serde(default)]
    pub rollback_when: FileRollbackWhen,
    pub policy: Option<FilePolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePolicy {
    pub plugin: Spanned<String>,
    pub config: Option<serde_json::Value>,
    pub max_faults: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSuccess {
    pub max_error_rate: Option<f64>,
    pub max_p99: Option<Dur>,
    pub max_error_rate_vs_baseline: Option<f64>,
    pub max_p99_vs_baseline: Option<f64>,
    pub max_mirror_mismatch: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRollbackWhen {
    pub error_rate_above: Option<f64>,
    pub p99_above: Option<Dur>,
    pub error_rate_vs_baseline_above: Option<f64>,
    pub p99_vs_baseline_above: Option<f64>,
    pub mirror_mismatch_above: Option<f64>,
    pub min_requests: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMatch {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePool {
    pub endpoints: Spanned<Vec<Spanned<String>>>,
    pub version: Option<Spanned<String>>,
    pub commit: Option<Spanned<String>>,
    pub build_url: Option<Spanned<String>>,
    pub commit_time: Option<Spanned<String>>,
    pub lb: Option<LbKind>,
    pub health_check: Option<FileHealthCheck>,
    pub outlier: Option<FileOutlier>,
    pub protocol: Option<Protocol>,
    pub tls: Option<Spanned<FileUpstreamTls>>,
}

/// How a pool's endpoints are spoken to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1, a connection per request in flight (pooled).
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`): one connection per endpoint, multiplexed.
    H2,
    /// HTTP/2 without TLS, by prior knowledge.
    H2c,
}

/// TLS to a pool's endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileUpstreamTls {
    pub ca: Option<Spanned<String>>,
    pub server_name: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// Load-balancing algorithm within a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbKind {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The endpoint with fewer requests in flight, of two picked at random.
    LeastRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHealthCheck {
    pub path: Spanned<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileOutlier {
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<Dur>,
    pub max_ejection: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSplit {
    pub sticky: Option<Spanned<FileSticky>>,
    #[serde(default)]
    pub rules: Vec<FileRule>,
    pub weights: Option<Spanned<BTreeMap<String, u32>>>,
    pub mirror: Option<Spanned<FileMirror>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMirror {
    pub pool: Spanned<String>,
    pub percent: Option<Spanned<f64>>,
    pub methods: Option<Spanned<Vec<String>>>,
    #[serde(rename = "match", default)]
    pub matcher: FileMirrorMatch,
    pub max_body: Option<ByteSize>,
    pub queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMirrorMatch {
    #[serde(default)]
    pub header: BTreeMap<String, String>,
    #[serde(default)]
    pub cookie: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSticky {
    pub cookie: Option<String>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRule {
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<FileRuleMatch>>,
    pub pool: Option<Spanned<String>>,
    pub plugin: Option<Spanned<String>>,
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub cookies: Vec<String>,
    #[serde(default)]
    pub keep_on_rollback: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRuleMatch {
    #[serde(default)]
    pub header: BTreeMap<String, String>,
    #[serde(default)]
    pub cookie: BTreeMap<String, String>,
    pub flag: Option<String>,
    pub variant: Option<String>,
}
