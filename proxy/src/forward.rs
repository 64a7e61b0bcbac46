//! The request path, in the order it runs:
//!
//! 1. **check** — refuse malformed or ambiguous requests ([`headers::check_request`]),
//!    normalise the path ([`crate::path`]);
//! 2. **match** — find the service in the request's snapshot;
//! 3. **split** — choose the pool ([`crate::split`]);
//! 4. **forward** — pick an endpoint, send, with one retry on another endpoint
//!    when connecting failed and the request is idempotent without a body;
//! 5. **respond** — clean the response headers, stream the body back, log.
//!
//! Nothing here locks shared state or waits on the control path: the
//! snapshot is loaded once, and health and load-balancing state are atomics.

use crate::body::{BodyError, ProxyBody};
use crate::error::ErrorClass;
use crate::headers::{self, ClientConn, X_SWITCHYARD_ERROR, X_SWITCHYARD_POOL};
use crate::pool::Pool;
use crate::snapshot::Service;
use crate::{stats, Shared};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::sync::Arc;
use tokio::time::Instant;

/// Serves one client request; never fails (errors become responses).
pub async fn handle(shared: Arc<Shared>, conn: Arc<ClientConn>, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let method = req.method().clone();
    let version = req.version();
    let outcome = proxy(&shared, &conn, req).await;
    let (resp, log) = match outcome {
        Ok((resp, log)) => (resp, log),
        Err((class, mut log)) => {
            log.error = Some(class);
            (error_response(class, version), log)
        }
    };
    let elapsed = start.elapsed();
    if let (true, Some(slot)) = (shared.record_stats, log.stats_slot) {
        stats::record(slot, elapsed, resp.status().as_u16(), log.error);
    }
    if shared.access_log {
        tracing::info!(
            target: "switchyard::access",
            method = %method,
            host = log.host.as_deref().unwrap_or("-"),
            path = log.path.as_deref().unwrap_or("-"),
            service = log.service.as_ref().map_or("-", |s| s.name.as_str()),
            pool = log.service.as_ref().zip(log.pool).map_or("-", |(s, p)| s.pools[p].name.as_str()),
            endpoint = %log.endpoint.map_or_else(|| "-".to_string(), |e| e.to_string()),
            status = resp.status().as_u16(),
            latency_us = elapsed.as_micros() as u64,
            error = log.error.map_or("-", ErrorClass::label),
        );
    }
    resp
}

/// What the access log line says about a request.
#[derive(Default)]
struct Log {
    host: Option<String>,
    path: Option<String>,
    service: Option<Arc<Service>>,
    pool: Option<usize>,
    stats_slot: Option<usize>,
    endpoint: Option<std::net::SocketAddr>,
    error: Option<ErrorClass>,
}

type Outcome = Result<(Response<ProxyBody>, Log), (ErrorClass, Log)>;

async fn proxy(shared: &Shared, conn: &ClientConn, mut req: Request<Incoming>) -> Outcome {
    let mut log = Log::default();
    let access_log = shared.access_log;

    // 1. check
    let version = req.version();
    let client_upgrade = req.headers().contains_key(header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let checked = match headers::check_request(&parts, shared.server.max_uri_bytes) {
        Ok(c) => c,
        Err(class) => return Err((class, log)),
    };
    let path = match crate::path::normalize(parts.uri.path()) {
        Ok(p) => p,
        Err(_) => return Err((ErrorClass::BadRequest, log)),
    };
    if access_log {
        log.host = Some(checked.host.to_string());
        log.path = Some(path.to_string());
    }

    // 2. match
    let snapshot = shared.snapshot.load_full();
    let Some(service) = snapshot.find(&checked.host, &path) else {
        return Err((ErrorClass::NoService, log));
    };
    if access_log {
        log.service = Some(service.clone());
    }

    // 3. split
    let (pool_index, _by) = service.split.assign(&parts.headers);
    let pool = &service.pools[pool_index];
    log.pool = Some(pool_index);
    log.stats_slot = Some(pool.stats_slot);

    let flags = checked.flags;
    drop(checked);
    if let (Some(cap), Some(len)) = (service.max_request_body, content_length(&parts.headers)) {
        if len > cap {
            return Err((ErrorClass::PayloadTooLarge, log));
        }
    }

    // Build the upstream request: origin-form URI with the normalised path.
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let uri = upstream_uri(&parts.uri, &path);
    headers::to_upstream(&mut parts.headers, flags, authority.as_deref(), conn);
    drop(path);
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let bodyless = body.is_end_stream();
    let retry_connect = bodyless && is_idempotent(&parts.method);
    let body = ProxyBody::stream(body, shared.server.body_idle_timeout, service.max_request_body);
    let mut upstream_req = Request::from_parts(parts, body);

    // 4. forward
    let mut exclude = None;
    let mut retry_connect_left = retry_connect;
    let mut stale_left = 3;
    let (endpoint_index, mut resp, sender) = loop {
        let Some(i) = pool.pick(exclude) else {
            let class = if exclude.is_some() { ErrorClass::UpstreamConnect } else { ErrorClass::NoHealthyEndpoint };
            return Err((class, log));
        };
        let endpoint = &pool.endpoints[i];
        log.endpoint = Some(endpoint.addr);
        let (mut sender, fresh) = match endpoint.checkout(service.connect_timeout).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "upstream connect failed");
                pool.report(i, false);
                if retry_connect_left && pool.endpoints.len() > 1 {
                    retry_connect_left = false;
                    exclude = Some(i);
                    continue;
                }
                return Err((ErrorClass::UpstreamConnect, log));
            }
        };
        let sent = tokio::time::timeout(service.timeout, sender.try_send_request(upstream_req)).await;
        match sent {
            Ok(Ok(resp)) => break (i, resp, sender),
            Err(_elapsed) => {
                pool.report(i, false);
                return Err((ErrorClass::UpstreamTimeout, log));
            }
            Ok(Err(mut e)) => match e.take_message() {
                // Never written: safe to send again on another connection.
                Some(back) if !fresh && stale_left > 0 => {
                    stale_left -= 1;
                    upstream_req = back;
                }
                _ => {
                    let class = classify(e.error());
                    if class.is_endpoint_failure() {
                        pool.report(i, false);
                    }
                    tracing::debug!(error = %e.error(), "upstream exchange failed");
                    return Err((class, log));
                }
            },
        }
    };

    // 5. respond
    let endpoint = pool.endpoints[endpoint_index].clone();
    let status = resp.status();
    pool.report(endpoint_index, !is_gateway_failure(status));
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
    let (mut rparts, rbody) = resp.into_parts();
    headers::to_client(&mut rparts.headers, switching && flags.websocket);
    rparts.version = version;
    if service.expose_pool {
        rparts.headers.insert(&X_SWITCHYARD_POOL, service.pool_header_values[pool_index].clone());
    }
    if flags.close && version < Version::HTTP_2 {
        rparts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let body = if switching {
        if !flags.websocket {
            return Err((ErrorClass::UpstreamReset, log));
        }
        drop(rbody);
        tunnel(client_upgrade, upstream_upgrade, endpoint.addr);
        ProxyBody::empty()
    } else {
        let body = ProxyBody::upstream(rbody, shared.server.body_idle_timeout, sender, endpoint.clone());
        in_flight(body, pool, &endpoint)
    };
    Ok((Response::from_parts(rparts, body), log))
}

fn in_flight(body: ProxyBody, pool: &Pool, endpoint: &Arc<crate::pool::Endpoint>) -> ProxyBody {
    if pool.tracks_in_flight() {
        body.with_guard(endpoint.in_flight_guard())
    } else {
        body
    }
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

fn upstream_uri(uri: &Uri, path: &str) -> Uri {
    let query = uri.query();
    let unchanged = uri.scheme().is_none() && uri.path() == path;
    if unchanged {
        return uri.clone();
    }
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"))
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
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
    if class == ErrorClass::BadRequest && version < Version::HTTP_2 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
