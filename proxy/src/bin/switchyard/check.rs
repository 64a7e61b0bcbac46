//! `switchyard check`: validates a config file the way `serve` would load
//! it, and says what it holds.

use std::path::Path;
use std::process::ExitCode;
use switchyard::Config;

/// Exit code 2 and the reason on stderr for a config `serve` would refuse.
pub fn run(config: &Path) -> ExitCode {
    match Config::load(config).and_then(|c| switchyard::check(&c).map(|()| c)) {
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
