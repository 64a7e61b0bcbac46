//! WebAssembly plugins: compile, validate, run with limits, contain faults.
//!
//! A plugin is a component of the `switchyard:plugin` WIT package (in
//! `sdk/wit/`): a [`router`] (asked per request by a `{ plugin: NAME }` split
//! rule) or a [`policy`] (asked per analysis tick of a rollout). Each version
//! is compiled once and checked before use: its exports must match a world,
//! it must import nothing but `log`, and a trial call on a sample input must
//! succeed. Then:
//!
//! - a router runs in warm instances, one per worker thread and rule, reused
//!   across requests; each call has a CPU budget ([`ROUTER_FUEL`]);
//! - a policy gets a fresh instance every tick, off the control runtime's
//!   thread, with [`POLICY_FUEL`];
//! - every instance is capped at [`MEMORY_LIMIT`].
//!
//! A trap, a deadline, the memory cap or a nonsensical answer is a
//! [`Fault`]: logged with the plugin's name, counted (`/metrics` and
//! `GET /v1/plugins`), and turned into the safe outcome — the router's
//! request falls through to the weights; the policy's tick holds.
//!
//! CPU budgets are counted in fuel (Wasm operators executed), not wall time:
//! a worker thread the OS preempts mid-call must not have its plugin call
//! killed for it, and a budget gives the same answer on every run. Typical
//! plugin code (the reference plugins) burns about 8 units per ns here, so
//! the budgets are HARDENING.md's deadlines, 1 ms per router call and 100 ms
//! per policy tick, for such code; a bare spin loop burns fuel faster and is
//! stopped sooner (`cargo bench --bench plugin` measures it). A host call
//! costs one unit, so `log` is limited per call instead: past
//! [`MAX_LOG_CALLS`] lines in one call, the call traps.

pub mod calls;
pub mod policy;
pub mod router;

pub use calls::CallStats;

use crate::error::Error;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, ResourceLimiter, Store};

/// Fuel a router call may burn: about 1 ms of typical plugin code
/// (HARDENING.md's router deadline).
pub const ROUTER_FUEL: u64 = 8_000_000;
/// Fuel a policy tick (instantiation, `init` and `decide`) may burn: about
/// 100 ms of typical plugin code (HARDENING.md's policy deadline).
pub const POLICY_FUEL: u64 = 800_000_000;
/// `log` lines a plugin may write in one call before the call traps.
pub const MAX_LOG_CALLS: u32 = 16;
/// Linear memory an instance may grow to (HARDENING.md: 64 MiB).
pub const MEMORY_LIMIT: usize = 64 << 20;
/// What loading a component may take.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Largest component accepted (`server.max_plugin_size`; HARDENING.md: 10 MiB by default).
    pub max_size: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { max_size: crate::config::ServerConfig::default().max_plugin_size }
    }
}

impl LoadOptions {
    /// The options `config` gives.
    pub fn of(config: &crate::config::Config) -> Self {
        Self { max_size: config.server.max_plugin_size }
    }
}
/// Log lines a plugin may write per second; the rest are dropped.
const LOG_LINES_PER_SECOND: u64 = 20;

/// Router or policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Per request: which pool?
    Router,
    /// Per analysis tick: which decision?
    Policy,
}

impl Kind {
    /// `router` or `policy`, as the API, metrics and events spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Router => "router",
            Kind::Policy => "policy",
        }
    }
}

/// Why a plugin call did not produce a usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The guest trapped (a panic, `unreachable`, a stack overflow, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The call used up its CPU budget (fuel units).
    #[error("used up its CPU budget of {0} fuel units")]
    Deadline(u64),
    /// The instance hit the memory cap.
    #[error("hit the {} MiB memory cap", MEMORY_LIMIT >> 20)]
    Memory,
    /// The plugin returned an error.
    #[error("returned an error: {0}")]
    Error(String),
    /// The answer makes no sense (an unknown pool, weights that do not add up).
    #[error("answered nonsense: {0}")]
    Nonsense(String),
}

impl Fault {
    /// The label used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Deadline(_) => "deadline",
            Fault::Memory => "memory",
            Fault::Error(_) => "error",
            Fault::Nonsense(_) => "nonsense",
        }
    }

    /// Every label, for metrics.
    pub const LABELS: [&'static str; 5] = ["trap", "deadline", "memory", "error", "nonsense"];

    fn index(&self) -> usize {
        Self::LABELS.iter().position(|l| *l == self.label()).unwrap_or(0)
    }
}

/// A compiled, validated plugin version.
pub struct Plugin {
    /// The name rules and policies use.
    pub name: String,
    /// Router or policy.
    pub kind: Kind,
    /// Hex SHA-256 of the component bytes.
    pub sha256: String,
    /// When this version was loaded (RFC 3339).
    pub loaded_at: String,
    /// Where it came from: a file path, or `admin API`.
    pub source: String,
    /// The default configuration (from the `plugins` section), JSON.
    pub config: serde_json::Value,
    /// Calls, faults and call times, over every thread.
    pub calls: Arc<CallStats>,
    pre: Pre,
    logs: Arc<LogLimit>,
}

#[derive(Clone)]
enum Pre {
    Router(router::bindings::RouterPre<Host>),
    Policy(policy::bindings::PolicyPre<Host>),
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Plugin {
    /// Compiles and validates `bytes` as plugin `name`: a component exporting
    /// the router or the policy world and importing nothing but `log`, whose
    /// trial call on a sample input succeeds (a router with `config` and two
    /// sample pools; a policy on an empty canary). The error says what is wrong.
    pub fn load(
        name: &str,
        bytes: &[u8],
        (source, options): (&str, &LoadOptions),
        config: serde_json::Value,
    ) -> Result<Arc<Self>, Error> {
        if bytes.len() > options.max_size {
            return Err(Error::Plugin(format!(
                "{} bytes is over the {} MiB limit (server.max_plugin_size)",
                bytes.len(),
                options.max_size >> 20
            )));
        }
        // The commonest mistake: a core module, from a build without the component linker.
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(Error::Plugin(
                "this is a core WebAssembly module, not a component: link it with `wasm-component-ld` \
                 (sdk/README.md, `.cargo/config.toml`), or wrap it with `wasm-tools component new`"
                    .into(),
            ));
        }
        let engine = engine()?;
        let component =
            Component::new(engine, bytes).map_err(|e| Error::Plugin(format!("not a valid component: {e:#}")))?;
        // Only the host's own interfaces are offered (`log`, and the types):
        // name any other import rather than fail to link.
        let foreign: Vec<String> = component
            .component_type()
            .imports(engine)
            .map(|(n, _)| n.to_owned())
            .filter(|n| !n.starts_with("switchyard:plugin/"))
            .collect();
        if !foreign.is_empty() {
            return Err(Error::Plugin(format!(
                "plugins may import only the host's `switchyard:plugin/...` interfaces (`log`); this component imports {}{}",
                foreign.join(", "),
                if foreign.iter().any(|n| n.starts_with("wasi:")) {
                    " (build for wasm32-unknown-unknown with `--wasi-adapter=none`, see sdk/README.md)"
                } else {
                    ""
                }
            )));
        }
        let exports: Vec<String> = component.component_type().exports(engine).map(|(n, _)| n.to_owned()).collect();
        let kind = if exports.iter().any(|e| e == "route") {
            Kind::Router
        } else if exports.iter().any(|e| e == "decide") {
            Kind::Policy
        } else {
            return Err(Error::Plugin(format!(
                "exports neither `route` (router world) nor `decide` (policy world); it exports: {}",
                exports.join(", ")
            )));
        };
        let mut linker = Linker::<Host>::new(engine);
        let pre = match kind {
            Kind::Router => {
                router::bindings::Router::add_to_linker::<_, wasmtime::component::HasSelf<Host>>(&mut linker, |h| h)
                    .map_err(|e| Error::Plugin(e.to_string()))?;
                let ip =
                    linker.instantiate_pre(&component).map_err(|e| Error::Plugin(format!("cannot link: {e:#}")))?;
                Pre::Router(
                    router::bindings::RouterPre::new(ip).map_err(|e| Error::Plugin(format!("not a router: {e:#}")))?,
                )
            }
            Kind::Policy => {
                policy::bindings::Policy::add_to_linker::<_, wasmtime::component::HasSelf<Host>>(&mut linker, |h| h)
                    .map_err(|e| Error::Plugin(e.to_string()))?;
                let ip =
                    linker.instantiate_pre(&component).map_err(|e| Error::Plugin(format!("cannot link: {e:#}")))?;
                Pre::Policy(
                    policy::bindings::PolicyPre::new(ip).map_err(|e| Error::Plugin(format!("not a policy: {e:#}")))?,
                )
            }
        };
        let plugin = Arc::new(Plugin {
            name: name.to_owned(),
            kind,
            sha256: sha256(bytes),
            loaded_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            source: source.to_owned(),
            config,
            calls: Arc::new(CallStats::default()),
            pre,
            logs: Arc::new(LogLimit::default()),
        });
        plugin.trial()?;
        Ok(plugin)
    }

    /// This version with another default configuration (tried first).
    pub fn with_config(&self, config: serde_json::Value) -> Result<Arc<Self>, Error> {
        let plugin = Arc::new(Plugin {
            name: self.name.clone(),
            kind: self.kind,
            sha256: self.sha256.clone(),
            loaded_at: self.loaded_at.clone(),
            source: self.source.clone(),
            config,
            calls: self.calls.clone(),
            pre: self.pre.clone(),
            logs: self.logs.clone(),
        });
        plugin.trial()?;
        Ok(plugin)
    }

    fn trial(self: &Arc<Self>) -> Result<(), Error> {
        match self.kind {
            Kind::Router => router::trial(self),
            Kind::Policy => policy::trial(self),
        }
    }

    /// A store for one instance, with the memory cap and log tagging.
    fn store(&self) -> Store<Host> {
        let host = Host {
            plugin: self.name.clone(),
            memory_denied: false,
            logs: self.logs.clone(),
            log_calls: 0,
            panicked: None,
            totals: None,
        };
        let mut store = Store::new(self.pre_engine(), host);
        store.limiter(|h| h as &mut dyn ResourceLimiter);
        store
    }

    fn pre_engine(&self) -> &Engine {
        match &self.pre {
            Pre::Router(p) => p.engine(),
            Pre::Policy(p) => p.engine(),
        }
    }

    /// Records a fault: counted, and logged (rate-limited).
    fn fault(&self, fault: &Fault, context: &str) {
        self.calls.fault(fault.index());
        if self.logs.allow() {
            tracing::warn!(plugin = %self.name, fault = fault.label(), "plugin {} {fault} ({context})", self.name);
        }
    }
}

/// What a plugin instance's store holds: its name (for logs) and limits.
pub struct Host {
    plugin: String,
    memory_denied: bool,
    logs: Arc<LogLimit>,
    /// `log` calls in the current call.
    log_calls: u32,
    /// What the SDK's panic hook said (`panic: ...`), for the trap that follows.
    panicked: Option<String>,
    /// A policy's tick: what its `totals` import answers.
    totals: Option<policy::Totals>,
}

impl ResourceLimiter for Host {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MEMORY_LIMIT {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// Classifies a failed call: the memory cap, the CPU budget, or a trap.
fn classify(err: &wasmtime::Error, host: &Host, budget: u64) -> Fault {
    if host.memory_denied {
        return Fault::Memory;
    }
    let trap = match err.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => return Fault::Deadline(budget),
        Some(t) => t.to_string(),
        None => format!("{err:#}"),
    };
    match &host.panicked {
        Some(p) => Fault::Trap(format!("{trap}: the plugin panicked: {p}")),
        None => Fault::Trap(trap),
    }
}

/// Where compiled components are kept (set once, before the first load).
static COMPILED: OnceLock<std::path::PathBuf> = OnceLock::new();

/// Keeps compiled components in `dir` (Wasmtime's cache, by content and
/// engine settings), so a large component — a JavaScript plugin takes
/// seconds to compile — is compiled once, not at every start. Takes effect
/// only before the first plugin loads.
pub fn keep_compiled_in(dir: std::path::PathBuf) {
    // Wasmtime wants it absolute; a config's paths may be relative to where it runs.
    let _ = COMPILED.set(std::path::absolute(&dir).unwrap_or(dir));
}

/// The engine every plugin shares.
fn engine() -> Result<&'static Engine, Error> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut c = wasmtime::Config::new();
            c.wasm_component_model(true);
            c.consume_fuel(true);
            // Deep recursion traps well before it can hurt the worker's stack.
            c.max_wasm_stack(512 << 10);
            if let Some(dir) = COMPILED.get() {
                let mut cache = wasmtime::CacheConfig::new();
                cache.with_directory(dir);
                match wasmtime::Cache::new(cache) {
                    Ok(cache) => {
                        c.cache(Some(cache));
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "plugins: compiled components are not kept")
                    }
                }
            }
            Engine::new(&c).map_err(|e| format!("cannot start the WebAssembly engine: {e:#}"))
        })
        .as_ref()
        .map_err(|e| Error::Plugin(e.clone()))
}

/// The plugins in force, by name. Control path only (loads, lookups per
/// tick, `/metrics`); the request path holds its routers through the snapshot.
#[derive(Default)]
pub struct Registry {
    plugins: Mutex<BTreeMap<String, Arc<Plugin>>>,
}

impl Registry {
    /// The plugin called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.lock().get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        self.lock().values().cloned().collect()
    }

    /// Puts `plugin` in force under its name.
    pub fn insert(&self, plugin: Arc<Plugin>) {
        self.lock().insert(plugin.name.clone(), plugin);
    }

    /// A copy of the map, to build a snapshot against.
    pub fn map(&self) -> BTreeMap<String, Arc<Plugin>> {
        self.lock().clone()
    }

    /// Replaces every plugin.
    pub fn replace(&self, map: BTreeMap<String, Arc<Plugin>>) {
        *self.lock() = map;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Plugin>>> {
        self.plugins.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A per-plugin log budget: [`LOG_LINES_PER_SECOND`] lines a second.
#[derive(Default)]
struct LogLimit {
    /// `second << 16 | lines in that second`.
    state: AtomicU64,
}

impl LogLimit {
    fn allow(&self) -> bool {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let s = self.state.load(Ordering::Relaxed);
        let (second, lines) = (s >> 16, s & 0xffff);
        let next = if second == now { lines + 1 } else { 1 };
        self.state.store(now << 16 | next.min(0xffff), Ordering::Relaxed);
        next <= LOG_LINES_PER_SECOND
    }
}

/// The `log` import: rate-limited lines tagged with the plugin's name; more
/// than [`MAX_LOG_CALLS`] in one call trap it.
fn write_log(host: &mut Host, level: u8, message: &str) -> wasmtime::Result<()> {
    host.log_calls += 1;
    if host.log_calls > MAX_LOG_CALLS {
        return Err(wasmtime::Error::msg(format!("more than {MAX_LOG_CALLS} log lines in one call")));
    }
    // Kept for the trap that follows, though the line itself may be over budget.
    if let Some(p) = message.strip_prefix("panic: ") {
        host.panicked = Some(p.chars().take(512).collect());
    }
    if !host.logs.allow() {
        return Ok(());
    }
    let message: String = message.chars().take(1024).collect();
    let plugin = host.plugin.as_str();
    match level {
        0 => tracing::debug!(plugin, "{message}"),
        1 => tracing::info!(plugin, "{message}"),
        2 => tracing::warn!(plugin, "{message}"),
        _ => tracing::error!(plugin, "{message}"),
    }
    Ok(())
}

/// Hex SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the admin API set for plugins, kept in the state store: uploaded
/// components and default configurations, by plugin name. Both take
/// precedence over the config file, as API-set weights do.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Uploaded components.
    pub uploaded: BTreeMap<String, Vec<u8>>,
    /// Default configurations.
    pub configs: BTreeMap<String, serde_json::Value>,
}

/// Loads the plugins of the `plugins` section, plus any uploaded through the
/// admin API, with the configurations the API set. A plugin whose bytes and
/// config are unchanged from `previous` is kept, not recompiled.
pub fn load_all(
    configured: &[crate::config::PluginConfig],
    overrides: &Overrides,
    previous: &BTreeMap<String, Arc<Plugin>>,
    options: &LoadOptions,
) -> Result<BTreeMap<String, Arc<Plugin>>, Error> {
    let (uploaded, configs) = (&overrides.uploaded, &overrides.configs);
    let mut out = BTreeMap::new();
    let null = serde_json::Value::Null;
    let mut load = |name: &str, bytes: &[u8], source: String, config: &serde_json::Value| -> Result<(), Error> {
        let config = configs.get(name).unwrap_or(config);
        let sha = sha256(bytes);
        let plugin = match previous.get(name) {
            Some(p) if p.sha256 == sha && p.config == *config => p.clone(),
            Some(p) if p.sha256 == sha => p.with_config(config.clone())?,
            _ => Plugin::load(name, bytes, (&source, options), config.clone())?,
        };
        out.insert(name.to_owned(), plugin);
        Ok(())
    };
    for (i, pc) in configured.iter().enumerate() {
        let at = format!("plugins[{i}] (`{}`)", pc.name);
        if let Some(bytes) = uploaded.get(&pc.name) {
            load(&pc.name, bytes, "admin API".into(), &pc.config)
                .map_err(|e| Error::Plugin(format!("{at}, as uploaded: {e}")))?;
            continue;
        }
        let Some(path) = &pc.path else {
            return Err(Error::Plugin(format!("{at}: no `path`, and nothing was uploaded through the admin API")));
        };
        let bytes =
            std::fs::read(path).map_err(|e| Error::Plugin(format!("{at}: cannot read {}: {e}", path.display())))?;
        load(&pc.name, &bytes, path.display().to_string(), &pc.config)
            .map_err(|e| Error::Plugin(format!("{at}: {e}")))?;
    }
    for (name, bytes) in uploaded.iter().filter(|(n, _)| !configured.iter().any(|c| &c.name == *n)) {
        load(name, bytes, "admin API".into(), &null)
            .map_err(|e| Error::Plugin(format!("plugin `{name}`, as uploaded: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
