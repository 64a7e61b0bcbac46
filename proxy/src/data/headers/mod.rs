//! Header rules of the data path: which requests are refused before routing,
//! what the upstream receives, and what the client receives.
//!
//! - [`check_request`] refuses `CONNECT`, over-long URIs, a missing or doubled
//!   `Host`, a `Host` that is not a host name or IP literal with an optional
//!   numeric port, a `Host` that disagrees with the absolute URI or
//!   `:authority` (port included), any `Transfer-Encoding` other than exactly
//!   `chunked`, and header names that spell a framing header with `_`; it
//!   returns the routing host.
//! - [`to_upstream`] strips hop-by-hop headers (and those the client's
//!   `Connection` lists, but never `Host` or `Content-Length`),
//!   `Proxy-Authorization` and client-sent `x-switchyard-*`, writes
//!   `Content-Length` in canonical form, and sets `X-Forwarded-For/-Proto/-Host`
//!   (and `Forwarded` when the listener says so); client-sent `Forwarded` and
//!   `X-Real-IP` survive only from a trusted hop, like `X-Forwarded-*`.
//! - [`to_client`] strips hop-by-hop headers from the upstream's response.

use crate::data::grpc;
use crate::error::ErrorClass;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use std::borrow::Cow;

/// Name of the response header that carries a proxy error's class.
pub static X_SWITCHYARD_ERROR: HeaderName = HeaderName::from_static("x-switchyard-error");
/// Name of the response header that names the serving pool, when enabled.
pub static X_SWITCHYARD_POOL: HeaderName = HeaderName::from_static("x-switchyard-pool");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Facts about the client connection a request arrived on.
#[derive(Debug)]
pub struct ClientConn {
    /// The peer's IP.
    pub peer: std::net::IpAddr,
    /// The peer's IP as an `X-Forwarded-For` entry.
    pub peer_ip: HeaderValue,
    /// Arrived over TLS.
    pub tls: bool,
    /// Keep client-sent client-address headers (the listener sits behind a trusted hop).
    pub trust_forwarded: bool,
    /// Set an RFC 7239 `Forwarded` header.
    pub set_forwarded: bool,
}

/// The outcome of [`check_request`].
#[derive(Debug)]
pub struct Checked<'a> {
    /// Routing host: lower case, no port, no trailing dot.
    pub host: Cow<'a, str>,
    /// The client's `Host` header as it came, for [`to_upstream`].
    pub host_header: Option<HeaderValue>,
    /// What the rest of the path needs to know.
    pub flags: RequestFlags,
}

/// Facts found while checking a request that shape how it is forwarded.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFlags {
    /// The request carried both `Content-Length` and `Transfer-Encoding`: the
    /// client connection must close after the response.
    pub close: bool,
    /// The client asked for a WebSocket: an HTTP/1.1 upgrade, or an
    /// HTTP/2 extended CONNECT (`h2_connect`).
    pub websocket: bool,
    /// The WebSocket comes over HTTP/2 (RFC 8441): the upstream hears an
    /// HTTP/1.1 upgrade, the client gets 200 and the stream is the tunnel.
    pub h2_connect: bool,
    /// The client sent `TE: trailers` (gRPC does): an HTTP/2 upstream hears it too.
    pub te_trailers: bool,
    /// A gRPC call (its `Content-Type`).
    pub grpc: bool,
    /// The body's length as `Content-Length` gives it.
    pub content_length: Option<u64>,
    /// A `Content-Length` not in canonical form (`010`): the upstream hears it rewritten.
    pub rewrite_length: bool,
}

/// Facts found in the upstream's response headers while [`to_client`] cleans them.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseFlags {
    /// A gRPC answer (its `Content-Type`).
    pub grpc: bool,
}

/// Whether `parts` is an HTTP/2 extended CONNECT for a WebSocket (RFC 8441).
pub fn is_websocket_connect(parts: &Parts) -> bool {
    parts.method == Method::CONNECT
        && parts.version == Version::HTTP_2
        && parts.extensions.get::<hyper::ext::Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Refuses malformed, ambiguous or oversized requests; returns what routing needs.
///
/// The head's size is checked here, not left to hyper: hyper checks its
/// limit only on a head not yet complete, so one that arrives in a few large
/// reads can pass it by up to the size of the last read (nearly twice).
pub fn check_request(parts: &Parts, max_uri_bytes: usize, max_header_bytes: usize) -> Result<Checked<'_>, ErrorClass> {
    let h2_connect = is_websocket_connect(parts);
    if parts.method == Method::CONNECT && !h2_connect {
        return Err(ErrorClass::MethodNotAllowed);
    }
    let uri_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len())
        + parts.uri.authority().map_or(0, |a| a.as_str().len());
    if uri_len > max_uri_bytes {
        return Err(ErrorClass::UriTooLong);
    }

    // One pass over the headers finds what the checks below need, instead
    // of a lookup each: a lookup hashes the name and probes the map.
    let mut seen = Seen::default();
    // As HTTP/1.1 spells the head: the request line, then `name: value\r\n` each.
    let mut head_bytes = parts.method.as_str().len() + uri_len + 12;
    for (name, value) in &parts.headers {
        head_bytes += name.as_str().len() + value.len() + 4;
        seen.note(name, value);
    }

    if seen.hosts > 1 {
        return Err(ErrorClass::BadRequest);
    }
    let authority = parts.uri.authority().map(|a| a.as_str());
    let raw_host = match (seen.host, authority) {
        (Some(h), Some(a)) => {
            let h = h.to_str().map_err(|_| ErrorClass::BadRequest)?;
            let default = match parts.uri.scheme_str() {
                Some("https") => Some("443"),
                Some("http") => Some("80"),
                _ => None,
            };
            if !strip_port(h).eq_ignore_ascii_case(strip_port(a)) || port_of(h).or(default) != port_of(a).or(default) {
                return Err(ErrorClass::BadRequest);
            }
            a
        }
        (Some(h), None) => h.to_str().map_err(|_| ErrorClass::BadRequest)?,
        (None, Some(a)) => a,
        // HTTP/1.0 may omit Host; such a request can only match a service without a host.
        (None, None) if parts.version <= Version::HTTP_10 => "",
        (None, None) => return Err(ErrorClass::BadRequest),
    };
    if !is_valid_host(raw_host) {
        return Err(ErrorClass::BadRequest);
    }
    let host = strip_port(raw_host);
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    };

    if seen.disguised {
        return Err(ErrorClass::BadRequest);
    }
    if head_bytes > max_header_bytes {
        return Err(ErrorClass::HeadersTooLarge);
    }

    let mut close = false;
    if let Some(v) = seen.transfer_encoding {
        if seen.transfer_encodings > 1 || !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") {
            return Err(ErrorClass::BadRequest);
        }
        close = seen.content_length.is_some();
    }

    let websocket = h2_connect
        || parts.version == Version::HTTP_11
            && seen.upgrade.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            && has_token(&parts.headers, header::CONNECTION, b"upgrade");
    let flags = RequestFlags {
        close,
        websocket,
        h2_connect,
        te_trailers: seen.te.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers")),
        grpc: seen.content_type.is_some_and(grpc::is_content_type),
        // hyper has checked the length is a number.
        content_length: seen.content_length.and_then(|v| v.to_str().ok()?.trim().parse().ok()),
        rewrite_length: seen.content_length.is_some_and(|v| {
            let raw = v.as_bytes();
            !(raw.iter().all(u8::is_ascii_digit) && (raw.len() == 1 || raw.first() != Some(&b'0')))
        }),
    };
    Ok(Checked { host, host_header: seen.host.cloned(), flags })
}

/// What [`check_request`]'s pass over the headers found.
#[derive(Default)]
struct Seen<'a> {
    host: Option<&'a HeaderValue>,
    hosts: usize,
    transfer_encoding: Option<&'a HeaderValue>,
    transfer_encodings: usize,
    content_length: Option<&'a HeaderValue>,
    content_type: Option<&'a HeaderValue>,
    upgrade: Option<&'a HeaderValue>,
    te: Option<&'a HeaderValue>,
    /// A name such as `Transfer_Encoding` or `Content_Length`: a framing
    /// header in disguise, which some upstreams read as the real one
    /// (nginx ignores such names).
    disguised: bool,
}

impl<'a> Seen<'a> {
    fn note(&mut self, name: &HeaderName, value: &'a HeaderValue) {
        let first = |slot: &mut Option<&'a HeaderValue>| {
            slot.get_or_insert(value);
        };
        if *name == header::HOST {
            self.hosts += 1;
            first(&mut self.host);
        } else if *name == header::TRANSFER_ENCODING {
            self.transfer_encodings += 1;
            first(&mut self.transfer_encoding);
        } else if *name == header::CONTENT_LENGTH {
            first(&mut self.content_length);
        } else if *name == header::CONTENT_TYPE {
            first(&mut self.content_type);
        } else if *name == header::UPGRADE {
            first(&mut self.upgrade);
        } else if *name == header::TE {
            first(&mut self.te);
        } else {
            let name = name.as_str().as_bytes();
            let spells = |framing: &str| {
                name.len() == framing.len()
                    && name.iter().zip(framing.bytes()).all(|(&n, f)| n == f || (n == b'_' && f == b'-'))
            };
            self.disguised |= name.contains(&b'_') && (spells("transfer-encoding") || spells("content-length"));
        }
    }
}

/// A `Host` value as RFC 9110 allows (`uri-host [ ":" port ]`), kept to what
/// names a host: a DNS-style name (letters, digits, `-`, `.`, `_`), an IPv4
/// address, or an IPv6 literal in brackets; an optional numeric port up to
/// 65535. Empty is allowed (HTTP/1.0 without `Host`).
fn is_valid_host(h: &str) -> bool {
    let (name, port) = match h.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, after)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => match after {
                "" => return true,
                p => (None, p.strip_prefix(':')),
            },
            _ => return false,
        },
        None => match h.split_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(h), None),
        },
    };
    let name_ok = name.is_none_or(|n| {
        (!n.is_empty() || h.is_empty()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    });
    let port_ok = match port {
        None => name.is_some(),
        Some(p) => {
            !p.is_empty()
                && p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| n <= 65535)
        }
    };
    name_ok && port_ok
}

/// The explicit port of `host[:port]` or `[v6]:port`, if any.
fn port_of(h: &str) -> Option<&str> {
    let i = h.rfind(':')?;
    (!h[i..].contains(']')).then(|| &h[i + 1..])
}

/// Strips the port from `host[:port]` or `[v6]:port`.
fn strip_port(h: &str) -> &str {
    match h.rfind(':') {
        Some(i) if !h[i..].contains(']') => &h[..i],
        _ => h,
    }
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &[u8]) -> bool {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The hop-by-hop headers every message loses (besides those its
/// `Connection` lists).
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// Removes hop-by-hop headers: the fixed set and any the message's own
/// `Connection` headers list, except those in `keep` (what must reach the
/// other side whatever the sender says), and every header `withheld` names
/// (what this direction never passes on; it sees every other header, so a
/// caller can note what it needs in the same pass). One pass over the
/// headers first, so only what is present is removed: most messages carry
/// none, or only `Connection: keep-alive`, and a lookup per name costs more
/// than the pass.
fn strip_hop_by_hop(
    headers: &mut HeaderMap,
    keep: &[&HeaderName],
    mut withheld: impl FnMut(&HeaderName, &HeaderValue) -> bool,
) {
    let mut present = [false; HOP_BY_HOP.len()];
    let mut dropped: Vec<HeaderName> = Vec::new();
    for (k, v) in headers.iter() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == k) {
            present[i] = true;
        } else if withheld(k, v) && !dropped.contains(k) {
            dropped.push(k.clone());
        }
    }
    // HOP_BY_HOP[0] is `Connection`. The tokens it lists that name a header
    // of the fixed set (or are `close`) need no parsing: they go anyway.
    // Most list nothing else (`keep-alive`, `close`), so the names are
    // collected only when a token is not one of those.
    if present[0] {
        let other = |t: &&[u8]| {
            !t.eq_ignore_ascii_case(b"close") && !HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h.as_ref()))
        };
        let tokens = || {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
        };
        if tokens().any(|t| other(&t)) {
            let listed = tokens().filter(other).filter_map(|t| HeaderName::from_bytes(t).ok());
            dropped.extend(listed.filter(|n| !keep.contains(&n)));
        }
    }
    for name in dropped {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(*name);
    }
}

/// Whether `name` is one the upstream never hears from a client: the
/// proxy's own `x-switchyard-*`, `Proxy-Authorization`, and (from an
/// untrusted client) the client-address headers it could forge.
fn is_withheld(name: &HeaderName, trust_forwarded: bool) -> bool {
    *name == header::PROXY_AUTHORIZATION
        || (!trust_forwarded && (*name == header::FORWARDED || *name == X_REAL_IP))
        || name.as_str().starts_with("x-switchyard-")
}

/// Rewrites the client's headers into what the upstream receives; `flags`
/// and `host` (the client's `Host` header) are what [`check_request`] found
/// in them, `authority` the URI's (the `Host` when the client sent none).
pub fn to_upstream(
    headers: &mut HeaderMap,
    (flags, host): (RequestFlags, Option<HeaderValue>),
    authority: Option<&str>,
    conn: &ClientConn,
) {
    strip_hop_by_hop(headers, &[&header::HOST, &header::CONTENT_LENGTH], |k, _| is_withheld(k, conn.trust_forwarded));
    // A body framed by Transfer-Encoding travels chunked; a stray length must not.
    if flags.close {
        headers.remove(header::CONTENT_LENGTH);
    } else if let (true, Some(n)) = (flags.rewrite_length, flags.content_length) {
        // `010` reaches the upstream as `10`: one reading of the length.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }

    let host = host.or_else(|| {
        let v = HeaderValue::from_str(authority?).ok()?;
        headers.insert(header::HOST, v.clone());
        Some(v)
    });

    // Every client-address header follows one policy: from an untrusted
    // client none survives (it could claim any address; see `is_withheld`).
    if conn.set_forwarded {
        let ip = conn.peer.to_string();
        let node = if conn.peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip };
        let proto = if conn.tls { "https" } else { "http" };
        let mut element = format!("for={node};proto={proto}");
        if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
            element.push_str(&format!(";host=\"{h}\""));
        }
        let value = match joined(headers, &header::FORWARDED) {
            Some(prior) => format!("{}, {element}", String::from_utf8_lossy(&prior)),
            None => element,
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header::FORWARDED, v);
        }
    }
    let prior = if conn.trust_forwarded { joined(headers, &X_FORWARDED_FOR) } else { None };
    let xff = match prior {
        Some(mut p) => {
            p.extend_from_slice(b", ");
            p.extend_from_slice(conn.peer_ip.as_bytes());
            HeaderValue::from_bytes(&p).unwrap_or_else(|_| conn.peer_ip.clone())
        }
        None => conn.peer_ip.clone(),
    };
    headers.insert(&X_FORWARDED_FOR, xff);
    if !(conn.trust_forwarded && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.tls { "https" } else { "http" };
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(conn.trust_forwarded && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => headers.insert(&X_FORWARDED_HOST, h),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }

    if flags.websocket {
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if flags.h2_connect {
        // An HTTP/2 client sends no key (RFC 8441 §5); the upstream's
        // HTTP/1.1 handshake needs one, 16 random bytes in base64.
        let key: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        if let Ok(v) = HeaderValue::from_str(&base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key)) {
            headers.insert(&SEC_WEBSOCKET_KEY, v);
        }
    }
}

static SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");

/// All values of a header joined with `, `, when present.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in headers.get_all(name) {
        let o = out.get_or_insert_with(Vec::new);
        if !o.is_empty() {
            o.extend_from_slice(b", ");
        }
        o.extend_from_slice(v.as_bytes());
    }
    out
}

/// Rewrites the upstream's response headers into what the client receives.
/// A `101 Switching Protocols` keeps its `Upgrade` and `Connection: upgrade`
/// for an HTTP/1.1 client; an HTTP/2 one (`h2_connect`) gets neither, nor
/// the accept key its request never carried.
pub fn to_client(headers: &mut HeaderMap, switching_protocols: bool, h2_connect: bool) -> ResponseFlags {
    let upgrade = if switching_protocols && !h2_connect { headers.get(header::UPGRADE).cloned() } else { None };
    let mut flags = ResponseFlags::default();
    strip_hop_by_hop(headers, &[], |k, v| {
        flags.grpc |= *k == header::CONTENT_TYPE && grpc::is_content_type(v);
        *k == header::PROXY_AUTHENTICATE || (h2_connect && k.as_str() == "sec-websocket-accept")
    });
    if let Some(u) = upgrade {
        headers.insert(header::UPGRADE, u);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    flags
}

#[cfg(test)]
mod tests;
