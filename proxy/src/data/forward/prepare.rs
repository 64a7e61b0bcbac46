//! Phases 1 to 3 and the request the upstream receives: check, match,
//! split, then the upstream request shaped for its pool's protocol. None of
//! it awaits anything.

use super::{mirror, Log};
use crate::config::Protocol;
use crate::data::body::Upload;
use crate::data::grpc;
use crate::data::headers::{self, ClientConn};
use crate::data::pool::Pool;
use crate::data::snapshot::{Service, Snapshot};
use crate::data::split::RequestView;
use crate::data::{ProxyBody, Shared};
use crate::error::ErrorClass;
use http::{header, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What phases 1 to 3 leave for the rest.
pub(super) struct Prepared<'s> {
    pub(super) service: &'s Arc<Service>,
    pub(super) pool_index: usize,
    pub(super) flags: headers::RequestFlags,
    pub(super) client_upgrade: Option<OnUpgrade>,
    /// The request the upstream receives.
    pub(super) upstream: Request<ProxyBody>,
    /// What [`super::forward`] takes: whether a failed connect may be retried, the
    /// timeout, and when the request arrived.
    pub(super) retry: (bool, Duration, Instant),
    pub(super) upload: Option<Arc<Upload>>,
}

/// Phases 1 to 3 and the upstream request. They await nothing: outside
/// [`super::proxy`]'s async block, their locals are not part of its future, which
/// keeps only what they return across the upstream exchange.
pub(super) fn prepare<'s>(
    shared: &Shared,
    conn: &ClientConn,
    snapshot: &'s Snapshot,
    req: Request<Incoming>,
    log: &mut Log,
    start: Instant,
) -> Result<Prepared<'s>, ErrorClass> {
    let (mut parts, body) = req.into_parts();
    // What `hyper::upgrade::on` takes: the client's connection once
    // upgraded, which hyper offers only to a request with `Upgrade` or a
    // CONNECT (a lookup in an empty map for any other).
    let client_upgrade = parts.extensions.remove::<OnUpgrade>();
    let wants_tunnel = client_upgrade.is_some();

    // 1. check
    let checked = headers::check_request(&parts, shared.server.max_uri_bytes, shared.server.max_header_bytes)?;
    let flags = checked.flags;
    let path = crate::parse::path::normalize(parts.uri.path()).map_err(|_| ErrorClass::BadRequest)?;
    if shared.access_log {
        log.host = Some(checked.host.to_string());
        log.path = Some(path.to_string());
    }

    // 2. match
    let service = snapshot.find(&checked.host, &path).ok_or(ErrorClass::NoService)?;
    if service.strict_paths && crate::parse::path::is_suspicious(parts.uri.path()) {
        return Err(ErrorClass::BadRequest);
    }
    if shared.access_log {
        log.service = Some(service.clone());
    }

    // 3. split
    let (pool_index, by) = {
        // Loaded only for services with flag rules; never held across an await.
        let flags = service.split.uses_flags().then(|| shared.flags.load());
        let view = RequestView {
            headers: &parts.headers,
            path: &path,
            method: &parts.method,
            query: parts.uri.query(),
            client: Some(conn.peer),
            flags: flags.as_deref().map(|f| &**f),
            context: &shared.flag_context,
        };
        service.split.assign(&view)
    };
    let pool = &service.pools[pool_index];
    log.pool = Some(pool_index);
    log.assigned_by = Some(by);
    log.stats_slot = Some(pool.stats_slot);
    if let (Some(cap), Some(len)) = (service.max_request_body, flags.content_length) {
        if len > cap {
            return Err(ErrorClass::PayloadTooLarge);
        }
    }
    let copy = match &service.mirror {
        Some(m) if !wants_tunnel => {
            let len = if body.is_end_stream() { Some(0) } else { flags.content_length };
            m.copy(pool_index, &parts.method, &parts.headers, len)
        }
        _ => None,
    };

    // The upstream request: origin-form URI with the normalised path, cleaned headers.
    let host = checked.host_header;
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let uri = upstream_uri(&parts.uri, &path);
    drop(path);
    parts.uri = uri;
    headers::to_upstream(&mut parts.headers, (flags, host), authority.as_deref(), conn);
    if flags.h2_connect {
        // The upstream hears the WebSocket handshake as HTTP/1.1 has it.
        parts.method = Method::GET;
        parts.extensions.remove::<hyper::ext::Protocol>();
    }
    // A copy for the mirror, as the upstream hears it (the mirror pool's protocol applied later).
    let copy = copy.map(|c| (c, parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
    for_pool(&mut parts, pool, !body.is_end_stream(), flags.te_trailers);
    let retry_connect = body.is_end_stream() && is_idempotent(&parts.method);
    // A gRPC caller's deadline, when sooner than the service's timeout.
    let grpc_timeout = flags.grpc.then(|| grpc::timeout(&parts.headers)).flatten();
    let timeout = grpc_timeout.map_or(service.timeout, |t| t.min(service.timeout));
    let (mut body, upload) = ProxyBody::request(body, shared.server.body_idle_timeout, service.max_request_body);
    log.upload = upload.clone();
    if let (Some((copying, method, uri, headers)), Some(m)) = (copy, &service.mirror) {
        let copied = body.tee(m.config.max_body);
        let (primary, answered) = tokio::sync::oneshot::channel();
        log.mirror = Some(primary);
        let copy = mirror::Copy { copying, method, uri, headers, body: copied, primary: answered };
        mirror::send(service.clone(), copy, shared.server.body_idle_timeout, shared.record_stats);
    }
    let upstream = Request::from_parts(parts, body);
    Ok(Prepared {
        service,
        pool_index,
        flags,
        client_upgrade,
        upstream,
        retry: (retry_connect, timeout, start),
        upload,
    })
}

/// Shapes an upstream request for `pool`'s protocol (`has_body`: the
/// request has a body; `te_trailers`: the client asked for trailers).
pub(super) fn for_pool(parts: &mut http::request::Parts, pool: &Pool, has_body: bool, te_trailers: bool) {
    if pool.config.protocol == Protocol::Http1 {
        parts.version = Version::HTTP_11;
        // hyper sends no body for a GET or HEAD of unknown length unless told to:
        // the upstream must get the body the client sent.
        if has_body
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
            && matches!(parts.method, Method::GET | Method::HEAD)
        {
            parts.headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
    } else {
        to_h2(parts, pool.endpoints[0].dialer.scheme(), te_trailers);
    }
}

/// An HTTP/1.1-shaped upstream request as HTTP/2 wants it: the Host in the
/// URI's authority, the scheme given, and `te: trailers` if the client asked.
fn to_h2(parts: &mut http::request::Parts, scheme: http::uri::Scheme, te_trailers: bool) {
    parts.version = Version::HTTP_2;
    let host = parts.headers.remove(header::HOST);
    let authority = host.as_ref().and_then(|h| h.to_str().ok()).and_then(|h| h.parse::<http::uri::Authority>().ok());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(scheme);
    uri.authority = authority.or_else(|| Some(http::uri::Authority::from_static("upstream")));
    uri.path_and_query = uri.path_and_query.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
    parts.uri = Uri::from_parts(uri).unwrap_or_default();
    if te_trailers {
        parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The origin-form URI the upstream receives: the normalised path and the
/// query. Reuses the request's own bytes when normalising changed nothing
/// (HTTP/2 requests arrive in absolute form).
pub(super) fn upstream_uri(uri: &Uri, path: &str) -> Uri {
    if uri.path() == path {
        if uri.scheme().is_none() {
            return uri.clone();
        }
        if let Some(pq) = uri.path_and_query() {
            return Uri::from(pq.clone());
        }
    }
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"))
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}
