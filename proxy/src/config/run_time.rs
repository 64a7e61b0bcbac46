//! What operators set at run time over the file — weights, suspended rules,
//! pools' endpoints and versions, and a rollout's mirror — which the state store keeps and every
//! snapshot built from the config applies.

use super::Release;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

/// Weights by pool name.
pub type WeightMap = BTreeMap<String, u32>;

/// What was set at run time and a snapshot rebuilt from the config keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunTime {
    /// Weights by service.
    pub weights: HashMap<String, WeightMap>,
    /// Suspended (rolled-back) pools by service.
    pub suspended: HashMap<String, BTreeSet<String>>,
    /// Pools set through the API, by service and pool.
    pub pools: HashMap<String, PoolSets>,
    /// Mirrors set by a rollout's mirror step, by service.
    pub mirrors: HashMap<String, MirrorSet>,
}

/// A mirror set at run time: copies of `percent` % of the service's
/// requests go to `pool` (the file's other mirror settings, or the defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MirrorSet {
    /// The pool copies go to.
    pub pool: String,
    /// Percent of the eligible requests copied.
    pub percent: f64,
}

/// A service's pools set at run time, by pool name.
pub type PoolSets = BTreeMap<String, PoolSet>;

/// A pool as the release tooling set it: its endpoints and what they run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolSet {
    /// Upstream addresses, replacing the file's.
    pub endpoints: Vec<SocketAddr>,
    /// What they run, replacing the file's.
    #[serde(default)]
    pub release: Release,
    /// During a rolling update: the endpoints that are new (recorded apart
    /// from the old ones, so the update can judge them against each other).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new: Vec<SocketAddr>,
}

/// Turns a `pool → weight` map into weights indexed like `pools`; pools not
/// named get 0. Shared with run-time weight changes.
pub fn weights_for(map: &WeightMap, pools: &[String]) -> Result<Vec<u32>, String> {
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
