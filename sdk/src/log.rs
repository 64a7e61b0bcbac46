//! Logging through the host.

/// How loud a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Writes one line to the proxy's log, tagged with the plugin's name. The
/// host rate-limits each plugin. Natively (in tests) it goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(all(target_arch = "wasm32", any(feature = "router", feature = "policy")))]
    write_to_host(level, message);
    #[cfg(not(all(target_arch = "wasm32", any(feature = "router", feature = "policy"))))]
    eprintln!("[{level:?}] {message}");
}

/// Sends a log line to the host.
#[cfg(all(target_arch = "wasm32", any(feature = "router", feature = "policy")))]
fn write_to_host(level: Level, message: &str) {
    #[cfg(all(feature = "policy", not(feature = "router")))]
    use crate::glue::policy::host_log as l;
    #[cfg(feature = "router")]
    use crate::glue::router::host_log as l;
    let level = match level {
        Level::Debug => l::Level::Debug,
        Level::Info => l::Level::Info,
        Level::Warn => l::Level::Warn,
        Level::Error => l::Level::Error,
    };
    l::write(level, message);
}
