//! The admin API's wire: reading request bodies and query strings, and
//! building JSON, text and error answers.

use super::api::ErrorBody;
use super::{AdminBody, Resp};
use crate::config::WeightMap;
use crate::control::ControlError;
use bytes::Bytes;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::Full;

pub(super) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Resp {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut r = Response::new(AdminBody::Full(Full::new(Bytes::from(bytes))));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Resp {
    json(status, &ErrorBody { error: msg.into() })
}

pub(super) fn text(content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(AdminBody::Full(Full::new(body.into())));
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    r
}

/// The control path's answer to a call: the event it recorded (200), or its
/// error with the status that error means.
pub(super) fn answer<T: serde::Serialize>(r: Result<T, ControlError>) -> Resp {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => e.into(),
    }
}

impl From<ControlError> for Resp {
    fn from(e: ControlError) -> Resp {
        let status = match e {
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) | ControlError::Stale(_) => StatusCode::CONFLICT,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        error(status, e.to_string())
    }
}

/// A JSON body, or why it is not one (for a 400).
pub(super) fn json_body(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))
}

pub(super) fn is_content_type(h: &HeaderMap, types: &[&str]) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| types.iter().any(|t| v.trim().eq_ignore_ascii_case(t)))
}

pub(super) fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Accepts `{"endpoints": ["127.0.0.1:9003"], "version": "v1.2.4", "commit":
/// "...", "build_url": "https://...", "commit_time": "...", "reason": "..."}`
/// (everything but `endpoints` optional).
pub fn parse_pool(body: &[u8]) -> Result<(crate::config::PoolSet, Option<String>), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        endpoints: Vec<String>,
        version: Option<String>,
        commit: Option<String>,
        build_url: Option<String>,
        commit_time: Option<String>,
        reason: Option<String>,
    }
    let b: Body = serde_json::from_value(json_body(body)?).map_err(|e| format!("invalid body: {e}"))?;
    let endpoints = b
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| crate::config::resolve(e).map_err(|m| format!("endpoints[{i}]: {m}")))
        .collect::<Result<_, _>>()?;
    let release = crate::config::Release {
        version: b.version,
        commit: b.commit,
        build_url: b.build_url,
        commit_time: b.commit_time,
    };
    Ok((crate::config::PoolSet { endpoints, release, new: Vec::new() }, b.reason))
}

/// Accepts `{"stable": 90, "canary": 10}` or `{"weights": {...}, "reason": "..."}`.
pub fn parse_weights(body: &[u8]) -> Result<(WeightMap, Option<String>), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapped {
        weights: WeightMap,
        reason: Option<String>,
    }
    let value = json_body(body)?;
    if value.get("weights").is_some_and(serde_json::Value::is_object) {
        let w: Wrapped = serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))?;
        return Ok((w.weights, w.reason));
    }
    let w: WeightMap = serde_json::from_value(value)
        .map_err(|e| format!("weights must be an object of pool names to non-negative integers: {e}"))?;
    if w.is_empty() {
        return Err("no weights given".into());
    }
    Ok((w, None))
}
