//! The data path, in the order a request meets it:
//!
//! - [`worker`]: thread-per-core workers, each with its own runtime;
//! - [`listener`], [`first_bytes`], [`tls`], [`h2_guard`]: bind, accept,
//!   the protocol of plaintext clients, TLS, hyper's connection settings,
//!   the cap on HTTP/2 control frames;
//! - [`forward`]: the request phases — check, match, split, forward, respond;
//! - [`headers`]: request checks and header rewriting;
//! - [`snapshot`]: the immutable compiled state every request reads (built
//!   by the control path, swapped whole);
//! - [`split`]: rules, sticky keys and weights;
//! - [`pool`]: endpoints, load balancing, health, upstream connections;
//! - [`body`]: the streamed body of both directions;
//! - [`sends`]: small vectored writes as one `send` on every socket;
//! - [`deadline`]: the timeouts of the data path, kept per worker without locks.
//!
//! Below it: [`crate::config`], [`crate::parse`], [`crate::flags`],
//! [`crate::plugin`] (routers) and [`crate::stats`] (each request's outcome
//! goes to a thread-local recorder). Nothing here imports the control path.

pub mod body;
pub mod deadline;
pub mod first_bytes;
pub mod forward;
pub mod grpc;
pub mod h2_guard;
pub mod headers;
pub mod listener;
pub mod pool;
pub mod sends;
pub mod snapshot;
pub mod split;
pub mod tls;
pub mod worker;

use crate::config::{AttrSource, ServerConfig};
use crate::{flags, plugin, stats};
use arc_swap::ArcSwap;
use snapshot::Snapshot;
use stats::Stats;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The body of every request and response on the data path: a response
/// body hands its upstream connection back at a clean end.
pub type ProxyBody = body::ProxyBody<pool::Lease>;

/// State shared by every connection: the current snapshot and the limits.
pub struct Shared {
    /// The snapshot the request path reads; replaced whole, never mutated.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process-wide limits and timeouts.
    pub server: ServerConfig,
    /// Write one access-log line per request.
    pub access_log: bool,
    /// Record per-pool statistics.
    pub record_stats: bool,
    /// The control path's aggregates.
    pub stats: Arc<Stats>,
    /// Where workers send their recordings.
    pub(crate) stats_tx: mpsc::UnboundedSender<stats::Flush>,
    /// Shutting down: readiness turns false.
    pub draining: AtomicBool,
    /// The feature flags in force (file, then admin API overrides).
    pub flags: ArcSwap<flags::FlagSet>,
    /// Evaluation-context attributes taken from each request.
    pub flag_context: Vec<(String, AttrSource)>,
    /// The WebAssembly plugins in force (control path; routers are reached
    /// through the snapshot).
    pub plugins: plugin::Registry,
}
