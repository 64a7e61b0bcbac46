//! Errors: the crate's [`Error`] for start-up and control-path failures, and
//! [`ErrorClass`], the small `Copy` class every request-path failure maps to.
//!
//! A request-path failure is never boxed or formatted per request: its class
//! decides the status code, the `x-switchyard-error` header, the access-log
//! label and whether a retry is allowed (pingora's `ErrorType`/`RetryType`).

use http::StatusCode;
use std::path::PathBuf;

/// Errors of start-up, configuration and the control path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {error}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The configuration is invalid; the message names the field and line.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("listener `{name}`: cannot bind {addr}: {error}")]
    Bind {
        /// The listener's name.
        name: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// A thread or runtime could not be started.
    #[error("{0}")]
    Runtime(String),
    /// The state store failed.
    #[error("{0}")]
    State(String),
    /// A plugin did not load: not a component, wrong imports or exports, a
    /// failed trial call, a bad configuration.
    #[error("{0}")]
    Plugin(String),
    /// A flag file (or an override) is not valid flagd.
    #[error("{0}")]
    Flags(String),
    /// The fleet's store (etcd) cannot be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
    /// A guarded write found the shared state not as it expected (the
    /// rollout changed meanwhile, or this replica no longer leads); nothing
    /// was changed.
    #[error("{0}")]
    Stale(String),
}

/// The class of a request-path failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// No service matches the request's host and path.
    NoService,
    /// The chosen pool has no healthy endpoint.
    NoHealthyEndpoint,
    /// Connecting to the upstream failed (refused, unreachable, connect timeout).
    UpstreamConnect,
    /// The upstream did not answer within the service's timeout.
    UpstreamTimeout,
    /// The upstream connection broke or answered with bad framing.
    UpstreamReset,
    /// The request is malformed or ambiguous.
    BadRequest,
    /// The request method is not proxied (`CONNECT`).
    MethodNotAllowed,
    /// The request URI is longer than the limit.
    UriTooLong,
    /// The request head (request line and header fields) is larger than the limit.
    HeadersTooLarge,
    /// The request body is larger than the service's cap.
    PayloadTooLarge,
    /// The client stalled while sending its request body.
    RequestTimeout,
    /// The client's request body is malformed (bad chunk framing).
    BadBody,
    /// The client went away before its response: mid-body, or while waiting.
    ClientClosed,
}

// === impl ErrorClass ===

impl ErrorClass {
    /// The status code the client receives.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoService => StatusCode::NOT_FOUND,
            Self::NoHealthyEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamConnect | Self::UpstreamReset => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadBody => StatusCode::BAD_REQUEST,
            // nginx's 499: the client closed the connection; logged, rarely seen.
            Self::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    /// The stable label used in the `x-switchyard-error` header and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::NoService => "no-service",
            Self::NoHealthyEndpoint => "no-healthy-endpoint",
            Self::UpstreamConnect => "upstream-connect",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::UpstreamReset => "upstream-reset",
            Self::BadRequest => "bad-request",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::UriTooLong => "uri-too-long",
            Self::HeadersTooLarge => "headers-too-large",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RequestTimeout => "request-timeout",
            Self::BadBody => "bad-body",
            Self::ClientClosed => "client-closed",
        }
    }

    /// The same failure's label in Prometheus and `/stats`: snake case, and
    /// without `upstream-` under the families that already say upstream
    /// (`switchyard_upstream_errors_total{class="connect"}`). Kept apart from
    /// [`ErrorClass::label`] only in spelling; both are defined here.
    pub const fn metric_label(self) -> &'static str {
        match self {
            Self::NoService => "no_service",
            Self::NoHealthyEndpoint => "no_healthy_endpoint",
            Self::UpstreamConnect => "connect",
            Self::UpstreamTimeout => "timeout",
            Self::UpstreamReset => "reset",
            Self::BadRequest => "bad_request",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::BadBody => "bad_body",
            Self::ClientClosed => "client_closed",
        }
    }

    /// Whether the failure counts against the endpoint's passive health.
    pub fn is_endpoint_failure(self) -> bool {
        matches!(self, Self::UpstreamConnect | Self::UpstreamTimeout | Self::UpstreamReset)
    }

    /// Whether the client caused it. A client fault is never counted against
    /// a pool or an endpoint, nor retried: statistics count it apart.
    pub fn is_client_fault(self) -> bool {
        matches!(
            self,
            Self::BadRequest
                | Self::MethodNotAllowed
                | Self::UriTooLong
                | Self::HeadersTooLarge
                | Self::PayloadTooLarge
                | Self::RequestTimeout
                | Self::BadBody
                | Self::ClientClosed
        )
    }
}
