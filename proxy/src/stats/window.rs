//! Per-pool aggregates on the control path: a ring of per-tick [`Second`]s
//! (the sliding window) and lifetime totals.
//!
//! Time is a tick count supplied by the caller, so expiry is tested on a
//! controllable clock.

use super::recorder::histogram;
use super::{Second, CLIENT_KINDS, ERROR_KINDS, MIRROR_KINDS, STATUS_CLASSES};
use hdrhistogram::Histogram;
use std::collections::VecDeque;

/// Figures over a span of time.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Requests completed (a response head was sent, or the proxy failed it).
    pub requests: u64,
    /// Responses by status class: index 0 is 1xx ... 4 is 5xx.
    pub status: [u64; STATUS_CLASSES],
    /// Proxy-side errors by [`super::ErrorKind`].
    pub errors: [u64; ERROR_KINDS],
    /// Failures the client caused, by [`super::ClientKind`]: not in
    /// `requests`, `status`, `errors` or the latencies.
    #[serde(default)]
    pub client_errors: [u64; CLIENT_KINDS],
    /// A mirror pool's copies by [`super::MirrorKind`]: compared with the
    /// primary's answer, of which mismatched, and dropped.
    #[serde(default)]
    pub mirror: [u64; MIRROR_KINDS],
    /// Latency quantiles in microseconds: p50, p90, p99, p99.9, max (0 without data).
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// The window's latencies, `(µs, count)` in ascending order (empty for
    /// lifetime figures): what policy plugins get as a histogram.
    pub latency: Vec<(u64, u64)>,
}

impl Figures {
    /// Failed requests: 5xx responses plus proxy-side errors that produced none of them.
    pub fn failed(&self) -> u64 {
        self.status[4]
    }

    /// Mirrored copies whose status class differed from the primary's,
    /// over those compared; 0 without any.
    pub fn mismatch_rate(&self) -> f64 {
        let [compared, mismatched, _] = self.mirror;
        if compared == 0 {
            0.0
        } else {
            mismatched as f64 / compared as f64
        }
    }

    /// `failed / requests`, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failed() as f64 / self.requests as f64
        }
    }

    /// Adds `other`'s counts and latencies (figures of a later span).
    pub fn merge(&mut self, other: &Figures) {
        *self = Figures::sum([&*self, other]);
    }

    /// Figures of spans (or replicas) added up: counts summed, latencies
    /// merged and their quantiles read once, however many parts.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Figures>) -> Figures {
        let mut out = Figures::default();
        let mut latencies = Vec::new();
        for f in parts {
            out.requests += f.requests;
            add_into(&mut out.status, &f.status);
            add_into(&mut out.errors, &f.errors);
            add_into(&mut out.client_errors, &f.client_errors);
            add_into(&mut out.mirror, &f.mirror);
            latencies.extend_from_slice(&f.latency);
        }
        latencies.sort_unstable_by_key(|&(v, _)| v);
        out.set_latency(latencies);
        out
    }

    /// Sets the latencies (sorted by value; equal values are folded) and the
    /// quantiles read from them.
    fn set_latency(&mut self, mut latencies: Vec<(u64, u64)>) {
        latencies.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        // The SDK's rule, so a policy tested with its harness decides the same here.
        let at = |q: f64| switchyard_sdk::quantile(&latencies, q);
        (self.p50_us, self.p90_us, self.p99_us, self.p999_us) = (at(0.5), at(0.9), at(0.99), at(0.999));
        self.max_us = latencies.last().map_or(0, |&(v, _)| v);
        self.latency = latencies;
    }

    fn from_lifetime(l: &Lifetime) -> Self {
        let h = &l.latency;
        let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        Figures {
            requests: l.requests,
            status: l.status,
            errors: l.errors,
            client_errors: l.client,
            mirror: l.mirror,
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
            latency: Vec::new(),
        }
    }
}

/// One pool's window and lifetime.
pub(super) struct PoolStats {
    ring: VecDeque<Second>,
    /// Ticks kept in the ring.
    capacity: u64,
    since_start: Lifetime,
}

/// A pool's aggregates since start: what `/metrics` exposes as counters and
/// a latency histogram.
pub struct Lifetime {
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// Responses by status class (1xx–5xx).
    pub status: [u64; STATUS_CLASSES],
    /// Upstream failures by kind.
    pub errors: [u64; ERROR_KINDS],
    /// Client faults by kind.
    pub client: [u64; CLIENT_KINDS],
    /// Mirrored copies by outcome.
    pub mirror: [u64; MIRROR_KINDS],
    /// Requests recorded.
    pub requests: u64,
    /// Sum of recorded latencies in microseconds (for the Prometheus `_sum`).
    pub sum_us: u128,
}

impl PoolStats {
    pub(super) fn new(capacity: u64) -> Self {
        Self {
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            since_start: Lifetime {
                latency: histogram::<u64>(),
                status: [0; STATUS_CLASSES],
                errors: [0; ERROR_KINDS],
                client: [0; CLIENT_KINDS],
                mirror: [0; MIRROR_KINDS],
                requests: 0,
                sum_us: 0,
            },
        }
    }

    /// Adds a flushed tick's data, stamped with tick `at`.
    pub(super) fn add(&mut self, mut s: Second, at: u64) {
        for &(v, n) in &s.latencies {
            self.since_start.latency.saturating_record_n(v, n);
            self.since_start.sum_us += u128::from(v) * u128::from(n);
        }
        add_into(&mut self.since_start.status, &s.status);
        add_into(&mut self.since_start.errors, &s.errors);
        add_into(&mut self.since_start.client, &s.client);
        add_into(&mut self.since_start.mirror, &s.mirror);
        self.since_start.requests += s.requests;
        s.at = at;
        match self.ring.back_mut() {
            Some(last) if last.at == at => last.merge(s),
            _ => self.ring.push_back(s),
        }
        self.expire(at);
    }

    fn expire(&mut self, now: u64) {
        while self.ring.front().is_some_and(|s| s.at + self.capacity <= now) {
            self.ring.pop_front();
        }
    }

    /// Figures over ticks `from..=through`.
    ///
    /// Quantiles come straight from the ticks' sparse buckets, by the same
    /// rule as hdrhistogram's `value_at_quantile`, without building a whole
    /// histogram: analysis asks for this every interval.
    pub(super) fn range(&self, from: u64, through: u64) -> Figures {
        let mut f = Figures::default();
        let mut latencies = Vec::new();
        for s in self.ring.iter().filter(|s| s.at >= from && s.at <= through) {
            latencies.extend_from_slice(&s.latencies);
            add_into(&mut f.status, &s.status);
            add_into(&mut f.errors, &s.errors);
            add_into(&mut f.client_errors, &s.client);
            add_into(&mut f.mirror, &s.mirror);
            f.requests += s.requests;
        }
        latencies.sort_unstable_by_key(|&(v, _)| v);
        f.set_latency(latencies);
        f
    }

    /// Figures since start.
    /// The aggregates since start.
    pub(super) fn since_start(&self) -> &Lifetime {
        &self.since_start
    }

    pub(super) fn lifetime(&self) -> Figures {
        Figures::from_lifetime(&self.since_start)
    }
}

impl Second {
    fn merge(&mut self, other: Second) {
        self.latencies.extend(other.latencies);
        add_into(&mut self.status, &other.status);
        add_into(&mut self.errors, &other.errors);
        add_into(&mut self.client, &other.client);
        add_into(&mut self.mirror, &other.mirror);
        self.requests += other.requests;
    }
}

fn add_into(into: &mut [u64], from: &[u64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(latencies: &[u64], fives: u64) -> Second {
        let mut status = [0; STATUS_CLASSES];
        status[1] = latencies.len() as u64 - fives;
        status[4] = fives;
        Second {
            at: 0,
            latencies: latencies.iter().map(|v| (*v, 1)).collect(),
            status,
            errors: [0; ERROR_KINDS],
            client: [0; CLIENT_KINDS],
            mirror: [0; MIRROR_KINDS],
            requests: latencies.len() as u64,
        }
    }

    #[test]
    fn window_expires_on_the_tick_clock() {
        let mut p = PoolStats::new(30);
        p.add(second(&[100, 200], 1), 10);
        p.add(second(&[300], 0), 25);
        let window = |now: u64, ticks: u64| p.range((now + 1).saturating_sub(ticks), now);
        assert_eq!(window(25, 30).requests, 3);
        assert_eq!(window(39, 30).requests, 3, "tick 10 is still inside a 30-tick window at 39");
        assert_eq!(window(40, 30).requests, 1, "tick 10 left the window at 40");
        assert_eq!(window(40, 30).status[4], 0);
        assert_eq!(window(25, 5).requests, 1, "a shorter window reads fewer ticks");
        assert_eq!(window(60, 30).requests, 0);
        assert_eq!(p.range(11, 25).requests, 1, "a range starts where it is told");
        assert_eq!(p.lifetime().requests, 3, "lifetime keeps everything");
        assert_eq!(p.lifetime().status[4], 1);
        p.add(second(&[1], 0), 70);
        assert_eq!(p.ring.len(), 1, "old ticks are dropped");
    }

    #[test]
    fn same_tick_merges() {
        let mut p = PoolStats::new(30);
        p.add(second(&[100], 0), 3);
        p.add(second(&[200], 1), 3);
        assert_eq!(p.ring.len(), 1);
        let f = p.range(0, 3);
        assert_eq!((f.requests, f.status[4]), (2, 1));
        assert!((f.error_rate() - 0.5).abs() < 1e-9);
        let mut sum = p.range(3, 3);
        sum.merge(&f);
        assert_eq!(
            (sum.requests, sum.latency.clone(), sum.p50_us, sum.max_us),
            (4, vec![(100, 2), (200, 2)], 100, 200)
        );
    }
}
