//! Configuration in two stages: the YAML file is read into the serde mirror in
//! [`file`] (unknown fields are errors), then validated into [`Config`], with
//! defaults filled and every error naming the field path and its line.
//!
//! `switchyard check`, start-up and (later) reload share [`Config::load`].

mod file;
pub mod rollout;
mod units;

pub use file::LbKind;

use crate::error::Error;
use file::*;
use http::{HeaderName, HeaderValue};
use serde_saphyr::{Location, Spanned};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Client-facing listeners.
    pub listeners: Vec<ListenerConfig>,
    /// Process-wide limits and timeouts.
    pub server: ServerConfig,
    /// Services in file order.
    pub services: Vec<ServiceConfig>,
    /// The admin API, when enabled.
    pub admin: Option<AdminConfig>,
    /// Where run-time state is kept (defaults to `switchyard-state` beside
    /// the config file when the admin API is enabled).
    pub state_dir: Option<PathBuf>,
    /// Statistics windows.
    pub stats: StatsConfig,
    /// Feature flags, when configured.
    pub flags: Option<FlagsConfig>,
    /// WebAssembly plugins by name, in file order.
    pub plugins: Vec<PluginConfig>,
}

/// A plugin named in the `plugins` section.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// The name rules and policies use.
    pub name: String,
    /// The component file; `None`: loaded through the admin API only.
    pub path: Option<PathBuf>,
    /// Its default configuration (JSON), passed to `init`.
    pub config: serde_json::Value,
}

/// A rule that asks a router plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginRule {
    /// The plugin's name.
    pub name: String,
    /// Configuration for this rule (the plugin's default when not given).
    pub config: Option<serde_json::Value>,
    /// Headers passed to the plugin, beyond those it asks for.
    pub headers: Vec<HeaderName>,
    /// Cookies passed to the plugin, beyond those it asks for.
    pub cookies: Vec<String>,
}

/// Feature flags: a flagd definition file and how requests become evaluation contexts.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagsConfig {
    /// The flagd-format JSON file, re-read when it changes.
    pub file: PathBuf,
    /// Evaluation-context attributes by name.
    pub context: Vec<(String, AttrSource)>,
}

/// Where an evaluation-context attribute comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrSource {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// The normalised path.
    Path,
    /// The method.
    Method,
    /// The client's IP address.
    ClientAddress,
}

/// The admin API listener.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Address to bind (loopback by default; elsewhere only with a token).
    pub bind: SocketAddr,
    /// Tokens read from `token_file`.
    pub tokens: Vec<AdminToken>,
}

/// One admin API token.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminToken {
    /// Its name: the actor recorded for its writes.
    pub name: String,
    /// The secret.
    pub token: String,
    /// Reads only: a write with it gets 403.
    pub read_only: bool,
}

/// Statistics windows.
#[derive(Clone, Debug, PartialEq)]
pub struct StatsConfig {
    /// Length of the sliding window.
    pub window: Duration,
    /// Its resolution (how often workers hand their recordings over).
    pub resolution: Duration,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self { window: Duration::from_secs(30), resolution: Duration::from_secs(1) }
    }
}

/// One listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in logs.
    pub name: String,
    /// Address to bind (port 0 picks a free port).
    pub bind: SocketAddr,
    /// TLS settings; plain TCP when absent.
    pub tls: Option<TlsConfig>,
    /// Connections accepted at once; further clients wait in the backlog.
    pub max_connections: usize,
    /// Keep client-supplied client-address headers (`X-Forwarded-*`,
    /// `Forwarded`, `X-Real-IP`; append to them) instead of replacing them.
    pub trust_forwarded: bool,
    /// Set an RFC 7239 `Forwarded` header too.
    pub set_forwarded: bool,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq)]
pub struct CertFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// TLS settings of a listener.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// Served when SNI names none of the `sni` certificates.
    pub default: CertFiles,
    /// More certificates, each chosen when SNI names one of its names (`*.x` wildcards allowed).
    pub sni: Vec<(Vec<String>, CertFiles)>,
}

/// Process-wide limits and timeouts (defaults from HARDENING.md).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Time a client has to send a whole request head; also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Longest pause inside a request or response body.
    pub body_idle_timeout: Duration,
    /// Longest time a write to a client may make no progress.
    pub write_idle_timeout: Duration,
    /// Time a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Longest request URI (414 beyond).
    pub max_uri_bytes: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Data-path worker threads (default: one per core).
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            write_idle_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            h2_max_concurrent_streams: 100,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// How a service is matched by host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// Any host ending in this suffix, which starts with a dot (`*.example.com` → `.example.com`).
    Wildcard(String),
}

/// One service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Host match; any host when absent.
    pub host: Option<HostMatch>,
    /// Path prefix, matched on whole segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    pub path_prefix: String,
    /// Pools in name order.
    pub pools: Vec<PoolConfig>,
    /// How requests are assigned to pools.
    pub split: SplitConfig,
    /// Time the upstream has to send its response head (504 beyond).
    pub timeout: Duration,
    /// Time to establish an upstream connection (502 beyond).
    pub connect_timeout: Duration,
    /// Largest request body accepted (413 beyond); unlimited when absent.
    pub max_request_body: Option<u64>,
    /// Add `x-switchyard-pool` to responses.
    pub expose_pool: bool,
    /// Refuse paths some upstreams decode differently (`..;`, overlong
    /// UTF-8, double-encoded dots), see [`crate::path::is_suspicious`].
    pub strict_paths: bool,
    /// The service's default rollout plan.
    pub rollout: Option<rollout::RolloutPlan>,
}

/// One pool of a service.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Pool name (`stable`, `canary`, ...).
    pub name: String,
    /// Upstream addresses.
    pub endpoints: Vec<SocketAddr>,
    /// Load-balancing algorithm.
    pub lb: LbKind,
    /// Active HTTP health checking, when configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health (outlier ejection).
    pub outlier: OutlierConfig,
}

/// Active HTTP health checking of a pool's endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheckConfig {
    /// Path requested with `GET`; any 2xx is healthy.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Consecutive successes that mark an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that mark a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// Passive health: eject an endpoint after consecutive failures.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive failures (connect errors, timeouts, resets, 502/503/504) that eject.
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each further ejection.
    pub base_ejection: Duration,
    /// Longest ejection time.
    pub max_ejection: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self { consecutive_failures: 5, base_ejection: Duration::from_secs(10), max_ejection: Duration::from_secs(300) }
    }
}

/// A split: rules in order, then weights (by sticky key when one is present).
#[derive(Clone, Debug, PartialEq)]
pub struct SplitConfig {
    /// What identifies a user for sticky assignment.
    pub sticky: Option<StickyKey>,
    /// Rules in order; the first match wins.
    pub rules: Vec<RuleConfig>,
    /// Relative weights, indexed like the service's pools.
    pub weights: Vec<u32>,
}

/// What identifies a user for sticky assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StickyKey {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this header.
    Header(HeaderName),
}

/// A rule: all its conditions must hold; then the request goes to `pool`.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleConfig {
    /// Headers that must have exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Cookies that must have exactly these values.
    pub cookies: Vec<(String, String)>,
    /// A flag that must resolve to `true` (or to the named variant).
    pub flag: Option<FlagCondition>,
    /// Index of the target pool in the service's pools (unused by plugin rules).
    pub pool: usize,
    /// A router plugin that chooses the pool (the rule has no conditions then).
    pub plugin: Option<PluginRule>,
    /// The rule keeps sending to its pool after that pool is rolled back (a
    /// rule for testers); by default a rollback suspends it.
    pub keep_on_rollback: bool,
}

/// A rule's flag condition.
#[derive(Clone, Debug, PartialEq)]
pub struct FlagCondition {
    /// The flag key.
    pub key: String,
    /// The variant that matches; `None`: the flag's value must be `true`.
    pub variant: Option<String>,
}

// === impl Config ===

impl Config {
    /// Reads and validates a config file. Relative paths inside it (TLS files)
    /// are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::ReadConfig { path: path.to_owned(), error })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, base)
    }

    /// Parses and validates YAML text; `base` resolves relative file paths.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Self, Error> {
        let mut err_path = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, FileConfig>(de).map_err(|e| {
                err_path = e.path().to_string();
                e.into_inner()
            })
        });
        let file = parsed.map_err(|e| {
            let at = match e.location() {
                Some(l) if l != Location::UNKNOWN => {
                    format!(" (line {}, column {})", l.line(), l.column())
                }
                _ => String::new(),
            };
            let path = match user_path(&err_path) {
                p if p.is_empty() || p == "." => String::new(),
                p => format!("{p}: "),
            };
            let msg = e.without_snippet().to_string();
            let msg = msg.lines().next().unwrap_or_default().trim();
            let at = if msg.contains(" at line ") { "" } else { at.as_str() };
            Error::Config(format!("config: {path}{msg}{at}"))
        })?;
        validate(file, base)
    }
}

/// The field path as the user wrote it: without the `value` steps that
/// `Spanned` wrappers add (`services.value[0]` → `services[0]`).
fn user_path(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('.') {
        if seg == "value" {
            continue;
        }
        match seg.strip_prefix("value[") {
            Some(rest) => {
                out.push('[');
                out.push_str(rest);
            }
            None => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(seg);
            }
        }
    }
    out
}

/// Parses a rollout plan sent through the API (JSON, or YAML) for a service with `pools`.
pub fn parse_plan(text: &str, pools: &[String]) -> Result<rollout::RolloutPlan, Error> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let file: FileRollout = serde_saphyr::from_str(text).map_err(|e| {
        Error::Config(format!("rollout: {}", e.without_snippet().to_string().lines().next().unwrap_or("")))
    })?;
    rollout::validate(file, pools, "rollout", &Location::UNKNOWN)
}

pub(crate) fn fail(path: impl Display, at: &Location, msg: impl Display) -> Error {
    if *at == Location::UNKNOWN {
        Error::Config(format!("config: {path}: {msg}"))
    } else {
        Error::Config(format!("config: {path} (line {}): {msg}", at.line()))
    }
}

fn validate(file: FileConfig, base: &Path) -> Result<Config, Error> {
    let server = validate_server(file.server)?;
    if file.listeners.value.is_empty() {
        return Err(fail("listeners", &file.listeners.referenced, "at least one listener is required"));
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in file.listeners.value.into_iter().enumerate() {
        let p = format!("listeners[{i}]");
        if !names.insert(l.name.value.clone()) {
            return Err(fail(
                format!("{p}.name"),
                &l.name.referenced,
                format!("duplicate listener name `{}`", l.name.value),
            ));
        }
        let bind = resolve(&l.bind.value).map_err(|m| fail(format!("{p}.bind"), &l.bind.referenced, m))?;
        let tls = match l.tls {
            None => None,
            Some(t) => Some(validate_tls(t, base, &format!("{p}.tls"))?),
        };
        listeners.push(ListenerConfig {
            name: l.name.value,
            bind,
            tls,
            max_connections: l.max_connections.unwrap_or(10_000).max(1),
            trust_forwarded: l.trust_forwarded,
            set_forwarded: l.set_forwarded,
        });
    }

    let plugins = validate_plugins(file.plugins, base)?;
    let plugin_names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    let mut services = Vec::new();
    let mut names = HashSet::new();
    let mut routes = HashSet::new();
    for (i, s) in file.services.value.into_iter().enumerate() {
        let p = format!("services[{i}]");
        if !names.insert(s.name.value.clone()) {
            return Err(fail(
                format!("{p}.name"),
                &s.name.referenced,
                format!("duplicate service name `{}`", s.name.value),
            ));
        }
        let svc = validate_service(s, &p, &plugin_names)?;
        if !routes.insert((svc.host.clone(), svc.path_prefix.clone())) {
            return Err(Error::Config(format!(
                "config: {p}.match: service `{}` has the same host and path_prefix as an earlier service",
                svc.name
            )));
        }
        services.push(svc);
    }
    let admin = match file.admin {
        None => None,
        Some(a) => Some(validate_admin(a, base)?),
    };
    let state_dir = match file.state {
        Some(st) => Some(base.join(st.dir)),
        None => admin.as_ref().map(|_| base.join("switchyard-state")),
    };
    let d = StatsConfig::default();
    let stats = match file.stats {
        None => d,
        Some(st) => {
            let resolution = st.resolution.map_or(Ok(d.resolution), |r| {
                if r.value.0 < Duration::from_millis(10) {
                    Err(fail("stats.resolution", &r.referenced, "must be at least 10ms"))
                } else {
                    Ok(r.value.0)
                }
            })?;
            let window = st.window.map_or(d.window, |w| w.0).max(resolution);
            StatsConfig { window, resolution }
        }
    };
    // Analysis reads the stats window: make it long and fine enough for every plan.
    let mut stats = stats;
    for plan in services.iter().filter_map(|s| s.rollout.as_ref()) {
        stats.window = stats.window.max(plan.analysis.window);
        stats.resolution = stats.resolution.min(plan.analysis.interval).max(Duration::from_millis(10));
    }
    let flags = match file.flags {
        None => None,
        Some(f) => Some(validate_flags(f, base)?),
    };
    if flags.is_none() {
        if let Some(s) = services.iter().find(|s| s.split.rules.iter().any(|r| r.flag.is_some())) {
            return Err(Error::Config(format!(
                "config: service `{}` has a flag rule but there is no `flags` section naming the flag file",
                s.name
            )));
        }
    }
    Ok(Config { listeners, server, services, admin, state_dir, stats, flags, plugins })
}

fn validate_plugins(list: Vec<FilePlugin>, base: &Path) -> Result<Vec<PluginConfig>, Error> {
    let mut out: Vec<PluginConfig> = Vec::new();
    for (i, f) in list.into_iter().enumerate() {
        let p = format!("plugins[{i}]");
        let name = f.name.value;
        if !crate::plugin::valid_name(&name) {
            return Err(fail(
                format!("{p}.name"),
                &f.name.referenced,
                format!("`{name}`: a plugin name is 1 to 64 letters, digits, `-` or `_`"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(fail(format!("{p}.name"), &f.name.referenced, format!("duplicate plugin name `{name}`")));
        }
        out.push(PluginConfig {
            name,
            path: f.path.map(|s| base.join(s.value)),
            config: f.config.unwrap_or(serde_json::Value::Null),
        });
    }
    Ok(out)
}

fn validate_flags(f: FileFlags, base: &Path) -> Result<FlagsConfig, Error> {
    let file = base.join(&f.file.value);
    if !file.is_file() {
        return Err(fail("flags.file", &f.file.referenced, format!("no such file {}", file.display())));
    }
    let mut context = Vec::new();
    for (name, attr) in f.context {
        let p = format!("flags.context.{name}");
        let src = match (attr.value.header, attr.value.cookie, attr.value.request.as_deref()) {
            (Some(h), None, None) => AttrSource::Header(
                HeaderName::try_from(h.as_str())
                    .map_err(|_| fail(&p, &attr.referenced, format!("`{h}` is not a valid header name")))?,
            ),
            (None, Some(c), None) => AttrSource::Cookie(c),
            (None, None, Some("path")) => AttrSource::Path,
            (None, None, Some("method")) => AttrSource::Method,
            (None, None, Some("client_address")) => AttrSource::ClientAddress,
            _ => {
                return Err(fail(
                    &p,
                    &attr.referenced,
                    "give exactly one of `header: NAME`, `cookie: NAME` or `request: path|method|client_address`",
                ))
            }
        };
        if name == "targetingKey" || name.starts_with('$') {
            return Err(fail(&p, &attr.referenced, "`targetingKey` and `$` names are set by the proxy"));
        }
        context.push((name, src));
    }
    Ok(FlagsConfig { file, context })
}

fn validate_admin(a: FileAdmin, base: &Path) -> Result<AdminConfig, Error> {
    let bind = match a.bind {
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        Some(b) => resolve(&b.value).map_err(|m| fail("admin.bind", &b.referenced, m))?,
    };
    let mut tokens = Vec::new();
    if let Some(tf) = a.token_file {
        let path = base.join(&tf.value);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| fail("admin.token_file", &tf.referenced, format!("cannot read {}: {e}", path.display())))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let token = parse_token_line(line)
                .map_err(|m| fail("admin.token_file", &tf.referenced, format!("{}: {m}", path.display())))?;
            tokens.push(token);
        }
        if tokens.is_empty() {
            return Err(fail("admin.token_file", &tf.referenced, format!("{} holds no token", path.display())));
        }
    }
    Ok(AdminConfig { bind, tokens })
}

/// `TOKEN`, `NAME:TOKEN` or `NAME:TOKEN:read`.
fn parse_token_line(line: &str) -> Result<AdminToken, String> {
    let parts: Vec<&str> = line.split(':').map(str::trim).collect();
    let (name, token, read_only) = match parts.as_slice() {
        [t] => ("admin", *t, false),
        [n, t] => (*n, *t, false),
        [n, t, "read"] => (*n, *t, true),
        _ => return Err("a line is `TOKEN`, `NAME:TOKEN` or `NAME:TOKEN:read`".into()),
    };
    if token.len() < 16 {
        return Err(format!("the token of `{name}` is shorter than 16 characters"));
    }
    Ok(AdminToken { name: name.to_owned(), token: token.to_owned(), read_only })
}

fn validate_server(f: FileServer) -> Result<ServerConfig, Error> {
    let d = ServerConfig::default();
    let size = |v: Option<Spanned<units::ByteSize>>, name: &str, min: u64, dflt: usize| match v {
        None => Ok(dflt),
        Some(s) if s.value.0 < min || s.value.0 > u32::MAX as u64 => {
            Err(fail(format!("server.{name}"), &s.referenced, format!("must be between {min} and {} bytes", u32::MAX)))
        }
        Some(s) => Ok(s.value.0 as usize),
    };
    let max_headers = match f.max_headers {
        None => d.max_headers,
        Some(s) if s.value == 0 || s.value > 10_000 => {
            return Err(fail("server.max_headers", &s.referenced, "must be between 1 and 10000"))
        }
        Some(s) => s.value,
    };
    let workers = match f.workers {
        None => d.workers,
        Some(w) if w.value == 0 || w.value > 1024 => {
            return Err(fail("server.workers", &w.referenced, "must be between 1 and 1024"))
        }
        Some(w) => w.value,
    };
    Ok(ServerConfig {
        workers,
        header_read_timeout: f.header_read_timeout.map_or(d.header_read_timeout, |v| v.0),
        body_idle_timeout: f.body_idle_timeout.map_or(d.body_idle_timeout, |v| v.0),
        write_idle_timeout: f.write_idle_timeout.map_or(d.write_idle_timeout, |v| v.0),
        tls_handshake_timeout: f.tls_handshake_timeout.map_or(d.tls_handshake_timeout, |v| v.0),
        drain_timeout: f.drain_timeout.map_or(d.drain_timeout, |v| v.0),
        // hyper's read buffer cannot be smaller than 8 KiB.
        max_header_bytes: size(f.max_header_bytes, "max_header_bytes", 8192, d.max_header_bytes)?,
        max_headers,
        max_uri_bytes: size(f.max_uri_bytes, "max_uri_bytes", 16, d.max_uri_bytes)?,
        h2_max_concurrent_streams: f.h2_max_concurrent_streams.unwrap_or(d.h2_max_concurrent_streams).max(1),
    })
}

fn validate_tls(t: FileTls, base: &Path, p: &str) -> Result<TlsConfig, Error> {
    let files = |cert: Spanned<String>, key: Spanned<String>, p: &str| -> Result<CertFiles, Error> {
        let cert_path = base.join(&cert.value);
        let key_path = base.join(&key.value);
        if !cert_path.is_file() {
            return Err(fail(format!("{p}.cert"), &cert.referenced, format!("no such file {}", cert_path.display())));
        }
        if !key_path.is_file() {
            return Err(fail(format!("{p}.key"), &key.referenced, format!("no such file {}", key_path.display())));
        }
        Ok(CertFiles { cert: cert_path, key: key_path })
    };
    let default = files(t.cert, t.key, p)?;
    let mut sni = Vec::new();
    for (i, c) in t.sni.into_iter().enumerate() {
        let sp = format!("{p}.sni[{i}]");
        if c.names.value.is_empty() {
            return Err(fail(format!("{sp}.names"), &c.names.referenced, "list at least one server name"));
        }
        let names = c.names.value.iter().map(|n| n.to_ascii_lowercase()).collect();
        sni.push((names, files(c.cert, c.key, &sp)?));
    }
    Ok(TlsConfig { default, sni })
}

fn validate_service(s: FileService, p: &str, plugins: &[&str]) -> Result<ServiceConfig, Error> {
    let unknown_plugin = |name: &str| {
        let known = if plugins.is_empty() { "none".to_owned() } else { plugins.join(", ") };
        format!("no plugin named `{name}` in the `plugins` section (plugins: {known})")
    };
    if let Some(r) = &s.rollout {
        if let Some(pol) = r.value.analysis.as_ref().and_then(|a| a.policy.as_ref()) {
            if !plugins.contains(&pol.plugin.value.as_str()) {
                let field = format!("{p}.rollout.analysis.policy.plugin");
                return Err(fail(field, &pol.plugin.referenced, unknown_plugin(&pol.plugin.value)));
            }
        }
    }
    let host = match s.matcher.host {
        None => None,
        Some(h) => Some(parse_host(&h.value).map_err(|m| fail(format!("{p}.match.host"), &h.referenced, m))?),
    };
    let path_prefix = match s.matcher.path_prefix {
        None => "/".to_owned(),
        Some(pp) if !pp.value.starts_with('/') => {
            return Err(fail(format!("{p}.match.path_prefix"), &pp.referenced, "must start with `/`"))
        }
        Some(pp) if crate::path::normalize(&pp.value).ok().as_deref() != Some(pp.value.as_str()) => {
            return Err(fail(
                format!("{p}.match.path_prefix"),
                &pp.referenced,
                "must be a normalised path (no `.`/`..` segments, `//`, `\\` or percent-encoding)",
            ))
        }
        Some(pp) => pp.value,
    };

    if s.pools.value.is_empty() {
        return Err(fail(format!("{p}.pools"), &s.pools.referenced, "at least one pool is required"));
    }
    let pool_names: Vec<String> = s.pools.value.keys().cloned().collect();
    let mut pools = Vec::new();
    for (name, fp) in s.pools.value {
        let pp = format!("{p}.pools.{name}");
        pools.push(validate_pool(name, fp, &pp)?);
    }
    let index = |name: &str| pool_names.iter().position(|n| n == name);

    let split = s.split.unwrap_or_default();
    let sticky = match split.sticky {
        None => None,
        Some(st) => Some(match (st.value.cookie, st.value.header) {
            (Some(c), None) if !c.is_empty() => StickyKey::Cookie(c),
            (None, Some(h)) => StickyKey::Header(HeaderName::try_from(h.as_str()).map_err(|_| {
                fail(format!("{p}.split.sticky.header"), &st.referenced, format!("`{h}` is not a valid header name"))
            })?),
            _ => {
                return Err(fail(
                    format!("{p}.split.sticky"),
                    &st.referenced,
                    "give exactly one of `cookie: NAME` or `header: NAME`",
                ))
            }
        }),
    };

    let mut rules = Vec::new();
    for (i, r) in split.rules.into_iter().enumerate() {
        let rp = format!("{p}.split.rules[{i}]");
        let (matcher, pool) = match (r.matcher, r.pool, r.plugin) {
            (Some(m), Some(pool), None) if r.config.is_none() && r.headers.is_empty() && r.cookies.is_empty() => (m, pool),
            (None, None, Some(plugin)) => {
                if !plugins.contains(&plugin.value.as_str()) {
                    return Err(fail(format!("{rp}.plugin"), &plugin.referenced, unknown_plugin(&plugin.value)));
                }
                let mut headers = Vec::new();
                for h in &r.headers {
                    headers.push(HeaderName::try_from(h.as_str()).map_err(|_| {
                        fail(format!("{rp}.headers"), &plugin.referenced, format!("`{h}` is not a valid header name"))
                    })?);
                }
                let plugin =
                    PluginRule { name: plugin.value, config: r.config, headers, cookies: r.cookies };
                rules.push(RuleConfig {
                    headers: vec![],
                    cookies: vec![],
                    flag: None,
                    pool: 0,
                    plugin: Some(plugin),
                    keep_on_rollback: r.keep_on_rollback,
                });
                continue;
            }
            _ => {
                return Err(Error::Config(format!(
                    "config: {rp}: a rule is `{{ match: {{...}}, pool: NAME }}` or `{{ plugin: NAME, config: {{...}}, headers: [...], cookies: [...] }}`"
                )))
            }
        };
        let pool = index(&pool.value).ok_or_else(|| {
            fail(
                format!("{rp}.pool"),
                &pool.referenced,
                format!("unknown pool `{}` (pools: {})", pool.value, pool_names.join(", ")),
            )
        })?;
        let at = &matcher.referenced;
        let m = matcher.value;
        if m.header.is_empty() && m.cookie.is_empty() && m.flag.is_none() {
            return Err(fail(format!("{rp}.match"), at, "give at least one `header`, `cookie` or `flag` condition"));
        }
        if m.variant.is_some() && m.flag.is_none() {
            return Err(fail(format!("{rp}.match.variant"), at, "`variant` goes with `flag`"));
        }
        let flag = m.flag.map(|key| FlagCondition { key, variant: m.variant });
        let mut headers = Vec::new();
        for (k, v) in m.header {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|_| fail(format!("{rp}.match.header"), at, format!("`{k}` is not a valid header name")))?;
            let value = HeaderValue::try_from(v.as_str())
                .map_err(|_| fail(format!("{rp}.match.header.{k}"), at, "not a valid header value"))?;
            headers.push((name, value));
        }
        rules.push(RuleConfig {
            headers,
            cookies: m.cookie.into_iter().collect(),
            flag,
            pool,
            plugin: None,
            keep_on_rollback: r.keep_on_rollback,
        });
    }

    let weights = match split.weights {
        None if pools.len() == 1 => vec![1],
        None => {
            return Err(Error::Config(format!(
                "config: {p}.split.weights: required when a service has more than one pool (pools: {})",
                pool_names.join(", ")
            )))
        }
        Some(w) => {
            weights_for(&w.value, &pool_names).map_err(|m| fail(format!("{p}.split.weights"), &w.referenced, m))?
        }
    };

    Ok(ServiceConfig {
        name: s.name.value,
        host,
        path_prefix,
        pools,
        split: SplitConfig { sticky, rules, weights },
        timeout: s.timeout.map_or(Duration::from_secs(15), |d| d.0),
        connect_timeout: s.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
        max_request_body: s.max_request_body.map(|b| b.0),
        expose_pool: s.expose_pool,
        strict_paths: s.strict_paths.unwrap_or(true),
        rollout: match s.rollout {
            None => None,
            Some(r) => Some(rollout::validate(r.value, &pool_names, &format!("{p}.rollout"), &r.referenced)?),
        },
    })
}

/// Turns a `pool → weight` map into weights indexed like `pools`; pools not
/// named get 0. Shared with run-time weight changes.
pub fn weights_for(map: &BTreeMap<String, u32>, pools: &[String]) -> Result<Vec<u32>, String> {
    let mut out = vec![0u32; pools.len()];
    let mut total = 0u64;
    for (name, w) in map {
        let i = pools
            .iter()
            .position(|p| p == name)
            .ok_or_else(|| format!("unknown pool `{name}` (pools: {})", pools.join(", ")))?;
        out[i] = *w;
        total += u64::from(*w);
    }
    if total == 0 {
        return Err("weights must not all be zero".into());
    }
    if total > u64::from(u32::MAX) {
        return Err(format!("weights add up to {total}; keep the sum below {}", u32::MAX));
    }
    Ok(out)
}

fn validate_pool(name: String, fp: FilePool, p: &str) -> Result<PoolConfig, Error> {
    if fp.endpoints.value.is_empty() {
        return Err(fail(format!("{p}.endpoints"), &fp.endpoints.referenced, "at least one endpoint is required"));
    }
    let mut endpoints = Vec::new();
    for (i, e) in fp.endpoints.value.iter().enumerate() {
        let addr = resolve(&e.value).map_err(|m| fail(format!("{p}.endpoints[{i}]"), &e.referenced, m))?;
        if endpoints.contains(&addr) {
            return Err(fail(format!("{p}.endpoints[{i}]"), &e.referenced, format!("duplicate endpoint {addr}")));
        }
        endpoints.push(addr);
    }
    let health_check = match fp.health_check {
        None => None,
        Some(h) => {
            if !h.path.value.starts_with('/') {
                return Err(fail(format!("{p}.health_check.path"), &h.path.referenced, "must start with `/`"));
            }
            Some(HealthCheckConfig {
                path: h.path.value,
                interval: h.interval.map_or(Duration::from_secs(5), |d| d.0).max(Duration::from_millis(10)),
                timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0).max(Duration::from_millis(1)),
                healthy_threshold: h.healthy_threshold.unwrap_or(2).max(1),
                unhealthy_threshold: h.unhealthy_threshold.unwrap_or(3).max(1),
            })
        }
    };
    let d = OutlierConfig::default();
    let outlier = match fp.outlier {
        None => d,
        Some(o) => OutlierConfig {
            consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures).max(1),
            base_ejection: o.base_ejection.map_or(d.base_ejection, |v| v.0),
            max_ejection: o.max_ejection.map_or(d.max_ejection, |v| v.0),
        },
    };
    Ok(PoolConfig { name, endpoints, lb: fp.lb.unwrap_or_default(), health_check, outlier })
}

fn parse_host(h: &str) -> Result<HostMatch, String> {
    let h = h.to_ascii_lowercase();
    let valid = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') && !s.starts_with('.')
    };
    if let Some(rest) = h.strip_prefix("*.") {
        if valid(rest) {
            return Ok(HostMatch::Wildcard(format!(".{rest}")));
        }
    } else if valid(&h) {
        return Ok(HostMatch::Exact(h));
    }
    Err(format!("`{h}` is not a host name or `*.domain` wildcard (no port, no scheme)"))
}

fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it.next().ok_or_else(|| format!("`{s}` resolves to no address")),
        Err(e) => Err(format!("`{s}` is not an address like 127.0.0.1:9001 or host:port ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
listeners:
  - name: public
    bind: 0.0.0.0:8080
services:
  - name: checkout
    match: { host: shop.example.com, path_prefix: / }
    pools:
      stable: { endpoints: [127.0.0.1:9001, 127.0.0.1:9003] }
      canary: { endpoints: [127.0.0.1:9002] }
    split:
      sticky: { cookie: session }
      rules:
        - { match: { header: { x-canary: always } }, pool: canary }
      weights: { stable: 95, canary: 5 }
"#;

    fn load(s: &str) -> Result<Config, String> {
        Config::from_yaml(s, Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn design_example_validates() {
        let c = load(EXAMPLE).unwrap();
        let s = &c.services[0];
        assert_eq!(s.host, Some(HostMatch::Exact("shop.example.com".into())));
        assert_eq!(s.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["canary", "stable"]);
        assert_eq!(s.split.weights, vec![5, 95]);
        assert_eq!(s.split.rules[0].pool, 0);
        assert_eq!(s.split.sticky, Some(StickyKey::Cookie("session".into())));
        assert_eq!(s.timeout, Duration::from_secs(15));
    }

    #[test]
    fn unknown_field_names_path_and_line() {
        let bad = EXAMPLE.replace("canary: { endpoints:", "canary: { endpoint:");
        let e = load(&bad).unwrap_err();
        assert!(e.contains("services[0].pools.canary"), "{e}");
        assert!(e.contains("endpoint"), "{e}");
        assert!(e.contains("line 10"), "{e}");
    }

    #[test]
    fn unknown_pool_in_weights_names_line() {
        let bad = EXAMPLE.replace("canary: 5 }", "canry: 5 }");
        let e = load(&bad).unwrap_err();
        assert!(e.contains("services[0].split.weights (line 15)"), "{e}");
        assert!(e.contains("unknown pool `canry`"), "{e}");
    }

    #[test]
    fn rule_to_unknown_pool() {
        let bad = EXAMPLE.replace("pool: canary }", "pool: beta }");
        let e = load(&bad).unwrap_err();
        assert!(e.contains("services[0].split.rules[0].pool (line 14)"), "{e}");
    }

    #[test]
    fn zero_and_negative_weights() {
        let e = load(&EXAMPLE.replace("stable: 95, canary: 5", "stable: 0, canary: 0")).unwrap_err();
        assert!(e.contains("must not all be zero"), "{e}");
        let e = load(&EXAMPLE.replace("canary: 5", "canary: -5")).unwrap_err();
        assert!(e.contains("services[0].split.weights"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = load(&EXAMPLE.replace("0.0.0.0:8080", "nowhere")).unwrap_err();
        assert!(e.contains("listeners[0].bind (line 4)"), "{e}");
        let e = load(&EXAMPLE.replace("path_prefix: /", "path_prefix: /a/../b")).unwrap_err();
        assert!(e.contains("path_prefix"), "{e}");
        let e = load(&EXAMPLE.replace("{ cookie: session }", "{ cookie: a, header: b }")).unwrap_err();
        assert!(e.contains("sticky (line 12)"), "{e}");
        let e = load(&format!("{EXAMPLE}    timeout: soon\n")).unwrap_err();
        assert!(e.contains("services[0].timeout") && e.contains("invalid duration"), "{e}");
        let e = load("listeners: [").unwrap_err();
        assert!(e.starts_with("config:"), "{e}");
    }

    #[test]
    fn weights_required_with_several_pools() {
        let bad = EXAMPLE.replace("      weights: { stable: 95, canary: 5 }\n", "");
        let e = load(&bad).unwrap_err();
        assert!(e.contains("split.weights: required"), "{e}");
    }

    #[test]
    fn wildcard_hosts() {
        assert_eq!(parse_host("*.Example.com"), Ok(HostMatch::Wildcard(".example.com".into())));
        assert!(parse_host("example.com:80").is_err());
        assert!(parse_host("*.").is_err());
    }
}
