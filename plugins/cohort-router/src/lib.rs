//! `cohort-router`: sends a cohort of users to one pool (the candidate).
//!
//! A request is in the cohort when any of these holds:
//! - its sticky key is on the `allow` list;
//! - its `header` has one of the listed values;
//! - its `cookie` has one of the listed values;
//! - its `query` parameter has one of the listed values;
//! - the client's address (as the proxy saw it) is in one of the `networks`;
//! - its sticky key hashes into the first `percent` % of keys (stable per
//!   key, and monotonic: raising `percent` only adds keys).
//!
//! Otherwise it has no opinion and the service's weights decide.
//!
//! ```yaml
//! split:
//!   sticky: { cookie: session }
//!   rules:
//!     - plugin: cohort-router
//!       config:
//!         pool: canary
//!         allow: [alice, bob]
//!         header: { name: x-cohort, values: [beta] }
//!         cookie: { name: cohort, values: [beta] }
//!         query: { name: preview, values: ["1"] }
//!         networks: ["10.20.0.0/16", "2001:db8::/32"]
//!         percent: 5
//! ```

use serde::Deserialize;
use std::collections::HashSet;
use switchyard_sdk::{Config, Needs, Pool, Pools, Request, Router};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The cohort's pool.
    #[serde(default = "default_pool")]
    pool: String,
    #[serde(default)]
    allow: Vec<String>,
    header: Option<Match>,
    cookie: Option<Match>,
    query: Option<Match>,
    #[serde(default)]
    networks: Vec<String>,
    #[serde(default)]
    percent: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Match {
    name: String,
    values: Vec<String>,
}

fn default_pool() -> String {
    "canary".into()
}

/// The router.
pub struct CohortRouter {
    pool: Pool,
    allow: HashSet<String>,
    header: Option<Match>,
    cookie: Option<Match>,
    query: Option<Match>,
    networks: Vec<Network>,
    /// Keys whose hash is below this (out of 2^64) are in.
    threshold: u64,
}

/// An address block: `10.20.0.0/16`, `2001:db8::/32` (a bare address is one host).
#[derive(Debug)]
struct Network {
    base: u128,
    mask: u128,
    v6: bool,
}

impl Network {
    fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a network like 10.0.0.0/8 or 2001:db8::/32");
        let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let (bits, v6, max) = match ip {
            std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), false, 32),
            std::net::IpAddr::V6(v6) => (u128::from(v6), true, 128),
        };
        let len: u32 = len.map_or(Ok(max), |l| l.parse().map_err(|_| bad()))?;
        if len > max {
            return Err(bad());
        }
        let mask = if len == 0 { 0 } else { (u128::MAX << (max - len)) & (u128::MAX >> (128 - max)) };
        Ok(Network { base: bits & mask, mask, v6 })
    }

    fn contains(&self, ip: std::net::IpAddr) -> bool {
        match ip {
            std::net::IpAddr::V4(v4) => !self.v6 && u128::from(u32::from(v4)) & self.mask == self.base,
            std::net::IpAddr::V6(v6) => self.v6 && u128::from(v6) & self.mask == self.base,
        }
    }
}

impl Router for CohortRouter {
    fn init(config: &Config, pools: &Pools) -> Result<Self, String> {
        let s: Settings = config.parse()?;
        if !(0.0..=100.0).contains(&s.percent) {
            return Err(format!("percent must be between 0 and 100, not {}", s.percent));
        }
        let threshold = if s.percent >= 100.0 { u64::MAX } else { (s.percent / 100.0 * u64::MAX as f64) as u64 };
        Ok(CohortRouter {
            pool: pools.get(&s.pool)?,
            allow: s.allow.into_iter().collect(),
            header: s.header,
            cookie: s.cookie,
            query: s.query,
            networks: s.networks.iter().map(|n| Network::parse(n)).collect::<Result<_, _>>()?,
            threshold,
        })
    }

    fn route(&self, req: &Request) -> Result<Option<Pool>, String> {
        let key = req.sticky_key();
        let listed = |m: &Option<Match>, v: Option<&str>| match (m, v) {
            (Some(m), Some(v)) => m.values.iter().any(|x| x == v),
            _ => false,
        };
        let inside = key.is_some_and(|k| self.allow.contains(k) || (self.threshold > 0 && hash(k) < self.threshold))
            || listed(&self.header, self.header.as_ref().and_then(|h| req.header(&h.name)))
            || listed(&self.cookie, self.cookie.as_ref().and_then(|c| req.cookie(&c.name)))
            || listed(&self.query, self.query.as_ref().and_then(|q| req.query(&q.name)))
            || req
                .client_address()
                .and_then(|a| a.parse().ok())
                .is_some_and(|ip| self.networks.iter().any(|n| n.contains(ip)));
        Ok(inside.then_some(self.pool))
    }

    fn needs(&self) -> Needs {
        let mut needs = Needs {
            headers: self.header.iter().map(|h| h.name.clone()).collect(),
            cookies: self.cookie.iter().map(|c| c.name.clone()).collect(),
        };
        if let Some(q) = &self.query {
            needs = needs.query(&q.name);
        }
        if !self.networks.is_empty() {
            needs = needs.client_address();
        }
        needs
    }
}

/// FNV-1a, then a final mix so nearby keys spread over the whole range.
fn hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

switchyard_sdk::export_router!(CohortRouter);

#[cfg(test)]
mod tests {
    use switchyard_sdk::testing;
    use switchyard_sdk::Request;

    const POOLS: &[&str] = &["canary", "stable"];

    fn route(config: &str, req: &Request) -> Option<String> {
        testing::router::<super::CohortRouter>(config, POOLS).unwrap().route(req).unwrap()
    }

    #[test]
    fn allow_list_header_and_cookie() {
        let cfg = r#"{"allow": ["alice"], "header": {"name": "x-cohort", "values": ["beta"]},
                      "cookie": {"name": "cohort", "values": ["yes"]}}"#;
        let get = || Request::builder("GET", "/");
        assert_eq!(route(cfg, &get().sticky_key("alice").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().sticky_key("bob").build()), None);
        assert_eq!(route(cfg, &get().header("X-Cohort", "beta").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().header("x-cohort", "gamma").build()), None);
        assert_eq!(route(cfg, &get().cookie("cohort", "yes").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().build()), None);
    }

    #[test]
    fn query_parameter_and_client_networks() {
        let cfg = r#"{"query": {"name": "preview", "values": ["1"]}, "networks": ["10.20.0.0/16", "2001:db8::/32"]}"#;
        let get = || Request::builder("GET", "/");
        assert_eq!(route(cfg, &get().query("preview", "1").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().query("preview", "0").build()), None);
        assert_eq!(route(cfg, &get().client_address("10.20.3.4").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().client_address("10.21.3.4").build()), None);
        assert_eq!(route(cfg, &get().client_address("2001:db8:1::9").build()).as_deref(), Some("canary"));
        assert_eq!(route(cfg, &get().client_address("2001:db9::9").build()), None);
        // Undeclared, as in the proxy: a header spelling the client's address does not count.
        let undeclared = r#"{"query": {"name": "preview", "values": ["1"]}}"#;
        assert_eq!(route(undeclared, &get().client_address("10.20.3.4").build()), None);
        let bad = testing::router::<super::CohortRouter>(r#"{"networks": ["10.0.0.0/33"]}"#, POOLS);
        assert!(bad.err().unwrap().contains("is not a network"));
    }

    #[test]
    fn percent_of_keys_is_proportional_and_monotonic() {
        let h5 = testing::router::<super::CohortRouter>(r#"{"percent": 5}"#, POOLS).unwrap();
        let h20 = testing::router::<super::CohortRouter>(r#"{"percent": 20, "pool": "stable"}"#, POOLS).unwrap();
        let (mut in5, mut in20) = (0, 0);
        for i in 0..20_000 {
            let req = Request::builder("GET", "/").sticky_key(&format!("user-{i}")).build();
            let a = h5.route(&req).unwrap();
            let b = h20.route(&req).unwrap();
            in5 += usize::from(a.is_some());
            in20 += usize::from(b.is_some());
            assert!(a.is_none() || b.as_deref() == Some("stable"), "a key in 5% is in 20% too");
        }
        assert!((850..=1150).contains(&in5), "5% of 20000: {in5}");
        assert!((3700..=4300).contains(&in20), "20% of 20000: {in20}");
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        let err = |cfg: &str| testing::router::<super::CohortRouter>(cfg, POOLS).err().unwrap();
        assert!(err(r#"{"pool": "green"}"#).contains("no pool named `green`"));
        assert!(err(r#"{"percent": 150}"#).contains("between 0 and 100"));
        assert!(err(r#"{"percnt": 5}"#).contains("unknown field"));
    }

    #[test]
    fn needs_name_the_header_and_cookie() {
        use switchyard_sdk::{Config, Pools, Router};
        let pools = Pools::new(vec!["canary".into()]);
        let cfg = Config::new(r#"{"header": {"name": "x-cohort", "values": []}}"#);
        let r = super::CohortRouter::init(&cfg, &pools).unwrap();
        assert_eq!(r.needs().headers, vec!["x-cohort".to_string()]);
        assert!(r.needs().cookies.is_empty());
    }
}
