//! What rollouts this process started and finished, and how long its
//! commits to the state store took: the deployment metrics on `/metrics`
//! (a fleet's replicas each count the ends they wrote, so the fleet's sum
//! counts each rollout once).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bucket bounds of rollout durations, in seconds: 1 min to 1 day.
pub const DURATION_BUCKETS: [f64; 9] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0];

/// Bucket bounds of times to restore (a failing verdict to traffic back on
/// the baseline), in seconds: 100 ms (the analysis acting) to 1 day (a person).
pub const RESTORE_BUCKETS: [f64; 9] = [0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 14400.0, 86400.0];

/// Bucket bounds of commits to the state store, in seconds: 0.5 ms (redb's
/// fsync on a fast disk) to 5 s (a slow disk, or etcd far away).
pub const COMMIT_BUCKETS: [f64; 9] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0];

/// A histogram of times: how many, their sum, and cumulative counts per bound.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    /// How many.
    pub count: u64,
    /// Added up, seconds.
    pub sum_seconds: f64,
    /// Cumulative counts per bound ([`DURATION_BUCKETS`], [`RESTORE_BUCKETS`]
    /// or [`COMMIT_BUCKETS`]).
    pub buckets: [u64; 9],
}

impl Timings {
    fn add(&mut self, bounds: &[f64; 9], seconds: f64) {
        self.count += 1;
        self.sum_seconds += seconds;
        for (bound, n) in bounds.iter().zip(&mut self.buckets) {
            if seconds <= *bound {
                *n += 1;
            }
        }
    }
}

/// Counts by `(service, strategy)` or `(service, outcome)`.
pub type ByService<T> = Vec<((String, String), T)>;

/// Counts by service.
#[derive(Debug, Default)]
pub struct Tally {
    inner: Mutex<Counts>,
}

#[derive(Clone, Debug, Default)]
struct Counts {
    started: BTreeMap<(String, String), u64>,
    finished: BTreeMap<(String, String), Timings>,
    restored: BTreeMap<String, Timings>,
    committed: Timings,
}

impl Tally {
    /// A rollout of `service` with `strategy` (`canary`, `blue-green`) started.
    pub fn started(&self, service: &str, strategy: &str) {
        *self.lock().started.entry((service.to_owned(), strategy.to_owned())).or_default() += 1;
    }

    /// A rollout of `service` ended with `outcome` after `seconds`.
    pub fn finished(&self, service: &str, outcome: &str, seconds: f64) {
        self.lock()
            .finished
            .entry((service.to_owned(), outcome.to_owned()))
            .or_default()
            .add(&DURATION_BUCKETS, seconds);
    }

    /// Traffic of `service` was back on its baseline `seconds` after a failing verdict.
    pub fn restored(&self, service: &str, seconds: f64) {
        self.lock().restored.entry(service.to_owned()).or_default().add(&RESTORE_BUCKETS, seconds);
    }

    /// A commit to the state store (applied, refused or failed) took `seconds`.
    pub fn committed(&self, seconds: f64) {
        self.lock().committed.add(&COMMIT_BUCKETS, seconds);
    }

    /// How long the commits to the state store took.
    pub fn commits(&self) -> Timings {
        self.lock().committed.clone()
    }

    /// `((service, strategy), started)`, `((service, outcome), durations)`
    /// and `(service, times to restore)`.
    pub fn read(&self) -> (ByService<u64>, ByService<Timings>, Vec<(String, Timings)>) {
        let c = self.lock().clone();
        (c.started.into_iter().collect(), c.finished.into_iter().collect(), c.restored.into_iter().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
