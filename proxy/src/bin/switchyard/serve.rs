//! `switchyard serve` and `switchyard demo`: the proxy's process — signals
//! (SIGHUP reloads, SIGUSR2 hands over to a successor, SIGINT/SIGTERM drain
//! and stop), readiness for systemd, and the demo's upstreams.

use crate::Command;
use anyhow::Context;
use std::path::PathBuf;
use switchyard::control::upgrade;
use switchyard::{Config, Options, Proxy};

/// `serve` and `demo`: runs the proxy until SIGINT/SIGTERM, reloading on
/// SIGHUP and handing over to a successor binary on SIGUSR2.
pub async fn run(command: Command) -> anyhow::Result<()> {
    let (config_path, access_log, record_stats, demo) = match command {
        Command::Serve { config, no_access_log, no_stats } => (config, !no_access_log, !no_stats, false),
        Command::Demo { config } => (config, true, true, true),
        Command::Check { .. } | Command::Ctl(_) | Command::Report(_) => anyhow::bail!("not a serving command"),
    };
    // Resolved now: after a package upgrade the path holds the new binary.
    let binary = upgrade::own_binary();
    let mut inherited = upgrade::Inherited::from_env().await?;
    let config = match Config::load(&config_path).and_then(|c| {
        if inherited.is_some() {
            switchyard::check(&c).map(|()| c)
        } else {
            Ok(c)
        }
    }) {
        Ok(c) => c,
        Err(e) => {
            if let Some(i) = &mut inherited {
                i.failed(&e.to_string()).await;
            }
            return Err(e.into());
        }
    };
    if demo {
        let started = match crate::demo::start_upstreams(&config).await.context("starting demo upstreams") {
            Ok(s) => s,
            Err(e) => {
                if let Some(i) = &mut inherited {
                    i.failed(&format!("{e:#}")).await;
                }
                return Err(e);
            }
        };
        for (pool, addr) in &started {
            tracing::info!(pool = %pool, addr = %addr, "demo upstream");
        }
    }
    // Past here the running proxy hands over: everything that can fail
    // without the state store has been tried.
    if let Some(i) = &mut inherited {
        i.loaded().await?;
    }
    let options = Options { access_log, record_stats, config_path: Some(config_path) };
    let mut bound = Proxy::new(config, options)?.bind_from(inherited.as_mut()).await?;
    match inherited {
        Some(i) => i.serving().await?,
        None => upgrade::sd_notify("READY=1"),
    }
    let upgraded = watch_upgrade_signal(bound.control(), bound.take_sockets(), binary);
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
    bound
        .run(async {
            tokio::select! {
                () = shutdown_signal() => {}
                () = upgraded => tracing::info!("upgrade: the successor serves; draining"),
            }
        })
        .await?;
    Ok(())
}

/// On SIGUSR2, starts a successor from `binary` (see [`upgrade`]);
/// resolves once one serves. A failed upgrade is logged and changes nothing.
fn watch_upgrade_signal(
    control: std::sync::Arc<switchyard::control::Control>,
    sockets: upgrade::Sockets,
    binary: Option<PathBuf>,
) -> impl std::future::Future<Output = ()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok(mut usr2) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) else {
            return;
        };
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        while usr2.recv().await.is_some() {
            let Some(binary) = &binary else {
                tracing::error!("upgrade: the binary this process was started from cannot be found");
                continue;
            };
            tracing::info!(binary = %binary.display(), "upgrade: SIGUSR2, starting a successor");
            match upgrade::start_successor(&control, &sockets, binary, &args, &runtime_dir).await {
                Ok(()) => {
                    let _ = done_tx.send(());
                    return;
                }
                Err(e) => tracing::error!("{e}; this process goes on serving"),
            }
        }
    });
    async move {
        if done_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    }
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
