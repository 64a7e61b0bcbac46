//! The admin API's longer answers: starting a rollout, a rollout command,
//! a service's statistics, the event history (listed or followed) and the
//! deployment report.

use super::*;

impl Admin {
    /// `POST /v1/services/{svc}/rollout`: an empty body, or `{}`, means the
    /// service's own plan; otherwise the body is the plan (JSON or YAML).
    pub(super) async fn start_rollout(&self, name: &str, body: &[u8], actor: &str) -> (Resp, bool) {
        let c = &self.control;
        // An empty body, or `{}`, means the service's own plan.
        let empty = body.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Value>(body)
                .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()));
        let plan = if empty {
            None
        } else {
            let pools = match c.shared.snapshot.load().service(name) {
                Some(svc) => svc.pool_names(),
                None => return (error(StatusCode::NOT_FOUND, format!("no service named `{name}`")), false),
            };
            match crate::config::parse_plan(&String::from_utf8_lossy(body), &pools) {
                Ok(p) => Some(p),
                Err(e) => return (error(StatusCode::BAD_REQUEST, e.to_string()), false),
            }
        };
        match c.start_rollout(name, plan, actor).await {
            Ok(r) => (json(StatusCode::OK, &rollout_view(&r)), true),
            Err(e) => (e.into(), false),
        }
    }

    /// `POST /v1/services/{svc}/rollout/{action}`: a manual command.
    pub(super) async fn rollout_command(
        &self,
        name: &str,
        action: &str,
        body: &[u8],
        actor: &str,
        path: &str,
    ) -> (Resp, bool) {
        let c = &self.control;
        let cmd = match action {
            "promote" => {
                let full = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("full").and_then(serde_json::Value::as_bool))
                    .unwrap_or(false);
                Command::Promote { full }
            }
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "abort" => Command::Abort,
            "rollback" => Command::Rollback,
            _ => return (error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")), false),
        };
        match c.rollout_command(name, cmd, actor).await {
            Ok(r) => (json(StatusCode::OK, &rollout_view(&r)), true),
            Err(e) => (e.into(), false),
        }
    }

    pub(super) fn stats(&self, name: &str, query: &str) -> Resp {
        let c = &self.control;
        let snap = c.shared.snapshot.load();
        let Some(svc) = snap.service(name) else {
            return error(StatusCode::NOT_FOUND, format!("no service named `{name}`"));
        };
        let stats = &c.shared.stats;
        let span = match query_param(query, "window").filter(|w| !w.is_empty()).map(humantime::parse_duration) {
            None => None,
            Some(Ok(d)) if d <= stats.window() && d >= stats.tick() => Some(d),
            Some(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("window must be a duration between {:?} and {:?}", stats.tick(), stats.window()),
                )
            }
        };
        let window_seconds = span.unwrap_or(stats.window()).as_secs_f64();
        let view = StatsView {
            service: svc.name.clone(),
            window_seconds,
            pools: svc
                .pools
                .iter()
                .map(|p| (p.name.clone(), figures_view(&stats.recent(p.stats_slot, span))))
                .collect(),
            lifetime: svc.pools.iter().map(|p| (p.name.clone(), figures_view(&stats.lifetime(p.stats_slot)))).collect(),
        };
        json(StatusCode::OK, &view)
    }

    pub(super) fn events(&self, query: &str) -> Resp {
        let Some(store) = &self.control.store else {
            return json(StatusCode::OK, &Vec::<crate::control::state::Event>::new());
        };
        let limit = match query_param(query, "limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=10_000).contains(&n) => n,
            Some(_) => return error(StatusCode::BAD_REQUEST, "limit must be an integer from 1 to 10000"),
        };
        let after = match query_param(query, "after").map(str::parse::<u64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "after must be an event number (an integer ≥ 0)"),
        };
        let follow = match query_param(query, "follow") {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(_) => return error(StatusCode::BAD_REQUEST, "follow must be 1, true, 0 or false"),
        };
        // Subscribe before reading the backlog so nothing falls between the two.
        let mut live = store.subscribe();
        let backlog = match after {
            Some(a) => store.events(a, limit),
            None => store.last_events(limit),
        };
        let backlog = match backlog {
            Ok(b) => b,
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        if !follow {
            return json(StatusCode::OK, &backlog);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        let mut last = backlog.last().map_or(after.unwrap_or(0), |e| e.seq);
        tokio::spawn(async move {
            let sse = |e: &crate::control::state::Event| {
                Bytes::from(format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    e.seq,
                    e.kind,
                    serde_json::to_string(e).unwrap_or_default()
                ))
            };
            for e in &backlog {
                if tx.send(sse(e)).await.is_err() {
                    return;
                }
            }
            let period = Duration::from_secs(15);
            let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    r = live.recv() => match r {
                        Ok(e) if e.seq > last => {
                            last = e.seq;
                            if tx.send(sse(&e)).await.is_err() { return; }
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx.send(Bytes::from_static(b": lagged; reconnect with after=<last id>\n\n")).await;
                            return;
                        }
                        Err(_) => return,
                    },
                    _ = keepalive.tick() => if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() { return; },
                }
            }
        });
        let mut r = Response::new(AdminBody::Stream(rx));
        r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/event-stream"));
        r.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
        r
    }
}

/// The longest period a report covers.
const MAX_PERIOD: Duration = Duration::from_secs(366 * 86400);

impl Admin {
    /// `GET /v1/report?since=7d&format=json|md|html`.
    pub(super) async fn report(&self, query: &str) -> Resp {
        let since = match query_param(query, "since").filter(|s| !s.is_empty()).map(humantime::parse_duration) {
            None => Duration::from_secs(7 * 86400),
            Some(Ok(d)) if d >= Duration::from_secs(60) && d <= MAX_PERIOD => d,
            Some(_) => return error(StatusCode::BAD_REQUEST, "since must be a duration from 1m to 366d, such as 7d"),
        };
        let format = query_param(query, "format").unwrap_or("json");
        if !["json", "md", "html"].contains(&format) {
            return error(StatusCode::BAD_REQUEST, "format must be json, md or html");
        }
        let report = match crate::report::build::build(&self.control, since).await {
            Ok(r) => r,
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the history: {e}")),
        };
        match format {
            "md" => text("text/markdown; charset=utf-8", crate::report::render::markdown(&report)),
            "html" => text("text/html; charset=utf-8", crate::report::render::html(&report)),
            _ => json(StatusCode::OK, &report),
        }
    }
}
