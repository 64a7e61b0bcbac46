//! The `switchyard` binary: `serve` and `demo` ([`serve`]), `check`
//! ([`check`]), `ctl` ([`ctl`]) and `report` ([`report`]), over the
//! `switchyard` library.

mod check;
mod ctl;
mod demo;
mod report;
mod serve;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::logging::{self, LogFormat};

/// mimalloc rather than glibc's malloc: hyper takes a fresh 8 KiB read
/// buffer and a handful of small blocks per request, which glibc serves
/// from shared bins and mimalloc from the thread's own pages.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
pub(crate) enum Command {
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
        /// Check endpoints' host names for form without looking them up
        /// (a config for another network, such as a Kubernetes cluster's).
        #[arg(long)]
        no_dns: bool,
    },
    /// Run the proxy with small demo upstreams on every loopback endpoint of the config.
    Demo {
        /// The config file.
        #[arg(short, long, default_value = "examples/demo.yaml")]
        config: PathBuf,
    },
    /// Talk to a running proxy's admin API.
    Ctl(Box<ctl::CtlArgs>),
    /// The deployment report (DORA measures) of one or more proxies.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check { config, no_dns } = &cli.command {
        return check::run(config, *no_dns);
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
            return match runtime.block_on(ctl::run(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard ctl: {e:#}");
                    match e.downcast_ref::<ctl::follow::Outcome>() {
                        Some(o) => ExitCode::from(o.code),
                        None => ExitCode::FAILURE,
                    }
                }
            };
        }
        Command::Report(args) => {
            return match runtime.block_on(report::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard report: {e:#}");
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
    match runtime.block_on(serve::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
