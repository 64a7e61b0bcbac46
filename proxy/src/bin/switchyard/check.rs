//! `switchyard check`: validates a config file the way `serve` would load
//! it, and says what it holds.

use std::path::Path;
use std::process::ExitCode;
use switchyard::Config;

/// Exit code 2 and the reason on stderr for a config `serve` would refuse.
/// `no_dns`: endpoints' host names are checked for form, not looked up.
pub fn run(config: &Path, no_dns: bool) -> ExitCode {
    let load = || Config::load(config).and_then(|c| switchyard::check(&c).map(|()| c));
    let loaded = if no_dns { switchyard::config::without_dns(load) } else { load() };
    match loaded {
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
    }
}
