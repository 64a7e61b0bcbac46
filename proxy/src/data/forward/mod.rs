//! The request path, in the order it runs:
//!
//! 1. **check** — refuse malformed or ambiguous requests ([`headers::check_request`]),
//!    normalise the path ([`crate::parse::path`]);
//! 2. **match** — find the service in the request's snapshot;
//! 3. **split** — choose the pool ([`crate::data::split`]);
//! 4. **forward** — pick an endpoint, send, with one retry on another endpoint
//!    when connecting failed and the request is idempotent without a body;
//! 5. **respond** — clean the response headers, stream the body back, log.
//!
//! Phases 1 to 3 await nothing and live in `prepare.rs`; the rest here.
//!
//! Nothing here locks shared state or waits on the control path: the
//! snapshot is loaded once, and health and load-balancing state are atomics.
//!
//! Who caused a failure decides where it counts: the upstream's faults
//! (connect, reset, timeout) count against the endpoint and the pool; the
//! client's (bad framing or body, a stalled or abandoned upload, going away)
//! get a 4xx or a logged 499 and count only as client errors. The upstream's
//! timeout runs from the request's last byte, and latency is measured from
//! it too, so a slow upload is never the upstream's slowness.

mod mirror;
mod prepare;

use super::ProxyBody;
use super::Shared;
use crate::data::body::{BodyError, Upload};
use crate::data::deadline::{self, Deadline, Elapsed};
use crate::data::grpc;
use crate::data::headers::{self, ClientConn, X_SWITCHYARD_ERROR, X_SWITCHYARD_POOL};
use crate::data::pool::{ConnectError, Lease, Pool};
use crate::data::snapshot::Service;
use crate::data::split::AssignedBy;
use crate::error::ErrorClass;
use crate::stats;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use prepare::{for_pool, prepare, Prepared};
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// Serves one client request; never fails (errors become responses).
///
/// Not an `async fn`: one keeps each argument twice in its future (as given
/// and as a local), which costs a copy of the request per call; the async
/// block uses the captured ones in place. The same goes for `proxy` and
/// `forward`.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice (see `handle`)")]
pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<ClientConn>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Response<ProxyBody>> {
    async move {
        let mut exchange = Exchange {
            shared: &shared,
            start: Instant::now(),
            method: req.method().clone(),
            log: Log::default(),
            done: false,
        };
        let version = req.version();
        let resp = match proxy(&shared, &conn, req, &mut exchange.log, exchange.start).await {
            Ok(resp) => resp,
            Err(class) => {
                exchange.log.error = Some(class);
                error_response(class, version)
            }
        };
        exchange.end(resp.status().as_u16());
        resp
    }
}

/// One request until its response head: recorded and logged once, also when
/// the client goes away first (hyper drops the future), as `client-closed`.
struct Exchange<'a> {
    shared: &'a Shared,
    start: Instant,
    method: Method,
    log: Log,
    /// Recorded and logged.
    done: bool,
}

impl Exchange<'_> {
    fn end(&mut self, status: u16) {
        self.done = true;
        // A gRPC answer with its status in the head is counted by that
        // status; one with it in the trailers, when they arrive.
        let counted = self.log.grpc_status.unwrap_or(status);
        if let Some(to) = self.log.mirror.take() {
            // A client's fault says nothing of the upstream's answer.
            if !self.log.error.is_some_and(ErrorClass::is_client_fault) {
                let _ = to.send(counted);
            }
        }
        let log = &self.log;
        if let (true, Some(slot), false) = (self.shared.record_stats, log.stats_slot, log.deferred) {
            let latency = log.latency(self.start);
            stats::record(slot, latency, counted, log.error);
            // A rolling update's endpoint group, beside the pool.
            if let Some(group) = log.group_slot {
                stats::record(group, latency, counted, log.error);
            }
        }
        if self.shared.access_log {
            tracing::info!(
                target: "switchyard::access",
                method = %self.method,
                host = log.host.as_deref().unwrap_or("-"),
                path = log.path.as_deref().unwrap_or("-"),
                service = log.service.as_ref().map_or("-", |s| s.name.as_str()),
                pool = log.service.as_ref().zip(log.pool).map_or("-", |(s, p)| s.pools[p].name.as_str()),
                assigned_by = log.assigned_by.map(tracing::field::display),
                endpoint = %log.endpoint.map_or_else(|| "-".to_string(), |e| e.to_string()),
                status,
                latency_us = self.start.elapsed().as_micros() as u64,
                error = log.error.map_or("-", ErrorClass::label),
            );
        }
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.log.error = Some(ErrorClass::ClientClosed);
            self.end(ErrorClass::ClientClosed.status().as_u16());
        }
    }
}

/// What the access log line says about a request.
#[derive(Default)]
struct Log {
    host: Option<String>,
    path: Option<String>,
    service: Option<Arc<Service>>,
    pool: Option<usize>,
    /// Why the request went to its pool.
    assigned_by: Option<AssignedBy>,
    stats_slot: Option<usize>,
    /// During a rolling update: the endpoint's group (old or new endpoints).
    group_slot: Option<usize>,
    endpoint: Option<std::net::SocketAddr>,
    error: Option<ErrorClass>,
    /// The request body's progress, when it has one.
    upload: Option<Arc<Upload>>,
    /// A gRPC answer's status in its head, as the HTTP status it stands for.
    grpc_status: Option<u16>,
    /// Recorded when the response's trailers arrive, not at its head.
    deferred: bool,
    /// Where the primary's status goes, for a mirror's copy to compare with.
    mirror: Option<tokio::sync::oneshot::Sender<u16>>,
}

impl Log {
    /// From the request's last byte (an upload's pace is the client's) to now.
    fn latency(&self, start: Instant) -> Duration {
        self.upload.as_ref().and_then(|u| u.done_at()).map_or(start, |d| d.max(start)).elapsed()
    }
}

/// The phases in order; an error is the class of the proxy's own answer.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice (see `handle`)")]
fn proxy<'a>(
    shared: &'a Shared,
    conn: &'a ClientConn,
    req: Request<Incoming>,
    log: &'a mut Log,
    start: Instant,
) -> impl std::future::Future<Output = Result<Response<ProxyBody>, ErrorClass>> + 'a {
    async move {
        let version = req.version();
        let snapshot = shared.snapshot.load_full();
        let Prepared { service, pool_index, flags, client_upgrade, upstream, retry, upload } =
            prepare(shared, conn, &snapshot, req, log, start)?;

        // 4. forward
        let pool = &service.pools[pool_index];
        let (endpoint_index, resp, sender) = forward(service, pool, upstream, retry, upload.as_deref(), log).await?;

        // 5. respond
        let reply = Reply { service, pool_index, endpoint_index, flags, version, client_upgrade };
        respond(shared, reply, resp, sender, (log, start))
    }
}

/// Phase 4: picks an endpoint and sends, retrying once on another endpoint
/// after a connect failure (`retry_connect`: idempotent, no body) and on a
/// fresh connection when a pooled one closed before the request was written.
/// `start`: when the request arrived.
#[allow(clippy::manual_async_fn, reason = "an async fn keeps its arguments twice (see `handle`)")]
fn forward<'a>(
    service: &'a Service,
    pool: &'a Pool,
    mut req: Request<ProxyBody>,
    (retry_connect, timeout, start): (bool, Duration, Instant),
    upload: Option<&'a Upload>,
    log: &'a mut Log,
) -> impl std::future::Future<Output = Result<(usize, Response<Incoming>, crate::data::pool::Sender), ErrorClass>> + 'a
{
    async move {
        let mut exclude = None;
        let mut retry_connect_left = retry_connect;
        let mut stale_left = 3;
        loop {
            let Some(i) = pool.pick(exclude) else {
                return Err(if exclude.is_some() {
                    ErrorClass::UpstreamConnect
                } else {
                    ErrorClass::NoHealthyEndpoint
                });
            };
            let endpoint = &pool.endpoints[i];
            log.endpoint = Some(endpoint.addr);
            log.group_slot = endpoint.group_slot;
            let (mut sender, fresh) = match endpoint.checkout(service.connect_timeout, start).await {
                Ok(s) => s,
                Err(e) => {
                    // TLS that cannot work (an unknown CA, a wrong name, no h2) is
                    // a setup problem worth a warning; refused connects are not.
                    if matches!(e, ConnectError::Tls(..) | ConnectError::NoH2(..)) {
                        tracing::warn!(service = %service.name, pool = %pool.name, error = %e, "upstream TLS failed");
                    } else {
                        tracing::debug!(error = %e, "upstream connect failed");
                    }
                    pool.report(i, false);
                    if retry_connect_left && pool.endpoints.len() > 1 {
                        retry_connect_left = false;
                        exclude = Some(i);
                        continue;
                    }
                    return Err(ErrorClass::UpstreamConnect);
                }
            };
            // On a pooled connection the request goes out as it arrived: the
            // clock need not be read again.
            let sent = if fresh { Instant::now() } else { start };
            let exchange = std::pin::pin!(sender.try_send_request(req));
            match upstream_deadline(exchange, (sent, timeout), upload).await {
                Ok(Ok(resp)) => return Ok((i, resp, sender)),
                Err(Elapsed) => {
                    pool.report(i, false);
                    return Err(ErrorClass::UpstreamTimeout);
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Never written: safe to send again on another connection.
                    Some(back) if !fresh && stale_left > 0 => {
                        stale_left -= 1;
                        req = back;
                    }
                    _ => {
                        let class = classify(e.error());
                        if class.is_endpoint_failure() {
                            pool.report(i, false);
                        }
                        tracing::debug!(error = %e.error(), "upstream exchange failed");
                        return Err(class);
                    }
                },
            }
        }
    }
}

/// Waits for the upstream's response head for `timeout` after the request's
/// last byte was sent (at `sent` without a body); while the proxy waits on
/// the client's body, the body's idle timeout applies instead (a slow upload
/// is not the upstream's).
/// The exchange comes pinned by its caller, so this future holds only a
/// pointer to it and a deadline.
async fn upstream_deadline<F: std::future::Future>(
    mut exchange: Pin<&mut F>,
    (sent, timeout): (Instant, Duration),
    upload: Option<&Upload>,
) -> Result<F::Output, Elapsed> {
    let Some(upload) = upload else {
        return deadline::within(sent + timeout, exchange).await;
    };
    let mut deadline = Deadline::at(upload.deadline(timeout).unwrap_or_else(|| Instant::now() + timeout));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        while Pin::new(&mut deadline).poll(cx).is_ready() {
            match upload.deadline(timeout) {
                Some(d) if d <= Instant::now() => return Poll::Ready(Err(Elapsed)),
                d => deadline.reset(d.unwrap_or_else(|| Instant::now() + timeout)),
            }
        }
        Poll::Pending
    })
    .await
}

/// What phase 5 needs to know about the request.
struct Reply<'s> {
    service: &'s Service,
    pool_index: usize,
    endpoint_index: usize,
    flags: headers::RequestFlags,
    version: Version,
    client_upgrade: Option<OnUpgrade>,
}

/// Phase 5: reports the outcome to passive health, cleans the response
/// headers, and streams the body back (or starts a WebSocket tunnel).
fn respond(
    shared: &Shared,
    r: Reply<'_>,
    mut resp: Response<Incoming>,
    sender: crate::data::pool::Sender,
    (log, start): (&mut Log, Instant),
) -> Result<Response<ProxyBody>, ErrorClass> {
    let pool = &r.service.pools[r.pool_index];
    let endpoint = pool.endpoints[r.endpoint_index].clone();
    let status = resp.status();
    pool.report(r.endpoint_index, !is_gateway_failure(status));
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
    let (mut parts, body) = resp.into_parts();
    let found = headers::to_client(&mut parts.headers, switching && r.flags.websocket, r.flags.h2_connect);
    parts.version = r.version;
    if switching && r.flags.h2_connect {
        // RFC 8441: the extended CONNECT's stream is the tunnel once answered 200.
        parts.status = StatusCode::OK;
    }
    if r.service.expose_pool {
        parts.headers.insert(&X_SWITCHYARD_POOL, r.service.pool_header_values[r.pool_index].clone());
    }
    if r.flags.close && r.version < Version::HTTP_2 {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let body = if switching {
        if !r.flags.websocket {
            return Err(ErrorClass::UpstreamReset);
        }
        drop(body);
        tunnel(r.client_upgrade, upstream_upgrade, endpoint.addr);
        ProxyBody::empty()
    } else {
        let mut outcome = None;
        if found.grpc {
            match grpc::status(&parts.headers) {
                Some(code) => log.grpc_status = Some(grpc::as_http(code)),
                None if shared.record_stats => {
                    outcome = Some(grpc::Outcome::new(pool.stats_slot, log.latency(start)));
                    log.deferred = true;
                }
                None => {}
            }
        }
        let lease = Lease::new(sender, &endpoint, pool.tracks_in_flight(), outcome);
        ProxyBody::upstream(body, shared.server.body_idle_timeout, lease)
    };
    Ok(Response::from_parts(parts, body))
}

/// Joins the client's and the upstream's upgraded connections once both are ready.
fn tunnel(client: Option<OnUpgrade>, upstream: Option<OnUpgrade>, addr: std::net::SocketAddr) {
    let (Some(client), Some(upstream)) = (client, upstream) else {
        return;
    };
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, upstream = %addr, "upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut upstream = hyper_util::rt::TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, upstream = %addr, "tunnel ended");
        }
    });
}

fn is_gateway_failure(s: StatusCode) -> bool {
    matches!(s, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// Maps a failed upstream exchange to its class: our own body errors first
/// (a request body over the cap, a stalled client), then upstream faults.
fn classify(e: &hyper::Error) -> ErrorClass {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(b) = err.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge => ErrorClass::PayloadTooLarge,
                BodyError::IdleTimeout => ErrorClass::RequestTimeout,
                BodyError::BadBody => ErrorClass::BadBody,
                BodyError::ClientClosed => ErrorClass::ClientClosed,
            };
        }
        source = err.source();
    }
    if e.is_timeout() {
        ErrorClass::UpstreamTimeout
    } else {
        ErrorClass::UpstreamReset
    }
}

/// A proxy-generated error response.
pub fn error_response(class: ErrorClass, version: Version) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(class.label().as_bytes()));
    *resp.status_mut() = class.status();
    let h = resp.headers_mut();
    h.insert(&X_SWITCHYARD_ERROR, HeaderValue::from_static(class.label()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if matches!(class, ErrorClass::BadRequest | ErrorClass::BadBody) && version < Version::HTTP_2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests;
