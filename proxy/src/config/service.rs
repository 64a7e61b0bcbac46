//! A service's section: its match, pools (endpoints, load balancing,
//! health), split (sticky key, rules, weights) and timeouts, validated with
//! errors that name the field and line.

use super::file::*;
use super::{fail, rollout, weights_for, PluginRule};
use crate::error::Error;
use http::{HeaderName, HeaderValue};
use serde_saphyr::Spanned;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

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
    /// UTF-8, double-encoded dots), see [`crate::parse::path::is_suspicious`].
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
    /// What the pool runs: its version and where it came from.
    pub release: Release,
    /// Load-balancing algorithm.
    pub lb: LbKind,
    /// Active HTTP health checking, when configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health (outlier ejection).
    pub outlier: OutlierConfig,
    /// HTTP/1.1, HTTP/2 over TLS, or HTTP/2 without TLS.
    pub protocol: Protocol,
    /// TLS to the endpoints, when on.
    pub tls: Option<UpstreamTls>,
    /// During a rolling update: the endpoints that are new (see [`super::PoolSet::new`]).
    pub new_endpoints: Vec<SocketAddr>,
}

/// TLS to a pool's endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamTls {
    /// The CA certificates (PEM) endpoints' certificates must chain to;
    /// `None`: the system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// The name sent by SNI and verified in the endpoints' certificates
    /// (default: the first endpoint's host as written).
    pub server_name: String,
    /// A client certificate for endpoints that ask for one (mTLS).
    pub client: Option<super::CertFiles>,
}

/// What a pool runs, as the release tooling says: all optional, free text
/// except where noted.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Release {
    /// An image tag, a git SHA, a semantic version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The commit it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The build's page (`http://` or `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_url: Option<String>,
    /// When that commit was made (RFC 3339): what lead time is measured from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<String>,
}

impl Release {
    /// Checks each field; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let text = |name: &'static str, v: &Option<String>| match v {
            Some(v) if v.is_empty() || v.len() > 200 || v.chars().any(char::is_control) => {
                Err((name, "must be 1 to 200 printable characters".to_owned()))
            }
            _ => Ok(()),
        };
        text("version", &self.version)?;
        text("commit", &self.commit)?;
        text("build_url", &self.build_url)?;
        if let Some(u) = &self.build_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(("build_url", "must start with http:// or https://".into()));
            }
        }
        if let Some(t) = &self.commit_time {
            humantime::parse_rfc3339_weak(t)
                .map_err(|e| ("commit_time", format!("not an RFC 3339 time (2026-11-30T10:00:00Z): {e}")))?;
        }
        Ok(())
    }
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
    /// Where copies of requests go, if anywhere.
    pub mirror: Option<super::MirrorConfig>,
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

pub(super) fn validate_service(
    s: FileService,
    p: &str,
    plugins: &[&str],
    base: &std::path::Path,
) -> Result<ServiceConfig, Error> {
    if let Some(r) = &s.rollout {
        if let Some(pol) = r.value.analysis.as_ref().and_then(|a| a.policy.as_ref()) {
            if !plugins.contains(&pol.plugin.value.as_str()) {
                let field = format!("{p}.rollout.analysis.policy.plugin");
                return Err(fail(field, &pol.plugin.referenced, unknown_plugin(&pol.plugin.value, plugins)));
            }
        }
    }
    let (host, path_prefix) = validate_match(s.matcher, p)?;
    if s.pools.value.is_empty() {
        return Err(fail(format!("{p}.pools"), &s.pools.referenced, "at least one pool is required"));
    }
    let pool_names: Vec<String> = s.pools.value.keys().cloned().collect();
    let mut pools = Vec::new();
    for (name, fp) in s.pools.value {
        let pp = format!("{p}.pools.{name}");
        pools.push(validate_pool(name, fp, &pp, base)?);
    }
    let split = validate_split(s.split.unwrap_or_default(), &pool_names, plugins, p)?;
    Ok(ServiceConfig {
        name: s.name.value,
        host,
        path_prefix,
        pools,
        split,
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

fn unknown_plugin(name: &str, plugins: &[&str]) -> String {
    let known = if plugins.is_empty() { "none".to_owned() } else { plugins.join(", ") };
    format!("no plugin named `{name}` in the `plugins` section (plugins: {known})")
}

/// The service's `match`: its host and normalised path prefix.
fn validate_match(m: FileMatch, p: &str) -> Result<(Option<HostMatch>, String), Error> {
    let host = match m.host {
        None => None,
        Some(h) => Some(parse_host(&h.value).map_err(|m| fail(format!("{p}.match.host"), &h.referenced, m))?),
    };
    let path_prefix = match m.path_prefix {
        None => "/".to_owned(),
        Some(pp) if !pp.value.starts_with('/') => {
            return Err(fail(format!("{p}.match.path_prefix"), &pp.referenced, "must start with `/`"))
        }
        Some(pp) if crate::parse::path::normalize(&pp.value).ok().as_deref() != Some(pp.value.as_str()) => {
            return Err(fail(
                format!("{p}.match.path_prefix"),
                &pp.referenced,
                "must be a normalised path (no `.`/`..` segments, `//`, `\\` or percent-encoding)",
            ))
        }
        Some(pp) => pp.value,
    };
    Ok((host, path_prefix))
}

/// The `split` section: sticky key, rules and weights, with pools by index.
fn validate_split(split: FileSplit, pool_names: &[String], plugins: &[&str], p: &str) -> Result<SplitConfig, Error> {
    let sticky = validate_sticky(split.sticky, p)?;
    let mut rules = Vec::new();
    for (i, r) in split.rules.into_iter().enumerate() {
        rules.push(validate_rule(r, &format!("{p}.split.rules[{i}]"), pool_names, plugins)?);
    }
    let weights = match split.weights {
        None if pool_names.len() == 1 => vec![1],
        None => {
            return Err(Error::Config(format!(
                "config: {p}.split.weights: required when a service has more than one pool (pools: {})",
                pool_names.join(", ")
            )))
        }
        Some(w) => {
            weights_for(&w.value, pool_names).map_err(|m| fail(format!("{p}.split.weights"), &w.referenced, m))?
        }
    };
    let mirror =
        split.mirror.map(|m| super::mirror::validate(m, pool_names, &format!("{p}.split.mirror"))).transpose()?;
    Ok(SplitConfig { sticky, rules, weights, mirror })
}

fn validate_sticky(sticky: Option<Spanned<FileSticky>>, p: &str) -> Result<Option<StickyKey>, Error> {
    Ok(match sticky {
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
    })
}

/// One split rule: a match on headers, cookies or a flag sending to a pool,
/// or a router plugin.
fn validate_rule(r: FileRule, rp: &str, pool_names: &[String], plugins: &[&str]) -> Result<RuleConfig, Error> {
    let (matcher, pool) = match (r.matcher, r.pool, r.plugin) {
        (Some(m), Some(pool), None) if r.config.is_none() && r.headers.is_empty() && r.cookies.is_empty() => (m, pool),
        (None, None, Some(plugin)) => {
            if !plugins.contains(&plugin.value.as_str()) {
                return Err(fail(format!("{rp}.plugin"), &plugin.referenced, unknown_plugin(&plugin.value, plugins)));
            }
            let mut headers = Vec::new();
            for h in &r.headers {
                headers.push(HeaderName::try_from(h.as_str()).map_err(|_| {
                    fail(format!("{rp}.headers"), &plugin.referenced, format!("`{h}` is not a valid header name"))
                })?);
            }
            let plugin =
                PluginRule { name: plugin.value, config: r.config, headers, cookies: r.cookies };
            return Ok(RuleConfig {
                headers: vec![],
                cookies: vec![],
                flag: None,
                pool: 0,
                plugin: Some(plugin),
                keep_on_rollback: r.keep_on_rollback,
            });
        }
        _ => {
            return Err(Error::Config(format!(
                "config: {rp}: a rule is `{{ match: {{...}}, pool: NAME }}` or `{{ plugin: NAME, config: {{...}}, headers: [...], cookies: [...] }}`"
            )))
        }
    };
    let pool = pool_names.iter().position(|n| *n == pool.value).ok_or_else(|| {
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
    Ok(RuleConfig {
        headers,
        cookies: m.cookie.into_iter().collect(),
        flag,
        pool,
        plugin: None,
        keep_on_rollback: r.keep_on_rollback,
    })
}

pub(super) fn validate_pool(name: String, fp: FilePool, p: &str, base: &std::path::Path) -> Result<PoolConfig, Error> {
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
    let text = |v: Option<Spanned<String>>| v.map(|s| s.value);
    let at = fp.version.as_ref().or(fp.commit.as_ref()).or(fp.build_url.as_ref()).or(fp.commit_time.as_ref());
    let at = at.map_or(fp.endpoints.referenced, |s| s.referenced);
    let release = Release {
        version: text(fp.version),
        commit: text(fp.commit),
        build_url: text(fp.build_url),
        commit_time: text(fp.commit_time),
    };
    release.check().map_err(|(field, m)| fail(format!("{p}.{field}"), &at, m))?;
    let d = OutlierConfig::default();
    let outlier = match fp.outlier {
        None => d,
        Some(o) => OutlierConfig {
            consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures).max(1),
            base_ejection: o.base_ejection.map_or(d.base_ejection, |v| v.0),
            max_ejection: o.max_ejection.map_or(d.max_ejection, |v| v.0),
        },
    };
    let protocol = fp.protocol.unwrap_or_default();
    let first_host = fp.endpoints.value[0].value.rsplit_once(':').map_or("", |(h, _)| h);
    let tls = fp.tls.map(|t| validate_upstream_tls(t, first_host, base, p)).transpose()?;
    match (protocol, &tls) {
        (Protocol::H2, None) => {
            let msg = "h2 is HTTP/2 over TLS: add `tls` (or use `h2c`, HTTP/2 without TLS)";
            return Err(fail(format!("{p}.protocol"), &fp.endpoints.referenced, msg));
        }
        (Protocol::H2c, Some(_)) => {
            let msg = "h2c is HTTP/2 without TLS: use `h2` with `tls`";
            return Err(fail(format!("{p}.protocol"), &fp.endpoints.referenced, msg));
        }
        _ => {}
    }
    Ok(PoolConfig {
        name,
        endpoints,
        release,
        lb: fp.lb.unwrap_or_default(),
        health_check,
        outlier,
        protocol,
        tls,
        new_endpoints: Vec::new(),
    })
}

fn validate_upstream_tls(
    t: Spanned<FileUpstreamTls>,
    first_host: &str,
    base: &std::path::Path,
    p: &str,
) -> Result<UpstreamTls, Error> {
    let (at, t) = (t.referenced, t.value);
    let ca = t.ca.as_ref().map(|f| super::server::existing_file(f, base, format!("{p}.tls.ca"))).transpose()?;
    let client = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some(super::server::cert_files(c, k, base, &format!("{p}.tls"))?),
        (None, None) => None,
        _ => return Err(fail(format!("{p}.tls"), &at, "a client certificate needs both `cert` and `key`")),
    };
    let (name, name_at) = match &t.server_name {
        Some(n) => (n.value.clone(), n.referenced),
        None => (first_host.trim_start_matches('[').trim_end_matches(']').to_owned(), at),
    };
    if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
        return Err(fail(
            format!("{p}.tls.server_name"),
            &name_at,
            format!("`{name}` is not a host name or IP address"),
        ));
    }
    Ok(UpstreamTls { ca, server_name: name, client })
}

pub(super) fn parse_host(h: &str) -> Result<HostMatch, String> {
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

thread_local! {
    /// Set by [`without_dns`]: host names are checked, not looked up.
    static NO_DNS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a config load) with host names in endpoints checked for form
/// only, not looked up: for `check` of a config meant for another network
/// (a Kubernetes cluster's Service names, say). Each name stands for an
/// address of its own in 240.0.0.0/4, which nothing uses.
pub fn without_dns<T>(f: impl FnOnce() -> T) -> T {
    NO_DNS.with(|c| c.set(true));
    let out = f();
    NO_DNS.with(|c| c.set(false));
    out
}

/// An endpoint: `127.0.0.1:9001`, or `host:port` (looked up once, now).
pub fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if NO_DNS.with(std::cell::Cell::get) {
        let form = || format!("`{s}` is not an address like 127.0.0.1:9001 or host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(form)?;
        let port: u16 = port.parse().map_err(|_| form())?;
        parse_host(host).ok().filter(|h| matches!(h, HostMatch::Exact(_))).ok_or_else(form)?;
        let hash = host.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        return Ok(SocketAddr::from(((hash | 0xf000_0000).to_be_bytes(), port)));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it.next().ok_or_else(|| format!("`{s}` resolves to no address")),
        Err(e) => Err(format!("`{s}` is not an address like 127.0.0.1:9001 or host:port ({e})")),
    }
}
