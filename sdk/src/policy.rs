//! The policy trait, its inputs and its decisions.

use crate::Config;

/// A policy plugin: judges a rollout at every analysis tick.
///
/// The host builds a fresh instance for every tick (`init`, then `decide`),
/// so a policy keeps no state between ticks: everything it needs is in the
/// [`Context`] and the windows.
pub trait Policy: Sized {
    /// Builds the policy from its configuration; an error is a fault.
    fn init(config: &Config) -> Result<Self, String>;

    /// Decides one tick.
    fn decide(&self, ctx: &Context) -> Verdict;
}

/// Canary or blue-green.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Weight steps.
    Canary,
    /// Preview, switch, watch.
    BlueGreen,
}

/// Where the rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A canary stepping through weights.
    Stepping,
    /// Blue-green before the switch.
    Preview,
    /// Blue-green after the switch; [`Context::pre_switch`] holds the
    /// baseline's figures from just before it.
    PostSwitch,
}

/// One pool's figures over the analysis window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolWindow {
    /// The pool's name.
    pub name: String,
    /// Requests completed.
    pub requests: u64,
    /// Responses by status class: index 0 is 1xx … 4 is 5xx.
    pub status: [u64; 5],
    /// Proxy-side failures (counted as 5xx too): could not connect.
    pub connect_errors: u64,
    /// The upstream timed out.
    pub timeouts: u64,
    /// The upstream reset the connection.
    pub resets: u64,
    /// No healthy endpoint.
    pub no_healthy_endpoint: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Latency histogram: `(upper bound µs, count)`, non-empty buckets in
    /// ascending order, on the grid of [`latency_bucket`].
    pub latency: Vec<(u64, u64)>,
}

impl PoolWindow {
    /// These figures less `part` (figures of a later part of the same span):
    /// counts and histogram buckets subtracted; quantiles are left at 0.
    pub fn minus(&self, part: &PoolWindow) -> PoolWindow {
        let sub = |a: u64, b: u64| a.saturating_sub(b);
        let mut status = self.status;
        for (s, p) in status.iter_mut().zip(part.status) {
            *s = sub(*s, p);
        }
        let latency = self
            .latency
            .iter()
            .map(|&(upper, n)| {
                let taken = part.latency.iter().find(|&&(u, _)| u == upper).map_or(0, |&(_, m)| m);
                (upper, sub(n, taken))
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        PoolWindow {
            name: self.name.clone(),
            requests: sub(self.requests, part.requests),
            status,
            connect_errors: sub(self.connect_errors, part.connect_errors),
            timeouts: sub(self.timeouts, part.timeouts),
            resets: sub(self.resets, part.resets),
            no_healthy_endpoint: sub(self.no_healthy_endpoint, part.no_healthy_endpoint),
            latency,
            ..Default::default()
        }
    }

    /// The latency at quantile `q` (0 to 1) by the histogram: the upper
    /// bound of the bucket it falls in; 0 without latencies. (`p99_us` and
    /// the others are finer: read from the values as recorded.)
    pub fn quantile_us(&self, q: f64) -> u64 {
        quantile(&self.latency, q)
    }

    /// Failed requests (5xx, proxy errors included).
    pub fn failed(&self) -> u64 {
        self.status[4]
    }

    /// `failed / requests`; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed() as f64 / self.requests as f64
        }
    }
}

/// The rollout being judged, with every pool's window.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// The service.
    pub service: String,
    /// Canary or blue-green.
    pub strategy: Strategy,
    /// Where it stands.
    pub phase: Phase,
    /// Canary: the step (0-based). Blue-green: 0 before the switch, 1 after.
    pub step: u32,
    /// Steps in the plan.
    pub steps: u32,
    /// Time in the current step, ms.
    pub in_step_ms: u64,
    /// The step's hold, ms (`None` for a pause step).
    pub hold_ms: Option<u64>,
    /// The analysis interval, ms.
    pub interval_ms: u64,
    /// The pool that had the traffic before.
    pub baseline: String,
    /// The pool being rolled out.
    pub candidate: String,
    /// Weights in force, by pool.
    pub weights: Vec<(String, u32)>,
    /// Blue-green after the switch: the baseline's window just before it.
    pub pre_switch: Option<PoolWindow>,
    /// Consecutive faulted ticks of this policy before this one.
    pub faults: u32,
    /// Every pool's window: the analysis window, cut at the rollout's start
    /// (nothing from before the rollout).
    pub pools: Vec<PoolWindow>,
    /// Every pool's figures accumulated since the rollout started (or
    /// resumed after a restart): what a sequential test reads.
    pub rollout_totals: Vec<PoolWindow>,
    /// Every pool's figures accumulated since the current weights took
    /// effect (a step, a switch, a `set-weights`).
    pub step_totals: Vec<PoolWindow>,
}

impl Context {
    /// Pool `name`'s totals since the rollout started (empty if unknown).
    pub fn rollout_total(&self, name: &str) -> PoolWindow {
        find(&self.rollout_totals, name)
    }

    /// Pool `name`'s totals since the current weights took effect (empty if unknown).
    pub fn step_total(&self, name: &str) -> PoolWindow {
        find(&self.step_totals, name)
    }

    /// The window of the pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolWindow> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The baseline's window (empty if the host sent none).
    pub fn baseline_window(&self) -> PoolWindow {
        find(&self.pools, &self.baseline)
    }

    /// The candidate's window (empty if the host sent none).
    pub fn candidate_window(&self) -> PoolWindow {
        find(&self.pools, &self.candidate)
    }

    /// Whether the current step's hold has elapsed.
    pub fn hold_elapsed(&self) -> bool {
        self.hold_ms.is_some_and(|h| self.in_step_ms >= h)
    }
}

/// What the rollout does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep the weights; at the end of a hold, wait for more data.
    Hold,
    /// Canary: these weights on baseline and candidate now, same step.
    SetWeights(Vec<(String, u32)>),
    /// Advance (after the step's hold), switch (blue-green preview), or finish.
    Promote,
    /// Roll back, or switch back, at once.
    Rollback(String),
}

/// A decision with an explanation for the deployment history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// Why (kept up to 1 KiB).
    pub explanation: Option<String>,
}

impl Verdict {
    /// Hold, because `why`.
    pub fn hold(why: impl Into<String>) -> Self {
        Verdict { decision: Decision::Hold, explanation: Some(why.into()) }
    }

    /// Promote, because `why`.
    pub fn promote(why: impl Into<String>) -> Self {
        Verdict { decision: Decision::Promote, explanation: Some(why.into()) }
    }

    /// Roll back with `reason` (also the explanation).
    pub fn rollback(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Verdict { decision: Decision::Rollback(reason.clone()), explanation: Some(reason) }
    }

    /// Set the weights, because `why`.
    pub fn set_weights(weights: &[(&str, u32)], why: impl Into<String>) -> Self {
        let weights = weights.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect();
        Verdict { decision: Decision::SetWeights(weights), explanation: Some(why.into()) }
    }
}

/// Pool `name` of `pools`, or an empty window of that name.
fn find(pools: &[PoolWindow], name: &str) -> PoolWindow {
    pools
        .iter()
        .find(|p| p.name == name)
        .cloned()
        .unwrap_or_else(|| PoolWindow { name: name.to_owned(), ..Default::default() })
}

/// The latency the host's statistics record for `us` µs: clamped to 1 µs
/// .. 60 s and rounded up within three significant digits (hdrhistogram's
/// highest equivalent value at 3 significant figures). A window's
/// `p50_us`..`p999_us` and `max_us` are read from these values, in the host
/// and in the test harness alike.
pub fn recorded_us(us: u64) -> u64 {
    let v = us.clamp(1, 60_000_000);
    if v < 2048 {
        return v;
    }
    let size = 1u64 << (63 - v.leading_zeros() - 10);
    (v & !(size - 1)) + size - 1
}

/// The value at quantile `q` (0 to 1) of `values` (`(value, count)`,
/// sorted by value), by hdrhistogram's rule: the first value whose
/// cumulative count reaches `ceil(q × total)`; 0 when there are none. The
/// host's windows and the test harness both read their quantiles with it.
pub fn quantile(values: &[(u64, u64)], q: f64) -> u64 {
    let total: u64 = values.iter().map(|&(_, n)| n).sum();
    let target = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    values
        .iter()
        .find(|&&(_, n)| {
            seen += n;
            seen >= target
        })
        .map_or(0, |&(v, _)| v)
}

/// The upper bound (µs) of the histogram bucket holding `us`: values keep
/// their top four significant bits, so a bucket is at most 1/8 of its value
/// wide. Host and harness bucket latencies with this.
pub fn latency_bucket(us: u64) -> u64 {
    if us < 16 {
        return us;
    }
    let shift = 60 - us.leading_zeros();
    ((us >> shift) << shift) | ((1 << shift) - 1)
}

/// The lowest value (µs) of the histogram bucket whose upper bound is `upper`.
pub fn bucket_lower(upper: u64) -> u64 {
    if upper < 16 {
        return upper;
    }
    let shift = 60 - upper.leading_zeros();
    (upper >> shift) << shift
}

#[cfg(test)]
mod tests {
    use super::latency_bucket;

    #[test]
    fn buckets_keep_four_significant_bits() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(15), 15);
        assert_eq!(latency_bucket(16), 17);
        assert_eq!(latency_bucket(31), 31);
        assert_eq!(latency_bucket(32), 35);
        assert_eq!(latency_bucket(35), 35);
        assert_eq!(latency_bucket(1000), 1023);
        for v in [17u64, 999, 123_456, 59_999_999, u64::MAX / 3] {
            let u = latency_bucket(v);
            assert!(u >= v && (u - v) as f64 <= v as f64 / 8.0, "{v} -> {u}");
            assert_eq!(latency_bucket(u), u, "an upper bound is its own bucket");
        }
    }
}
