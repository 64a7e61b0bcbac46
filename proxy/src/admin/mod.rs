//! The admin API: JSON over HTTP/1.1 on its own listener (loopback by
//! default), served on the control path. Reads are open on loopback; every
//! write needs `Authorization: Bearer <token>` when tokens are configured,
//! a JSON content type (so a cross-site form cannot post), and becomes an
//! event. See `proxy/openapi.yaml` (also served at `/v1/openapi.yaml`).

pub mod api;
mod calls;
pub mod metrics;
mod ui;
mod views;
mod wire;

pub use wire::{parse_pool, parse_weights};

use crate::config::AdminToken;
use crate::control::Command;
use crate::control::Control;
use api::*;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use views::{figures_view, flags_view, plugin_view, rollout_view, service_view};
use wire::{answer, error, is_content_type, json, json_body, query_param, text};

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// Every route: method and path template, as listed in the OpenAPI description.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.yaml"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{svc}"),
    ("PUT", "/v1/services/{svc}/weights"),
    ("DELETE", "/v1/services/{svc}/weights"),
    ("PUT", "/v1/services/{svc}/pools/{pool}"),
    ("DELETE", "/v1/services/{svc}/pools/{pool}"),
    ("DELETE", "/v1/services/{svc}/suspension"),
    ("GET", "/v1/services/{svc}/stats"),
    ("GET", "/v1/services/{svc}/rollout"),
    ("POST", "/v1/services/{svc}/rollout"),
    ("POST", "/v1/services/{svc}/rollout/{action}"),
    ("GET", "/v1/flags"),
    ("PUT", "/v1/flags/{key}"),
    ("DELETE", "/v1/flags/{key}"),
    ("GET", "/v1/events"),
    ("GET", "/v1/fleet"),
    ("GET", "/v1/whoami"),
    ("GET", "/v1/report"),
    ("POST", "/v1/config/reload"),
    ("GET", "/v1/plugins"),
    ("GET", "/v1/plugins/{name}"),
    ("PUT", "/v1/plugins/{name}"),
    ("DELETE", "/v1/plugins/{name}"),
    ("PUT", "/v1/plugins/{name}/config"),
];

/// The rollout commands `POST /v1/services/{svc}/rollout/{action}` takes.
const ROLLOUT_ACTIONS: &[&str] = &["promote", "pause", "resume", "abort", "rollback"];

/// Whether a path (as segments) fits a route's template: `{name}` is any one
/// segment (`{action}` one of [`ROLLOUT_ACTIONS`]), anything else itself.
fn matches_template(template: &str, segs: &[&str]) -> bool {
    let parts: Vec<&str> = template.split('/').skip(1).collect();
    parts.len() == segs.len()
        && parts.iter().zip(segs).all(|(t, s)| match *t {
            "{action}" => ROLLOUT_ACTIONS.contains(s),
            t if t.starts_with('{') => !s.is_empty(),
            t => t == *s,
        })
}

const MAX_BODY: usize = 1 << 20;

/// One admin call, past routing, authentication and the body read.
struct Call<'a> {
    method: Method,
    segs: &'a [&'a str],
    path: &'a str,
    body: Bytes,
    query: String,
    actor: String,
    reason: Option<String>,
}

/// Admin state: the control path plus who may write.
pub struct Admin {
    control: Arc<Control>,
    tokens: Vec<AdminToken>,
    loopback: bool,
    registry: prometheus::Registry,
}

/// Binds the admin listener. Refuses a non-loopback address without a token.
pub async fn bind(
    control: Arc<Control>,
    socket: std::net::TcpListener,
    mut tokens: Vec<AdminToken>,
) -> Result<(TcpListener, Arc<Admin>), crate::Error> {
    let bind_err = |addr, error| crate::Error::Bind { name: "admin".into(), addr, error };
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let addr = socket.local_addr().map_err(|e| bind_err(unknown, e))?;
    if let Ok(t) = std::env::var("SWITCHYARD_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            tokens.push(AdminToken { name: "env".into(), token: t.trim().to_owned(), read_only: false });
        }
    }
    let loopback = addr.ip().is_loopback();
    if !loopback && tokens.is_empty() {
        return Err(crate::Error::Config(format!(
            "admin.bind {addr} is not a loopback address: set admin.token_file or SWITCHYARD_ADMIN_TOKEN"
        )));
    }
    let registry = prometheus::Registry::new();
    let collector = crate::admin::metrics::SwitchyardCollector::new(control.shared.clone())
        .map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    registry.register(Box::new(collector)).map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    let rollouts = crate::admin::metrics::RolloutCollector::new(control.clone())
        .map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    registry.register(Box::new(rollouts)).map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    if control.config().fleet.is_some() {
        let fleet = crate::admin::metrics::FleetCollector::new(control.clone())
            .map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
        registry.register(Box::new(fleet)).map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    }
    // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new(crate::admin::metrics::BUILD_INFO, "Always 1; the version label says which build runs."),
        &["version"],
    )
    .map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info)).map_err(|e| crate::Error::Runtime(format!("metrics: {e}")))?;
    socket.set_nonblocking(true).map_err(|e| bind_err(addr, e))?;
    let listener = TcpListener::from_std(socket).map_err(|e| bind_err(addr, e))?;
    if tokens.is_empty() {
        tracing::warn!("admin API has no token: writes are open to local processes");
    }
    Ok((listener, Arc::new(Admin { control, tokens, loopback, registry })))
}

/// Serves the admin API until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The admin API's response body: one chunk, or a stream of server-sent events.
pub enum AdminBody {
    /// A whole body.
    Full(Full<Bytes>),
    /// Frames from a channel (server-sent events).
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for AdminBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            AdminBody::Full(f) => Pin::new(f).poll_frame(cx),
            AdminBody::Stream(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

type Resp = Response<AdminBody>;

// === impl Admin ===

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let is_write = matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE | Method::PATCH);
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let claimed = req.headers().get("x-switchyard-actor").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Who may leave a trace in the durable history: a valid token's holder,
        // or anyone when no tokens are configured (a loopback-only API).
        let verified = match self.token(req.headers()) {
            Some(t) => Some(claimed.clone().unwrap_or_else(|| t.name.clone())),
            None if self.tokens.is_empty() => Some(claimed.clone().unwrap_or_else(|| "anonymous".to_owned())),
            None => None,
        };
        let (resp, audited) = self.route(req).await;
        let path: String = path.chars().take(256).collect();
        if is_write && !audited && !resp.status().is_success() {
            match verified {
                // Refused before the control path saw it: still part of the history.
                Some(actor) => {
                    let service = path.strip_prefix("/v1/services/").and_then(|r| r.split('/').next());
                    let msg = format!("{method} {path} refused with {}", resp.status().as_u16());
                    self.control.record_refused("admin-write", service, &actor, msg);
                }
                // Not in the durable history: whoever can reach the port could fill the disk.
                None => {
                    tracing::warn!(method = %method, path = %path, status = resp.status().as_u16(), "admin write without a valid token refused")
                }
            }
        }
        resp
    }

    /// Answers a request; says whether the control path already recorded it.
    async fn route(&self, req: Request<Incoming>) -> (Resp, bool) {
        let path = req.uri().path().to_owned();
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let method = req.method().clone();
        let is_write = matches!(method, Method::PUT | Method::POST | Method::DELETE | Method::PATCH);
        let health = segs.first() == Some(&"health");
        // The dashboard's static files: no data in them, so no token.
        if method == Method::GET {
            if let Some(r) = ui::asset(&path) {
                return (r, true);
            }
        }

        // Which routes exist, for 404 vs 405: the one list, [`ROUTES`].
        let allowed: Vec<Method> = ROUTES
            .iter()
            .filter(|(_, template)| matches_template(template, &segs))
            .filter_map(|(m, _)| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        if allowed.is_empty() {
            return (error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")), false);
        }
        if !allowed.contains(&method) {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}"));
            let allow = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            if let Ok(v) = header::HeaderValue::from_str(&allow) {
                r.headers_mut().insert(header::ALLOW, v);
            }
            return (r, false);
        }

        // Authentication: writes always (when tokens exist); reads too off loopback.
        let token = self.token(req.headers());
        let needs_token = !self.tokens.is_empty() && (is_write || (!self.loopback && !health));
        if needs_token && token.is_none() {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            return (r, false);
        }
        if is_write && token.is_some_and(|t| t.read_only) {
            return (error(StatusCode::FORBIDDEN, "this token may only read"), false);
        }
        if segs.as_slice() == ["v1", "whoami"] {
            return (self.whoami(req.headers(), token), true);
        }
        let token_name = token.map(|t| t.name.clone());
        let actor = req
            .headers()
            .get("x-switchyard-actor")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(128).collect())
            .or(token_name)
            .unwrap_or_else(|| "anonymous".to_owned());
        let reason = req.headers().get("x-switchyard-reason").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Plugin uploads are Wasm bytes; every other write is JSON. Neither is
        // a type a cross-site form can send.
        let upload = matches!(segs.as_slice(), ["v1", "plugins", _]) && method == Method::PUT;
        if upload && !is_content_type(req.headers(), &["application/wasm", "application/octet-stream"]) {
            let msg = "plugin uploads need Content-Type: application/wasm (or application/octet-stream)";
            return (error(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg), false);
        }
        // A bodiless write (`DELETE .../weights`, `POST .../rollout/abort`) with a
        // valid token needs no media type: no browser sends a bearer token
        // cross-site. Without tokens the JSON type is what keeps forms out.
        let bodiless = http_body::Body::is_end_stream(req.body()) && token.is_some();
        if is_write && !upload && !bodiless && !is_content_type(req.headers(), &["application/json"]) {
            return (error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "writes need Content-Type: application/json"), false);
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let limit = if upload { self.control.config().server.max_plugin_size } else { MAX_BODY };
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                let msg = format!("the body is larger than {} MiB", limit >> 20);
                return (error(StatusCode::PAYLOAD_TOO_LARGE, msg), false);
            }
            Err(e) => return (error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")), false),
        };

        let call = Call { method, segs: &segs, path: &path, body, query, actor, reason };
        self.dispatch(call).await
    }

    /// Runs an accepted call; `false` when it was refused before reaching
    /// the control path (which records everything else).
    async fn dispatch(&self, call: Call<'_>) -> (Resp, bool) {
        if call.method == Method::GET {
            return (self.read(call.segs, call.path, &call.query).await, true);
        }
        let Call { method, segs, path, body, actor, reason, .. } = call;
        let c = &self.control;
        let bad = |msg: String| (error(StatusCode::BAD_REQUEST, msg), false);
        let resp = match (method, segs) {
            (Method::PUT, ["v1", "services", name, "weights"]) => {
                let (weights, body_reason) = match parse_weights(&body) {
                    Ok(w) => w,
                    Err(msg) => return bad(msg),
                };
                answer(c.set_weights(name, weights, &actor, body_reason.or(reason)).await)
            }
            (Method::DELETE, ["v1", "services", name, "weights"]) => {
                answer(c.reset_weights(name, &actor, reason).await)
            }
            (Method::PUT, ["v1", "services", name, "pools", pool]) => {
                let (set, body_reason) = match parse_pool(&body) {
                    Ok(p) => p,
                    Err(msg) => return bad(msg),
                };
                answer(c.set_pool(name, pool, Some(set), &actor, body_reason.or(reason)).await)
            }
            (Method::DELETE, ["v1", "services", name, "pools", pool]) => {
                answer(c.set_pool(name, pool, None, &actor, reason).await)
            }
            (Method::DELETE, ["v1", "services", name, "suspension"]) => {
                answer(c.lift_suspension(name, &actor, reason).await)
            }
            (Method::POST, ["v1", "config", "reload"]) => answer(c.reload(&actor, reason).await),
            (Method::PUT, ["v1", "flags", key]) => match json_body(&body) {
                Ok(patch) => answer(c.set_flag(key, patch, &actor, reason).await),
                Err(msg) => return bad(msg),
            },
            (Method::DELETE, ["v1", "flags", key]) => answer(c.reset_flag(key, &actor, reason).await),
            (Method::POST, ["v1", "services", name, "rollout"]) => {
                return self.start_rollout(name, &body, &actor).await
            }
            (Method::POST, ["v1", "services", name, "rollout", action]) => {
                return self.rollout_command(name, action, &body, &actor, path).await
            }
            (Method::PUT, ["v1", "plugins", name, "config"]) => match json_body(&body) {
                Ok(config) => answer(c.set_plugin_config(name, config, &actor, reason).await),
                Err(msg) => return bad(msg),
            },
            (Method::PUT, ["v1", "plugins", name]) => answer(c.load_plugin(name, &body, &actor, reason).await),
            (Method::DELETE, ["v1", "plugins", name]) => answer(c.remove_plugin(name, &actor, reason).await),
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        };
        // Writes that got this far were recorded by the control path.
        (resp, true)
    }

    /// Answers a `GET`.
    async fn read(&self, segs: &[&str], path: &str, query: &str) -> Resp {
        let c = &self.control;
        match segs {
            ["health", "live"] => json(StatusCode::OK, &serde_json::json!({ "status": "live" })),
            ["health", "ready"] => {
                // A degraded fleet still serves traffic: ready, with the fleet's state beside it.
                let draining = c.shared.draining.load(std::sync::atomic::Ordering::Relaxed);
                let mut body = serde_json::json!({ "status": if draining { "draining" } else { "ready" } });
                if let Some(f) = c.store.as_ref().and_then(|s| s.fleet()) {
                    body["fleet"] = f.state.into();
                }
                let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
                json(status, &body)
            }
            ["v1", "fleet"] => match c.store.as_ref().and_then(|s| s.fleet()) {
                Some(f) => json(StatusCode::OK, &f),
                None => error(StatusCode::NOT_FOUND, "this proxy is not in a fleet (no `state.etcd` in its config)"),
            },
            ["metrics"] => {
                let mut out = String::new();
                match prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
                    Ok(()) => text("text/plain; version=0.0.4; charset=utf-8", out),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                }
            }
            ["v1", "openapi.yaml"] => text("application/yaml", OPENAPI),
            ["v1", "services"] => {
                let snap = c.shared.snapshot.load();
                let mut views = Vec::new();
                for s in snap.services() {
                    views.push(self.service(s).await);
                }
                json(StatusCode::OK, &views)
            }
            ["v1", "services", name] => match c.shared.snapshot.load().service(name) {
                Some(s) => json(StatusCode::OK, &self.service(s).await),
                None => error(StatusCode::NOT_FOUND, format!("no service named `{name}`")),
            },
            ["v1", "services", name, "stats"] => self.stats(name, query),
            ["v1", "services", name, "rollout"] => match c.rollout(name).await {
                Some(r) => json(StatusCode::OK, &rollout_view(&r)),
                None => error(StatusCode::NOT_FOUND, format!("`{name}` has had no rollout")),
            },
            ["v1", "events"] => self.events(query),
            ["v1", "report"] => self.report(query).await,
            ["v1", "flags"] => json(StatusCode::OK, &flags_view(&c.shared.flags.load())),
            ["v1", "plugins"] => {
                json(StatusCode::OK, &c.shared.plugins.all().iter().map(|p| plugin_view(p)).collect::<Vec<_>>())
            }
            ["v1", "plugins", name] => match c.shared.plugins.get(name) {
                Some(p) => json(StatusCode::OK, &plugin_view(&p)),
                None => error(StatusCode::NOT_FOUND, format!("no plugin named `{name}`")),
            },
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    }

    /// A service as the API shows it, with its latest rollout's status.
    async fn service(&self, s: &crate::data::snapshot::Service) -> ServiceView {
        let mut v = service_view(s);
        v.rollout = self.control.rollout(&s.name).await.map(|r| r.status.as_str().to_owned());
        v
    }

    /// `GET /v1/whoami`: what the caller's token may do (the dashboard asks
    /// before it enables its buttons). A token that matches none is a 401.
    fn whoami(&self, headers: &HeaderMap, token: Option<&AdminToken>) -> Resp {
        if token.is_none() && !self.tokens.is_empty() && headers.contains_key(header::AUTHORIZATION) {
            return error(StatusCode::UNAUTHORIZED, "the bearer token matches none of this proxy's tokens");
        }
        json(
            StatusCode::OK,
            &WhoAmIView {
                version: env!("CARGO_PKG_VERSION").into(),
                environment: self.control.config().environment.clone(),
                token: token.map(|t| t.name.clone()),
                can_write: token.map_or(self.tokens.is_empty(), |t| !t.read_only),
                tokens_required: !self.tokens.is_empty(),
            },
        )
    }

    /// The valid token the request carries, if any.
    fn token(&self, headers: &HeaderMap) -> Option<&AdminToken> {
        let given = headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
        let mut found = None;
        for t in &self.tokens {
            // Compare every token in constant time; never short-circuit on a match.
            if bool::from(given.as_bytes().ct_eq(t.token.as_bytes())) {
                found = Some(t);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_bodies() {
        let (w, r) = parse_weights(br#"{"stable": 90, "canary": 10}"#).unwrap();
        assert_eq!((w["stable"], w["canary"], r), (90, 10, None));
        let (w, r) = parse_weights(br#"{"weights": {"canary": 5}, "reason": "step 1"}"#).unwrap();
        assert_eq!((w["canary"], r.as_deref()), (5, Some("step 1")));
        assert!(parse_weights(br#"{"stable": -1}"#).is_err());
        assert!(parse_weights(br#"{"stable": 1.5}"#).is_err());
        assert!(parse_weights(br#"{}"#).is_err());
        assert!(parse_weights(b"stable=1").is_err());
        assert!(parse_weights(br#"{"weights": {"a": 1}, "extra": 1}"#).is_err());
    }

    #[test]
    fn templates_match_whole_segments() {
        let segs = |p: &'static str| p.split('/').skip(1).collect::<Vec<_>>();
        assert!(matches_template("/v1/services/{svc}/weights", &segs("/v1/services/web/weights")));
        assert!(!matches_template("/v1/services/{svc}/weights", &segs("/v1/services//weights")));
        assert!(!matches_template("/v1/services/{svc}", &segs("/v1/services/web/weights")));
        assert!(matches_template("/v1/services/{svc}/rollout/{action}", &segs("/v1/services/web/rollout/abort")));
        assert!(!matches_template("/v1/services/{svc}/rollout/{action}", &segs("/v1/services/web/rollout/launch")));
    }

    /// Every route is described in the OpenAPI document and nothing else is.
    #[test]
    fn openapi_lists_exactly_the_routes() {
        let doc: serde_json::Value = serde_saphyr::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routes: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
