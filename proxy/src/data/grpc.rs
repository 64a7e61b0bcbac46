//! gRPC's outcome and deadline. A call's status travels in `grpc-status`
//! (the trailers, or the head of a trailers-only answer), not in the HTTP
//! status, which is 200 either way. The statistics count a call by that
//! status, read as the HTTP status it stands for (gRPC's own mapping, in
//! reverse): server faults are 5xx, the caller's (`NOT_FOUND`,
//! `INVALID_ARGUMENT`, `CANCELLED`...) 4xx, never blamed on a version.
//! A response whose status is in its trailers is recorded when they
//! arrive (see [`Outcome`]).

use crate::error::ErrorClass;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Whether a `Content-Type` (a request's or a response's) is gRPC's.
pub fn is_content_type(value: &HeaderValue) -> bool {
    value.as_bytes().starts_with(b"application/grpc")
}

/// The `grpc-status` in `headers`, if one.
pub fn status(headers: &HeaderMap) -> Option<u32> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}

/// The HTTP status a gRPC status code stands for.
pub fn as_http(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,          // CANCELLED: the caller went away
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        16 => 401,         // UNAUTHENTICATED
        7 => 403,          // PERMISSION_DENIED
        5 => 404,          // NOT_FOUND
        6 | 10 => 409,     // ALREADY_EXISTS, ABORTED
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        4 => 504,          // DEADLINE_EXCEEDED
        _ => 500,          // UNKNOWN, INTERNAL, DATA_LOSS, and codes not yet defined
    }
}

/// The caller's deadline, `grpc-timeout: 250m` (at most 8 digits, then one
/// of `H M S m u n`); `None` when absent or malformed.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n.checked_mul(3600)?),
        b"M" => Duration::from_secs(n.checked_mul(60)?),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A call whose status comes in the trailers: recorded once, when they
/// arrive and the body ends, when the body fails, or when it is dropped
/// unfinished (the caller went away).
#[derive(Debug)]
pub struct Outcome {
    slot: usize,
    /// To the response head, as every request's latency is measured.
    latency: Duration,
    code: Option<u32>,
    /// The body failed (reset, stalled): the upstream's fault.
    failed: bool,
    ended: bool,
}

impl Outcome {
    /// A call recorded on `slot` with `latency`.
    pub fn new(slot: usize, latency: Duration) -> Self {
        Self { slot, latency, code: None, failed: false, ended: false }
    }

    /// The trailers arrived.
    pub fn trailers(&mut self, t: &HeaderMap) {
        self.code = status(t).or(self.code);
    }

    /// The body ended cleanly (no `grpc-status` seen: `UNKNOWN`, as gRPC reads it).
    pub fn ended(&mut self) {
        self.ended = true;
    }

    /// The body failed before its end.
    pub fn failed(&mut self) {
        self.failed = true;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let (status, error) = match (self.code, self.failed, self.ended) {
            (Some(code), _, _) => (as_http(code), None),
            (None, true, _) => (502, Some(ErrorClass::UpstreamReset)),
            (None, false, true) => (500, None),
            (None, false, false) => (499, Some(ErrorClass::ClientClosed)),
        };
        crate::stats::record(self.slot, self.latency, status, error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_parse_as_the_spec_writes_them() {
        let t = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            timeout(&h)
        };
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S", " 5S"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn server_faults_are_5xx_and_callers_4xx() {
        for (code, http) in
            [(0, 200), (1, 499), (2, 500), (3, 400), (4, 504), (5, 404), (13, 500), (14, 503), (16, 401)]
        {
            assert_eq!(as_http(code), http, "{code}");
        }
    }
}
