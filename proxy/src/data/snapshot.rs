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

use crate::config::{rolling, Config, HostMatch, ServiceConfig};
use crate::config::{MirrorConfig, MirrorSet, PoolSets, RunTime, WeightMap};
use crate::data::pool::Pool;
use crate::data::split::{Mirror, Split};
use crate::error::Error;
use crate::plugin::router::RouterBinding;
use crate::plugin::Plugin;
use crate::stats::Stats;
use http::HeaderValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Where copies of requests go, if anywhere: the file's mirror, or
    /// the one a rollout set (`mirror_set`).
    pub mirror: Option<Mirror>,
    /// The mirror a rollout set at run time, over the file's.
    pub mirror_set: Option<MirrorSet>,
    /// Upstream response-head timeout.
    pub timeout: Duration,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Largest request body.
    pub max_request_body: Option<u64>,
    /// Add `x-switchyard-pool` to responses.
    pub expose_pool: bool,
    /// Refuse suspicious path shapes.
    pub strict_paths: bool,
    /// The weights in force were set through the admin API, not the file.
    pub weights_from_api: bool,
    /// Pools whose endpoints and release were set through the admin API.
    pub pool_sets: PoolSets,
    /// Rolled-back pools whose rules are suspended (see [`Split::with_traffic`]).
    pub suspended: BTreeSet<String>,
    /// The service's config, with the weights in force.
    pub config: ServiceConfig,
}

// === impl Snapshot ===

impl Snapshot {
    /// Compiles a validated config. Pools whose config is unchanged from
    /// `previous` are reused, with their health state and idle connections;
    /// new pools start their health checks, so this must run inside a tokio
    /// runtime. `overrides` are weights and suspensions set at run time, by
    /// service; weights that no longer fit the service's pools are ignored
    /// (and logged), and so are suspended pools that no longer exist.
    ///
    /// Router rules are bound to `plugins`: a binding from `previous` with the
    /// same plugin version, config and pools is kept (with the workers' warm
    /// instances); a new one is instantiated and tried first. The error names
    /// the rule that cannot be bound.
    pub fn build(
        cfg: &Config,
        stats: &Stats,
        previous: Option<&Snapshot>,
        overrides: &RunTime,
        plugins: &BTreeMap<String, Arc<Plugin>>,
    ) -> Result<Self, Error> {
        let services = cfg
            .services
            .iter()
            .map(|s| {
                let old = previous.and_then(|p| p.services.iter().find(|o| o.name == s.name));
                let mut config = s.clone();
                // Pools set through the API replace the file's endpoints and release.
                let mut pool_sets = overrides.pools.get(&s.name).cloned().unwrap_or_default();
                pool_sets.retain(|name, _| s.pools.iter().any(|p| p.name == *name));
                for pc in &mut config.pools {
                    if let Some(set) = pool_sets.get(&pc.name) {
                        (pc.endpoints, pc.release) = (set.endpoints.clone(), set.release.clone());
                        pc.new_endpoints = set.new.clone();
                    }
                }
                let pools = config
                    .pools
                    .iter()
                    .map(|pc| {
                        // Kept (health state, idle connections) unless how it connects changed: a new version alone keeps it.
                        let same = |p: &Pool| crate::config::PoolConfig { release: pc.release.clone(), ..p.config.clone() } == *pc;
                        let reused = old.and_then(|o| o.pools.iter().find(|p| p.name == pc.name && same(p)));
                        match reused {
                            Some(p) => Ok(p.clone()),
                            None => {
                                // A rolling update records its new and old endpoints apart too.
                                let groups = (!pc.new_endpoints.is_empty()).then(|| {
                                    let slot = |g: String| stats.slot(&s.name, &g);
                                    (slot(rolling::old_group(&pc.name)), slot(rolling::new_group(&pc.name)))
                                });
                                Pool::new(pc, cfg.server.workers, stats.slot(&s.name, &pc.name), groups).map(Arc::new)
                            }
                        }
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                let mut from_api = false;
                if let Some(map) = overrides.weights.get(&s.name) {
                    let names: Vec<String> = s.pools.iter().map(|p| p.name.clone()).collect();
                    match crate::config::weights_for(map, &names) {
                        Ok(w) => {
                            config.split.weights = w;
                            from_api = true;
                        }
                        Err(e) => tracing::warn!(service = %s.name, error = %e, "ignoring stored weights that no longer fit the service"),
                    }
                }
                let names: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
                let suspended: BTreeSet<String> = overrides
                    .suspended
                    .get(&s.name)
                    .into_iter()
                    .flatten()
                    .filter(|p| names.contains(p))
                    .cloned()
                    .collect();
                let routers = bind_routers(&config, &names, old.map(|o| &o.split), plugins)?;
                let split = Split::new(&config.split, &names, routers, &suspended);
                let set = overrides.mirrors.get(&s.name).filter(|m| names.contains(&m.pool)).cloned();
                let mirror = compile_mirror(&config, &pools, set.as_ref(), old.and_then(|o| o.mirror.as_ref()));
                let traffic = (split, mirror, set);
                Ok(Arc::new(Service::new(config, pools, traffic, (from_api, pool_sets), suspended)))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self::index(services))
    }

    /// This snapshot with one service's traffic replaced where `t` says;
    /// `None` if there is no such service. Everything else, pools included,
    /// is shared.
    pub fn with_traffic(&self, service: &str, t: Traffic<'_>) -> Option<Self> {
        let Traffic { weights, suspended, mirror } = t;
        let mut found = false;
        let services = self
            .services
            .iter()
            .map(|s| {
                if s.name != service {
                    return s.clone();
                }
                found = true;
                let mut config = s.config.clone();
                let (weights, from_api) = weights.clone().unwrap_or((s.split.weights().to_vec(), s.weights_from_api));
                config.split.weights = weights;
                let suspended = suspended.cloned().unwrap_or_else(|| s.suspended.clone());
                let split = s.split.with_traffic(&config.split.weights, &s.pool_names(), &suspended);
                let set = mirror.map_or_else(|| s.mirror_set.clone(), |m| m.cloned());
                let mirror = compile_mirror(&config, &s.pools, set.as_ref(), s.mirror.as_ref());
                let traffic = (split, mirror, set);
                Arc::new(Service::new(config, s.pools.to_vec(), traffic, (from_api, s.pool_sets.clone()), suspended))
            })
            .collect();
        found.then(|| Self::index(services))
    }

    fn index(services: Vec<Arc<Service>>) -> Self {
        let mut snap = Snapshot { services, ..Default::default() };
        for (i, s) in snap.services.iter().enumerate() {
            match &s.config.host {
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

    /// What was set at run time (weights by the admin API or rollouts,
    /// suspensions, pools): what a rebuild from the config must keep.
    pub fn run_time(&self) -> RunTime {
        RunTime {
            weights: self
                .services
                .iter()
                .filter(|s| s.weights_from_api)
                .map(|s| (s.name.clone(), s.pool_names().into_iter().zip(s.split.weights().iter().copied()).collect()))
                .collect::<HashMap<String, WeightMap>>(),
            suspended: self
                .services
                .iter()
                .filter(|s| !s.suspended.is_empty())
                .map(|s| (s.name.clone(), s.suspended.clone()))
                .collect(),
            pools: self
                .services
                .iter()
                .filter(|s| !s.pool_sets.is_empty())
                .map(|s| (s.name.clone(), s.pool_sets.clone()))
                .collect(),
            mirrors: self.services.iter().filter_map(|s| Some((s.name.clone(), s.mirror_set.clone()?))).collect(),
        }
    }

    /// All services in config order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// What a change to one service's traffic replaces (the rest is kept).
#[derive(Default)]
pub struct Traffic<'a> {
    /// The weights, and whether they were set through the API.
    pub weights: Option<(Vec<u32>, bool)>,
    /// The suspended pools.
    pub suspended: Option<&'a BTreeSet<String>>,
    /// The mirror a rollout sets (`Some(None)`: back to the file's).
    pub mirror: Option<Option<&'a MirrorSet>>,
}

/// The service's mirror: the one a rollout `set` (to its pool, with the
/// file's other mirror settings or the defaults), else the file's; keeping
/// `previous`'s count of copies in flight.
fn compile_mirror(
    config: &ServiceConfig,
    pools: &[Arc<Pool>],
    set: Option<&MirrorSet>,
    previous: Option<&Mirror>,
) -> Option<Mirror> {
    let file = config.split.mirror.as_ref();
    let chosen = match set {
        None => file.cloned(),
        Some(set) => {
            let pool = pools.iter().position(|p| p.name == set.pool)?;
            let base = file.cloned().unwrap_or_else(|| MirrorConfig::to(pool, set.percent));
            Some(MirrorConfig { pool, percent: set.percent, ..base })
        }
    };
    chosen.map(|m| Mirror::new(&m, pools[m.pool].stats_slot, previous))
}

/// Binds the service's router rules, keeping `old`'s bindings where nothing changed.
fn bind_routers(
    s: &ServiceConfig,
    pools: &[String],
    old: Option<&Split>,
    plugins: &BTreeMap<String, Arc<Plugin>>,
) -> Result<Vec<Arc<RouterBinding>>, Error> {
    let mut out = Vec::new();
    for (i, rule) in s.split.rules.iter().enumerate() {
        let Some(pr) = &rule.plugin else { continue };
        let at = format!("service `{}`, split.rules[{i}]", s.name);
        let plugin =
            plugins.get(&pr.name).ok_or_else(|| Error::Config(format!("{at}: plugin `{}` is not loaded", pr.name)))?;
        let config = pr.config.as_ref().unwrap_or(&plugin.config);
        out.push(match old.and_then(|o| o.routers().find(|b| b.same(plugin, config, pools))) {
            Some(b) => b.clone(),
            None => bind_rule(plugin, pr, pools, &at)?,
        });
    }
    Ok(out)
}

/// Binds rule `pr` (at `at`, for errors) to `plugin` for a service with
/// `pools`: refused for a policy, or when the router refuses the rule's
/// config. What `serve` does for every rule, and `check` too.
pub fn bind_rule(
    plugin: &Arc<Plugin>,
    pr: &crate::config::PluginRule,
    pools: &[String],
    at: &str,
) -> Result<Arc<RouterBinding>, Error> {
    if plugin.kind != crate::plugin::Kind::Router {
        return Err(Error::Config(format!("{at}: plugin `{}` is a policy; rules take router plugins", pr.name)));
    }
    let config = pr.config.as_ref().unwrap_or(&plugin.config);
    RouterBinding::new(plugin.clone(), config, pools.to_vec(), &pr.headers, &pr.cookies)
        .map_err(|e| Error::Plugin(format!("{at}: {e}")))
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

// === impl Service ===

impl Service {
    /// What `pool` runs (the API's pool set, else the file's); empty when unknown.
    pub fn release(&self, pool: &str) -> crate::config::Release {
        self.config.pools.iter().find(|p| p.name == pool).map(|p| p.release.clone()).unwrap_or_default()
    }

    fn new(
        config: ServiceConfig,
        pools: Vec<Arc<Pool>>,
        (split, mirror, mirror_set): (Split, Option<Mirror>, Option<MirrorSet>),
        (weights_from_api, pool_sets): (bool, PoolSets),
        suspended: BTreeSet<String>,
    ) -> Self {
        let names: Vec<String> = config.pools.iter().map(|p| p.name.clone()).collect();
        Self {
            name: config.name.clone(),
            path_prefix: config.path_prefix.clone(),
            pools: pools.into(),
            pool_header_values: names
                .iter()
                .map(|n| HeaderValue::from_str(n).unwrap_or(HeaderValue::from_static("invalid")))
                .collect(),
            split,
            mirror,
            mirror_set,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            max_request_body: config.max_request_body,
            expose_pool: config.expose_pool,
            strict_paths: config.strict_paths,
            weights_from_api,
            pool_sets,
            suspended,
            config,
        }
    }

    /// Pool names in index order.
    pub fn pool_names(&self) -> Vec<String> {
        self.pools.iter().map(|p| p.name.clone()).collect()
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
        let stats = Stats::new(std::time::Duration::from_secs(30), std::time::Duration::from_secs(1));
        Snapshot::build(
            &Config::from_yaml(yaml, Path::new(".")).unwrap(),
            &stats,
            None,
            &RunTime::default(),
            &BTreeMap::new(),
        )
        .unwrap()
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
