//! `switchyard ctl`: the admin API from a terminal or a CI job. Human tables
//! by default, `--json` for scripts; any failure exits non-zero with the
//! server's message on stderr.

use anyhow::{anyhow, bail, Context};
use http::Method;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use switchyard::admin::api::{FleetView, PluginView, RolloutView, ServiceView, StatsView};
use switchyard::control::state::Event;

pub(crate) mod client;
pub(crate) use client::client_token;
pub mod follow;
mod render;

use client::Client;
use render::{event_line, print_event, print_raw, print_stats_table, print_table, rollout_text};

/// Connection settings and the command.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin API address.
    #[arg(long, env = "SWITCHYARD_ADMIN_ADDR", default_value = "127.0.0.1:9901")]
    pub addr: String,
    /// Bearer token for writes (`SWITCHYARD_CTL_TOKEN`; not the server's
    /// `SWITCHYARD_ADMIN_TOKEN`, which `serve` would take as a token it accepts).
    #[arg(long, env = "SWITCHYARD_CTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the bearer token from this file (its first line; `name:token` allowed).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Who is acting, recorded in the history (default: the token's name).
    #[arg(long, env = "SWITCHYARD_ACTOR")]
    pub actor: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `switchyard ctl` commands.
#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Services, pools, weights, health and live figures.
    Status,
    /// Set a service's weights: `weights checkout stable=90 canary=10` (or `--reset`).
    Weights {
        /// The service.
        service: String,
        /// `pool=weight` pairs; pools not named get 0.
        weights: Vec<String>,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
        /// Drop the run-time weights: the config file's apply again.
        #[arg(long, conflicts_with = "weights")]
        reset: bool,
    },
    /// Per-pool figures over the window.
    Stats {
        /// The service.
        service: String,
        /// A shorter span than the configured window, e.g. `10s`.
        #[arg(long)]
        window: Option<String>,
    },
    /// The deployment history.
    Events {
        /// Keep streaming new events.
        #[arg(long)]
        follow: bool,
        /// How many of the newest events.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Feature flags: list them, or change one.
    Flags {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<FlagsCommand>,
    },
    /// WebAssembly plugins: list them (calls, faults, call times), or load one.
    Plugins {
        /// What to do (default: list).
        #[command(subcommand)]
        command: Option<PluginsCommand>,
    },
    /// Point a pool at new endpoints and say what they run, or give it back to the file.
    Pool {
        /// What to do.
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Start, watch and move rollouts.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Lift the suspension of a service's rules to a rolled-back pool.
    Lift {
        /// The service.
        service: String,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Re-read the proxy's config file.
    Reload {
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `switchyard ctl flags` commands.
#[derive(Debug, clap::Subcommand)]
pub enum FlagsCommand {
    /// Change a flag at run time (kept across restarts; overrides the file).
    Set {
        /// The flag key.
        key: String,
        /// `ENABLED` or `DISABLED`.
        #[arg(long)]
        state: Option<String>,
        /// The default variant.
        #[arg(long = "default")]
        default_variant: Option<String>,
        /// Targeting as JsonLogic (JSON).
        #[arg(long)]
        targeting: Option<String>,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Drop the run-time change: the file's definition applies again.
    Reset {
        /// The flag key.
        key: String,
    },
}

/// `switchyard ctl plugins` commands.
#[derive(Debug, clap::Subcommand)]
pub enum PluginsCommand {
    /// Load or replace a plugin from a component file; the running version
    /// keeps serving if the new one is refused.
    Load {
        /// The plugin's name (as rules and policies name it).
        name: String,
        /// The `.wasm` component.
        file: std::path::PathBuf,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove what the API set for a plugin (upload, configuration): the
    /// config file's version applies again, or the plugin is gone.
    Remove {
        /// The plugin's name.
        name: String,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Set a plugin's default configuration (JSON), e.g. `'{"percent": 10}'`.
    Config {
        /// The plugin's name.
        name: String,
        /// The configuration, as JSON.
        config: String,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `switchyard ctl pool` commands.
#[derive(Debug, clap::Subcommand)]
pub enum PoolCommand {
    /// Set a pool's endpoints and release (kept across restarts; overrides the file).
    Set {
        /// The service.
        service: String,
        /// The pool.
        pool: String,
        /// Comma-separated endpoints, e.g. `10.0.0.7:8080,10.0.0.8:8080`.
        #[arg(long, value_delimiter = ',', required = true)]
        endpoints: Vec<String>,
        /// What they run: an image tag, a git SHA, a version.
        #[arg(long)]
        version: Option<String>,
        /// The commit it was built from.
        #[arg(long)]
        commit: Option<String>,
        /// The build's page.
        #[arg(long)]
        build_url: Option<String>,
        /// When the commit was made (RFC 3339).
        #[arg(long)]
        commit_time: Option<String>,
        /// Why, recorded in the history.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give the pool back to the config file's endpoints and release.
    Reset {
        /// The service.
        service: String,
        /// The pool.
        pool: String,
    },
}

/// `switchyard ctl rollout` commands.
#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout with the service's plan, or with `--plan FILE` (YAML or JSON).
    /// With `--wait`, follow it to its end: exit 0 when promoted, 2 rolled
    /// back, 3 aborted, 4 still not ended (running or paused) at `--timeout`,
    /// 1 on any other error.
    Start {
        /// The service.
        service: String,
        /// A plan overriding the service's `rollout` section.
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Follow the rollout, printing a line per change, until it ends.
        #[arg(long)]
        wait: bool,
        /// With `--wait`: give up after this long, e.g. `30m` (default: no limit).
        #[arg(long, requires = "wait")]
        timeout: Option<String>,
    },
    /// Where the rollout stands.
    Status {
        /// The service.
        service: String,
        /// Redraw every second until the rollout ends.
        #[arg(long)]
        watch: bool,
    },
    /// Pass the current step or gate.
    Promote {
        /// The service.
        service: String,
        /// Straight to 100 %.
        #[arg(long)]
        full: bool,
    },
    /// Freeze progress (breaches still roll back).
    Pause {
        /// The service.
        service: String,
    },
    /// Continue after a pause.
    Resume {
        /// The service.
        service: String,
    },
    /// Stop: all traffic back on the baseline.
    Abort {
        /// The service.
        service: String,
    },
    /// Roll back: all traffic back on the baseline.
    Rollback {
        /// The service.
        service: String,
    },
}

/// Runs one `ctl` command.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    let token = client_token(args.token.as_deref(), args.token_file.as_deref())?;
    let c = Client { addr: args.addr.clone(), token, actor: args.actor.clone() };
    let json = args.json;
    match args.command {
        CtlCommand::Status => status(&c, json).await,
        CtlCommand::Weights { service, weights, reason, reset } => {
            let path = format!("/v1/services/{service}/weights");
            let body = if reset {
                c.call(Method::DELETE, &path, None, reason.as_deref()).await?
            } else {
                let map = parse_weights(&weights)?;
                c.call(Method::PUT, &path, Some(serde_json::to_vec(&map)?), reason.as_deref()).await?
            };
            print_event(&body, json)
        }
        CtlCommand::Stats { service, window } => {
            let q = window.map(|w| format!("?window={w}")).unwrap_or_default();
            let body = c.call(Method::GET, &format!("/v1/services/{service}/stats{q}"), None, None).await?;
            if json {
                return print_raw(&body);
            }
            let s: StatsView = serde_json::from_slice(&body)?;
            println!("{} — last {}s", s.service, s.window_seconds);
            print_stats_table(&s);
            Ok(())
        }
        CtlCommand::Events { follow, limit } => {
            if follow {
                return c.follow(&format!("/v1/events?follow=1&limit={limit}"), json).await;
            }
            let body = c.call(Method::GET, &format!("/v1/events?limit={limit}"), None, None).await?;
            if json {
                return print_raw(&body);
            }
            for e in serde_json::from_slice::<Vec<Event>>(&body)? {
                println!("{}", event_line(&e));
            }
            Ok(())
        }
        CtlCommand::Rollout { command } => rollout(&c, command, json).await,
        CtlCommand::Pool { command } => pool(&c, command, json).await,
        CtlCommand::Flags { command } => flags(&c, command, json).await,
        CtlCommand::Plugins { command: None } => plugins(&c, json).await,
        CtlCommand::Plugins { command: Some(PluginsCommand::Config { name, config, reason }) } => {
            let value: serde_json::Value = serde_json::from_str(&config).context("the configuration is not JSON")?;
            let path = format!("/v1/plugins/{name}/config");
            let body = c.call(Method::PUT, &path, Some(serde_json::to_vec(&value)?), reason.as_deref()).await?;
            print_event(&body, json)
        }
        CtlCommand::Plugins { command: Some(PluginsCommand::Remove { name, reason }) } => {
            let body = c.call(Method::DELETE, &format!("/v1/plugins/{name}"), None, reason.as_deref()).await?;
            print_event(&body, json)
        }
        CtlCommand::Plugins { command: Some(PluginsCommand::Load { name, file, reason }) } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let path = format!("/v1/plugins/{name}");
            let body = c.call_as(Method::PUT, &path, Some(bytes), reason.as_deref(), "application/wasm").await?;
            print_event(&body, json)
        }
        CtlCommand::Lift { service, reason } => {
            let path = format!("/v1/services/{service}/suspension");
            print_event(&c.call(Method::DELETE, &path, None, reason.as_deref()).await?, json)
        }
        CtlCommand::Reload { reason } => {
            let body = c.call(Method::POST, "/v1/config/reload", None, reason.as_deref()).await?;
            print_event(&body, json)
        }
    }
}

/// `pool=weight` pairs as a weight map.
fn parse_weights(weights: &[String]) -> anyhow::Result<BTreeMap<String, u32>> {
    if weights.is_empty() {
        bail!("give pool=weight pairs, e.g. `stable=90 canary=10`, or --reset");
    }
    let mut map = BTreeMap::new();
    for w in weights {
        let (pool, n) = w.split_once('=').ok_or_else(|| anyhow!("`{w}` is not pool=weight"))?;
        let n: u32 = n.parse().map_err(|_| anyhow!("`{n}` in `{w}` is not a non-negative integer"))?;
        map.insert(pool.to_owned(), n);
    }
    Ok(map)
}

/// `ctl plugins`: the loaded plugins as a table.
async fn plugins(c: &Client, json: bool) -> anyhow::Result<()> {
    let body = c.call(Method::GET, "/v1/plugins", None, None).await?;
    if json {
        return print_raw(&body);
    }
    let mut rows =
        vec![["PLUGIN", "KIND", "SHA256", "LOADED", "CALLS", "FAULTS", "MEAN µs", "P99 µs", "FUEL", "SOURCE"]
            .map(String::from)
            .to_vec()];
    for p in serde_json::from_slice::<Vec<PluginView>>(&body)? {
        rows.push(vec![
            p.name,
            p.kind,
            p.sha256.chars().take(12).collect(),
            p.loaded_at,
            p.calls.to_string(),
            p.faults.to_string(),
            format!("{:.2}", p.mean_us),
            format!("{:.1}", p.p99_us),
            p.fuel.to_string(),
            p.source,
        ]);
    }
    print_table(&rows);
    Ok(())
}

async fn flags(c: &Client, cmd: Option<FlagsCommand>, json: bool) -> anyhow::Result<()> {
    match cmd {
        None => {
            let body = c.call(Method::GET, "/v1/flags", None, None).await?;
            if json {
                return print_raw(&body);
            }
            let flags: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&body)?;
            let mut rows =
                vec![["FLAG", "STATE", "DEFAULT", "VARIANTS", "TARGETING", "SOURCE"].map(String::from).to_vec()];
            for (key, f) in &flags {
                let variants = f["variants"]
                    .as_object()
                    .map(|v| v.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                rows.push(vec![
                    key.clone(),
                    f["state"].as_str().unwrap_or("?").to_owned(),
                    f["defaultVariant"].as_str().unwrap_or("?").to_owned(),
                    variants,
                    if f["targeting"].is_object() { "yes" } else { "-" }.to_owned(),
                    f["source"].as_str().unwrap_or("?").to_owned(),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
        Some(FlagsCommand::Set { key, state, default_variant, targeting, reason }) => {
            let mut patch = serde_json::Map::new();
            if let Some(s) = state {
                patch.insert("state".into(), s.into());
            }
            if let Some(d) = default_variant {
                patch.insert("defaultVariant".into(), d.into());
            }
            if let Some(t) = targeting {
                patch.insert("targeting".into(), serde_json::from_str(&t).context("--targeting is not JSON")?);
            }
            if patch.is_empty() {
                bail!("give --state, --default or --targeting");
            }
            let body = serde_json::to_vec(&patch)?;
            let out = c.call(Method::PUT, &format!("/v1/flags/{key}"), Some(body), reason.as_deref()).await?;
            print_event(&out, json)
        }
        Some(FlagsCommand::Reset { key }) => {
            let out = c.call(Method::DELETE, &format!("/v1/flags/{key}"), None, None).await?;
            print_event(&out, json)
        }
    }
}

async fn rollout(c: &Client, cmd: RolloutCommand, json: bool) -> anyhow::Result<()> {
    let post = |service: &str, action: &str| format!("/v1/services/{service}/rollout/{action}");
    let body = match cmd {
        RolloutCommand::Start { service, plan, wait, timeout } => {
            let limit =
                timeout.map(|t| humantime::parse_duration(&t).with_context(|| format!("--timeout {t}"))).transpose()?;
            let plan = match plan {
                Some(p) => Some(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?),
                None => None,
            };
            let body = c.call(Method::POST, &format!("/v1/services/{service}/rollout"), plan, None).await?;
            if wait {
                return follow::follow(c, &service, limit).await;
            }
            body
        }
        RolloutCommand::Status { service, watch: true } => return watch(c, &service).await,
        RolloutCommand::Status { service, watch: false } => {
            c.call(Method::GET, &format!("/v1/services/{service}/rollout"), None, None).await?
        }
        RolloutCommand::Promote { service, full } => {
            let body = full.then(|| br#"{"full": true}"#.to_vec());
            c.call(Method::POST, &post(&service, "promote"), body, None).await?
        }
        RolloutCommand::Pause { service } => c.call(Method::POST, &post(&service, "pause"), None, None).await?,
        RolloutCommand::Resume { service } => c.call(Method::POST, &post(&service, "resume"), None, None).await?,
        RolloutCommand::Abort { service } => c.call(Method::POST, &post(&service, "abort"), None, None).await?,
        RolloutCommand::Rollback { service } => c.call(Method::POST, &post(&service, "rollback"), None, None).await?,
    };
    if json {
        return print_raw(&body);
    }
    let r: RolloutView = serde_json::from_slice(&body)?;
    print!("{}", rollout_text(&r, None));
    Ok(())
}

/// Redraws the rollout view every second until it ends.
async fn watch(c: &Client, service: &str) -> anyhow::Result<()> {
    loop {
        let body = c.call(Method::GET, &format!("/v1/services/{service}/rollout"), None, None).await?;
        let r: RolloutView = serde_json::from_slice(&body)?;
        let stats = c.call(Method::GET, &format!("/v1/services/{service}/stats"), None, None).await.ok();
        let stats = stats.and_then(|b| serde_json::from_slice::<StatsView>(&b).ok());
        print!("\x1b[2J\x1b[H{}", rollout_text(&r, stats.as_ref()));
        std::io::stdout().flush()?;
        if r.status != "running" && r.status != "paused" {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn pool(c: &Client, cmd: PoolCommand, json: bool) -> anyhow::Result<()> {
    let path = |service: &str, pool: &str| format!("/v1/services/{service}/pools/{pool}");
    let body = match cmd {
        PoolCommand::Set { service, pool, endpoints, version, commit, build_url, commit_time, reason } => {
            let body = serde_json::json!({
                "endpoints": endpoints, "version": version, "commit": commit,
                "build_url": build_url, "commit_time": commit_time, "reason": reason,
            });
            c.call(Method::PUT, &path(&service, &pool), Some(serde_json::to_vec(&body)?), None).await?
        }
        PoolCommand::Reset { service, pool } => c.call(Method::DELETE, &path(&service, &pool), None, None).await?,
    };
    print_event(&body, json)
}

async fn status(c: &Client, json: bool) -> anyhow::Result<()> {
    let body = c.call(Method::GET, "/v1/services", None, None).await?;
    let services: Vec<ServiceView> = serde_json::from_slice(&body)?;
    let mut all_stats = Vec::new();
    for s in &services {
        let b = c.call(Method::GET, &format!("/v1/services/{}/stats", s.name), None, None).await?;
        all_stats.push(serde_json::from_slice::<StatsView>(&b)?);
    }
    let fleet: Option<FleetView> =
        c.call(Method::GET, "/v1/fleet", None, None).await.ok().and_then(|b| serde_json::from_slice(&b).ok());
    if json {
        let out = serde_json::json!({ "services": services, "stats": all_stats, "fleet": fleet });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "SERVICE".to_string(),
        "POOL".into(),
        "VERSION".into(),
        "WEIGHT".into(),
        "SHARE".into(),
        "HEALTHY".into(),
        "REQS".into(),
        "ERR%".into(),
        "P99(ms)".into(),
    ]];
    for (s, st) in services.iter().zip(&all_stats) {
        for p in &s.pools {
            let f = st.pools.get(&p.name);
            let healthy = p.endpoints.iter().filter(|e| e.healthy).count();
            rows.push(vec![
                format!("{}{}", s.name, if s.weights_source == "api" { " (api)" } else { "" }),
                p.name.clone(),
                format!(
                    "{}{}",
                    p.release.version.as_deref().unwrap_or("-"),
                    if p.source == "api" { " (api)" } else { "" }
                ),
                p.weight.to_string(),
                format!("{:.2}%", p.share_percent),
                format!("{healthy}/{}", p.endpoints.len()),
                f.map_or("0".into(), |f| f.requests.to_string()),
                f.map_or("-".into(), |f| format!("{:.2}", f.error_rate * 100.0)),
                f.map_or("-".into(), |f| format!("{:.1}", f.latency_ms.p99)),
            ]);
        }
    }
    print_table(&rows);
    for s in services.iter().filter(|s| !s.suspended_rules.is_empty()) {
        println!(
            "\n{}: rules suspended after a rollback of {} (`ctl lift {}` or a new rollout lifts them):",
            s.name,
            s.suspended_pools.join(", "),
            s.name
        );
        for r in &s.suspended_rules {
            println!("  #{} {}", r.rule, r.text);
        }
    }
    if let Some(f) = fleet {
        print_fleet(&f);
    }
    Ok(())
}

/// The fleet section of `ctl status`.
fn print_fleet(f: &FleetView) {
    let leader = f.leader.as_deref().unwrap_or("none");
    println!(
        "\nfleet: {} (this replica: {}, applied revision {}; leader: {leader})",
        f.state, f.replica, f.applied_revision
    );
    let mut rows = vec![["REPLICA", "ROLE", "APPLIED", "LAG", "CONFIG"].map(String::from).to_vec()];
    for r in &f.replicas {
        let config = if r.config_differs { format!("{} (differs!)", r.config_hash) } else { r.config_hash.clone() };
        let role = if r.leader { "leader" } else { "follower" }.to_owned();
        rows.push(vec![r.replica.clone(), role, r.applied_revision.to_string(), r.lag.to_string(), config]);
    }
    print_table(&rows);
}

// === impl Client ===
