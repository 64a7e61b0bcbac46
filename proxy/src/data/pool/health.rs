//! Active HTTP health checks: one task per endpoint sends `GET path` every
//! interval on a fresh connection; any 2xx within the timeout is a pass.
//! `unhealthy_threshold` failures in a row mark the endpoint unhealthy,
//! `healthy_threshold` passes in a row mark it healthy again. The tasks run
//! on the control path; the request path only reads the resulting flag.

use super::{Dialer, Endpoint};
use crate::config::HealthCheckConfig;
use crate::data::body::ProxyBody;
use http::{header, Request};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Starts checking `endpoint`; the task ends when aborted (its pool is dropped).
pub(super) fn spawn(endpoint: Arc<Endpoint>, cfg: HealthCheckConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut passes = 0u32;
        let mut fails = 0u32;
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let check = probe(&endpoint.dialer, endpoint.addr, &cfg.path, cfg.timeout);
            let ok = tokio::time::timeout(cfg.timeout, check).await.unwrap_or(false);
            if ok {
                passes += 1;
                fails = 0;
                if passes >= cfg.healthy_threshold {
                    endpoint.set_healthy(true);
                }
            } else {
                fails += 1;
                passes = 0;
                if fails >= cfg.unhealthy_threshold {
                    endpoint.set_healthy(false);
                }
            }
        }
    })
}

/// One probe of `addr` through `dialer`: `GET path` on a fresh connection
/// (made within `connect_timeout`), passed by any 2xx. Health checks and a
/// rolling update's readiness probes both use it.
pub async fn probe(dialer: &Dialer, addr: SocketAddr, path: &str, connect_timeout: Duration) -> bool {
    let Ok(mut sender) = dialer.connect(addr, connect_timeout).await else {
        return false;
    };
    // HTTP/2 takes the authority in the URI and no connection headers.
    let req = if sender.is_h2() {
        Request::get(format!("{}://{addr}{path}", dialer.scheme()))
    } else {
        Request::get(path).header(header::HOST, addr.to_string()).header(header::CONNECTION, "close")
    };
    let Ok(req) = req.header(header::USER_AGENT, "switchyard-health-check").body(ProxyBody::<super::Lease>::empty())
    else {
        return false;
    };
    matches!(sender.try_send_request(req).await, Ok(resp) if resp.status().is_success())
}
