//! Sending a request's copy to the service's mirror pool, on its own task:
//! the primary request never waits for it. The copy goes once its body (if
//! any) has been read whole, through the same endpoint choice, timeouts and
//! passive health as a primary request; its answer is read to the end and
//! discarded, recorded in the mirror pool's statistics, and its status class
//! compared with the primary's answer.

use super::{for_pool, forward, is_gateway_failure, Log};
use crate::data::pool::Lease;
use crate::data::snapshot::Service;
use crate::data::split::Copying;
use crate::data::ProxyBody;
use crate::error::ErrorClass;
use crate::stats::{self, MirrorKind, StatusClass};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Tells the mirror's upstream that a request is a copy (so it can skip side effects).
pub static X_SWITCHYARD_MIRRORED: HeaderName = HeaderName::from_static("x-switchyard-mirrored");

/// A request's copy, as the primary's upstream hears it.
pub(super) struct Copy {
    /// Its place among the copies in flight.
    pub copying: Copying,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The body, whole, once the primary has read it.
    pub body: oneshot::Receiver<Bytes>,
    /// The primary's status, when its answer has a head.
    pub primary: oneshot::Receiver<u16>,
}

/// Sends `copy` to `service`'s mirror pool on a task of this worker.
/// `record`: record the copy in the pool's statistics.
pub(super) fn send(service: Arc<Service>, copy: Copy, idle: Duration, record: bool) {
    tokio::spawn(async move {
        let Some(m) = &service.mirror else { return };
        let pool = &service.pools[m.pool];
        let Copy { copying, method, uri, mut headers, body, primary } = copy;
        // The primary's body never came whole (too large, failed): no copy.
        let Ok(body) = body.await else {
            stats::record_mirror(m.stats_slot, MirrorKind::Dropped);
            return;
        };
        headers.remove(header::TRANSFER_ENCODING);
        headers.insert(X_SWITCHYARD_MIRRORED.clone(), HeaderValue::from_static("1"));
        if !body.is_empty() || headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        (parts.method, parts.uri, parts.headers) = (method, uri, headers);
        for_pool(&mut parts, pool, false, false);
        let req = Request::from_parts(parts, if body.is_empty() { ProxyBody::empty() } else { ProxyBody::full(body) });
        let start = Instant::now();
        let mut log = Log::default();
        let answered = match forward(&service, pool, req, (true, service.timeout, start), None, &mut log).await {
            Ok((i, resp, sender)) => {
                let status = resp.status();
                pool.report(i, !is_gateway_failure(status));
                let lease = Lease::new(sender, &pool.endpoints[i], pool.tracks_in_flight(), None);
                let latency = start.elapsed();
                // Read to the end (so the connection serves again) and dropped.
                let mut rest = ProxyBody::upstream(resp.into_body(), idle, lease);
                let drained = async { while let Some(Ok(_)) = rest.frame().await {} };
                let _ = tokio::time::timeout(service.timeout, drained).await;
                Ok((status.as_u16(), latency))
            }
            Err(class) => Err(class),
        };
        let status = match answered {
            Ok((status, latency)) => {
                if record {
                    stats::record(pool.stats_slot, latency, status, None);
                }
                status
            }
            Err(class) => {
                if matches!(class, ErrorClass::UpstreamConnect | ErrorClass::NoHealthyEndpoint) {
                    copying.unreachable();
                }
                if record {
                    stats::record(pool.stats_slot, start.elapsed(), class.status().as_u16(), Some(class));
                }
                class.status().as_u16()
            }
        };
        if let (Ok(primary), true) = (primary.await, record) {
            let same = StatusClass::of(primary) == StatusClass::of(status);
            stats::record_mirror(m.stats_slot, if same { MirrorKind::Compared } else { MirrorKind::Mismatched });
        }
    });
}
