//! A rolling update's plan (`strategy: rolling`): one pool moves from its
//! endpoints to a new set a batch at a time, bounded by `max_surge` and
//! `max_unavailable` (counts, or shares of the new set, as Kubernetes has
//! them), each new endpoint admitted once its readiness probe passes.

use super::fail;
use super::file::{FileCount, FileRollout};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use serde_saphyr::Location;
use std::net::SocketAddr;
use std::time::Duration;

/// An endpoint count: absolute, or a percentage of the new set's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// This many endpoints.
    Endpoints(u32),
    /// This percent of the new set (surge rounds up, unavailable down).
    Percent(u32),
}

impl Count {
    /// The count for a new set of `n` endpoints, rounded `up` or down.
    pub fn of(self, n: usize, up: bool) -> usize {
        match self {
            Count::Endpoints(c) => c as usize,
            Count::Percent(p) if up => (n * p as usize).div_ceil(100),
            Count::Percent(p) => n * p as usize / 100,
        }
    }
}

/// How a new endpoint shows it is ready: `GET path` answered 2xx within
/// `timeout`, `success_threshold` times in a row, probed every `period`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// The path probed.
    pub path: String,
    /// Time between probes (at least the analysis interval).
    #[serde(with = "super::units::millis")]
    pub period: Duration,
    /// Longest wait for a probe's answer.
    #[serde(with = "super::units::millis")]
    pub timeout: Duration,
    /// Passes in a row that make an endpoint ready.
    pub success_threshold: u32,
    /// A batch whose endpoints are not all ready by then rolls back.
    #[serde(with = "super::units::millis")]
    pub deadline: Duration,
}

/// A rolling update's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rolling {
    /// The pool whose endpoints are replaced.
    pub pool: String,
    /// Its new endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints the pool may have above the new set's size.
    pub max_surge: Count,
    /// Endpoints the pool may have serving below the new set's size.
    pub max_unavailable: Count,
    /// The probe that admits a new endpoint.
    pub readiness: Readiness,
    /// How long each batch is held and judged before the next.
    #[serde(with = "super::units::millis")]
    pub hold: Duration,
    /// What the new endpoints run (the pool's release once promoted; the
    /// deployment report's version).
    #[serde(default)]
    pub release: super::Release,
}

/// The stats group of a rolling update's old endpoints in `pool`.
pub fn old_group(pool: &str) -> String {
    format!("{pool}@old")
}

/// The stats group of a rolling update's new endpoints in `pool`.
pub fn new_group(pool: &str) -> String {
    format!("{pool}@new")
}

/// `(pool, "old" | "new")` when `name` is one of a rolling update's stats groups.
pub fn group_of(name: &str) -> Option<(&str, &str)> {
    let (pool, group) = name.rsplit_once('@')?;
    matches!(group, "old" | "new").then_some((pool, group))
}

/// Validates the rolling fields of `f` for a service with `pools`.
pub(super) fn validate(f: &mut FileRollout, pools: &[String], p: &str, at: &Location) -> Result<Rolling, Error> {
    let pool = f.pool.take().ok_or_else(|| fail(format!("{p}.pool"), at, "a rolling update names its `pool`"))?;
    if !pools.contains(&pool) {
        return Err(fail(format!("{p}.pool"), at, format!("unknown pool `{pool}` (pools: {})", pools.join(", "))));
    }
    let given = f.endpoints.take().unwrap_or_default();
    if given.is_empty() {
        return Err(fail(format!("{p}.endpoints"), at, "a rolling update needs the pool's new endpoints"));
    }
    let mut endpoints = Vec::new();
    for (i, e) in given.iter().enumerate() {
        let addr = super::resolve(e).map_err(|m| fail(format!("{p}.endpoints[{i}]"), at, m))?;
        if endpoints.contains(&addr) {
            return Err(fail(format!("{p}.endpoints[{i}]"), at, format!("duplicate endpoint {addr}")));
        }
        endpoints.push(addr);
    }
    let count = |c: Option<FileCount>, field: &str| -> Result<Count, Error> {
        Ok(match c {
            None => Count::Percent(25),
            Some(FileCount::Count(n)) => Count::Endpoints(n),
            Some(FileCount::Text(t)) => match t.trim().strip_suffix('%').and_then(|n| n.trim().parse::<u32>().ok()) {
                Some(n) if n <= 100 => Count::Percent(n),
                _ => {
                    return Err(fail(
                        format!("{p}.{field}"),
                        at,
                        format!("`{t}` is not a count or a percentage like 25%"),
                    ))
                }
            },
        })
    };
    let max_surge = count(f.max_surge.take(), "max_surge")?;
    let max_unavailable = count(f.max_unavailable.take(), "max_unavailable")?;
    let n = endpoints.len();
    if max_surge.of(n, true) == 0 && max_unavailable.of(n, false) == 0 {
        let msg = "max_surge and max_unavailable cannot both be 0: no endpoint could ever be replaced";
        return Err(fail(format!("{p}.max_unavailable"), at, msg));
    }
    let r = f.readiness.take().unwrap_or_default();
    let path = r.path.unwrap_or_else(|| "/".to_owned());
    if !path.starts_with('/') {
        return Err(fail(format!("{p}.readiness.path"), at, "must start with `/`"));
    }
    let readiness = Readiness {
        path,
        period: r.period.map_or(Duration::from_secs(1), |d| d.0).max(Duration::from_millis(10)),
        timeout: r.timeout.map_or(Duration::from_secs(1), |d| d.0).max(Duration::from_millis(1)),
        success_threshold: r.success_threshold.unwrap_or(1).max(1),
        deadline: r.deadline.map_or(Duration::from_secs(300), |d| d.0),
    };
    let release = f.release.take().unwrap_or_default();
    release.check().map_err(|(field, m)| fail(format!("{p}.release.{field}"), at, m))?;
    let hold = f.hold.take().map_or(Duration::from_secs(30), |d| d.0);
    Ok(Rolling { pool, endpoints, max_surge, max_unavailable, readiness, hold, release })
}
