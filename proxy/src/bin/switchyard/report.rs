//! `switchyard report`: the deployment report of one or more proxies
//! (staging and production, say), merged into one, as Markdown, HTML or JSON.

use crate::ctl::client::Client;
use http::Method;
use std::path::PathBuf;
use switchyard::report::{render, Report};

/// `switchyard report` arguments.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// A proxy's admin API (`host:port` or `http://host:port`); repeat to
    /// merge several into one report.
    #[arg(long = "admin", env = "SWITCHYARD_ADMIN_ADDR", default_value = "127.0.0.1:9901", value_delimiter = ',')]
    admins: Vec<String>,
    /// Bearer token (needed to read an admin API off loopback).
    #[arg(long, env = "SWITCHYARD_CTL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file (its first line; `name:token` allowed).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The period: the last 7d, 24h, 30d...
    #[arg(long, default_value = "7d")]
    since: String,
    /// `md` (Markdown), `html` or `json`.
    #[arg(long, default_value = "md", value_parser = ["md", "html", "json"])]
    format: String,
    /// Write it here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Fetches each proxy's report, merges them and writes the result.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    humantime::parse_duration(&args.since)
        .map_err(|e| anyhow::anyhow!("--since {}: {e} (write a duration such as 7d or 24h)", args.since))?;
    let token = crate::ctl::client_token(args.token.as_deref(), args.token_file.as_deref())?;
    let mut reports = Vec::new();
    for admin in &args.admins {
        if admin.starts_with("https://") {
            anyhow::bail!("{admin}: the CLI speaks plain HTTP to admin APIs (reach a remote one through a tunnel)");
        }
        let addr = admin.trim().trim_start_matches("http://").trim_end_matches('/').to_owned();
        let c = Client { addr, token: token.clone(), actor: None };
        let body = c
            .call(Method::GET, &format!("/v1/report?since={}", args.since), None, None)
            .await
            .map_err(|e| anyhow::anyhow!("{admin}: {e:#}"))?;
        let r: Report = serde_json::from_slice(&body).map_err(|e| anyhow::anyhow!("{admin}: not a report: {e}"))?;
        reports.push(r);
    }
    let Some(report) = Report::merge(reports) else { anyhow::bail!("no admin API given (--admin HOST:PORT)") };
    let text = match args.format.as_str() {
        "html" => render::html(&report),
        "json" => serde_json::to_string_pretty(&report)? + "\n",
        _ => render::markdown(&report),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
        }
        None => print!("{text}"),
    }
    Ok(())
}
