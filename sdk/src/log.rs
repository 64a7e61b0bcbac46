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
    crate::glue::write_log(level, message);
    #[cfg(not(all(target_arch = "wasm32", any(feature = "router", feature = "policy"))))]
    eprintln!("[{level:?}] {message}");
}
