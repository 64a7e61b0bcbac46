//! The [`Snapshot`]: every service compiled for the request path, immutable.
//!
//! The proxy holds the current snapshot in an `ArcSwap`; a request loads it
//! once and keeps it to the end, so it sees one whole state. Every change
//! builds a new snapshot and stores it in one atomic swap.
//!
//! Service matching: the most specific host group that has a service whose
//! path prefix matches wins — exact host, then the longest `*.suffix`
//! wildcard, then services without a host — and inside a group the longest
//! prefix, matched on whole path segments.

use crate::config::{Config, HostMatch, ServiceConfig};
use crate::pool::Pool;
use crate::split::Split;
use http::HeaderValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// All services, compiled.
#[derive(Debug, Default)]
pub struct Snapshot {
    services: Vec<Arc<Service>>,
    exact: HashMap<String, Vec<usize>>,
    /// `(".suffix", services)`, longest suffix first.
    wildcard: Vec<(String, Vec<usize>)>,
    any_host: Vec<usize>,
}

/// One service, compiled.
#[derive(Debug)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Path prefix.
    pub path_prefix: String,
    /// Pools in name order; the split's indices point here.
    pub pools: Box<[Arc<Pool>]>,
    /// Pool names as header values, for `x-switchyard-pool`.
    pub pool_header_values: Box<[HeaderValue]>,
    /// The split.
    pub split: Split,
    /// Upstream response-head timeout.
    pub timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Largest request body.
    pub max_request_body: Option<u64>,
    /// Add `x-switchyard-pool` to responses.
    pub expose_pool: bool,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles a validated config. Starts the pools' health checks, so it
    /// must run inside a tokio runtime.
    pub fn new(cfg: &Config) -> Self {
        let mut snap = Snapshot::default();
        for (i, s) in cfg.services.iter().enumerate() {
            snap.services.push(Arc::new(Service::new(s, cfg.server.workers)));
            match &s.host {
                Some(HostMatch::Exact(h)) => snap.exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Wildcard(sfx)) => match snap.wildcard.iter_mut().find(|(w, _)| w == sfx) {
                    Some((_, v)) => v.push(i),
                    None => snap.wildcard.push((sfx.clone(), vec![i])),
                },
                None => snap.any_host.push(i),
            }
        }
        snap.wildcard.sort_by_key(|(sfx, _)| std::cmp::Reverse(sfx.len()));
        let by_prefix_len = |v: &mut Vec<usize>, services: &[Arc<Service>]| {
            v.sort_by_key(|&i| std::cmp::Reverse(services[i].path_prefix.len()))
        };
        for v in snap.exact.values_mut() {
            by_prefix_len(v, &snap.services);
        }
        for (_, v) in &mut snap.wildcard {
            by_prefix_len(v, &snap.services);
        }
        by_prefix_len(&mut snap.any_host, &snap.services);
        snap
    }

    /// The service for a host (lower case, without port) and a normalised path.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Service>> {
        let in_group =
            |group: &[usize]| group.iter().map(|&i| &self.services[i]).find(|s| prefix_matches(&s.path_prefix, path));
        if let Some(s) = self.exact.get(host).and_then(|g| in_group(g)) {
            return Some(s);
        }
        for (sfx, group) in &self.wildcard {
            if host.len() > sfx.len() && host.ends_with(sfx.as_str()) {
                if let Some(s) = in_group(group) {
                    return Some(s);
                }
            }
        }
        in_group(&self.any_host)
    }

    /// All services in config order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

// === impl Service ===

impl Service {
    fn new(cfg: &ServiceConfig, workers: usize) -> Self {
        let names: Vec<String> = cfg.pools.iter().map(|p| p.name.clone()).collect();
        Self {
            name: cfg.name.clone(),
            path_prefix: cfg.path_prefix.clone(),
            pools: cfg.pools.iter().map(|p| Arc::new(Pool::new(p, workers))).collect(),
            pool_header_values: names
                .iter()
                .map(|n| HeaderValue::from_str(n).unwrap_or(HeaderValue::from_static("invalid")))
                .collect(),
            split: Split::new(&cfg.split, &names),
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            max_request_body: cfg.max_request_body,
            expose_pool: cfg.expose_pool,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn snap() -> Snapshot {
        let yaml = r#"
listeners: [{ name: l, bind: "127.0.0.1:0" }]
services:
  - { name: exact-root, match: { host: shop.example.com }, pools: { p: { endpoints: ["127.0.0.1:1"] } } }
  - { name: exact-api, match: { host: shop.example.com, path_prefix: /api }, pools: { p: { endpoints: ["127.0.0.1:1"] } } }
  - { name: wild, match: { host: "*.example.com", path_prefix: /img/ }, pools: { p: { endpoints: ["127.0.0.1:1"] } } }
  - { name: wild-deep, match: { host: "*.eu.example.com" }, pools: { p: { endpoints: ["127.0.0.1:1"] } } }
  - { name: fallback, match: { path_prefix: /img }, pools: { p: { endpoints: ["127.0.0.1:1"] } } }
"#;
        Snapshot::new(&Config::from_yaml(yaml, Path::new(".")).unwrap())
    }

    fn name(s: &Snapshot, host: &str, path: &str) -> Option<String> {
        s.find(host, path).map(|s| s.name.clone())
    }

    #[test]
    fn host_then_longest_prefix() {
        let s = snap();
        assert_eq!(name(&s, "shop.example.com", "/api/x").as_deref(), Some("exact-api"));
        assert_eq!(name(&s, "shop.example.com", "/api").as_deref(), Some("exact-api"));
        assert_eq!(name(&s, "shop.example.com", "/apix").as_deref(), Some("exact-root"));
        assert_eq!(name(&s, "a.example.com", "/img/1.png").as_deref(), Some("wild"));
        assert_eq!(name(&s, "a.eu.example.com", "/img/1.png").as_deref(), Some("wild-deep"));
        assert_eq!(name(&s, "example.com", "/img/1.png").as_deref(), Some("fallback"));
        assert_eq!(name(&s, "a.example.com", "/img").as_deref(), Some("fallback"));
        assert_eq!(name(&s, "other.org", "/"), None);
    }
}
