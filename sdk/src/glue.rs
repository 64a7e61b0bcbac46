//! Glue between the generated WebAssembly bindings and the SDK's traits.
//! Used by [`crate::export_router!`] and [`crate::export_policy!`]; only
//! compiled for `wasm32` with the `router` or `policy` feature.

#[cfg(all(target_arch = "wasm32", feature = "router"))]
pub mod router {
    //! The `router` world.
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        world: "router",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_router_world",
        default_bindings_module: "switchyard_sdk::glue::router",
        runtime_path: "switchyard_sdk::glue::wit_bindgen::rt",
    });
    pub use self::switchyard::plugin::log as host_log;
}

#[cfg(all(target_arch = "wasm32", feature = "policy"))]
pub mod policy {
    //! The `policy` world, and conversions to and from the SDK's types.
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        world: "policy",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "switchyard_sdk::glue::policy",
        runtime_path: "switchyard_sdk::glue::wit_bindgen::rt",
    });
    use self::switchyard::plugin::analysis as wit;
    pub use self::switchyard::plugin::log as host_log;
    use self::switchyard::plugin::totals as host_totals;
    use host_totals::Since;

    fn window(w: wit::PoolWindow) -> crate::PoolWindow {
        let mut status = [0; 5];
        for (s, v) in status.iter_mut().zip(w.status) {
            *s = v;
        }
        crate::PoolWindow {
            name: w.name,
            requests: w.requests,
            status,
            connect_errors: w.connect_errors,
            timeouts: w.timeouts,
            resets: w.resets,
            no_healthy_endpoint: w.no_healthy_endpoint,
            p50_us: w.p50_us,
            p90_us: w.p90_us,
            p99_us: w.p99_us,
            p999_us: w.p999_us,
            max_us: w.max_us,
            latency: w.latency.into_iter().map(|b| (b.upper_us, b.count)).collect(),
        }
    }

    /// The SDK's context from the call's arguments.
    pub fn context(c: wit::Context, pools: Vec<wit::PoolWindow>) -> crate::Context {
        crate::Context {
            service: c.service,
            strategy: match c.strategy {
                wit::Strategy::Canary => crate::Strategy::Canary,
                wit::Strategy::BlueGreen => crate::Strategy::BlueGreen,
            },
            phase: match c.phase {
                wit::Phase::Stepping => crate::Phase::Stepping,
                wit::Phase::Preview => crate::Phase::Preview,
                wit::Phase::PostSwitch => crate::Phase::PostSwitch,
            },
            step: c.step,
            steps: c.steps,
            in_step_ms: c.in_step_ms,
            hold_ms: c.hold_ms,
            interval_ms: c.interval_ms,
            baseline: c.baseline,
            candidate: c.candidate,
            weights: c.weights,
            pre_switch: c.pre_switch.map(window),
            faults: c.faults,
            rollout_totals: totals(&pools, Since::Rollout),
            step_totals: totals(&pools, Since::Step),
            pools: pools.into_iter().map(window).collect(),
        }
    }

    /// Every pool's totals since `since`, asked of the host.
    fn totals(pools: &[wit::PoolWindow], since: Since) -> Vec<crate::PoolWindow> {
        pools.iter().filter_map(|p| host_totals::get(&p.name, since)).map(window).collect()
    }

    /// The call's answer from the SDK's verdict.
    pub fn verdict(v: crate::Verdict) -> wit::Verdict {
        let decision = match v.decision {
            crate::Decision::Hold => wit::Decision::Hold,
            crate::Decision::SetWeights(w) => wit::Decision::SetWeights(w),
            crate::Decision::Promote => wit::Decision::Promote,
            crate::Decision::Rollback(r) => wit::Decision::Rollback(r),
        };
        wit::Verdict { decision, explanation: v.explanation }
    }
}

#[cfg(all(target_arch = "wasm32", any(feature = "router", feature = "policy")))]
pub use wit_bindgen;

/// Sends a panic's message through the host's `log` before the plugin
/// traps, so the proxy's log says why (not only "unreachable"). Once per
/// instance; every export calls it.
#[cfg(all(target_arch = "wasm32", any(feature = "router", feature = "policy")))]
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| crate::log::log(crate::log::Level::Error, &format!("panic: {info}"))));
    });
}

/// The `route` export's answer: a pool index, -1 (no opinion), or -2 after
/// logging the error.
#[cfg(all(target_arch = "wasm32", feature = "router"))]
pub fn route_answer(answer: Result<Option<crate::Pool>, String>) -> i32 {
    match answer {
        Ok(Some(p)) => i32::try_from(p.index()).unwrap_or(i32::MAX),
        Ok(None) => -1,
        Err(e) => {
            router::host_log::write(router::host_log::Level::Error, &e);
            -2
        }
    }
}

/// Exports a [`Router`](crate::Router) implementation as the plugin's
/// `router` world. Needs this crate's `router` feature when built for Wasm;
/// does nothing on other targets (use [`crate::testing`] there).
#[macro_export]
macro_rules! export_router {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Glue;
            impl $crate::glue::router::Guest for Glue {
                fn init(
                    config: String,
                    pools: Vec<String>,
                ) -> Result<$crate::glue::router::switchyard::plugin::routing::Needs, String> {
                    $crate::glue::install_panic_hook();
                    let pools = $crate::Pools::new(pools);
                    let r = <$ty as $crate::Router>::init(&$crate::Config::new(config), &pools)?;
                    let needs = $crate::Router::needs(&r);
                    STATE.with(|s| *s.borrow_mut() = Some(r));
                    Ok($crate::glue::router::switchyard::plugin::routing::Needs {
                        headers: needs.headers,
                        cookies: needs.cookies,
                    })
                }
                fn route(request: Vec<u8>) -> i32 {
                    $crate::glue::install_panic_hook();
                    let answer = $crate::Request::decode(request).and_then(|req| {
                        STATE.with(|s| match &*s.borrow() {
                            Some(r) => $crate::Router::route(r, &req),
                            None => Err("route called before init".into()),
                        })
                    });
                    $crate::glue::route_answer(answer)
                }
            }
    $crate::glue::router::export_router_world!(Glue with_types_in $crate::glue::router);
        };
    };
}

/// Exports a [`Policy`](crate::Policy) implementation as the plugin's
/// `policy` world. Needs this crate's `policy` feature when built for Wasm;
/// does nothing on other targets (use [`crate::testing`] there).
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Glue;
            impl $crate::glue::policy::Guest for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::glue::install_panic_hook();
                    let p = <$ty as $crate::Policy>::init(&$crate::Config::new(config))?;
                    STATE.with(|s| *s.borrow_mut() = Some(p));
                    Ok(())
                }
                fn decide(
                    context: $crate::glue::policy::switchyard::plugin::analysis::Context,
                    pools: Vec<$crate::glue::policy::switchyard::plugin::analysis::PoolWindow>,
                ) -> $crate::glue::policy::switchyard::plugin::analysis::Verdict {
                    $crate::glue::install_panic_hook();
                    let ctx = $crate::glue::policy::context(context, pools);
                    let v = STATE.with(|s| match &*s.borrow() {
                        Some(p) => $crate::Policy::decide(p, &ctx),
                        None => $crate::Verdict::hold("decide called before init"),
                    });
                    $crate::glue::policy::verdict(v)
                }
            }
    $crate::glue::policy::export_policy_world!(Glue with_types_in $crate::glue::policy);
        };
    };
}
