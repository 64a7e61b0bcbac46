//! The admin API client behind `switchyard ctl`: one HTTP/1.1 request per
//! call, the token and actor headers, and server errors as readable text.

use super::render::event_line;
use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::io::Write;
use switchyard::admin::api::ErrorBody;
use switchyard::control::state::Event;
use tokio::net::TcpStream;

/// Where and as whom `ctl` calls the admin API.
pub(crate) struct Client {
    pub(crate) addr: String,
    pub(crate) token: Option<String>,
    pub(crate) actor: Option<String>,
}

impl Client {
    /// Sends a request; writes carry `content_type`.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        reason: Option<&str>,
        content_type: &'static str,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let stream = TcpStream::connect(&self.addr).await.with_context(|| {
            format!("cannot reach the admin API at {} (is the proxy running with an `admin` section?)", self.addr)
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder().method(method.clone()).uri(path).header(header::HOST, &self.addr);
        if method != Method::GET {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(a) = &self.actor {
            req = req.header("x-switchyard-actor", a);
        }
        if let Some(r) = reason {
            req = req.header("x-switchyard-reason", r);
        }
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        Ok(sender.send_request(req).await?)
    }

    /// One call with a JSON body (if any); the body on 2xx, the server's
    /// message as the error otherwise.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        reason: Option<&str>,
    ) -> anyhow::Result<Bytes> {
        self.call_as(method, path, body, reason, "application/json").await
    }

    /// [`Client::call`] with a body of another content type.
    pub(super) async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        reason: Option<&str>,
        content_type: &'static str,
    ) -> anyhow::Result<Bytes> {
        let resp = self.send(method, path, body, reason, content_type).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{}", server_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// Streams server-sent events until the connection ends.
    pub(super) async fn follow(&self, path: &str, json: bool) -> anyhow::Result<()> {
        let resp = self.send(Method::GET, path, None, None, "").await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            bail!("{}", server_error(status, &bytes));
        }
        let mut buf = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let msg: String = buf.drain(..end + 2).collect();
                for line in msg.lines().filter_map(|l| l.strip_prefix("data: ")) {
                    if json {
                        println!("{line}");
                    } else if let Ok(e) = serde_json::from_str::<Event>(line) {
                        println!("{}", event_line(&e));
                    }
                }
                std::io::stdout().flush()?;
            }
        }
        Ok(())
    }
}

fn server_error(status: StatusCode, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    format!("{} {}: {msg}", status.as_u16(), status.canonical_reason().unwrap_or(""))
}

/// The client's token: `--token` (or `SWITCHYARD_CTL_TOKEN`), else
/// `--token-file`, else — with a warning, since the server reads it too —
/// `SWITCHYARD_ADMIN_TOKEN`.
pub(crate) fn client_token(token: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    if let Some(t) = token {
        return Ok(Some(t.to_owned()));
    }
    if let Some(f) = file {
        return token_from_file(f).map(Some);
    }
    match std::env::var("SWITCHYARD_ADMIN_TOKEN") {
        Ok(t) if !t.trim().is_empty() => {
            eprintln!(
                "switchyard: taking the token from SWITCHYARD_ADMIN_TOKEN, which `switchyard serve` also reads \
                 (as a token it accepts); give the client SWITCHYARD_CTL_TOKEN instead"
            );
            Ok(Some(t.trim().to_owned()))
        }
        _ => Ok(None),
    }
}

/// The first token in a tokens file (`name: token` lines, as the server's
/// `admin.tokens_file`; `#` comments).
fn token_from_file(f: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    let line = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).unwrap_or("");
    Ok(line.split_once(':').map_or(line, |(_, t)| t.trim()).to_owned())
}
