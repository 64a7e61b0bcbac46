//! Which requests a service's mirror copies: the method, the match, the
//! share, the body's size, the bound on copies in flight, and a rest after
//! the mirror could not be reached. Decided on the request path with a
//! thread-local draw and two atomics.

use super::carries;
use crate::config::MirrorConfig;
use crate::data::pool::clock_ms;
use crate::stats::{self, MirrorKind};
use http::{HeaderMap, Method};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// A service's mirror, compiled.
#[derive(Clone, Debug)]
pub struct Mirror {
    /// The mirror pool's index in the service's pools.
    pub pool: usize,
    /// Its statistics slot (where copies and drops are counted).
    pub stats_slot: usize,
    /// The copied share as a threshold on a 32-bit draw.
    threshold: u64,
    /// The settings it was compiled from.
    pub config: MirrorConfig,
    /// Copies in flight and when copies may go again (see [`Mirror::unreachable`]);
    /// shared with the next snapshot's mirror of the same service, so they hold across rebuilds.
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    in_flight: AtomicUsize,
    /// [`clock_ms`] before which copies are dropped: the mirror could not be reached.
    resting_until: AtomicU64,
}

/// How long a mirror that could not be reached rests before the next copy tries it.
const REST_MS: u64 = 1_000;

/// A copy under way: holds its place among the copies in flight until dropped.
#[derive(Debug)]
pub struct Copying(Arc<Shared>);

impl Drop for Copying {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Copying {
    /// The copy found no endpoint of the mirror to connect to: the copies
    /// of the next second are dropped (and counted) rather than each paying
    /// for a failing connect.
    pub fn unreachable(&self) {
        self.0.resting_until.store(clock_ms() + REST_MS, Ordering::Relaxed);
    }
}

impl Mirror {
    /// Compiles `config` for a pool counted at `stats_slot`, keeping the
    /// in-flight count of `previous` (the last snapshot's mirror).
    pub fn new(config: &MirrorConfig, stats_slot: usize, previous: Option<&Mirror>) -> Self {
        Self {
            pool: config.pool,
            stats_slot,
            threshold: (config.percent / 100.0 * 4_294_967_296.0).round() as u64,
            config: config.clone(),
            shared: previous.map_or_else(Arc::default, |m| m.shared.clone()),
        }
    }

    /// Whether to copy this request (sent to pool `to`, with a body of
    /// `body_len` bytes when known, `None` for a streamed one); `Some` holds
    /// the copy's place in flight. A copy that is due but cannot go (too
    /// many in flight, a body over the cap) is counted as dropped.
    pub fn copy(&self, to: usize, method: &Method, headers: &HeaderMap, body_len: Option<u64>) -> Option<Copying> {
        if to == self.pool || !self.config.methods.contains(method) {
            return None;
        }
        if !carries(headers, &self.config.headers, &self.config.cookies) {
            return None;
        }
        if u64::from(fastrand::u32(..)) >= self.threshold {
            return None;
        }
        let unsent = body_len.is_some_and(|n| n > self.config.max_body)
            || self.shared.resting_until.load(Ordering::Relaxed) > clock_ms();
        if unsent || self.shared.in_flight.fetch_add(1, Ordering::Relaxed) >= self.config.queue {
            if !unsent {
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            stats::record_mirror(self.stats_slot, MirrorKind::Dropped);
            return None;
        }
        Some(Copying(self.shared.clone()))
    }
}
