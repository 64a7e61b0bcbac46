//! Pools and endpoints: which endpoint of the chosen pool serves a request, and
//! whether an endpoint is healthy. Runs after the split, before forwarding.
//!
//! Health has two sources, both plain atomics read on the request path:
//! passive (an endpoint that fails `consecutive_failures` times in a row is
//! ejected for a backoff that doubles with each ejection, but the last
//! available endpoint of a pool is never ejected) and active (optional HTTP
//! checks in [`health`]). Endpoints keep their idle upstream connections in
//! [`conn`].

mod conn;
pub mod health;

pub use conn::{enter_worker, ConnectError, Dialer, Sender};
pub use health::probe;

use crate::data::body::Release;

use crate::config::{LbKind, OutlierConfig, PoolConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One version of a service: a named set of endpoints.
#[derive(Debug)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// The pool's config, to tell on reload whether it changed.
    pub config: PoolConfig,
    /// Where its statistics are recorded.
    pub stats_slot: usize,
    /// Endpoints in config order.
    pub endpoints: Box<[Arc<Endpoint>]>,
    lb: LbKind,
    next: AtomicUsize,
    outlier: OutlierConfig,
    checks: Vec<JoinHandle<()>>,
}

/// One upstream address with its health and idle connections.
#[derive(Debug)]
pub struct Endpoint {
    /// Upstream address.
    pub addr: SocketAddr,
    in_flight: AtomicU32,
    failures: AtomicU32,
    /// Milliseconds on [`clock_ms`] until which the endpoint is ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    active_healthy: AtomicBool,
    idle: conn::Idle,
    /// How its connections are made (shared by the pool's endpoints).
    pub dialer: Arc<Dialer>,
    /// During a rolling update: the statistics slot of its group (the
    /// pool's old or new endpoints), recorded beside the pool's.
    pub group_slot: Option<usize>,
}

// === impl Pool ===

impl Pool {
    /// Builds a pool (loading its TLS files) and starts its active health
    /// checks, if configured. Must be called inside a tokio runtime when
    /// health checks are configured. `groups`: during a rolling update, the
    /// statistics slots of its old and new endpoints.
    pub fn new(
        cfg: &PoolConfig,
        workers: usize,
        stats_slot: usize,
        groups: Option<(usize, usize)>,
    ) -> Result<Self, crate::Error> {
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let client = crate::data::tls::upstream_client(t, cfg.protocol)
                    .map_err(|e| crate::Error::Tls(format!("pool `{}`: {e}", cfg.name)))?;
                let name = rustls::pki_types::ServerName::try_from(t.server_name.clone())
                    .map_err(|e| crate::Error::Tls(format!("pool `{}`: tls.server_name: {e}", cfg.name)))?;
                Some((client, name))
            }
        };
        let dialer = Arc::new(Dialer::new(cfg.protocol, tls));
        let group = |a: &SocketAddr| groups.map(|(old, new)| if cfg.new_endpoints.contains(a) { new } else { old });
        let endpoints: Box<[Arc<Endpoint>]> =
            cfg.endpoints.iter().map(|a| Arc::new(Endpoint::new(*a, workers, dialer.clone(), group(a)))).collect();
        let checks = match &cfg.health_check {
            Some(hc) => endpoints.iter().map(|e| health::spawn(e.clone(), hc.clone())).collect(),
            None => Vec::new(),
        };
        Ok(Self {
            name: cfg.name.clone(),
            config: cfg.clone(),
            stats_slot,
            endpoints,
            lb: cfg.lb,
            next: AtomicUsize::new(0),
            outlier: cfg.outlier.clone(),
            checks,
        })
    }

    /// Picks an available endpoint, never `exclude`; `None` when none is available.
    pub fn pick(&self, exclude: Option<usize>) -> Option<usize> {
        let n = self.endpoints.len();
        // The clock is read only if an endpoint was ever ejected: most never are.
        let now = std::cell::OnceCell::new();
        let ok = |i: usize| Some(i) != exclude && self.endpoints[i].available(|| *now.get_or_init(clock_ms));
        let scan_from = |start: usize| (0..n).map(|k| (start + k) % n).find(|&i| ok(i));
        match self.lb {
            LbKind::RoundRobin => scan_from(self.next.fetch_add(1, Relaxed)),
            LbKind::LeastRequest => {
                // Power of two choices, the two distinct when possible.
                let a = scan_from(fastrand::usize(..n))?;
                let b = if n > 1 { scan_from(a + 1 + fastrand::usize(..n - 1)).unwrap_or(a) } else { a };
                let load = |i: usize| self.endpoints[i].in_flight.load(Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
        }
    }

    /// Whether requests should be counted in flight (needed by least-request).
    pub fn tracks_in_flight(&self) -> bool {
        self.lb == LbKind::LeastRequest
    }

    /// Records the outcome of a request to endpoint `i` for passive health.
    pub fn report(&self, i: usize, success: bool) {
        let ep = &self.endpoints[i];
        if success {
            // Plain loads first: the common case writes nothing shared.
            if ep.failures.load(Relaxed) != 0 {
                ep.failures.store(0, Relaxed);
            }
            if ep.ejections.load(Relaxed) != 0 {
                ep.ejections.store(0, Relaxed);
            }
            return;
        }
        let failures = ep.failures.fetch_add(1, Relaxed) + 1;
        if failures < self.outlier.consecutive_failures {
            return;
        }
        let now = clock_ms();
        let others_available = self.endpoints.iter().enumerate().any(|(j, e)| j != i && e.is_available(now));
        if !others_available {
            // Never eject the whole pool: keep serving from the last endpoint.
            return;
        }
        ep.failures.store(0, Relaxed);
        let n = ep.ejections.fetch_add(1, Relaxed).min(16);
        let backoff = self
            .outlier
            .base_ejection
            .saturating_mul(1 << n)
            .min(self.outlier.max_ejection.max(self.outlier.base_ejection));
        ep.ejected_until.store(now + backoff.as_millis() as u64, Relaxed);
        tracing::warn!(pool = %self.name, endpoint = %ep.addr, failures, ejected_for = ?backoff, "endpoint ejected");
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for c in &self.checks {
            c.abort();
        }
    }
}

// === impl Endpoint ===

impl Endpoint {
    fn new(addr: SocketAddr, workers: usize, dialer: Arc<Dialer>, group_slot: Option<usize>) -> Self {
        Self {
            addr,
            group_slot,
            idle: conn::Idle::new(workers, dialer.multiplexed()),
            dialer,
            in_flight: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            active_healthy: AtomicBool::new(true),
        }
    }

    /// Neither ejected by passive health nor failing active checks.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.available(|| now_ms)
    }

    /// [`Endpoint::is_available`], asking `now_ms` for the time only if the
    /// endpoint was ever ejected.
    fn available(&self, now_ms: impl FnOnce() -> u64) -> bool {
        self.active_healthy.load(Relaxed)
            && match self.ejected_until.load(Relaxed) {
                0 => true,
                until => until <= now_ms(),
            }
    }

    /// Counts a request in flight until the guard drops.
    pub fn in_flight_guard(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        if self.active_healthy.swap(healthy, Relaxed) != healthy {
            if healthy {
                self.ejections.store(0, Relaxed);
                tracing::info!(endpoint = %self.addr, "endpoint healthy");
            } else {
                tracing::warn!(endpoint = %self.addr, "endpoint unhealthy");
            }
        }
    }

    /// Connects or reuses an idle connection, for a request that arrived at
    /// `arrived` (the idle ones' age is told from it, without a clock read).
    pub async fn checkout(&self, connect_timeout: Duration, arrived: Instant) -> Result<(Sender, bool), ConnectError> {
        self.idle.checkout(&self.dialer, self.addr, connect_timeout, arrived).await
    }

    /// Returns a connection whose exchange ended cleanly to the idle set.
    pub fn checkin(&self, sender: Sender) {
        self.idle.checkin(sender);
    }
}

/// An upstream connection lent to one exchange: back to its endpoint's
/// idle set when the response body ends cleanly, closed with the body
/// otherwise. While it lives it can count the request in flight on the
/// endpoint (for the least-requests balancer).
pub struct Lease {
    sender: Sender,
    endpoint: Arc<Endpoint>,
    _in_flight: Option<InFlight>,
    /// A gRPC call whose status the trailers will tell.
    grpc: Option<crate::data::grpc::Outcome>,
}

impl Lease {
    /// Lends `sender` of `endpoint`; `count` counts the request in flight;
    /// `grpc`: the call to record when its trailers arrive.
    pub fn new(
        sender: Sender,
        endpoint: &Arc<Endpoint>,
        count: bool,
        grpc: Option<crate::data::grpc::Outcome>,
    ) -> Self {
        Self { sender, endpoint: endpoint.clone(), _in_flight: count.then(|| endpoint.in_flight_guard()), grpc }
    }
}

impl Release for Lease {
    fn release(mut self) {
        if let Some(g) = &mut self.grpc {
            g.ended();
        }
        self.endpoint.checkin(self.sender);
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) {
        if let Some(g) = &mut self.grpc {
            g.trailers(trailers);
        }
    }

    fn fail(&mut self) {
        if let Some(g) = &mut self.grpc {
            g.failed();
        }
    }
}

/// A request counted in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds since the first call, on tokio's clock (so paused-time tests work).
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, lb: LbKind) -> Pool {
        Pool::new(
            &PoolConfig {
                name: "p".into(),
                endpoints: (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))).collect(),
                release: Default::default(),
                lb,
                health_check: None,
                outlier: OutlierConfig {
                    consecutive_failures: 3,
                    base_ejection: Duration::from_secs(10),
                    max_ejection: Duration::from_secs(60),
                },
                protocol: crate::config::Protocol::Http1,
                tls: None,
                new_endpoints: Vec::new(),
            },
            1,
            0,
            None,
        )
        .unwrap()
    }

    #[test]
    fn round_robin_cycles() {
        let p = pool(3, LbKind::RoundRobin);
        let picks: Vec<_> = (0..6).map(|_| p.pick(None).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        assert_ne!(p.pick(Some(1)), Some(1));
    }

    #[test]
    fn least_request_prefers_idle() {
        let p = pool(2, LbKind::LeastRequest);
        let _busy: Vec<_> = (0..5).map(|_| p.endpoints[0].in_flight_guard()).collect();
        // With two endpoints the two choices are both of them: the idle one wins.
        for _ in 0..100 {
            assert_eq!(p.pick(None), Some(1));
        }
        let p = pool(3, LbKind::LeastRequest);
        let _busy: Vec<_> = (0..5).map(|_| p.endpoints[0].in_flight_guard()).collect();
        assert!((0..1000).all(|_| p.pick(None) != Some(0)), "two distinct choices never both land on the busy one");
    }

    #[test]
    fn ejects_after_consecutive_failures_but_never_the_last() {
        let p = pool(2, LbKind::RoundRobin);
        p.report(0, false);
        p.report(0, true);
        p.report(0, false);
        p.report(0, false);
        assert!(p.endpoints[0].is_available(clock_ms()), "a success resets the count");
        p.report(0, false);
        assert!(!p.endpoints[0].is_available(clock_ms()));
        assert_eq!(p.pick(None), Some(1));
        for _ in 0..10 {
            p.report(1, false);
        }
        assert!(p.endpoints[1].is_available(clock_ms()), "last endpoint stays");
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_expires_and_backs_off() {
        let p = pool(2, LbKind::RoundRobin);
        for _ in 0..3 {
            p.report(0, false);
        }
        assert!(!p.endpoints[0].is_available(clock_ms()));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(p.endpoints[0].is_available(clock_ms()));
        for _ in 0..3 {
            p.report(0, false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!p.endpoints[0].is_available(clock_ms()), "second ejection lasts 20 s");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(p.endpoints[0].is_available(clock_ms()));
    }
}
