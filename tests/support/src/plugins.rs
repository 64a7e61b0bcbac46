//! Builds the plugins in `plugins/` to WebAssembly components, once per
//! process, for the tests and benchmarks that load them into the real host.
//! Needs `rustup target add wasm32-unknown-unknown wasm32-wasip2` (the
//! README's test command runs it).

use std::path::PathBuf;
use std::sync::OnceLock;

/// Every plugin crate.
pub const PLUGINS: [&str; 5] =
    ["cohort-router", "canary-judge", "bluegreen-guard", "misbehaving-router", "misbehaving-policy"];

/// The component file of plugin crate `name`, built if needed.
pub fn wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build) {
        Ok(dir) => dir.join(format!("{}.wasm", name.replace('-', "_"))),
        Err(e) => panic!("{e}"),
    }
}

/// A reference JavaScript plugin's component, `beta_router` or
/// `error_budget` (`scripts/build-js-plugins.sh` builds them; the test
/// command runs that first).
pub fn js_wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/plugins/js/{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `bash scripts/build-js-plugins.sh`", path.display());
    path
}

/// `cohort-router` built for `wasm32-wasip2` the ordinary way: a component
/// that imports WASI, which the host must refuse.
pub fn wasi_component() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(|| cargo("wasm32-wasip2", "plugins-wasi", &["cohort-router"])) {
        Ok(dir) => dir.join("cohort_router.wasm"),
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<PathBuf, String> {
    cargo("wasm32-unknown-unknown", "plugins", &PLUGINS)
}

/// Builds `crates` for `target` (profile `plugin`) into `target/<dir>`.
fn cargo(target: &str, dir: &str, crates: &[&str]) -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dir = root.join("target").join(dir);
    let mut cmd = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(&root)
        .args(["build", "--quiet", "--profile", "plugin", "--target", target, "--target-dir"])
        .arg(&target_dir);
    for p in crates {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !status.success() {
        return Err("building the plugins failed; is the target installed? \
                    `rustup target add wasm32-unknown-unknown wasm32-wasip2`"
            .into());
    }
    Ok(target_dir.join(target).join("plugin"))
}
