//! Per-plugin call statistics, recorded on the request path without
//! contention: each thread writes its own cache-line-aligned shard, and
//! readers (`GET /v1/plugins`, `/metrics`) sum the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

const SHARDS: usize = 16;
/// Router calls are timed one in this many (two clock reads cost about 5 %
/// of a call); policy calls always.
pub const TIME_ONE_IN: u32 = 8;
/// Log-linear buckets of call time in ns: 4 per power of two, up to 2^40 ns.
const BUCKETS: usize = 160;

/// Calls, faults by kind, and a histogram of call times.
pub struct CallStats {
    shards: Box<[Shard]>,
}

#[repr(align(128))]
struct Shard {
    calls: AtomicU64,
    total_ns: AtomicU64,
    /// Fuel burned (wasmtime's instruction budget), faulted calls included.
    fuel: AtomicU64,
    faults: [AtomicU64; super::Fault::LABELS.len()],
    buckets: [AtomicU64; BUCKETS],
}

impl Default for CallStats {
    fn default() -> Self {
        let shard = || Shard {
            calls: AtomicU64::new(0),
            total_ns: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            faults: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        CallStats { shards: (0..SHARDS).map(|_| shard()).collect() }
    }
}

/// A summary for the API and metrics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Calls made.
    pub calls: u64,
    /// Faults, all kinds.
    pub faults: u64,
    /// Faults by kind (`trap`, `deadline`, `memory`, `error`, `nonsense`).
    pub faults_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Mean call time, µs.
    pub mean_us: f64,
    /// 99th percentile call time, µs (the bucket's upper bound, within 19 %).
    pub p99_us: f64,
    /// Estimated time in calls, seconds (mean × calls), faulted ones included.
    pub total_seconds: f64,
    /// Fuel burned in calls (about one unit per WebAssembly instruction),
    /// faulted ones included: a budget run out counts in full.
    pub fuel: u64,
}

thread_local! {
    /// Router calls on this thread, for timing one in [`TIME_ONE_IN`] (kept
    /// by the thread, not by an instance that may be rebuilt).
    static ROUTER_CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether to time this router call.
pub fn time_this_call() -> bool {
    ROUTER_CALLS.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n.is_multiple_of(TIME_ONE_IN)
    })
}

impl CallStats {
    fn shard(&self) -> &Shard {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS);
        &self.shards[INDEX.with(|i| *i)]
    }

    /// Records one call, the fuel it burned, and how long it took when it was timed (the
    /// request path times one call in [`TIME_ONE_IN`]; the mean and p99 come
    /// from the timed ones).
    pub fn call(&self, took: Option<Duration>, fuel: u64) {
        let s = self.shard();
        s.calls.fetch_add(1, Relaxed);
        s.fuel.fetch_add(fuel, Relaxed);
        if let Some(took) = took {
            let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
            s.total_ns.fetch_add(ns, Relaxed);
            s.buckets[bucket(ns)].fetch_add(1, Relaxed);
        }
    }

    /// Records a fault of kind `index` (into [`super::Fault::LABELS`]).
    pub fn fault(&self, index: usize) {
        if let Some(f) = self.shard().faults.get(index) {
            f.fetch_add(1, Relaxed);
        }
    }

    /// Sums the shards.
    pub fn summary(&self) -> Summary {
        let mut out = Summary::default();
        let mut total_ns = 0u64;
        let mut buckets = [0u64; BUCKETS];
        for s in self.shards.iter() {
            out.calls += s.calls.load(Relaxed);
            out.fuel += s.fuel.load(Relaxed);
            total_ns = total_ns.saturating_add(s.total_ns.load(Relaxed));
            for (i, label) in super::Fault::LABELS.iter().enumerate() {
                let n = s.faults[i].load(Relaxed);
                *out.faults_by_kind.entry(label).or_default() += n;
                out.faults += n;
            }
            for (b, a) in buckets.iter_mut().zip(&s.buckets) {
                *b += a.load(Relaxed);
            }
        }
        let timed: u64 = buckets.iter().sum();
        if timed > 0 {
            out.mean_us = total_ns as f64 / timed as f64 / 1000.0;
            out.total_seconds = out.mean_us * out.calls as f64 / 1e6;
            let target = (timed as f64 * 0.99).ceil() as u64;
            let mut seen = 0;
            let i = buckets.iter().position(|n| {
                seen += n;
                seen >= target
            });
            out.p99_us = i.map_or(0.0, |i| upper(i) as f64 / 1000.0);
        }
        out
    }
}

/// The bucket of `ns`: 4 per power of two.
fn bucket(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros() as usize;
    let sub = ((ns >> (log - 2)) & 3) as usize;
    (log * 4 + sub - 4).min(BUCKETS - 1)
}

/// The largest value in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let (log, sub) = ((i + 4) / 4, (i + 4) % 4);
    ((4 + sub as u64 + 1) << (log - 2)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for ns in [0u64, 1, 3, 4, 5, 7, 8, 100, 1_000, 65_535, 1 << 30, 123_456_789_012] {
            let b = bucket(ns);
            assert!(b >= last, "{ns}");
            last = b;
            assert!(upper(b) >= ns && (upper(b) - ns) as f64 <= 0.25 * ns as f64 + 1.0, "{ns} -> {}", upper(b));
        }
    }

    #[test]
    fn summary_sums_threads() {
        let s = std::sync::Arc::new(CallStats::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.call(Some(Duration::from_micros(2)), 10);
                    }
                    s.fault(1);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let sum = s.summary();
        assert_eq!((sum.calls, sum.faults, sum.faults_by_kind["deadline"]), (4000, 4, 4));
        assert!((sum.mean_us - 2.0).abs() < 1e-9);
        assert!((2.0..=2.5).contains(&sum.p99_us), "{}", sum.p99_us);
    }
}
