//! Webhooks: every rollout event is POSTed as JSON (with a `text` field that
//! Slack-compatible receivers show) to each configured URL. Delivery runs in
//! its own task: a slow or failing receiver never blocks or changes a
//! rollout. Each delivery is tried up to 4 times with 0.5 s, 1 s, 2 s backoff.

use crate::control::state::Event;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::net::TcpStream;

const ATTEMPTS: u32 = 4;

/// Sends `event` to every URL in the background.
pub(super) fn send(urls: &[String], event: &Event) {
    if urls.is_empty() {
        return;
    }
    let mut body = serde_json::to_value(event).unwrap_or_default();
    // A rollout's weight change carries the rollout's story in its reason.
    let text = format!(
        "[switchyard] {}: {}",
        event.service.as_deref().unwrap_or("-"),
        event.reason.as_deref().unwrap_or(&event.message)
    );
    if let Some(o) = body.as_object_mut() {
        o.insert("text".into(), text.into());
    }
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    for url in urls {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            for attempt in 1..=ATTEMPTS {
                match tokio::time::timeout(Duration::from_secs(5), post(&url, body.clone())).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => tracing::warn!(url = %url, attempt, error = %e, "webhook failed"),
                    Err(_) => tracing::warn!(url = %url, attempt, "webhook timed out"),
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        });
    }
}

async fn post(url: &str, body: Bytes) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, "switchyard")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", resp.status()))
    }
}
