//! A plugin's configuration.

use serde::de::DeserializeOwned;

/// The configuration a plugin receives at `init`: JSON text, from the
/// `config:` of the YAML (or the admin API). `null` when none was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config(String);

impl Config {
    /// Wraps JSON text.
    pub fn new(json: impl Into<String>) -> Self {
        Config(json.into())
    }

    /// The JSON text as given.
    pub fn text(&self) -> &str {
        &self.0
    }

    /// Whether no configuration was given (`null` or empty).
    pub fn is_empty(&self) -> bool {
        matches!(self.0.trim(), "" | "null")
    }

    /// Parses the configuration into `T`; the error names the problem.
    /// An absent configuration parses as JSON `null`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, String> {
        let text = if self.0.trim().is_empty() { "null" } else { &self.0 };
        serde_json::from_str(text).map_err(|e| format!("bad plugin config: {e}"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config("null".into())
    }
}
