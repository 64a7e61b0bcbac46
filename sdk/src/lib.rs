//! Write [Switchyard](https://github.com/switchyard-proxy/switchyard) plugins in Rust.
//!
//! A plugin is a WebAssembly component. A **router** chooses a pool for each
//! request; a **policy** judges a rollout at every analysis tick. With this
//! crate a plugin is a type, a trait implementation and one macro:
//!
//! ```
//! use switchyard_sdk::{Config, Needs, Pool, Pools, Request, Router};
//!
//! /// Sends requests carrying `x-beta: 1` to the canary.
//! pub struct Beta {
//!     canary: Pool,
//! }
//!
//! impl Router for Beta {
//!     fn init(_config: &Config, pools: &Pools) -> Result<Self, String> {
//!         Ok(Beta { canary: pools.get("canary")? })
//!     }
//!     fn route(&self, req: &Request) -> Result<Option<Pool>, String> {
//!         Ok((req.header("x-beta") == Some("1")).then_some(self.canary))
//!     }
//!     fn needs(&self) -> Needs {
//!         Needs { headers: vec!["x-beta".into()], cookies: vec![] }
//!     }
//! }
//!
//! switchyard_sdk::export_router!(Beta);
//! # fn main() {}
//! ```
//!
//! Build it with the `router` (or `policy`) feature of this crate for
//! `wasm32-unknown-unknown`; the SDK's README has the commands. On the host,
//! [`testing`] runs the same code natively, so `cargo test` checks a plugin
//! without WebAssembly.
//!
//! The interface itself is `wit/switchyard.wit` in this crate (package
//! `switchyard:plugin@0.1.1`).
#![deny(missing_docs)]

extern crate self as switchyard_sdk;

mod config;
mod log;
pub mod policy;
mod request;
mod router;
pub mod sequential;
pub mod testing;

#[doc(hidden)]
pub mod glue;

pub use config::Config;
pub use log::{log, Level};
pub use policy::{quantile, recorded_us, Context, Decision, Phase, Policy, PoolWindow, Strategy, Verdict};
pub use request::{Request, RequestBuilder};
pub use router::{Needs, Pool, Pools, Router, CLIENT_ADDRESS};

/// The WIT package version this SDK speaks.
pub const INTERFACE_VERSION: &str = "0.1.1";
