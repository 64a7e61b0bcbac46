//! Webhooks: every rollout event is POSTed as JSON (with a `text` field that
//! Slack-compatible receivers show) to each configured URL, `http://` or
//! `https://` (verified against the system's roots, or `webhooks.ca_file`).
//! Delivery runs in its own task: a slow or failing receiver never blocks or
//! changes a rollout. Each delivery is tried up to 4 times with 0.5 s, 1 s,
//! 2 s backoff.

use crate::control::state::Event;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

const ATTEMPTS: u32 = 4;

/// Sends `event` to every URL in the background; `ca` is `webhooks.ca_file`.
pub(super) fn send(urls: &[String], event: &Event, ca: Option<&Path>) {
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
        let (url, body, ca) = (url.clone(), body.clone(), ca.map(Path::to_owned));
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            for attempt in 1..=ATTEMPTS {
                match tokio::time::timeout(Duration::from_secs(5), post(&url, body.clone(), ca.as_deref())).await {
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

async fn post(url: &str, body: Bytes, ca: Option<&Path>) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("no host")?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") | None => false,
        Some(other) => return Err(format!("`{other}://` is not http:// or https://")),
    };
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let stream = TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let mut sender = if https {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(client_config(ca)?)
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        handshake(tls).await?
    } else {
        handshake(stream).await?
    };
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

/// An HTTP/1.1 connection over `io`, driven in the background.
async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The TLS client for `https://` receivers: trusting `ca` (read at each
/// delivery, so a renewed file takes effect), else the system's roots.
fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some(ca) => Arc::new(crate::data::tls::roots_from(ca).map_err(|e| format!("webhooks.ca_file {e}"))?),
        None => crate::data::tls::system_roots(),
    };
    rustls::ClientConfig::builder_with_provider(crate::data::tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| e.to_string())
}
