//! Per-pool statistics: latency histograms (1 µs to 60 s, 3 significant
//! digits), responses by status class and proxy-side errors by kind, over a
//! sliding window and since start. Failures the client caused (a bad or
//! abandoned upload, a stall, going away) are counted apart, by kind, and
//! nowhere else: they are not the pool's requests, latency or errors.
//!
//! Request path: [`record`] writes into the worker's own thread-local
//! recorders ([`recorder`]). Every tick (the window's resolution) each worker
//! sends what it recorded to the control path, where [`Stats`] merges it into
//! per-pool rings ([`window`]). Prometheus reads the same aggregates at
//! scrape time ([`metrics`]), so a scrape costs the request path nothing.
//! In a fleet, [`fleet`] holds what the other replicas recorded, which a
//! rollout's analysis reads merged with this replica's own figures.

pub mod fleet;
mod recorder;
mod window;

pub use fleet::Recording;
pub use window::{Figures, Lifetime};

use crate::error::ErrorClass;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Response status classes kept: 1xx, 2xx, 3xx, 4xx, 5xx.
pub const STATUS_CLASSES: usize = 5;
/// Proxy-side error kinds kept.
pub const ERROR_KINDS: usize = 4;
/// Client fault kinds kept.
pub const CLIENT_KINDS: usize = 4;
/// Mirror outcomes kept.
pub const MIRROR_KINDS: usize = 3;

/// The class of a response status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx
    Informational = 0,
    /// 2xx
    Success = 1,
    /// 3xx
    Redirection = 2,
    /// 4xx
    ClientError = 3,
    /// 5xx (including the proxy's own 502/503/504)
    ServerError = 4,
}

/// Labels of the status classes, by index.
pub const STATUS_LABELS: [&str; STATUS_CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A proxy-side failure attributed to a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting to the upstream failed.
    Connect = 0,
    /// The upstream did not answer in time.
    Timeout = 1,
    /// The upstream broke the exchange.
    Reset = 2,
    /// No endpoint of the pool was available.
    NoHealthyEndpoint = 3,
}

/// Labels of the error kinds, by index (see [`ErrorClass::metric_label`]).
pub const ERROR_LABELS: [&str; ERROR_KINDS] = [
    ErrorClass::UpstreamConnect.metric_label(),
    ErrorClass::UpstreamTimeout.metric_label(),
    ErrorClass::UpstreamReset.metric_label(),
    ErrorClass::NoHealthyEndpoint.metric_label(),
];

/// A failure the client caused after its request reached a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// The body was over the service's cap.
    TooLarge = 0,
    /// The client stalled mid-body.
    Timeout = 1,
    /// The body was malformed.
    BadBody = 2,
    /// The client went away before its response.
    Closed = 3,
}

/// Labels of the client fault kinds, by index (see [`ErrorClass::metric_label`]).
pub const CLIENT_LABELS: [&str; CLIENT_KINDS] = [
    ErrorClass::PayloadTooLarge.metric_label(),
    ErrorClass::RequestTimeout.metric_label(),
    ErrorClass::BadBody.metric_label(),
    ErrorClass::ClientClosed.metric_label(),
];

/// What became of a copy sent to a mirror pool (counted on that pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorKind {
    /// The copy's answer was compared with the primary's.
    Compared = 0,
    /// ... and its status class differed.
    Mismatched = 1,
    /// The copy was not sent: too many in flight, or its body was too large.
    Dropped = 2,
}

/// Labels of the mirror outcomes, by index.
pub const MIRROR_LABELS: [&str; MIRROR_KINDS] = ["compared", "mismatched", "dropped"];

impl ClientKind {
    /// The kind of a request-path error, when the client caused it.
    pub fn of(class: ErrorClass) -> Option<Self> {
        match class {
            ErrorClass::PayloadTooLarge => Some(Self::TooLarge),
            ErrorClass::RequestTimeout => Some(Self::Timeout),
            ErrorClass::ClientClosed => Some(Self::Closed),
            c if c.is_client_fault() => Some(Self::BadBody),
            _ => None,
        }
    }
}

impl StatusClass {
    /// The class of a status code.
    pub fn of(status: u16) -> Self {
        match status {
            0..=199 => Self::Informational,
            200..=299 => Self::Success,
            300..=399 => Self::Redirection,
            400..=499 => Self::ClientError,
            _ => Self::ServerError,
        }
    }
}

impl ErrorKind {
    /// The kind of a request-path error, when it is the pool's doing.
    pub fn of(class: ErrorClass) -> Option<Self> {
        match class {
            ErrorClass::UpstreamConnect => Some(Self::Connect),
            ErrorClass::UpstreamTimeout => Some(Self::Timeout),
            ErrorClass::UpstreamReset => Some(Self::Reset),
            ErrorClass::NoHealthyEndpoint => Some(Self::NoHealthyEndpoint),
            _ => None,
        }
    }
}

/// What one worker recorded for one pool during one tick.
#[derive(Debug)]
pub struct Second {
    /// Tick number, stamped by the control path.
    at: u64,
    /// `(latency µs, count)` for each non-empty histogram bucket.
    latencies: Vec<(u64, u64)>,
    status: [u64; STATUS_CLASSES],
    errors: [u64; ERROR_KINDS],
    client: [u64; CLIENT_KINDS],
    mirror: [u64; MIRROR_KINDS],
    requests: u64,
}

/// Records what became of a mirrored copy against the mirror pool `slot`
/// (`Mismatched` counts as compared too).
pub fn record_mirror(slot: usize, kind: MirrorKind) {
    recorder::record_mirror(slot, kind);
}

/// Records one request's outcome against pool `slot`; a client fault counts
/// only as that. Request path: touches only this thread's recorders.
pub fn record(slot: usize, latency: Duration, status: u16, error: Option<ErrorClass>) {
    match error.and_then(ClientKind::of) {
        Some(kind) => recorder::record_client(slot, kind),
        None => {
            recorder::record(slot, latency.as_micros() as u64, StatusClass::of(status), error.and_then(ErrorKind::of))
        }
    }
}

/// Takes what this thread recorded (what a worker's flush sends).
pub fn take_local() -> Flush {
    recorder::take()
}

/// A batch of per-pool data from one worker.
pub type Flush = Vec<(usize, Second)>;

/// Sends this worker's recordings to the control path every `tick`, until the
/// receiver is gone. Runs on each worker's runtime.
pub async fn flush_loop(tx: mpsc::UnboundedSender<Flush>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let batch = recorder::take();
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
    }
}

/// The control path's aggregates for every pool that ever existed.
pub struct Stats {
    tick: Duration,
    window_ticks: u64,
    start: Instant,
    /// The wall-clock tick (`unix time / tick`) local tick 0 fell in.
    origin: u64,
    /// Ticks other replicas' figures may take to arrive (0 outside a fleet).
    remote_lag: std::sync::atomic::AtomicU64,
    inner: Mutex<Inner>,
}

struct Inner {
    slots: HashMap<(String, String), usize>,
    names: Vec<(String, String)>,
    pools: Vec<window::PoolStats>,
    remote: fleet::Remote,
}

// === impl Stats ===

impl Stats {
    /// Aggregates with a `window` of `tick`-long slots.
    pub fn new(window: Duration, tick: Duration) -> Self {
        let tick = tick.max(Duration::from_millis(10));
        let window_ticks = (window.as_nanos() / tick.as_nanos()).max(1) as u64;
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Stats {
            tick,
            window_ticks,
            start: Instant::now(),
            origin: (unix.as_nanos() / tick.as_nanos()) as u64,
            remote_lag: Default::default(),
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                names: Vec::new(),
                pools: Vec::new(),
                remote: Default::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Control path only; a panic while holding it cannot leave the data inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The slot of a pool, stable for the process's life (same names, same slot).
    pub fn slot(&self, service: &str, pool: &str) -> usize {
        let mut inner = self.lock();
        let key = (service.to_owned(), pool.to_owned());
        if let Some(&s) = inner.slots.get(&key) {
            return s;
        }
        let s = inner.pools.len();
        inner.slots.insert(key.clone(), s);
        inner.names.push(key);
        let capacity = self.window_ticks;
        inner.pools.push(window::PoolStats::new(capacity));
        s
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.tick * self.window_ticks as u32
    }

    /// The resolution.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    fn now(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.tick.as_nanos()) as u64
    }

    /// Merges a worker's batch, stamped with the current tick.
    pub fn add(&self, batch: Flush) {
        let now = self.now();
        let mut inner = self.lock();
        for (slot, second) in batch {
            if let Some(p) = inner.pools.get_mut(slot) {
                p.add(second, now);
            }
        }
    }

    /// Figures of pool `slot` over the last `span` (at most the window; the
    /// whole window when `None`).
    pub fn recent(&self, slot: usize, span: Option<Duration>) -> Figures {
        let (from, now) = self.last(span);
        self.range(slot, from, now)
    }

    /// The ticks of the last `span` (the whole window when `None`): `(first, now)`.
    fn last(&self, span: Option<Duration>) -> (u64, u64) {
        let ticks = span.map_or(self.window_ticks, |s| self.ticks_in(s).max(1));
        let now = self.now();
        ((now + 1).saturating_sub(ticks), now)
    }

    /// Figures of pool `slot` over ticks `from..=through` of [`Stats::now_tick`]'s
    /// clock (only the last window's ticks are kept).
    pub fn range(&self, slot: usize, from: u64, through: u64) -> Figures {
        self.lock().pools.get(slot).map(|p| p.range(from, through)).unwrap_or_default()
    }

    /// The current tick: data recorded now is stamped with it (and it is
    /// still filling; earlier ticks are complete).
    pub fn now_tick(&self) -> u64 {
        self.now()
    }

    /// Whole ticks in `span`.
    pub fn ticks_in(&self, span: Duration) -> u64 {
        (span.as_nanos() / self.tick.as_nanos()) as u64
    }

    /// The last tick whose figures are complete: the one before the current
    /// one, or in a fleet the last one other replicas' figures have reached.
    pub fn settled_tick(&self) -> u64 {
        self.now().saturating_sub(1 + self.remote_lag.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// In a fleet: other replicas' figures arrive up to `delay` after their tick.
    pub fn expect_remote(&self, delay: Duration) {
        let ticks = delay.as_nanos().div_ceil(self.tick.as_nanos()) as u64;
        self.remote_lag.store(ticks, std::sync::atomic::Ordering::Relaxed);
    }

    /// [`Stats::range`] with what the fleet's other replicas recorded for
    /// the same pool over the same ticks, merged.
    pub fn fleet_range(&self, slot: usize, from: u64, through: u64) -> Figures {
        let inner = self.lock();
        let Some(p) = inner.pools.get(slot) else { return Figures::default() };
        let (service, pool) = &inner.names[slot];
        let remote = inner.remote.range(service, pool, from + self.origin, through + self.origin);
        Figures::sum([&p.range(from, through), &remote])
    }

    /// [`Stats::recent`], merged with the fleet's other replicas (see [`Stats::fleet_range`]).
    pub fn fleet_recent(&self, slot: usize, span: Duration) -> Figures {
        let (from, now) = self.last(Some(span));
        self.fleet_range(slot, from, now)
    }

    /// This replica's figures of `service`'s pools for each completed tick
    /// from `from` (at most a window back); returns them and the next tick to start from.
    pub fn recording(&self, service: &str, from: u64) -> (Recording, u64) {
        let tick_ms = self.tick.as_millis() as u64;
        let Some(through) = self.now().checked_sub(1) else {
            return (Recording { tick_ms, ticks: Vec::new() }, from); // no tick completed yet
        };
        let from = from.max((through + 1).saturating_sub(self.window_ticks));
        let inner = self.lock();
        let pools: Vec<(&str, &window::PoolStats)> = inner
            .names
            .iter()
            .zip(&inner.pools)
            .filter(|((s, _), _)| s == service)
            .map(|((_, p), stats)| (p.as_str(), stats))
            .collect();
        let ticks = (from..=through)
            .map(|t| {
                let figures = pools.iter().map(|(name, p)| (name.to_string(), p.range(t, t)));
                (
                    t + self.origin,
                    figures
                        .filter(|(_, f)| f.requests + f.client_errors.iter().chain(&f.mirror).sum::<u64>() > 0)
                        .collect(),
                )
            })
            .filter(|(_, pools): &(u64, Vec<_>)| !pools.is_empty())
            .collect();
        (Recording { tick_ms, ticks }, through + 1)
    }

    /// Takes another replica's recording of `service` (one with another tick length is ignored).
    pub fn add_remote(&self, replica: &str, service: &str, recording: Recording) {
        if recording.tick_ms != self.tick.as_millis() as u64 {
            return;
        }
        let keep = self.window_ticks + self.remote_lag.load(std::sync::atomic::Ordering::Relaxed) + 1;
        let oldest = (self.now() + self.origin).saturating_sub(keep);
        self.lock().remote.add(replica, service, recording, oldest);
    }

    /// Figures of pool `slot` since start.
    pub fn lifetime(&self, slot: usize) -> Figures {
        self.lock().pools.get(slot).map(|p| p.lifetime()).unwrap_or_default()
    }

    /// Runs `f` over every pool's `(service, pool)` names and lifetime aggregates.
    pub fn each_lifetime(&self, mut f: impl FnMut(&str, &str, &Lifetime)) {
        let inner = self.lock();
        for (i, (svc, pool)) in inner.names.iter().enumerate() {
            f(svc, pool, inner.pools[i].since_start());
        }
    }

    /// Starts merging batches from the workers; runs on the control path.
    pub fn spawn_aggregator(self: &Arc<Self>) -> mpsc::UnboundedSender<Flush> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Flush>();
        let stats = self.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                stats.add(batch);
            }
        });
        tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles from the recorders equal a reference computed from the same latencies.
    #[test]
    fn recording_matches_a_reference() {
        let stats = Stats::new(Duration::from_secs(30), Duration::from_secs(1));
        let slot = stats.slot("svc", "stable");
        let mut rng = fastrand::Rng::with_seed(7);
        // A long-tailed mix: mostly ~1-5 ms, some ~50-500 ms, a few seconds.
        let mut lat: Vec<u64> = (0..100_000)
            .map(|_| match rng.u32(..1000) {
                0..=949 => rng.u64(1_000..5_000),
                950..=997 => rng.u64(50_000..500_000),
                _ => rng.u64(1_000_000..9_000_000),
            })
            .collect();
        for (i, &us) in lat.iter().enumerate() {
            let status = if i % 50 == 0 { 503 } else { 200 };
            let err = (i % 200 == 0).then_some(ErrorClass::UpstreamConnect);
            record(slot, Duration::from_micros(us), status, err);
        }
        stats.add(recorder::take());
        let f = stats.lifetime(slot);
        let w = stats.recent(slot, None);
        assert_eq!(w.latency.iter().map(|&(_, n)| n).sum::<u64>(), 100_000, "the window's latencies, merged");
        assert!(w.latency.windows(2).all(|p| p[0].0 < p[1].0), "ascending, one entry per value");
        assert_eq!(f, Figures { latency: vec![], ..w }, "one tick: window and lifetime agree");
        assert_eq!(f.requests, 100_000);
        assert_eq!(f.status[4], 2_000);
        assert_eq!(f.errors[ErrorKind::Connect as usize], 500);
        lat.sort_unstable();
        let reference = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).saturating_sub(1)];
        for (q, got) in [(0.5, f.p50_us), (0.9, f.p90_us), (0.99, f.p99_us), (0.999, f.p999_us), (1.0, f.max_us)] {
            let want = reference(q);
            let rel = (got as f64 - want as f64).abs() / want as f64;
            assert!(rel <= 0.001, "q{q}: got {got} µs, reference {want} µs ({:.4} off)", rel);
        }
        assert!(recorder::take().is_empty(), "taking resets the recorders");
    }

    #[test]
    fn slots_are_stable_by_name() {
        let stats = Stats::new(Duration::from_secs(30), Duration::from_secs(1));
        let a = stats.slot("s", "stable");
        let b = stats.slot("s", "canary");
        assert_ne!(a, b);
        assert_eq!(stats.slot("s", "stable"), a);
    }

    #[tokio::test(start_paused = true)]
    async fn each_completed_tick_is_published_once() {
        let stats = Stats::new(Duration::from_secs(5), Duration::from_millis(100));
        let slot = stats.slot("web", "canary");
        let (first, mut next) = stats.recording("web", 0);
        assert!(first.ticks.is_empty());
        let mut seen = 0;
        for round in 0..5u64 {
            for _ in 0..3 {
                record(slot, Duration::from_millis(1), 503, None);
                stats.add(recorder::take());
                tokio::time::advance(Duration::from_millis(100)).await;
            }
            tokio::time::advance(Duration::from_millis(100)).await;
            let (rec, then) = stats.recording("web", next);
            next = then;
            let n: u64 = rec.ticks.iter().flat_map(|(_, p)| p.iter().map(|(_, f)| f.requests)).sum();
            assert_eq!(n, 3, "round {round}: {rec:?}");
            seen += n;
        }
        assert_eq!(seen, 15);
    }
}
