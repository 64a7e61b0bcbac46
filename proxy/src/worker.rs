//! Data-path workers: one thread per core, each running its own
//! single-threaded tokio runtime (thread-per-core, as nginx and Envoy do).
//!
//! Every worker accepts on its own `SO_REUSEPORT` socket of each listener,
//! and a client connection, its requests and the upstream connections they
//! use all live on that one thread: a request never wakes another thread.
//! Upstream connections are pooled per worker (see `pool::conn`). The control
//! path (health checks, signals) runs on the main thread's runtime.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running on this thread; `None` off the data path.
pub fn index() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Marks this thread as worker `i`.
pub(crate) fn set_index(i: usize) {
    INDEX.with(|c| c.set(Some(i)));
}
