//! Waiting for what happens asynchronously: poll with a deadline, never a
//! fixed sleep before an assertion.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it holds or `limit` passes; returns whether it held.
/// For things that happen asynchronously (log flushes, webhooks, stats ticks).
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll
    }
}

/// Polls the async `check` every 20 ms until it holds or `limit` passes;
/// returns whether it held. For outcomes read over the network.
pub async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // poll
    }
}
