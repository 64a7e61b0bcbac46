//! Which requests a service's mirror copies: the method, the match, the
//! share, the body's size, and the bound on copies in flight. Decided on
//! the request path with a thread-local draw and one atomic counter.

use super::carries;
use crate::config::MirrorConfig;
use crate::stats::{self, MirrorKind};
use http::{HeaderMap, Method};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Copies in flight; shared with the next snapshot's mirror of the
    /// same service, so the bound holds across rebuilds.
    in_flight: Arc<AtomicUsize>,
}

/// A copy under way: holds its place among the copies in flight until dropped.
#[derive(Debug)]
pub struct Copying(Arc<AtomicUsize>);

impl Drop for Copying {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
            in_flight: previous.map_or_else(Arc::default, |m| m.in_flight.clone()),
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
        let too_large = body_len.is_some_and(|n| n > self.config.max_body);
        if too_large || self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.config.queue {
            if !too_large {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            stats::record_mirror(self.stats_slot, MirrorKind::Dropped);
            return None;
        }
        Some(Copying(self.in_flight.clone()))
    }
}
