//! Router plugins on the request path.
//!
//! A [`RouterBinding`] is one `{ plugin: NAME }` rule of one service: the
//! plugin version, its configuration, the service's pools and the headers
//! and cookies to pass. Each worker thread keeps a warm instance per binding
//! (created on the thread's first request for it, then reused), so a call
//! costs no instantiation, no lock and no allocation beyond the guest's own.
//!
//! On a fault the request falls through (to the next rule, then the
//! weights); a trapped instance is dropped and rebuilt on the next call.
//! After [`QUARANTINE_AFTER`] consecutive faults on a thread the binding is
//! skipped there for a backoff (1 s, doubling to 60 s), so a looping plugin
//! costs at most one CPU budget per backoff instead of one per request.

use super::{classify, Fault, Host, Plugin, POLICY_FUEL, ROUTER_FUEL};
use crate::error::Error;
use http::{HeaderMap, HeaderName};
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use switchyard_sdk::RequestBuilder;
use wasmtime::Store;

pub(super) mod bindings {
    wasmtime::component::bindgen!({ world: "router", path: "../sdk/wit", imports: { default: trappable } });

    impl switchyard::plugin::log::Host for super::Host {
        fn write(&mut self, level: switchyard::plugin::log::Level, message: String) -> wasmtime::Result<()> {
            super::super::write_log(self, level as u8, &message)
        }
    }
    impl switchyard::plugin::routing::Host for super::Host {}
}

/// Consecutive faults on a thread before the binding is skipped for a while.
pub const QUARANTINE_AFTER: u32 = 5;

/// One router rule of one service, ready for the request path.
pub struct RouterBinding {
    /// The plugin version.
    pub plugin: Arc<Plugin>,
    /// Configuration passed to `init`.
    pub config: serde_json::Value,
    /// The service's pool names, as passed to `init`.
    pub pools: Vec<String>,
    /// Headers passed: the plugin's `needs` plus the rule's.
    headers: Vec<HeaderName>,
    /// Query parameters passed: `(name, "?name")`, the second as the plugin reads it.
    query: Vec<(String, String)>,
    /// The client's address is passed.
    client_address: bool,
    /// Cookies passed.
    cookies: Vec<String>,
    id: u64,
}

impl std::fmt::Debug for RouterBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBinding").field("plugin", &self.plugin.name).field("config", &self.config).finish()
    }
}

/// What the request path passes to a router.
pub struct RouteInput<'a> {
    /// The method.
    pub method: &'a str,
    /// The normalised path.
    pub path: &'a str,
    /// The sticky key, when the service has one and the request carries it.
    pub sticky_key: Option<&'a [u8]>,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw query string, if any.
    pub query: Option<&'a str>,
    /// The client's address, as the proxy saw it.
    pub client: Option<std::net::IpAddr>,
}

impl<'a> RouteInput<'a> {
    /// The request a router is tried with when bound: `GET /`, a sticky key, `headers`.
    pub fn trial(headers: &'a HeaderMap) -> Self {
        let client = Some(std::net::IpAddr::from([192, 0, 2, 1]));
        Self { method: "GET", path: "/", sticky_key: Some(b"trial-user"), headers, query: None, client }
    }
}

impl RouterBinding {
    /// Binds `plugin` for a service with `pools`: instantiates it, calls
    /// `init` with `config` and a trial `route`. The error says why the rule
    /// cannot be used.
    pub fn new(
        plugin: Arc<Plugin>,
        config: &serde_json::Value,
        pools: Vec<String>,
        extra_headers: &[HeaderName],
        extra_cookies: &[String],
    ) -> Result<Arc<Self>, Error> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let mut warm = Warm::new(&plugin, config, &pools)
            .map_err(|f| Error::Plugin(format!("plugin `{}`: init {f}", plugin.name)))?;
        let (mut headers, mut query, mut client_address) = (Vec::new(), Vec::new(), false);
        for h in warm.needs.headers.iter() {
            // Query parameters and the client's address travel under names no header has.
            if let Some(param) = h.strip_prefix('?') {
                query.push((param.to_owned(), h.clone()));
                continue;
            }
            if h == switchyard_sdk::CLIENT_ADDRESS {
                client_address = true;
                continue;
            }
            let name = HeaderName::try_from(h.as_str()).map_err(|_| {
                Error::Plugin(format!("plugin `{}` needs `{h}`, which is not a header name", plugin.name))
            })?;
            headers.push(name);
        }
        for h in extra_headers {
            if !headers.contains(h) {
                headers.push(h.clone());
            }
        }
        let mut cookies = std::mem::take(&mut warm.needs.cookies);
        for c in extra_cookies {
            if !cookies.contains(c) {
                cookies.push(c.clone());
            }
        }
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let binding =
            RouterBinding { plugin, config: config.clone(), pools, headers, query, client_address, cookies, id };
        let sample = HeaderMap::new();
        let input = RouteInput::trial(&sample);
        warm.call(&binding, &input)
            .map_err(|f| Error::Plugin(format!("plugin `{}`: trial route {f}", binding.plugin.name)))?;
        Ok(Arc::new(binding))
    }

    /// Whether this binding is for the same plugin version, config and pools
    /// (so a new snapshot can keep it, and the threads their warm instances).
    pub fn same(&self, plugin: &Arc<Plugin>, config: &serde_json::Value, pools: &[String]) -> bool {
        Arc::ptr_eq(&self.plugin, plugin) && self.config == *config && self.pools == pools
    }

    /// Asks the plugin; `Some(pool index)` or `None` (no opinion, or a fault).
    pub fn route(self: &Arc<Self>, input: &RouteInput<'_>) -> Option<usize> {
        WARM.with(|cell| {
            let mut slots = cell.borrow_mut();
            let i = match slots.iter().position(|s| s.id == self.id) {
                Some(i) => i,
                None => {
                    slots.retain(|s| s.binding.strong_count() > 0);
                    slots.push(Slot {
                        id: self.id,
                        binding: Arc::downgrade(self),
                        warm: None,
                        faults: 0,
                        backoff: None,
                    });
                    slots.len() - 1
                }
            };
            slots[i].route(self, input)
        })
    }
}

thread_local! {
    /// This thread's warm instances, one per binding in use.
    static WARM: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A thread's state for one binding.
struct Slot {
    id: u64,
    binding: Weak<RouterBinding>,
    warm: Option<Warm>,
    /// Consecutive faults.
    faults: u32,
    /// Skipped until then, and the current backoff.
    backoff: Option<(Instant, Duration)>,
}

impl Slot {
    fn route(&mut self, b: &RouterBinding, input: &RouteInput<'_>) -> Option<usize> {
        if let Some((until, _)) = self.backoff {
            if Instant::now() < until {
                return None;
            }
        }
        let result = match &mut self.warm {
            Some(w) => w.call(b, input),
            None => Warm::new(&b.plugin, &b.config, &b.pools).and_then(|w| self.warm.insert(w).call(b, input)),
        };
        match result {
            Ok(answer) => {
                self.faults = 0;
                self.backoff = None;
                answer
            }
            Err(fault) => {
                b.plugin.fault(&fault, "request falls through to the weights");
                if !matches!(fault, Fault::Error(_) | Fault::Nonsense(_)) {
                    self.warm = None; // a trapped store cannot be entered again
                }
                self.faults += 1;
                if self.faults >= QUARANTINE_AFTER {
                    let next =
                        self.backoff.map_or(Duration::from_secs(1), |(_, d)| (d * 2).min(Duration::from_secs(60)));
                    tracing::warn!(plugin = %b.plugin.name, "plugin {} quarantined on this worker for {next:?} after {} faults in a row", b.plugin.name, self.faults);
                    self.backoff = Some((Instant::now() + next, next));
                    self.faults = 0;
                }
                None
            }
        }
    }
}

/// A warm instance: its store, its exports and a reusable request buffer.
struct Warm {
    store: Store<Host>,
    router: bindings::Router,
    buf: Vec<u8>,
    needs: bindings::switchyard::plugin::routing::Needs,
    /// No call made yet: the first is always timed (an instance rebuilt
    /// after each fault is, so a plugin that always faults shows its cost).
    fresh: bool,
}

impl Warm {
    fn new(plugin: &Plugin, config: &serde_json::Value, pools: &[String]) -> Result<Self, Fault> {
        let super::Pre::Router(pre) = &plugin.pre else {
            return Err(Fault::Nonsense("not a router".into()));
        };
        let mut store = plugin.store();
        // Instantiation and `init` run once per thread: the policy's budget.
        store.set_fuel(POLICY_FUEL).map_err(|e| Fault::Trap(e.to_string()))?;
        let router = pre.instantiate(&mut store).map_err(|e| classify(&e, store.data(), POLICY_FUEL))?;
        let needs = match router.call_init(&mut store, &config.to_string(), pools) {
            Ok(Ok(needs)) => needs,
            Ok(Err(msg)) => return Err(Fault::Error(msg)),
            Err(e) => return Err(classify(&e, store.data(), POLICY_FUEL)),
        };
        Ok(Warm { store, router, buf: Vec::with_capacity(256), needs, fresh: true })
    }

    fn call(&mut self, b: &RouterBinding, input: &RouteInput<'_>) -> Result<Option<usize>, Fault> {
        let key = input.sticky_key.and_then(|k| std::str::from_utf8(k).ok());
        let mut req = RequestBuilder::new(std::mem::take(&mut self.buf), input.method, input.path, key);
        for name in &b.headers {
            if let Some(v) = input.headers.get(name).and_then(|v| std::str::from_utf8(v.as_bytes()).ok()) {
                req.push_header(name.as_str(), v);
            }
        }
        for (param, name) in &b.query {
            if let Some(v) = input.query.and_then(|q| query_value(q, param)) {
                req.push_header(name, &v);
            }
        }
        if let (true, Some(ip)) = (b.client_address, input.client) {
            req.push_header(switchyard_sdk::CLIENT_ADDRESS, &ip.to_string());
        }
        for name in &b.cookies {
            if let Some(v) =
                crate::parse::cookie::cookie_value(input.headers, name).and_then(|v| std::str::from_utf8(v).ok())
            {
                req.push_cookie(name, v);
            }
        }
        let bytes = req.finish();
        self.store.set_fuel(ROUTER_FUEL).map_err(|e| Fault::Trap(e.to_string()))?;
        self.store.data_mut().log_calls = 0;
        self.store.data_mut().panicked = None;
        let start = (std::mem::take(&mut self.fresh) | super::calls::time_this_call()).then(Instant::now);
        let result = self.router.call_route(&mut self.store, &bytes);
        let burned = ROUTER_FUEL - self.store.get_fuel().unwrap_or(0);
        b.plugin.calls.call(start.map(|s| s.elapsed()), burned);
        self.buf = bytes;
        match result {
            Ok(-1) => Ok(None),
            Ok(-2) => Err(Fault::Error("it reported an error (its log says why)".into())),
            Ok(i) if i >= 0 && (i as usize) < b.pools.len() => Ok(Some(i as usize)),
            Ok(i) => Err(Fault::Nonsense(format!("answered {i}, but the service has {} pools", b.pools.len()))),
            Err(e) => Err(classify(&e, self.store.data(), ROUTER_FUEL)),
        }
    }
}

/// The load-time check of a router: instantiate, `init` with its default
/// config and two sample pools, one `route`. Only a trap, a deadline or the
/// memory cap refuses it here: `init` may rightly reject sample pools; the
/// real check comes when a rule binds it.
pub(super) fn trial(plugin: &Arc<Plugin>) -> Result<(), Error> {
    let pools = vec!["stable".to_owned(), "canary".to_owned()];
    let mut warm = match Warm::new(plugin, &plugin.config, &pools) {
        Ok(w) => w,
        Err(Fault::Error(_)) => return Ok(()),
        Err(f) => return Err(Error::Plugin(format!("trial init {f}"))),
    };
    let binding = RouterBinding {
        plugin: plugin.clone(),
        config: plugin.config.clone(),
        pools,
        headers: vec![],
        query: vec![],
        client_address: false,
        cookies: vec![],
        id: 0,
    };
    let sample = HeaderMap::new();
    let input = RouteInput::trial(&sample);
    match warm.call(&binding, &input) {
        Ok(_) | Err(Fault::Error(_)) => Ok(()),
        Err(f) => Err(Error::Plugin(format!("trial route {f}"))),
    }
}

/// The first value of query parameter `name` in `query` (`a=1&b=2`),
/// percent-decoded with `+` as a space; `None` when absent or not UTF-8.
/// Plain names and values are read in place, without a copy.
fn query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(n)? == name).then(|| form_decode(v)).flatten()
    })
}

/// One query name or value decoded as forms encode it.
fn form_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['+', '%']) {
        return Some(Cow::Borrowed(s));
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(|v| Cow::Owned(v.into_owned()))
}
