//! What rollouts this process started and finished: the deployment metrics
//! on `/metrics` (a fleet's replicas each count the ends they wrote, so the
//! fleet's sum counts each rollout once).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bucket bounds of rollout durations, in seconds: 1 min to 1 day.
pub const DURATION_BUCKETS: [f64; 9] = [60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0];

/// How many rollouts ended with one outcome, and how long they took.
#[derive(Clone, Debug, Default)]
pub struct Finished {
    /// Rollouts.
    pub count: u64,
    /// Their durations added up, seconds.
    pub sum_seconds: f64,
    /// Cumulative counts per [`DURATION_BUCKETS`] bound.
    pub buckets: [u64; DURATION_BUCKETS.len()],
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
    finished: BTreeMap<(String, String), Finished>,
}

impl Tally {
    /// A rollout of `service` with `strategy` (`canary`, `blue-green`) started.
    pub fn started(&self, service: &str, strategy: &str) {
        *self.lock().started.entry((service.to_owned(), strategy.to_owned())).or_default() += 1;
    }

    /// A rollout of `service` ended with `outcome` after `seconds`.
    pub fn finished(&self, service: &str, outcome: &str, seconds: f64) {
        let mut counts = self.lock();
        let f = counts.finished.entry((service.to_owned(), outcome.to_owned())).or_default();
        f.count += 1;
        f.sum_seconds += seconds;
        for (bound, n) in DURATION_BUCKETS.iter().zip(&mut f.buckets) {
            if seconds <= *bound {
                *n += 1;
            }
        }
    }

    /// `((service, strategy), started)` and `((service, outcome), finished)`.
    pub fn read(&self) -> (ByService<u64>, ByService<Finished>) {
        let c = self.lock().clone();
        (c.started.into_iter().collect(), c.finished.into_iter().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
