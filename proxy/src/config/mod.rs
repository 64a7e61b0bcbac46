//! Configuration in two stages: the YAML file is read into the serde mirror in
//! [`file`] (unknown fields are errors), then validated into [`Config`], with
//! defaults filled and every error naming the field path and its line.
//!
//! `switchyard check`, start-up and (later) reload share [`Config::load`].
//! Sections with their own module: listeners, TLS and limits (`server`),
//! services with their pools and splits (`service`), rollout plans ([`rollout`]).

mod file;
mod fleet;
mod mirror;
pub mod rolling;
pub mod rollout;
mod run_time;
mod server;
mod service;
mod units;

pub use server::*;
pub use service::*;

pub use file::{LbKind, Protocol};
pub use fleet::{EtcdTls, FleetConfig};
pub use mirror::MirrorConfig;
pub use run_time::{weights_for, MirrorSet, PoolSet, PoolSets, RunTime, WeightMap};

use crate::error::Error;
use file::*;
use http::HeaderName;
use serde_saphyr::{Location, Spanned};
use std::collections::HashSet;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated configuration with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// What this proxy serves (`production`, `staging`, ...): labels its
    /// report, dashboard and metrics.
    pub environment: Option<String>,
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
    /// In a fleet: how to reach its etcd (`state.etcd`).
    pub fleet: Option<FleetConfig>,
    /// Statistics windows.
    pub stats: StatsConfig,
    /// Feature flags, when configured.
    pub flags: Option<FlagsConfig>,
    /// WebAssembly plugins by name, in file order.
    pub plugins: Vec<PluginConfig>,
    /// `webhooks.ca_file`: the CA `https://` webhook receivers must chain to
    /// (default: the system's roots).
    pub webhook_ca: Option<PathBuf>,
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
    /// How `fractional` hashes (the applications' flagd providers decide).
    pub bucketing: crate::flags::Bucketing,
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
    let listeners = validate_listeners(file.listeners, base)?;
    let plugins = validate_plugins(file.plugins, base)?;
    let plugin_names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    let services = validate_services(file.services, &plugin_names, base)?;
    let admin = match file.admin {
        None => None,
        Some(a) => Some(validate_admin(a, base)?),
    };
    let (state_dir, fleet) = fleet::validate_state(file.state, admin.is_some(), base)?;
    let stats = validate_stats(file.stats, &services)?;
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
    let webhook_ca = match file.webhooks.and_then(|w| w.ca_file) {
        Some(f) => {
            let path = base.join(&f.value);
            // Read now: a wrong path is a config error, not a webhook that never arrives.
            std::fs::metadata(&path)
                .map_err(|e| fail("webhooks.ca_file", &f.referenced, format!("cannot read {}: {e}", path.display())))?;
            Some(path)
        }
        None => None,
    };
    let environment = match file.environment {
        Some(e) if !is_label(&e.value) => {
            return Err(fail("environment", &e.referenced, "must be 1-64 letters, digits, `.`, `_` or `-`"))
        }
        e => e.map(|e| e.value),
    };
    Ok(Config { environment, listeners, server, services, admin, state_dir, fleet, stats, flags, plugins, webhook_ca })
}

/// A short name fit for a label: 1-64 of `[A-Za-z0-9._-]`.
fn is_label(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate_listeners(list: Spanned<Vec<FileListener>>, base: &Path) -> Result<Vec<ListenerConfig>, Error> {
    if list.value.is_empty() {
        return Err(fail("listeners", &list.referenced, "at least one listener is required"));
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in list.value.into_iter().enumerate() {
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

    Ok(listeners)
}

fn validate_services(
    list: Spanned<Vec<FileService>>,
    plugin_names: &[&str],
    base: &Path,
) -> Result<Vec<ServiceConfig>, Error> {
    let mut services = Vec::new();
    let mut names = HashSet::new();
    let mut routes = HashSet::new();
    for (i, s) in list.value.into_iter().enumerate() {
        let p = format!("services[{i}]");
        if !names.insert(s.name.value.clone()) {
            return Err(fail(
                format!("{p}.name"),
                &s.name.referenced,
                format!("duplicate service name `{}`", s.name.value),
            ));
        }
        let svc = validate_service(s, &p, plugin_names, base)?;
        if !routes.insert((svc.host.clone(), svc.path_prefix.clone())) {
            return Err(Error::Config(format!(
                "config: {p}.match: service `{}` has the same host and path_prefix as an earlier service",
                svc.name
            )));
        }
        services.push(svc);
    }
    Ok(services)
}

/// The `stats` section, widened so every rollout plan's analysis window and
/// interval fit in it.
fn validate_stats(file: Option<FileStats>, services: &[ServiceConfig]) -> Result<StatsConfig, Error> {
    let d = StatsConfig::default();
    let stats = match file {
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
    Ok(stats)
}

fn validate_plugins(list: Vec<FilePlugin>, base: &Path) -> Result<Vec<PluginConfig>, Error> {
    let mut out: Vec<PluginConfig> = Vec::new();
    for (i, f) in list.into_iter().enumerate() {
        let p = format!("plugins[{i}]");
        let name = f.name.value;
        if !valid_plugin_name(&name) {
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
    Ok(FlagsConfig { file, context, bucketing: f.bucketing })
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

/// Whether `name` is a usable plugin name.
pub fn valid_plugin_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_dns_checks_host_names_for_form_only() {
        super::without_dns(|| {
            let a = resolve("web.shop.svc.cluster.local:8080").unwrap();
            assert_eq!(a.port(), 8080);
            assert_ne!(a, resolve("api.shop.svc.cluster.local:8080").unwrap(), "an address per name");
            assert_eq!(resolve("10.0.0.1:80").unwrap().to_string(), "10.0.0.1:80");
            for bad in ["bad host:80", "web:port", "web", "*.shop:80", "web:70000"] {
                assert!(resolve(bad).is_err(), "{bad}");
            }
        });
    }

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
    fn a_pool_says_what_it_runs_and_bad_release_fields_name_field_and_line() {
        let with = |fields: &str| {
            EXAMPLE.replace(
                "canary: { endpoints: [127.0.0.1:9002] }",
                &format!("canary: {{ endpoints: [127.0.0.1:9002], {fields} }}"),
            )
        };
        let c = load(&with("version: v1.2.4, commit: 9fceb02, commit_time: 2026-11-30T10:00:00Z")).unwrap();
        let canary = &c.services[0].pools[0];
        assert_eq!(
            (canary.release.version.as_deref(), canary.release.commit.as_deref()),
            (Some("v1.2.4"), Some("9fceb02"))
        );
        let e = load(&with("version: v2, commit_time: yesterday")).unwrap_err();
        assert!(e.contains("services[0].pools.canary.commit_time") && e.contains("line 10"), "{e}");
        let e = load(&with("build_url: ci.example.com/1")).unwrap_err();
        assert!(e.contains("pools.canary.build_url") && e.contains("http://"), "{e}");
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
