//! The `switchyard` binary: `serve`, `check` and `demo`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::logging::{self, LogFormat};
use switchyard::{Config, Proxy};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return match Config::load(config).and_then(|c| switchyard::check(&c).map(|()| c)) {
            Ok(c) => {
                println!(
                    "{}: ok ({} listener(s), {} service(s))",
                    config.display(),
                    c.listeners.len(),
                    c.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", config.display());
                ExitCode::from(2)
            }
        };
    }
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
    let (config_path, access_log, demo) = match command {
        Command::Serve { config, no_access_log } => (config, !no_access_log, false),
        Command::Demo { config } => (config, true, true),
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
    };
    let config = Config::load(&config_path)?;
    if demo {
        let started = switchyard::demo::start_upstreams(&config).await.context("starting demo upstreams")?;
        for (pool, addr) in &started {
            tracing::info!(pool = %pool, addr = %addr, "demo upstream");
        }
    }
    let bound = Proxy::new(config, access_log).bind()?;
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
