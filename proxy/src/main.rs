//! The `switchyard` binary: `serve`, `check`, `demo` and `ctl`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::logging::{self, LogFormat};
use switchyard::{Config, Options, Proxy};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "A reverse proxy for progressive delivery")]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "human", env = "SWITCHYARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The config file.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Do not write one log line per request.
        #[arg(long)]
        no_access_log: bool,
        /// Do not record per-pool statistics (only to measure what they cost).
        #[arg(long)]
        no_stats: bool,
    },
    /// Validate a config file and exit (non-zero on any error).
    Check {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run the proxy with small demo upstreams on every loopback endpoint of the config.
    Demo {
        /// The config file.
        #[arg(short, long, default_value = "examples/demo.yaml")]
        config: PathBuf,
    },
    /// Talk to a running proxy's admin API.
    Ctl(switchyard::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return match Config::load(config).and_then(|c| switchyard::check(&c).map(|()| c)) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listener(s), {} service(s), {} plugin(s))",
                    config.display(),
                    c.listeners.len(),
                    c.services.len(),
                    c.plugins.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = match cli.command {
        Command::Ctl(args) => {
            return match runtime.block_on(switchyard::ctl::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard ctl: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => cli,
    };
    drop(runtime);
    let _guard = logging::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let (config_path, access_log, record_stats, demo) = match command {
        Command::Serve { config, no_access_log, no_stats } => (config, !no_access_log, !no_stats, false),
        Command::Demo { config } => (config, true, true, true),
        Command::Check { .. } | Command::Ctl(_) => anyhow::bail!("not a serving command"),
    };
    let config = Config::load(&config_path)?;
    if demo {
        let started = switchyard::demo::start_upstreams(&config).await.context("starting demo upstreams")?;
        for (pool, addr) in &started {
            tracing::info!(pool = %pool, addr = %addr, "demo upstream");
        }
    }
    let options = Options { access_log, record_stats, config_path: Some(config_path) };
    let bound = Proxy::new(config, options)?.bind().await?;
    let control = bound.control();
    tokio::spawn(async move {
        #[cfg(unix)]
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                // Errors are logged and recorded by the control path.
                let _ = control.reload("SIGHUP", None).await;
            }
        }
    });
    if demo {
        if let Some((_, addr)) = bound.addrs().first() {
            print_demo_hints(*addr);
        }
    }
    bound.run(shutdown_signal()).await?;
    Ok(())
}

fn print_demo_hints(addr: std::net::SocketAddr) {
    println!(
        "\nSwitchyard demo is running on http://{addr}. Try, in another terminal:\n\n  \
         for i in $(seq 20); do curl -s http://{addr}/; done | sort | uniq -c     # the 90/10 split\n  \
         curl -s -H 'x-canary: always' http://{addr}/                            # header rule -> canary\n  \
         for i in $(seq 5); do curl -s -b session=alice http://{addr}/; done      # sticky: one user, one pool\n\n\
         Ctrl-C stops it.\n"
    );
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
